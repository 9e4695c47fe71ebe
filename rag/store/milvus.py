"""The vector store: one Milvus collection with an explicit schema, through `pymilvus.MilvusClient`.

The same code serves Milvus Lite (a local path), a Milvus server and Zilliz Cloud (a URI and a token).
Writes are serialised and flushed, so a search right after an upload takes the indexed path.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from rag.errors import StoreError
from rag.store.connection import CALL_TIMEOUT, make_client
from rag.store.locks import ReadWriteLock
from rag.types import SHARED_OWNER, Chunk, DocumentInfo, Hit

log = logging.getLogger(__name__)

from rag.store.fields import (  # noqa: F401 - FIELDS and the properties are part of this module's interface
    ANALYZER_PROPERTY,
    ANALYZERS,
    DIM_PROPERTY,
    FIELDS,
    MODEL_PROPERTY,
    SPARSE,
    TEXT_MAX,
)


class CollectionMismatchError(StoreError):
    """The collection was built with another embedding model or dimension."""


def same_model(a: str, b: str) -> bool:
    """One model by its name, wherever it lives: "Qwen/Qwen3-Embedding-0.6B" and a local copy in
    "/models/Qwen3-Embedding-0.6B" are the same vector space."""
    return Path(a.rstrip("/")).name.lower() == Path(b.rstrip("/")).name.lower()


def quote(value: str) -> str:
    """A string literal for a Milvus filter expression."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def query_rows(client, collection: str, flt: str, fields: list[str]) -> list[dict]:
    """All rows matching `flt`, paged with an iterator so large collections don't hit the query limit."""
    iterator = client.query_iterator(collection, filter=flt, output_fields=fields, batch_size=4096)
    rows: list[dict] = []
    try:
        while batch := iterator.next():
            rows.extend(batch)
    finally:
        iterator.close()
    return rows


