"""Who owns an upload: the browser session (private, removed when the tab closes) or everyone; and how a
session's uploads go: when it ends (an upload still running for it is cancelled and what it wrote removed),
or, for sessions that ended without saying so (tab killed, process stopped), as orphans: at the next start-up
with Milvus Lite (one process holds it), or once their lease expires on a Milvus server, which several app
processes (replicas) may share (`SessionKeeper`, rag/store/leases.py)."""
from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator

from rag.errors import InputError, user_message
from rag.pipeline import RAG
from rag.settings import Settings
from rag.store.leases import SessionLeases
from rag.types import SHARED_OWNER, DocumentInfo

log = logging.getLogger(__name__)


# Gradio's session hashes are short random strings; anything else was crafted by a client.
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
BAD_SESSION = ("This request carries a malformed session id, so it can't be tied to a browser session. "
               "Reload the page and try again.")
NO_SESSION = ("This request has no browser session, and uploads here are private to one: open the page to "
              "upload, list or delete your documents (or start the app with --shared-uploads to let API "
              "clients write the shared knowledge base).")


def session_owner(session_hash: str | None, settings: Settings, *, writes: bool = False) -> str:
    """The owner for this session's uploads: its session hash, or "" when uploads are shared. A session id
    that isn't one Gradio would make is refused here, before it reaches a Milvus filter.

    Without a session (a direct REST or queue call that sends none) a reader sees the shared base only,
    while a writer (`writes=True`: upload, delete, end) is refused in private mode: falling back to the
    shared owner would let any anonymous client write into what every session reads."""
    if settings.shared_uploads:
        return SHARED_OWNER
    if not session_hash:
        if writes:
            raise InputError(NO_SESSION)
        return SHARED_OWNER
    if not isinstance(session_hash, str) or not SESSION_ID.fullmatch(session_hash):
        raise InputError(BAD_SESSION)
    return session_hash


def visible_documents(rag: RAG, owner: str) -> list[DocumentInfo]:
    """The shared knowledge base plus this session's own uploads."""
    return rag.store.documents(owner)


def deletable_documents(rag: RAG, owner: str, settings: Settings) -> list[DocumentInfo]:
    """A session may delete its own uploads; with shared uploads, any shared document."""
    if owner == SHARED_OWNER and not settings.shared_uploads:
        return []
    return [d for d in visible_documents(rag, owner) if d.owner == owner]


def writable(owner: str, settings: Settings) -> bool:
    """Whether an upload or delete may write as `owner`: the shared base only with --shared-uploads."""
    return settings.shared_uploads or owner != SHARED_OWNER


def end_session(rag: RAG, owner: str) -> int:
    """Drop a closed session's uploads; shared documents stay."""
    if owner == SHARED_OWNER:
        return 0
    removed = rag.store.delete_owner(owner)
    if removed:
        log.info("session ended: removed %d uploaded chunks", removed)
    return removed


FULL = ("The server holds as many private uploads as it can right now ({limit:,} chunks for all sessions "
        "together, RAG_MAX_PRIVATE_CHUNKS). Delete one of your uploads, or try again once other sessions end.")


def upload_budget(rag: RAG, owner: str, settings: Settings) -> int:
    """Chunks this upload may add: the per-upload limit, and for a private upload what is left of the limit on
    all sessions' uploads together (sessions are cheap to make, so the per-upload limit alone bounds nothing
    on disk). Raises `InputError` when nothing is left."""
    if owner == SHARED_OWNER:
        return settings.max_upload_chunks
    left = settings.max_private_chunks - rag.store.count(private=True)
    if left <= 0:
        raise InputError(FULL.format(limit=settings.max_private_chunks))
    return min(settings.max_upload_chunks, left)


def remove_orphans(rag: RAG, leases: SessionLeases | None = None, ttl: float = 0.0) -> int:
    """Remove the private uploads no live session holds; the shared knowledge base stays.

    Without `leases` (Milvus Lite, which one process holds), at start-up: every private upload belongs to a
    session of an earlier process (sessions don't survive a restart), so all of them go. With `leases` (a
    Milvus server, maybe shared by replicas): only the uploads of sessions whose lease is older than `ttl`
    seconds — another replica's live sessions keep theirs."""
    if leases is None:
        removed = rag.store.delete_private()
        if removed:
            log.info("start-up: removed %d orphaned chunks of sessions that ended with the last process", removed)
        return removed
    owners = rag.store.private_owners()  # first: a session's lease is written before its first chunk
    orphans = owners - leases.live(ttl)
    removed = sum(rag.store.delete_owner(owner) for owner in orphans)
    leases.expire(ttl)
    if removed:
        log.info("removed %d orphaned chunks of %d session(s) whose lease expired (no app process renewed it "
                 "for %.0f s)", removed, len(orphans), ttl)
    return removed


