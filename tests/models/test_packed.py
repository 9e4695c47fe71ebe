"""The packed embedding path (rag/models/packed.py) computes what sentence-transformers' own `encode` computes.

Tolerance: cosine >= 0.9999 per text against `SentenceTransformer.encode` at fp32 (the Qwen3-Embedding model
card's code), the bar of issue 16; measured ~1 - 1e-7 (float rounding of different matmul shapes).
"""
import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from rag.models.embedder import SentenceTransformerEmbedder
from rag.models.packed import ATTENTION, attention_groups, last_token_states, pack_batches, packable
from rag.models.segments import Segment

# lengths from 1 to ~300 tokens, mixed, with repeats: packs hold texts of very different lengths side by side
TEXTS = [("word " * n).strip() for n in (3, 40, 1, 17, 60, 8, 2, 33, 5)] + \
    ["Milvus is a vector database.", "A much longer passage about volcanoes, ash clouds and lava " * 12,
     "Sourdough bread rises slowly with wild yeast.", "short"]


@pytest.fixture(scope="module")
def card(tiny_embedder_path):
    """The model card's code: a fresh, unpatched SentenceTransformer at fp32."""
    return SentenceTransformer(str(tiny_embedder_path), device="cpu", model_kwargs={"dtype": torch.float32})


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def test_qwen3_embedding_runs_packed(tiny_embedder):
    assert tiny_embedder.packed
    assert tiny_embedder.model[0].auto_model.config._attn_implementation == ATTENTION


@pytest.mark.parametrize("batch_tokens,batch_size", [(64, 16), (2048, 16), (2048, 3), (1 << 30, 1000)])
def test_packed_documents_match_sentence_transformers_encode(tiny_embedder_path, tiny_embedder, card,
                                                             batch_tokens, batch_size):
    emb = SentenceTransformerEmbedder(str(tiny_embedder_path), device="cpu", dtype="fp32", batch_size=batch_size,
                                      batch_tokens=batch_tokens, model=tiny_embedder.model)
    reference = card.encode(TEXTS, normalize_embeddings=True)
    assert _min_cosine(emb.embed_documents(TEXTS), reference) >= 0.9999


def test_packed_query_matches_sentence_transformers_prompt(tiny_embedder, card):
    ours = np.stack([tiny_embedder.embed_query(q) for q in ("what is milvus?", "how do I delete a row")])
    reference = card.encode(["what is milvus?", "how do I delete a row"], prompt_name="query",
                            normalize_embeddings=True)
    assert _min_cosine(ours, reference) >= 0.9999


def test_a_text_packed_with_others_equals_the_text_alone(tiny_embedder):
    """Attention stays inside each text: neighbours in the pack change nothing."""
    ids = tiny_embedder._token_ids(TEXTS)
    with torch.inference_mode():
        together = last_token_states(tiny_embedder.model[0].auto_model, ids)
        alone = torch.cat([last_token_states(tiny_embedder.model[0].auto_model, [s]) for s in ids])
    assert torch.allclose(together, alone, atol=1e-5)


def test_the_attention_kernel_and_torchs_sdpa_give_the_same_states(tiny_embedder, monkeypatch):
    """With the fused kernels every packed segment runs in one kernel call per layer, but the last, where only
    each text's last row is computed (one SDPA call per text); without them (no compiler,
    `RAG_FUSED_KERNELS=0`) torch's SDPA runs each segment: same states, for texts of 1 to ~900 tokens (the long
    ones span several of the kernel's key tiles)."""
    import rag.models.packed as packed

    backbone = tiny_embedder.model[0].auto_model
    ids = tiny_embedder._token_ids(TEXTS + ["Lava flows downhill, and ash rises into the sky. " * 80])
    assert max(map(len, ids)) > 3 * 256
    layers = backbone.config.num_hidden_layers
    with torch.inference_mode():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            kernel = last_token_states(backbone, ids)
        calls = {event.key: event.count for event in prof.key_averages()}
        assert calls["rag_fused::segment_attention"] == layers - 1
        assert calls["aten::scaled_dot_product_attention"] == len(ids)
        monkeypatch.setattr(packed, "attention_kernel", lambda *args: None)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            sdpa = last_token_states(backbone, ids)
    calls = {event.key: event.count for event in prof.key_averages()}
    assert calls["aten::scaled_dot_product_attention"] == layers * len(ids)
    assert calls.get("rag_fused::segment_attention", 0) == 0
    assert torch.allclose(kernel, sdpa, atol=1e-5)


def _group_as_on_a_gpu(monkeypatch, rows: int = 256) -> None:
    """The GPU's attention path, on this CPU: no fused kernel, consecutive segments in masked SDPA calls of at
    most `rows` rows (small, so that a pass has several groups and a long text goes alone)."""
    import rag.models.packed as packed

    monkeypatch.setattr(packed, "attention_kernel", lambda *args: None)
    monkeypatch.setattr(packed, "GPU_ATTENTION_ROWS", rows)
    monkeypatch.setattr(packed, "attention_groups", lambda segments, device_type: attention_groups(segments, "cuda"))


