"""Speed and parity of our embedder/reranker against the Milvus tutorial's code, in one process, same inputs.

    python benchmarks/bench_models.py [--quick] [--data ../shared/data/milvus-docs-2.4/faq]

Builds Qwen3-0.6B-shaped checkpoints with random weights (tests/model_factory.py) once under --cache-dir, or
uses --embedder/--reranker folders (real checkpoints, to re-check parity of int8/bf16 on real weights).
Prints one table (stage, impl, seconds, tokens/s, ratio vs tutorial, max |dscore|, top-3 agreement, peak RSS)
plus the matmul throughput, the compute floor, Milvus search p50 at 20k rows and question -> dense latency.
The machine may be shared: every ratio compares timings taken in this run, interleaved where it is cheap.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

TOP_K = 10
ROWS: list[dict] = []


# --- measurement helpers ------------------------------------------------------------------------------------
class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 20 ms (models loaded inside count)."""

    def __enter__(self):
        self._proc, self._stop = psutil.Process(), threading.Event()
        gc.collect()
        self.base = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def delta_gb(self) -> float:
        return (self.peak - self.base) / 2**30


def matmul_gflops(dtype, m=512, k=1024, n=3072, repeat=20) -> float:
    """Throughput of an MLP-shaped Linear, as the models run it (nn.Linear dispatches to oneDNN for bf16)."""
    layer = torch.nn.Linear(k, n, bias=False).eval()
    if dtype == "int8":
        from rag.models.devices import quantize_linears

        layer = quantize_linears(torch.nn.Sequential(layer))
        dtype = torch.float32
    else:
        layer = layer.to(dtype)
    x = torch.randn(m, k, dtype=dtype)
    with torch.inference_mode():
        for _ in range(3):
            layer(x)
        best = float("inf")
        for _ in range(3):  # best of 3: the least disturbed by other load on the machine
            start = time.perf_counter()
            for _ in range(repeat):
                layer(x)
            best = min(best, time.perf_counter() - start)
    return 2 * m * k * n * repeat / best / 1e9


def flops_per_token(config) -> float:
    """2 x the Linear weights of the decoder (attention-score FLOPs are small at these lengths)."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    q, kv = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
    return 2 * layers * (h * q + 2 * h * kv + q * h + 3 * h * i)


def row(stage, impl, seconds, tokens=None, base=None, delta=None, top3=None, rss=None, note=""):
    ROWS.append(dict(stage=stage, impl=impl, seconds=seconds, tps=tokens / seconds if tokens else None,
                     ratio=base / seconds if base else None, delta=delta, top3=top3, rss=rss, note=note))
    print(f"  done: {stage} | {impl} | {seconds if seconds is None else round(seconds, 3)} s", flush=True)


def print_table():
    print(f"\n{'stage':<22}{'impl':<34}{'seconds':>9}{'tok/s':>8}{'x tut.':>8}{'max|d|':>10}{'top-3':>7}"
          f"{'RSS GB':>8}  note")
    for r in ROWS:
        f = lambda v, spec: format(v, spec) if v is not None else format("-", ">" + spec.split(".")[0])  # noqa
        print(f"{r['stage']:<22}{r['impl']:<34}{f(r['seconds'], '9.2f')}{f(r['tps'], '8.0f')}"
              f"{f(r['ratio'], '8.1f')}{f(r['delta'], '10.2e')}{f(r['top3'], '7.0%')}{f(r['rss'], '8.2f')}"
              f"  {r['note']}")


# --- inputs ------------------------------------------------------------------------------------------------
def checkpoints(args, bf16: bool = False) -> tuple[Path, Path]:
    """(embedder, reranker) folders. fp32-stored ones for the parity rows; `bf16=True`: stored in bf16 like the
    released Qwen3 checkpoints, for the default-configuration rows (its CPU default keeps bf16 weights)."""
    from tests.model_factory import QWEN3_06B, build_embedder, build_reranker

    cache = Path(args.cache_dir).expanduser()
    suffix = "-bf16" if bf16 else ""
    paths = []
    for name, given, build in (("qwen3-embedding-0.6b-shaped", args.embedder, build_embedder),
                               ("qwen3-reranker-0.6b-shaped", args.reranker, build_reranker)):
        path = Path(given) if given else cache / (name + suffix)
        if not path.exists():
            print(f"building {path} (random weights, once)...", flush=True)
            tmp = path.with_suffix(".tmp")
            build(tmp, sizes=QWEN3_06B, bf16=bf16)
            tmp.rename(path)
        paths.append(path)
    return paths[0], paths[1]


def load_chunks(folder: Path) -> list[str]:
    """The tutorial's chunking: each FAQ file's text split on "# "; empty pieces dropped."""
    chunks = []
    for file in sorted(folder.glob("*.md")):
        chunks += [c for c in file.read_text(encoding="utf-8").split("# ") if c.strip()]
    return chunks


def questions(chunks: list[str]) -> list[str]:
    """The FAQ entries' own question lines, as queries."""
    qs = [c.strip().splitlines()[0].strip() for c in chunks]
    return [q for q in qs if q.endswith("?") and len(q) > 15]


