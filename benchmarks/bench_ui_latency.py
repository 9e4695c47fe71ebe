"""Question -> dense results *on screen*: the app in Chromium with the 0.6B-shaped models (default config).

    python benchmarks/bench_ui_latency.py [--questions 6]

Starts the real app (tests/browser_helpers.running_app) over a fresh Milvus Lite holding the bundled knowledge
base, with the Qwen3-0.6B-shaped bf16 checkpoints (Qwen's real tokenizer) that benchmarks/common.py builds
under ~/.cache/rag-bench. For each question, from a freshly loaded page, the times from the click on Ask to:
- the first candidate row in the passages table (first-stage results come before reranking);
- the first rerank scores in the table ("reranked 1/10": the shortest candidate is scored alone first);
- all rerank scores;
and then from a click on "Re-run last question" to all scores back from the score cache. After the clicks, the
first pass is timed again in the same process with the page idle ("alone"): the difference is what the browser
and Gradio took from the 2 cores meanwhile. The page notes each time itself when the DOM changes (`watch`).
The CPU (flags) is printed: the figures depend on it (docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import logging
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

QUESTIONS = ["How does Milvus store data?", "What index types can I use?", "How do I delete a document?",
             "Can the app run without a GPU?", "What does the reranker score mean?",
             "How are passages chunked?", "Where are uploads kept?", "Which LLMs can answer?"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=6)
    parser.add_argument("--cache-dir", default="~/.cache/rag-bench")
    parser.add_argument("--embedder", help="embedding checkpoint folder (default: the 0.6B-shaped bf16 one)")
    parser.add_argument("--reranker", help="reranker checkpoint folder (default: the 0.6B-shaped bf16 one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from common import checkpoints, compute_dtype, cpu_summary, gemm_peak
    from playwright.sync_api import sync_playwright

    from rag.models.embedder import SentenceTransformerEmbedder
    from rag.models.reranker import Qwen3Reranker
    from tests.browser_helpers import launch_chromium, running_app

    embed_path, rerank_path = checkpoints(args.cache_dir, args.embedder, args.reranker)
    embedder = SentenceTransformerEmbedder(str(embed_path))  # default device and dtype, as the app builds them
    reranker = Qwen3Reranker(str(rerank_path))
    knowledge = sorted((REPO / "assets" / "knowledge").glob("*.md"))
    dtype = compute_dtype(reranker.precision)  # the first pass's floor is at the peak of the dtype it computes in
    peak = gemm_peak(dtype)[0]
    runs = []
    with running_app(Path(tempfile.mkdtemp(prefix="rag-ui-bench-")), embedder, reranker, embed_path, rerank_path,
                     None, corpus=knowledge, knowledge_base="bundled knowledge base") as app, \
            sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        timings = page.locator("#rag-timings")
        for question in QUESTIONS[:args.questions]:
            page.goto(app.url)
            page.locator("#rag-question textarea").wait_for()
            page.fill("#rag-question textarea", question)
            watch(page, {"dense": ROW, "first": timings_match(r"reranked [1-9]"),
                         "all": timings_match(r"rerank [0-9]"), "over": timings_match(r"total [0-9]")})
            page.click("#rag-ask")
            marks = marked(page, "over")  # the turn is over
            dense, first, reranked = marks["dense"], marks["first"], marks["all"]
            server = timings.inner_text().replace("\n", " ")  # the server's own stage timings
            watch(page, {"cached": timings_match(r"reranked (\d+)/\1 \(\1 from the score cache\)")})
            page.click("#rag-rerun")
            cached = marked(page, "cached")["cached"]
            page.locator("#rag-plot img").wait_for(timeout=300_000)
            time.sleep(1.0)  # the page has drawn the plot and is idle: nothing else wants the cores
            floor, tokens, alone = first_pass(app.rag, reranker, question, peak)
            runs.append((dense, first, reranked, cached, floor, alone))
            print(f"{question:<36} dense {dense:.2f} s, first rerank scores {first:.2f} s (+{first - dense:.2f}; "
                  f"that pass alone {alone:.2f} s, its compute floor {floor:.2f} s: {tokens} tokens), all "
                  f"{reranked:.2f} s; re-run from the cache "
                  f"{cached:.2f} s | {server}", flush=True)
        browser.close()
    dense, first, reranked, cached, floors, alone = (list(column) for column in zip(*runs))
    after = [f - d for d, f in zip(dense, first)]
    print(f"\n{cpu_summary()}\n{embedder.precision.name} on {embedder.device}, p50 (max) over {len(runs)} "
          f"questions, from the click:\n  dense results on screen {statistics.median(dense):.2f} s "
          f"({max(dense):.2f})\n  first rerank scores {statistics.median(first):.2f} s ({max(first):.2f}), "
          f"{statistics.median(after):.2f} s ({max(after):.2f}) after the dense table; that first pass alone "
          f"{statistics.median(alone):.2f} s ({max(alone):.2f}), its compute floor {statistics.median(floors):.2f} s "
          f"({max(floors):.2f}) at the {dtype} GEMM peak {peak:.0f} GFLOP/s\n"
          f"  all rerank scores "
          f"{statistics.median(reranked):.2f} s ({max(reranked):.2f})\n  re-run, every score from the cache "
          f"{statistics.median(cached):.2f} s ({max(cached):.2f})")


ROW = "document.querySelector(\"#rag-candidates [role=gridcell][data-row='0']\") !== null"


def timings_match(pattern: str) -> str:
    """A page condition: the timings line matches `pattern` (a JavaScript regular expression)."""
    return f"new RegExp({json.dumps(pattern)}).test(document.querySelector('#rag-timings')?.innerText ?? '')"


def watch(page, conditions: dict[str, str]) -> None:
    """From now, the page notes when each condition first holds, checked on every change of the page (a
    MutationObserver), in ms since this call. (Playwright's own waits poll every 500 ms after the first second,
    which rounded every time measured here up to a 0.5 s grid; polling every frame costs the cores a layout.)"""
    checks = ", ".join(f"{json.dumps(name)}: () => {js}" for name, js in conditions.items())
    page.evaluate(f"""() => {{
        const conds = {{{checks}}}, t0 = performance.now();
        window.__marks = {{}};
        window.__observer?.disconnect();
        window.__observer = new MutationObserver(() => {{
            for (const name in conds) if (!(name in window.__marks) && conds[name]()) window.__marks[name] = performance.now() - t0;
        }});
        window.__observer.observe(document.body, {{subtree: true, childList: true, characterData: true, attributes: true}});
    }}""")


def marked(page, last: str, timeout_s: float = 300) -> dict[str, float]:
    """Once `last` has been noted, the seconds of every noted condition since `watch`."""
    page.wait_for_function(f"() => {json.dumps(last)} in (window.__marks ?? {{}})", polling=100,
                           timeout=timeout_s * 1000)
    return {name: ms / 1000 for name, ms in page.evaluate("() => window.__marks").items()}


def first_pass(rag, reranker, question: str, peak: float) -> tuple[float, int, float]:
    """The first progressive pass: its seconds at the GEMM peak, its tokens, and its seconds measured now with
    the page idle. It runs the query's own tokens (the system prompt + instruction are cached per process) and
    the shortest candidate's tail, on the cached head."""

    from transformers import AutoConfig

    from common import sequence_flops

    texts = [c.text for c in rag.retrieve(question).candidates]  # every score is cached by now: milliseconds
    head, static = reranker.shared_head(question, None), reranker.static_head(None)
    lengths = [len(ids) - len(head) for ids in reranker.encode_pairs(question, texts, None)]
    new = len(head) - len(static) + min(lengths)
    flops = sequence_flops(AutoConfig.from_pretrained(reranker.model_name), new, past=len(static), head_rows=2)
    seconds = []
    for _ in range(3):  # the reranker itself (no score cache); the fastest of 3
        started = time.perf_counter()
        reranker.score(question, [texts[lengths.index(min(lengths))]])
        seconds.append(time.perf_counter() - started)
    return flops / (peak * 1e9), new, min(seconds)


if __name__ == "__main__":
    main()
