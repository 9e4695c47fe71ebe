"""Waiting for the vector index after writes: the first search after an upload takes the indexed path."""
import threading
import time

import numpy as np

from rag.store import Store, indexing
from rag.store.indexing import wait_until_indexed
from rag.types import Chunk


def _upload(store: Store, n: int, dim: int) -> None:
    v = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    store.upsert([Chunk(text=f"t{i}", source="a.md", chunk_index=i) for i in range(n)],
                 v / np.linalg.norm(v, axis=1, keepdims=True))


def test_every_segment_is_indexed_after_waiting(tmp_path):
    store = Store(str(tmp_path / "m.db"), "c", 32)
    for _ in range(3):  # three flushes: three segments
        _upload(store, 200, 32)
    assert store.wait_until_indexed()
    engine = indexing._in_process_lite(store.uri, "c")
    segments = [s for s in engine._segments_snapshot() if s.num_rows]
    assert segments and all("vector" in s.indexes for s in segments)
    store.close()


def test_wait_covers_work_already_queued_in_the_background(tmp_path):
    store = Store(str(tmp_path / "m.db"), "c", 32)
    _upload(store, 10, 32)
    engine = indexing._in_process_lite(store.uri, "c")
    finished = threading.Event()
    engine._bg_executor.submit(lambda: (time.sleep(0.3), finished.set()))  # stands in for a slow index build
    assert store.wait_until_indexed() and finished.is_set()
    store.close()


class _ServerIndexes:
    """What a Milvus server's describe_index reports while it builds: pending rows going down."""

    def __init__(self, pending):
        self.pending = list(pending)

    def list_indexes(self, collection):
        return ["vector"]

    def describe_index(self, collection, name):
        return {"index_type": "HNSW", "pending_index_rows": self.pending.pop(0) if len(self.pending) > 1
                else self.pending[0]}


def test_server_path_polls_until_nothing_is_pending(monkeypatch):
    monkeypatch.setattr(indexing, "POLL_SECONDS", 0.0)
    server = _ServerIndexes([500, 120, 0])
    assert wait_until_indexed(server, "http://localhost:19530", "c", timeout=5)
    assert server.pending == [0]


def test_server_path_gives_up_at_the_timeout_without_raising(monkeypatch):
    monkeypatch.setattr(indexing, "POLL_SECONDS", 0.01)
    assert not wait_until_indexed(_ServerIndexes([7]), "http://localhost:19530", "c", timeout=0.05)
