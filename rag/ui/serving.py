"""How much one app process serves at once: Gradio queue and concurrency limits, set deliberately.

The models and the collection are loaded once and shared by every session, so the queue decides how many
requests use them at the same time:

- chat turns (UI ask / re-run and the `/ask`, `/retrieve` endpoints) share the concurrency group "chat":
  at most `CHAT_CONCURRENCY` run at once. A turn spends most of its time waiting for the LLM stream, so
  several may overlap; the CPU/GPU-bound steps inside them (query embedding, reranking) are short.
- uploads (the Knowledge tab and the `/upload` endpoint) share the group "ingest": one at a time, because
  embedding a batch of documents saturates the CPU/GPU and writes serialise in the store anyway.
- everything else (listing, deleting, selecting a table row) runs up to `DEFAULT_CONCURRENCY` at once.
- at most `QUEUE_MAX_SIZE` events wait in the queue; beyond that a request is refused with "queue full"
  instead of piling up without bound.

Each can be overridden with RAG_CHAT_CONCURRENCY, RAG_INGEST_CONCURRENCY, RAG_DEFAULT_CONCURRENCY and
RAG_QUEUE_MAX_SIZE.
"""
from __future__ import annotations

import os

CHAT_GROUP = "chat"
INGEST_GROUP = "ingest"


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


CHAT_CONCURRENCY = _env_int("RAG_CHAT_CONCURRENCY", 8)
INGEST_CONCURRENCY = _env_int("RAG_INGEST_CONCURRENCY", 1)
DEFAULT_CONCURRENCY = _env_int("RAG_DEFAULT_CONCURRENCY", 4)
QUEUE_MAX_SIZE = _env_int("RAG_QUEUE_MAX_SIZE", 64)

CHAT = {"concurrency_id": CHAT_GROUP, "concurrency_limit": CHAT_CONCURRENCY}
INGEST = {"concurrency_id": INGEST_GROUP, "concurrency_limit": INGEST_CONCURRENCY}


def queue_options() -> dict:
    """Keyword arguments for `Blocks.queue()`."""
    return {"default_concurrency_limit": DEFAULT_CONCURRENCY, "max_size": QUEUE_MAX_SIZE}
