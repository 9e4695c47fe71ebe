"""Fusing the dense and the BM25 rankings into one first-stage ranking, in plain Python over the two lists.

Done here rather than by Milvus' `hybrid_search` so every number on the page can be checked by hand: each
candidate keeps its exact rank and score in each list, and the fused score is a formula of those.

`adaptive` (the default) weighs BM25 by the evidence of an exact, distinctive match in this query's own lists
(`lexical_weight`); `rrf` and `weighted` give it a fixed share whatever the query.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
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


def adaptive(dense: Mapping[int, float], bm25: Mapping[int, float], lexical_weight: float) -> list[Fused]:
    """Convex combination (1 - w) * dense + w * BM25 of each candidate's two scores, each normalised over the
    candidates: dense min-max (1 = the best cosine, 0 = the worst), BM25 divided by the best (0 = no term),
    w = `lexical_weight` (0..1). `dense` and `bm25` hold every candidate (the scores a list lacked computed);
    ties keep the order of `dense`'s keys."""
    if not 0.0 <= lexical_weight <= 1.0:
        raise ValueError(f"lexical_weight must be within 0..1, not {lexical_weight}")
    values = list(dense.values())
    low, high = (min(values), max(values)) if values else (0.0, 0.0)
    best = max(bm25.values(), default=0.0)
    scores = {}
    for chunk, score in dense.items():
        d = (score - low) / (high - low) if high > low else 1.0
        b = bm25.get(chunk, 0.0) / best if best > 0 else 0.0
        scores[chunk] = (1.0 - lexical_weight) * d + lexical_weight * b
    return _sorted(scores)


def bm25_margin(bm25: Sequence[Ranked]) -> float:
    """How far BM25's best chunk leads its runner-up, as a share of its score: (s1 - s2) / s1, in 0..1. 1 when
    one chunk alone holds a query term (an identifier only it contains), near 0 when the query's words are
    spread over many chunks (a paraphrase in common words); 0 without a hit."""
    if not bm25 or bm25[0].score <= 0:
        return 0.0
    runner_up = bm25[1].score if len(bm25) > 1 else 0.0
    return max(0.0, (bm25[0].score - runner_up) / bm25[0].score)


# Identifier-like: a digit, an underscore, a lower-to-upper case change (camelCase), a dot between word
# characters (dotted.keys, file.names), or all capitals (ERROR_CODE, NaN is not).
_TOKEN = re.compile(r"[\w.\-/:]+")
_IDENTIFIER = re.compile(r"\d|_|[a-z][A-Z]|\w\.\w")


def identifiers(query: str) -> list[str]:
    """The query's tokens that look like identifiers (error codes, config keys, file names, CONSTANTS)."""
    found = []
    for token in _TOKEN.findall(query):
        token = token.strip(".-/:")
        if len(token) >= 3 and (_IDENTIFIER.search(token) or (token.isalpha() and token.isupper())):
            found.append(token)
    return found


def exact_matches(query: str, texts: Mapping[int, str]) -> set[int]:
    """The chunks among `texts` that alone hold one of the query's identifiers verbatim, as a whole token:
    spelt exactly as typed, or, when no chunk has that spelling, in any case. Empty when the query has no
    identifier or each is in several chunks or none."""
    found = set()
    for token in identifiers(query):
        for flags in (0, re.IGNORECASE):
            pattern = re.compile(r"(?<![\w.])" + re.escape(token) + r"(?!\w)", flags)
            holders = [chunk for chunk, text in texts.items() if pattern.search(text)]
            if holders:
                break
        if len(holders) == 1:
            found.add(holders[0])
    return found


def lexical_weight(query: str, bm25: Sequence[Ranked], texts: Mapping[int, str]) -> float:
    """BM25's share in `adaptive` for this query: 1 when an identifier of the query occurs verbatim in BM25's
    best chunk and in no other candidate (`texts`: every candidate's text), else `bm25_margin`."""
    if bm25 and bm25[0].chunk_id in exact_matches(query, texts):
        return 1.0
    return bm25_margin(bm25)


def _sorted(scores: dict[int, float]) -> list[Fused]:
    """Best first; Python's sort is stable, so ties keep first-appearance order."""
    return sorted((Fused(c, s) for c, s in scores.items()), key=lambda f: -f.score)
