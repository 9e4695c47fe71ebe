"""The tests' Qwen tokenizer is Qwen's: same ids as tiktoken over the released ranks, same special ids, and
the reranker's `yes`/`no` ids of Qwen3-Reranker-0.6B."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests import qwen_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer():
    return qwen_tokenizer.build()


def test_reranker_answer_ids_and_specials_are_the_released_ones(tokenizer):
    assert tokenizer.convert_tokens_to_ids(["yes", "no"]) == [9693, 2152]
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]) \
        == [151643, 151644, 151645, 151667, 151668]
    assert len(tokenizer) == qwen_tokenizer.VOCAB_SIZE == 151669


def test_every_text_in_the_repo_tokenizes_as_tiktoken_does(tokenizer):
    """Real text of many kinds (Markdown docs, code, the test corpus, the bundled knowledge base)."""
    reference = qwen_tokenizer.tiktoken_encoding()
    files = sorted(ROOT.glob("docs/*.md")) + sorted(ROOT.glob("assets/knowledge/*.md")) + \
        sorted(ROOT.glob("rag/**/*.py")) + [ROOT / "README.md", ROOT / "tests/data/corpus.md"]
    total = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        expected = reference.encode(text, allowed_special="all")  # as HF does, "<think>" in text is the token
        assert tokenizer.encode(text, add_special_tokens=False) == expected, path
        total += len(expected)
    assert total > 50_000  # a real sample, not a handful of words
    mixed = "Zürich 火山 🧑🏽‍🚀 e\u0301 'll 'S   \n\n\t x=42.0 <|im_end|>"
    assert tokenizer.encode(mixed, add_special_tokens=False) == reference.encode(mixed, allowed_special="all")
