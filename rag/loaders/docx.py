"""Word documents through python-docx: headings become '#' lines, lists '- ', tables Markdown tables."""
from __future__ import annotations

import io
import re
import zipfile

from .document import LoadedDocument
from .errors import CorruptDocumentError, EmptyDocumentError

HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)


def load_docx(data: bytes, name: str, limits=None) -> LoadedDocument:
    document = _open(data, name)
    blocks = [_block(item) for item in document.iter_inner_content()]
    text = "\n\n".join(b for b in blocks if b)
    if not text.strip():
        raise EmptyDocumentError(f"{name} has no text in its body (only images or empty?).")
    return LoadedDocument(text=text, title=(document.core_properties.title or "").strip())


def _open(data: bytes, name: str):
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        return docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise CorruptDocumentError(f"{name} is not a readable .docx file ({exc}). Old .doc files are not "
                                   "supported: save it as .docx (or PDF) and upload it again.") from exc


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
