"""Build Qwen3 checkpoints locally (the hub is out of reach): tiny ones for tests, 0.6B-shaped for benchmarks.

The weights are random, the architecture and tokenizer plumbing are the real ones. The tokenizer is, by
default, a byte-level BPE trained on text shipped in this repo, with Qwen's special tokens and `yes`/`no` as
single tokens; `tokenizer="qwen"` puts Qwen's real one in instead (tests/qwen_tokenizer.py, 151,669 ids), as
a model server needs for the same ids on both sides. `VLLM_TINY` is `TINY` with vLLM's smallest CPU attention
head (32; it rejects 16).
"""
from __future__ import annotations

import json
from pathlib import Path

CORPUS = Path(__file__).parent / "data" / "corpus.md"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Words of the reranker template: training on them gives them whole tokens, as in Qwen's vocabulary.
TEMPLATE_WORDS = ("yes no Judge whether the Document meets the requirements based on the Query and the Instruct "
                  "provided. Note that the answer can only be \"yes\" or \"no\". system user assistant think "
                  "Instruct: Query: Document:\n")

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=4096)
VLLM_TINY = dict(TINY, num_attention_heads=2, num_key_value_heads=1, head_dim=32)
QWEN3_06B = dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128, max_position_embeddings=40960)
QWEN3_VOCAB = 151669


def make_tokenizer(kind: str = "trained", eos_post_processor: bool = False):
    """`trained` (small, this repo's text) or `qwen` (Qwen2/Qwen3's real tokenizer)."""
    if kind == "qwen":
        from tests import qwen_tokenizer

        return qwen_tokenizer.build(eos_post_processor=eos_post_processor)
    if kind == "trained":
        return train_tokenizer(eos_post_processor=eos_post_processor)
    raise ValueError(f"tokenizer {kind!r}: use 'trained' or 'qwen'")


def train_tokenizer(vocab_size: int = 1500, eos_post_processor: bool = False):
    """A byte-level BPE `PreTrainedTokenizerFast` shaped like Qwen's; optionally appends <|endoftext|>
    to every sequence, as Qwen3-Embedding's tokenizer does (its last-token pooling reads that token)."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    lines = CORPUS.read_text(encoding="utf-8").splitlines() + [TEMPLATE_WORDS] * 50
    tok.train_from_iterator(lines, trainer=trainer)
    if eos_post_processor:
        eos_id = tok.token_to_id("<|endoftext|>")
        tok.post_processor = processors.TemplateProcessing(
            single="$A <|endoftext|>", pair="$A <|endoftext|> $B <|endoftext|>",
            special_tokens=[("<|endoftext|>", eos_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"],
                                   model_max_length=32768)
    for word in ("yes", "no"):
        assert len(fast.encode(word, add_special_tokens=False)) == 1, f"{word!r} must be a single token"
    return fast


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
                   tokenizer: str = "trained") -> Path:
    """A Qwen3ForCausalLM reranker folder (model + tokenizer), loadable by `AutoModelForCausalLM`.
    `bf16=True` stores the weights in bf16, as the released Qwen3 checkpoints are."""
    tokenizer = make_tokenizer(tokenizer)
    vocab = QWEN3_VOCAB if sizes is QWEN3_06B else len(tokenizer)
    model = _qwen3(vocab, sizes, seed)
    if bf16:
        model.to(torch_bf16())
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


def build_embedder(path: Path, sizes: dict = TINY, seed: int = 1, bf16: bool = False,
                   tokenizer: str = "trained") -> Path:
    """A sentence-transformers folder: Transformer (Qwen3Model) -> Pooling(lasttoken) -> Normalize,
    with the `query` prompt of Qwen3-Embedding."""
    from transformers import Qwen3Model

    path = Path(path)
    tokenizer = make_tokenizer(tokenizer, eos_post_processor=True)
    tokenizer.padding_side = "left"
    vocab = QWEN3_VOCAB if sizes is QWEN3_06B else len(tokenizer)
    causal = _qwen3(vocab, sizes, seed)
    base = Qwen3Model(causal.config)
    base.load_state_dict(causal.model.state_dict())
    if bf16:
        base.to(torch_bf16())
    base.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
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
