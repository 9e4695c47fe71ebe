"""A public demo in private-upload mode (the default), probed from outside: nobody writes the shared knowledge
base, nobody starves the others, and private means gone. Everything goes through the app's real interfaces —
Gradio's REST routes, its queue protocol (the page's own calls), a session's heartbeat, gradio_client and MCP —
against a real `python app.py` process."""
from __future__ import annotations

import json
import re
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from gradio_client.exceptions import AppError

from tests.app_process import LLM_TIMEOUT
from tests.reliability.conftest import REPLY
from tests.reliability.helpers import (
    Heartbeat,
    completed_output,
    dependencies,
    file_data,
    offline_chunk_counts,
    page_upload,
    queue_messages,
    report_rows,
    upload_raw,
    visible_documents,
)

pytestmark = pytest.mark.timeout(240)

MAX_UPLOAD_CHUNKS = 1000  # the default RAG_MAX_UPLOAD_CHUNKS: a maximal upload takes ~20 s on 2 cores (tiny models)
PHISH = "Kelpfishing-5150"  # only in documents an outsider tries to plant


def survey(stations: int, marker: str = "reef") -> bytes:
    """Markdown of `stations` sections of ~415 tokens each (tiny models): one chunk per section."""
    return ("# Survey\n\n" + "\n\n".join(
        f"## Station {i}\n\n" + " ".join(f"Kelp plot {i}-{j} holds {i * j % 97} urchins near the {marker} edge."
                                         for j in range(12)) for i in range(stations))).encode()


