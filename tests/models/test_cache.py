"""The bounded LRU cache behind the query-vector and rerank-score caches."""
from __future__ import annotations

import threading

import pytest

from rag.models.cache import BoundedCache


def test_least_recently_used_goes_first():
    cache = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recently used
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3 and len(cache) == 2


def test_get_many_counts_hits_and_misses_and_refreshes_what_it_found():
    cache = BoundedCache(2)
    cache.put("a", 1.0)
    cache.put("b", 2.0)
    assert cache.get_many(["a", "x", "b"]) == [1.0, None, 2.0]
    assert (cache.hits, cache.misses) == (2, 1)
    cache.get("a")
    cache.put("c", 3.0)  # "b" was used longest ago
    assert cache.get_many(["a", "b", "c"]) == [1.0, None, 3.0]


def test_zero_entries_keeps_nothing_and_a_negative_bound_is_an_error():
    cache = BoundedCache(0)
    cache.put("a", 1)
    assert cache.get("a") is None and len(cache) == 0
    with pytest.raises(ValueError, match="0 or more"):
        BoundedCache(-1)


def test_threads_sharing_it_never_exceed_the_bound_or_lose_a_value():
    cache = BoundedCache(50)
    errors = []

    def work(offset: int) -> None:
        for i in range(2000):
            key = (offset, i % 80)
            cache.put(key, i % 80)
            value = cache.get(key)
            if value is not None and value != i % 80:
                errors.append((key, value))
            if len(cache) > 50:
                errors.append(("size", len(cache)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(cache) == 50
