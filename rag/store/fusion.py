"""Fusing the dense and the BM25 rankings into one first-stage ranking, in plain Python over the two lists.

Done here rather than by Milvus' `hybrid_search` so every number on the page can be checked by hand: each
candidate keeps its exact rank and score in each list, and the fused score is a formula of those.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass
class Ranked:
    """One retriever's hit: a chunk id and its score (higher is better), in rank order within its list."""
    chunk_id: int
    score: float


@dataclass
class Fused:
    chunk_id: int
    score: float  # the fusion's own score; higher is better


def rrf(rankings: Sequence[Sequence[Ranked]], k: int = 60) -> list[Fused]:
    """Reciprocal rank fusion: sum of 1 / (k + rank) over the lists holding the chunk (rank 1-based).

    Ties (e.g. rank 1 in one list only vs rank 1 in the other only) keep the order of first appearance,
    reading the lists' rank 1s first, then their rank 2s, ...: the earlier list wins a tie."""
    scores: dict[int, float] = {}
    for position in range(max((len(r) for r in rankings), default=0)):
        for ranking in rankings:
            if position < len(ranking):
                chunk = ranking[position].chunk_id
                scores[chunk] = scores.get(chunk, 0.0) + 1.0 / (k + position + 1)
    return _sorted(scores)


def weighted(rankings: Sequence[Sequence[Ranked]], weights: Sequence[float]) -> list[Fused]:
    """Weighted sum of each list's min-max normalised scores (1 = that list's best, 0 = its worst or
    absent from it). Scales differ (cosine vs BM25), so raw scores can't be added."""
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights):
        values = [r.score for r in ranking]
        low, high = (min(values), max(values)) if values else (0.0, 0.0)
        for r in ranking:
            norm = (r.score - low) / (high - low) if high > low else 1.0
            scores[r.chunk_id] = scores.get(r.chunk_id, 0.0) + weight * norm
    for ranking in rankings:  # chunks absent from a list get 0 from it, but still need an entry
        for r in ranking:
            scores.setdefault(r.chunk_id, 0.0)
    return _sorted(scores)


def _sorted(scores: dict[int, float]) -> list[Fused]:
    """Best first; Python's sort is stable, so ties keep first-appearance order."""
    return sorted((Fused(c, s) for c, s in scores.items()), key=lambda f: -f.score)