@pytest.fixture(scope="module")
def app(make_app, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("public-demo-tmp")  # the app's TMPDIR: what it leaves there is checked
    app = make_app("public-demo", shared=False, extra_args=("--mcp",), extra_env={"TMPDIR": str(tmp)})
    app.tmp = tmp
    return app


@pytest.fixture(scope="module")
def deps(app) -> dict:
    return dependencies(app)


def seconds_of(stage: str, wire: str) -> float:
    """The last time the page's timings line shows for `stage` ("generate **4.12 s**" / "**950 ms**")."""
    found = re.findall(re.escape(stage) + r" \*\*([0-9.]+) (ms|s)\*\*", wire)
    assert found, f"no {stage!r} timing in the output"
    value, unit = found[-1]
    return float(value) / (1000 if unit == "ms" else 1)


# --- 1. nobody writes the shared knowledge base ---------------------------------------------------------
def test_no_route_writes_the_shared_knowledge_base_in_private_mode(app, deps):
    name, data = "login-help.md", f"# Login\n\n[Sign in here](http://evil.example) {PHISH}.".encode()
    path = upload_raw(app.url, name, data)
    files = [file_data(path, name)]
    # the direct REST route runs a handler outside the queue: closed for every queued dependency, and the
    # only unqueued one is gr.Examples' own loader (it copies an example question into the textbox)
    assert {n for n, d in deps.items() if d.get("queue") is False} <= {"load_example"}
    for api_name, dep in deps.items():
        if dep.get("queue") is False:
            continue
        response = httpx.post(f"{app.url}gradio_api/run/{api_name}", json={"data": [None] * len(dep["inputs"])},
                              timeout=30)
        assert response.status_code == 404 and "join the queue" in response.text, (api_name, response.text)
    # the queue without a session: Gradio refuses to queue it
    join = httpx.post(app.url + "gradio_api/queue/join",
                      json={"data": [files], "fn_index": deps["upload_1"]["id"]}, timeout=30)
    assert join.status_code >= 400, join.text
    # the named /upload endpoint, through gradio_client and MCP: refused, it says why
    with pytest.raises(AppError, match="--shared-uploads"):
        app.client().predict([], api_name="/upload")
    failed, mcp_text = mcp_call(app.url, "api_upload", {"files": [f"{app.url}gradio_api/file={path}"]})
    # (Gradio 6.31's MCP schema for a file list is broken — "PointerToNowhere" — so the call fails before the
    # handler; were it fixed, the handler refuses as above)
    assert failed and PHISH not in mcp_text, mcp_text
    # the page's own upload and delete handlers, through the queue, as an outsider with a made-up session:
    # the upload is private to that session; the shared documents can't be deleted
    outsider = uuid.uuid4().hex[:11]
    assert report_rows(page_upload(app, deps, name, data, outsider))[name][1] == "✓ added"
    shared_ids = shared_doc_ids(app)
    for doc_id in shared_ids:
        queue_messages(app.url, deps["delete"]["id"], [doc_id], outsider)
    # what everyone else sees: the shared base as it was, no planted document
    bob = uuid.uuid4().hex[:11]
    assert visible_documents(app, deps, bob) == {"corpus.md": "everyone"}
    assert visible_documents(app, deps, outsider) == {"corpus.md": "everyone", name: "this session"}
    for api_name in ("/retrieve", "/ask"):
        result = app.client().predict(f"sign in login help {PHISH}", 100, 100, False, api_name=api_name)
        assert "evil.example" not in json.dumps(result) and "login-help" not in json.dumps(result)
    print(f"shared base: {len(deps)} direct REST routes closed (404), queue without session refused "
          f"({join.status_code}), /upload and MCP api_upload refused, {len(shared_ids)} shared document(s) "
          "survived an outsider's delete")


def shared_doc_ids(app) -> list[str]:
    """The shared documents' ids, read through /retrieve."""
    hits = app.client().predict("otters", 100, 1, False, api_name="/retrieve")["candidates"]
    return sorted({c["doc_id"] for c in hits})


def mcp_call(base_url: str, tool: str, arguments: dict) -> tuple[bool, str]:
    """Call one MCP tool over the app's streamable-HTTP MCP endpoint: (failed, the result's text)."""
    import asyncio

    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def call() -> tuple[bool, str]:
        async with streamablehttp_client(base_url + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = {t.name for t in (await session.list_tools()).tools}
                assert tool in tools, tools
                result = await session.call_tool(tool, arguments)
                return bool(result.isError), " ".join(getattr(c, "text", "") for c in result.content)

    return asyncio.run(call())


# --- 2. no route around the queue's limits ---------------------------------------------------------------
def test_uploads_through_the_queue_run_one_at_a_time(app, deps):
    sessions = [uuid.uuid4().hex[:11] for _ in range(3)]
    with ThreadPoolExecutor(3) as pool:
        runs = list(pool.map(lambda s: page_upload(app, deps, f"queue-{s}.md", survey(30, s), s), sessions))
    spans = []
    for messages in runs:
        started = next(t for t, m in messages if m.get("msg") == "process_starts")
        ended = next(t for t, m in messages if m.get("msg") == "process_completed")
        spans.append((started, ended))
        assert all(row[1] == "✓ added" for row in report_rows(messages).values())
    spans.sort()
    for (_, first_end), (second_start, _) in zip(spans, spans[1:]):
        assert second_start >= first_end - 0.05, spans  # the next starts once the previous is done
    print("queue: 3 concurrent uploads ran one after another: "
          + ", ".join(f"{end - start:.1f} s" for start, end in spans))


# --- 3. nobody starves the others --------------------------------------------------------------------------
def test_an_upload_over_the_limit_fails_at_once_with_a_message(app, deps):
    session = uuid.uuid4().hex[:11]
    big = b"# One line\n\n" + b"kelp " * 6_000_000  # 30 MB on one line (the probe's 20,480-chunk file)
    started = time.monotonic()
    rows = report_rows(page_upload(app, deps, "one-line.md", big, session))
    elapsed = time.monotonic() - started
    status, note = rows["one-line.md"][1], rows["one-line.md"][3]
    assert status == "✗ failed" and f"limit per upload is {MAX_UPLOAD_CHUNKS:,} chunks" in note, note
    many = survey(MAX_UPLOAD_CHUNKS + 50)  # small enough to chunk, too many chunks
    rows = report_rows(page_upload(app, deps, "many.md", many, session))
    assert rows["many.md"][1] == "✗ failed" and f"makes {MAX_UPLOAD_CHUNKS + 50:,} chunks" in rows["many.md"][3], rows
    assert visible_documents(app, deps, session) == {"corpus.md": "everyone"}
    print(f"limits: 30 MB one-line file refused in {elapsed:.1f} s (upload included); "
          f"{MAX_UPLOAD_CHUNKS + 50}-chunk file refused")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_questions_stay_fast_while_a_maximal_upload_ingests(app, deps):
    client = app.client()

    def ask() -> float:
        started = time.monotonic()
        result = client.predict("urchins near the reef edge", 10, 3, True, api_name="/retrieve")
        assert result["candidates"]
        return time.monotonic() - started

    for _ in range(3):
        ask()  # warm
    idle = [ask() for _ in range(8)]
    session = uuid.uuid4().hex[:11]
    rss_before = rss_mb(app.proc.pid)
    with ThreadPoolExecutor(1) as pool:
        upload = pool.submit(page_upload, app, deps, "maximal.md", survey(MAX_UPLOAD_CHUNKS - 5, "lagoon"), session)
        deadline = time.monotonic() + 60
        while "maximal.md: writing" not in app.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        busy, peak = [], rss_before
        while not upload.done():
            busy.append(ask())
            peak = max(peak, rss_mb(app.proc.pid))
            time.sleep(0.1)
        rows = report_rows(upload.result())
    assert rows["maximal.md"][1] == "✓ added" and rows["maximal.md"][2] == MAX_UPLOAD_CHUNKS - 5
    idle_median, busy_median = statistics.median(idle), statistics.median(busy)
    assert len(busy) >= 5, busy  # the upload really ran alongside the questions
    assert busy_median <= 2 * idle_median, (idle, busy)
    print(f"fairness: idle question {idle_median * 1000:.0f} ms (median of {len(idle)}); during a "
          f"{MAX_UPLOAD_CHUNKS - 5}-chunk upload {busy_median * 1000:.0f} ms (median of {len(busy)}, p90 "
          f"{statistics.quantiles(busy, n=10)[-1] * 1000:.0f} ms, max {max(busy) * 1000:.0f} ms) = "
          f"{busy_median / idle_median:.2f}x; app RSS {rss_before:.0f} -> peak "
          f"{peak:.0f} MB")


# --- 4. private means gone ---------------------------------------------------------------------------------
def test_a_session_closed_mid_upload_leaves_nothing_and_raw_files_go(app, deps):
    session = uuid.uuid4().hex[:11]
    name = "walrus-census.md"
    path = upload_raw(app.url, name, survey(MAX_UPLOAD_CHUNKS - 5, "walrus"))
    with ThreadPoolExecutor(1) as pool, Heartbeat(app.url, session) as heartbeat:
        upload = pool.submit(queue_messages, app.url, deps["upload_1"]["id"], [[file_data(path, name)]], session)
        deadline = time.monotonic() + 60
        while f"{name}: writing" not in app.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not upload.done(), "the upload finished before the session could end during it"
        closed_at = time.monotonic()
        heartbeat.close()  # the tab closes while its upload is ingesting
        upload.result(timeout=120)
    deadline = time.monotonic() + 60
    while "upload cancelled: its session ended" not in app.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    cancelled_after = time.monotonic() - closed_at
    assert "upload cancelled: its session ended" in app.log_text()
    assert visible_documents(app, deps, session) == {"corpus.md": "everyone"}  # nothing of it stayed
    hits = app.client().predict("walrus edge kelp plot", 100, 1, False, api_name="/retrieve")["candidates"]
    assert name not in {c["source"] for c in hits}
    # the raw uploaded file is gone, and its URL no longer serves it
    assert not Path(path).exists()
    assert httpx.get(f"{app.url}gradio_api/file={path}", timeout=10).status_code in (403, 404)
    # a completed upload's raw file goes too
    kept = upload_raw(app.url, "short.md", b"# Short\n\nA short note about walruses.")
    queue_messages(app.url, deps["upload_1"]["id"], [[file_data(kept, "short.md")]], session)
    assert not Path(kept).exists()
    assert httpx.get(f"{app.url}gradio_api/file={kept}", timeout=10).status_code in (403, 404)
    print(f"private: session closed mid-upload, upload cancelled and its chunks removed "
          f"{cancelled_after:.1f} s later; raw files deleted after ingestion")


def test_a_follow_up_with_a_hung_llm_takes_at_most_two_timeouts(app, deps, fresh_llm):
    fresh_llm.configure(fail="slow", delay=60.0)
    history = [{"role": role, "content": [{"type": "text", "text": text}]}  # the Chatbot's wire format
               for role, text in (("user", "Why do sea otters hold hands?"),
                                  ("assistant", "So they don't drift apart while they sleep."))]
    dep = deps["chat_ask"]
    config = httpx.get(app.url + "config", timeout=10).json()
    values = {c["id"]: c.get("props", {}).get("value") for c in config["components"]}
    data = [values[i] for i in dep["inputs"]]
    data[0], data[1] = "and where do they sleep?", history
    started = time.monotonic()
    messages = queue_messages(app.url, dep["id"], data, uuid.uuid4().hex[:11])
    elapsed = time.monotonic() - started
    completed_output(messages)  # the turn ended normally, with the message in the chat (streamed as diffs)
    wire = json.dumps([m for _, m in messages])
    assert "did not respond within" in wire, (elapsed, messages[-4:])
    # The bound is on the LLM's share of the turn, as the app's own timings line reports it: condense + generate
    # (3 x llm_timeout before the fix, 12 s + backoff). The wall clock adds retrieval, which on a CPU shared with
    # other work can take seconds by itself, so it only gets a loose bound.
    llm_seconds = sum(seconds_of(stage, wire) for stage in ("condense question", "generate"))
    assert llm_seconds < 2 * LLM_TIMEOUT + 1, (llm_seconds, wire[-600:])  # + the client's one retry backoff (<0.5 s)
    assert elapsed < 2 * LLM_TIMEOUT + 10, elapsed
    fresh_llm.configure(fail=None)
    assert app.client().predict("otters", api_name="/ask")["answer"] == REPLY
    print(f"timeouts: follow-up with a hung LLM answered with a message after {elapsed:.1f} s, "
          f"{llm_seconds:.1f} s of it waiting on the LLM (llm_timeout {LLM_TIMEOUT:g} s)")


def test_orphans_go_at_start_up_and_no_temp_folder_stays(app, deps):
    """Last: it restarts the app. A session that never said goodbye (no heartbeat: a killed tab, a stopped
    process) leaves its upload behind until the next start, which removes it."""
    session = uuid.uuid4().hex[:11]
    assert report_rows(page_upload(app, deps, "orphan.md", b"# Orphan\n\nNotes about narwhals.", session))
    app.stop()
    assert "orphan.md" in offline_chunk_counts(app.data_dir)  # the orphan, as a crash would leave it
    assert not list(app.tmp.glob("rag-eval-*")), list(app.tmp.iterdir())  # the trace folder went at exit
    app.start()
    removed = re.search(r"removed (\d+) orphaned chunks", app.log_text())
    assert removed and int(removed.group(1)) >= 1
    app.stop()
    assert set(offline_chunk_counts(app.data_dir)) == {"corpus.md"}
    print(f"orphans: {removed.group(1)} orphaned chunks (this module's sessions that never ended) removed at "
          "start-up; no rag-eval-* folder left after a stop")
