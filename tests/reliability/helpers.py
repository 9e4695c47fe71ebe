"""Small helpers for the reliability tests: counting stored chunks through the API, raw Gradio calls."""
from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import httpx

TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'File "/', "site-packages", ".py\", line ")


def stored_chunks(client, query: str = "document") -> Counter:
    """Chunks per source in the shared knowledge base, read through /retrieve (top_k=100, no reranker).
    Asserts the listing is exhaustive (fewer than 100 chunks stored)."""
    result = client.predict(query, 100, 1, False, api_name="/retrieve")
    assert len(result["candidates"]) < 100, "more than 100 shared chunks: the count would be partial"
    return Counter(c["source"] for c in result["candidates"])


def no_traceback(text: str) -> None:
    for marker in TRACEBACK_MARKERS:
        assert marker not in text, f"stack trace leaked: {text[:500]}"


def upload_raw(base_url: str, name: str, data: bytes) -> str:
    """POST one file to Gradio's /gradio_api/upload under an arbitrary (hostile) file name; its server path."""
    response = httpx.post(base_url + "gradio_api/upload", files={"files": (name, data)}, timeout=30)
    response.raise_for_status()
    return response.json()[0]


def call_rest(base_url: str, api_name: str, data: list, timeout: float = 60) -> tuple[str, str]:
    """The REST protocol: POST /gradio_api/call/<name>, then read the event stream. (last event, body)."""
    response = httpx.post(f"{base_url}gradio_api/call/{api_name}", json={"data": data}, timeout=30)
    response.raise_for_status()
    event_id = response.json()["event_id"]
    body, last = "", ""
    with httpx.stream("GET", f"{base_url}gradio_api/call/{api_name}/{event_id}", timeout=timeout) as stream:
        lines = stream.iter_lines()
        for line in lines:
            body += line + "\n"
            if line.startswith("event:"):
                last = line.split(":", 1)[1].strip()
                if last in ("complete", "error"):
                    body += next(lines, "")
                    break
    return last, body


def call_fn_index(base_url: str, fn_index: int, data: list, session_hash: str | None = None,
                  timeout: float = 60) -> str:
    """Call any event (public or not) the way the browser does: queue/join, then the SSE stream.
    Returns every message received, as text."""
    session_hash = session_hash or uuid.uuid4().hex[:11]
    join = httpx.post(base_url + "gradio_api/queue/join",
                      json={"data": data, "fn_index": fn_index, "session_hash": session_hash,
                            "event_data": None, "trigger_id": None}, timeout=30)
    if join.status_code != 200:
        return f"HTTP {join.status_code}: {join.text}"
    received = []
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", base_url + "gradio_api/queue/data", params={"session_hash": session_hash},
                      timeout=timeout) as stream:
        for line in stream.iter_lines():
            if time.monotonic() > deadline:
                break
            if not line.startswith("data:"):
                continue
            received.append(line)
            message = json.loads(line[5:])
            if message.get("msg") in ("process_completed", "unexpected_error", "close_stream"):
                break
    return "\n".join(received)


_COUNT_SCRIPT = """
import json, sys
from collections import Counter
from rag.store import Store
store = Store.open_existing(sys.argv[1], "rag_chunks")
counts = Counter()
for d in (store.documents() if store else []):
    counts[d.source] += d.chunks
print(json.dumps(counts))
store and store.close()
"""


def offline_chunk_counts(data_dir, timeout: float = 60) -> dict[str, int]:
    """Chunks per source read straight from the Milvus Lite directory, in a separate process (the app must
    be stopped: Milvus Lite locks the directory). Opening it at all proves it needs no manual repair."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", _COUNT_SCRIPT, str(Path(data_dir) / "milvus.db")], cwd=root,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def file_data(server_path: str, name: str) -> dict:
    """A file input's value as the page sends it, for a file already sent to /gradio_api/upload."""
    return {"path": server_path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def queue_messages(base_url: str, fn_index: int, data: list, session_hash: str,
                   timeout: float = 120) -> list[tuple[float, dict]]:
    """Like `call_fn_index`, but every message with the monotonic time it arrived (for ordering checks)."""
    join = httpx.post(base_url + "gradio_api/queue/join",
                      json={"data": data, "fn_index": fn_index, "session_hash": session_hash,
                            "event_data": None, "trigger_id": None}, timeout=30)
    join.raise_for_status()
    received: list[tuple[float, dict]] = []
    with httpx.stream("GET", base_url + "gradio_api/queue/data", params={"session_hash": session_hash},
                      timeout=timeout) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            received.append((time.monotonic(), message))
            if message.get("msg") in ("process_completed", "unexpected_error", "close_stream"):
                break
    return received


def completed_output(messages: list[tuple[float, dict]]) -> dict:
    """The `output` of the process_completed message (asserts the call succeeded)."""
    done = [m for _, m in messages if m.get("msg") == "process_completed"]
    assert done and done[-1].get("success"), messages[-3:]
    return done[-1]["output"]


def dependencies(app) -> dict:
    """The app's backend dependencies by api_name, from /config."""
    config = httpx.get(app.url + "config", timeout=10).json()
    return {d["api_name"]: d for d in config["dependencies"] if d.get("backend_fn")}


def page_upload(app, deps, name: str, data: bytes, session: str) -> list[tuple[float, dict]]:
    """The Knowledge tab's upload, as the page sends it: the file to /gradio_api/upload, then the queue."""
    path = upload_raw(app.url, name, data)
    return queue_messages(app.url, deps["upload_1"]["id"], [[file_data(path, name)]], session)


def report_rows(messages) -> dict[str, list]:
    report = completed_output(messages)["data"][0]
    return {row[0]: row for row in report["data"]}


def visible_documents(app, deps, session: str) -> dict[str, str]:
    """The Knowledge tab's listing for `session`: document -> "everyone" / "this session"."""
    output = completed_output(queue_messages(app.url, deps["refresh"]["id"], [], session))
    return {row[0]: row[2] for row in output["data"][0]["data"]}


class Heartbeat:
    """A browser session's heartbeat (GET /gradio_api/heartbeat/<hash>) on a socket of its own: while open the
    session lives; closing it is what a closed tab does, and Gradio then runs the app's unload handlers."""

    def __init__(self, base_url: str, session_hash: str):
        from urllib.parse import urlsplit

        url = urlsplit(base_url)
        self.address = (url.hostname, url.port)
        self.request = (f"GET {url.path}gradio_api/heartbeat/{session_hash} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                        "Accept: text/event-stream\r\n\r\n").encode()
        self.sock = None

    def __enter__(self) -> "Heartbeat":
        import socket

        self.sock = socket.create_connection(self.address, timeout=10)
        self.sock.sendall(self.request)
        assert b"200 OK" in self.sock.recv(4096)  # the session is alive
        return self

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()  # the connection drops, as when a tab closes
            self.sock = None

    def __exit__(self, *exc) -> None:
        self.close()
