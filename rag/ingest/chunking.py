"""Header-aware chunking of Markdown-like text, capped in tokens of the embedding model's tokenizer.

Each heading starts a section; its heading path ("Guide > Install > Linux") is kept as metadata and at the top
of the chunk text, so a section that only makes sense under its heading still embeds with it. Long sections are
cut at paragraph, then line, sentence and word boundaries into balanced windows of at most `max_tokens`, with
up to `overlap` tokens repeated between neighbours. Fragments under `min_tokens` merge into a neighbour.

Token counts of the parts are summed (plus one per joint) rather than re-counting every candidate window, so
chunking stays linear in the text; pieces near the cap are re-counted exactly. The rare one that overflows
after all (a counter that is not additive, a cut by characters) is cut again the same way, under its own
heading line, with a budget shrunk by how far its estimate fell short, until every part fits. So the cap holds
for any counter whose estimates undercount by less than a fifth; the one exception is a heading line that
leaves no room for any text, which is kept whole rather than lost. Characters are cut only inside a word too
long for the budget, and never inside a user-perceived character (a letter and its combining marks, an emoji
sequence).
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Sequence

HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(={3,}|-{3,})[ \t]*$")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", re.DOTALL)
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
LINE_BREAK = re.compile(r"\n")
SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
ZWJ = "\u200d"
HEADING_CHARS = 300  # a heading path longer than this is clipped in the chunk text
SEPARATOR = " > "

TokenCounter = Callable[[str], int]
BatchCounter = Callable[[Sequence[str]], list[int]]


@dataclass
class TextPiece:
    text: str  # what gets embedded and shown: heading path + section body
    heading: str  # heading path, " > " separated
    tokens: int = 0  # estimated tokens of `text`
    body_tokens: int = 0  # estimated tokens without the heading line(s)


@dataclass
class _Draft(TextPiece):
    header: str = ""  # the heading line(s) `text` starts with, to repeat atop any part cut from it

    def done(self, tokens: int) -> TextPiece:
        return TextPiece(self.text, self.heading, tokens, self.body_tokens)


@dataclass
class Section:
    path: list[str]
    body: str

    @property
    def heading(self) -> str:
        return SEPARATOR.join(self.path)


@dataclass
class _Unit:
    text: str
    sep: str  # joins this unit to the one before it
    tokens: int


def approx_tokens(text: str) -> int:
    """Fallback counter when no tokenizer is given: ~4 characters a token for English."""
    return max(1, len(text) // 4)


# --- sections ---------------------------------------------------------------------------------------
def strip_front_matter(text: str) -> tuple[str, str]:
    """Remove a leading YAML front-matter block; return (body, its `title:` or "")."""
    match = FRONT_MATTER.match(text)
    if not match:
        return text, ""
    title = re.search(r"^title:\s*(.+)$", match.group(1), re.MULTILINE)
    return text[match.end():], title.group(1).strip().strip("'\"") if title else ""


def split_sections(text: str) -> list[Section]:
    """Sections in order: ATX ('## x') and setext ('x\\n===') headings open them; fenced code never does."""
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []
    fence = ""

    def open_section(level: int, title: str) -> None:
        nonlocal path, body
        sections.append(Section([t for _, t in path], "\n".join(body).strip()))
        path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, title)]
        body = []

    for line in text.splitlines():
        fence = _fence_state(line, fence)
        if fence or FENCE.match(line):
            body.append(line)
            continue
        atx = HEADING.match(line)
        if atx:
            open_section(len(atx.group(1)), atx.group(2).strip())
        elif SETEXT.match(line) and _setext_title(body):
            title = body.pop().strip()
            open_section(1 if line.strip().startswith("=") else 2, title)
        else:
            body.append(line)
    sections.append(Section([t for _, t in path], "\n".join(body).strip()))
    return [s for s in sections if s.body or s.path]


def _fence_state(line: str, fence: str) -> str:
    """The open fence marker after `line` ('' when outside code)."""
    match = FENCE.match(line)
    if not match:
        return fence
    marker = match.group(1)
    if not fence:
        return marker
    return "" if marker[0] == fence[0] and len(marker) >= len(fence) else fence


def _setext_title(body: list[str]) -> bool:
    """A setext underline needs a one-line paragraph of plain text right above it."""
    if not body or not body[-1].strip():
        return False
    if len(body) > 1 and body[-2].strip():
        return False
    return not re.match(r"^\s*([-*+>|]|\d+[.)])\s", body[-1])


# --- counting ---------------------------------------------------------------------------------------
def _batch_counter(count: TokenCounter, count_many: BatchCounter | None) -> BatchCounter:
    return count_many or (lambda texts: [count(t) for t in texts])


def _units(body: str, budget: int, count_many: BatchCounter) -> list[_Unit]:
    """Paragraphs; any over `budget` become lines, then sentences, then word runs, then words, then (a word
    alone over budget) character runs."""
    levels = [(PARAGRAPH_BREAK.split, "\n\n"), (LINE_BREAK.split, "\n"), (SENTENCE_END.split, " "),
              (lambda text: _word_runs(text, budget), " "), (str.split, " ")]
    return _split(body, "\n\n", levels, budget, count_many)


def _split(text: str, sep: str, levels, budget: int, count_many: BatchCounter) -> list[_Unit]:
    splitter, child_sep = levels[0]
    parts = [p.strip() for p in splitter(text)]
    parts = [p for p in parts if p]
    units: list[_Unit] = []
    for i, (part, tokens) in enumerate(zip(parts, count_many(parts))):
        first_sep = sep if i == 0 else child_sep
        if tokens <= budget:
            units.append(_Unit(part, first_sep, tokens))
        elif len(levels) > 1:
            sub = _split(part, first_sep, levels[1:], budget, count_many)
            units.extend(sub)
        else:
            units.extend(_char_runs(part, first_sep, tokens, budget, count_many))
    return units


def _word_runs(text: str, budget: int) -> list[str]:
    words = text.split()
    step = max(1, budget // 4)  # words, so a run is well under budget for ordinary text
    return [" ".join(words[i:i + step]) for i in range(0, len(words), step)]


def _char_runs(text: str, sep: str, tokens: int, budget: int, count_many: BatchCounter) -> list[_Unit]:
    """Last resort for one over-long word (base64, long URLs): proportional character cuts, counted again, as
    their tokens need not be spread evenly (a word that turns from Latin to CJK)."""
    size = max(1, len(text) * budget // (tokens + 1))
    cuts: list[str] = []
    start = 0
    while start < len(text):
        end = _cluster_end(text, start, start + size)
        cuts.append(text[start:end])
        start = end
    return [_Unit(c, sep if i == 0 else "", n) for i, (c, n) in enumerate(zip(cuts, count_many(cuts)))]


def _cluster_end(text: str, start: int, i: int) -> int:
    """The first position from `i` where a cut leaves every user-perceived character whole; `start`, before
    `i`, is such a position."""
    while i < len(text) and _inside_cluster(text, start, i):
        i += 1
    return min(i, len(text))


def _inside_cluster(text: str, start: int, i: int) -> bool:
    """Whether a cut before text[i] splits a user-perceived character: a simplified UAX #29 (combining marks,
    variation selectors, emoji modifiers, tags and ZWJ sequences, flags)."""
    char, before = text[i], text[i - 1]
    if unicodedata.category(char) in ("Mn", "Mc", "Me") or ZWJ in (char, before):
        return True
    if "\U0001F3FB" <= char <= "\U0001F3FF" or "\U000E0020" <= char <= "\U000E007F":
        return True
    # Flags are pairs of regional letters: counted from a boundary, an odd run before `i` ends mid-flag.
    return _is_flag_letter(char) and _flag_letters(text, start, i) % 2 == 1


def _is_flag_letter(char: str) -> bool:
    return "\U0001F1E6" <= char <= "\U0001F1FF"


def _flag_letters(text: str, start: int, i: int) -> int:
    """Regional letters running up to `i`, from `start` at most (a boundary, so the pairing restarts there)."""
    run = 0
    while i - run > start and _is_flag_letter(text[i - run - 1]):
        run += 1
    return run


# --- windows ----------------------------------------------------------------------------------------
def _join(units: Sequence[_Unit]) -> str:
    return "".join((u.sep if i else "") + u.text for i, u in enumerate(units))


def _size(units: Sequence[_Unit]) -> int:
    return sum(u.tokens for u in units) + max(0, len(units) - 1)


def _windows(units: list[_Unit], budget: int, overlap: int, counter: BatchCounter) -> list[list[_Unit]]:
    """Greedy windows aimed at an even size, so the last one is not a scrap; each at most `budget`."""
    total = _size(units)
    if total <= budget:
        return [units]
    count = math.ceil(total / max(1, budget - overlap))
    target = min(budget, math.ceil(total / count) + overlap)
    windows: list[list[_Unit]] = []
    current: list[_Unit] = []
    for unit in units:
        if current and _size(current + [unit]) > target:
            windows.append(current)
            current = _tail(current, overlap, counter)
            if _size(current + [unit]) > budget:
                current = []
        current.append(unit)
    if current:
        windows.append(current)
    return windows


def _tail(units: list[_Unit], overlap: int, counter: BatchCounter) -> list[_Unit]:
    """The last units of a window that fit in `overlap` tokens, repeated at the start of the next."""
    tail: list[_Unit] = []
    for unit in reversed(units):
        if _size([unit] + tail) > overlap:
            break
        tail.insert(0, unit)
    return tail or _sentence_tail(units[-1], overlap, counter) if units else tail


def _sentence_tail(unit: _Unit, overlap: int, counter: BatchCounter) -> list[_Unit]:
    """The closing sentences of a unit too big to repeat whole: picked by length, then counted, as the
    window they open is sized by that count."""
    sentences = SENTENCE_END.split(unit.text)
    picked: list[str] = []
    for sentence in reversed(sentences[1:]):  # never the whole unit
        if _estimate(unit, " ".join([sentence] + picked)) > overlap:
            break
        picked.insert(0, sentence)
    if not picked:
        return []
    text = " ".join(picked)
    return [_Unit(text, unit.sep, counter([text])[0])]


def _estimate(unit: _Unit, part: str) -> int:
    return math.ceil(unit.tokens * len(part) / max(1, len(unit.text)))


# --- pieces -----------------------------------------------------------------------------------------
def chunk_text(text: str, *, max_tokens: int = 512, overlap: int = 64, min_tokens: int = 16,
               count: TokenCounter = approx_tokens, count_many: BatchCounter | None = None,
               title: str = "") -> list[TextPiece]:
    """Split Markdown-like text into pieces of at most `max_tokens` tokens (heading line included).

    `count` counts one text, `count_many` (optional, faster) a batch. `title` stands in as the heading of
    text before the first heading (a YAML front-matter `title:` does too). Heading-only sections produce no
    piece of their own: their heading lives on in the path of the sections below them.

    The chunk text starts with the heading path, less the document's title heading (a lone top-level
    heading that opens the document) below it: every chunk of the document shares it, so it can't tell them
    apart and only pulls their embeddings together. `TextPiece.heading` keeps the full path."""
    counter = _batch_counter(count, count_many)
    text, front_title = strip_front_matter(text.replace("\r\n", "\n"))
    title = title or front_title
    sections = split_sections(text)
    root = _title_root(sections)
    pieces: list[_Draft] = []
    for section in sections:
        if section.body:
            pieces.extend(_section_pieces(section, title, root, max_tokens, overlap, counter))
    pieces = _merge_tiny(pieces, min_tokens, max_tokens)
    return _enforce_cap(pieces, max_tokens, counter)


def _title_root(sections: list[Section]) -> str:
    """The document's title heading: its first heading, when all other sections sit under it and no text
    comes before it; "" otherwise."""
    paths = [s.path for s in sections if s.path]
    if not paths or any(p[0] != paths[0][0] for p in paths) or sum(len(p) == 1 for p in paths) > 1:
        return ""
    return paths[0][0] if all(s.path for s in sections if s.body) else ""


def _section_pieces(section: Section, title: str, root: str, max_tokens: int, overlap: int,
                    counter: BatchCounter) -> list[_Draft]:
    heading = section.heading or title
    shown = section.path[1:] if root and len(section.path) > 1 and section.path[0] == root else section.path
    header = (SEPARATOR.join(shown) or title)[:HEADING_CHARS]
    header_tokens = _header_tokens(header, counter)
    budget = max(16, max_tokens - header_tokens)
    under = _Draft("", heading, header=header)
    return _cut(section.body, under, header_tokens, budget, min(overlap, budget // 2), counter)


def _header_tokens(header: str, counter: BatchCounter) -> int:
    return counter([header])[0] + 1 if header else 0  # + 1 for the blank line under it


def _cut(body: str, under: _Draft, header_tokens: int, budget: int, overlap: int,
         counter: BatchCounter) -> list[_Draft]:
    """Windows of `body` of at most `budget` estimated tokens, each under the heading line of `under`."""
    pieces = []
    for window in _windows(_units(body, budget, counter), budget, overlap, counter):
        text = f"{under.header}\n\n{_join(window)}" if under.header else _join(window)
        pieces.append(_Draft(text, under.heading, header_tokens + _size(window), _size(window), under.header))
    return pieces


def _merge_tiny(pieces: list[TextPiece], min_tokens: int, max_tokens: int) -> list[TextPiece]:
    """Fold pieces under `min_tokens` (heading line included) into a neighbour with room: forward into a
    subsection of theirs (an intro line joins what it introduces), else backward, else forward."""
    out: list[TextPiece] = []
    carry: TextPiece | None = None
    for i, piece in enumerate(pieces):
        if carry is not None:
            if _fits(carry, piece, max_tokens):
                piece = _combine(carry, piece, heading=piece.heading)
            else:
                out.append(carry)
            carry = None
        if piece.tokens >= min_tokens:
            out.append(piece)
            continue
        nxt = pieces[i + 1] if i + 1 < len(pieces) else None
        introduces = nxt is not None and nxt.heading.startswith(piece.heading + SEPARATOR)
        if introduces and _fits(piece, nxt, max_tokens):
            carry = piece
        elif out and _fits(out[-1], piece, max_tokens):
            out[-1] = _combine(out[-1], piece, heading=out[-1].heading)
        elif nxt is not None and _fits(piece, nxt, max_tokens):
            carry = piece
        else:
            out.append(piece)
    if carry is not None:
        out.append(carry)
    return out


def _fits(a: TextPiece, b: TextPiece, max_tokens: int) -> bool:
    return a.tokens + b.tokens + 1 <= max_tokens


def _combine(a: _Draft, b: _Draft, heading: str) -> _Draft:
    return _Draft(f"{a.text}\n\n{b.text}", heading, a.tokens + b.tokens + 1, a.body_tokens + b.body_tokens,
                  a.header)


def _enforce_cap(pieces: list[_Draft], max_tokens: int, counter: BatchCounter) -> list[TextPiece]:
    """Re-count pieces whose estimate is near the cap; cut again the rare one that overflows after all."""
    near = [i for i, piece in enumerate(pieces) if piece.tokens >= 0.8 * max_tokens]
    exact = dict(zip(near, counter([pieces[i].text for i in near])))
    out: list[TextPiece] = []
    for i, piece in enumerate(pieces):
        if i not in exact:
            out.append(piece.done(piece.tokens))
        else:
            out.extend(_fitted(piece, exact[i], max_tokens, max_tokens, counter))
    return out


def _fitted(piece: _Draft, exact: int, ceiling: int, max_tokens: int, counter: BatchCounter) -> list[TextPiece]:
    """`piece` if its `exact` count fits, else its body cut again under its heading line with a budget below
    `ceiling` (so this ends), shrunk by how far the estimate fell short; the same for each part."""
    if exact <= max_tokens:
        return [piece.done(exact)]
    header_tokens = _header_tokens(piece.header, counter)
    room = max_tokens - header_tokens
    estimate = piece.tokens - header_tokens
    budget = min(ceiling - 1, estimate * room // max(1, exact - header_tokens))
    if room < 1 or budget < 1:
        return [piece.done(exact)]  # no room under the heading line, or one character over it: can't cut
    body = piece.text[len(piece.header) + 2:] if piece.header else piece.text
    parts = _cut(body, piece, header_tokens, budget, 0, counter)
    counts = counter([part.text for part in parts])
    return [fit for part, n in zip(parts, counts) for fit in _fitted(part, n, budget, max_tokens, counter)]
