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

The limits follow where the models run. In this process they are shared and serialised (one forward pass at a
time per model, questions before uploads: rag/models/priority.py), so more turns at once only queue inside.
On model servers (RAG_EMBEDDING_URL and RAG_RERANKER_URL, or reranking off) a turn only waits on the network
and the servers batch concurrent requests, so many more may be in flight: `server_chat_concurrency`
(RAG_SERVER_CHAT_CONCURRENCY) turns, and `server_ingest_concurrency` uploads when the embedder is remote.
"""
from __future__ import annotations

from rag.models.registry import SERVER, embedding_backend, models_on_servers
from rag.settings import Settings


def chat_concurrency(settings: Settings) -> int:
    return settings.server_chat_concurrency if models_on_servers(settings) else settings.chat_concurrency


def ingest_concurrency(settings: Settings) -> int:
    remote = embedding_backend(settings) == SERVER
    return settings.server_ingest_concurrency if remote else settings.ingest_concurrency

CHAT_GROUP = "chat"
INGEST_GROUP = "ingest"


def chat_limits(settings: Settings) -> dict:
    """Keyword arguments for a chat event (`.click`, `gr.api`)."""
    return {"concurrency_id": CHAT_GROUP, "concurrency_limit": chat_concurrency(settings)}


def ingest_limits(settings: Settings) -> dict:
    """Keyword arguments for an upload event."""
    return {"concurrency_id": INGEST_GROUP, "concurrency_limit": ingest_concurrency(settings)}


def queue_options(settings: Settings) -> dict:
    """Keyword arguments for `Blocks.queue()`."""
    return {"default_concurrency_limit": settings.default_concurrency, "max_size": settings.queue_max_size,
            "api_open": False}
