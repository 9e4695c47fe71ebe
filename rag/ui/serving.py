"""How much one app process serves at once: Gradio queue and concurrency limits, set deliberately.

The models and the collection are loaded once and shared by every session, so the queue decides how many
requests use them at the same time:

- chat turns (UI ask / re-run and the `/ask`, `/retrieve` endpoints) share the concurrency group "chat":
  at most `chat_concurrency` run at once. A turn spends most of its time waiting for the LLM stream, so
  several may overlap; the CPU/GPU-bound steps inside them (query embedding, reranking) are short.
- uploads (the Knowledge tab and the `/upload` endpoint) share the group "ingest": one at a time, because
  embedding a batch of documents saturates the CPU/GPU and writes serialise in the store anyway.
- everything else (listing, deleting, selecting a table row) runs up to `default_concurrency` at once.
- at most `queue_max_size` events wait in the queue; beyond that a request is refused with "queue full"
  instead of piling up without bound.
- every event goes through the queue: `api_open=False` closes Gradio's direct REST route
  (`POST /gradio_api/run/<name>`), which would otherwise run a handler at once, outside every limit above.
  API clients use the queued routes (gradio_client, `/gradio_api/call/<name>`, MCP).

Each is a `Settings` field (RAG_CHAT_CONCURRENCY, RAG_INGEST_CONCURRENCY, RAG_DEFAULT_CONCURRENCY,
RAG_QUEUE_MAX_SIZE).
"""
from __future__ import annotations

from rag.settings import Settings

CHAT_GROUP = "chat"
INGEST_GROUP = "ingest"


def chat_limits(settings: Settings) -> dict:
    """Keyword arguments for a chat event (`.click`, `gr.api`)."""
    return {"concurrency_id": CHAT_GROUP, "concurrency_limit": settings.chat_concurrency}


def ingest_limits(settings: Settings) -> dict:
    """Keyword arguments for an upload event."""
    return {"concurrency_id": INGEST_GROUP, "concurrency_limit": settings.ingest_concurrency}


def queue_options(settings: Settings) -> dict:
    """Keyword arguments for `Blocks.queue()`."""
    return {"default_concurrency_limit": settings.default_concurrency, "max_size": settings.queue_max_size,
            "api_open": False}
