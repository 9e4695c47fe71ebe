"""Session leases on a Milvus server: which sessions' private uploads are still wanted, shared by every app
process (replica) that uses the collection.

A process holds a lease for each of its sessions with private uploads and renews it while the session lives;
the uploads of a session whose lease expired (its process stopped or crashed without saying so) are orphans
any process may remove. Leases live in a small collection next to the chunks, `<collection>_sessions`:
owner (the session id), seen (unix seconds of the last renewal), and a 2-d placeholder vector (Milvus wants one
vector field in every collection). Clocks of the replicas are compared, so keep them in sync (NTP); a lease
lasts minutes, so seconds of drift don't matter.
"""
from __future__ import annotations

import logging
import time
from typing import Iterable

from rag.store.milvus import query_rows, quote

log = logging.getLogger(__name__)

SUFFIX = "_sessions"
PLACEHOLDER = [0.0, 1.0]


class SessionLeases:
    def __init__(self, client, collection: str):
        self.client, self.collection = client, collection + SUFFIX
        if not client.has_collection(self.collection):
            self._create()
        client.load_collection(self.collection)

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("owner", DataType.VARCHAR, max_length=256, is_primary=True)
        schema.add_field("seen", DataType.INT64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=len(PLACEHOLDER))
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="AUTOINDEX", metric_type="L2")
        self.client.create_collection(self.collection, schema=schema, index_params=index,
                                      consistency_level="Strong")
        log.info("created collection %s (session leases)", self.collection)

    def renew(self, owners: Iterable[str], now: float | None = None) -> None:
        """Mark `owners` alive as of `now` (default: the clock)."""
        seen = int(time.time() if now is None else now)
        rows = [{"owner": o, "seen": seen, "vector": PLACEHOLDER} for o in dict.fromkeys(owners)]
        for start in range(0, len(rows), 1000):
            self.client.upsert(self.collection, rows[start:start + 1000])

    def release(self, owners: Iterable[str]) -> None:
        """The sessions ended: their leases go (their uploads are removed by whoever ends them)."""
        owners = list(dict.fromkeys(owners))
        for start in range(0, len(owners), 1000):
            part = ", ".join(quote(o) for o in owners[start:start + 1000])
            self.client.delete(self.collection, filter=f"owner in [{part}]")

    def live(self, ttl: float, now: float | None = None) -> set[str]:
        """Owners renewed within the last `ttl` seconds."""
        since = int((time.time() if now is None else now) - ttl)
        return {r["owner"] for r in query_rows(self.client, self.collection, f"seen >= {since}", ["owner"])}

    def expire(self, ttl: float, now: float | None = None) -> None:
        """Drop leases older than `ttl` (their sessions' uploads are gone or about to be)."""
        since = int((time.time() if now is None else now) - ttl)
        self.client.delete(self.collection, filter=f"seen < {since}")
