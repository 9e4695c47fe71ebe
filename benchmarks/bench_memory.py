"""Peak RSS and speed of the default CPU precision vs plain fp32, on Qwen3-0.6B-shaped bf16 checkpoints.

    python benchmarks/bench_memory.py [--cache-dir ~/.cache/rag-bench] [--data ../shared/data/milvus-docs-2.4/faq]

The released Qwen3-Embedding/Reranker-0.6B weights are stored in bf16. On a CPU without native bf16, `auto`
keeps them in bf16 and computes in fp32 ("bf16w"): the same numbers as an fp32 load, at half the memory.
Peak RSS is measured in a fresh process per configuration: both models loaded + one small call each, then
an upload's embedding (28 FAQ chunks, packed) and a question's rerank (10 chunks); speed and score difference
in one process, the two configurations interleaved.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
CONFIGS = ("fp32", "auto")


def build(cache: Path) -> tuple[Path, Path]:
    from common import checkpoints

    return checkpoints(str(cache))


def peak_rss(dtype: str, emb: Path, rr: Path, docs: list[str]) -> dict:
    """Run in a child: load both models, one small call each (peak: `idle_gb`), then embed `docs` and rerank 10
    of them (peak: `rss_gb`). VmHWM: unlike ru_maxrss it does not carry over the parent's size across fork +
    exec."""
    code = f"""
import json, time, logging
logging.disable(logging.WARNING)
from rag.models.embedder import SentenceTransformerEmbedder
from rag.models.reranker import Qwen3Reranker
t = time.time()
e = SentenceTransformerEmbedder({str(emb)!r}, device="cpu", dtype={dtype!r})
r = Qwen3Reranker({str(rr)!r}, device="cpu", dtype={dtype!r})
load = time.time() - t
e.embed_query("warm up"); r.score("q", ["a document"])
idle = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 2**20
docs = {docs!r}
e.embed_documents(docs)  # an upload: packs of up to 2048 tokens
r.score("How does Milvus store data?", docs[:10])  # a question's rerank: 10 candidates in one packed pass
print(json.dumps({{"precision": e.precision.name, "load_s": load, "idle_gb": idle,
                  "rss_gb": int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 2**20}}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(emb: Path, rr: Path, docs: list[str], rounds: int = 2) -> dict:
    import logging

    logging.disable(logging.WARNING)
    from rag.models.embedder import SentenceTransformerEmbedder
    from rag.models.reranker import Qwen3Reranker

    rerankers = {d: Qwen3Reranker(str(rr), device="cpu", dtype=d) for d in ("fp32", "bf16w")}
    embedders = {d: SentenceTransformerEmbedder(str(emb), device="cpu", dtype=d) for d in ("fp32", "bf16w")}
    times = {(stage, d): [] for stage in ("rerank", "query") for d in rerankers}
    scores = {}
    for n in range(rounds):
        for d in rerankers:
            t = time.perf_counter()
            scores[d] = rerankers[d].score("How does Milvus store data?", docs)
            times["rerank", d].append(time.perf_counter() - t)
            t = time.perf_counter()
            embedders[d].embed_query(f"What is the maximum vector dimension? ({n})")
            times["query", d].append(time.perf_counter() - t)
    diff = max(abs(a - b) for a, b in zip(scores["fp32"], scores["bf16w"]))
    return {"times": {k: min(v) for k, v in times.items()}, "max_diff": diff}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/rag-bench").expanduser())
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/milvus-docs-2.4/faq")
    args = parser.parse_args()
    emb, rr = build(args.cache_dir)
    chunks = [t for f in sorted(glob.glob(str(args.data / "*.md"))) for t in Path(f).read_text().split("# ")
              if t.strip()]
    print(f"| config | precision | load s | peak RSS GB, loaded + one small call | peak RSS GB, + embed "
          f"{len(chunks[:28])} chunks + rerank 10 |\n|---|---|---:|---:|---:|")
    for dtype in CONFIGS:
        r = peak_rss(dtype, emb, rr, chunks[:28])
        print(f"| dtype={dtype} | {r['precision']} | {r['load_s']:.1f} | {r['idle_gb']:.2f} | {r['rss_gb']:.2f} |")
    s = speed(emb, rr, chunks[10:20])
    t = s["times"]
    print("\n| stage | fp32 s | bf16w s | ratio |\n|---|---:|---:|---:|")
    for stage in ("rerank", "query"):
        print(f"| {stage} | {t[stage, 'fp32']:.2f} | {t[stage, 'bf16w']:.2f} | "
              f"{t[stage, 'fp32'] / t[stage, 'bf16w']:.2f}x |")
    print(f"\nmax |score fp32 - score bf16w| over 10 candidates: {s['max_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
