"""Wait until freshly written rows are indexed, so the next search takes the fast path.

Milvus Lite 3 runs inside this process and builds a flushed segment's vector index on a background thread.
Until that is done, searches scan the segment brute force while the build competes for the CPU: at 20k x
1024-d rows, ~150 ms per search for the first 20-30 s after an upload, ~20 ms after (docs/benchmarks.md).
A Milvus server or Zilliz Cloud builds indexes itself and reports the rows still pending in describe_index.
Waiting is best effort: on timeout the data is still correct and searchable, only slower.
"""
from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5


def wait_until_indexed(client, uri: str, collection: str, timeout: float = 600.0) -> bool:
    """Block until `collection`'s written rows are indexed; False if that could not be confirmed in time."""
    engine = _in_process_lite(uri, collection)
    if engine is not None:
        return _drain_lite(engine, timeout)
    return _poll_server(client, collection, timeout)


def _in_process_lite(uri: str, collection: str):
    """The Milvus Lite collection object behind a local `.db` path, if this process serves it."""
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:  # no milvus-lite installed: a server URI
        return None
    entry = getattr(server_manager_instance, "_servers", {}).get(os.path.abspath(uri))
    if entry is None:
        return None
    try:
        return entry[1].get_collection(collection)
    except Exception:  # noqa: BLE001 - a Lite version with another layout: fall back to describe_index
        log.debug("no in-process Milvus Lite collection for %s", collection, exc_info=True)
        return None


def _drain_lite(engine, timeout: float) -> bool:
    """Milvus Lite queues compaction and index builds on one worker thread; a no-op queued behind them
    returns once they are done."""
    drain = getattr(engine, "_wait_for_bg", None)
    if drain is None:
        log.warning("this milvus-lite has no background queue to wait on; searches right after an upload "
                    "may be slow until its index build finishes")
        return False
    try:
        drain(timeout)
        return True
    except TimeoutError:
        log.warning("Milvus Lite index build still running after %.0f s; searching brute force until then", timeout)
        return False


def _poll_server(client, collection: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        pending = _pending_rows(client, collection)
        if not pending:
            return True
        if time.monotonic() >= deadline:
            log.warning("%d rows of %s still waiting for their index after %.0f s", pending, collection, timeout)
            return False
        time.sleep(POLL_SECONDS)


def _pending_rows(client, collection: str) -> int:
    pending = 0
    for name in client.list_indexes(collection):
        info = client.describe_index(collection, name) or {}
        pending += int(info.get("pending_index_rows", 0) or 0)
    return pending
