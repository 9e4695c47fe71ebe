"""Static page assets: the theme and CSS for `launch()`, and the script that makes citations clickable."""
from __future__ import annotations

CSS = """
.rag-passages { display: flex; flex-direction: column; gap: 8px; }
.rag-passage { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 10px;
               background: var(--background-fill-secondary); transition: box-shadow .3s, border-color .3s; }
.rag-passage-head { font-size: .9em; margin-bottom: 4px; }
.rag-passage-score { float: right; opacity: .7; font-size: .85em; }
.rag-passage-text { white-space: pre-wrap; font-size: .88em; max-height: 14em; overflow: auto; }
.rag-passage.rag-flash { border-color: #16a34a; box-shadow: 0 0 0 3px rgba(22,163,74,.35); }
.rag-empty { opacity: .7; font-size: .9em; }
#rag-timings { min-height: 1.5em; }
#rag-candidates .cell-wrap, #rag-candidates .cell-wrap span, #rag-documents .cell-wrap span,
#rag-report .cell-wrap span { font-family: var(--font); font-size: 13px; }
#rag-delete { align-self: end; }
footer { display: none !important; }
"""

# Runs once on page load (Blocks.load js): a citation link `[n]` in the chat scrolls to passage card n of
# its turn and flashes it, instead of following the link. Cards of older turns are gone: say so.
CITATION_SCRIPT = """
() => {
  if (window.__ragCitations) return;
  window.__ragCitations = true;
  document.addEventListener('click', (event) => {
    const link = event.target.closest ? event.target.closest('a[href*="#passage-"]') : null;
    if (!link) return;
    event.preventDefault();
    event.stopPropagation();
    const id = link.getAttribute('href').split('#').pop();
    const card = document.getElementById(id);
    if (!card) {
      link.title = 'This passage belongs to an earlier question: re-run it to see its passages.';
      return;
    }
    card.scrollIntoView({behavior: 'smooth', block: 'center'});
    card.classList.remove('rag-flash');
    void card.offsetWidth;
    card.classList.add('rag-flash');
    setTimeout(() => card.classList.remove('rag-flash'), 2500);
  }, true);
}
"""


def launch_options() -> dict:
    """Theme and CSS go to `launch()` in Gradio 6."""
    import gradio as gr

    return {"theme": gr.themes.Soft(primary_hue="green"), "css": CSS}
