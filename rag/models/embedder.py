"""Dense embeddings with Qwen3-Embedding through sentence-transformers.

Queries carry the instruction prompt `Instruct: {task}\\nQuery:{query}`; documents carry none. Matryoshka
sizes truncate the full vector first and renormalise after, so inner product stays cosine.
Decoder embedders with last-token pooling (Qwen3-Embedding) run packed (rag/models/packed.py): a batch's texts
sit end to end in one row with no padding, each attending only to itself, so the matmuls are as tall as the
token budget whatever the lengths (docs/benchmarks.md: the padded path measured far from the compute floor on
short texts). Other models go through `SentenceTransformer.encode`, sorted by token count and batched by padded
tokens (rag/batching.py). `dtype="int8"` quantises the Linear layers of a model this class loads.
"""
from __future__ import annotations

import logging
import threading
from typing import Sequence

import numpy as np

from rag.errors import SettingsError
from rag.models.batching import token_batches
from rag.models.cache import BoundedCache
from rag.models.contracts import ProgressFn
from rag.models.packed import (
    last_token_states,
    pack_batches,
    packable,
    use_packed_attention,
)
from rag.models.priority import BACKGROUND_WAIT, GATE
from rag.settings import DEFAULT_TASK
from rag.types import Backend

log = logging.getLogger(__name__)


def query_prompt(instruction: str | None) -> str:
    return f"Instruct: {instruction or DEFAULT_TASK}\nQuery:"


def is_instruction_aware(prompts: dict) -> bool:
    """Qwen3-Embedding (and kin) ship a `query` prompt of the form "Instruct: ...\nQuery:"."""
    return (prompts or {}).get("query", "").startswith("Instruct:")


def prompt_for_query(prompts: dict, instruction: str | None) -> str | None:
    """What goes before a query: Qwen's instruction prompt for instruction-aware models; other models (MiniLM,
    ...) get their own query prompt, if any."""
    if is_instruction_aware(prompts):
        return query_prompt(instruction)
    return (prompts or {}).get("query") or None


def count_tokens(tokenizer, texts: Sequence[str]) -> list[int]:
    """Tokens of each text without special tokens (chunk sizes): the `Embedder.count_tokens` rule."""
    texts = list(texts)
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]


def truncate_and_normalise(vectors: np.ndarray, dim: int | None) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if dim is not None:
        vectors = vectors[..., :dim]
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def use_left_padding(model) -> None:
    """Pad on the left for last-token pooling, as the official Qwen3-Embedding code does. Other models
    (MiniLM, BERT-style, absolute positions) keep their own side: left padding shifts their positions and
    changes a text's vector with the length of its batch-mates."""
    modes = [module.get_config_dict().get("pooling_mode") for module in model
             if type(module).__name__ == "Pooling" and hasattr(module, "get_config_dict")]
    if "lasttoken" in modes:
        model.tokenizer.padding_side = "left"


