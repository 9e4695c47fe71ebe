"""What the scriptable test servers (tests/openai_server.py, tests/model_server.py) share: a real
`ThreadingHTTPServer` on 127.0.0.1 at a free port, served from a daemon thread, with a start/stop lifecycle and
its addresses. Subclasses set `handler` (whose requests reach the subclass as `self.server.owner`)."""
from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: Any

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("%s: error handling a request from %s", type(self.owner).__name__, client_address, exc_info=True)


class LocalHTTPServer:
    handler: type[BaseHTTPRequestHandler]
    fail: str | None = None  # the failure mode scripted by the subclass's `configure`
    fail_times: int | None = None

    def __init__(self) -> None:
        self._stopping = threading.Event()  # set at stop: handlers that wait ("slow" modes) wake up and leave
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _take_failure(self) -> str | None:
        """The failure mode for this request (call under the subclass's lock): `fail`, for the next `fail_times`
        requests only when that is set (None: for all of them)."""
        failure = self.fail
        if failure is not None and self.fail_times is not None:
            if self.fail_times <= 0:
                return None
            self.fail_times -= 1
        return failure

    def start(self):
        self._httpd = _HTTPServer(("127.0.0.1", 0), self.handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The root (TEI's base URL)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base (vLLM's, OpenAI's): ends in /v1."""
        return f"{self.url}/v1"
