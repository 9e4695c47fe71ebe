"""The Python API (`rag.RAG`) on a Milvus server — the session's `milvus-lite server`, a real gRPC endpoint
reached by URI: ingest, list, search, delete and private uploads give what Milvus Lite gives; the server
killed and restarted under a running `RAG` gives a clear error, then works again without a new `RAG`; session
leases (rag/store/leases.py) are what several app processes on one server share."""
from __future__ import annotations

import os
import re
import signal
import time

import pytest

from rag import RAG
from rag.errors import StoreUnavailableError, user_message
from rag.store.leases import SUFFIX, SessionLeases

SECRET = "Zebracorn-7731 is the private launch code of Alice"


@pytest.fixture
def server_rag(milvus_server, tiny_settings, tiny_embedder, tiny_reranker, request):
    """A RAG over a collection of its own on the session's Milvus server; dropped afterwards."""
    collection = "t_" + re.sub(r"\W", "_", request.node.name)[:48]
    rag = RAG(tiny_settings.replace(milvus_uri=milvus_server.uri, collection=collection), embedder=tiny_embedder,
              reranker=tiny_reranker)
    yield rag
    if milvus_server.proc.poll() is not None:
        milvus_server.start()  # a test that killed it and failed before starting it again
    for name in (collection, collection + SUFFIX):
        rag.store.client.drop_collection(name)
    rag.close()


def ranking(retrieval) -> list[tuple[str, int, float, float | None]]:
    return [(c.source, c.chunk_index, round(c.dense_score, 5), c.rerank_score and round(c.rerank_score, 5))
            for c in retrieval.candidates]


def test_ingest_list_search_delete_and_private_uploads_match_milvus_lite(server_rag, corpus_rag, corpus_path):
    rag = server_rag
    report = rag.ingest_paths([corpus_path])
    assert report.files[0].status == "ok" and report.chunks == corpus_rag.store.count()
    rag.add_texts([f"# Private\n\n{SECRET}. Walrus notes."], source="alice.md", owner="alice")
    assert {(d.source, d.owner) for d in rag.store.documents()} == {("corpus.md", ""), ("alice.md", "alice")}
    assert {d.source for d in rag.store.documents("bob")} == {"corpus.md"}
    # the shared base searches as on Milvus Lite: same candidates, same scores, same order
    for question in ("How do sea otters sleep?", "Where is the Baltic Sea?"):
        assert ranking(rag.retrieve(question)) == ranking(corpus_rag.retrieve(question))
    for mode in ("bm25", "hybrid"):
        assert ranking(rag.retrieve("sea otters", mode=mode)) == ranking(corpus_rag.retrieve("sea otters", mode=mode))
    # a private upload: found by its owner, by nobody else
    assert "alice.md" in {c.source for c in rag.retrieve(SECRET, top_k=20, owner="alice").candidates}
    for owner in ("bob", None):
        assert "alice.md" not in {c.source for c in rag.retrieve(SECRET, top_k=50, owner=owner).candidates}
    # delete
    alice = rag.store.find_documents("alice.md", owner="alice")[0]
    assert rag.store.delete_document(alice.doc_id) > 0
    assert [d.source for d in rag.store.documents()] == ["corpus.md"]
    assert "alice.md" not in {c.source for c in rag.retrieve(SECRET, top_k=50, owner="alice").candidates}


@pytest.mark.e2e
def test_a_server_restart_gives_a_clear_error_then_the_next_question_works(server_rag, milvus_server):
    rag = server_rag
    rag.add_texts(["Sea otters hold hands while they sleep.", "The Baltic Sea is brackish."], source="seas.md")
    rag.add_texts([SECRET], source="alice.md", owner="alice")
    before = ranking(rag.retrieve("otters sleep"))
    milvus_server.kill()
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as down:
        rag.retrieve("otters sleep")
    waited = time.monotonic() - started
    message = user_message(down.value)
    assert message.startswith(f"The Milvus server at {milvus_server.uri} isn't reachable right now"), message
    assert "RAG_MILVUS_URI" in message and "no restart needed" in message
    assert waited < 15, waited  # a few seconds of reconnect attempts, not pymilvus' minutes of retries
    with pytest.raises(StoreUnavailableError):
        rag.store.documents()
    milvus_server.start()  # the collection comes back released: the next call loads it
    assert ranking(rag.retrieve("otters sleep")) == before
    assert {(d.source, d.owner) for d in rag.store.documents()} == {("seas.md", ""), ("alice.md", "alice")}
    assert "alice.md" in {c.source for c in rag.retrieve(SECRET, owner="alice").candidates}
    rag.add_texts(["Walruses haul out on ice floes."], source="walrus.md")  # writes work again too
    assert "walrus.md" in {c.source for c in rag.retrieve("walruses ice floes").candidates}


@pytest.mark.e2e
def test_a_hung_server_fails_the_call_at_its_deadline_then_works_when_it_answers_again(
        server_rag, milvus_server, tiny_embedder, tiny_reranker):
    server_rag.add_texts(["Sea otters hold hands while they sleep.", "The Baltic Sea is brackish."],
                         source="seas.md")
    rag = RAG(server_rag.settings.replace(milvus_timeout=2.0), embedder=tiny_embedder, reranker=tiny_reranker)
    before = ranking(rag.retrieve("otters sleep"))
    os.kill(milvus_server.proc.pid, signal.SIGSTOP)  # it still accepts connections, and answers nothing
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as hung:
            rag.retrieve("otters sleep")
        waited = time.monotonic() - started
    finally:
        os.kill(milvus_server.proc.pid, signal.SIGCONT)
    message = user_message(hung.value)
    assert message.startswith(f"The Milvus server at {milvus_server.uri} isn't reachable right now (it did not "
                              "answer in time)"), message
    assert waited < 20, waited  # two 2 s deadlines inside the reconnect window; pymilvus alone waits forever
    assert ranking(rag.retrieve("otters sleep")) == before
    rag.close()


def test_session_leases_renew_expire_and_release(server_rag):
    leases = SessionLeases(server_rag.store.client, server_rag.settings.collection)
    now = time.time()
    leases.renew(["alice", "bob"], now=now - 100)
    leases.renew(["carol"], now=now)
    assert leases.live(ttl=30, now=now) == {"carol"}
    assert leases.live(ttl=300, now=now) == {"alice", "bob", "carol"}
    leases.renew(["alice"], now=now)  # renewing moves the lease on
    assert leases.live(ttl=30, now=now) == {"alice", "carol"}
    leases.expire(ttl=30, now=now)
    assert leases.live(ttl=10_000, now=now) == {"alice", "carol"}
    leases.release(["carol"])
    assert leases.live(ttl=10_000, now=now) == {"alice"}
    # a second process opening the same leases sees the same
    assert SessionLeases(server_rag.store.client, server_rag.settings.collection).live(30, now=now) == {"alice"}
