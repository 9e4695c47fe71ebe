"""The Reranker computes what the official Qwen3-Reranker reference computes."""
import pytest

from rag.models.reranker import Qwen3Reranker
from tests.reference import ReferenceReranker

QUERY = "What causes a volcano to erupt?"
DOCS = ["Magma rises and pressure builds until the volcano erupts.",
        "yes",
        "Sourdough bread is leavened by wild yeast. " * 40,
        "Chess openings develop the knights and bishops and fight for the centre squares. " * 3,
        "Honey bees dance."]


@pytest.fixture(scope="module")
def reference(tiny_reranker):
    return ReferenceReranker(None, model=tiny_reranker.model, tokenizer=tiny_reranker.tokenizer)


def test_scores_match_reference_within_1e4(tiny_reranker, reference):
    ours = tiny_reranker.score(QUERY, DOCS)
    ref = reference.score(QUERY, DOCS)
    assert len(ours) == len(DOCS)
    assert max(abs(a - b) for a, b in zip(ours, ref)) <= 1e-4
    assert all(0.0 < s < 1.0 for s in ours)
    assert max(ours) - min(ours) > 1e-3  # the tiny model must discriminate, or parity proves nothing


def test_custom_instruction_matches_reference_and_changes_scores(tiny_reranker, reference):
    task = "Judge whether the passage is about geology"
    ours = tiny_reranker.score(QUERY, DOCS, instruction=task)
    assert max(abs(a - b) for a, b in zip(ours, reference.score(QUERY, DOCS, task))) <= 1e-4
    assert ours != tiny_reranker.score(QUERY, DOCS)


def test_scores_come_back_in_input_order(tiny_reranker):
    forward = tiny_reranker.score(QUERY, DOCS)
    backward = tiny_reranker.score(QUERY, DOCS[::-1])
    assert forward == pytest.approx(backward[::-1], abs=1e-5)


def test_long_document_is_cut_in_the_body_never_the_template(tiny_reranker_path, tiny_reranker):
    short = Qwen3Reranker(str(tiny_reranker_path), device="cpu", dtype="fp32", max_tokens=128,
                          model=tiny_reranker.model, tokenizer=tiny_reranker.tokenizer)
    [ids] = short.encode_pairs(QUERY, ["lava " * 5000], None)
    assert len(ids) == 128
    assert ids[:len(short.prefix_ids)] == short.prefix_ids
    assert ids[-len(short.suffix_ids):] == short.suffix_ids
    ref = ReferenceReranker(None, max_length=128, model=tiny_reranker.model, tokenizer=tiny_reranker.tokenizer)
    assert short.score(QUERY, ["lava " * 5000]) == pytest.approx(ref.score(QUERY, ["lava " * 5000]), abs=1e-4)


def test_no_documents_no_scores(tiny_reranker):
    assert tiny_reranker.score(QUERY, []) == []


def test_each_batch_is_reported_once_as_it_is_scored(tiny_reranker, small_batch_reranker):
    reported: list[tuple[list[int], list[float]]] = []
    scores = small_batch_reranker.score(QUERY, DOCS, on_batch=lambda positions, s: reported.append((positions, s)))
    assert len(reported) >= 3 and all(len(p) <= 2 for p, _ in reported)  # 5 documents, 2 per batch
    assert len(reported[0][0]) == 1  # the first score alone: it reaches the page after one document's work
    assert sorted(i for p, _ in reported for i in p) == list(range(len(DOCS)))
    assert all(scores[i] == s for p, batch in reported for i, s in zip(p, batch))
    assert scores == pytest.approx(tiny_reranker.score(QUERY, DOCS), abs=1e-5)
