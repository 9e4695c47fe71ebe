"""A Milvus Lite database left by a process killed at a precise point of a write reopens whole and without
duplicates (rag/store/lite_wal.py), and one damaged before that mend is mended when its chunks are listed
(Store._stored_once). The writer is a real process running the real Store, stopped by `os._exit` from inside
Milvus Lite at that point, as a SIGKILL there would."""
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from rag.store import Store

ROOT = Path(__file__).resolve().parents[2]
DIM = 8

# Writes 4 chunks of a.md and flushes them; then writes 4 of b.md and dies at the point named by argv[2].
WRITER = """
import os, sys
import numpy as np
from milvus_lite.storage import wal
from rag.store import Store
from rag.types import Chunk

def chunks(source):
    return [Chunk(text=f"chunk {i} of {source}", source=source, chunk_index=i) for i in range(4)]

store = Store(sys.argv[1], "c", 8)
store.upsert(chunks("a.md"), np.eye(8, dtype=np.float32)[:4])
if sys.argv[2] == "after-commit":  # the flush committed its manifest but had not deleted its log yet
    wal.WAL.close_and_delete = lambda self: os._exit(9)
    store.upsert(chunks("b.md"), np.eye(8, dtype=np.float32)[4:])
else:  # "before-flush": the rows are only in the log
    store.client.upsert("c", [store._row(c, v) for c, v in zip(chunks("b.md"), np.eye(8, dtype=np.float32)[4:])])
    os._exit(9)
"""


def _killed_writer(db: str, point: str) -> None:
    result = subprocess.run([sys.executable, "-c", WRITER, db, point], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 9, result.stderr[-2000:]


def _ids_seen_by_milvus_lite_alone(db: str) -> Counter:
    from pymilvus import MilvusClient

    client = MilvusClient(db)
    client.load_collection("c")
    ids = Counter(r["id"] for r in client.query("c", filter="id >= 0", output_fields=["id"]))
    client.close()
    return ids


def _assert_whole(db: str) -> None:
    store = Store(db, "c", DIM)
    try:
        assert {d.source: d.chunks for d in store.documents()} == {"a.md": 4, "b.md": 4}
        assert store.count() == 8
        hits = store.search([0, 0, 0, 0, 0, 1, 0, 0], top_k=3)
        assert [h.chunk.text for h in hits[:1]] == ["chunk 1 of b.md"]
        assert len({h.chunk.id for h in hits}) == 3  # no chunk found twice
    finally:
        store.close()


def test_a_kill_right_after_a_flush_commits_reopens_without_duplicates(tmp_path, caplog):
    db = str(tmp_path / "milvus.db")
    _killed_writer(db, "after-commit")

    alone = tmp_path / "alone.db"  # the same files opened by Milvus Lite without the mend
    shutil.copytree(db, alone)
    ids = _ids_seen_by_milvus_lite_alone(str(alone))
    assert len(ids) == 8 and sum(ids.values()) == 12, (
        f"Milvus Lite no longer replays a committed log ({sorted(ids.values())}): rag/store/lite_wal.py may go")

    with caplog.at_level("WARNING", logger="rag.store.lite_wal"):
        _assert_whole(db)
    assert "stopped right after a flush" in caplog.text
    _assert_whole(db)  # and it stays whole: the replayed rows were never written out


def test_a_kill_before_a_flush_keeps_the_unflushed_rows(tmp_path, caplog):
    db = str(tmp_path / "milvus.db")
    _killed_writer(db, "before-flush")
    with caplog.at_level("WARNING", logger="rag.store.lite_wal"):
        _assert_whole(db)  # the log of the active number is replayed, not dropped
    assert "stopped right after a flush" not in caplog.text


def test_another_process_holding_the_database_keeps_its_logs(tmp_path):
    """The mend never touches a database another process has open (its logs may be mid-flush)."""
    from rag.errors import StoreError
    from rag.store.connection import make_client

    db = str(tmp_path / "milvus.db")
    _killed_writer(db, "after-commit")
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from pymilvus import MilvusClient; "
                               "c = MilvusClient(sys.argv[1]); print('open', flush=True); sys.stdin.read()", db],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        logs = sorted((Path(db) / "collections" / "c" / "wal").iterdir())
        with pytest.raises(StoreError, match="in use by another process"):
            make_client(db)
        assert sorted((Path(db) / "collections" / "c" / "wal").iterdir()) == logs
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def test_chunks_stored_twice_before_the_mend_are_written_once_when_listed(tmp_path, caplog, monkeypatch):
    """A database damaged by an app without the mend: Milvus Lite replayed the log, the app wrote c.md, and
    the flush wrote the replay out with it (a replay flushed alone lands in the same file name and hides)."""
    import numpy as np

    from rag.types import Chunk

    db = str(tmp_path / "milvus.db")
    _killed_writer(db, "after-commit")
    with monkeypatch.context() as before:
        before.setattr("rag.store.connection.drop_flushed_logs", lambda database: 0)
        store = Store(db, "c", DIM)
        store.upsert([Chunk(text="chunk 0 of c.md", source="c.md", chunk_index=0)], np.ones((1, DIM), np.float32))
        store.close()
    damaged = tmp_path / "damaged.db"
    shutil.copytree(db, damaged)
    ids = _ids_seen_by_milvus_lite_alone(str(damaged))
    assert len(ids) == 9 and sum(ids.values()) == 13

    store = Store(db, "c", DIM)
    try:
        with caplog.at_level("WARNING", logger="rag.store.milvus"):
            documents = {d.source: d for d in store.documents()}
        assert {name: d.chunks for name, d in documents.items()} == {"a.md": 4, "b.md": 4, "c.md": 1}
        assert "holds 4 chunks twice" in caplog.text
        assert store.count() == 9
        assert [c.chunk_index for c in store.chunks(documents["b.md"].doc_id)] == [0, 1, 2, 3]
    finally:
        store.close()
    ids = _ids_seen_by_milvus_lite_alone(db)
    assert len(ids) == 9 and sum(ids.values()) == 9  # mended on disk
