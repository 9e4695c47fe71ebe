"""Bringing a collection made before BM25 (or with another BM25 analyzer) to the current schema.

The vectors and the text are stored, so nothing is re-embedded: the rows are copied into a new collection of
the current schema (Milvus computes the BM25 field from the text as they arrive), the copy is counted, and
only then is the old collection dropped and the new one renamed into its place. A crash before the drop
leaves the old collection intact (the half-made copy is discarded on the next open); a crash between the drop
and the rename is finished on the next open.
"""
from __future__ import annotations

import json
import logging
from typing import Callable

from rag.errors import StoreError
from rag.store.fields import ANALYZER_PROPERTY, ANALYZERS, FIELDS, SPARSE

log = logging.getLogger(__name__)

SUFFIX = "_bm25_migrating"
BATCH = 1000


def staging_name(collection: str) -> str:
    return collection + SUFFIX


def needs_migration(info: dict, analyzer: str | None) -> str:
    """Why the described collection must be migrated, or "" when it is current. `analyzer` None: the caller
    only lists or deletes, which any schema allows."""
    if analyzer is None:
        return ""
    fields = {f["name"]: f for f in info["fields"]}
    if SPARSE not in fields:
        return "it was created before BM25 search (no sparse field)"
    stored = (info.get("properties") or {}).get(ANALYZER_PROPERTY) or _analyzer_of(fields["text"])
    if stored != analyzer:
        return f"its BM25 analyzer is {stored!r}, not {analyzer!r} (RAG_BM25_ANALYZER)"
    return ""


def _analyzer_of(text_field: dict) -> str:
    """The analyzer name from the text field's parameters, for a collection without our property."""
    params = text_field.get("params", {}).get("analyzer_params")
    params = json.loads(params) if isinstance(params, str) else (params or {"type": "standard"})
    return next((name for name, p in ANALYZERS.items() if p == params), json.dumps(params))


def finish_interrupted(client, collection: str) -> None:
    """A migration stopped after dropping the old collection: its verified copy becomes the collection."""
    staging = staging_name(collection)
    if client.has_collection(staging) and not client.has_collection(collection):
        log.warning("finishing an interrupted migration: %s becomes %s", staging, collection)
        client.rename_collection(staging, collection)


def migrate(client, name: str, create: Callable[[str], None], reason: str) -> int:
    """Copy every row of collection `name` into a collection of the current schema (`create(new_name)` makes
    it) and swap; returns the rows copied."""
    staging = staging_name(name)
    total = _count(client, name)
    log.warning("Collection %r needs migrating: %s. Copying its %d chunks (vectors and text as stored, "
                "nothing re-embedded) into the new schema, then swapping.", name, reason, total)
    if client.has_collection(staging):
        client.drop_collection(staging)  # a copy left by a migration that stopped before the swap
    create(staging)
    copied = _copy(client, name, staging, FIELDS + ["vector"])
    client.flush(staging)
    stored = _count(client, staging)
    if copied != total or stored != total:
        client.drop_collection(staging)
        raise StoreError(f"Migrating collection {name!r} copied {stored} of {total} chunks, so the old collection "
                         "was kept as it is. Try again; if it repeats, re-ingest into a new collection "
                         "(RAG_COLLECTION=...).")
    client.drop_collection(name)
    client.rename_collection(staging, name)
    log.warning("Collection %r migrated: %d chunks now searchable by BM25 too.", name, total)
    return total


def _count(client, collection: str) -> int:
    return int(client.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"])


def _copy(client, source: str, target: str, fields: list[str]) -> int:
    client.load_collection(source)
    iterator = client.query_iterator(source, filter="id >= 0", output_fields=fields, batch_size=BATCH)
    copied = 0
    try:
        while batch := iterator.next():
            client.insert(target, [{f: row[f] for f in fields} for row in batch])
            copied += len(batch)
    finally:
        iterator.close()
    return copied
