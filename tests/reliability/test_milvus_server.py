"""Two app processes (replicas) and the CLI on one Milvus server — the session's `milvus-lite server`, a real
gRPC endpoint — with the same tiny models: one shared knowledge base for both; a session's private upload
stays with its session id on either replica and with nobody else; a replica starting up keeps the other's
live sessions' uploads, and a crashed replica's go once their leases expire; the server restarting under the
app gives a clear message, then the next question works without restarting the app.

Sessions are Gradio session ids (random, made by the page); the proxy in front of the replicas keeps a browser
on one replica (sticky sessions, docs/deploy.md), so "the same session id on the other replica" is what a
failover looks like."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace

import pytest
from gradio_client.exceptions import AppError

from tests.app_process import ROOT
from tests.reliability.helpers import dependencies, page_upload, report_rows, visible_documents

pytestmark = pytest.mark.timeout(420)

COLLECTION = "replicas"
TTL = 6  # RAG_SESSION_TTL of both replicas: leases renewed every 2 s, a dead replica's sessions go after ~6-8 s
SECRET = "Zebracorn-7731 is the private launch code of Alice"
MARKER = "Quokkalith"  # only in Alice's private document
START_TIMEOUT = 240.0  # two app processes besides the suite's others, on two shared cores


def run_cli(uri: str, embedder, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "OPENAI_"))}
    env.update({"RAG_EMBEDDING_MODEL": str(embedder), "RAG_RERANKER_MODEL": "none", "RAG_DEVICE": "cpu",
                "RAG_DTYPE": "fp32", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    result = subprocess.run([sys.executable, "-m", "rag", *args, "--db", uri, "--collection", COLLECTION], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=180)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def retrieved_sources(app, query: str) -> set[str]:
    result = app.client().predict(query, 100, 1, False, api_name="/retrieve")
    return {c["source"] for c in result["candidates"]}


@pytest.fixture(scope="module")
def replicas(make_app, milvus_server):
    """Replica A starts and Alice uploads a private document through it; then replica B starts (its start-up
    sweep of orphans is what used to delete every private upload on the server, live or not)."""
    options = dict(shared=False, extra_args=("--db", milvus_server.uri),
                   extra_env={"RAG_COLLECTION": COLLECTION, "RAG_SESSION_TTL": str(TTL)})
    a = make_app("replica-a", start=False, **options).start(timeout=START_TIMEOUT)
    deps = dependencies(a)
    alice = uuid.uuid4().hex[:11]
    name = "alice-secret.md"
    rows = report_rows(page_upload(a, deps, name, f"# Private\n\n{SECRET}, sealed {MARKER}.".encode(), alice))
    assert rows[name][1] == "✓ added", rows
    b = make_app("replica-b", start=False, **options).start(timeout=START_TIMEOUT)
    assert dependencies(b).keys() == deps.keys()  # the same page: one dependency table for both
    return SimpleNamespace(a=a, b=b, deps=deps, alice=alice)


def test_a_replica_starting_keeps_the_others_live_private_uploads_and_they_stay_private(replicas):
    a, b, deps, alice = replicas.a, replicas.b, replicas.deps, replicas.alice
    assert "orphaned" not in b.log_text()  # B's start-up sweep removed nothing: Alice's lease is live
    private = {"corpus.md": "everyone", "alice-secret.md": "this session"}
    assert visible_documents(a, deps, alice) == private
    assert visible_documents(b, deps, alice) == private  # the same session id, through the other replica
    bob = uuid.uuid4().hex[:11]
    for app in (a, b):
        assert visible_documents(app, deps, bob) == {"corpus.md": "everyone"}
        for api_name in ("/retrieve", "/ask"):  # no session: the shared base only
            result = app.client().predict(f"private launch code of Alice {SECRET}", 100, 100, False,
                                          api_name=api_name)
            assert MARKER not in json.dumps(result)


def test_the_cli_writes_the_shared_base_both_replicas_search(replicas, milvus_server, tiny_embedder_path, tmp_path):
    a, b = replicas.a, replicas.b
    doc = tmp_path / "walrus-facts.md"
    doc.write_text("# Walruses\n\nWalruses haul out on sea ice floes and use their tusks to climb.")
    ingested = run_cli(milvus_server.uri, tiny_embedder_path, "ingest", str(doc))
    assert ingested.returncode == 0 and "1 added" in ingested.stdout, ingested.stdout + ingested.stderr
    assert "walrus-facts.md" in retrieved_sources(a, "walruses sea ice tusks")
    assert "walrus-facts.md" in retrieved_sources(b, "walruses sea ice tusks")
    listed = run_cli(milvus_server.uri, tiny_embedder_path, "list", "--long")
    rows = {tuple(line.split("\t")[1:4:2]) for line in listed.stdout.strip().splitlines()}  # (owner, source)
    assert rows == {("-", "corpus.md"), ("-", "walrus-facts.md"), (replicas.alice, "alice-secret.md")}
    deleted = run_cli(milvus_server.uri, tiny_embedder_path, "delete", "walrus-facts.md")
    assert deleted.returncode == 0 and "deleted walrus-facts.md" in deleted.stdout
    assert "walrus-facts.md" not in retrieved_sources(b, "walruses sea ice tusks")
    assert "walrus-facts.md" not in retrieved_sources(a, "walruses sea ice tusks")


def test_a_milvus_server_restart_gives_a_clear_message_then_the_app_works_again(replicas, milvus_server):
    b, deps = replicas.b, replicas.deps
    client = b.client()
    before = client.predict("How do sea otters sleep?", api_name="/ask")
    milvus_server.kill()
    try:
        with pytest.raises(AppError) as down:
            client.predict("How do sea otters sleep?", api_name="/ask")
        message = str(down.value)
        assert f"The Milvus server at {milvus_server.uri} isn't reachable right now" in message, message
        assert "no restart needed" in message and "Traceback" not in message
        listing = json.dumps(page_listing(b, deps, replicas.alice))
        assert "Could not list the documents" in listing and "isn't reachable" in listing
    finally:
        milvus_server.start()
    after = client.predict("How do sea otters sleep?", api_name="/ask")  # the same process, reconnected
    assert after["error"] is None and scored(after) == scored(before)  # the same candidates, scores and order
    assert visible_documents(b, deps, replicas.alice)["alice-secret.md"] == "this session"
    dave = uuid.uuid4().hex[:11]
    assert report_rows(page_upload(b, deps, "dave.md", b"# Dave\n\nNotes on narwhal tusks.", dave))["dave.md"][1] \
        == "✓ added"  # writes too
    assert "collection replicas" in b.log_text() and "is released" in b.log_text()  # it was loaded again


def scored(answer: dict) -> list[dict]:
    """An /ask result's candidates without `rerank_cached`: asked again, the same scores come from the cache."""
    return [{k: v for k, v in c.items() if k != "rerank_cached"} for c in answer["retrieval"]["candidates"]]


