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
