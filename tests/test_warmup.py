"""Warm start (rag/warmup.py): the example questions' retrievals land in the caches in the background, at the
lowest priority."""
from __future__ import annotations

import threading
import time

import pytest

from rag.models.priority import GATE
from rag.warmup import WarmUp

QUESTIONS = ["How do bees make honey?", "What makes a volcano erupt?"]


def test_after_the_warm_up_an_example_question_is_answered_from_the_caches(small_batch_rag):
    report = WarmUp(small_batch_rag, QUESTIONS).run()
    assert report.questions == 2 and report.scores == 14 and report.errors == [] and not report.stopped
    settings = small_batch_rag.settings  # the page's defaults, as a first click on an example uses them
    computed = small_batch_rag.embedder.query_cache.misses
    for question in QUESTIONS:
        r = small_batch_rag.retrieve(question, settings.top_k, settings.top_n, mode=settings.retrieval_mode)
        assert r.reranked and r.cached == len(r.candidates) == 7
        fresh = small_batch_rag.reranker.score(question, [c.text for c in r.candidates])
        assert [c.rerank_score for c in r.candidates] == pytest.approx(fresh, abs=1e-5)
    assert small_batch_rag.embedder.query_cache.misses == computed  # both query vectors came from the cache


def test_it_waits_while_a_question_uses_the_models_and_goes_on_after(small_batch_rag):
    warm = WarmUp(small_batch_rag, QUESTIONS[:1])
    release = threading.Event()

    def question_in_progress() -> None:
        with GATE.urgent():
            release.wait(10)

    user = threading.Thread(target=question_in_progress)
    user.start()
    while not GATE.busy:
        time.sleep(0.01)
    warm.start()
    time.sleep(1.5)
    assert not warm.done.is_set() and len(small_batch_rag.scorer.cache) == 0  # not one step while the user runs
    release.set()
    user.join()
    assert warm.done.wait(60) and warm.report.questions == 1 and len(small_batch_rag.scorer.cache) == 7


def test_stop_ends_it_at_its_next_step(small_batch_rag):
    warm = WarmUp(small_batch_rag, QUESTIONS)
    with GATE.urgent():  # it waits for its turn: stop it meanwhile
        warm.start()
        warm.stop(timeout=0)
    assert warm.done.wait(10) and warm.report.stopped and warm.report.questions == 0
    assert len(small_batch_rag.scorer.cache) == 0