def top3_same(a, b) -> bool:
    return list(np.argsort(-np.asarray(a))[:3]) == list(np.argsort(-np.asarray(b))[:3])


# --- stages -----------------------------------------------------------------------------------------------
def bench_embedding(args, path, chunks):
    """Every row embeds the same chunks (every n-th of the corpus), so each ratio compares equal work."""
    from sentence_transformers import SentenceTransformer

    from rag.models.embedder import SentenceTransformerEmbedder
    from tests.reference import tutorial_emb_text

    subset = chunks[::max(1, len(chunks) // args.embed_chunks)][:args.embed_chunks]
    stage = f"embed {len(subset)} chunks"
    with PeakRSS() as mem:
        tutorial = SentenceTransformer(str(path), device="cpu")  # the tutorial's load: defaults (fp32 here)
        tokens = sum(len(tutorial.tokenizer(t)["input_ids"]) for t in subset)
        tutorial_emb_text(tutorial, subset[0])  # warm-up
        start = time.perf_counter()
        reference = np.array([tutorial_emb_text(tutorial, t) for t in subset], dtype=np.float32)
        base = time.perf_counter() - start
    row(stage, "tutorial emb_text loop (fp32)", base, tokens, base, rss=mem.delta_gb, note="one text per call")
    del tutorial
    gc.collect()
    for dtype in args.dtypes:
        for cap in ([args.embed_batch_tokens] if dtype != "fp32" or args.quick else args.embed_caps):
            with PeakRSS() as mem:
                emb = SentenceTransformerEmbedder(str(path), device="cpu", dtype=dtype, batch_size=args.embed_batch,
                                                  batch_tokens=cap)
                emb.embed_documents(subset[:2])  # warm-up
                start = time.perf_counter()
                vectors = emb.embed_documents(subset)
                secs = time.perf_counter() - start
            cos = float(np.min(np.sum(vectors * reference, axis=1)))
            limit = f"<={cap}tok" if cap < 1 << 20 else "no token cap"
            row(stage, f"ours {dtype} b={args.embed_batch} {limit}", secs, tokens, base, delta=1 - cos,
                rss=mem.delta_gb, note="max|d| = 1 - min cosine vs tutorial")
            del emb
            gc.collect()
    return tokens / len(subset) * len(chunks)  # corpus tokens, for the compute floor


def candidates(chunks: list[str], query: str) -> list[str]:
    """The 10 chunks sharing the most words with the query's own FAQ entry (random weights can't pick)."""
    words = lambda text: set(text.lower().split())  # noqa: E731
    entry = words(next(c for c in chunks if c.strip().startswith(query)))
    overlap = [len(entry & words(c)) / len(entry | words(c)) for c in chunks]
    return [chunks[i] for i in np.argsort(overlap, kind="stable")[::-1][:TOP_K]]


def bench_rerank(args, path, chunks, queries):
    from rag.models.reranker import Qwen3Reranker
    from tests.reference import ReferenceReranker, tutorial_rerank_documents

    cands = {q: candidates(chunks, q) for q in queries}

    with PeakRSS() as mem:
        reference = ReferenceReranker(str(path))
        counter = Qwen3Reranker(str(path), device="cpu", dtype="fp32", model=reference.model,
                                tokenizer=reference.tokenizer)
        tokens = lambda q: sum(len(s) for s in counter.encode_pairs(q, cands[q], None))  # noqa: E731
        base_q = queries[:args.baseline_queries]
        ref_scores, tut_times = {}, []
        for q in base_q:
            start = time.perf_counter()
            ranked = tutorial_rerank_documents(reference, q, cands[q])
            tut_times.append(time.perf_counter() - start)
            by_doc = dict(ranked)
            ref_scores[q] = [by_doc[d] for d in cands[q]]
    base = statistics.mean(tut_times)
    row("rerank 10 (per query)", "tutorial rerank_documents (fp32)", base, statistics.mean(map(tokens, base_q)),
        base, rss=mem.delta_gb, note=f"mean of {len(base_q)} queries")
    fp32_scores = None
    for dtype in args.dtypes:
        cap = args.batch_tokens
        configs = [(True, args.rerank_batch, cap)]
        if dtype == "fp32" and not args.quick:
            configs += [(False, args.rerank_batch, cap), (True, args.rerank_batch, 512),
                        (True, args.rerank_batch, 1 << 30)]
            configs += [(True, b, cap) for b in args.rerank_batches if b != args.rerank_batch]
        for prefix, bs, cap in configs:
            with PeakRSS() as mem:
                if dtype == "fp32":  # share the reference's weights: same fp32 model, no second copy
                    ours = Qwen3Reranker(str(path), device="cpu", dtype="fp32", batch_size=bs,
                                         prefix_cache=prefix, batch_tokens=cap, model=reference.model,
                                         tokenizer=reference.tokenizer)
                else:
                    ours = Qwen3Reranker(str(path), device="cpu", dtype=dtype, batch_size=bs, prefix_cache=prefix,
                                         batch_tokens=cap)
                ours.score(queries[0], cands[queries[0]][:2])  # warm-up
                times, scores = [], {}
                for q in queries if (prefix, bs, cap) == configs[0] else base_q:
                    start = time.perf_counter()
                    scores[q] = ours.score(q, cands[q])
                    times.append(time.perf_counter() - start)
            # fp32 is compared with the reference; reduced precision with our fp32 on every query (our fp32 is
            # itself within 1e-4 of the reference on the baseline queries, see its row)
            ref = ref_scores if dtype == "fp32" else fp32_scores
            qs = [q for q in scores if q in ref]
            delta = max(max(abs(a - b) for a, b in zip(scores[q], ref[q])) for q in qs)
            top3 = sum(top3_same(scores[q], ref[q]) for q in qs) / len(qs)
            secs = statistics.mean(times[:len(base_q)])  # the tutorial's queries: same inputs, same ratio
            limit = f"<={cap}tok" if cap < 1 << 20 else "no token cap"
            impl = f"ours {dtype} {'prefix' if prefix else 'full-pass'} b={bs} {limit}"
            row("rerank 10 (per query)", impl, secs, statistics.mean(map(tokens, base_q)),
                base, delta, top3, mem.delta_gb,
                note=f"vs {'tutorial' if dtype == 'fp32' else 'ours fp32'} on {len(qs)} queries")
            if dtype == "fp32" and (prefix, bs, cap) == configs[0]:
                fp32_scores = scores
            del ours
            gc.collect()
    del reference
    gc.collect()


def bench_milvus_and_dense(args, embed_path, queries):
    from rag.models.embedder import SentenceTransformerEmbedder
    from rag.store import Store
    from rag.types import Chunk

    emb = SentenceTransformerEmbedder(str(embed_path), device="cpu", dtype="auto")  # default configuration
    dim = emb.dim  # 1024 for the 0.6B shape
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.milvus_rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [Chunk(text=f"chunk {i}", source=f"doc{i // 100}.md", chunk_index=i % 100)
              for i in range(args.milvus_rows)]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(str(Path(tmp) / "milvus.db"), "bench", dim)
        start = time.perf_counter()
        store.upsert(chunks, vectors)
        upload = time.perf_counter() - start
        start = time.perf_counter()
        store.wait_until_indexed()  # what every upload does before it reports done (rag/store/indexing.py)
        indexing = time.perf_counter() - start
        probes = rng.standard_normal((args.searches, dim)).astype(np.float32)
        times = []
        for p in probes:  # right after the upload: no warm-up search
            start = time.perf_counter()
            store.search(p / np.linalg.norm(p), TOP_K)
            times.append(time.perf_counter() - start)
        row(f"milvus search {args.milvus_rows // 1000}k", "Store.search p50 (top-10)", statistics.median(times),
            note=f"first search {times[0] * 1e3:.0f} ms, p95 {np.percentile(times, 95) * 1e3:.0f} ms; "
                 f"upsert+flush {upload:.1f} s, then index wait {indexing:.1f} s")
        emb.embed_query("warm-up")
        totals = []
        for q in queries[:args.dense_queries]:
            start = time.perf_counter()
            store.search(emb.embed_query(q), TOP_K)  # distinct questions: no query-cache hits
            totals.append(time.perf_counter() - start)
        row("question -> dense", f"embed_query + search ({emb.precision.name})", statistics.median(totals),
            note=f"p50 of {len(totals)} questions, max {max(totals):.2f} s")
        store.close()


def rss_probe(embed_path, rerank_path) -> float:
    """Peak RSS (GB) of a fresh process with both models in the default configuration, one query answered."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork + exec, so a child of this multi-GB process
    # would report the parent's size
    code = ("import os,sys; sys.path.insert(0, %r); from rag.models.embedder import SentenceTransformerEmbedder;"
            "from rag.models.reranker import Qwen3Reranker; e=SentenceTransformerEmbedder(%r); r=Qwen3Reranker(%r);"
            "e.embed_query('what is milvus?'); r.score('what is milvus?', ['Milvus is a vector database.']*10);"
            "import psutil; hwm=[l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1];"
            "print(int(hwm)/2**20, psutil.Process().memory_info().rss/2**30, e.precision.name, r.precision.name,"
            " sep='|')"
            % (str(REPO), str(embed_path), str(rerank_path)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak, now, emb, rer = out.stdout.strip().splitlines()[-1].split("|")
    row("both models loaded", f"default config ({emb}/{rer}), new proc", None, rss=float(peak),
        note=f"peak RSS (VmHWM) incl. loading; {float(now):.2f} GB after one query")
    return float(peak)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO / ".." / "shared" / "data" / "milvus-docs-2.4" / "faq"))
    parser.add_argument("--cache-dir", default="~/.cache/rag-bench")
    parser.add_argument("--embedder", help="embedding checkpoint folder (default: build a 0.6B-shaped one)")
    parser.add_argument("--reranker", help="reranker checkpoint folder (default: build a 0.6B-shaped one)")
    parser.add_argument("--quick", action="store_true", help="fewer queries and no batch-size sweep")
    parser.add_argument("--dtypes", help="our precisions, fp32 first (default fp32,int8 and bf16 where the "
                        "CPU has native bf16; emulated bf16 is several times slower than fp32)")
    parser.add_argument("--queries", type=int, help="rerank parity queries (default 8, quick 3)")
    parser.add_argument("--baseline-queries", type=int, help="tutorial rerank queries (default 2, quick 1)")
    parser.add_argument("--embed-chunks", type=int, help="chunks every embedding row embeds (default 28: every "
                        "3rd chunk of the FAQ; quick 8)")
    parser.add_argument("--embed-batch", type=int, default=16)
    parser.add_argument("--embed-batch-tokens", type=int, default=2048, help="embedder cap on padded tokens per "
                        "batch (the CPU default); the full run also measures no cap")
    parser.add_argument("--rerank-batch", type=int, default=8)
    parser.add_argument("--batch-tokens", type=int, default=2048, help="reranker cap on padded tokens per batch "
                        "(the CPU default); a large value measures plain batch sizes")
    parser.add_argument("--milvus-rows", type=int, default=20_000)
    parser.add_argument("--searches", type=int, default=50)
    parser.add_argument("--dense-queries", type=int, default=10)
    args = parser.parse_args(argv)
    from rag.models.devices import cpu_has_bf16

    args.dtypes = (args.dtypes or "fp32,int8" + (",bf16" if cpu_has_bf16() else "")).split(",")
    args.queries = args.queries or (3 if args.quick else 8)
    args.baseline_queries = args.baseline_queries or (1 if args.quick else 2)
    args.embed_chunks = args.embed_chunks or (8 if args.quick else 28)
    args.embed_caps = list(dict.fromkeys([args.embed_batch_tokens, 512, 1 << 30]))
    args.rerank_batches = [1, 8]

    embed_path, rerank_path = checkpoints(args)
    chunks = load_chunks(Path(args.data))
    queries = questions(chunks)[:args.queries]
    from transformers import AutoConfig

    fpt = flops_per_token(AutoConfig.from_pretrained(rerank_path))
    speed = {name: matmul_gflops(dt) for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16),
                                                        ("int8", "int8"))}
    print(f"{len(chunks)} chunks, {len(queries)} queries, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    corpus_tokens = bench_embedding(args, embed_path, chunks)
    print(f"compute floor, embed the whole corpus ({corpus_tokens:.0f} tokens): "
          + ", ".join(f"{k} {fpt * corpus_tokens / v / 1e9:.0f} s" for k, v in speed.items()), flush=True)
    bench_rerank(args, rerank_path, chunks, queries)
    default_embed, default_rerank = checkpoints(args, bf16=True)
    bench_milvus_and_dense(args, default_embed, questions(chunks)[-args.dense_queries:])
    rss_probe(default_embed, default_rerank)
    print_table()
    print("\nLinear 512x1024x3072 throughput (best of 3): "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in speed.items()))
    for r in ROWS:
        if r["stage"].startswith(("embed", "rerank")) and r["impl"].startswith("tutorial") and r["tps"]:
            tokens = r["tps"] * r["seconds"]
            floors = ", ".join(f"{k} {fpt * tokens / v / 1e9:.1f} s" for k, v in speed.items())
            print(f"compute floor, {r['stage']} ({tokens:.0f} tokens x {fpt / 1e9:.2f} GFLOP): {floors}")


if __name__ == "__main__":
    main()
