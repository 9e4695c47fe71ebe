"""The fused CPU kernels (rag/models/fused_cpu.cpp, built by rag/models/native.py) compute what transformers'
Qwen3 modules compute, and the models on them give the official code's results.

Tolerance: 1e-5 relative per element against transformers' own modules (fp32; the kernels sum in a different
order and use the compiler's vector exp), and the models' bars of issue 16 end to end: embedding cosine
>= 0.9999 against sentence-transformers, rerank scores within 1e-4 of the fp32 card code (measured ~1e-7 both).
The session's tiny models run on the kernels throughout the suite (tests/conftest.py waits for the build).
"""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from transformers.models.qwen3 import modeling_qwen3

import rag.models.fused_layers as fused_layers
import rag.models.native as native
from rag.models.fused_layers import fusable_model, use_fused_layers

pytestmark = pytest.mark.usefixtures("fused_kernels")


def _close(ours: torch.Tensor, reference: torch.Tensor) -> None:
    """fp32: 1e-5. bf16: the inputs' bf16 values computed in fp32 by transformers' module is the reference; the
    kernels round once at the end, so they stay within half a bf16 step of it (torch's bf16 tolerance)."""
    if ours.dtype == torch.bfloat16:
        torch.testing.assert_close(ours.float(), reference.float(), rtol=1.6e-2, atol=1e-2)
    else:
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 7, 64), (3, 5, 1024), (2, 1, 16)])
def test_rms_norm_matches_qwen3_rmsnorm(shape, dtype):
    torch.manual_seed(0)
    norm = modeling_qwen3.Qwen3RMSNorm(shape[-1], eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    x = (torch.randn(shape) * 3).to(dtype)
    with torch.inference_mode():
        _close(native.ops().rms_norm(x, norm.weight.to(dtype), 1e-6), norm(x.float()))


def test_a_float32_stream_normalised_into_bf16_is_the_float32_norm_rounded():
    """A bf16 model's residual stream stays float32 (rag/models/fused_layers.py): the norm reads the float32 rows
    under bf16 weights and writes bf16, the float32 result rounded once, bit for bit."""
    torch.manual_seed(2)
    ops = native.ops()
    rows, scale = torch.randn(9, 1024).mul(5), torch.randn(1024).to(torch.bfloat16)
    out = ops.rms_norm(rows, scale, 1e-6)
    assert out.dtype == torch.bfloat16
    rounded = ops.rms_norm(rows, scale.float(), 1e-6).to(torch.bfloat16)
    assert torch.equal(out.view(torch.int16), rounded.view(torch.int16))


@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
def test_add_adds_into_the_float32_residual_in_place_exactly(x_dtype):
    """A bf16 model's MLP output joining its float32 stream: residual + x, each sum rounded once as torch rounds
    it, written into the residual's own storage."""
    torch.manual_seed(5)
    residual = torch.randn(3, 5, 1024).mul(4)
    x = torch.randn(3, 5, 1024).to(x_dtype)
    expected, storage = residual + x.float(), residual.data_ptr()
    total = native.ops().add_(residual, x)
    assert total.data_ptr() == residual.data_ptr() == storage and total.dtype == torch.float32
    assert torch.equal(total, expected)


@pytest.mark.parametrize("x_dtype,weight_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                                  (torch.float32, torch.bfloat16)])
def test_add_rms_norm_is_the_float32_sum_and_its_norm(x_dtype, weight_dtype):
    """One pass for a layer's residual add and the norm after it: the float32 sum (exactly residual + x), and
    rms_norm of that sum in the weight's dtype (within one rounding step: the kernels are built with -ffast-math,
    so the compiler may order the two functions' sums of squares differently)."""
    torch.manual_seed(4)
    ops = native.ops()
    residual = torch.randn(2, 7, 1024).mul(4)
    x, weight = torch.randn(2, 7, 1024).to(x_dtype), torch.randn(1024).to(weight_dtype)
    total, normed = ops.add_rms_norm(residual, x, weight, 1e-6)
    assert total.dtype == torch.float32 and normed.dtype == weight_dtype
    assert torch.equal(total, residual + x.float())
    expected = ops.rms_norm(residual + x.float(), weight, 1e-6)
    if weight_dtype == torch.bfloat16:  # adjacent bf16 values of one sign are adjacent integers
        assert (normed.view(torch.int16).int() - expected.view(torch.int16).int()).abs().max() <= 1
    else:
        torch.testing.assert_close(normed, expected, rtol=1e-6, atol=1e-6)



@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,rows,heads,head_dim,cos_batch", [(1, 9, 4, 16, 1), (2, 5, 8, 128, 2),
                                                                   (3, 4, 2, 32, 1)])
