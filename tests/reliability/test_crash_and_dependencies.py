"""Crash safety (SIGKILL after and during an upload, restart on the same data directory) and dependency
failures (LLM endpoint down, Milvus server unreachable at start). One app process at a time."""
from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from gradio_client import handle_file

from rag import Settings
from tests.app_process import ROOT
from tests.openai_server import refused_base_url
from tests.reliability.helpers import no_traceback, offline_chunk_counts, stored_chunks

pytestmark = pytest.mark.timeout(240)

BIG_FILES = 10


def doc(topic: str, sections: int) -> str:
    return "\n".join([f"# {topic}\n"] + [
        f"## {topic} section {i}\n\n" + " ".join(f"Sentence {j} of section {i} about {topic} and its many "
                                                  f"details, written for crash testing." for j in range(25))
        for i in range(sections)])


@pytest.fixture(scope="module")
def crash_app(make_app):
    """Shared uploads (the API may upload), and an LLM endpoint that refuses connections."""
    return make_app("crash-app", shared=True, llm_url=refused_base_url())


@pytest.fixture(scope="module")
def expected_chunks(tiny_embedder):
    """What a complete ingestion stores per text, computed in-process with the same chunker and tokenizer."""
    from rag.ingest import Chunker

    chunker = Chunker(tiny_embedder, Settings())
    return lambda text, name: len(chunker.chunks(text, name))


def test_kill_right_after_an_acknowledged_upload_then_restart_keeps_every_chunk(crash_app, tmp_path):
    paths = []
    for topic in ("walruses", "narwhals", "puffins"):
        path = tmp_path / f"acked-{topic}.md"
        path.write_text(doc(topic, 3), encoding="utf-8")
        paths.append(path)
    report = crash_app.client().predict([handle_file(str(p)) for p in paths], api_name="/upload")
    crash_app.kill()  # the moment the upload was reported done
    assert [f["status"] for f in report["files"]] == ["ok"] * 3
    started = time.monotonic()
    crash_app.start()  # same data directory; the collection must load without manual steps
    restart = time.monotonic() - started
    stored = stored_chunks(crash_app.client(), "crash testing details")
    for f in report["files"]:
        assert stored[f["source"]] == f["chunks"] > 0, (f, stored)
    assert "LOCK" not in crash_app.log_text() and "Traceback" not in crash_app.log_text()
    print(f"crash after ack: {report['chunks']} acknowledged chunks all searchable; restart {restart:.1f} s")


def test_llm_endpoint_down_gives_a_clear_message_and_retrieval_keeps_working(crash_app):
    client = crash_app.client()
    started = time.monotonic()
    answer = client.predict("walruses", api_name="/ask")
    assert time.monotonic() - started < 15
    assert answer["error"] and "Could not connect to the LLM endpoint" in answer["error"]
    no_traceback(answer["answer"])
    assert answer["retrieval"]["candidates"]  # the passages are still shown
    assert client.predict("walruses", api_name="/retrieve")["candidates"]


def test_kill_in_the_middle_of_an_upload_then_reupload_completes_it(crash_app, tmp_path, expected_chunks):
    paths = []
    for i in range(BIG_FILES):
        path = tmp_path / f"big-{i:02d}.md"
        path.write_text(doc(f"topic number {i}", 4), encoding="utf-8")
        paths.append(path)
    expected = {p.name: expected_chunks(p.read_text(), p.name) for p in paths}
    job = crash_app.client().submit([handle_file(str(p)) for p in paths], api_name="/upload")
    done = re.compile(r"big-\d\d\.md: ok \(")
    deadline = time.monotonic() + 60
    while len(done.findall(crash_app.log_text())) < 2 and time.monotonic() < deadline:  # partway
        assert not job.done(), "the upload finished before it could be interrupted"
        time.sleep(0.05)
    acked_in_log = len(done.findall(crash_app.log_text()))
    crash_app.kill()
    assert 2 <= acked_in_log < BIG_FILES, acked_in_log

    stored = offline_chunk_counts(crash_app.data_dir)  # the directory opens as it was left
    for name, n in expected.items():  # consistent: never more than a complete document
        assert stored.get(name, 0) <= n, (name, stored.get(name), n)
    complete_before = sum(stored.get(name) == n for name, n in expected.items())
    assert complete_before >= 2

    crash_app.start()
    client = crash_app.client()
    report = client.predict([handle_file(str(p)) for p in paths], api_name="/upload")  # re-upload all
    statuses = {f["source"]: f["status"] for f in report["files"]}
    assert all(s in ("ok", "skipped") for s in statuses.values()), report["files"]
    hits = client.predict("topic number 7 crash testing", 100, 1, False, api_name="/retrieve")["candidates"]
    assert {c["source"] for c in hits} & set(expected)  # searchable through the app
    crash_app.stop()
    stored = offline_chunk_counts(crash_app.data_dir)
    assert {name: stored.get(name, 0) for name in expected} == expected
    print(f"crash mid-upload: killed after {acked_in_log}/{BIG_FILES} files; {complete_before} complete after "
          f"restart; re-upload completed all {sum(expected.values())} chunks")


def test_milvus_server_unreachable_at_start_exits_nonzero_with_a_clear_message(tiny_embedder_path,
                                                                                tiny_reranker_path, tmp_path):
    from tests.browser_helpers import free_port

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {"RAG_EMBEDDING_MODEL": str(tiny_embedder_path), "RAG_RERANKER_MODEL": "none", "RAG_DEVICE": "cpu",
           "RAG_DTYPE": "fp32", "RAG_DATA_DIR": str(tmp_path),
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PATH": "/usr/bin:/bin"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(ROOT / "app.py"), "--db", uri, "--no-default-kb",
                             "--port", str(free_port())], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=90)
    elapsed = time.monotonic() - started
    assert result.returncode != 0 and elapsed < 60  # ~10 s of connection attempts after the models load
    assert f"Could not reach Milvus at {uri!r}" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    print(f"milvus unreachable: exit {result.returncode} after {elapsed:.1f} s")
