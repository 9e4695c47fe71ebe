"""Build Qwen3 checkpoints locally (the hub is out of reach): tiny ones for tests, 0.6B-shaped for benchmarks.

The weights are random; the architecture and the tokenizer are the real ones: Qwen's own vocabulary
(tests/qwen_tokenizer.py), so template tokenisation, the `yes`/`no` ids, chunk sizes and token counts are the
released models'.
`VLLM_TINY` is `TINY` with vLLM's smallest CPU attention head (32; it rejects 16).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests import qwen_tokenizer

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=4096)
VLLM_TINY = dict(TINY, num_attention_heads=2, num_key_value_heads=1, head_dim=32)
QWEN3_06B = dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128, max_position_embeddings=40960)
QWEN3_VOCAB = qwen_tokenizer.VOCAB_SIZE  # 151669 embedding rows, as in the releases (151669 x 64 fp32: 39 MB)
TOKENIZER_FILES = "qwen-tokenizer"


def tokenizer_folder(cache_dir: Path | None, embedder: bool) -> Path:
    """A folder holding Qwen's tokenizer as the model kind ships it: the embedder's appends <|endoftext|> and
    pads on the left. Rebuilding the BPE merges takes ~20 s, so with `cache_dir` (a test session's temp dir)
    each kind is built once and copied from there afterwards."""
    import tempfile

    root = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="qwen-tokenizer-"))
    folder = root / TOKENIZER_FILES / ("embedder" if embedder else "reranker")
    if not (folder / "tokenizer.json").is_file():
        tokenizer = qwen_tokenizer.build(eos_post_processor=embedder)
        if embedder:
            tokenizer.padding_side = "left"
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        tokenizer.save_pretrained(partial)
        partial.rename(folder)  # complete or absent: an interrupted build is never read back
    return folder


def copy_tokenizer(path: Path, cache_dir: Path | None, embedder: bool) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for file in tokenizer_folder(cache_dir, embedder).iterdir():
        shutil.copy(file, path / file.name)


def torch_bf16():
    import torch

    return torch.bfloat16


def _qwen3(vocab_size: int, sizes: dict, seed: int, dtype="float32"):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=vocab_size, tie_word_embeddings=True, rope_theta=1_000_000.0,
                         rms_norm_eps=1e-6, torch_dtype=dtype, **sizes)
    model = Qwen3ForCausalLM(config).eval()
    if sizes in (TINY, VLLM_TINY):  # random init is ~N(0, 0.02): widen it so scores spread over (0, 1) in tests
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(8.0 if p.dim() > 1 else 1.0)
    return model


def build_reranker(path: Path, sizes: dict = TINY, seed: int = 0, bf16: bool = False,
                   tokenizer_cache: Path | None = None) -> Path:
    """A Qwen3ForCausalLM reranker folder (model + tokenizer), loadable by `AutoModelForCausalLM`.
    `bf16=True` stores the weights in bf16, as the released Qwen3 checkpoints are; `tokenizer_cache`: see
    `tokenizer_folder`."""
    path = Path(path)
    model = _qwen3(QWEN3_VOCAB, sizes, seed)
    if bf16:
        model.to(torch_bf16())
    model.save_pretrained(path)
    copy_tokenizer(path, tokenizer_cache, embedder=False)
    return path


def build_embedder(path: Path, sizes: dict = TINY, seed: int = 1, bf16: bool = False,
                   tokenizer_cache: Path | None = None) -> Path:
    """A sentence-transformers folder: Transformer (Qwen3Model) -> Pooling(lasttoken) -> Normalize,
    with the `query` prompt of Qwen3-Embedding."""
    from transformers import Qwen3Model

    path = Path(path)
    causal = _qwen3(QWEN3_VOCAB, sizes, seed)
    base = Qwen3Model(causal.config)
    base.load_state_dict(causal.model.state_dict())
    if bf16:
        base.to(torch_bf16())
    base.eval().save_pretrained(path)
    copy_tokenizer(path, tokenizer_cache, embedder=True)
    hidden = sizes["hidden_size"]
    (path / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden, "pooling_mode_lasttoken": True, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
        "include_prompt": True}))
    (path / "2_Normalize").mkdir(exist_ok=True)
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8192,
                                                                "do_lower_case": False}))
    (path / "config_sentence_transformers.json").write_text(json.dumps({
        "prompts": {"query": "Instruct: Given a web search query, retrieve relevant passages that answer "
                             "the query\nQuery:", "document": ""},
        "default_prompt_name": None, "similarity_fn_name": "cosine"}))
    return path
