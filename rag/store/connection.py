"""Connecting to Milvus: a local Milvus Lite file (checked and locked before anything slow starts) or a
server / Zilliz Cloud URI (retried while it starts)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from rag.errors import StoreError

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 3  # a Milvus server that is still starting (docker compose up) gets a few more seconds
CONNECT_RETRY_DELAY = 2.0  # seconds between attempts; unreachable fails in ~10 s (attempts fail in ~1.5 s)


def is_remote(uri: str) -> bool:
    return str(uri).startswith(("http://", "https://", "tcp://", "unix:"))


def lite_database_path(uri: str) -> Path:
    """The Milvus Lite file for a local `uri`. Milvus Lite only opens files ending in .db: a folder (existing,
    or a new path without a suffix) holds `milvus.db`; a path with another suffix is refused with the fix."""
    path = Path(uri).expanduser()
    if path.suffix == ".db":  # Milvus Lite 3 keeps a folder of that name
        return path
    if path.is_dir() or not path.suffix:
        return path / "milvus.db"
    raise StoreError(f"Milvus Lite database files must end in .db, and {uri!r} does not: use "
                     f"--db {path.with_suffix('.db')} (or a folder, which then holds milvus.db).")


def prepare_lite_database(uri: str) -> str:
    """Check, before anything slow starts, that the database's folder exists or can be made and is writable."""
    path = lite_database_path(uri)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StoreError(f"Can't use {folder} as the data folder: a file of that name is in the way. Set "
                         "RAG_DATA_DIR (or --db) to a folder.") from None
    except OSError as exc:
        raise StoreError(f"Can't create the data folder {folder}: {exc.strerror}. Set RAG_DATA_DIR (or --db) to a "
                         "folder you can write to.") from None
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.R_OK | os.W_OK)):
        raise StoreError(f"Can't write to {path if path.exists() else folder}: permission denied. Set RAG_DATA_DIR "
                         "(or --db) to a folder you can write to, or fix its permissions.")
    return str(path)


def make_client(uri: str, token: str | None = None, timeout: float | None = 30.0):
    """A `MilvusClient`. A server URI is tried `CONNECT_ATTEMPTS` times; a local Milvus Lite path once (its
    LOCK is an flock, released by the kernel even when the holder was SIGKILLed, so a held lock means a
    live process still has the database open)."""
    import time

    from pymilvus import MilvusClient

    remote = is_remote(uri)
    if not remote:
        uri = prepare_lite_database(uri)
        quiet_lite_noise()
        if _held_by_another_process(uri):
            raise StoreError(f"Milvus Lite at {uri!r} is in use by another process (it allows one at a time): "
                             "stop the other app or CLI using it, or use another --db path.")
    attempts = CONNECT_ATTEMPTS if remote else 1
    for attempt in range(1, attempts + 1):
        try:
            return MilvusClient(uri=uri, token=token or "", timeout=timeout)
        except Exception as exc:  # the client raises several types for "can't reach / can't open"
            error = exc
            if attempt < attempts:
                log.warning("Milvus at %s not reachable (attempt %d/%d): %s; retrying in %.0f s", uri, attempt,
                            attempts, exc, CONNECT_RETRY_DELAY)
                time.sleep(CONNECT_RETRY_DELAY)
    if remote:
        raise StoreError(f"Could not reach Milvus at {uri!r} after {attempts} attempts: {error}. Check the URI "
                         "(--db / RAG_MILVUS_URI), the token (RAG_MILVUS_TOKEN) and that the server is "
                         "running.") from error
    raise StoreError(f"Could not open Milvus Lite at {uri!r}: {error}") from error


class _LiteIteratorNoise(logging.Filter):
    """Milvus Lite's embedded server lacks the AllocTimestamp call that pymilvus' query iterator makes first;
    the server logs a traceback and the client a warning, then the iterator falls back to a client-side
    timestamp, which is correct for one process. Only those two records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "failed to get mvccTs" in message:
            return False
        return not (record.exc_info and isinstance(record.exc_info[1], NotImplementedError)
                    and "Method not implemented" in message)


_NOISE = _LiteIteratorNoise()


def quiet_lite_noise() -> None:
    for name in ("grpc._server", "pymilvus.client.iterator.query_iterator"):
        logger = logging.getLogger(name)
        if _NOISE not in logger.filters:
            logger.addFilter(_NOISE)


def _held_by_another_process(database: str) -> bool:
    """Whether another process has this Milvus Lite database open: it holds an flock on `<database>/LOCK`
    (released by the kernel when that process dies, even by SIGKILL). Probed before opening, because a failed
    open only says "Open local milvus failed" after logging a traceback."""
    import fcntl

    lock = Path(database) / "LOCK"
    if not lock.is_file() or _open_in_this_process(lock):
        return False  # a second client in this process shares the first one's embedded server
    try:
        with open(lock, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def _open_in_this_process(path: Path) -> bool:
    target = str(path.resolve())
    try:
        descriptors = list(Path("/proc/self/fd").iterdir())
    except OSError:  # no procfs: let Milvus Lite decide
        return True
    for fd in descriptors:
        try:
            if os.readlink(fd) == target:
                return True
        except OSError:
            continue
    return False
