"""`Embedder` over an OpenAI-compatible embeddings API (`POST {url}/embeddings`): vLLM, TEI, Infinity, Ollama,
OpenAI itself.

The server only turns texts into vectors, so this client does the rest the in-process embedder does:
- queries get the model's query prompt (Qwen3: `Instruct: {task}\\nQuery:{query}`), documents go raw;
- a Matryoshka size goes out as `dimensions`; a server that refuses the field is remembered after the first
  refusal, and from then on the full vectors are cut and renormalised here (every answer is renormalised here
  anyway, so a server that ignores the field or doesn't normalise gives the same vectors);
- texts longer than `max_tokens` are cut to that many tokens of the model's own tokenizer (loaded here from
  `model_name`, which is also the model name sent), which also counts chunk tokens;
- documents go in batches capped in texts and in tokens.
`dim` is the configured size, or the server's (one probe request at start) when none is configured.
"""
from __future__ import annotations

import logging
import threading
from typing import Sequence

import numpy as np

from rag.errors import ModelServerBadResponse, ModelServerRejected, SettingsError
from rag.models.batching import token_batches
from rag.models.contracts import ProgressFn
from rag.models.embedder import QueryCache, count_tokens, prompt_for_query, truncate_and_normalise
from rag.models.http import ModelServer, Role, check_count
from rag.settings import DEFAULT_TASK
from rag.types import Backend

log = logging.getLogger(__name__)

ROLE = Role("embedding server", "embedding_url (RAG_EMBEDDING_URL / --embedding-url)",
            "embedding_api_key (RAG_EMBEDDING_API_KEY)")
QWEN_PROMPTS = {"query": "Instruct: "}  # what the prompts of a model whose own can't be read are taken to be


