"""Qwen3-Reranker: score = P("yes") from the yes/no logits of the official chat template.

`Reranker.score` is the whole contract. The implementation computes only what the score needs: the hidden
state of the last position, projected onto the two LM-head rows for "no" and "yes" (not 151k logits at
every position), in length-sorted batches so short documents are not padded to the longest one.
"""
from __future__ import annotations

import logging
import threading
from typing import Protocol, Sequence

from .settings import DEFAULT_TASK

log = logging.getLogger(__name__)

PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
          "Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n")
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def format_pair(query: str, document: str, instruction: str | None = None) -> str:
    return f"<Instruct>: {instruction or DEFAULT_TASK}\n<Query>: {query}\n<Document>: {document}"


class Reranker(Protocol):
    def score(self, query: str, documents: Sequence[str], instruction: str | None = None) -> list[float]: ...


class Qwen3Reranker:
    """`Reranker` over a Qwen3 causal LM (Qwen/Qwen3-Reranker-0.6B by default)."""

    def __init__(self, model_name: str = "Qwen/Qwen3-Reranker-0.6B", *, device: str = "auto",
                 dtype: str = "auto", batch_size: int = 8, max_tokens: int = 1024, model=None, tokenizer=None):
        from .devices import resolve_device, resolve_dtype

        self.model_name = model_name
        self.device = resolve_device(device)
        self.torch_dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.tokenizer = tokenizer or self._load_tokenizer(model_name)
        self.model = model or self._load_model(model_name)
        self.prefix_ids = self.tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix_ids = self.tokenizer.encode(SUFFIX, add_special_tokens=False)
        self.yes_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.no_id = self.tokenizer.convert_tokens_to_ids("no")
        self._yes_no_rows = self._lm_head_rows()
        self._lock = threading.Lock()

    @staticmethod
    def _load_tokenizer(model_name: str):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_name, padding_side="left")

    def _load_model(self, model_name: str):
        from transformers import AutoModelForCausalLM

        log.info("loading reranker %s on %s (%s)", model_name, self.device, self.torch_dtype)
        model = AutoModelForCausalLM.from_pretrained(model_name, dtype=self.torch_dtype)
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

    def score(self, query: str, documents: Sequence[str], instruction: str | None = None) -> list[float]:
        if not documents:
            return []
        sequences = self.encode_pairs(query, documents, instruction)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        scores = [0.0] * len(sequences)
        with self._lock:
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                for i, s in zip(batch, self._score_batch([sequences[i] for i in batch])):
                    scores[i] = s
        return scores

    def _score_batch(self, sequences: list[list[int]]) -> list[float]:
        import torch

        inputs = self.tokenizer.pad({"input_ids": sequences}, padding=True, return_tensors="pt")
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        with torch.inference_mode():
            hidden = self.model.model(**inputs).last_hidden_state[:, -1, :].float()
            weight, bias = self._yes_no_rows
            logits = hidden @ weight.T + bias  # columns: no, yes
            return torch.softmax(logits, dim=-1)[:, 1].tolist()
