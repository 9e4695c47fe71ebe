"""Qwen3 decoder layers on the fused CPU kernels (rag/models/fused_cpu.cpp): RMSNorm, q/k norm + rotary, SwiGLU,
and the attention of packed segments (called from rag/models/packed.py for the modules switched here).

On a CPU, ~10% of a Qwen3 forward pass is element-wise work that transformers runs as chains of small torch
ops (docs/benchmarks.md): every op allocates and streams a fresh activation, and the rotary embedding runs on a
transposed, strided view (measured 9-30 ms per layer for the 16 query heads of 1,174 packed tokens, against
~2 ms fused). `use_fused_layers` swaps the forward of a model's norm, attention and MLP modules, in place and per
instance (another copy of the same model class is untouched), for one that calls the fused kernels when they
are loaded and the call is fp32 or bf16 inference on a CPU (bf16: the arithmetic in fp32, rounded once, where
transformers rounds after each op). Any other call (fp16, a GPU, autograd, the kernels still building or
unavailable) runs the module's own forward. The modules are still called as modules, so hooks and
the attention implementation (rag/models/packed.py) stay as they are. The decoder layers are switched too, to
hand each residual to the projection before it, which adds it inside its matmul (`_plus_residual`), and to run
the model's last layer on the rows a packed call reads (`rag_outputs`: each text's last token) after every
row's keys and values.

A bf16 model keeps its residual stream in float32 between and inside the layers: the products and the attention
still run in bf16, each norm reads the float32 stream and writes the bf16 input of the next product, the attention
output joins the stream in one pass with the norm after it (`add_rms_norm`) and the MLP output is added into that
sum in place (`add_`).
transformers rounds the stream to bf16 after every add, and over 28 layers that was the largest share of the bf16
error: on the 0.6B shape the rerank scores moved 5.0e-3 -> 2.8e-3 at most from fp32's (8 questions, same top-3
4/8 -> 7/8) and the embeddings' 1 - cosine 8.4e-5 -> 3.4e-5, for 1-3% more time on an AMX CPU (docs/benchmarks.md).
"""
from __future__ import annotations

import logging

import rag.models.native as native
from rag.models.segments import row_attention

log = logging.getLogger(__name__)


def _fusable(kernels, x, *weights) -> bool:
    """Inference on a CPU in fp32 or bf16, the kernels loaded, and every weight in the activations' dtype."""
    import torch

    return (kernels is not None and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)
            and all(w.dtype == x.dtype for w in weights) and not torch.is_grad_enabled())


def attention_kernel(module, query, key, value):
    """The fused attention of packed segments (`segment_attention`) when it applies to this call: the module was
    switched by `use_fused_layers`, one packed row (batch 1), CPU fp32/bf16 inference. None otherwise."""
    kernels = native.ops()
    if not getattr(module, "_rag_fused", False) or query.shape[0] != 1 \
            or not _fusable(kernels, query, key, value):
        return None
    return kernels.segment_attention


def _norm_forward(module, original):
    def forward(hidden_states):
        kernels = native.ops()
        if not (_fusable(kernels, hidden_states, module.weight) or _normalises_the_stream(kernels, hidden_states,
                                                                                           module.weight)):
            return original(hidden_states)
        return kernels.rms_norm(hidden_states.contiguous(), module.weight, module.variance_epsilon)
    return forward


def _normalises_the_stream(kernels, x, weight) -> bool:
    """A bf16 model's norm on its float32 residual stream (`_decoder_forward`): the kernel reads the float32 rows
    and writes the bf16 input of the next product."""
    import torch

    return weight.dtype == torch.bfloat16 and _fusable(kernels, x) and x.dtype == torch.float32


def _plus_residual(linear, x, residual):
    """linear(x) + residual, the sum taken inside the matmul (addmm: the GEMM adds the residual as it writes its
    output, no pass of its own) where `linear` is a plain nn.Linear in x's dtype; otherwise the two steps (a
    float32 residual under a bf16 product: the bf16 model's stream, see above). The residual adds were ~3% of a
    bf16 pass on an AMX CPU, memory-bound (docs/benchmarks.md)."""
    import torch

    if residual is None:
        return linear(x)
    if (_plain_linear(linear) and not _hooked(linear)
            and linear.weight.dtype == x.dtype == residual.dtype and not torch.is_grad_enabled()):
        flat = torch.addmm(residual.reshape(-1, residual.shape[-1]), x.reshape(-1, x.shape[-1]), linear.weight.t())
        return flat.view(residual.shape)
    return _added(linear(x), residual)