class SentenceTransformerEmbedder:
    """`rag.models.Embedder` over any sentence-transformers model; Qwen3-Embedding by default. `fused` runs a
    Qwen3 model's layers on the fused CPU kernels once they are built (rag/models/fused_layers.py; on a GPU a bf16
    model keeps its residual stream in float32, rag/models/residual_stream.py); `keep_heap` keeps a CPU pass's
    freed activations in the process (rag/models/heap.py)."""

    def __init__(self, model_name: str = "Qwen/Qwen3-Embedding-0.6B", *, dim: int | None = None,
                 device: str = "auto", dtype: str = "auto", batch_size: int = 32, batch_tokens: int | None = None,
                 max_tokens: int = 1024, query_cache_size: int = 256, model=None, fused: bool = True,
                 keep_heap: bool = True):
        from rag.models.devices import runtime_for

        self.model_name = model_name
        runtime = runtime_for(model_name, device, dtype, loaded=model is not None, batch_tokens=batch_tokens)
        self.device, self.precision, self.batch_tokens = runtime.device, runtime.precision, runtime.batch_tokens
        self.torch_dtype = self.precision.dtype
        self.batch_size = batch_size
        self.model = model or self._load(model_name, max_tokens)
        self.full_dim = int(self.model.get_embedding_dimension())
        if dim is not None and not 32 <= dim <= self.full_dim:
            raise SettingsError(f"embedding_dim={dim} (RAG_EMBEDDING_DIM) is outside 32..{self.full_dim} for {model_name}; "
                             f"pick a Matryoshka size in that range or None for the full {self.full_dim}.")
        self.dim = dim or self.full_dim
        # Models without instructions (MiniLM, ...) get their own query prompt, if any, not Qwen's.
        self.instruction_aware = is_instruction_aware(self.model.prompts)
        self.packed = packable(self.model)
        if self.packed:
            use_packed_attention(self.model[0].auto_model)
        if fused and self.device == "cpu":
            from rag.models.fused_layers import use_fused_layers

            use_fused_layers(self.model[0].auto_model)  # a no-op for other architectures (MiniLM, BERT-style)
        elif self.device != "cpu":  # a GPU: bf16/fp16 Qwen3 layers add into a float32 residual stream
            from rag.models.residual_stream import keep_residual_stream_in_float32

            keep_residual_stream_in_float32(self.model[0].auto_model)
        if keep_heap:
            from rag.models.heap import keep_freed_memory_for

            keep_freed_memory_for(self.device)  # process-wide, CPU only (rag/models/heap.py)
        self.query_cache: BoundedCache[np.ndarray] = BoundedCache(query_cache_size)  # (instruction, text) -> vector
        self._lock = threading.Lock()  # one forward pass at a time: torch threads are already busy

    def _load(self, model_name: str, max_tokens: int):
        from sentence_transformers import SentenceTransformer

        from rag.errors import loading

        log.info("loading embedding model %s on %s (%s)", model_name, self.device, self.precision.name)
        with loading("embedding model", model_name, "RAG_EMBEDDING_MODEL / --embedding-model"):
            model = SentenceTransformer(model_name, device=self.device,
                                        model_kwargs={"dtype": self.torch_dtype})
        use_left_padding(model)
        from rag.models.devices import own_weights

        own_weights(model)
        model.max_seq_length = min(max_tokens, model.max_seq_length or max_tokens)
        if self.precision.int8:
            from rag.models.devices import quantize_linears

            quantize_linears(model)
        if self.precision.bf16_weights:
            from rag.models.devices import compute_in_fp32

            compute_in_fp32(model)
        return model.eval()

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def backend(self) -> Backend:
        return Backend("local", device=str(self.device), precision=self.precision.name)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return count_tokens(self.tokenizer, texts)

    def _encode(self, texts: Sequence[str], prompt: str | None) -> np.ndarray:
        import torch

        with self._lock, torch.inference_mode():
            vectors = self.model.encode(list(texts), prompt=prompt, batch_size=self.batch_size,
                                        convert_to_numpy=True, normalize_embeddings=False,
                                        show_progress_bar=False)
        return truncate_and_normalise(vectors.astype(np.float32), self.dim)

    def _encode_packed(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        import torch

        with self._lock, torch.inference_mode():
            states = last_token_states(self.model[0].auto_model, sequences)
        return truncate_and_normalise(states.float().cpu().numpy(), self.dim)

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """Ids as `SentenceTransformer.encode` feeds them (special tokens in, cut at the model's limit)."""
        limit = self.model.max_seq_length or None
        return self.tokenizer(texts, truncation=limit is not None, max_length=limit)["input_ids"]

    def embed_documents(self, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
        """Embed longest first in token-capped batches (packed, or padded of similar length); report progress
        after each batch."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.packed:
            return self._embed_packed(self._token_ids(texts), progress)
        lengths = self._token_counts(texts)
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        done = 0
        for batch in token_batches(order, [lengths[i] for i in order], self.batch_size, self.batch_tokens):
            GATE.wait_turn(BACKGROUND_WAIT)  # a question embedding or reranking goes first (rag/models/priority.py)
            out[batch] = self._encode([texts[i] for i in batch], prompt=None)
            done += len(batch)
            if progress:
                progress(done, len(texts))
        return out

    def _embed_packed(self, ids: list[list[int]], progress: ProgressFn | None) -> np.ndarray:
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        done = 0
        for run in pack_batches([len(ids[i]) for i in order], self.batch_tokens, self.batch_size):
            batch = [order[i] for i in run]
            GATE.wait_turn(BACKGROUND_WAIT)  # a question embedding or reranking goes first (rag/models/priority.py)
            out[batch] = self._encode_packed([ids[i] for i in batch])
            done += len(batch)
            if progress:
                progress(done, len(ids))
        return out

    def _token_counts(self, texts: list[str]) -> list[int]:
        """Tokens per text as the model will see them (special tokens in, cut at the model's limit)."""
        return [len(i) for i in self._token_ids(texts)]

    def query_prompt(self, instruction: str | None) -> str | None:
        return prompt_for_query(self.model.prompts, instruction)

    def embed_query(self, text: str, instruction: str | None = None) -> np.ndarray:
        key = (instruction or DEFAULT_TASK, text)
        cached = self.query_cache.get(key)
        if cached is not None:
            return cached.copy()
        prompt = self.query_prompt(instruction)
        with GATE.urgent():
            if self.packed:
                vector = self._encode_packed(self._token_ids([(prompt or "") + text]))[0]
            else:
                vector = self._encode([text], prompt=prompt)[0]
        self.query_cache.put(key, vector)
        return vector.copy()
