"""HTML through BeautifulSoup and markdownify; scripts, styles and other non-content never reach a chunk."""
from __future__ import annotations

import re

from rag.ingest.loaders.document import LoadedDocument
from rag.ingest.loaders.errors import EmptyDocumentError

NON_CONTENT = ["script", "style", "noscript", "template", "svg", "canvas", "iframe", "object", "embed",
               "head", "meta", "link"]


def load_html(data: bytes, name: str, limits=None) -> LoadedDocument:
    from bs4 import BeautifulSoup, Comment
    from markdownify import MarkdownConverter

    soup = BeautifulSoup(data, "html.parser")  # bytes: BeautifulSoup honours <meta charset> and sniffs
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(NON_CONTENT):
        tag.decompose()
    for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
        comment.extract()
    converter = MarkdownConverter(heading_style="ATX", strip=["a", "img"], escape_underscores=False,
                                  escape_asterisks=False, escape_misc=False, bullets="-")
    text = re.sub(r"\n{3,}", "\n\n", converter.convert_soup(soup)).strip()
    if not text:
        raise EmptyDocumentError(f"{name} has no visible text.")
    return LoadedDocument(text=text, title=title)
