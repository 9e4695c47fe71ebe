"""Questions per minute from N concurrent clients: the app with its models in-process vs on vLLM, same machine.

    RAG_TEST_VLLM_PYTHON=$(tests/setup_vllm.sh) python benchmarks/bench_concurrency.py [--size tiny|small]
        [--clients 1 16] [--seconds 60] [--kb /work/shared/data/milvus-docs-2.4/faq] [--models EMB RR]

The real app (`python app.py`, tests/app_process.py) with the FAQ folder as its knowledge base, no LLM; each
client is a thread that asks the `/retrieve` endpoint (dense search + reranking of top_k=10, Gradio's queued REST
route) one question after another (the shipped FAQ questions, in a different order per client) for `--seconds`.
Both backends serve the same checkpoints, built once under --cache-dir (tests/model_factory.py, Qwen's real
tokenizer): `tiny` (VLLM_TINY: the models cost little, so the figure is the app's own overhead) or `small`
(hidden 512, 8 layers: the models cost most of the time). Backends:

- in-process: fp32 on the CPU, the app's own concurrency limits for local models (rag/ui/serving.py);
- vllm: both models on the vLLM CPU build (tests/vllm_server.py, the docs/deploy.md commands), started before
  and kept running; the app gets RAG_EMBEDDING_URL / RAG_RERANKER_URL and the server concurrency limits.
The vLLM servers are started only for the vLLM runs and stopped before the in-process runs start.

Prints one row per (backend, clients): questions, questions/min, latency p50/p95, errors, plus vLLM's start-up
time and a check that both backends rank the first question's candidates the same. The CPU is shared: other
processes on the machine show up in every figure (the load average is printed before each run).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from tests.app_process import AppProcess  # noqa: E402
from tests.model_factory import VLLM_TINY, build_embedder, build_reranker  # noqa: E402
from tests.vllm_server import VLLMServer, start_all, stop_all, vllm_python  # noqa: E402

SIZES = {"tiny": VLLM_TINY,
         "small": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                       num_key_value_heads=4, head_dim=64, max_position_embeddings=4096)}
QUESTIONS = REPO / "assets" / "eval" / "milvus_faq.jsonl"
TOP_K, TOP_N = 10, 3  # candidates reranked per question, passages selected


def checkpoints(cache: Path, size: str) -> tuple[Path, Path]:
    """Built once per size; a fixed path also lets vLLM reuse its compile cache on the next run."""
    embedder, reranker = cache / f"{size}-qwen3-embedding", cache / f"{size}-qwen3-reranker"
    if not (embedder / "modules.json").exists():
        build_embedder(embedder, sizes=SIZES[size])
    if not (reranker / "config.json").exists():
        build_reranker(reranker, sizes=SIZES[size])
    return embedder, reranker


def ask(client: httpx.Client, base: str, question: str) -> dict:
    """One question through Gradio's queued REST route: POST starts the event, GET streams its result."""
    body = {"data": [question, TOP_K, TOP_N, True, "dense"]}  # query, top_k, top_n, use_reranker, mode
    event = client.post(f"{base}gradio_api/call/retrieve", json=body).raise_for_status().json()
    with client.stream("GET", f"{base}gradio_api/call/retrieve/{event['event_id']}") as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: ") and kind in ("complete", "error"):
                if kind == "error":
                    raise RuntimeError(f"/retrieve failed: {line}")
                return json.loads(line[len("data: "):])[0]
    raise RuntimeError("the event stream ended without a result")