def test_grouped_masked_attention_gives_the_states_of_a_call_per_segment(tiny_embedder, monkeypatch):
    import rag.models.packed as packed

    backbone = tiny_embedder.model[0].auto_model
    ids = tiny_embedder._token_ids(TEXTS + ["Lava flows downhill, and ash rises into the sky. " * 30])
    monkeypatch.setattr(packed, "attention_kernel", lambda *args: None)
    with torch.inference_mode():
        each = last_token_states(backbone, ids)
        _group_as_on_a_gpu(monkeypatch)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            grouped = last_token_states(backbone, ids)
    calls = {event.key: event.count for event in prof.key_averages()}
    lengths = list(map(len, ids))
    groups = len(pack_batches(lengths, 256, len(lengths)))
    assert max(lengths) > 256 and 1 < groups < len(ids)
    # a call per group in each layer but the last, which on this CPU computes each text's last row (a call each)
    assert calls["aten::scaled_dot_product_attention"] == (backbone.config.num_hidden_layers - 1) * groups + len(ids)
    assert torch.allclose(grouped, each, atol=1e-5)


def test_attention_groups_are_single_segments_on_a_cpu_and_bounded_runs_on_a_gpu(monkeypatch):
    import rag.models.packed as packed

    monkeypatch.setattr(packed, "GPU_ATTENTION_ROWS", 10)
    segments = [Segment(0, 4), Segment(4, 10), Segment(10, 25), Segment(25, 27), Segment(27, 30)]
    assert attention_groups(segments, "cpu") == [[s] for s in segments]
    assert attention_groups(segments, "cuda") == [segments[:2], segments[2:3], segments[3:]]
    monkeypatch.setattr(packed, "GPU_ATTENTION_ROWS", 0)  # 0: one call per segment there too
    assert attention_groups(segments, "cuda") == [[s] for s in segments]


@pytest.mark.parametrize("grouping", ["per-segment", "grouped"])
def test_segments_on_a_shared_prefix_equal_each_sequence_alone(tiny_reranker, grouping, monkeypatch):
    """A tail packed after its head's cached keys/values, next to other tails, computes what head + tail computes
    in one ordinary pass: the reranker's packed path (rag/models/prefix_cache.py), with a call per segment (a
    CPU without the fused kernels) or grouped masked calls (a GPU)."""
    from rag.models.prefix_cache import extend

    if grouping == "grouped":
        _group_as_on_a_gpu(monkeypatch, rows=16)

    decoder = tiny_reranker.model.model
    head = tiny_reranker.tokenizer.encode("a shared head of a few tokens", add_special_tokens=False)
    tails = [tiny_reranker.tokenizer.encode(t, add_special_tokens=False) for t in ("one", "two words", "x " * 30)]
    with torch.inference_mode():
        alone = torch.stack([decoder(input_ids=torch.tensor([head + t])).last_hidden_state[0, -1] for t in tails])
        cached = extend(decoder, None, head[:3], [])  # part of the head cached, the rest run with the tails
        first = extend(decoder, cached.head, head[3:], tails[:1])
        rest = extend(decoder, first.head, [], tails[1:])
        whole = extend(decoder, None, head, tails)
    assert torch.allclose(torch.cat([first.last_hidden, rest.last_hidden]), alone, atol=1e-5)
    assert torch.allclose(whole.last_hidden, alone, atol=1e-5)
    assert first.head[0][0].shape[-2] == len(head) and cached.head[0][0].shape[-2] == 3


def test_packed_model_still_serves_ordinary_padded_calls(tiny_embedder, card):
    """The registered attention falls back to SDPA with its mask when a caller pads (e.g. `encode`)."""
    assert _min_cosine(tiny_embedder.model.encode(TEXTS), card.encode(TEXTS)) >= 0.9999


def test_models_without_last_token_pooling_keep_the_encode_path(minilm_path):
    emb = SentenceTransformerEmbedder(str(minilm_path), device="cpu", dtype="fp32")
    assert not emb.packed and not packable(emb.model)
    reference = SentenceTransformer(str(minilm_path), device="cpu").encode(TEXTS, normalize_embeddings=True)
    assert _min_cosine(emb.embed_documents(TEXTS), reference) >= 0.9999


def test_pack_batches_respects_token_budget_and_rows():
    assert pack_batches([5, 5, 5, 5], budget=10, rows=16) == [[0, 1], [2, 3]]
    assert pack_batches([30, 5, 5], budget=10, rows=16) == [[0], [1, 2]]  # a long item goes alone
    assert pack_batches([1] * 5, budget=100, rows=2) == [[0, 1], [2, 3], [4]]
    assert pack_batches([], budget=10, rows=2) == []
