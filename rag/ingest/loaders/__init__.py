"""Document loaders: bytes of a supported file -> Markdown-like text, or a `LoaderError` that says why not.

One module per format family; `load_document` picks by suffix. Zip archives are expanded by
`archive.iter_zip` and each member goes through `load_document` again.
"""
from __future__ import annotations

import importlib
from pathlib import Path, PurePosixPath

from rag.ingest.loaders.document import LoadedDocument
from rag.ingest.loaders.errors import (
    BinaryContentError,
    CorruptDocumentError,
    EmptyDocumentError,
    EncryptedDocumentError,
    LimitExceededError,
    LoaderError,
    UnsafeArchiveError,
    UnsupportedFormatError,
)
from rag.ingest.loaders.limits import IngestLimits, over_limit

LOADERS = {  # suffix -> "module:function" in this package, imported on first use
    ".md": "text:load_text", ".markdown": "text:load_text", ".txt": "text:load_text",
    ".pdf": "pdf:load_pdf", ".docx": "docx:load_docx", ".html": "html:load_html", ".htm": "html:load_html",
}
ARCHIVES = {".zip"}
SUPPORTED_SUFFIXES = frozenset(LOADERS) | frozenset(ARCHIVES)

__all__ = ["LoadedDocument", "IngestLimits", "LoaderError", "UnsupportedFormatError", "EmptyDocumentError",
           "BinaryContentError", "EncryptedDocumentError", "CorruptDocumentError", "LimitExceededError",
           "UnsafeArchiveError", "SUPPORTED_SUFFIXES", "suffix_of", "is_supported", "is_archive",
           "load_document", "read_limited"]


def suffix_of(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).suffix.lower()


def is_supported(name: str) -> bool:
    return suffix_of(name) in SUPPORTED_SUFFIXES


def is_archive(name: str) -> bool:
    return suffix_of(name) in ARCHIVES


def load_document(name: str, data: bytes, limits: IngestLimits | None = None) -> LoadedDocument:
    """Convert one document's bytes; `name` (with its suffix) picks the loader."""
    limits = limits or IngestLimits()
    _check_size(name, len(data), limits)
    target = LOADERS.get(suffix_of(name))
    if target is None:
        raise UnsupportedFormatError(f"{name}: unsupported file type {suffix_of(name) or '(no suffix)'!r}. "
                                     f"Supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}.")
    module, function = target.split(":")
    loader = getattr(importlib.import_module(f"{__name__}.{module}"), function)
    return loader(data, name, limits)


def read_limited(path: Path, name: str, limits: IngestLimits) -> bytes:
    """A file's bytes, refusing it before reading when it is over the size limit."""
    _check_size(name, path.stat().st_size, limits)
    return path.read_bytes()


def _check_size(name: str, size: int, limits: IngestLimits) -> None:
    if size > limits.max_file_bytes:
        shown, limit = over_limit(size, limits.max_file_bytes)
        raise LimitExceededError(f"{name} is {shown}; the limit is {limit} per file. Split it, or raise "
                                 "RAG_MAX_FILE_MB.")
