"""Header-aware chunking of Markdown-like text, capped in tokens of the embedding model's tokenizer.

Each heading starts a section; its heading path ("Guide > Install > Linux") is kept as metadata and at the top
of the chunk text, so a section that only makes sense under its heading still embeds with it. Long sections are
cut into overlapping windows of at most `max_tokens`; heading-only fragments merge into what follows.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
FENCE = re.compile(r"^\s*(```|~~~)")
FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---[ \t]*\n", re.DOTALL)

TokenCounter = Callable[[str], int]


@dataclass
class TextPiece:
    text: str  # what gets embedded and shown: heading path + section body
    heading: str  # heading path, " > " separated


def approx_tokens(text: str) -> int:
    """Fallback counter when no tokenizer is given: ~4 characters a token for English."""
    return max(1, len(text) // 4)


def split_sections(text: str) -> list[tuple[list[str], str]]:
    """(heading path, body) per section, in order; headings inside code fences are not headings."""
    sections: list[tuple[list[str], str]] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []
    in_fence = False

    def flush() -> None:
        sections.append(([t for _, t in path], "\n".join(body).strip()))

    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else HEADING.match(line)
        if match:
            flush()
            body = []
            level = len(match.group(1))
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, match.group(2).strip())]
        else:
            body.append(line)
    flush()
    return [(p, b) for p, b in sections if b or p]


def _windows(body: str, budget: int, overlap: int, count: TokenCounter) -> list[str]:
    """Cut `body` at paragraph, then line, then word boundaries into pieces of at most `budget` tokens."""
    if count(body) <= budget:
        return [body]
    units = _units(body, budget, count)
    pieces, current = [], []
    for unit in units:
        if current and count(" ".join(current + [unit])) > budget:
            pieces.append(" ".join(current))
            current = _tail(current, overlap, count)
        current.append(unit)
    if current:
        pieces.append(" ".join(current))
    return pieces


def _units(body: str, budget: int, count: TokenCounter) -> list[str]:
    units: list[str] = []
    for para in re.split(r"\n\s*\n", body):
        if count(para) <= budget:
            units.append(para)
            continue
        for line in para.splitlines():
            if count(line) <= budget:
                units.append(line)
            else:  # one huge line: fall back to words, and to characters for a word-less blob
                words = line.split(" ")
                step = max(1, len(words) // max(2, count(line) // max(1, budget // 2)))
                for i in range(0, len(words), step):
                    part = " ".join(words[i:i + step])
                    units.extend(_hard_cut(part, budget, count))
    return [u for u in units if u.strip()]


def _hard_cut(text: str, budget: int, count: TokenCounter) -> list[str]:
    if count(text) <= budget:
        return [text]
    size = max(1, len(text) * budget // (count(text) + 1))
    return [text[i:i + size] for i in range(0, len(text), size)]


def _tail(units: list[str], overlap: int, count: TokenCounter) -> list[str]:
    """The last units of a window that fit in `overlap` tokens, repeated at the start of the next."""
    tail: list[str] = []
    for unit in reversed(units):
        if count(" ".join([unit] + tail)) > overlap:
            break
        tail.insert(0, unit)
    return tail


def strip_front_matter(text: str) -> tuple[str, str]:
    """Remove a leading YAML front-matter block; return (body, its `title:` or "")."""
    match = FRONT_MATTER.match(text)
    if not match:
        return text, ""
    title = re.search(r"^title:\s*(.+)$", match.group(1), re.MULTILINE)
    return text[match.end():], title.group(1).strip().strip("'\"") if title else ""


def chunk_text(text: str, *, max_tokens: int = 512, overlap: int = 64, min_tokens: int = 8,
               count: TokenCounter = approx_tokens, title: str = "") -> list[TextPiece]:
    """Split Markdown-like text into pieces of at most `max_tokens` (heading line included).

    Heading-only sections produce no piece of their own: their heading lives on in the path of the
    sections below them."""
    text, front_title = strip_front_matter(text)
    title = title or front_title
    pieces: list[TextPiece] = []
    for path, body in split_sections(text):
        if not body:
            continue
        heading = " > ".join(path) or title
        header = heading + "\n\n" if heading else ""
        budget = max(16, max_tokens - count(header))
        for window in _windows(body, budget, min(overlap, budget // 2), count):
            pieces.append(TextPiece(text=(header + window).strip(), heading=heading))
    return _merge_tiny(pieces, min_tokens, max_tokens, count)


def _merge_tiny(pieces: list[TextPiece], min_tokens: int, max_tokens: int,
                count: TokenCounter) -> list[TextPiece]:
    """Fold fragments under `min_tokens` into their predecessor when it has room."""
    merged: list[TextPiece] = []
    for piece in pieces:
        if merged and count(piece.text) < min_tokens and \
                count(merged[-1].text + "\n\n" + piece.text) <= max_tokens:
            merged[-1] = TextPiece(merged[-1].text + "\n\n" + piece.text, merged[-1].heading)
        else:
            merged.append(piece)
    return merged
