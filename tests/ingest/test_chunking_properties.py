"""Chunking invariants over generated Markdown-like documents: the token cap holds, no text is lost, and every
piece keeps its heading path. The expected sections come from the generator, not from the module."""
from __future__ import annotations

import itertools
import unicodedata
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag.ingest.chunking import chunk_text

# Letters, CJK, RTL, and user-perceived characters of several code points (combining accent, ZWJ family,
# flag, skin tone), so cuts inside a long word are tested on them too. Nothing that Markdown reads as syntax.
ATOMS = ["a", "owl", "Eule", "é", "ß", "Жук", "日本", "鳥", "e\u0301", "🦉", "👩\u200d👩\u200d👧", "🇫🇷", "👍🏽",
         "سلام", "x9"]
TITLE_ATOMS = ["Owls", "barn", "é", "Жук", "日本", "x"]
ENDINGS = ["", "", "", "", ".", "!", "?", ";", ",", ":"]  # sentence ends now and then

def words(text: str) -> int:
    return len(text.split())


def chars(text: str) -> int:
    """About four characters a token: a long word without spaces is many tokens, more than the cap."""
    return max(1, len(text) // 4)


def utf8_bytes(text: str) -> int:
    """Tokens spread unevenly over characters (CJK and emoji cost more), as in byte-level tokenizers."""
    return max(1, len(text.encode()) // 4)


COUNTERS = [words, chars, utf8_bytes]



def repeated(words: list[str], times: int) -> str:
    return " ".join(words * times)


# Repeats keep the drawn data small (Hypothesis caps it) while the text grows long.
atoms = st.lists(st.sampled_from(ATOMS), min_size=1, max_size=4).map("".join)
word = st.builds(str.__add__, atoms, st.sampled_from(ENDINGS))
long_word = st.builds(str.__mul__, atoms, st.integers(15, 100))  # no spaces at all: often over the cap
line = st.builds(repeated, st.lists(st.one_of(word, word, word, long_word), min_size=1, max_size=8),
                 st.integers(1, 4))
paragraph = st.lists(line, min_size=1, max_size=3).map("\n".join)
body = st.lists(paragraph, max_size=4).map("\n\n".join)  # may be blank: a heading-only section
title_words = st.lists(st.sampled_from(TITLE_ATOMS), min_size=1, max_size=2).map(" ".join)


@dataclass
class Expected:
    heading: str  # TextPiece.heading
    header: str  # the heading line(s) the text starts with
    body: str


@dataclass
class Document:
    text: str
    title: str
    sections: list[Expected]  # the sections with a body, in order


@st.composite
def documents(draw) -> Document:
    """Text before any heading (maybe none), then headings of levels 1-4, each title unique, each body maybe
    blank; the expected heading path and header of each section are worked out as the document is built."""
    title = draw(st.sampled_from(["", "Field notes"]))
    preamble = draw(body)
    levels = draw(st.lists(st.integers(1, 4), max_size=6))
    titles = [f"{draw(title_words)} {i}" for i in range(len(levels))]
    bodies = [draw(body) for _ in levels]
    # The first heading is the document's title (dropped from the headers under it) when it opens the text
    # and every other heading nests under it.
    root = titles[0] if levels and not preamble and all(lv > levels[0] for lv in levels[1:]) else ""
    parts = [preamble] if preamble else []
    expected = [Expected(title, title, preamble)] if preamble else []
    stack: list[tuple[int, str]] = []
    for level, name, text in zip(levels, titles, bodies):
        stack = [(lv, t) for lv, t in stack if lv < level] + [(level, name)]
        path = [t for _, t in stack]
        shown = path[1:] if root and len(path) > 1 else path
        parts += ["#" * level + " " + name] + ([text] if text else [])
        if text:
            expected.append(Expected(" > ".join(path), " > ".join(shown), text))
    return Document("\n\n".join(parts) + "\n", title, expected)


def for_each_counter(test):
    """Each property under every counter; derandomized so CI sees the same examples every run."""
    test = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])(test)
    return pytest.mark.parametrize("count", COUNTERS)(test)


