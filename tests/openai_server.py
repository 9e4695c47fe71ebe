"""A real, scriptable OpenAI-compatible chat-completions server on 127.0.0.1, for tests.

    with OpenAIServer() as server:            # or the `openai_server` pytest fixture
        server.reply = "Paris [1]."           # str, or a callable(request_body) -> str
        server.fail = None                    # or "401" | "403" | "404" | "429" | "500" | "slow" | "cut" | "eof"
        Settings(llm_base_url=server.base_url, ...)
        server.requests                       # JSON bodies received, in order

Streams (`stream: true`) answer as SSE `chat.completion.chunk` events ending in `data: [DONE]`, the reply
split into word-sized pieces. Failure modes:
  401/403/404/429/500  an OpenAI-style JSON error with that status (429 says retry after 10 ms)
  slow   wait `delay` seconds before answering (for client timeouts)
  cut    stream half the reply (chunked encoding), then drop the connection without [DONE]
  eof    stream half the reply, then end the body cleanly without a finish_reason or [DONE]
`fail_times=n` applies the failure to the next n chat requests only (None: to all of them).
"""
from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable

from tests.local_http import LocalHTTPServer

log = logging.getLogger(__name__)

FAILURES = (None, "401", "403", "404", "429", "500", "slow", "cut", "eof")

_ERRORS = {
    "401": (401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-te***."),
    "403": (403, "permission_error", "model_not_allowed", "Your key may not use model `{model}`."),
    "404": (404, "invalid_request_error", "model_not_found",
            "The model `{model}` does not exist or you do not have access to it."),
    "429": (429, "requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    "500": (500, "server_error", None, "The server had an error while processing your request."),
}


def split_pieces(text: str) -> list[str]:
    """Word-sized stream pieces (each word with its trailing space), like a tokenizer would emit."""
    return re.findall(r"\S+\s*|\s+", text) or [""]


def refused_base_url() -> str:
    """A /v1 URL on a local port nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any  # tests.local_http._HTTPServer: `.owner` is the server object

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("openai_server: " + format, *args)

    # --- routes ------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") == "/v1/models":
            models = [{"id": m, "object": "model", "created": 0, "owned_by": "test"}
                      for m in self.server.owner.models]
            self._json(200, {"object": "list", "data": models})
        else:
            self._json(404, {"error": {"message": f"No route {self.path}", "type": "invalid_request_error"}})

    def do_POST(self) -> None:  # noqa: N802
        try:
            self._post()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            log.debug("openai_server: client went away")
            self.close_connection = True

    def _post(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"No route {self.path}", "type": "invalid_request_error"}})
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._json(400, {"error": {"message": "Body is not JSON", "type": "invalid_request_error"}})
            return
        owner = self.server.owner
        failure, reply, finish_reason, chunk_delay, delay = owner._next(body, dict(self.headers))
        model = body.get("model", "")
        if failure in _ERRORS:
            status, kind, code, message = _ERRORS[failure]
            headers = {"retry-after-ms": "10"} if status == 429 else {}
            self._json(status, {"error": {"message": message.format(model=model), "type": kind,
                                          "param": None, "code": code}}, headers)
            return
        if failure == "slow" and owner._stopping.wait(delay):
            self.close_connection = True
            return
        if not body.get("stream"):
            self._json(200, {
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": model, "system_fingerprint": None,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                             "logprobs": None, "finish_reason": finish_reason}],
                "usage": {"prompt_tokens": 10, "completion_tokens": len(split_pieces(reply)), "total_tokens": 10},
            })
            return
        self._stream(model, reply, finish_reason, failure, chunk_delay)

    # --- responses ---------------------------------------------------------------------------------
    def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _stream(self, model: str, reply: str, finish_reason: str, failure: str | None, chunk_delay: float) -> None:
        chunked = failure != "eof"  # "eof" ends a close-delimited body cleanly instead
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())

        def send(data: str) -> None:
            payload = f"data: {data}\n\n".encode()
            if chunked:
                payload = f"{len(payload):X}\r\n".encode() + payload + b"\r\n"
            self.wfile.write(payload)
            self.wfile.flush()

        def chunk(delta: dict, finish: str | None = None) -> str:
            return json.dumps({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                               "model": model, "system_fingerprint": None,
                               "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

        pieces = split_pieces(reply)
        if failure in ("cut", "eof"):
            pieces = pieces[: max(1, len(pieces) // 2)]
        send(chunk({"role": "assistant", "content": ""}))
        for piece in pieces:
            if chunk_delay and self.server.owner._stopping.wait(chunk_delay):
                break
            send(chunk({"content": piece}))
        if failure == "cut":  # drop the connection mid-body: no terminating chunk, no [DONE]
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if failure == "eof":  # a clean end of a close-delimited body, but no finish_reason / [DONE]
            self.close_connection = True
            return
        send(chunk({}, finish_reason))
        send("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class OpenAIServer(LocalHTTPServer):
    """See the module docstring. Thread-safe: settings are read under a lock once per request."""

    handler = _Handler

    def __init__(self, reply: str | Callable[[dict], str] = "This is a test answer [1].", *,
                 fail: str | None = None, fail_times: int | None = None, delay: float = 5.0,
                 chunk_delay: float = 0.0, finish_reason: str = "stop", models: tuple[str, ...] = ("gpt-4o",)):
        super().__init__()
        self._lock = threading.Lock()
        self.reply = reply
        self.fail = fail
        self.fail_times = fail_times
        self.delay = delay  # seconds the "slow" mode waits before answering
        self.chunk_delay = chunk_delay  # seconds between streamed pieces (0 = as fast as possible)
        self.finish_reason = finish_reason
        self.models = list(models)
        self.requests: list[dict] = []  # JSON bodies of the chat requests received, in order
        self.request_headers: list[dict] = []

    # --- scripting ---------------------------------------------------------------------------------
    def configure(self, **changes: Any) -> None:
        """Set several attributes atomically (reply=..., fail=..., fail_times=..., delay=...)."""
        if "fail" in changes and changes["fail"] not in FAILURES:
            raise ValueError(f"fail={changes['fail']!r}: use one of {FAILURES}")
        with self._lock:
            for name, value in changes.items():
                if not hasattr(self, name) or name.startswith("_"):
                    raise AttributeError(name)
                setattr(self, name, value)

    def reset(self) -> None:
        self.configure(reply="This is a test answer [1].", fail=None, fail_times=None, chunk_delay=0.0,
                       finish_reason="stop")
        with self._lock:
            self.requests.clear()
            self.request_headers.clear()

    def _next(self, body: dict, headers: dict) -> tuple[str | None, str, str, float, float]:
        """Record a chat request and decide how to answer it: (failure, reply, finish, chunk_delay, delay)."""
        with self._lock:
            self.requests.append(body)
            self.request_headers.append({k.lower(): v for k, v in headers.items()})
            failure = self._take_failure()
            reply = self.reply
            snapshot = (self.finish_reason, self.chunk_delay, self.delay)
        if failure not in FAILURES:
            raise ValueError(f"fail={failure!r}: use one of {FAILURES}")
        text = reply(body) if callable(reply) else str(reply)
        return (failure, text, *snapshot)
