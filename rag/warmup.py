"""Warm start: the example questions' retrievals computed in the background after start-up, so the first click
on an example shows a finished inspection (query vector and every rerank score come from the caches).

Lowest priority. Before each step — a query's first stage, then each candidate's rerank score, one at a time
— it waits until no question is using the models (rag/models/priority.py), so a user who arrives meanwhile
waits for at most that one step; then it goes on. It searches the shared knowledge base with the settings'
defaults, as the page's first question does (the score cache is keyed by chunk content, so a session's own
uploads among the candidates only add scores to compute).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

from rag.chat import QueryOptions
from rag.models.priority import GATE
from rag.pipeline import RAG

log = logging.getLogger(__name__)

IDLE_POLL = 1.0  # seconds between checks of the stop flag while questions keep the models busy


@dataclass
class WarmUpReport:
    questions: int = 0  # questions whose retrieval is complete in the caches
    scores: int = 0  # rerank scores computed (not already cached)
    seconds: float = 0.0
    stopped: bool = False  # stopped before the last question
    errors: list[str] = field(default_factory=list)


class WarmUp:
    """`start()` runs `run()` in a daemon thread; `stop()` ends it at its next step; `done` is set when it ends."""

    def __init__(self, rag: RAG, questions: Sequence[str], options: QueryOptions | None = None):
        self.rag = rag
        self.questions = list(questions)
        self.options = options or QueryOptions.from_settings(rag.settings)
        self.report = WarmUpReport()
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "WarmUp":
        self._thread = threading.Thread(target=self.run, name="warm-start", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> WarmUpReport:
        started = time.perf_counter()
        try:
            for question in self.questions:
                if not self._warm(question):
                    self.report.stopped = True
                    break
                self.report.questions += 1
        finally:
            self.report.seconds = time.perf_counter() - started
            log.info("warm start: %d of %d example questions ready (%d rerank scores computed) in %.1f s%s",
                     self.report.questions, len(self.questions), self.report.scores, self.report.seconds,
                     " (stopped)" if self.report.stopped else "")
            self.done.set()
        return self.report

    def _turn(self) -> bool:
        """Wait until no question is using the models; False once stopped."""
        while not self._stop.is_set():
            if GATE.wait_turn(IDLE_POLL):
                return not self._stop.is_set()
        return False

    def _warm(self, question: str) -> bool:
        options = self.options
        try:
            if not self._turn():
                return False
            first = self.rag.first_stage(question, options.top_k, options.query_instruction or None, None,
                                         options.retrieval_mode)
            if not options.use_reranker or self.rag.scorer is None:
                return True
            instruction = options.rerank_instruction or self.rag.settings.rerank_instruction
            for candidate in first.candidates:  # one score per step: a user waits for one document at most
                if not self._turn():
                    return False
                key = self.rag.scorer.key(question, candidate.text, instruction)
                if key not in self.rag.scorer.cache:
                    self.rag.scorer.scores(question, [candidate.text], instruction)
                    self.report.scores += 1
        except Exception as exc:  # noqa: BLE001 - a background nicety: log it and serve users as usual
            log.warning("warm start: %r failed: %s", question, exc)
            self.report.errors.append(f"{question}: {exc}")
        return True