def chunk(doc: Document, count, **options):
    return chunk_text(doc.text, count=count, title=doc.title, **options)


def squash(text: str) -> str:
    return "".join(text.split())


def body_of(text: str, header: str) -> str:
    return text[len(header) + 2:] if header else text


def covers(whole: str, parts: list[str]) -> bool:
    """Whether `parts`, each a run of `whole`, cover it end to end in their order (overlaps allowed)."""
    end = 0
    for part in parts:
        start = whole.rfind(part, 0, end + len(part))  # the furthest place that leaves no gap
        if start < 0:
            return False
        end = max(end, start + len(part))
    return end == len(whole)


def by_section(doc: Document, pieces) -> list[tuple[Expected, list]]:
    """Pieces grouped by section: with no merging, each section's pieces come together, in order."""
    groups = [(heading, list(group)) for heading, group in itertools.groupby(pieces, key=lambda p: p.heading)]
    assert [heading for heading, _ in groups] == [s.heading for s in doc.sections]
    return [(section, group) for section, (_, group) in zip(doc.sections, groups)]


def splits_a_character(text: str) -> bool:
    """A piece body that starts inside a user-perceived character, or ends inside one."""
    first = text[0]
    return (unicodedata.category(first) in ("Mn", "Mc", "Me") or "\U0001F3FB" <= first <= "\U0001F3FF"
            or "\u200d" in (first, text[-1]))


@for_each_counter
@given(doc=documents(), max_tokens=st.integers(40, 150), overlap=st.integers(0, 40), min_tokens=st.integers(0, 30))
def test_every_piece_fits_the_cap(count, doc, max_tokens, overlap, min_tokens):
    pieces = chunk(doc, count, max_tokens=max_tokens, overlap=overlap, min_tokens=min_tokens)
    assert [count(p.text) for p in pieces if count(p.text) > max_tokens] == []


@for_each_counter
@given(doc=documents(), max_tokens=st.integers(40, 150), overlap=st.integers(0, 40))
def test_no_text_is_lost(count, doc, max_tokens, overlap):
    pieces = chunk(doc, count, max_tokens=max_tokens, overlap=overlap, min_tokens=0)
    for section, group in by_section(doc, pieces):
        bodies = [body_of(p.text, section.header) for p in group]
        assert covers(squash(section.body), [squash(b) for b in bodies])
        if overlap == 0:
            assert squash("".join(bodies)) == squash(section.body)  # and nothing repeated
        assert not any(splits_a_character(b) for b in bodies)


@for_each_counter
@given(doc=documents(), max_tokens=st.integers(40, 150), overlap=st.integers(0, 40))
def test_every_piece_keeps_its_heading_path(count, doc, max_tokens, overlap):
    pieces = chunk(doc, count, max_tokens=max_tokens, overlap=overlap, min_tokens=0)
    for section, group in by_section(doc, pieces):
        assert all(p.heading == section.heading for p in group)
        if section.header:
            assert all(p.text.startswith(section.header + "\n\n") for p in group)


@for_each_counter
@given(doc=documents(), max_tokens=st.integers(40, 150), min_tokens=st.integers(1, 30))
def test_merged_pieces_start_with_a_heading_line_and_lose_nothing(count, doc, max_tokens, min_tokens):
    pieces = chunk(doc, count, max_tokens=max_tokens, overlap=0, min_tokens=min_tokens)
    assert all(p.heading in {s.heading for s in doc.sections} for p in pieces)
    assert all(starts_with_a_heading_line(p.text, doc) for p in pieces)
    remaining = iter(squash("".join(p.text for p in pieces)))
    assert all(char in remaining for char in squash("".join(s.body for s in doc.sections)))  # in order


def starts_with_a_heading_line(text: str, doc: Document) -> bool:
    """A merged piece starts with the heading line of its first section, or, where that section has none
    (text before the first heading, no title), with some of its text."""
    if text.startswith(tuple(s.header + "\n\n" for s in doc.sections if s.header)):
        return True
    return any(text.split()[0] in squash(s.body) for s in doc.sections if not s.header)
