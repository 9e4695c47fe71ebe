"""PDF text through pypdf, one '## Page N' section per page so every chunk knows where it came from."""
from __future__ import annotations

import io
import logging
import re

from rag.ingest.loaders.document import LoadedDocument
from rag.ingest.loaders.errors import (
    CorruptDocumentError,
    EmptyDocumentError,
    EncryptedDocumentError,
    LimitExceededError,
)
from rag.ingest.loaders.limits import IngestLimits

log = logging.getLogger(__name__)


def load_pdf(data: bytes, name: str, limits: IngestLimits | None = None) -> LoadedDocument:
    limits = limits or IngestLimits()
    reader = _open(data, name)
    pages = len(reader.pages)
    if pages > limits.max_pdf_pages:
        raise LimitExceededError(f"{name} has {pages} pages; the limit is {limits.max_pdf_pages}. Split it "
                                 "into smaller PDFs, or raise RAG_MAX_PDF_PAGES.")
    sections = []
    for number, page in enumerate(reader.pages, start=1):
        text = _page_text(page, name, number)
        if text:
            sections.append(f"## Page {number}\n\n{text}")
    if not sections:
        raise EmptyDocumentError(f"{name} has no extractable text (a scanned or image-only PDF?). Run OCR on "
                                 "it first, or upload a text version.")
    return LoadedDocument(text="\n\n".join(sections), title=_title(reader), pages=pages)


def _open(data: bytes, name: str):
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):  # an empty user password still opens many
            raise EncryptedDocumentError(f"{name} is password-protected. Remove the password (e.g. print "
                                         "to a new PDF) and upload it again.")
        len(reader.pages)  # parses the page tree: broken files fail here
        return reader
    except EncryptedDocumentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError) as exc:
        if "decrypt" in str(exc).lower() or "password" in str(exc).lower():
            raise EncryptedDocumentError(f"{name} is encrypted and can't be read ({exc}). Remove the "
                                         "password and upload it again.") from exc
        raise CorruptDocumentError(f"{name} is not a readable PDF ({exc}). Re-export or repair it "
                                   "(e.g. open and 'Save as PDF') and upload it again.") from exc


def _page_text(page, name: str, number: int) -> str:
    try:
        text = page.extract_text() or ""
    except Exception as exc:  # pypdf raises many types on damaged content streams; lose one page only
        log.warning("%s: page %d unreadable: %s", name, number, exc)
        return ""
    return re.sub(r"[ \t]+\n", "\n", text).strip()


def _title(reader) -> str:
    try:
        title = (reader.metadata or {}).get("/Title") or ""
    except Exception:  # broken metadata is no reason to lose the text
        return ""
    return str(title).strip()
