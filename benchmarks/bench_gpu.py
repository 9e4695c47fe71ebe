"""Our models' GPU path, its choices timed against each other: the packed attention's grouping, and the float32
residual stream.

    python benchmarks/bench_gpu.py [--rounds 7] [--rows 0,512,1024,2048,4096,all] [--stream on|off|on,off]
                                   [--dtype auto]

- **Attention grouping** (`rag.models.packed.GPU_ATTENTION_ROWS`; 0 = a call per text): a packed pass runs a call
  per text in every layer when each segment has its own attention call, as a CPU without the fused kernels runs
  it; on a GPU the launches cost more than the work (docs/benchmarks.md, "GPU").
- **Float32 residual stream** (rag/models/residual_stream.py): `off` puts transformers' own decoder-layer forward
  back, which rounds the stream to bf16 at every add.
Each arm (rows x stream) runs the app's stages, interleaved round by round, and the medians are printed; then
parity at each arm against the model cards' code in fp32:
- embed 28 FAQ chunks (`embed_documents`), 8 queries one by one (`embed_query`);
- rerank 10 FAQ candidates for each of 3 shipped questions (`score`), and the same with progress (`on_batch`:
  the shortest pair alone first, as the app's progressive table asks for it).
Checkpoints, documents and questions as in bench_models.py (0.6B-shaped, random weights, Qwen's tokenizer).
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np

import common  # noqa: I001 - sets the offline environment and sys.path before torch/transformers load
import torch

from bench_models import candidates


ALL = 1 << 30  # every segment of a pass in one call


def settings(text: str) -> list[int]:
    return [ALL if r == "all" else int(r) for r in text.split(",")]


def label(arm: tuple[int, bool]) -> str:
    rows, stream = arm
    return ("all" if rows == ALL else str(rows)) + (", stream" if stream else "")


def set_stream(models, on: bool) -> None:
    """The float32-stream forward of every switched decoder layer (rag/models/residual_stream.py), or
    transformers' own (the class's forward, which the instance's attribute shadows)."""
    for model in models:
        for layer in model.modules():
            if getattr(layer, "_rag_stream", False):
                if on and "forward" not in vars(layer):
                    layer.forward = layer._bench_stream_forward
                elif not on and "forward" in vars(layer):
                    layer._bench_stream_forward = vars(layer).pop("forward")


def stages(embedder, reranker, docs: list[str], queries: list[str], per_query) -> dict:
    """name -> a function running one of the app's stages once."""
    def embed_queries():
        embedder.query_cache.clear()  # every round computes: no cache hits
        return np.stack([embedder.embed_query(q) for q in queries])

    return {
        f"embed {len(docs)} chunks": lambda: embedder.embed_documents(docs),
        f"embed {len(queries)} queries": embed_queries,
        f"rerank {len(per_query)} x 10": lambda: [reranker.score(q, d) for q, d in per_query],
        f"rerank {len(per_query)} x 10, progressive": lambda: [reranker.score(q, d, on_batch=lambda *a: None)
                                                               for q, d in per_query],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", default=common.DEFAULT_CACHE)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--rows", default="0,512,1024,2048,4096,all", help="GPU_ATTENTION_ROWS settings")
    parser.add_argument("--stream", default="on", help="the float32 residual stream: on, off, or on,off")
    parser.add_argument("--dtype", default="auto", help="our models' precision (auto: bf16 on a GPU)")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)

    import rag.models.packed as packed
    from rag.models.embedder import SentenceTransformerEmbedder
    from rag.models.reranker import Qwen3Reranker
    from sentence_transformers import SentenceTransformer
    from tests.reference import ReferenceReranker

    print(common.machine_summary(args.device), flush=True)
    embed_path, rerank_path = common.checkpoints(args.cache_dir)
    chunks = common.faq_chunks()
    docs = chunks[::len(chunks) // 28][:28]
    questions = common.shipped_faq_queries()
    per_query = [(q, candidates(chunks, q)) for q in questions[:3]]
    embedder = SentenceTransformerEmbedder(str(embed_path), device=args.device, dtype=args.dtype)
    reranker = Qwen3Reranker(str(rerank_path), device=args.device, dtype=args.dtype)
    print(f"ours: {embedder.precision.name} / {reranker.precision.name}; default GPU_ATTENTION_ROWS "
          f"{packed.GPU_ATTENTION_ROWS}", flush=True)
    run = stages(embedder, reranker, docs, questions[-8:], per_query)
    models = (embedder.model, reranker.model)
    arms = [(r, on == "on") for on in args.stream.split(",") for r in settings(args.rows)]
    times = {(name, arm): [] for name in run for arm in arms}

    def use(arm):
        packed.GPU_ATTENTION_ROWS = arm[0]
        set_stream(models, arm[1])

    for arm in arms:  # warm-up: kernels, the static head's KV
        use(arm)
        for fn in run.values():
            fn()
    for _ in range(args.rounds):
        for arm in arms:
            use(arm)
            for name, fn in run.items():
                with common.Clock() as clock:
                    fn()
                times[name, arm].append(clock.wall)
    print(f"\nmedian of {args.rounds} interleaved rounds, ms (min-max)")
    print("stage".ljust(34) + "".join(label(arm).rjust(20) for arm in arms))
    for name in run:
        cells = [times[name, arm] for arm in arms]
        print(name.ljust(34) + "".join(f"{1e3 * statistics.median(c):7.1f} ({1e3 * min(c):.0f}-{1e3 * max(c):.0f})"
                                       .rjust(20) for c in cells), flush=True)

    card = SentenceTransformer(str(embed_path), device=args.device, model_kwargs={"dtype": torch.float32})
    card_reranker = ReferenceReranker(str(rerank_path), dtype=torch.float32, device=args.device)
    card.encode(docs[:2]), card_reranker.score(*per_query[0])  # warm-up
    with common.Clock() as clock:
        reference_docs = card.encode(docs, normalize_embeddings=True)
    with common.Clock() as rerank_clock:
        reference_scores = [card_reranker.score(q, d) for q, d in per_query]
    print(f"\ncard fp32: embed {len(docs)} chunks {1e3 * clock.wall:.0f} ms, "
          f"rerank {1e3 * rerank_clock.wall:.0f} ms (one run each, after a warm-up)")
    for arm in arms:
        use(arm)
        vectors = embedder.embed_documents(docs)
        scores = [reranker.score(q, d) for q, d in per_query]
        cosine = float(np.min(np.sum(vectors * reference_docs, axis=1)))
        delta = max(abs(a - b) for s, ref in zip(scores, reference_scores) for a, b in zip(s, ref))
        top3 = sum(list(np.argsort(s)[::-1][:3]) == list(np.argsort(ref)[::-1][:3])
                   for s, ref in zip(scores, reference_scores))
        print(f"{label(arm)}: embed min cos {cosine:.6f}, rerank max |d| {delta:.1e}, top-3 same {top3}/{len(scores)}",
              flush=True)


if __name__ == "__main__":
    main()
