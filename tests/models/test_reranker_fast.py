"""Every fast path of the Reranker against the official reference: prefix KV cache, batching, bf16, int8."""
import pytest
import torch

from rag.models.devices import Precision, resolve_precision
from rag.models.reranker import Qwen3Reranker
from tests.models.test_reranker import DOCS, QUERY
from tests.reference import ReferenceReranker

ODD_QUERIES = ["What causes a volcano to erupt?", "milvus", "ends with spaces  ", "new line\n", "tab\t",
               "<Query>: nested", "Ünïcödé 数据库?", "a)", "x\n\n"]


@pytest.fixture(scope="module")
def reference(tiny_reranker):
    return ReferenceReranker(None, model=tiny_reranker.model, tokenizer=tiny_reranker.tokenizer)


def _ranker(tiny_reranker, **kw) -> Qwen3Reranker:
    return Qwen3Reranker("tiny", device="cpu", dtype="fp32", model=tiny_reranker.model,
                         tokenizer=tiny_reranker.tokenizer, **kw)


def _max_delta(a, b) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def _order_agrees(ours, ref, margin) -> bool:
    """Same order for every pair of documents whose reference scores are further apart than `margin`."""
    n = len(ref)
    return all((ours[i] > ours[j]) == (ref[i] > ref[j])
               for i in range(n) for j in range(n) if abs(ref[i] - ref[j]) > margin)


@pytest.mark.parametrize("query", ODD_QUERIES)
def test_split_is_a_token_boundary_of_the_reference_tokenisation(tiny_reranker, query):
    head = tiny_reranker.shared_head(query, None)
    for ids in tiny_reranker.encode_pairs(query, DOCS, None):
        assert ids[:len(head)] == head and len(ids) > len(head)  # every pair takes the cached path


@pytest.mark.parametrize("query", ODD_QUERIES)
def test_prefix_cache_matches_reference_within_1e4(tiny_reranker, reference, query):
    assert _max_delta(tiny_reranker.score(query, DOCS), reference.score(query, DOCS)) <= 1e-4


@pytest.mark.parametrize("batch_size", [1, 2, 3, 16])
def test_pack_sizes_match_reference(tiny_reranker, reference, batch_size):
    ranker = _ranker(tiny_reranker, batch_size=batch_size, batch_tokens=4096)  # no token cap: packs of that size
    docs = DOCS + ["", "Lava.", DOCS[0]]  # empty, tiny and duplicate documents too
    ours = ranker.score(QUERY, docs, instruction="Judge whether the passage is about geology")
    ref = reference.score(QUERY, docs, "Judge whether the passage is about geology")
    assert _max_delta(ours, ref) <= 1e-4
    assert ours[0] == pytest.approx(ours[-1], abs=1e-6)


def test_cache_is_reused_not_mutated_between_batches_and_calls(tiny_reranker):
    ranker = _ranker(tiny_reranker, batch_size=1)
    first = ranker.score(QUERY, DOCS)
    assert ranker.score(QUERY, DOCS) == pytest.approx(first, abs=1e-6)
    assert ranker.score(QUERY, DOCS[2:3]) == pytest.approx(first[2:3], abs=1e-6)


@pytest.mark.parametrize("instruction", [None, "Judge whether the passage is about geology", "trailing  ",
                                         "ends in a newline\n", "数据库"])
def test_static_head_is_computed_once_per_instruction_and_changes_nothing(tiny_reranker, reference, instruction):
    """System prompt + instruction run once; every later query (any query text) runs only its own tokens."""
    ranker = _ranker(tiny_reranker)
    for query in ODD_QUERIES[:4]:
        assert _max_delta(ranker.score(query, DOCS, instruction), reference.score(query, DOCS, instruction)) <= 1e-4
    static = ranker.static_head(instruction)
    assert all(ranker.shared_head(q, instruction)[:len(static)] == static for q in ODD_QUERIES)
    assert len(ranker._static_heads) == 1 and ranker._static_heads.misses == 1 and ranker._static_heads.hits == 3