def load(base: str, questions: list[str], clients: int, seconds: float) -> dict:
    """`clients` threads asking one question after another until `seconds` have passed; a question still
    running then is counted when it finishes (the rate divides by the time the last one finished)."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = time.perf_counter()
    stop_at = start + seconds

    def client_loop(n: int) -> None:
        order = questions[:]
        random.Random(n).shuffle(order)
        with httpx.Client(timeout=600) as client:
            i = 0
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    ask(client, base, order[i % len(order)])
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    with lock:
                        errors.append(str(exc)[:200])
                else:
                    with lock:
                        latencies.append(time.perf_counter() - t0)
                i += 1

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {"questions": len(latencies), "seconds": elapsed, "per_min": 60 * len(latencies) / elapsed,
            "p50": statistics.median(latencies) if latencies else float("nan"),
            "p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"),
            "errors": len(errors), "first_error": errors[0] if errors else ""}


def run_app(workdir: Path, models: tuple[Path, Path], kb: Path, env: dict, questions: list[str],
            clients_list: list[int], seconds: float, backend: str) -> tuple[list[dict], dict]:
    app = AppProcess(workdir, None, models[0], models[1], shared=False, extra_env=env)
    started = time.perf_counter()
    app.start(timeout=900)
    print(f"[{backend}] app ready in {time.perf_counter() - started:.0f} s (knowledge base ingested)", flush=True)
    rows = []
    try:
        with httpx.Client(timeout=600) as client:
            first = ask(client, app.url, questions[0])  # warm-up, and the ranking compared across backends
            for q in questions[1:4]:
                ask(client, app.url, q)
        for clients in clients_list:
            print(f"[{backend}] {clients} clients, {seconds:.0f} s; load average {os.getloadavg()[0]:.1f}",
                  flush=True)
            row = {"backend": backend, "clients": clients, **load(app.url, questions, clients, seconds)}
            print(f"  {row}", flush=True)
            rows.append(row)
    except Exception:
        print(f"[{backend}] app log:\n{app.log_text()[-3000:]}", flush=True)
        raise
    finally:
        app.stop()
    return rows, first


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=60.0, help="per (backend, clients) run")
    parser.add_argument("--kb", type=Path, default=Path("/work/shared/data/milvus-docs-2.4/faq"))
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "rag-bench-concurrency")
    parser.add_argument("--models", type=Path, nargs=2, metavar=("EMBEDDER", "RERANKER"),
                        help="checkpoint folders to use instead of building --size ones")
    parser.add_argument("--vllm-cores", nargs=2, metavar=("EMBED", "RERANK"),
                        help="VLLM_CPU_OMP_THREADS_BIND per server, e.g. 0 1 (default: vLLM's auto binding)")
    parser.add_argument("--backends", nargs="+", default=["in-process", "vllm"], choices=["in-process", "vllm"])
    args = parser.parse_args(argv)
    python = vllm_python()
    if "vllm" in args.backends and python is None:
        parser.error("set RAG_TEST_VLLM_PYTHON to the vLLM venv's python: "
                     "export RAG_TEST_VLLM_PYTHON=$(tests/setup_vllm.sh)")
    if not args.kb.is_dir():
        parser.error(f"--kb {args.kb}: no such folder (the Milvus FAQ from milvus-docs 2.4)")
    models = tuple(args.models) if args.models else checkpoints(args.cache_dir, args.size)
    questions = [json.loads(line)["query"] for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line]
    common = {"RAG_DEFAULT_KB": str(args.kb), "OMP_NUM_THREADS": str(os.cpu_count() or 1)}
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; models {models[0]}, {models[1]}; {len(questions)} questions",
          flush=True)
    rows, firsts = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        tmp = Path(tmp)
        if "in-process" in args.backends:
            r, firsts["in-process"] = run_app(tmp / "local", models, args.kb, common, questions, args.clients,
                                              args.seconds, "in-process")
            rows += r
        if "vllm" in args.backends:
            cores = args.vllm_cores or (None, None)
            servers = [VLLMServer(python, model, kind, tmp, cores=core)
                       for model, kind, core in zip(models, ("embed", "rerank"), cores)]
            started = time.perf_counter()
            start_all(servers, timeout=1800)
            print(f"[vllm] both servers ready in {time.perf_counter() - started:.0f} s "
                  f"({', '.join(f'{s.kind} {s.ready_after:.0f} s' for s in servers)})", flush=True)
            env = dict(common, RAG_EMBEDDING_URL=servers[0].base_url, RAG_RERANKER_URL=servers[1].base_url)
            try:
                r, firsts["vllm"] = run_app(tmp / "vllm", models, args.kb, env, questions, args.clients,
                                            args.seconds, "vllm")
                rows += r
            finally:
                stop_all(servers)
    print("\n| backend | clients | questions | questions/min | p50 s | p95 s | errors |\n|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['backend']} | {row['clients']} | {row['questions']} | {row['per_min']:.1f} | "
              f"{row['p50']:.2f} | {row['p95']:.2f} | {row['errors']} |")
    if len(firsts) == 2:
        a, b = ([(c["source"], c["chunk_index"]) for c in f["candidates"]] for f in firsts.values())
        gap = max(abs(x["rerank_score"] - y["rerank_score"])
                  for x, y in zip(firsts["in-process"]["candidates"], firsts["vllm"]["candidates"]))
        print(f"\nfirst question, same ranking on both backends: {a == b}; max |rerank score difference| {gap:.2e}")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
