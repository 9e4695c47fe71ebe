"""Reranker scores through the score cache, batch by batch as they become known.

A score is a pure function of (reranker model, instruction, query, chunk text): it is cached under
(model, instruction, query, content hash) in a `BoundedCache`, so a re-run, a follow-up searching the same
query, or an example question asked before costs a lookup. The scores the cache lacks are computed by the
reranker in its own batches; each batch is handed on as soon as the reranker finishes it (the page fills its
table from them), while the model keeps working in a worker thread.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

from rag.models.cache import BoundedCache
from rag.models.contracts import Reranker
from rag.models.priority import GATE
from rag.settings import DEFAULT_TASK
from rag.types import content_hash


@dataclass
class ScoreBatch:
    positions: list[int]  # indices into the documents passed to `CachedScorer.batches`
    scores: list[float]
    cached: bool  # True: looked up in the score cache; False: computed by the reranker just now


class CachedScorer:
    """A `Reranker` behind a score cache of at most `max_entries` scores (0: no caching)."""

    def __init__(self, reranker: Reranker, max_entries: int):
        self.reranker = reranker
        self.cache: BoundedCache[float] = BoundedCache(max_entries)

    def key(self, query: str, text: str, instruction: str | None) -> tuple[str, str, str, str]:
        return self.reranker.model_name, instruction or DEFAULT_TASK, query, content_hash(text)

    def batches(self, query: str, documents: Sequence[str], instruction: str | None = None) -> Iterator[ScoreBatch]:
        """Every document's score exactly once: first the cached ones (one batch, if any), then the reranker's
        batches in the order it finishes them. Computed scores go into the cache.

        The reranker starts on the missing scores when this is called, not when the first batch is read: a
        caller that first shows something else (the page drawing the first-stage table) is not waiting on it."""
        keys = [self.key(query, d, instruction) for d in documents]
        found = self.cache.get_many(keys)
        hits = [i for i, s in enumerate(found) if s is not None]
        missing = [i for i, s in enumerate(found) if s is None]
        computed = _streamed(self.reranker, query, [documents[i] for i in missing], instruction) if missing else None
        return self._in_order(keys, hits, [found[i] for i in hits], missing, computed)

    def _in_order(self, keys: list[tuple], hits: list[int], found: list[float], missing: list[int],
                  computed: Iterator[tuple[list[int], list[float]]] | None) -> Iterator[ScoreBatch]:
        """The cached batch, then each computed one as the worker reports it (`missing` maps its positions)."""
        if hits:
            yield ScoreBatch(hits, found, cached=True)
        for positions, scores in computed or ():
            positions = [missing[p] for p in positions]
            for i, s in zip(positions, scores):
                self.cache.put(keys[i], float(s))
            yield ScoreBatch(positions, [float(s) for s in scores], cached=False)

    def scores(self, query: str, documents: Sequence[str], instruction: str | None = None) -> list[float]:
        """All scores at once, in the documents' order."""
        out = [0.0] * len(documents)
        for batch in self.batches(query, documents, instruction):
            for i, s in zip(batch.positions, batch.scores):
                out[i] = s
        return out


_DONE = object()


def _streamed(reranker: Reranker, query: str, documents: list[str],
              instruction: str | None) -> Iterator[tuple[list[int], list[float]]]:
    """Start `reranker.score` in a worker thread now; its `on_batch` reports come out of the returned iterator.
    The worker holds no lock across a yield of that iterator: a consumer that stops reading (a closed browser
    tab) or never starts leaves it to finish its one call. Positions a reranker computed without reporting them
    come with its return value."""
    out: queue.SimpleQueue = queue.SimpleQueue()

    def work() -> None:
        reported: set[int] = set()

        def on_batch(positions: list[int], scores: list[float]) -> None:
            reported.update(positions)
            out.put((list(positions), list(scores)))

        try:
            with GATE.urgent():  # a question's work: an upload's next batch waits (rag/models/priority.py)
                scores = reranker.score(query, documents, instruction, on_batch=on_batch)
            rest = [i for i in range(len(documents)) if i not in reported]
            if rest:
                out.put((rest, [scores[i] for i in rest]))
            out.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            out.put(exc)

    threading.Thread(target=work, name="rerank", daemon=True).start()
    return _drained(out)


def _drained(out: queue.SimpleQueue) -> Iterator[tuple[list[int], list[float]]]:
    while True:
        item = out.get()
        if item is _DONE:
            return
        if isinstance(item, BaseException):
            raise item
        yield item
