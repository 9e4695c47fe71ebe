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
and Gradio took from the 2 cores meanwhile. On a Space the browser runs on the user's machine, not on the
server's cores; `--browser-nice 19` runs Chromium at the lowest CPU priority to approach that (it still shares
the cores, so it is not the same as a remote browser).
The CPU (flags) is printed: the figures depend on it (docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import logging
import re
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
    parser.add_argument("--browser-nice", type=int, default=0,
                        help="run Chromium at this niceness (19: lowest priority; default 0, the server's own)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from common import checkpoints, cpu_summary, gemm_peak
    from playwright.sync_api import sync_playwright

    from rag.models.embedder import SentenceTransformerEmbedder
    from rag.models.reranker import Qwen3Reranker
    from tests.browser_helpers import launch_chromium, running_app

    embed_path, rerank_path = checkpoints(args.cache_dir, args.embedder, args.reranker)
    embedder = SentenceTransformerEmbedder(str(embed_path))  # default device and dtype, as the app builds them
    reranker = Qwen3Reranker(str(rerank_path))
    knowledge = sorted((REPO / "assets" / "knowledge").glob("*.md"))
    peak = gemm_peak()[0]
    runs = []
    with running_app(Path(tempfile.mkdtemp(prefix="rag-ui-bench-")), embedder, reranker, embed_path, rerank_path,
                     None, corpus=knowledge, knowledge_base="bundled knowledge base") as app, \
            sync_playwright() as playwright:
        browser = launch_chromium(playwright, nice=args.browser_nice)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        timings = page.locator("#rag-timings")
        for question in QUESTIONS[:args.questions]:
            page.goto(app.url)
            page.locator("#rag-question textarea").wait_for()
            page.fill("#rag-question textarea", question)
            start = time.perf_counter()
            page.click("#rag-ask")
            page.locator("#rag-candidates [role=gridcell][data-row='0']").first.wait_for(timeout=120_000)
            dense = time.perf_counter() - start
            timings.get_by_text(re.compile(r"reranked [1-9]")).wait_for(timeout=300_000)
            first = time.perf_counter() - start
            timings.get_by_text(re.compile(r"rerank [0-9]")).wait_for(timeout=300_000)
            reranked = time.perf_counter() - start
            server = timings.inner_text().replace("\n", " ")  # the server's own stage timings
            timings.get_by_text(re.compile(r"total [0-9]")).wait_for(timeout=300_000)  # the turn is over
            start = time.perf_counter()
            page.click("#rag-rerun")
            timings.get_by_text(re.compile(r"reranked (\d+)/\1 \(\1 from the score cache\)")).wait_for(
                timeout=300_000)
            cached = time.perf_counter() - start
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
    print(f"\n{cpu_summary()}\nChromium at niceness {args.browser_nice}; {embedder.precision.name} on "
          f"{embedder.device}, p50 (max) over {len(runs)} "
          f"questions, from the click:\n  dense results on screen {statistics.median(dense):.2f} s "
          f"({max(dense):.2f})\n  first rerank scores {statistics.median(first):.2f} s ({max(first):.2f}), "
          f"{statistics.median(after):.2f} s ({max(after):.2f}) after the dense table; that first pass alone "
          f"{statistics.median(alone):.2f} s ({max(alone):.2f}), its compute floor {statistics.median(floors):.2f} s "
          f"({max(floors):.2f}) at the fp32 GEMM peak {peak:.0f} GFLOP/s\n"
          f"  all rerank scores "
          f"{statistics.median(reranked):.2f} s ({max(reranked):.2f})\n  re-run, every score from the cache "
          f"{statistics.median(cached):.2f} s ({max(cached):.2f})")


def first_pass(rag, reranker, question: str, peak: float) -> tuple[float, int, float]:
    """The first progressive pass: its seconds at the GEMM peak, its tokens, and its seconds measured now with
    the page idle. It runs the query's own tokens (the system prompt + instruction are cached per process) and
    the shortest candidate's tail, on the cached head."""
    import time

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
