"""Word documents through python-docx: headings become '#' lines, lists '- ', tables Markdown tables."""
from __future__ import annotations

import io
import re
import zipfile

from rag.ingest.loaders.document import LoadedDocument
from rag.ingest.loaders.errors import CorruptDocumentError, EmptyDocumentError

HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)


def load_docx(data: bytes, name: str, limits=None) -> LoadedDocument:
    document = _open(data, name)
    try:
        blocks = [_block(item) for item in document.iter_inner_content()]
        title = (document.core_properties.title or "").strip()
    except Exception as exc:  # noqa: BLE001 - a damaged part surfaces as lxml/KeyError/... deep inside
        raise _damaged(name, exc) from exc
    text = "\n\n".join(b for b in blocks if b)
    if not text.strip():
        raise EmptyDocumentError(f"{name} has no text in its body (only images or empty?).")
    return LoadedDocument(text=text, title=title)


def _open(data: bytes, name: str):
    import docx

    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise CorruptDocumentError(f"{name} is not a valid Word file (a .docx is a zip package, and this is not "
                                   "one). Old .doc files are not supported: save it as .docx (or PDF) and upload "
                                   "it again.")
    try:
        return docx.Document(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - python-docx raises lxml, KeyError, ValueError, ... for damage
        raise _damaged(name, exc) from exc


def _damaged(name: str, exc: Exception) -> CorruptDocumentError:
    return CorruptDocumentError(f"{name} is not a valid Word file: its contents are damaged ({type(exc).__name__}). "
                                "Open it in Word or LibreOffice and save it again as .docx, or upload a PDF.")


def _block(item) -> str:
    from docx.table import Table

    return _table(item) if isinstance(item, Table) else _paragraph(item)


def _paragraph(paragraph) -> str:
    text = paragraph.text.strip()
    if not text:
        return ""
    style = (paragraph.style.name if paragraph.style is not None else "") or ""
    if style.lower() == "title":
        return f"# {text}"
    match = HEADING_STYLE.match(style)
    if match:
        return f"{'#' * min(6, int(match.group(1)))} {text}"
    if "list" in style.lower():
        return f"- {text}"
    return text


def _table(table) -> str:
    rows = [[_cell(c) for c in row.cells] for row in table.rows]
    rows = [r for r in rows if any(r)]
    if not rows:
        return ""
    lines = ["| " + " | ".join(rows[0]) + " |", "| " + " | ".join("---" for _ in rows[0]) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def _cell(cell) -> str:
    return " ".join(cell.text.split()).replace("|", "\\|")