class SessionKeeper:
    """On a Milvus server: the leases of this process's sessions with private uploads. A session's lease is
    taken before its first upload writes (`hold`) and dropped when it ends (`release`); a background thread
    renews them every `ttl / 3` seconds and then removes orphans (`remove_orphans`), so the uploads of a
    replica that died go `ttl` seconds after its last renewal, and no replica removes another's live
    sessions'. Without leases (Milvus Lite) it only clears every private upload at start-up."""

    def __init__(self, rag: RAG, leases: SessionLeases | None, ttl: float):
        self.rag, self.leases, self.ttl = rag, leases, ttl
        self._owners: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_store(cls, rag: RAG, settings: Settings) -> "SessionKeeper":
        """Leases on a Milvus server (next to the chunks' collection), none with Milvus Lite."""
        from rag.store import is_remote

        leases = SessionLeases(rag.store.client, settings.collection) if is_remote(settings.milvus_uri) else None
        return cls(rag, leases, settings.session_ttl)

    def hold(self, owner: str) -> None:
        """`owner` is about to write private uploads: its lease first, so no sweep anywhere takes them for
        orphans."""
        if self.leases is None or owner == SHARED_OWNER:
            return
        with self._lock:
            self._owners.add(owner)
        self.leases.renew([owner])

    def release(self, owner: str) -> None:
        """`owner`'s session ended (its uploads are removed by `end_session`)."""
        if self.leases is None or owner == SHARED_OWNER:
            return
        with self._lock:
            self._owners.discard(owner)
        self.leases.release([owner])

    def sweep(self, remove: bool = True) -> int:
        """Renew this process's leases, then remove orphans (unless `remove` is False): at start-up, then every
        `ttl / 3` seconds."""
        if self.leases is not None:
            with self._lock:
                owners = list(self._owners)
            self.leases.renew(owners)
        return remove_orphans(self.rag, self.leases, self.ttl) if remove else 0

    def start(self) -> "SessionKeeper":
        if self.leases is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="session-leases", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        # While the server was down no replica could renew its leases, so right after it comes back every
        # lease may look expired: renew only, and remove nothing until every replica had a full `ttl` to renew.
        unreachable_at: float | None = None
        while not self._stop.wait(self.ttl / 3):
            try:
                settled = unreachable_at is None or time.monotonic() - unreachable_at >= self.ttl
                self.sweep(remove=settled)
            except Exception as exc:  # noqa: BLE001 - the server may be down for a while: next round
                unreachable_at = time.monotonic()
                log.warning("renewing session leases failed (%s); trying again in %.0f s", user_message(exc),
                            self.ttl / 3)


class UploadSessions:
    """The uploads running per session, and the sessions that ended, so that a tab closed mid-upload leaves
    nothing: ending a session cancels its running upload (it stops at its next step), and an upload that
    starts after its session ended is cancelled at once. Remembers the last `remember` ended sessions."""

    def __init__(self, remember: int = 10_000):
        self._lock = threading.Lock()
        self._running: dict[str, list[threading.Event]] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    @contextmanager
    def uploading(self, owner: str) -> Iterator[threading.Event]:
        """The cancel event for one upload of `owner`, set once the session ends."""
        cancel = threading.Event()
        with self._lock:
            if owner in self._ended:
                cancel.set()
            self._running.setdefault(owner, []).append(cancel)
        try:
            yield cancel
        finally:
            with self._lock:
                events = self._running.get(owner, [])
                events.remove(cancel)
                if not events:
                    self._running.pop(owner, None)

    def end(self, owner: str) -> int:
        """Mark `owner`'s session ended and cancel its running uploads; returns how many were running."""
        with self._lock:
            self._ended[owner] = None
            while len(self._ended) > self._remember:
                self._ended.popitem(last=False)
            running = self._running.get(owner, [])
            for cancel in running:
                cancel.set()
            return len(running)
