"""`milvus-lite server --data-dir D --port P`: a real gRPC Milvus endpoint in a process of its own, reached
with a server URI (`http://127.0.0.1:P`) exactly as a Milvus standalone would be. `kill()` (SIGKILL) and
`start()` again bring it back on the same port with the same data, as a restarted server comes back."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.browser_helpers import free_port

BINARY = Path(sys.executable).parent / "milvus-lite"
START_TIMEOUT = 60.0


class MilvusServer:
    def __init__(self, data_dir: Path, port: int | None = None):
        self.data_dir, self.port = Path(data_dir), port or free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = START_TIMEOUT) -> "MilvusServer":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        log = open(self.data_dir.parent / f"{self.data_dir.name}-{self.starts}.log", "wb")
        self.proc = subprocess.Popen([str(BINARY), "server", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
                                      "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"milvus-lite server exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.2)
        self.kill()
        raise AssertionError(f"milvus-lite server did not accept connections within {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL: the server goes without a word, as a crashed or OOM-killed one does."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
