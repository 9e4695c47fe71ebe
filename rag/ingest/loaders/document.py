"""What every loader returns: Markdown-like text plus the little metadata the chunker uses."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoadedDocument:
    text: str  # Markdown-like: '#' headings, paragraphs separated by blank lines
    title: str = ""  # the document's own title (front matter, <title>, PDF/DOCX metadata), if any
    pages: int = 0  # PDFs: how many pages were read