def page_listing(app, deps, session: str) -> list:
    from tests.reliability.helpers import completed_output, queue_messages

    return completed_output(queue_messages(app.url, deps["refresh"]["id"], [], session))["data"]


def test_a_crashed_replicas_sessions_go_when_their_leases_expire_and_live_ones_stay(replicas, milvus_server):
    """Last: it kills replica A. Alice's lease (held by A) expires; B's sweep removes her upload. Carol's
    upload on B outlives the TTL: B renews her lease."""
    from rag.store import make_client
    from rag.store.leases import SUFFIX
    from rag.store.milvus import query_rows, quote

    a, b, deps = replicas.a, replicas.b, replicas.deps
    carol = uuid.uuid4().hex[:11]
    assert report_rows(page_upload(b, deps, "carol.md", b"# Carol\n\nNotes on seal pups.", carol))["carol.md"][1] \
        == "✓ added"
    a.kill()
    killed = time.monotonic()
    client = make_client(milvus_server.uri)
    # A's last renewal of Alice's lease: A renews every TTL / 3 s after its previous sweep ended, so on busy
    # cores it may lie more than TTL / 3 before the kill
    leases = query_rows(client, COLLECTION + SUFFIX, f"owner == {quote(replicas.alice)}", ["seen"])
    client.close()
    assert len(leases) == 1, f"Alice's lease expired before the test read it: {leases}"
    lease = leases[0]
    deadline = killed + 3 * TTL + 20  # expiry, the next sweep, slack for two shared cores
    while "alice-secret.md" in visible_documents(b, deps, replicas.alice) and time.monotonic() < deadline:
        time.sleep(1)
    gone_after, gone_at = time.monotonic() - killed, time.time()
    assert visible_documents(b, deps, replicas.alice) == {"corpus.md": "everyone"}
    assert re.search(r"removed \d+ orphaned chunks of 1 session\(s\) whose lease expired", b.log_text())
    assert gone_at >= lease["seen"] + TTL, (gone_at, lease)  # not before her lease expired
    assert visible_documents(b, deps, carol)["carol.md"] == "this session"  # > TTL old, renewed by B
    print(f"replicas: a killed replica's private upload removed {gone_after:.1f} s later (RAG_SESSION_TTL={TTL}); "
          "the live replica's session kept its upload")
