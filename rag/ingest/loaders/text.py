"""Plain text and Markdown: detect the encoding, refuse binaries that only carry a text suffix."""
from __future__ import annotations

import unicodedata

from rag.ingest.loaders.document import LoadedDocument
from rag.ingest.loaders.errors import BinaryContentError, EmptyDocumentError

CONTROL_RATIO = 0.01  # more than 1% control characters: not text
ALLOWED_CONTROLS = set("\t\n\r\f\v")
BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def decode_text(data: bytes, name: str) -> str:
    """Bytes -> str: UTF-8 when valid, else the encoding charset-normalizer finds; binaries raise."""
    if not data.strip():
        raise EmptyDocumentError(f"{name} is empty: there is no text to add.")
    if b"\x00" in data[:4096] and not data.startswith(BOMS):
        raise _binary(name)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = _detect(data, name)
    if _control_ratio(text) > CONTROL_RATIO:
        raise _binary(name)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _detect(data: bytes, name: str) -> str:
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise _binary(name)
    return str(best)


def _control_ratio(text: str) -> float:
    sample = text[:20000]
    bad = sum(1 for ch in sample if ch not in ALLOWED_CONTROLS and unicodedata.category(ch) in ("Cc", "Cs"))
    return bad / max(1, len(sample))


def _binary(name: str) -> BinaryContentError:
    return BinaryContentError(f"{name} looks like a binary file, not text. Upload the document in a supported "
                              "format (.md, .txt, .pdf, .docx, .html) instead of renaming it.")


def load_text(data: bytes, name: str, limits=None) -> LoadedDocument:
    text = decode_text(data, name)
    if not text.strip():
        raise EmptyDocumentError(f"{name} contains only whitespace: there is no text to add.")
    return LoadedDocument(text=text)
