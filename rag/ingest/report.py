"""What an ingestion did: one `FileResult` per document, stage timings, and the progress it reported."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

STAGES = ("parse", "chunk", "embed", "write", "index")
ProgressFn = Callable[[str, float], None]  # (message, fraction done in 0..1)


@dataclass
class FileResult:
    source: str  # display name (inside a zip: "archive.zip/inner/path.md")
    status: str  # "ok" | "skipped" | "failed"
    chunks: int = 0
    reason: str = ""
    doc_id: str = ""
    tokens: int = 0  # tokens of the chunks written
    reused: int = 0  # chunks whose stored vectors were kept (unchanged parts of a replaced file)


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))  # stage -> s
    seconds: float = 0.0  # wall time of the whole call

    @property
    def chunks(self) -> int:
        return sum(f.chunks for f in self.files if f.status == "ok")

    @property
    def tokens(self) -> int:
        return sum(f.tokens for f in self.files if f.status == "ok")

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def skipped(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "skipped"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        done = sum(f.status == "ok" for f in self.files)
        return (f"{done} added, {len(self.skipped)} skipped, {len(self.failed)} failed; "
                f"{self.chunks} chunks in {self.seconds:.1f} s")

    @contextmanager
    def timed(self, stage: str):
        """Add the block's wall time to `stage` (the report is per call, so concurrent ingests don't mix)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] += time.perf_counter() - started


class Span:
    """A slice [lo, hi] of the overall progress; sub-steps report fractions of it, never going backwards."""

    def __init__(self, fn: ProgressFn | None, lo: float = 0.0, hi: float = 1.0, _last: list | None = None):
        self.fn, self.lo, self.hi = fn, lo, hi
        self._last = _last if _last is not None else [0.0]

    def report(self, message: str, fraction: float) -> None:
        if self.fn is None:
            return
        value = min(1.0, max(self._last[0], self.lo + (self.hi - self.lo) * min(1.0, max(0.0, fraction))))
        self._last[0] = value
        self.fn(message, value)

    def part(self, index: int, total: int) -> "Span":
        width = (self.hi - self.lo) / max(1, total)
        return Span(self.fn, self.lo + index * width, self.lo + (index + 1) * width, self._last)