class Store:
    def __init__(self, uri: str, collection: str, dim: int, *, token: str | None = None,
                 embedding_model: str = "", client=None, analyzer: str | None = "standard",
                 call_timeout: float = CALL_TIMEOUT):
        """`analyzer` None: open for listing and deleting only, whatever the collection's BM25 state.
        `call_timeout`: seconds one call to a Milvus server may take (rag/store/connection.py)."""
        self.uri, self.collection, self.dim = uri, collection, dim
        self.embedding_model = embedding_model
        self.analyzer = analyzer
        self.client = client or make_client(uri, token, call_timeout=call_timeout)
        self._write_lock = threading.Lock()
        self._swap = ReadWriteLock()  # searches share it; replace_document holds it alone
        self._open_or_create()

    # --- schema ---------------------------------------------------------------------------------
    def _schema(self):
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX, enable_analyzer=True,
                         analyzer_params=ANALYZERS[self.analyzer or "standard"])
        schema.add_field("source", DataType.VARCHAR, max_length=1024)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=64)
        schema.add_field("chunk_index", DataType.INT64)
        schema.add_field("heading", DataType.VARCHAR, max_length=2048)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("owner", DataType.VARCHAR, max_length=256)
        schema.add_field(SPARSE, DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(Function(name="text_bm25", function_type=FunctionType.BM25,
                                     input_field_names=["text"], output_field_names=[SPARSE]))
        return schema

    def _index_params(self):
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="AUTOINDEX", metric_type="IP")
        index.add_index(SPARSE, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        return index

    def _open_or_create(self) -> None:
        from rag.store.migration import finish_interrupted, migrate, needs_migration

        finish_interrupted(self.client, self.collection)
        if self.client.has_collection(self.collection):
            self._check_compatible()
            reason = needs_migration(self.client.describe_collection(self.collection), self.analyzer)
            if reason:
                migrate(self.client, self.collection, self._create, reason)
            self.client.load_collection(self.collection)  # an indexed collection reopens released
            self.has_bm25 = SPARSE in _field_names(self.client.describe_collection(self.collection))
            return
        self._create(self.collection)
        self.has_bm25 = True
        log.info("created collection %s (%d-d, %s, BM25 analyzer %s) at %s", self.collection, self.dim,
                 self.embedding_model or "?", self.analyzer or "standard", self.uri)

    def _create(self, name: str) -> None:
        self.client.create_collection(name, schema=self._schema(), index_params=self._index_params(),
                                      consistency_level="Strong", properties=self._stamp())

    def _stamp(self) -> dict[str, str]:
        """Which vector space (and BM25 analyzer) the collection holds, stored as collection properties."""
        stamp = {DIM_PROPERTY: str(self.dim), ANALYZER_PROPERTY: self.analyzer or "standard"}
        if self.embedding_model:
            stamp[MODEL_PROPERTY] = self.embedding_model
        return stamp

    def _check_compatible(self) -> None:
        """Vectors of another model or size can't be compared with ours: refuse with the fix rather than mix."""
        info = self.client.describe_collection(self.collection)
        stored_dim = next(int(f["params"]["dim"]) for f in info["fields"] if f["name"] == "vector")
        stored_model = (info.get("properties") or {}).get(MODEL_PROPERTY, "")
        where = f"Collection {self.collection!r} at {self.uri}"
        if stored_dim != self.dim:
            raise CollectionMismatchError(
                f"{where} stores {stored_dim}-d vectors, but the embedder produces {self.dim}-d ones. Set the "
                f"embedding dimension back to {stored_dim} (RAG_EMBEDDING_DIM={stored_dim}), or use another "
                f"collection (RAG_COLLECTION=...), or delete this one to re-ingest at {self.dim}-d.")
        if not self.embedding_model:
            return  # opened for listing or deleting only
        if stored_model and not same_model(stored_model, self.embedding_model):
            raise CollectionMismatchError(
                f"{where} holds vectors of the embedding model {stored_model!r}, not {self.embedding_model!r}: "
                "their scores can't be compared. Use that model (RAG_EMBEDDING_MODEL / --embedding-model), or "
                "another collection (RAG_COLLECTION=...), or delete this one to re-ingest with the new model.")
        if not stored_model:  # made before collections were stamped: adopt it
            log.info("stamping collection %s with embedding model %s", self.collection, self.embedding_model)
            self.client.alter_collection_properties(self.collection, properties=self._stamp())

    # --- writes -----------------------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> int:
        """Insert or overwrite chunks by primary key; returns how many rows were written."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        if not chunks:
            return 0
        rows = [self._row(c, v) for c, v in zip(chunks, vectors)]
        with self._write_lock:
            for start in range(0, len(rows), 512):
                self.client.upsert(self.collection, rows[start:start + 512])
            self.client.flush(self.collection)
        return len(rows)

    def _row(self, chunk: Chunk, vector: np.ndarray) -> dict:
        return {"id": chunk.id, "vector": np.asarray(vector, dtype=np.float32).tolist(),
                "text": _clip(chunk.text, TEXT_MAX), "source": _clip(chunk.source, 1024),
                "doc_id": chunk.doc_id, "chunk_index": int(chunk.chunk_index),
                "heading": _clip(chunk.heading, 2048), "content_hash": chunk.content_hash,
                "owner": chunk.owner}

    def delete_ids(self, ids: Iterable[int]) -> int:
        ids = [int(i) for i in ids]
        if not ids:
            return 0
        with self._write_lock:
            for start in range(0, len(ids), 1000):
                self.client.delete(self.collection, ids=ids[start:start + 1000])
            self.client.flush(self.collection)
        return len(ids)

    def delete_document(self, doc_id: str) -> int:
        removed = self.delete_ids(self.chunk_ids(doc_id))
        self.wait_until_indexed()
        return removed

    def delete_owner(self, owner: str) -> int:
        """Remove everything one session uploaded (never the shared knowledge base)."""
        if owner == SHARED_OWNER:
            raise ValueError("refusing to delete the shared knowledge base by owner")
        rows = self._query(f"owner == {quote(owner)}", ["id"])
        removed = self.delete_ids(r["id"] for r in rows)
        self.wait_until_indexed()
        return removed

    def private_owners(self) -> set[str]:
        """The sessions that have uploads stored (every owner but the shared knowledge base)."""
        return {r["owner"] for r in self._query(f"owner != {quote(SHARED_OWNER)}", ["owner"])}

    def delete_private(self) -> int:
        """Remove every session's uploads (all owners but the shared knowledge base)."""
        rows = self._query(f"owner != {quote(SHARED_OWNER)}", ["id"])
        removed = self.delete_ids(r["id"] for r in rows)
        if removed:
            self.wait_until_indexed()
        return removed

    def wait_until_indexed(self, timeout: float = 600.0) -> bool:
        """Block until written rows are indexed (rag/indexing.py): call after an upload, outside any lock
        searches wait on, so the next search is fast. False when that could not be confirmed in time."""
        from rag.store.indexing import wait_until_indexed

        indexed = wait_until_indexed(self.client, self.uri, self.collection, timeout)
        # Milvus Lite's first search over new segments builds per-segment lookups (~200 ms at 20k rows):
        # pay that here, in the upload, rather than in the user's first question.
        self.search(np.zeros(self.dim, dtype=np.float32), top_k=1)
        if self.has_bm25:
            self.bm25_search("warm up", top_k=1)  # the same for the BM25 index
        return indexed

    # --- reads ------------------------------------------------------------------------------------
    def search(self, vector: np.ndarray, top_k: int, owner: str | None = None) -> list[Hit]:
        """Nearest chunks by inner product; with `owner`, the shared base plus that owner's uploads."""
        with self._swap.reading():
            result = self.client.search(self.collection, data=[np.asarray(vector, dtype=np.float32).tolist()],
                                        limit=top_k, output_fields=FIELDS[1:], filter=self._visible(owner),
                                        search_params={"metric_type": "IP"})
        return [Hit(self._chunk(h["id"], h["entity"]), float(h["distance"])) for h in result[0]]

    def bm25_search(self, query: str, top_k: int, owner: str | None = None) -> list[Hit]:
        """Best chunks by Milvus' BM25 over `text` (same owner filter as `search`); a query none of whose
        terms occur anywhere finds nothing."""
        return self._bm25(query, top_k, self._visible(owner))

    def bm25_scores(self, query: str, ids: Sequence[int], owner: str | None = None) -> dict[int, float]:
        """BM25 score of each given chunk for `query`: the same search restricted to those ids (term
        statistics are the collection's, so a score equals the one in an unrestricted search); 0.0 for a
        chunk with no query term."""
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        flt = f"id in [{', '.join(map(str, ids))}] and ({self._visible(owner)})"
        found = {h.chunk.id: h.score for h in self._bm25(query, len(ids), flt)}
        return {i: found.get(i, 0.0) for i in ids}

    def _bm25(self, query: str, limit: int, flt: str) -> list[Hit]:
        if not self.has_bm25:
            raise StoreError(f"Collection {self.collection!r} has no BM25 field: open it with an analyzer "
                             "(the app and `python -m rag` do) so it is migrated, or use retrieval_mode=dense.")
        if not query.strip():
            return []
        with self._swap.reading():
            result = self.client.search(self.collection, data=[query], anns_field=SPARSE, limit=limit,
                                        output_fields=FIELDS[1:], filter=flt,
                                        search_params={"metric_type": "BM25"})
        # Milvus Lite returns BM25 scores negated (a distance); a server returns them as they are. BM25 is
        # never negative, so the magnitude is the score either way: higher is better, as everywhere here.
        return [Hit(self._chunk(h["id"], h["entity"]), abs(float(h["distance"]))) for h in result[0]]

    def chunk_ids(self, doc_id: str) -> list[int]:
        return [r["id"] for r in self._query(f"doc_id == {quote(doc_id)}", ["id"])]

    def chunks(self, doc_id: str) -> list[Chunk]:
        rows = self._stored_once(self._query(f"doc_id == {quote(doc_id)}", FIELDS))
        return sorted((self._chunk(r["id"], r) for r in rows), key=lambda c: c.chunk_index)

    def documents(self, owner: str | None = None) -> list[DocumentInfo]:
        """Documents visible to `owner` (None: all), with their chunk counts."""
        rows = self._stored_once(self._query(self._visible(owner) if owner is not None else "id >= 0",
                                             ["id", "doc_id", "source", "owner"]))
        counts = Counter((r["doc_id"], r["source"], r["owner"]) for r in rows)
        return sorted((DocumentInfo(d, s, o, n) for (d, s, o), n in counts.items()),
                      key=lambda d: (d.owner, d.source.lower()))

    def count(self, private: bool = False) -> int:
        """Chunks stored; with `private`, only sessions' uploads (every owner but the shared base)."""
        flt = f"owner != {quote(SHARED_OWNER)}" if private else ""
        rows = self.client.query(self.collection, filter=flt, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing twice or after a failed open is harmless
            log.debug("close failed", exc_info=True)

    # --- ingestion helpers ----------------------------------------------------------------------------
    @classmethod
    def open_existing(cls, uri: str, collection: str, *, token: str | None = None,
                      call_timeout: float = CALL_TIMEOUT) -> "Store | None":
        """Open a collection at its stored dimension without an embedder (for listing and deleting);
        None when the collection does not exist yet."""
        client = make_client(uri, token, call_timeout=call_timeout)
        if not client.has_collection(collection):
            client.close()
            return None
        info = client.describe_collection(collection)
        dim = next(int(f["params"]["dim"]) for f in info["fields"] if f["name"] == "vector")
        return cls(uri, collection, dim, client=client, analyzer=None)

    def replace_document(self, chunks: Sequence[Chunk], vectors: np.ndarray, stale_ids: Iterable[int]) -> int:
        """Write a document's new chunks and drop its stale ones as one step for searches in this process:
        they wait (milliseconds: the vectors are ready) and then see the old version or the new one."""
        stale_ids = list(stale_ids)
        with self._swap.writing():
            written = self.upsert(chunks, vectors)
            self.delete_ids(stale_ids)
        return written

    def chunk_positions(self, doc_id: str) -> dict[int, int]:
        """Chunk id -> chunk_index for one document."""
        rows = self._stored_once(self._query(f"doc_id == {quote(doc_id)}", ["id", "chunk_index"]))
        return {int(r["id"]): int(r["chunk_index"]) for r in rows}

    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored vectors by chunk id (reused when a re-uploaded file keeps some chunks unchanged)."""
        return {i: np.asarray(r["vector"], dtype=np.float32) for i, r in self._rows_by_id(ids, ["vector"]).items()}

    def _rows_by_id(self, ids: Sequence[int], fields: list[str]) -> dict[int, dict]:
        """Stored rows by chunk id, fetched 1000 ids a call (the size of a Milvus `get`'s id list kept small)."""
        ids = [int(i) for i in ids]
        return {int(r["id"]): r for start in range(0, len(ids), 1000)
                for r in self.client.get(self.collection, ids=ids[start:start + 1000], output_fields=fields)}

    def content_documents(self, hashes: Sequence[str], owner: str | None = None) -> dict[str, dict[str, str]]:
        """Content hash -> {doc_id: source} of the documents visible to `owner` holding that content."""
        found: dict[str, dict[str, str]] = defaultdict(dict)
        hashes = list(dict.fromkeys(hashes))
        for start in range(0, len(hashes), 500):
            part = ", ".join(quote(h) for h in hashes[start:start + 500])
            for row in self._query(f"content_hash in [{part}] and ({self._visible(owner)})",
                                   ["content_hash", "doc_id", "source"]):
                found[row["content_hash"]][row["doc_id"]] = row["source"]
        return dict(found)

    def find_documents(self, ref: str, owner: str | None = None) -> list[DocumentInfo]:
        """Documents whose id or file name is `ref` (None owner: any owner)."""
        return [d for d in self.documents(owner) if ref in (d.doc_id, d.source)]

    def has_documents(self, owner: str = SHARED_OWNER) -> bool:
        """Whether anything is stored for `owner` (the shared knowledge base by default)."""
        rows = self.client.query(self.collection, filter=f"owner == {quote(owner)}", output_fields=["id"],
                                 limit=1)
        return bool(rows)

    # --- helpers ----------------------------------------------------------------------------------
    def _stored_once(self, rows: list[dict]) -> list[dict]:
        """`rows` with each id once, after writing any id found twice again. A Milvus Lite database that an app
        before rag/store/lite_wal.py left killed right after a flush holds some chunks twice (same id, same
        content) for good: listings counted them twice, searches found them twice, and an upload of the same
        file kept them ("unchanged"). An upsert of one copy replaces both; every listing of them mends them."""
        counts = Counter(r["id"] for r in rows)
        twice = sorted(int(i) for i, n in counts.items() if n > 1)
        if not twice:
            return rows
        log.warning("collection %s holds %d chunks twice (a Milvus Lite database killed right after a flush, "
                    "before this version): writing them once", self.collection, len(twice))
        stored = self._rows_by_id(twice, FIELDS + ["vector"])
        ids = list(stored)
        with self._swap.writing():
            self.upsert([self._chunk(i, stored[i]) for i in ids],
                        np.asarray([stored[i]["vector"] for i in ids], dtype=np.float32))
        seen: set = set()
        return [r for r in rows if not (r["id"] in seen or seen.add(r["id"]))]

    @staticmethod
    def _visible(owner: str | None) -> str:
        if owner is None or owner == SHARED_OWNER:
            return f"owner == {quote(SHARED_OWNER)}"
        return f"owner in [{quote(SHARED_OWNER)}, {quote(owner)}]"

    def _query(self, flt: str, fields: list[str]) -> list[dict]:
        return query_rows(self.client, self.collection, flt, fields)

    @staticmethod
    def _chunk(chunk_id: int, row: dict) -> Chunk:
        return Chunk(text=row["text"], source=row["source"], chunk_index=row["chunk_index"],
                     heading=row.get("heading", ""), owner=row["owner"], doc_id=row["doc_id"],
                     content_hash=row["content_hash"], id=int(chunk_id))


def _field_names(info: dict) -> set[str]:
    return {f["name"] for f in info["fields"]}


def _clip(text: str, limit: int) -> str:
    """VARCHAR limits count bytes; cut on a character boundary."""
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", errors="ignore")
