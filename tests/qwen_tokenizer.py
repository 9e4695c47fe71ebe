"""Qwen2/Qwen3's real tokenizer, rebuilt offline from the BPE ranks the `dashscope` wheel ships
(`dashscope/resources/qwen.tiktoken`: 151,643 base64 tokens with their ranks; the hub is out of reach here).

tiktoken files hold ranks, not merges: each merge is recovered by replaying BPE on a token's bytes with only
lower-ranked tokens (two parts remain: the merge that made it), and merges are ordered by the rank they make.
The pre-tokenizer is Qwen's regex, then byte-level; specials follow from id 151643 as in the released
tokenizers, so `yes` is 9693 and `no` 2152 as in Qwen3-Reranker. `tests/test_qwen_tokenizer.py` checks it
against tiktoken itself.
"""
from __future__ import annotations

import base64
import functools
import importlib.util
from pathlib import Path

PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
           r"|\s+(?!\S)|\s+")
FIRST_SPECIAL_ID = 151643
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
            "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
            "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
            "</tool_response>", "<think>", "</think>"]  # ids 151643..151668
VOCAB_SIZE = FIRST_SPECIAL_ID + len(SPECIALS)  # 151669, the models' embedding rows


def ranks_file() -> Path:
    """The vocabulary file inside the installed dashscope wheel (read as data; dashscope is never imported)."""
    spec = importlib.util.find_spec("dashscope")
    if spec is None or spec.origin is None:
        raise RuntimeError("the Qwen vocabulary comes from the dashscope wheel: pip install -r requirements-dev.txt")
    return Path(spec.origin).parent / "resources" / "qwen.tiktoken"


@functools.lru_cache(maxsize=1)
def ranks() -> dict[bytes, int]:
    table = {}
    for line in ranks_file().read_text(encoding="ascii").splitlines():
        token, rank = line.split()
        table[base64.b64decode(token)] = int(rank)
    assert len(table) == FIRST_SPECIAL_ID, f"expected {FIRST_SPECIAL_ID} ranks, found {len(table)}"
    return table


def _byte_symbols() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as a printable character (what `tokenizers` ByteLevel uses)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return symbols


def _replay(table: dict[bytes, int], token: bytes, below: int) -> list[bytes]:
    """BPE on `token` using only tokens ranked below `below`: the two parts whose merge made the token."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best, best_rank = -1, below
        for i in range(len(parts) - 1):
            rank = table.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best < 0:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts


@functools.lru_cache(maxsize=1)
def vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    table, symbols = ranks(), _byte_symbols()

    def text(token: bytes) -> str:
        return "".join(symbols[b] for b in token)

    vocab = {text(token): rank for token, rank in table.items()}
    merges = []
    for token, rank in sorted(table.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        parts = _replay(table, token, rank)
        assert len(parts) == 2, f"token {token!r} (rank {rank}) is not one merge of lower-ranked tokens"
        merges.append((text(parts[0]), text(parts[1])))
    return vocab, merges


def build(eos_post_processor: bool = False):
    """Qwen's tokenizer as a `PreTrainedTokenizerFast`; with `eos_post_processor`, every sequence gets
    <|endoftext|> appended, as Qwen3-Embedding's tokenizer does (its last-token pooling reads that token)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast

    vocab, merges = vocab_and_merges()
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=s.startswith("<|"), normalized=False) for s in SPECIALS])
    assert tok.token_to_id(SPECIALS[0]) == FIRST_SPECIAL_ID and tok.token_to_id("</think>") == VOCAB_SIZE - 1
    if eos_post_processor:
        tok.post_processor = processors.TemplateProcessing(
            single="$A <|endoftext|>", pair="$A <|endoftext|> $B <|endoftext|>",
            special_tokens=[("<|endoftext|>", FIRST_SPECIAL_ID)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"], model_max_length=32768)


def tiktoken_encoding():
    """The reference: tiktoken over the same ranks and regex (what Qwen's own tiktoken-based tokenizer does)."""
    import tiktoken

    specials = {s: FIRST_SPECIAL_ID + i for i, s in enumerate(SPECIALS)}
    return tiktoken.Encoding("qwen", pat_str=PATTERN, mergeable_ranks=ranks(), special_tokens=specials)
