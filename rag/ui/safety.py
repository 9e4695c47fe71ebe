"""Make untrusted text (documents, model output, user input) safe to show as Markdown or HTML.

Everything the app renders as Markdown goes through `safe_markdown`: raw HTML never reaches the page as
markup, so a `<script>` or `<img onerror=…>` inside a document or an answer shows as text and never runs.
"""
from __future__ import annotations

import html
import re

# Fenced code blocks and inline code spans: Markdown escapes their content itself, so leave them intact.
_CODE = re.compile(r"(```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)|`[^`\n]+`)", re.DOTALL)
_IMAGE = re.compile(r"!\[")  # Markdown images would fetch arbitrary URLs: show them as links instead
_SCRIPT_LINK = re.compile(r"\]\(\s*(javascript|vbscript|data):", re.IGNORECASE)


def escape_html(text: str) -> str:
    """Text for an HTML context (element content or a quoted attribute)."""
    return html.escape(text or "", quote=True)


def _defuse(prose: str) -> str:
    prose = prose.replace("&", "&amp;").replace("<", "&lt;")
    prose = _IMAGE.sub(r"!\\[", prose)
    return _SCRIPT_LINK.sub(lambda m: "](#blocked-" + m.group(1).lower() + ":", prose)


def safe_markdown(text: str) -> str:
    """Markdown with every HTML tag and entity turned into literal text; code spans kept as they are."""
    parts = _CODE.split(text or "")
    return "".join(part if i % 2 else _defuse(part) for i, part in enumerate(parts))
