"""Retrieval results -> what the page shows: the candidates table, passage cards, timings, cited answers.

Pure functions of `Retrieval`/`Candidate` values (no Gradio), so they are easy to test. Untrusted text is
escaped here: document text only ever reaches the page as text.
"""
from __future__ import annotations

import re

import pandas as pd

from rag.ingest.inputs import clean_name
from rag.types import Backend, Candidate, Retrieval
from rag.ui.safety import escape_html, safe_markdown

TABLE_HEADERS = ["LLM", "Rerank #", "First #", "Dense #", "BM25 #", "Δ rank", "Rerank score", "Embedding score",
                 "BM25 score", "Found by", "Source", "Snippet"]
FOUND_BY = {"both": "both", "dense": "dense only", "bm25": "BM25 only"}
PENDING = "…"  # a reranker value that is still being computed
SNIPPET_CHARS = 90
STAGE_LABELS = {"condense": "condense question", "embed_query": "embed query", "search": "search",
                "bm25": "BM25 search", "scores": "fuse + scores", "rerank": "rerank", "generate": "generate"}
SOURCES_MARKER = "\n\n<!--sources-->"  # stripped before history goes back to the LLM


# --- candidates table ---------------------------------------------------------------------------------
def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def llm_mark(candidate: Candidate, top_n: int, reranked: bool) -> str:
    """✓ [n] for passages sent to the LLM (cited as [n]); ↓ dropped for first-stage top_n ones the reranker
    pushed out."""
    if candidate.selected:
        return f"✓ [{candidate.rank}]"
    if reranked and candidate.first_rank <= top_n:
        return "↓ dropped"
    return ""


def rank_delta(candidate: Candidate) -> str:
    """How far the reranker moved a candidate: +2 ↑ means two places up."""
    if candidate.rerank_rank is None:
        return ""
    moved = candidate.first_rank - candidate.rerank_rank
    return f"+{moved} ↑" if moved > 0 else (f"{moved} ↓" if moved < 0 else "0 =")


def candidate_row(candidate: Candidate, top_n: int, reranked: bool, pending: bool) -> list[str]:
    if pending:
        rerank_rank = rerank_score = PENDING
    else:
        rerank_rank = "" if candidate.rerank_rank is None else str(candidate.rerank_rank)
        rerank_score = "" if candidate.rerank_score is None else f"{candidate.rerank_score:.4f}"
    mark = PENDING if pending else llm_mark(candidate, top_n, reranked)
    return [mark, rerank_rank, str(candidate.first_rank), _rank(candidate.dense_rank), _rank(candidate.bm25_rank),
            "" if pending else rank_delta(candidate), rerank_score, f"{candidate.dense_score:.4f}",
            f"{candidate.bm25_score:.3f}", FOUND_BY[candidate.found_by], clean_name(candidate.source), snippet(candidate.text)]


def _rank(rank: int | None) -> str:
    """Blank outside that retriever's top_k list (its score is still shown)."""
    return "" if rank is None else str(rank)


def candidates_table(retrieval: Retrieval | None, top_n: int, pending: bool = False) -> pd.DataFrame:
    """One row per top_k candidate in display order; `pending` while the reranker is still running."""
    rows = [candidate_row(c, top_n, retrieval.reranked, pending) for c in retrieval.candidates] \
        if retrieval else []
    return pd.DataFrame(rows, columns=TABLE_HEADERS)


def source_label(candidate: Candidate) -> str:
    """Source and heading; names stored before bidi controls were cleaned at ingestion are cleaned here."""
    source = clean_name(candidate.source)
    return f"{source} › {candidate.heading}" if candidate.heading else source


# --- timings ---------------------------------------------------------------------------------------------
def format_seconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def timings_markdown(timings: dict[str, float], running: str | None = None,
                     ran_on: dict[str, Backend] | None = None) -> str:
    """`embed query 40 ms (local cpu float32) · search 5 ms · rerank … (http://gpu:8000/v1 (rerank))` —
    `running` names the stage still in progress, `ran_on` where each model stage runs."""
    ran_on = ran_on or {}
    parts = [f"{STAGE_LABELS.get(stage, stage)} **{format_seconds(s)}**{_where(ran_on.get(stage))}"
             for stage, s in timings.items()]
    if running:
        parts.append(f"{STAGE_LABELS.get(running, running)} …{_where(ran_on.get(running))}")
    total = sum(timings.values())
    suffix = "" if running or not timings else f" · total **{format_seconds(total)}**"
    return ("**Timings:** " + " · ".join(parts) + suffix) if parts else ""


