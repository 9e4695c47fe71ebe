"""The app as a real subprocess (`python app.py ...`) on a free 127.0.0.1 port, with the tiny models and Milvus
Lite in a temporary data directory (and, when given, the local OpenAI-protocol server as the LLM).

`AppProcess` starts, kills (SIGKILL) and restarts it on the same data directory; every wait is bounded.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.browser_helpers import free_port
from tests.ingest_files import CORPUS

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 150.0  # seconds for the app to load the models (two 151k-token tokenizers) and answer HTTP (2 shared cores)
LLM_TIMEOUT = 4.0  # RAG_LLM_TIMEOUT of the test app: the "slow LLM" test waits for this


class AppProcess:
    """One `python app.py` process at a time over `workdir/data`; `.url`, `.client()`, `.log_text()`."""

    def __init__(self, workdir: Path, llm_url: str | None, embedder: Path, reranker: Path, *, shared: bool,
                 extra_args: tuple[str, ...] = (), extra_env: dict | None = None):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.temp_dir = workdir / "gradio-tmp"  # Gradio's upload cache (GRADIO_TEMP_DIR)
        self.kb_dir = workdir / "kb"
        self.kb_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(CORPUS, self.kb_dir / "corpus.md")
        self.llm_url, self.shared = llm_url, shared
        self.extra_args, self.extra_env = extra_args, extra_env or {}
        self.embedder, self.reranker = embedder, reranker
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.starts = 0
        self._clients: list = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "OPENAI_"))}
        env.update({
            "RAG_DATA_DIR": str(self.data_dir), "RAG_EMBEDDING_MODEL": str(self.embedder),
            "RAG_RERANKER_MODEL": str(self.reranker), "RAG_DEVICE": "cpu", "RAG_DTYPE": "fp32",
            "RAG_DEFAULT_KB": str(self.kb_dir), "RAG_LLM_TIMEOUT": str(LLM_TIMEOUT),
            "GRADIO_TEMP_DIR": str(self.temp_dir), "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "NO_PROXY": "127.0.0.1,localhost",
            "RAG_WARM_START": "false",  # on only where a test checks it: it competes for the 2 shared cores
        })
        env.update(self.extra_env)
        return env

    def command(self) -> list[str]:
        cmd = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--llm-base-url", self.llm_url] if self.llm_url else []  # None: no LLM, retrieval-only answers
        return cmd + (["--shared-uploads"] if self.shared else []) + list(self.extra_args)

    def start(self, timeout: float = START_TIMEOUT) -> "AppProcess":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.port = free_port()
        self.starts += 1
        log = open(self.workdir / f"app-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=self.env(), stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"app exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                if httpx.get(self.url + "gradio_api/info", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.kill()
        raise AssertionError(f"app did not answer within {timeout:.0f} s:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        path = self.workdir / f"app-{self.starts}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def client(self):
        from gradio_client import Client

        client = Client(self.url, verbose=False, download_files=False)
        self._clients.append(client)
        return client

    def kill(self) -> None:
        """SIGKILL: no atexit, no flush, no lock release by the process itself."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        for client in self._clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - best effort
                pass
        self._clients.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
