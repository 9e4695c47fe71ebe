"""A bounded, thread-safe least-recently-used cache: the one cache design for model results.

Two users: query embeddings (rag.models.embedder, keyed by instruction and query text) and reranker scores
(rag.pipeline, keyed by model, instruction, query and the chunk's content hash). Both are pure functions of
their key, so a hit returns exactly what the model would compute again; both are bounded by entries, so a
public demo asked a million different questions keeps a fixed amount of memory.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, Hashable, Iterable, TypeVar

V = TypeVar("V")


class BoundedCache(Generic[V]):
    """At most `max_entries` values; putting one more evicts the least recently used. `max_entries=0`
    keeps nothing (every lookup misses). Safe to share between threads."""

    def __init__(self, max_entries: int):
        if max_entries < 0:
            raise ValueError(f"max_entries must be 0 or more, got {max_entries}")
        self.max_entries = max_entries
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def get_many(self, keys: Iterable[Hashable]) -> list[V | None]:
        """One lookup per key, under one lock acquisition."""
        with self._lock:
            found = []
            for key in keys:
                value = self._items.get(key)
                if value is None:
                    self.misses += 1
                else:
                    self._items.move_to_end(key)
                    self.hits += 1
                found.append(value)
            return found

    def put(self, key: Hashable, value: V) -> None:
        if self.max_entries == 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items