def test_norm_rope_matches_q_norm_then_rotary(batch, rows, heads, head_dim, cos_batch, dtype):
    """Per-head RMSNorm + rotary, laid out [batch, heads, rows, d], as Qwen3Attention computes it; rotary tables
    shared by the batch (position ids [1, rows]) are broadcast as transformers broadcasts them."""
    torch.manual_seed(1)
    norm = modeling_qwen3.Qwen3RMSNorm(head_dim, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    states = torch.randn(batch, rows, heads, head_dim).to(dtype)
    angles = torch.rand(cos_batch, rows, head_dim // 2).repeat(1, 1, 2) * 6.3
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    with torch.inference_mode():
        normed = norm(states.float()).transpose(1, 2)
        reference, _ = modeling_qwen3.apply_rotary_pos_emb(normed, normed, cos.float(), sin.float())
        expanded = [t.expand(batch, -1, -1).contiguous() for t in (cos, sin)]
        _close(native.ops().norm_rope(states, norm.weight.to(dtype), *expanded, 1e-6), reference)


@pytest.mark.parametrize("dtype", DTYPES)
def test_norm_rope_reads_rows_further_apart_than_their_heads(dtype):
    """The keys' columns of a merged key/value product: each row's heads contiguous, rows 2 x as far apart.
    Same result as the same values laid out contiguously; a layout with heads apart is refused."""
    torch.manual_seed(2)
    batch, rows, heads, d = 1, 11, 2, 32
    both = torch.randn(batch, rows, 2 * heads * d).to(dtype)
    keys = both[..., :heads * d].view(batch, rows, heads, d)
    weight = torch.randn(d).to(dtype)
    angles = torch.rand(batch, rows, d // 2).repeat(1, 1, 2) * 6.3
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    ops = native.ops()
    assert not keys.is_contiguous()
    assert torch.equal(ops.norm_rope(keys, weight, cos, sin, 1e-6),
                       ops.norm_rope(keys.contiguous(), weight, cos, sin, 1e-6))
    with pytest.raises(RuntimeError, match="heads contiguously"):
        ops.norm_rope(keys.transpose(1, 2).contiguous().transpose(1, 2), weight, cos, sin, 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul_matches_swiglu_in_place(dtype):
    torch.manual_seed(2)
    gate, up = (torch.randn(3, 11, 96) * 4).to(dtype), torch.randn(3, 11, 96).to(dtype)
    reference = torch.nn.functional.silu(gate.float()) * up.float()
    out = native.ops().silu_mul_(gate, up)
    assert out.data_ptr() == gate.data_ptr()
    _close(out, reference)


def test_bf16_results_are_the_fp32_results_rounded_as_torch_rounds():
    """The kernels' own bf16 conversions (integer arithmetic, so that the loops vectorise; c10's round-to-nearest-
    even formula) round as torch's `.to(torch.bfloat16)` does, keep NaN a NaN, and overflow to infinity where torch
    does: the bf16 call equals the fp32 call on the same (bf16) values, rounded by torch, bit for bit (NaN's bits aside:
    torch's vector path writes 0xFFFF, c10 and the kernels 0x7FC0). Rows of 128 and 1024 take the vectorised
    loops; a NaN in a row makes that row NaN, as in transformers' modules."""
    torch.manual_seed(3)
    ops = native.ops()
    x = torch.randn(2, 33, 4, 128).mul(3).to(torch.bfloat16)
    x[0, 5, 1, 7] = float("nan")
    weight = torch.randn(128).to(torch.bfloat16)
    angles = torch.rand(1, 33, 64).repeat(1, 1, 2).expand(2, -1, -1).contiguous() * 6.3
    cos, sin = angles.cos().to(torch.bfloat16), angles.sin().to(torch.bfloat16)
    wide = [t.float() for t in (x, weight, cos, sin)]
    bf16, rounded = ops.norm_rope(x, weight, cos, sin, 1e-6), ops.norm_rope(*wide, 1e-6).to(torch.bfloat16)
    assert torch.equal(bf16.isnan(), rounded.isnan()) and bf16[0, 1, 5].isnan().all() and bf16.isnan().sum() == 128
    assert torch.equal(bf16.nan_to_num().view(torch.int16), rounded.nan_to_num().view(torch.int16))

    rows = torch.randn(9, 1024).mul(5).to(torch.bfloat16)
    scale = torch.randn(1024).to(torch.bfloat16)
    assert torch.equal(ops.rms_norm(rows, scale, 1e-6).view(torch.int16),
                       ops.rms_norm(rows.float(), scale.float(), 1e-6).to(torch.bfloat16).view(torch.int16))

    gate, up = (torch.randn(4096) * 4).to(torch.bfloat16), torch.randn(4096).to(torch.bfloat16)
    gate[:3], up[:3] = torch.tensor([float("nan"), 3e38, 1e38]), torch.tensor([1.0, 3e38, -3e38])
    rounded = ops.silu_mul_(gate.float(), up.float()).to(torch.bfloat16)
    out = ops.silu_mul_(gate, up)
    assert out[0].isnan() and out[1] == float("inf") and out[2] == float("-inf")
    assert torch.equal(out[1:].view(torch.int16), rounded[1:].view(torch.int16))


def _segments_by_sdpa(query, key, value, segments, scale):
    """The reference: torch's SDPA in fp32 on each segment alone (its prefix keys, then its own keys, causal),
    as [1, rows, heads, d]; rows outside every segment zero."""
    past = key.shape[2] - query.shape[2]
    out = torch.zeros(1, query.shape[2], query.shape[1], query.shape[3])
    for start, end, prefix in segments:
        keys = torch.cat([key[:, :, :prefix], key[:, :, past + start:past + end]], dim=2).float()
        values = torch.cat([value[:, :, :prefix], value[:, :, past + start:past + end]], dim=2).float()
        mask = torch.ones(end - start, prefix + end - start, dtype=torch.bool).tril(diagonal=prefix)
        out[:, start:end] = torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end].float(), keys, values, attn_mask=mask, scale=scale, enable_gqa=True).transpose(1, 2)
    return out


SEGMENT_CASES = [  # heads, kv_heads, head_dim, lengths, prefix, past
    (16, 8, 128, [84, 84, 3], 0, 0),  # embedding: texts packed end to end, head_dim of the 0.6B models
    (4, 2, 16, [3, 1, 7, 40], 5, 0),  # tiny test models' heads; a prefix inside this call's own rows
    (16, 8, 128, [107, 66], 60, 60),  # the reranker: tails on a cached head of 60 positions
    (6, 2, 40, [9, 33, 2], 4, 10),  # head_dim not a multiple of the kernel's blocks; 3 query heads per kv head
    (4, 4, 64, [300], 0, 0),  # no grouping; a long segment (many blocks of keys)
    (4, 2, 32, [256, 257, 1], 0, 0),  # exactly one key tile, one key past it, one key
    (16, 8, 128, [700, 40, 1100], 80, 80),  # long tails on a cached head: up to 5 key tiles, online softmax
]


def _segment_inputs(heads, kv_heads, head_dim, lengths, prefix, past, dtype):
    """query, key, value (strided, as transformers' v projection gives it) and the segments of one case."""
    torch.manual_seed(6)
    rows = sum(lengths)
    query = torch.randn(1, heads, rows, head_dim).to(dtype)
    key = torch.randn(1, kv_heads, past + rows, head_dim).to(dtype)
    value = torch.randn(1, past + rows, kv_heads, head_dim).to(dtype).transpose(1, 2)
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    segments = [(start, start + n, prefix if prefix <= past + start else 0) for start, n in zip(starts, lengths)]
    return query, key, value, segments


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads,kv_heads,head_dim,lengths,prefix,past", SEGMENT_CASES)
def test_segment_attention_matches_sdpa_on_each_segment(heads, kv_heads, head_dim, lengths, prefix, past, dtype):
    """Each segment attends to the first `prefix` key positions whole and causally to its own keys, exactly what
    torch's SDPA computes on the segment alone."""
    query, key, value, segments = _segment_inputs(heads, kv_heads, head_dim, lengths, prefix, past, dtype)
    scale = head_dim ** -0.5
    with torch.inference_mode():
        ours = native.ops().segment_attention(query, key, value, torch.tensor(segments), scale)
        _close(ours, _segments_by_sdpa(query, key, value, segments, scale))
        # rows of no segment come back zero
        rest = torch.tensor(segments[1:], dtype=torch.long).reshape(-1, 3)
        partial = native.ops().segment_attention(query, key, value, rest, scale)
        assert not partial[:, :lengths[0]].any()
        _close(partial[:, lengths[0]:], ours[:, lengths[0]:])


_RUN_LIBRARY = """
import sys, torch
torch.ops.load_library(sys.argv[1])
torch.ops.rag_fused.amx_attention(False)  # the vector kernel at 16 lanes, also on a CPU with AMX tiles
cases = torch.load(sys.argv[2])
torch.save([torch.ops.rag_fused.segment_attention(q, k, v, torch.tensor(s), scale) for q, k, v, s, scale in cases],
           sys.argv[3])
"""


def test_segment_attention_at_the_avx512_width_matches_sdpa(tmp_path):
    """The AVX-512 build's register blocks are 16 floats wide (panels of 32 keys or head_dim columns, other
    padding and tail cases than AVX2's 8). Built here with 16-float GCC vectors, which any x86 CPU runs, it
    gives SDPA's results too: the AVX-512 layout is checked on CPUs without AVX-512. (Its own process: two
    builds of the library can't be loaded in one.)"""
    library = tmp_path / "lanes16.so"
    build = subprocess.run(native.build_command(torch, library, defines=["RAG_FUSED_LANES=16"]),
                           capture_output=True, text=True, timeout=native.BUILD_TIMEOUT_S)
    assert build.returncode == 0, build.stderr[-2000:]
    cases = [(*_segment_inputs(*case, dtype), case[2] ** -0.5) for case in SEGMENT_CASES for dtype in DTYPES]
    torch.save(cases, tmp_path / "in.pt")  # strided values stay strided
    run = subprocess.run([sys.executable, "-c", _RUN_LIBRARY, str(library), str(tmp_path / "in.pt"),
                          str(tmp_path / "out.pt")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    for (query, key, value, segments, scale), ours in zip(cases, torch.load(tmp_path / "out.pt")):
        _close(ours, _segments_by_sdpa(query, key, value, segments, scale))


@pytest.mark.parametrize("heads,kv_heads,head_dim,lengths,prefix,past", SEGMENT_CASES)
def test_bf16_attention_on_amx_tiles_and_on_vectors_match_sdpa(heads, kv_heads, head_dim, lengths, prefix, past):
    """On a CPU with AMX tiles (built with them: native.isa_flags), bfloat16 segments run on the tiles; the
    vector kernel stays a switch away. Both give SDPA's results, and each other's within a bfloat16 step of the
    output plus 2^-16 of the largest value (the tiles take the softmax weights as two bfloat16 parts, ~16 bits:
    outputs near zero differ by that much before rounding). Elsewhere both arms are the vector kernel."""
    query, key, value, segments = _segment_inputs(heads, kv_heads, head_dim, lengths, prefix, past, torch.bfloat16)
    ops, scale = native.ops(), head_dim ** -0.5
    assert ops.amx_attention(True) == ("-mamx-bf16" in native.isa_flags(torch))
    try:
        with torch.inference_mode():
            tiles = ops.segment_attention(query, key, value, torch.tensor(segments), scale)
            ops.amx_attention(False)
            vectors = ops.segment_attention(query, key, value, torch.tensor(segments), scale)
    finally:
        ops.amx_attention(True)
    reference = _segments_by_sdpa(query, key, value, segments, scale)
    _close(tiles, reference)
    _close(vectors, reference)
    step = vectors.float().abs() * 2 ** -7  # one bfloat16 step at each output's size (at most)
    assert ((tiles.float() - vectors.float()).abs() <= step + value.float().abs().max() * 2 ** -16).all()


def test_bf16_matmuls_after_the_amx_attention_are_unchanged():
    """The tile attention releases the tile registers it configured: torch's own bfloat16 matmuls (oneDNN, on the
    same threads, also on AMX tiles where the CPU has them) give the same results before and after it."""
    torch.manual_seed(3)
    a, b = torch.randn(300, 1024).bfloat16(), torch.randn(1024, 512).bfloat16()
    before = a @ b
    query, key, value, segments = _segment_inputs(*SEGMENT_CASES[2], torch.bfloat16)
    with torch.inference_mode():
        native.ops().segment_attention(query, key, value, torch.tensor(segments), 128 ** -0.5)
    assert torch.equal(a @ b, before)


def test_kernels_refuse_what_they_do_not_implement():
    ops = native.ops()
    with pytest.raises(RuntimeError, match="contiguous float32 or bfloat16"):
        ops.rms_norm(torch.randn(8, 4).t(), torch.randn(8), 1e-6)
    with pytest.raises(RuntimeError, match="contiguous float32 or bfloat16"):
        ops.rms_norm(torch.randn(4, 8, dtype=torch.float16), torch.randn(8, dtype=torch.float16), 1e-6)
    with pytest.raises(RuntimeError, match="dtype of the input"):
        ops.rms_norm(torch.randn(4, 8, dtype=torch.bfloat16), torch.randn(8), 1e-6)
    with pytest.raises(RuntimeError, match="residual must be float32"):
        ops.add_rms_norm(torch.randn(4, 8).bfloat16(), torch.randn(4, 8), torch.randn(8), 1e-6)
    with pytest.raises(RuntimeError, match="the residual's shape"):
        ops.add_rms_norm(torch.randn(4, 8), torch.randn(3, 8), torch.randn(8), 1e-6)
    with pytest.raises(RuntimeError, match="residual must be float32"):
        ops.add_(torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16())
    with pytest.raises(RuntimeError, match="the residual's shape"):
        ops.add_(torch.randn(4, 8), torch.randn(8, 4))
    with pytest.raises(RuntimeError, match="contiguous float32 or bfloat16"):
        ops.add_(torch.randn(4, 8), torch.randn(8, 4).t())
    with pytest.raises(RuntimeError, match="head_dim"):
        ops.norm_rope(torch.randn(1, 2, 2, 8), torch.randn(6), torch.randn(1, 2, 8), torch.randn(1, 2, 8), 1e-6)
    q, kv = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 6, 8)
    with pytest.raises(RuntimeError, match="one dtype"):
        ops.segment_attention(q, kv.bfloat16(), kv.bfloat16(), torch.tensor([[0, 6, 0]]), 1.0)
    with pytest.raises(RuntimeError, match="multiple of kv_heads"):
        ops.segment_attention(torch.randn(1, 3, 6, 8), kv, kv, torch.tensor([[0, 6, 0]]), 1.0)
    for bad in ([[0, 7, 0]], [[2, 2, 0]], [[0, 3, 0], [2, 6, 0]], [[3, 6, 4]]):  # past the rows, empty, overlapping,
        with pytest.raises(RuntimeError, match="must lie within the rows"):  # a prefix reaching into its own keys
            ops.segment_attention(q, kv, kv, torch.tensor(bad), 1.0)


def test_the_kernels_share_torchs_openmp_runtime():
    """The library is linked against the compiler's libgomp.so.1, which resolves to the one torch already loaded
    (same soname): a second runtime would keep its own pool of threads spinning on the same 2 cores. (Other
    wheels bundle theirs under other names, e.g. scikit-learn's, which sentence-transformers imports.)"""
    torch_lib = native.Path(torch.__file__).parent / "lib"
    runtimes = {line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line}
    assert str(torch_lib / "libgomp.so.1") in runtimes
    assert not [path for path in runtimes if path.startswith(("/usr/", "/lib"))], runtimes


def _qwen3(seed: int = 0, layers: int = 2, attention: str = "sdpa"):
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
                         attn_implementation=attention)
    model = Qwen3Model(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # wider than the ~N(0, 0.02) init, so every part of the layer matters
            p.mul_(8.0 if p.dim() > 1 else 1.0)
    return model


def test_a_fused_model_equals_the_same_model_unfused_padded_batches_included():
    plain = _qwen3()
    fused = copy.deepcopy(plain)
    assert use_fused_layers(fused) == 2 * 7 + 1  # per layer: 4 norms (2 q/k), attention, MLP, the layer; final norm
    ids = torch.randint(0, 500, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding
    with torch.inference_mode():
        _close(fused(input_ids=ids, attention_mask=mask).last_hidden_state,
               plain(input_ids=ids, attention_mask=mask).last_hidden_state)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_fused_model_continues_from_its_cache_as_the_unfused_one(attention):
    """A prompt, then a continuation on its cached keys/values (the reranker's shared head works this way):
    each layer's cache gets its keys once, and eager attention (left to transformers whole) too."""
    from transformers import DynamicCache

    plain = _qwen3(seed=5, attention=attention)
    fused = copy.deepcopy(plain)
    use_fused_layers(fused)
    prompt, rest = torch.randint(0, 500, (1, 9)), torch.randint(0, 500, (1, 4))
    outputs = []
    with torch.inference_mode():
        for model in (fused, plain):
            cache = DynamicCache()
            model(input_ids=prompt, cache=cache, use_cache=True)
            outputs.append((model(input_ids=rest, cache=cache, use_cache=True).last_hidden_state,
                            cache.layers[0].keys.shape))
    _close(outputs[0][0], outputs[1][0])
    assert outputs[0][1] == outputs[1][1] == (1, 2, 13, 16)


def test_a_bf16_model_fused_stays_as_close_to_fp32_as_transformers_bf16():
    """bf16 (the default on CPUs with native bf16): the fused model's error against the fp32 model is no larger
    than transformers' own bf16 path's (the kernels round once per op chain, transformers after every op)."""
    reference = _qwen3(seed=4)
    plain = copy.deepcopy(reference).to(torch.bfloat16)
    fused = copy.deepcopy(plain)
    use_fused_layers(fused)
    ids = torch.randint(0, 500, (2, 16))
    with torch.inference_mode():
        exact = reference(input_ids=ids).last_hidden_state
        ours = fused(input_ids=ids).last_hidden_state.float()
        theirs = plain(input_ids=ids).last_hidden_state.float()
    cosine = torch.nn.functional.cosine_similarity
    assert cosine(ours, exact, dim=-1).min() >= cosine(theirs, exact, dim=-1).min() - 1e-3
    assert cosine(ours, exact, dim=-1).min() >= 0.999  # measured 0.99980 (transformers bf16: 0.99969)


def _op_counts(model, ids) -> dict[str, int]:
    with torch.inference_mode(), torch.profiler.profile() as prof:
        model(input_ids=ids)
    return {e.key: e.count for e in prof.key_averages()}


def test_a_bf16_model_keeps_its_residual_stream_in_float32():
    """On the kernels a bf16 model's residual stream stays float32 between layers: each layer's input norm reads
    it into bf16, its attention output joins it in one pass with the norm after it (`add_rms_norm`), its MLP output
    is added into that float32 sum in place (`add_`). Rounding the stream to bf16 at every add was the largest share of the bf16 error (0.6B
    shape: rerank max |d| 5.0e-3 -> 2.8e-3 against fp32 over 8 questions, docs/benchmarks.md). A hooked norm is
    called as a module, with the same numbers (but for the order of a sum); without the kernels (still building)
    transformers' bf16 path runs."""
    model = _qwen3(seed=7, layers=3).to(torch.bfloat16)
    use_fused_layers(model)
    ids = torch.randint(0, 500, (1, 12))
    streams = []
    for layer in model.layers:
        layer.register_forward_hook(lambda module, args, out: streams.append(out.dtype))
    counts = _op_counts(model, ids)
    assert streams == [torch.float32] * 3
    assert counts["rag_fused::add_rms_norm"] == 3 and counts["rag_fused::add_"] == 3
    with torch.inference_mode():
        fused = model(input_ids=ids).last_hidden_state
        seen = []
        model.layers[1].post_attention_layernorm.register_forward_hook(
            lambda module, args, out: seen.append(args[0].dtype))
        hooked = model(input_ids=ids).last_hidden_state
    assert fused.dtype == torch.bfloat16  # the final norm writes the weights' dtype
    assert seen == [torch.float32]
    _close(hooked, fused)


def test_a_bf16_model_runs_transformers_ops_while_the_kernels_build(monkeypatch):
    model = _qwen3(seed=7, layers=3).to(torch.bfloat16)
    use_fused_layers(model)
    ids = torch.randint(0, 500, (1, 12))
    with torch.inference_mode():
        fused = model(input_ids=ids).last_hidden_state
        monkeypatch.setattr(native, "ops", lambda: None)
        plain = model(input_ids=ids).last_hidden_state
    assert plain.dtype == torch.bfloat16
    assert torch.nn.functional.cosine_similarity(plain.float(), fused.float(), dim=-1).min() >= 0.999


def test_the_residual_adds_ride_in_the_projections_before_them():
    """Each layer's two residual adds happen inside the o_proj and down_proj products (addmm, no pass of their
    own), with the unfused model's results (the fused-vs-unfused tests above); a projection that can't take it (a
    hook here; a widened or int8 one likewise) gets the separate add back."""
    plain = _qwen3(seed=6)
    fused = copy.deepcopy(plain)
    use_fused_layers(fused)
    ids = torch.randint(0, 500, (1, 10))
    before, after = _op_counts(plain, ids), _op_counts(fused, ids)
    assert "aten::addmm" not in before and after["aten::addmm"] == 2 * 2
    # per layer: 2 products became addmm, and k and v are one product (the next test)
    assert after["aten::mm"] == before["aten::mm"] - 2 * 2 - 2
    fused.layers[0].self_attn.o_proj.register_forward_hook(lambda module, args, out: None)
    hooked = _op_counts(fused, ids)
    assert hooked["aten::addmm"] == 2 * 2 - 1 and hooked["aten::add"] == after["aten::add"] + 1
    with torch.inference_mode():
        _close(fused(input_ids=ids).last_hidden_state, plain(input_ids=ids).last_hidden_state)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hooks_on_the_attention_and_the_mlp_see_their_own_outputs(dtype):
    """The residual adds ride inside the projections (fp32) or join the float32 stream (bf16), but a forward hook
    on the attention or MLP module sees that module's own output, as on the unfused fp32 model, not output +
    residual (which would be off by the whole stream); the model's results stay the same."""
    plain = _qwen3(seed=9)
    fused = copy.deepcopy(plain).to(dtype)
    use_fused_layers(fused)
    ids = torch.randint(0, 500, (1, 12))
    seen = {}
    for name, model in (("plain", plain), ("fused", fused)):
        layer = model.layers[1]
        layer.self_attn.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__((name, "attn"), out[0]))
        layer.mlp.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__((name, "mlp"), out))
    with torch.inference_mode():
        results = {name: model(input_ids=ids).last_hidden_state.float() for name, model in (("plain", plain),
                                                                                             ("fused", fused))}
    relative = lambda a, b: float((a.float() - b).norm() / b.norm())  # noqa: E731
    bound = 1e-5 if dtype == torch.float32 else 2e-2  # bf16: a few roundings; output + residual would be ~1
    for module in ("attn", "mlp"):
        assert relative(seen["fused", module], seen["plain", module]) < bound, module
    assert relative(results["fused"], results["plain"]) < bound


def test_the_last_layer_computes_only_the_rows_a_packed_call_reads(tiny_embedder, tiny_reranker, monkeypatch):
    """Given `rag_outputs`, a fused model's last layer runs its queries, attention, output projection and MLP on
    those rows only (earlier layers need every row: they make the next layer's keys), and returns the states the
    whole last layer gives at those rows. Embedding texts and reranking tails on a cached head alike; while the
    kernels are still building too (transformers' ops, then those rows picked)."""
    from rag.models.packed import last_token_states
    from rag.models.prefix_cache import extend

    backbone, decoder = tiny_embedder.model[0].auto_model, tiny_reranker.model.model
    texts = tiny_embedder._token_ids(["one", "a few more words here", "lava " * 40])
    head = tiny_reranker.tokenizer.encode("a shared head", add_special_tokens=False)
    tails = [tiny_reranker.tokenizer.encode(t, add_special_tokens=False) for t in ("yes", "two words", "x " * 20)]
    mlp_rows = []
    hook = backbone.layers[-1].mlp.register_forward_hook(lambda m, args, out: mlp_rows.append(args[0].shape[1]))
    with torch.inference_mode():
        only = last_token_states(backbone, texts), extend(decoder, None, head, tails).last_hidden
        assert mlp_rows == [len(texts)]
        with monkeypatch.context() as building:
            building.setattr(native, "ops", lambda: None)
            unfused = last_token_states(backbone, texts), extend(decoder, None, head, tails).last_hidden
        monkeypatch.setattr(fused_layers, "_last_layer", lambda module: False)
        every = last_token_states(backbone, texts), extend(decoder, None, head, tails).last_hidden
    hook.remove()
    assert mlp_rows[1:] == [len(texts), sum(map(len, texts))]
    for ours, without_kernels, whole in zip(only, unfused, every):
        torch.testing.assert_close(ours, whole, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(without_kernels, whole, rtol=1e-4, atol=1e-5)


def test_keys_and_values_are_one_product_while_their_weights_are_one_tensor():
    """k_proj and v_proj keep views of one merged weight (no second copy), so each layer computes both in one
    product, with the unfused model's results. A weight replaced afterwards (a load, a dtype change) leaves the
    merged tensor stale: the layer then runs the two projections again, still exact."""
    plain = _qwen3(seed=7)
    fused = copy.deepcopy(plain)
    use_fused_layers(fused)
    attention = fused.layers[0].self_attn
    merged = attention._rag_kv
    assert attention.k_proj.weight.data_ptr() == merged.data_ptr()
    assert attention.v_proj.weight.data_ptr() == merged[attention.k_proj.out_features:].data_ptr()
    assert torch.equal(merged, torch.cat([plain.layers[0].self_attn.k_proj.weight,
                                          plain.layers[0].self_attn.v_proj.weight]))
    ids = torch.randint(0, 500, (1, 10))
    with torch.inference_mode():
        _close(fused(input_ids=ids).last_hidden_state, plain(input_ids=ids).last_hidden_state)
    merged_mm = _op_counts(fused, ids)["aten::mm"]
    with torch.no_grad():
        attention.v_proj.weight = torch.nn.Parameter(attention.v_proj.weight * 2)
        plain.layers[0].self_attn.v_proj.weight.mul_(2)
    assert _op_counts(fused, ids)["aten::mm"] == merged_mm + 1
    with torch.inference_mode():
        _close(fused(input_ids=ids).last_hidden_state, plain(input_ids=ids).last_hidden_state)


def test_other_calls_run_the_modules_own_forward():
    """fp16 activations and autograd are not the kernels' job: those calls give exactly the unfused results."""
    plain = _qwen3(seed=3)
    fused = copy.deepcopy(plain)
    use_fused_layers(fused)
    ids = torch.randint(0, 500, (1, 10))
    with torch.no_grad():
        assert torch.equal(fused.to(torch.float16)(input_ids=ids).last_hidden_state,
                           plain.to(torch.float16)(input_ids=ids).last_hidden_state)
    fused.float(), plain.float()
    with torch.enable_grad():
        assert torch.equal(fused(input_ids=ids).last_hidden_state, plain(input_ids=ids).last_hidden_state)


def test_only_qwen3_models_are_switched(minilm_path):
    from sentence_transformers import SentenceTransformer

    minilm = SentenceTransformer(str(minilm_path), device="cpu")[0].auto_model
    assert not fusable_model(minilm) and use_fused_layers(minilm) == 0
    assert not any(getattr(m, "_rag_fused", False) for m in minilm.modules())


def test_the_session_models_run_on_the_kernels(tiny_embedder, tiny_reranker):
    """The app's models (and so every model test of the suite) compute with the kernels."""
    for model in (tiny_embedder.model[0].auto_model, tiny_reranker.model):
        assert any(getattr(m, "_rag_fused", False) for m in model.modules())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        tiny_embedder.embed_documents(["Milvus is a vector database.", "Bread rises with yeast."])
        tiny_reranker.score("what is milvus", ["Milvus is a vector database.", "Bread rises."])
    names = {event.key for event in prof.key_averages()}
    assert {"rag_fused::rms_norm", "rag_fused::norm_rope", "rag_fused::silu_mul_",
            "rag_fused::segment_attention"} <= names


def test_fused_false_keeps_transformers_ops(tiny_embedder_path):
    from rag.models.embedder import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(str(tiny_embedder_path), device="cpu", dtype="fp32", fused=False)
    assert not any(getattr(m, "_rag_fused", False) for m in embedder.model.modules())


def test_a_build_that_fails_leaves_a_clear_status_and_no_kernels(tmp_path, monkeypatch):
    """No compiler, or one that fails: the status says why (the log says what to do) and nothing is loaded; the
    models keep running transformers' ops (test_other_calls... covers that path)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for compiler, reason in (("/bin/false", "C++ build failed"), (str(tmp_path / "no-such-c++"), "No such file")):
        monkeypatch.setenv("CXX", compiler)
        kernels = native.Kernels()
        status = kernels.wait(120)
        assert status.state == "failed" and reason in status.detail
        assert kernels.ops() is None
        assert not list((tmp_path / "rag" / "kernels").glob("*.so*"))  # nothing half-written left behind


def test_a_build_removes_what_killed_builds_left_and_nothing_in_progress(tmp_path, monkeypatch):
    """An app process stopped mid-build leaves its temporary file; the next build deletes those older than a
    build may take, and leaves a newer one (a build still running elsewhere) alone."""
    import os
    import time

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CXX", "/bin/false")
    folder = tmp_path / "rag" / "kernels"
    folder.mkdir(parents=True)
    stale = folder / f"{native.NAMESPACE}-0123old.so.partial"
    running = folder / f"{native.NAMESPACE}-4567new.so.partial"
    stale.write_bytes(b"x"), running.write_bytes(b"y")
    old = time.time() - native.BUILD_TIMEOUT_S - 60
    os.utime(stale, (old, old))
    assert native.Kernels().wait(120).state == "failed"
    assert not stale.exists() and running.exists()


def test_loads_keep_their_library_and_a_build_deletes_the_ones_unused_for_a_month(tmp_path, monkeypatch):
    """Every fresh torch install (each CI run's new virtualenv) keys a new library: a load marks its library as
    used (mtime) and clears what builds of stopped processes left, and a build deletes the libraries nobody loaded
    for UNUSED_DAYS, leaving recent ones alone."""
    import os
    import stat
    import time

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    compiler = tmp_path / "fake-c++"  # writes the file named after -o, as a compiler would
    compiler.write_text('#!/bin/sh\nwhile [ "$1" != "-o" ]; do shift; done\necho built > "$2"\n')
    compiler.chmod(compiler.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CXX", str(compiler))
    folder = tmp_path / "rag" / "kernels"
    folder.mkdir(parents=True)
    unused, recent = folder / f"{native.NAMESPACE}-00old.so", folder / f"{native.NAMESPACE}-11new.so"
    unused.write_bytes(b"x"), recent.write_bytes(b"y")
    month_ago = time.time() - native.UNUSED_DAYS * 86400 - 60
    os.utime(unused, (month_ago, month_ago))
    day_short = month_ago + 86400  # loaded a day before it would count as unused
    os.utime(recent, (day_short, day_short))
    library, built = native._library(torch)
    assert built and library.read_text() == "built\n"
    assert not unused.exists() and recent.exists()

    os.utime(library, (month_ago, month_ago))
    stale = folder / f"{native.NAMESPACE}-22killed.so.partial"  # left by a process stopped mid-build
    stale.write_bytes(b"z")
    os.utime(stale, (month_ago, month_ago))
    assert native._library(torch) == (library, False)  # a cache hit: loaded, so used now
    assert library.stat().st_mtime > time.time() - 60
    assert not stale.exists()  # a cache hit clears those too: the next build may be months away


def test_the_build_is_cached_by_source_flags_and_torch(fused_kernels):
    assert native.status().state == "ready"
    library, built = native._library(torch)
    assert not built and library.is_file() and library.parent == native.cache_dir()
    assert library.name.startswith(native.NAMESPACE)
