"""Question -> dense results *on screen*: the app in Chromium with the 0.6B-shaped models (default config).

    python benchmarks/bench_ui_latency.py [--questions 6]

Starts the real app (tests/browser_helpers.running_app) over a fresh Milvus Lite holding the bundled knowledge
base, with the Qwen3-0.6B-shaped bf16 checkpoints (Qwen's real tokenizer) that benchmarks/common.py builds
under ~/.cache/rag-bench. For each question, from a freshly loaded page: the time from the click on Ask to the
first candidate row in the passages table (dense results come before reranking), then the time until reranking
is done.
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from common import checkpoints
    from playwright.sync_api import sync_playwright

    from rag.models.embedder import SentenceTransformerEmbedder
    from rag.models.reranker import Qwen3Reranker
    from tests.browser_helpers import launch_chromium, running_app

    embed_path, rerank_path = checkpoints(args.cache_dir, args.embedder, args.reranker)
    embedder = SentenceTransformerEmbedder(str(embed_path))  # default device and dtype, as the app builds them
    reranker = Qwen3Reranker(str(rerank_path))
    knowledge = sorted((REPO / "assets" / "knowledge").glob("*.md"))
    dense, reranked = [], []
    with running_app(Path(tempfile.mkdtemp(prefix="rag-ui-bench-")), embedder, reranker, embed_path, rerank_path,
                     None, corpus=knowledge, knowledge_base="bundled knowledge base") as app, \
            sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        for question in QUESTIONS[:args.questions]:
            page.goto(app.url)
            page.locator("#rag-question textarea").wait_for()
            page.fill("#rag-question textarea", question)
            start = time.perf_counter()
            page.click("#rag-ask")
            page.locator("#rag-candidates [role=gridcell][data-row='0']").first.wait_for(timeout=120_000)
            dense.append(time.perf_counter() - start)
            server = page.locator("#rag-timings").inner_text()  # the server's own embed/search timings
            page.locator("#rag-timings").get_by_text(re.compile(r"rerank [0-9]")).wait_for(timeout=300_000)
            reranked.append(time.perf_counter() - start)
            print(f"{question:<36} dense on screen {dense[-1]:.2f} s, reranked {reranked[-1]:.1f} s | {server}",
                  flush=True)
        browser.close()
    print(f"\n{embedder.precision.name} on {embedder.device}: question -> dense results on screen p50 "
          f"{statistics.median(dense):.2f} s (max {max(dense):.2f}); -> reranked p50 "
          f"{statistics.median(reranked):.1f} s over {len(dense)} questions")


if __name__ == "__main__":
    main()