def test_progress_reports_the_shortest_document_alone_first_then_packs(tiny_reranker, reference):
    ranker = _ranker(tiny_reranker, batch_size=3)
    reports = []
    scores = ranker.score(QUERY, DOCS, on_batch=lambda items, batch_scores: reports.append((items, batch_scores)))
    lengths = [len(s) for s in ranker.encode_pairs(QUERY, DOCS, None)]
    assert len(reports[0][0]) == 1 and lengths[reports[0][0][0]] == min(lengths)
    assert sorted(i for items, _ in reports for i in items) == list(range(len(DOCS)))
    assert all(len(items) <= 3 for items, _ in reports)
    assert all(scores[i] == s for items, batch in reports for i, s in zip(items, batch))
    assert _max_delta(scores, reference.score(QUERY, DOCS)) <= 1e-4


def test_full_pass_option_and_fallback_match_reference(tiny_reranker, reference, monkeypatch):
    ref = reference.score(QUERY, DOCS)
    assert _max_delta(_ranker(tiny_reranker, prefix_cache=False).score(QUERY, DOCS), ref) <= 1e-4
    ranker = _ranker(tiny_reranker)  # a head that is no prefix of the pairs' ids: every pair takes a full pass
    monkeypatch.setattr(ranker, "shared_head", lambda q, i: [ranker.no_id] * 5)
    assert _max_delta(ranker.score(QUERY, DOCS), ref) <= 1e-4


def test_truncation_with_prefix_cache_matches_reference(tiny_reranker):
    short = _ranker(tiny_reranker, max_tokens=128)
    ref = ReferenceReranker(None, max_length=128, model=tiny_reranker.model, tokenizer=tiny_reranker.tokenizer)
    docs = ["lava " * 5000, "Honey bees dance.", "ash " * 60]
    assert _max_delta(short.score(QUERY, docs), ref.score(QUERY, docs)) <= 1e-4
    long_query = "why " * 200  # the query alone overflows the budget: no cacheable head, full passes
    assert _max_delta(short.score(long_query, docs), ref.score(long_query, docs)) <= 1e-4


def test_bf16_path_stays_close_to_fp32_reference(tiny_reranker_path, reference):
    """bf16 keeps ~3 significant digits: scores within 0.02. The tiny model's scores of DOCS[1] and DOCS[4] are
    0.004 apart, inside bf16's error, so order is only required where the reference gap exceeds 0.02."""
    bf16 = Qwen3Reranker(str(tiny_reranker_path), device="cpu", dtype="bf16")
    assert bf16.model.dtype == torch.bfloat16
    for query in ODD_QUERIES[:3]:
        ours, ref = bf16.score(query, DOCS), reference.score(query, DOCS)
        assert _max_delta(ours, ref) <= 0.02
        assert _order_agrees(ours, ref, margin=0.02)


def test_int8_path_quantises_the_decoder_and_stays_close(tiny_reranker_path, reference):
    """int8 on the tiny model deviates more (~0.05) than on the 0.6B shape: its weights are scaled x8 to spread
    scores, which widens the int8 steps. The bench measures int8 parity at 0.6B shape; here: bounded, sane."""
    int8 = Qwen3Reranker(str(tiny_reranker_path), device="cpu", dtype="int8")
    quantised = [m for m in int8.model.model.modules() if "quantized" in type(m).__module__]
    assert quantised and int8._yes_no_rows[0].dtype == torch.float32
    ours, ref = int8.score(QUERY, DOCS), reference.score(QUERY, DOCS)
    assert _max_delta(ours, ref) <= 0.1
    assert _order_agrees(ours, ref, margin=0.2)


def test_injected_model_is_never_quantised(tiny_reranker):
    Qwen3Reranker("tiny", device="cpu", dtype="int8", model=tiny_reranker.model, tokenizer=tiny_reranker.tokenizer)
    assert not any("quantized" in type(m).__module__ for m in tiny_reranker.model.modules())


def test_precision_resolution(monkeypatch):
    import rag.models.devices as devices

    assert resolve_precision("int8", "cpu") == Precision(torch.float32, int8=True)
    assert resolve_precision("fp32", "cpu").name == "float32"
    with pytest.raises(ValueError, match="CPU"):
        resolve_precision("int8", "cuda")
    with pytest.raises(ValueError, match="int8"):
        resolve_precision("fp8", "cpu")
    monkeypatch.setattr(devices, "cpu_prefers_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == Precision(torch.float32)
    monkeypatch.setattr(devices, "cpu_prefers_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == Precision(torch.bfloat16)
