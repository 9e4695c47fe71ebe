"""Who owns an upload: the browser session (private, removed when the tab closes) or everyone."""
from __future__ import annotations

import logging

from ..pipeline import RAG
from ..settings import Settings
from ..types import SHARED_OWNER, DocumentInfo

log = logging.getLogger(__name__)


def session_owner(session_hash: str | None, settings: Settings) -> str:
    """The owner for this session's uploads: its session hash, or "" when uploads are shared."""
    if settings.shared_uploads or not session_hash:
        return SHARED_OWNER
    return session_hash


def visible_documents(rag: RAG, owner: str) -> list[DocumentInfo]:
    """The shared knowledge base plus this session's own uploads."""
    return rag.store.documents(owner)


def deletable_documents(rag: RAG, owner: str, settings: Settings) -> list[DocumentInfo]:
    """A session may delete its own uploads; with shared uploads, any shared document."""
    if owner == SHARED_OWNER and not settings.shared_uploads:
        return []
    return [d for d in visible_documents(rag, owner) if d.owner == owner]


def end_session(rag: RAG, owner: str) -> int:
    """Drop a closed session's uploads; shared documents stay."""
    if owner == SHARED_OWNER:
        return 0
    removed = rag.store.delete_owner(owner)
    if removed:
        log.info("session ended: removed %d uploaded chunks", removed)
    return removed
