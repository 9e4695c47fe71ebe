"""A bf16 Qwen3 model's residual stream kept in float32 in torch ops (rag/models/residual_stream.py): the GPU path,
run here on this CPU without the fused kernels.

The fused CPU kernels keep the stream in float32 the same way (rag/models/fused_layers.py); the accuracy test
runs both. Tolerance: against the same model in fp32, a float32 stream's error is at most 0.6x transformers' own
bf16 error (1 - cosine of the final states; measured 0.33-0.39x in torch ops and 0.34-0.44x on the kernels, on
the 28-layer model below); packed embedding and reranking through it stay within the bf16 bars (cosine >= 0.999,
scores within 0.02).
"""
import copy

import pytest
import torch
from transformers import Qwen3Config, Qwen3Model

from rag.models.embedder import SentenceTransformerEmbedder
from rag.models.reranker import Qwen3Reranker
from rag.models.residual_stream import keep_residual_stream_in_float32

DOCS = ["Milvus stores vectors.", "A passage about volcanoes and lava " * 6, "short", "Sourdough rises slowly."]


def _deep_qwen3(seed: int) -> Qwen3Model:
    """28 thin layers at transformers' own initialisation: many residual adds, each small next to the stream."""
    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=28,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
                         attn_implementation="sdpa")
    return Qwen3Model(config).eval()


def _error(states: torch.Tensor, exact: torch.Tensor) -> float:
    return float(1 - torch.nn.functional.cosine_similarity(states.float(), exact, dim=-1).min())


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("path", ["torch ops", "fused kernels"])
def test_a_float32_stream_is_closer_to_fp32_than_transformers_bf16(seed, path, request):
    exact_model = _deep_qwen3(seed)
    plain = copy.deepcopy(exact_model).to(torch.bfloat16)
    stream = copy.deepcopy(plain)
    if path == "torch ops":
        assert keep_residual_stream_in_float32(stream) == 28
    else:
        from rag.models.fused_layers import use_fused_layers

        request.getfixturevalue("fused_kernels")
        use_fused_layers(stream)
    dtypes = []
    stream.layers[5].register_forward_hook(lambda module, args, out: dtypes.append((args[0].dtype, out.dtype)))
    ids = torch.randint(0, 500, (2, 24))
    with torch.inference_mode():
        exact = exact_model(input_ids=ids).last_hidden_state
        theirs, ours = plain(input_ids=ids).last_hidden_state, stream(input_ids=ids).last_hidden_state
    assert dtypes == [(torch.float32, torch.float32)]
    assert _error(ours, exact) <= 0.6 * _error(theirs, exact)


def test_float32_models_and_training_keep_transformers_forward():
    model = _deep_qwen3(3)
    switched = copy.deepcopy(model)
    keep_residual_stream_in_float32(switched)
    assert keep_residual_stream_in_float32(switched) == 0  # once per layer
    ids = torch.randint(0, 500, (1, 10))
    with torch.inference_mode():
        assert torch.equal(switched(input_ids=ids).last_hidden_state, model(input_ids=ids).last_hidden_state)
    switched.to(torch.bfloat16)
    assert switched(input_ids=ids).last_hidden_state.dtype == torch.bfloat16  # autograd: the original forward


def test_packed_embedding_and_reranking_run_on_the_stream(tiny_embedder_path, tiny_reranker_path):
    """The packed passes (segments, the reranker's cached head) go through the switched layers as through
    transformers' own: bf16 on the stream stays within the bf16 bars of the same models in fp32."""
    exact = SentenceTransformerEmbedder(str(tiny_embedder_path), device="cpu", dtype="fp32", fused=False)
    ours = SentenceTransformerEmbedder(str(tiny_embedder_path), device="cpu", dtype="bf16", fused=False)
    assert keep_residual_stream_in_float32(ours.model[0].auto_model) > 0
    cosines = (exact.embed_documents(DOCS) * ours.embed_documents(DOCS)).sum(axis=1)
    assert cosines.min() >= 0.999

    exact = Qwen3Reranker(str(tiny_reranker_path), device="cpu", dtype="fp32", fused=False)
    ours = Qwen3Reranker(str(tiny_reranker_path), device="cpu", dtype="bf16", fused=False)
    assert keep_residual_stream_in_float32(ours.model) > 0
    for query in ("what does milvus store?", "how does bread rise"):
        assert max(abs(a - b) for a, b in zip(exact.score(query, DOCS), ours.score(query, DOCS))) < 0.02
