"""Rerank scores through the score cache, batch by batch (rag/models/scores.py), with the tiny reranker."""
from __future__ import annotations

import threading

import pytest

from rag.models.priority import GATE
from rag.models.reranker import Qwen3Reranker
from rag.models.scores import CachedScorer
from tests.models.test_reranker import DOCS, QUERY


@pytest.fixture
def scorer(tiny_reranker):
    """Two documents per batch, so five documents come in three batches; a reranker of its own (tests here
    change its attributes)."""
    reranker = Qwen3Reranker(tiny_reranker.model_name, device="cpu", dtype="fp32", batch_size=2,
                             model=tiny_reranker.model, tokenizer=tiny_reranker.tokenizer)
    return CachedScorer(reranker, max_entries=100)


def test_batches_give_every_score_once_equal_to_the_reranker(scorer, tiny_reranker):
    batches = list(scorer.batches(QUERY, DOCS))
    assert len(batches) >= 3 and not any(b.cached for b in batches)
    assert sorted(i for b in batches for i in b.positions) == list(range(len(DOCS)))
    got = {i: s for b in batches for i, s in zip(b.positions, b.scores)}
    assert [got[i] for i in range(len(DOCS))] == pytest.approx(tiny_reranker.score(QUERY, DOCS), abs=1e-5)
    assert not GATE.busy  # the worker thread let go of the priority gate


def test_a_repeat_is_one_cached_batch_and_a_new_document_alone_is_computed(scorer):
    first = scorer.scores(QUERY, DOCS)
    again = list(scorer.batches(QUERY, DOCS))
    assert len(again) == 1 and again[0].cached and sorted(again[0].positions) == list(range(len(DOCS)))
    assert [dict(zip(again[0].positions, again[0].scores))[i] for i in range(len(DOCS))] == first
    mixed = list(scorer.batches(QUERY, ["A new document about lava.", *DOCS[:2]]))
    assert [(b.cached, sorted(b.positions)) for b in mixed] == [(True, [1, 2]), (False, [0])]


def test_the_key_is_model_instruction_query_and_content(scorer):
    scorer.scores(QUERY, DOCS[:1])
    key = scorer.key(QUERY, DOCS[0], None)
    assert key in scorer.cache
    assert scorer.key(QUERY, DOCS[0], "Judge geology") not in scorer.cache
    assert scorer.key(QUERY + "?", DOCS[0], None) not in scorer.cache
    assert scorer.key(QUERY, DOCS[0] + " ", None) not in scorer.cache
    scorer.reranker.model_name = "another-reranker"
    assert scorer.key(QUERY, DOCS[0], None) not in scorer.cache


def test_the_cache_stays_within_its_bound(tiny_reranker):
    scorer = CachedScorer(tiny_reranker, max_entries=3)
    scorer.scores(QUERY, DOCS)
    assert len(scorer.cache) == 3
    off = CachedScorer(tiny_reranker, max_entries=0)
    off.scores(QUERY, DOCS[:2])
    assert not any(b.cached for b in off.batches(QUERY, DOCS[:2])) and len(off.cache) == 0


def test_a_reranker_error_reaches_the_caller(scorer):
    scorer.reranker.model = None  # the worker's forward pass fails
    with pytest.raises(AttributeError):
        list(scorer.batches(QUERY, DOCS))
    assert not GATE.busy


def signal_on_score(reranker, monkeypatch) -> threading.Event:
    """An event set when `reranker.score` is called (the real one still runs)."""
    started = threading.Event()
    score = reranker.score

    def observed(*args, **kwargs):
        started.set()
        return score(*args, **kwargs)

    monkeypatch.setattr(reranker, "score", observed)
    return started


def test_the_reranker_starts_when_asked_not_when_the_first_batch_is_read(scorer, tiny_reranker, monkeypatch):
    """The page draws the first-stage table between asking and reading: the reranker must be at work by then."""
    started = signal_on_score(scorer.reranker, monkeypatch)
    batches = scorer.batches(QUERY, DOCS)
    assert started.wait(timeout=60)  # nothing has been read from `batches` yet
    got = {i: s for b in batches for i, s in zip(b.positions, b.scores)}
    assert [got[i] for i in range(len(DOCS))] == pytest.approx(tiny_reranker.score(QUERY, DOCS), abs=1e-5)
    started.clear()
    assert len(list(scorer.batches(QUERY, DOCS))) == 1 and not started.is_set()  # all cached: nothing started
