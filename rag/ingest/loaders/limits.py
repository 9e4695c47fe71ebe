"""Size limits that keep one hostile or huge upload from exhausting memory or time."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from rag.settings import env_float, env_int

MB = 1024 * 1024


@dataclass(frozen=True)
class IngestLimits:
    max_file_bytes: int = 50 * MB  # any single file, and any single member of a zip once extracted
    max_pdf_pages: int = 2000
    max_zip_entries: int = 2000
    max_zip_bytes: int = 500 * MB  # all members of one zip, uncompressed
    max_zip_ratio: float = 100.0  # uncompressed / compressed size of a member (zip bombs go far beyond)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "IngestLimits":
        """`RAG_MAX_FILE_MB`, `RAG_MAX_PDF_PAGES`, `RAG_MAX_ZIP_ENTRIES`, `RAG_MAX_ZIP_MB`, `RAG_MAX_ZIP_RATIO`."""
        default = cls()
        return cls(max_file_bytes=int(env_float("RAG_MAX_FILE_MB", default.max_file_bytes / MB, env) * MB),
                   max_pdf_pages=env_int("RAG_MAX_PDF_PAGES", default.max_pdf_pages, env),
                   max_zip_entries=env_int("RAG_MAX_ZIP_ENTRIES", default.max_zip_entries, env),
                   max_zip_bytes=int(env_float("RAG_MAX_ZIP_MB", default.max_zip_bytes / MB, env) * MB),
                   max_zip_ratio=env_float("RAG_MAX_ZIP_RATIO", default.max_zip_ratio, env))


def human_size(n: float, decimals: int = 1) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.{decimals}f} {unit}"
        n /= 1024
    return f"{n} bytes"


def over_limit(size: int, limit: int) -> tuple[str, str]:
    """`size` and `limit` as text precise enough to tell apart: a file one byte over 50 MB must not read
    "is 50.0 MB; the limit is 50.0 MB"."""
    for decimals in (1, 2, 3):
        shown = human_size(size, decimals), human_size(limit, decimals)
        if shown[0] != shown[1]:
            return shown
    return f"{size:,} bytes", f"{limit:,} bytes"
