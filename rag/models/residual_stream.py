"""A bf16 or fp16 Qwen3 model's residual stream kept in float32, in torch ops: for GPUs (and MPS).

transformers rounds the stream to the model's dtype after every residual add, and over 28 layers that rounding
was the largest share of the bf16 error (docs/benchmarks.md, "bf16 with a float32 residual stream"). Here the
decoder layers keep the stream in float32: each norm reads it in float32 and hands the next product its input in
the model's dtype, the attention and the MLP run in that dtype as before, and their outputs are added in float32.
The model's final norm then reads the float32 stream and returns float32 states. On a CPU the fused kernels do the
same in fewer passes (rag/models/fused_layers.py); this is the path for devices they do not cover.
"""
from __future__ import annotations


def _stream_forward(module, original):
    """transformers' Qwen3DecoderLayer forward (x + attention(norm(x)), then + mlp(norm(.))) on a float32 x, for
    inference in bf16/fp16; training and float32 models run the original."""
    import torch

    def forward(hidden_states, attention_mask=None, position_ids=None, cache=None, use_cache=False,
                position_embeddings=None, **kwargs):
        if cache is None and "past_key_values" in kwargs:  # transformers' older name for the cache
            cache = kwargs.pop("past_key_values")
        dtype = module.input_layernorm.weight.dtype
        if torch.is_grad_enabled() or dtype not in (torch.bfloat16, torch.float16):
            return original(hidden_states, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                            use_cache=use_cache, position_embeddings=position_embeddings, **kwargs)
        stream = hidden_states.float()
        attended, _ = module.self_attn(hidden_states=module.input_layernorm(stream).to(dtype),
                                       attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                                       use_cache=use_cache, position_embeddings=position_embeddings, **kwargs)
        stream = stream + attended
        return stream + module.mlp(module.post_attention_layernorm(stream).to(dtype))
    return forward


def keep_residual_stream_in_float32(model) -> int:
    """Give the Qwen3 decoder layers of `model` the float32-stream forward, in place (once per layer); returns how
    many layers were switched. Other architectures are left as they are."""
    switched = 0
    for module in model.modules():
        if type(module).__name__ == "Qwen3DecoderLayer" and not getattr(module, "_rag_stream", False):
            module.forward = _stream_forward(module, module.forward)
            module._rag_stream = True
            switched += 1
    return switched