class RemoteEmbedder:
    """`rag.models.Embedder` served by a model server; see the module docstring."""

    def __init__(self, model_name: str, url: str, *, api_key: str | None = None, dim: int | None = None,
                 max_tokens: int = 1024, batch_size: int = 64, batch_tokens: int = 16384, timeout: float = 60.0,
                 retries: int = 3, tokenizer=None, prompts: dict | None = None, server: ModelServer | None = None,
                 query_cache_size: int = 256):
        self.model_name = model_name
        self.server = server or ModelServer(url, ROLE, api_key=api_key, timeout=timeout, retries=retries)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_name)
        self.prompts = prompts if prompts is not None else model_prompts(model_name)
        limit = self.tokenizer.model_max_length  # a huge sentinel when the model doesn't say
        self.max_tokens = min(max_tokens, int(limit)) if limit < 1_000_000 else max_tokens
        self.batch_size, self.batch_tokens = batch_size, batch_tokens
        self._special_tokens = len(self.tokenizer("x")["input_ids"]) - \
            len(self.tokenizer("x", add_special_tokens=False)["input_ids"])
        self._dimensions_accepted: bool | None = None  # None until a request with `dimensions` was answered
        self._state_lock = threading.Lock()
        self._query_cache = QueryCache(query_cache_size)
        self.full_dim: int | None = None
        if dim is None:
            self.full_dim = self._request(["dimension probe"], None).shape[1]
        self.dim = dim or self.full_dim

    @property
    def backend(self) -> Backend:
        return Backend("server", url=self.server.base_url, api="embeddings")

    # --- the contract ----------------------------------------------------------------------------------
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return count_tokens(self.tokenizer, texts)

    def embed_documents(self, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
        """In order, in batches of at most `batch_size` texts and `batch_tokens` tokens; progress per batch."""
        texts = [self._cut(t) for t in texts]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        lengths = [n + self._special_tokens for n in self.count_tokens(texts)]
        done = 0
        # The server pads and batches itself: no closing for padding here (max_waste=1).
        for batch in token_batches(range(len(texts)), lengths, self.batch_size, self.batch_tokens, max_waste=1.0):
            out[batch] = self._request([texts[i] for i in batch], self.dim)
            done += len(batch)
            if progress:
                progress(done, len(texts))
        return out

    def embed_query(self, text: str, instruction: str | None = None) -> np.ndarray:
        key = (instruction or DEFAULT_TASK, text)
        cached = self._query_cache.get(key)
        if cached is not None:
            return cached
        prompt = prompt_for_query(self.prompts, instruction) or ""
        vector = self._request([self._cut(prompt + text)], self.dim)[0]
        self._query_cache.put(key, vector)
        return vector.copy()

    # --- requests --------------------------------------------------------------------------------------
    def _cut(self, text: str) -> str:
        """`text` cut after `max_tokens` tokens (special tokens included), as the in-process model reads it."""
        budget = self.max_tokens - self._special_tokens
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        if len(encoded["input_ids"]) <= budget:
            return text
        return text[:encoded["offset_mapping"][budget - 1][1]]

    def _request(self, texts: list[str], dim: int | None) -> np.ndarray:
        """Unit vectors of `dim` (None: the server's full size) for `texts`, in order."""
        body = {"model": self.model_name, "input": texts, "encoding_format": "float"}
        ask_dimensions = dim is not None and dim != self.full_dim and self._dimensions_accepted is not False
        if ask_dimensions:
            body["dimensions"] = dim
        try:
            answer = self.server.post("embeddings", body)
        except ModelServerRejected as exc:
            if not ask_dimensions or exc.status not in (400, 422):
                raise
            del body["dimensions"]
            answer = self.server.post("embeddings", body)  # the refusal was about `dimensions`: cut here
            with self._state_lock:
                if self._dimensions_accepted is None:
                    log.info("the embedding server %s refuses `dimensions` (%s); cutting its vectors to %d here",
                             self.server.base_url, exc, dim)
                self._dimensions_accepted = False
        else:
            if ask_dimensions:
                self._dimensions_accepted = True
        return self._vectors(answer, len(texts), dim)

    def _vectors(self, answer, count: int, dim: int | None) -> np.ndarray:
        url = self.server.url("embeddings")
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            raise ModelServerBadResponse(
                f"The embedding server at {url} answered without a `data` list: it is not an OpenAI-compatible "
                f"embeddings API. Check {ROLE.url_setting}.")
        check_count(len(data), count, self.server, url, "embeddings")
        try:
            order = sorted(data, key=lambda item: item.get("index", 0))
            vectors = np.array([item["embedding"] for item in order], dtype=np.float32)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ModelServerBadResponse(
                f"The embedding server at {url} sent embeddings that are not lists of numbers of one size "
                "(base64 or ragged?). It must answer encoding_format=float.") from None
        if vectors.ndim != 2 or not np.isfinite(vectors).all():
            raise ModelServerBadResponse(
                f"The embedding server at {url} sent NaN or infinite values: the model on the server is broken "
                "or mis-configured (wrong dtype?). Check the server's log.")
        if dim is not None and vectors.shape[1] < dim:
            raise SettingsError(
                f"embedding_dim={dim} (RAG_EMBEDDING_DIM) is larger than the {vectors.shape[1]} dimensions the "
                f"embedding server at {url} returns for {self.model_name}: pick a size up to "
                f"{vectors.shape[1]}, or none for the full size.")
        return truncate_and_normalise(vectors, dim)

    def close(self) -> None:
        self.server.close()


def load_tokenizer(model_name: str):
    """The model's own tokenizer: chunk sizes and the `max_tokens` cut are counted in it."""
    from transformers import AutoTokenizer

    from rag.errors import loading

    with loading("embedding tokenizer", model_name,
                 "RAG_EMBEDDING_MODEL / --embedding-model (the model the embedding server serves)"):
        return AutoTokenizer.from_pretrained(model_name)


def model_prompts(model_name: str) -> dict:
    """The sentence-transformers prompts of `model_name` (config_sentence_transformers.json); Qwen3's
    instruction prompt when the file can't be read (a plain model name the hub doesn't know here)."""
    import json

    try:
        from transformers.utils import cached_file

        path = cached_file(model_name, "config_sentence_transformers.json",
                           _raise_exceptions_for_missing_entries=False)
        if path:
            with open(path, encoding="utf-8") as f:
                return json.load(f).get("prompts") or {}
    except (OSError, ValueError) as exc:
        log.info("no sentence-transformers prompts for %s (%s): using Qwen3's query instruction", model_name, exc)
    return dict(QWEN_PROMPTS)
