"""Map `[n]` markers in an answer back to the numbered passages the model was shown."""
from __future__ import annotations

import re
from dataclasses import dataclass

from rag.types import Candidate

# One bracket holding numbers joined by commas, semicolons, "and" or ranges: [1] [1, 2] [1-3] [2–4; 6]
_BRACKET = re.compile(r"\[\s*(\d+(?:\s*(?:,|;|-|–|—|and|&)\s*\d+)*)\s*\]")
_RANGE = re.compile(r"(\d+)\s*[-–—]\s*(\d+)")
_NUMBER = re.compile(r"\d+")


@dataclass
class Citation:
    number: int  # the 1-based passage number the answer cites, as shown to the model
    candidate: Candidate  # the passage it points to (its text, source, heading, chunk id)


def cited_numbers(text: str, limit: int | None = None) -> list[int]:
    """Every distinct number cited in `text`, in order of first appearance.

    Ranges are expanded (`[1-3]` -> 1, 2, 3), but only up to `limit` when given, so a stray
    `[1-100000]` can't produce a huge list; descending ranges are read as their two ends.
    """
    seen: dict[int, None] = {}
    for match in _BRACKET.finditer(text):
        body = match.group(1)
        for part in re.split(r"\s*(?:,|;|and|&)\s*", body):
            bounds = _RANGE.fullmatch(part.strip())
            if bounds:
                lo, hi = int(bounds.group(1)), int(bounds.group(2))
                if lo <= hi:
                    top = hi if limit is None else min(hi, limit)
                    numbers = list(range(lo, top + 1)) or [lo]
                else:
                    numbers = [lo, hi]
            else:
                numbers = [int(n) for n in _NUMBER.findall(part)]
            for n in numbers:
                seen.setdefault(n, None)
    return list(seen)


def parse_citations(text: str, passages: list[Candidate]) -> list[Citation]:
    """Citations in `text` that point at an existing passage, ordered by passage number, no repeats.

    `passages` are the numbered passages of the prompt (`retrieval.selected`, in order): `[n]` is
    `passages[n - 1]`. Numbers outside 1..len(passages) are dropped.
    """
    numbers = cited_numbers(text, limit=len(passages))
    return [Citation(n, passages[n - 1]) for n in sorted(numbers) if 1 <= n <= len(passages)]
