"""Orphaned private uploads (rag/ui/sessions.py): with Milvus Lite every one goes at start-up; on a Milvus
server, which several app processes may share, only those of sessions whose lease expired."""
from __future__ import annotations

import time

import pytest

from rag import RAG
from rag.store.leases import SUFFIX, SessionLeases
from rag.ui.sessions import SessionKeeper, remove_orphans


@pytest.fixture
def server_rag(milvus_server, tiny_settings, tiny_embedder):
    rag = RAG(tiny_settings.replace(milvus_uri=milvus_server.uri, collection="t_sessions", reranker_model=None,
                                    session_ttl=30), embedder=tiny_embedder)
    yield rag
    for name in ("t_sessions", "t_sessions" + SUFFIX):
        rag.store.client.drop_collection(name)
    rag.close()


def owners(rag: RAG) -> set[str]:
    return {d.owner for d in rag.store.documents()}


def upload(rag: RAG, *owners: str) -> None:
    for owner in owners:
        rag.add_texts([f"Notes of {owner} about walruses."], source=f"{owner}.md", owner=owner)


def test_on_a_server_only_sessions_whose_lease_expired_lose_their_uploads(server_rag):
    rag = server_rag
    leases = SessionLeases(rag.store.client, "t_sessions")
    upload(rag, "", "live", "stale", "unleased")
    leases.renew(["live"])
    leases.renew(["stale"], now=time.time() - 100)
    assert remove_orphans(rag, leases, ttl=30) > 0
    assert owners(rag) == {"", "live"}  # the shared base and the session another process still renews
    assert leases.live(ttl=10_000) == {"live"}  # the expired lease went with its uploads


def test_the_keeper_holds_its_sessions_and_lets_go_when_they_end(server_rag):
    rag = server_rag
    keeper = SessionKeeper.for_store(rag, rag.settings)
    other = SessionKeeper.for_store(rag, rag.settings)  # another replica on the same server
    keeper.hold("alice")  # before the upload writes
    upload(rag, "alice")
    other.sweep()  # e.g. the other replica starting up: alice is live
    assert "alice" in owners(rag)
    keeper.sweep()  # renews alice's lease
    assert keeper.leases.live(ttl=5) == {"alice"}
    keeper.release("alice")
    rag.store.delete_owner("alice")
    assert keeper.leases.live(ttl=10_000) == set()


def test_with_milvus_lite_every_private_upload_goes_at_start_up(tiny_settings, tiny_embedder):
    rag = RAG(tiny_settings.replace(reranker_model=None), embedder=tiny_embedder)
    try:
        upload(rag, "", "alice", "bob")
        keeper = SessionKeeper.for_store(rag, rag.settings)
        assert keeper.leases is None  # one process holds a Lite database: no other replica to spare
        keeper.hold("carol")
        assert keeper.sweep() > 0 and owners(rag) == {""}
    finally:
        rag.close()


def test_an_upload_through_the_page_takes_the_lease_and_the_session_end_lets_it_go(server_rag, tmp_path):
    from rag.ui.handlers import KnowledgeHandlers
    from tests.ui.test_handlers import request, upload_file

    rag = server_rag
    keeper = SessionKeeper.for_store(rag, rag.settings)
    kb = KnowledgeHandlers(rag, rag.settings, keeper=keeper)
    kb.upload([upload_file(tmp_path, "mine.md", "# Mine\n\nPrivate notes about otters.")], request("alice"))
    assert keeper.leases.live(ttl=30) == {"alice"} and "alice" in owners(rag)
    SessionKeeper.for_store(rag, rag.settings).sweep()  # another replica's sweep: alice is live
    assert "alice" in owners(rag)
    kb.end_session(request("alice"))  # the tab closed
    assert keeper.leases.live(ttl=10_000) == set() and owners(rag) == set()
