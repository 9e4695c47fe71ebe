"""The app's own overhead per question over a model server's compute: query embedding and reranking through the
HTTP clients (rag/models/remote_*.py) minus the time the server spent in its models.

    python benchmarks/bench_remote_overhead.py [--questions 50] [--documents 10]

The server is the protocol-faithful test server (tests/model_server.py) over the tiny Qwen3 test checkpoints on
127.0.0.1, so the server's compute is small and the difference is what this process adds: building the request
(instruction, template, the `max_tokens` cut with the model's tokenizer), JSON both ways, HTTP on loopback,
checking and reordering the answer. A real network adds its round trip on top.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(call, server, questions: int) -> dict[str, float]:
    """Client wall time minus server compute, per call, in milliseconds."""
    overheads, totals = [], []
    for i in range(questions):
        server.compute_seconds.clear()
        started = time.perf_counter()
        call(i)
        total = time.perf_counter() - started
        totals.append(total * 1000)
        overheads.append((total - sum(server.compute_seconds)) * 1000)
    return {"total_ms": statistics.median(totals), "overhead_ms": statistics.median(overheads),
            "overhead_p90_ms": percentile(overheads, 0.9)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--documents", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from rag.models.embedder import SentenceTransformerEmbedder
    from rag.models.remote_embedder import RemoteEmbedder
    from rag.models.remote_reranker import RemoteReranker
    from rag.models.reranker import Qwen3Reranker
    from tests.model_factory import build_embedder, build_reranker
    from tests.model_server import ModelServer

    folder = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    embedder_path, reranker_path = build_embedder(folder / "emb"), build_reranker(folder / "rer")
    embedder = SentenceTransformerEmbedder(str(embedder_path), device="cpu", dtype="fp32")
    reranker = Qwen3Reranker(str(reranker_path), device="cpu", dtype="fp32")
    passage = ("Milvus is an open-source vector database built for similarity search at scale; it stores the "
               "embeddings of text and images and finds the nearest neighbours of a query vector. ") * 3
    documents = [f"{i}. {passage}" for i in range(args.documents)]
    with ModelServer(embedder, reranker) as server:
        remote_embedder = RemoteEmbedder(str(embedder_path), server.base_url)
        rows = {"embed query": measure(lambda i: remote_embedder.embed_query(f"question {i} about vectors"),
                                       server, args.questions)}
        for api in ("rerank", "score", "tei"):
            client = RemoteReranker(str(reranker_path), server.url if api == "tei" else server.base_url, api=api)
            rows[f"rerank {args.documents} ({api})"] = measure(
                lambda i: client.score(f"question {i} about vectors", documents), server, args.questions)
    print(f"{'stage':<22}{'median total':>14}{'median overhead':>17}{'p90 overhead':>14}")
    for stage, row in rows.items():
        print(f"{stage:<22}{row['total_ms']:>11.1f} ms{row['overhead_ms']:>14.1f} ms{row['overhead_p90_ms']:>11.1f} ms")


if __name__ == "__main__":
    main()
