"""Qwen3-Reranker: score = P("yes") from the yes/no logits of the official chat template.

`Reranker.score` is the whole contract. The implementation computes only what the score needs: the hidden
state of the last position, projected onto the two LM-head rows for "no" and "yes" (not 151k logits at
every position). The tokens every pair shares (system prompt + instruction + query) run once per call, the
system prompt + instruction part once per process; the documents' tails then run on their keys/values, packed
end to end with no padding (rag/models/prefix_cache.py). Token ids are those of the reference tokenisation of
the whole pair, so the split never changes what the model sees.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Sequence

from rag.models.batching import first_alone
from rag.models.cache import BoundedCache
from rag.models.contracts import BatchFn
from rag.models.packed import pack_batches
from rag.models.priority import GATE
from rag.settings import DEFAULT_TASK
from rag.types import Backend

if TYPE_CHECKING:
    from rag.models.prefix_cache import KV

log = logging.getLogger(__name__)

PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
          "Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n")
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def query_part(query: str, instruction: str | None = None) -> str:
    """The part of the user turn every document of a query shares."""
    return f"<Instruct>: {instruction or DEFAULT_TASK}\n<Query>: {query}\n"


def document_part(document: str) -> str:
    return f"<Document>: {document}"


def format_pair(query: str, document: str, instruction: str | None = None) -> str:
    """The user turn between PREFIX and SUFFIX."""
    return query_part(query, instruction) + document_part(document)


def template_query(query: str, instruction: str | None = None) -> str:
    """What a model server gets as the query: PREFIX + the shared part. With `template_document` after it,
    the server sees exactly the text this process scores (PREFIX + format_pair + SUFFIX)."""
    return PREFIX + query_part(query, instruction)


def template_document(document: str) -> str:
    return document_part(document) + SUFFIX


class Qwen3Reranker:
    """`rag.models.Reranker` over a Qwen3 causal LM (Qwen/Qwen3-Reranker-0.6B by default).

    `dtype="int8"` quantises the Linear layers of a model this class loads (an injected `model` is used as is).
    `prefix_cache=False` runs every pair whole, without sharing the head (for comparison). `fused` runs the
    model's layers on the fused CPU kernels once they are built (rag/models/fused_layers.py; on a GPU a bf16 model
    keeps its residual stream in float32, rag/models/residual_stream.py); `keep_heap` keeps a CPU pass's freed
    activations in the process (rag/models/heap.py).
    `batch_size` and `batch_tokens` cap the documents and tokens of one packed pass (CPU default in
    rag/models/batching.py, measured in docs/benchmarks.md).
    """

    def __init__(self, model_name: str = "Qwen/Qwen3-Reranker-0.6B", *, device: str = "auto",
                 dtype: str = "auto", batch_size: int = 16, max_tokens: int = 1024, prefix_cache: bool = True,
                 batch_tokens: int | None = None, model=None, tokenizer=None, fused: bool = True,
                 keep_heap: bool = True):
        from rag.models.devices import runtime_for

        self.model_name = model_name
        runtime = runtime_for(model_name, device, dtype, loaded=model is not None, batch_tokens=batch_tokens)
        self.device, self.precision, self.batch_tokens = runtime.device, runtime.precision, runtime.batch_tokens
        self.torch_dtype = self.precision.dtype
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.prefix_cache = prefix_cache
        self.tokenizer = tokenizer or self._load_tokenizer(model_name)
        self.model = model or self._load_model(model_name)
        self.prefix_ids = self.tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix_ids = self.tokenizer.encode(SUFFIX, add_special_tokens=False)
        self.yes_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.no_id = self.tokenizer.convert_tokens_to_ids("no")
        self._yes_no_rows = self._lm_head_rows()
        if model is None and self.precision.int8:
            from rag.models.devices import quantize_linears

            quantize_linears(self.model.model)  # the decoder only: the LM head is read as two fp32 rows
        from rag.models.packed import use_packed_attention

        use_packed_attention(self.model)  # plain calls (no segments) still get SDPA, so sharing the model is safe
        if fused and self.device == "cpu":
            from rag.models.fused_layers import use_fused_layers

            use_fused_layers(self.model)  # same numbers, less element-wise time (rag/models/fused_layers.py)
        elif self.device != "cpu":  # a GPU: bf16/fp16 layers add into a float32 residual stream
            from rag.models.residual_stream import keep_residual_stream_in_float32

            keep_residual_stream_in_float32(self.model)
        if keep_heap:
            from rag.models.heap import keep_freed_memory_for

            keep_freed_memory_for(self.device)  # process-wide, CPU only (rag/models/heap.py)
        # keys/values of the static head (system prompt + instruction) per instruction: ~14 MB each at 0.6B
        self._static_heads: BoundedCache[KV] = BoundedCache(4)
        self._lock = threading.Lock()

    @property
    def backend(self) -> Backend:
        return Backend("local", device=str(self.device), precision=self.precision.name)

    @staticmethod
    def _load_tokenizer(model_name: str):
        from transformers import AutoTokenizer

        from rag.errors import loading

        with loading("reranker", model_name, "RAG_RERANKER_MODEL / --reranker-model (none turns it off)"):
            return AutoTokenizer.from_pretrained(model_name, padding_side="left")

    def _load_model(self, model_name: str):
        from transformers import AutoModelForCausalLM

        log.info("loading reranker %s on %s (%s)", model_name, self.device, self.precision.name)
        from rag.errors import loading

        with loading("reranker", model_name, "RAG_RERANKER_MODEL / --reranker-model (none turns it off)"):
            model = AutoModelForCausalLM.from_pretrained(model_name, dtype=self.torch_dtype)
        from rag.models.devices import own_weights

        own_weights(model)
        if self.precision.bf16_weights:
            from rag.models.devices import compute_in_fp32

            compute_in_fp32(model)
        return model.to(self.device).eval()

    def _lm_head_rows(self):
        """The LM head's "no" and "yes" rows (and biases), kept in fp32: 2 logits instead of the vocabulary."""
        import torch

        head = self.model.get_output_embeddings()
        weight = head.weight[[self.no_id, self.yes_id]].detach().float()
        bias = head.bias[[self.no_id, self.yes_id]].detach().float() if head.bias is not None else None
        return weight, bias if bias is not None else torch.zeros(2, device=weight.device)

    def encode_pairs(self, query: str, documents: Sequence[str], instruction: str | None) -> list[list[int]]:
        """Token ids per pair: prefix + body + suffix, cutting only the body's end when it is too long."""
        budget = self.max_tokens - len(self.prefix_ids) - len(self.suffix_ids)
        bodies = self.tokenizer([format_pair(query, d, instruction) for d in documents],
                                add_special_tokens=False, truncation=True, max_length=budget)["input_ids"]
        return [self.prefix_ids + body + self.suffix_ids for body in bodies]

    def shared_head(self, query: str, instruction: str | None) -> list[int]:
        """The ids every pair of this query starts with, if its tokenisation splits there (checked per pair)."""
        return self.prefix_ids + self.tokenizer.encode(query_part(query, instruction), add_special_tokens=False)

    def static_head(self, instruction: str | None) -> list[int]:
        """The ids of the head up to the query text, the same for every query with this instruction (cut before
        `<Query>:`'s space, which BPE may merge into the query's first word)."""
        return self.prefix_ids + self.tokenizer.encode(query_part("", instruction).rstrip("\n").rstrip(" "),
                                                       add_special_tokens=False)

    def score(self, query: str, documents: Sequence[str], instruction: str | None = None,
              on_batch: BatchFn | None = None) -> list[float]:
        if not documents:
            return []
        sequences = self.encode_pairs(query, documents, instruction)
        head = self.shared_head(query, instruction) if self.prefix_cache else []
        # A pair takes the cached path only when its reference ids really start with the head's ids (a BPE merge
        # across the boundary or truncation into the query would break that) and leave a non-empty tail.
        cached = [i for i, s in enumerate(sequences)
                  if head and len(s) > len(head) and s[:len(head)] == head]
        alone = sorted(set(range(len(sequences))) - set(cached), key=lambda i: len(sequences[i]))
        cached.sort(key=lambda i: len(sequences[i]))
        scores = [0.0] * len(sequences)
        with GATE.urgent(), self._lock, _inference():
            past, rest = self._cached_static_head(head, instruction) if cached else (None, [])
            packs = self._packs(cached, [len(sequences[i]) - len(head) for i in cached], on_batch)
            for pack in packs:  # the first pass runs the head's rest too; later ones reuse the whole head
                done = self._extend(past, rest, [sequences[i][len(head):] for i in pack])
                past, rest = done.head, []
                self._fill(scores, pack, done.last_hidden, on_batch)
            packs = self._packs(alone, [len(sequences[i]) for i in alone], on_batch if not cached else None)
            for pack in packs:  # pairs that share no head: each one whole, packed side by side
                self._fill(scores, pack, self._extend(None, [], [sequences[i] for i in pack]).last_hidden, on_batch)
        return scores

    def _packs(self, items: list[int], lengths: list[int], on_batch: BatchFn | None) -> list[list[int]]:
        """Length-sorted items in packs capped by tokens and rows; with progress, the shortest alone first, so
        the first score reaches the page after one short pass."""
        packs = [[items[j] for j in pack] for pack in pack_batches(lengths, self.batch_tokens, self.batch_size)]
        return list(first_alone(iter(packs))) if on_batch else packs

    def _cached_static_head(self, head: list[int], instruction: str | None) -> tuple[KV | None, list[int]]:
        """The static part of `head` (system prompt + instruction) from the cache, computed on first use, and the
        ids still to run (the query's). Without a clean token boundary there, the whole head is still to run."""
        static = self.static_head(instruction)
        if not (0 < len(static) < len(head)) or head[:len(static)] != static:
            return None, head
        key = tuple(static)
        kv = self._static_heads.get(key)
        if kv is None:
            kv = self._extend(None, static, []).head
            self._static_heads.put(key, kv)
        return kv, head[len(static):]

    def _extend(self, past: KV | None, head_rest: list[int], tails: list[list[int]]):
        from rag.models.prefix_cache import extend

        return extend(self.model.model, past, head_rest, tails)

    def _fill(self, scores: list[float], batch: list[int], hidden, on_batch: BatchFn | None = None) -> None:
        import torch

        weight, bias = self._yes_no_rows
        logits = hidden.float() @ weight.T + bias  # columns: no, yes
        batch_scores = torch.softmax(logits, dim=-1)[:, 1].tolist()
        for i, s in zip(batch, batch_scores):
            scores[i] = s
        if on_batch is not None:
            on_batch(list(batch), batch_scores)


def _inference():
    import torch

    return torch.inference_mode()
