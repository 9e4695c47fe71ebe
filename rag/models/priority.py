"""Questions before uploads on the shared models: a gate that background work (embedding an upload's
chunks) passes only while no question is using a model.

One process has one set of CPU cores (or one GPU) for every session. The embedder and the reranker each run one
forward pass at a time, so a question that arrives while an upload embeds waits for the batch in progress —
and, without this gate, for every batch the upload queues after it as well. With it, the upload steps aside
before each batch while a question is embedding or reranking; the question waits for at most the one batch
already running (a few chunks: `Settings.embed_batch_size`).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager


class PriorityGate:
    """`urgent()` never waits here; `background()` waits until no urgent work is in progress."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._urgent = 0

    @contextmanager
    def urgent(self):
        with self._cond:
            self._urgent += 1
        try:
            yield
        finally:
            with self._cond:
                self._urgent -= 1
                self._cond.notify_all()

    def wait_turn(self, timeout: float | None = None) -> bool:
        """Block until no urgent work is in progress (background work calls this before each batch).
        False when `timeout` passed first: the caller goes on anyway, so a stream of questions can slow an
        upload down but never stall it for good."""
        with self._cond:
            return self._cond.wait_for(lambda: self._urgent == 0, timeout)

    @property
    def busy(self) -> bool:
        return self._urgent > 0


GATE = PriorityGate()  # one per process: the models share the same cores
BACKGROUND_WAIT = 30.0  # seconds an upload's next step waits at most for questions to finish