def _plain_linear(linear) -> bool:
    """A bias-free torch.nn.Linear computing in its weight's dtype: not widened (rag/models/devices.py gives those a
    forward of their own), not int8, not a subclass. Its product can be taken here directly."""
    import torch

    return type(linear) is torch.nn.Linear and linear.bias is None and "forward" not in vars(linear)


def _hooked(module) -> bool:
    """Hooks expect the module to be called: a product taken here directly would skip them."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _added(out, residual):
    """out + residual as a pass of its own (the unfused layer's add), or out when there is none."""
    return out if residual is None else out + residual


def _mlp_forward(module, original):
    def forward(x, rag_residual=None):  # rag_residual: added to the output (the decoder layer's, see below)
        kernels = native.ops()
        if not _fusable(kernels, x):
            return _added(original(x), rag_residual)
        return _plus_residual(module.down_proj, kernels.silu_mul_(module.gate_proj(x), module.up_proj(x)),
                              rag_residual)
    return forward


def _attention_forward(module, original):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def forward(hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        if cache is None and "past_key_values" in kwargs:  # transformers' older name for the cache
            cache = kwargs.pop("past_key_values")
        residual = kwargs.pop("rag_residual", None)  # added to the output (the decoder layer's, see below)
        outputs = kwargs.pop("rag_outputs", None)  # the only rows whose outputs are wanted (the decoder's, below)
        kernels = native.ops()
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(module.config._attn_implementation, None)
        if not _fusable(kernels, hidden_states, module.q_norm.weight, module.k_norm.weight) \
                or position_embeddings is None or attention is None:  # None: eager attention, kept whole
            out, weights = original(hidden_states, position_embeddings=position_embeddings,
                                    attention_mask=attention_mask, cache=cache, **kwargs)
            return _added(out if outputs is None else out[:, outputs], residual), weights
        batch, rows = hidden_states.shape[:2]
        head_dim = module.head_dim
        cos, sin = (t.to(hidden_states.dtype).expand(batch, -1, -1).contiguous() for t in position_embeddings)

        def heads(states, norm, cos=cos, sin=sin):  # [batch, n, heads * d] -> normed, rotated [batch, heads, n, d]
            states = states.view(batch, states.shape[1], -1, head_dim)
            return kernels.norm_rope(states, norm.weight, cos, sin, norm.variance_epsilon)

        if outputs is None:
            query = heads(module.q_proj(hidden_states), module.q_norm)
        else:  # queries of the wanted rows only; every row's keys and values, which they attend to
            query = heads(module.q_proj(hidden_states[:, outputs]), module.q_norm,
                          cos[:, outputs].contiguous(), sin[:, outputs].contiguous())
        keys, values = _keys_and_values(module, hidden_states)
        key = heads(keys, module.k_norm)
        value = values.view(batch, rows, -1, head_dim).transpose(1, 2)
        if cache is not None:
            key, value = cache.update(key, value, module.layer_idx, kwargs=kwargs)
        if outputs is None:
            output, weights = attention(module, query, key, value, attention_mask, dropout=0.0,
                                        scaling=module.scaling, sliding_window=getattr(module, "sliding_window", None),
                                        **kwargs)
        else:
            output, weights = row_attention(query, key, value, key.shape[2] - rows, outputs,
                                            kwargs["rag_segments"], module.scaling), None
        return _plus_residual(module.o_proj, output.reshape(batch, query.shape[2], -1).contiguous(),
                              residual), weights
    return forward


def _keys_and_values(module, hidden_states):
    """k_proj(x), v_proj(x): one product of their merged weight (`_merge_keys_and_values`) while it still holds
    both, else two. Views of one [rows, 2 * kv width] output; the kernels read their rows' strides."""
    import torch

    merged, k, v = getattr(module, "_rag_kv", None), module.k_proj, module.v_proj
    if (merged is None or merged.dtype != hidden_states.dtype or k.weight.data_ptr() != merged.data_ptr()
            or v.weight.data_ptr() != merged[k.out_features:].data_ptr() or _hooked(k) or _hooked(v)):
        return k(hidden_states), v(hidden_states)
    both = torch.mm(hidden_states.reshape(-1, hidden_states.shape[-1]), merged.t())
    both = both.view(*hidden_states.shape[:-1], merged.shape[0])
    return both[..., :k.out_features], both[..., k.out_features:]


def _merge_keys_and_values(module) -> bool:
    """Put the k_proj and v_proj weights of an attention module end to end in one tensor, the two Linears keeping
    views of it (no extra memory), where both are plain bias-free nn.Linears of one dtype. oneDNN's bf16 product of
    1,024 -> 1,024 ran at half its rate for 968-1,440 rows on an AMX CPU (a rerank pass is ~1,000 rows), where
    1,024 -> 2,048 has no such dip (docs/benchmarks.md)."""
    import torch

    k, v = module.k_proj, module.v_proj
    if not (_plain_linear(k) and _plain_linear(v)) \
            or k.weight.dtype != v.weight.dtype or k.weight.device != v.weight.device:
        return False
    with torch.no_grad():
        merged = torch.cat([k.weight, v.weight])
        k.weight.data, v.weight.data = merged[:k.out_features], merged[k.out_features:]
    module._rag_kv = merged
    return True


def _decoder_forward(module, original):
    """transformers' Qwen3DecoderLayer (x + attention(norm(x)), then + mlp(norm(.))) with each residual added
    inside the product before it (`_plus_residual`; after the module, where a hook watches its output), when its
    attention and MLP modules are switched too; in a bf16 model the stream x turns float32 here, the attention
    output joins it in the norm's pass and the MLP output is added into that sum in place. In the
    model's last layer, a packed call's `rag_outputs` (row indices) limit the queries, attention, o_proj and MLP
    to those rows, and the layer returns them alone (rag/models/segments.py `wanted_rows` reads either form).
    Training (autograd: gradient checkpointing lives in the original) and anything else runs the original."""
    import torch

    def forward(hidden_states, attention_mask=None, position_ids=None, cache=None, use_cache=False,
                position_embeddings=None, **kwargs):
        if cache is None and "past_key_values" in kwargs:  # transformers' older name for the cache
            cache = kwargs.pop("past_key_values")
        outputs = kwargs.pop("rag_outputs", None)
        if torch.is_grad_enabled() or not (getattr(module.self_attn, "_rag_fused", False)
                                           and getattr(module.mlp, "_rag_fused", False)):
            return original(hidden_states, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                            use_cache=use_cache, position_embeddings=position_embeddings, **kwargs)
        if not (outputs is not None and kwargs.get("rag_segments") is not None and _last_layer(module)):
            outputs = None  # an earlier layer's every row makes keys and values of the next one
        kernels = native.ops()
        if hidden_states.dtype == torch.bfloat16 and _fusable(kernels, hidden_states):
            hidden_states = hidden_states.float()  # the residual stream stays float32 from here (see above)
        residual = hidden_states if outputs is None else hidden_states[:, outputs]
        norm = module.post_attention_layernorm
        joined = _normalises_the_stream(kernels, hidden_states, norm.weight) and not _hooked(norm)
        # a hooked attention or MLP returns its own output, as in transformers: its residual is added after it
        handed = not joined and not _hooked(module.self_attn)
        attended, _ = module.self_attn(hidden_states=module.input_layernorm(hidden_states),
                                       attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                                       use_cache=use_cache, position_embeddings=position_embeddings,
                                       rag_residual=residual if handed else None, rag_outputs=outputs, **kwargs)
        if not joined:
            attended = attended if handed else _added(attended, residual)
            if _hooked(module.mlp):
                return _added(module.mlp(norm(attended)), attended)
            return module.mlp(norm(attended), rag_residual=attended)
        # the add and the norm after it in one pass; then the MLP's bf16 output added into that fresh float32 sum
        attended, normed = kernels.add_rms_norm(residual.contiguous(), attended.contiguous(), norm.weight,
                                                norm.variance_epsilon)
        return kernels.add_(attended, module.mlp(normed).contiguous())
    return forward


def _last_layer(module) -> bool:
    """The model's last decoder layer: its rows' states go nowhere but the model's output."""
    attention = module.self_attn
    return attention.layer_idx == attention.config.num_hidden_layers - 1


def fusable_model(model) -> bool:
    """A Qwen3 decoder (Qwen3-Embedding, Qwen3-Reranker) with the SwiGLU MLP the kernels implement."""
    config = getattr(model, "config", None)
    return (getattr(config, "model_type", None) == "qwen3" and getattr(config, "hidden_act", None) == "silu"
            and getattr(config, "head_dim", 0) % 2 == 0)


def use_fused_layers(model) -> int:
    """Give the Qwen3 norm, attention, MLP and decoder-layer modules of `model` the fused forward, in place (once
    per module), and start building the kernels in the background; returns how many modules were switched."""
    if not fusable_model(model):
        return 0
    swaps = {"Qwen3RMSNorm": _norm_forward, "Qwen3Attention": _attention_forward, "Qwen3MLP": _mlp_forward,
             "Qwen3DecoderLayer": _decoder_forward}
    switched = 0
    for module in model.modules():
        make = swaps.get(type(module).__name__)
        if make is not None and not getattr(module, "_rag_fused", False):
            if make is _attention_forward:
                _merge_keys_and_values(module)
            module.forward = make(module, module.forward)
            module._rag_fused = True
            switched += 1
    if switched:
        native.start()
    return switched
