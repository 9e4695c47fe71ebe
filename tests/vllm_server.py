"""Real vLLM OpenAI-compatible servers (the CPU build, in a virtualenv of its own) over local checkpoints, for the
parity tests and the concurrency benchmark.

    python = vllm_python()                      # RAG_TEST_VLLM_PYTHON, or None when it is not set up
    servers = [VLLMServer(python, embedder_dir, "embed", workdir), VLLMServer(python, reranker_dir, "rerank", workdir)]
    start_all(servers)                          # both start at once; each waits on GET /health
    servers[0].base_url                         # http://127.0.0.1:PORT/v1 (embeddings, rerank, score)
    stop_all(servers)

The commands are the ones docs/deploy.md gives ("Model servers (vLLM)"), with the reranker's --hf-overrides
turning Qwen3-Reranker's causal LM into a yes/no classifier. Served model names are the checkpoint folders, as
the app sends them (`embedding_model` / `reranker_model`).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.browser_helpers import free_port

ENV_PYTHON = "RAG_TEST_VLLM_PYTHON"  # the vLLM virtualenv's python (tests/setup_vllm.sh prints it)
SETUP_HINT = (f"set up vLLM's own virtualenv with `tests/setup_vllm.sh` (once: 5-15 min, 3.4 GB) and run "
              f"`export {ENV_PYTHON}=$(tests/setup_vllm.sh)` before pytest")
START_TIMEOUT = 420.0  # seconds: ~100 s alone on 2 free cores; two servers at once on shared cores take longer
EMBED_OVERRIDES = {"is_matryoshka": True}  # Qwen3-Embedding is trained for it; vLLM then accepts `dimensions`
RERANK_OVERRIDES = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
                    "is_original_qwen3_reranker": True}
KINDS = ("embed", "rerank")
QUICK_START_ARGS = ["--enforce-eager", "--distributed-executor-backend", "uni"]  # with QUICK_START_ENV
QUICK_START_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # the engine in the API server's process


def vllm_python() -> str | None:
    return os.environ.get(ENV_PYTHON) or None


def required_in_ci() -> bool:
    """CI must run the vLLM tests, so a missing vLLM there fails them: `.ci/run` sets RAG_TEST_REQUIRE_VLLM=1,
    and hosted CI services set CI=true."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes")
               for name in ("RAG_TEST_REQUIRE_VLLM", "CI"))


def command(python: str, model: Path, kind: str, port: int, quick_start: bool = False) -> list[str]:
    """The server command for one checkpoint: `embed` (Qwen3-Embedding) or `rerank` (Qwen3-Reranker).
    `quick_start` (tests) runs the same model code and weights in one process (no engine and worker processes,
    each re-importing torch and vLLM: minutes on a busy 2-core CPU) and without torch.compile (minutes of C++
    compilation, redone for every new checkpoint path); serving is slower, the scores are the same."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: use one of {KINDS}")
    overrides = RERANK_OVERRIDES if kind == "rerank" else EMBED_OVERRIDES
    return [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--runner", "pooling",
            "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port),
            "--hf-overrides", json.dumps(overrides)] + (QUICK_START_ARGS if quick_start else [])


def server_env(quick_start: bool = False, cores: str | None = None) -> dict:
    """`cores`: VLLM_CPU_OMP_THREADS_BIND, the CPU cores the model's threads are pinned to (e.g. "0" or "0-7");
    None leaves vLLM's `auto` (every server on a 2-core machine then pins core 0)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "OPENAI_", "VIRTUAL_ENV"))}
    env.update({"VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache: plenty for test-sized requests
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
                "NO_PROXY": "127.0.0.1,localhost"})
    if cores is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cores
    return env | (QUICK_START_ENV if quick_start else {})


class VLLMServer:
    """One `vllm.entrypoints.openai.api_server` process in its own session (its engine workers die with it)."""

    def __init__(self, python: str, model: Path, kind: str, workdir: Path, *, quick_start: bool = False,
                 cores: str | None = None):
        self.python, self.model, self.kind, self.quick_start = python, Path(model), kind, quick_start
        self.cores = cores
        self.log_path = Path(workdir) / f"vllm-{kind}.log"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.started_at = self.ready_after = 0.0

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base: `{base}/embeddings`, `{base}/rerank`, `{base}/score`."""
        return self.root_url + "/v1"

    def command(self) -> list[str]:
        return command(self.python, self.model, self.kind, self.port, self.quick_start)

    def start(self) -> "VLLMServer":
        self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), env=server_env(self.quick_start, self.cores), stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.started_at = time.monotonic()
        return self

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else "(no log)"

    def failure(self, why: str) -> str:
        return (f"vLLM {self.kind} server for {self.model} {why} ({ENV_PYTHON}={self.python}; command: "
                f"{' '.join(self.command())}; log {self.log_path}):\n"
                f"{self.log_tail()}")

    def poll_ready(self) -> bool:
        """True once GET /health answers 200; raises when the process has exited."""
        assert self.proc is not None, "start() first"
        if self.proc.poll() is not None:
            raise RuntimeError(self.failure(f"exited with code {self.proc.returncode} before it was ready"))
        try:
            ready = httpx.get(self.root_url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
        if ready:
            self.ready_after = time.monotonic() - self.started_at
        return ready

    def stop(self) -> None:
        """SIGTERM to the whole session (API server + engine core), SIGKILL after 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # engine workers left behind by a clean exit of the parent
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_all(servers: list[VLLMServer], timeout: float = START_TIMEOUT) -> None:
    """Start every server at once, then wait until all answer /health; on failure stop them all and raise
    RuntimeError with the failing server's command and log tail."""
    for server in servers:
        server.start()
    deadline = time.monotonic() + timeout
    waiting = list(servers)
    try:
        while waiting:
            waiting = [s for s in waiting if not s.poll_ready()]
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(waiting[0].failure(f"did not answer /health within {timeout:.0f} s"))
            time.sleep(1.0)
    except BaseException:
        stop_all(servers)
        raise


def stop_all(servers: list[VLLMServer]) -> None:
    for server in servers:
        server.stop()
