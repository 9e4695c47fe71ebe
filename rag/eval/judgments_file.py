"""The app's shared judgments file (`--judgments-file`): the format `python -m rag eval` reads, one line per
judged query, updated on every grade from every session and every app process."""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rag.eval.judgments import Judgment, JudgmentError, parse_line

log = logging.getLogger(__name__)


class JudgmentsFile:
    """Each grade rewrites its query's line, merging the grades already there (the newest grade of a passage
    wins), atomically and under a lock: a thread lock, plus an flock on `<file>.lock` where available, for
    several app processes. Other lines — other queries, comments, lines edited by hand — stay as they are."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def record(self, query: str, grades: dict[str, int]) -> None:
        with self._lock, _file_lock(self.path.with_name(self.path.name + ".lock")):
            lines = self.path.read_text(encoding="utf-8").splitlines() if self.path.exists() else []
            merged: dict[str, int] = {}
            kept, position = [], None
            for number, line in enumerate(lines, start=1):
                judgment = self._judgment(line, number)
                if judgment is not None and judgment.query == query:
                    merged.update(judgment.grades)
                    position = len(kept) if position is None else position
                    continue
                kept.append(line)
            merged.update({str(k): int(v) for k, v in grades.items()})
            kept.insert(len(kept) if position is None else position, Judgment.from_grades(query, merged).to_line())
            _atomic_write(self.path, "".join(f"{x}\n" for x in kept))

    def _judgment(self, line: str, number: int) -> Judgment | None:
        try:
            return parse_line(line)
        except JudgmentError as exc:
            # Not ours to repair: keep the line, and `python -m rag eval` will point at it.
            log.warning("%s:%d is not a judgment, kept as it is: %s", self.path, number, exc)
            return None


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: the thread lock still serialises this process
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