def _where(backend: Backend | None) -> str:
    return f" ({safe_markdown(backend.describe())})" if backend else ""


# --- passage cards ---------------------------------------------------------------------------------------
def passage_anchor(turn: int, number: int) -> str:
    return f"passage-{turn}-{number}"


def passage_cards(retrieval: Retrieval | None, turn: int) -> str:
    """HTML cards with the full text of the passages sent to the LLM, numbered as the answer cites them.

    Every piece of document text is HTML-escaped; ids let the citation links in the chat scroll here.
    """
    selected = retrieval.selected if retrieval else []
    if not selected:
        return "<p class='rag-empty'>The passages sent to the LLM appear here after a question.</p>"
    cards = [_card(turn, n, c) for n, c in enumerate(selected, start=1)]
    return "<div class='rag-passages'>" + "".join(cards) + "</div>"


def _card(turn: int, number: int, candidate: Candidate) -> str:
    score = (f"rerank {candidate.rerank_score:.4f} · " if candidate.rerank_score is not None else "") \
        + f"embedding {candidate.dense_score:.4f} · BM25 {candidate.bm25_score:.3f}"
    return (f"<div class='rag-passage' id='{passage_anchor(turn, number)}'>"
            f"<div class='rag-passage-head'><b>[{number}]</b> {escape_html(source_label(candidate))}"
            f"<span class='rag-passage-score'>{score}</span></div>"
            f"<div class='rag-passage-text'>{escape_html(candidate.text)}</div></div>")


# --- the answer in the chat ------------------------------------------------------------------------------
_CITATION = re.compile(r"\[(\s*\d+(?:\s*(?:,|;)\s*\d+)*\s*)\](?!\()")


def link_citations(markdown: str, passages: list[Candidate], turn: int) -> str:
    """`[2]` -> a link to passage card 2 of this turn (hover shows the source); unknown numbers stay."""
    def replace(match: re.Match) -> str:
        numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
        if not all(1 <= n <= len(passages) for n in numbers):
            return match.group(0)
        return "".join(_citation_link(n, passages[n - 1], turn) for n in numbers)

    return _CITATION.sub(replace, markdown)


def _citation_link(number: int, passage: Candidate, turn: int) -> str:
    title = source_label(passage).replace('"', "'").replace("\\", "/")
    return f'[[{number}]](#{passage_anchor(turn, number)} "{safe_markdown(title)}")'


def sources_footer(passages: list[Candidate], cited: set[int], turn: int) -> str:
    """A compact `Sources:` line so each answer keeps its own citation -> passage mapping."""
    if not passages:
        return ""
    items = []
    for n, p in enumerate(passages, start=1):
        label = safe_markdown(source_label(p)).replace("[", "\\[").replace("]", "\\]")
        entry = f"[[{n}]](#{passage_anchor(turn, n)}) {label}"
        items.append(f"**{entry}**" if n in cited else entry)
    return SOURCES_MARKER + "\n\n<sub>Sources: " + " · ".join(items) + "</sub>"


def render_answer(text: str, passages: list[Candidate], turn: int, cited: set[int] | None = None,
                  final: bool = False) -> str:
    """The answer as chat Markdown: HTML escaped, [n] linked to the passage cards, sources on the last update."""
    body = link_citations(safe_markdown(text), passages, turn)
    return body + (sources_footer(passages, cited or set(), turn) if final else "")


def strip_sources(history: list[dict] | None) -> list[dict]:
    """Chat history without the sources footers the UI added (the LLM saw the passages, not the footer)."""
    cleaned = []
    for message in history or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str) and SOURCES_MARKER in content:
            message = {**message, "content": content.split(SOURCES_MARKER, 1)[0]}
        cleaned.append(message)
    return cleaned
