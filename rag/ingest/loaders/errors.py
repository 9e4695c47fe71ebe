"""Why a file could not become text. Every message names the file's problem and what to do about it."""
from __future__ import annotations

from rag.errors import RAGError


class LoaderError(RAGError):
    """A file can't be turned into text; the message says why and how to fix it."""


class UnsupportedFormatError(LoaderError):
    pass


class EmptyDocumentError(LoaderError):
    pass


class BinaryContentError(LoaderError):
    pass


class EncryptedDocumentError(LoaderError):
    pass


class CorruptDocumentError(LoaderError):
    pass


class LimitExceededError(LoaderError):
    pass


class UnsafeArchiveError(LoaderError):
    pass
