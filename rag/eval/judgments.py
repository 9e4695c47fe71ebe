"""The judgments format, read by `python -m rag eval` and written by the app: one JSON object per line,

    {"query": "...", "relevant": [item, ...]}

where an item names a relevant chunk by chunk id, document (file name or document id) or a text snippet the
chunk contains, either bare (grade 1) or as {"text": item, "grade": n}. Grades: 2 = relevant, 1 = partly
relevant, 0 = not relevant. Blank lines and lines starting with # are skipped.

`parse_line` is the only parser: the CLI's file, the app's judgments file and its downloads all go through it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.errors import InputError
from rag.types import Candidate

LINE_FORM = '{"query": "...", "relevant": [...]}'
ITEM_FORM = 'a chunk id, a document name, a text snippet or {"text": ..., "grade": n}'
MIN_SNIPPET = 3  # shorter snippets would match almost any chunk's text


class JudgmentError(InputError):
    """A judgment can't be read; the message names where, and the form expected."""


@dataclass
class Relevant:
    value: str  # a chunk id, a document name or id, or a text snippet
    grade: int = 1  # graded relevance (0 = not relevant, 1 = relevant, 2 = highly relevant)

    def matches(self, c: Candidate) -> bool:
        v = self.value.strip()
        return (v == str(c.chunk_id) or v in (c.source, c.doc_id)
                or (len(v) >= MIN_SNIPPET and v.lower() in c.text.lower()))


@dataclass
class Judgment:
    query: str
    relevant: list[Relevant]

    @classmethod
    def from_grades(cls, query: str, grades: dict[str, int]) -> Judgment:
        return cls(query, [Relevant(str(value), int(grade)) for value, grade in grades.items()])

    @property
    def grades(self) -> dict[str, int]:
        """Item -> grade; a later entry for the same item wins, as a later grade does in the app."""
        return {r.value: r.grade for r in self.relevant}

    @property
    def has_relevant(self) -> bool:
        """Whether the metrics can score it: trec_eval ignores a query without an item of grade > 0."""
        return any(r.grade > 0 for r in self.relevant)

    def to_line(self) -> str:
        """The JSONL line `parse_line` reads back; every item with its grade, so nothing is implied."""
        items = [{"text": r.value, "grade": r.grade} for r in self.relevant]
        return json.dumps({"query": self.query, "relevant": items}, ensure_ascii=False)


def parse_judgment(obj: Any) -> Judgment:
    """A decoded JSON line -> `Judgment`; `JudgmentError` says what is missing or malformed."""
    if not isinstance(obj, dict) or not isinstance(obj.get("query"), str) or not obj["query"].strip():
        raise JudgmentError(f"each line needs a non-empty query: {LINE_FORM}")
    items = obj.get("relevant")
    if not isinstance(items, list) or not items:
        raise JudgmentError(f"query {obj['query']!r}: 'relevant' must be a non-empty list of items ({ITEM_FORM})")
    return Judgment(obj["query"], [_relevant(obj["query"], item) for item in items])


def _relevant(query: str, item: Any) -> Relevant:
    if isinstance(item, dict) and "text" in item:
        return Relevant(str(item["text"]), _grade(query, item.get("grade", 1)))
    if isinstance(item, (str, int)) and not isinstance(item, bool):
        return Relevant(str(item))
    raise JudgmentError(f"query {query!r}: an item is {ITEM_FORM}, not {item!r}")


def _grade(query: str, grade: Any) -> int:
    try:
        return int(grade)
    except (TypeError, ValueError):
        raise JudgmentError(f"query {query!r}: a grade is a whole number (2 relevant, 1 partly, 0 not), "
                            f"not {grade!r}") from None


def parse_line(line: str) -> Judgment | None:
    """One line of a judgments file: a `Judgment`, or None for a blank line or a # comment."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise JudgmentError(f"not valid JSON ({getattr(exc, 'msg', exc)}); each line is {LINE_FORM}") from None
    return parse_judgment(obj)


def load_judgments(path: str | Path) -> list[Judgment]:
    """Every judgment of a JSONL file; an error names the file and line to fix."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JudgmentError(f"can't read the judgments file {path} ({getattr(exc, 'strerror', None) or exc}): "
                            "pass the path of a UTF-8 JSONL file") from exc
    judgments = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            judgment = parse_line(line)
        except JudgmentError as exc:
            raise JudgmentError(f"{path}:{number}: {exc}") from exc
        if judgment is not None:
            judgments.append(judgment)
    if not judgments:
        raise JudgmentError(f"{path}: no judgments found; write one JSON object per line: {LINE_FORM}")
    return judgments
