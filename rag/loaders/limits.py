"""Size limits that keep one hostile or huge upload from exhausting memory or time."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

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
        env = os.environ if env is None else env
        values: dict = {}
        if "RAG_MAX_FILE_MB" in env:
            values["max_file_bytes"] = int(float(env["RAG_MAX_FILE_MB"]) * MB)
        if "RAG_MAX_PDF_PAGES" in env:
            values["max_pdf_pages"] = int(env["RAG_MAX_PDF_PAGES"])
        if "RAG_MAX_ZIP_ENTRIES" in env:
            values["max_zip_entries"] = int(env["RAG_MAX_ZIP_ENTRIES"])
        if "RAG_MAX_ZIP_MB" in env:
            values["max_zip_bytes"] = int(float(env["RAG_MAX_ZIP_MB"]) * MB)
        if "RAG_MAX_ZIP_RATIO" in env:
            values["max_zip_ratio"] = float(env["RAG_MAX_ZIP_RATIO"])
        return cls(**values)


def human_size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"
