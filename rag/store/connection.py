"""Connecting to Milvus: a local Milvus Lite file (checked and locked before anything slow starts) or a
server / Zilliz Cloud URI (retried while it starts, and ridden through restarts: `ServerClient`)."""
from __future__ import annotations

import functools
import inspect
import logging
import os
import time
from pathlib import Path

from rag.errors import StoreError, StoreUnavailableError
from rag.store.lite_wal import drop_flushed_logs

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 3  # a Milvus server that is still starting (docker compose up) gets a few more seconds
CONNECT_RETRY_DELAY = 2.0  # seconds between attempts; unreachable fails in ~10 s (attempts fail in ~1.5 s)
# pymilvus waits for an answer forever unless a call says otherwise: a server that accepts connections but
# hangs (stopped, overloaded, a half-open network path) would hang every chat turn with it. Each call gets a
# deadline; the ones that legitimately take long on a big collection (loading it, sealing segments, building an
# index) get a longer one.
CALL_TIMEOUT = 30.0  # seconds (Settings.milvus_timeout)
SLOW_CALLS = {"flush", "load_collection", "create_collection", "create_index", "drop_collection", "compact"}
SLOW_CALL_TIMEOUT = 600.0


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


def make_client(uri: str, token: str | None = None, timeout: float | None = 30.0,
                call_timeout: float = CALL_TIMEOUT):
    """A `MilvusClient` (for a server URI, wrapped in `ServerClient`, whose calls give up after
    `call_timeout` seconds). A server URI is tried `CONNECT_ATTEMPTS` times; a local Milvus Lite path once (its
    LOCK is an flock, released by the kernel even when the holder was SIGKILLed, so a held lock means a live
    process still has the database open)."""
    from pymilvus import MilvusClient

    remote = is_remote(uri)
    quiet_lite_noise()  # a `milvus-lite server` lacks the same call
    if not remote:
        uri = prepare_lite_database(uri)
        if _held_by_another_process(uri):
            raise StoreError(f"Milvus Lite at {uri!r} is in use by another process (it allows one at a time): "
                             "stop the other app or CLI using it, or use another --db path.")
        if not _open_in_this_process(Path(uri) / "LOCK"):  # nobody has it open: safe to mend its files
            drop_flushed_logs(Path(uri))
    attempts = CONNECT_ATTEMPTS if remote else 1
    for attempt in range(1, attempts + 1):
        try:
            options = {"grpc_options": GRPC_OPTIONS} if remote else {}
            client = MilvusClient(uri=uri, token=token or "", timeout=timeout, **options)
            return ServerClient(client, uri, call_timeout) if remote else client
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


# --- a server that restarts under a running app ----------------------------------------------------------
NOT_LOADED = 101  # Milvus' CollectionNotLoaded: a restarted server brings collections back released
UNREACHABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED")  # gRPC status names of "no server answered"
CONNECT_FAILED = 2  # pymilvus' Status.CONNECT_FAILED: its reconnect attempt found nobody listening
RECONNECT_WAIT = 3.0  # seconds a call keeps trying while the server is unreachable (restarting), then fails
RECONNECT_DELAY = 0.5
# gRPC backs off reconnecting up to 120 s by default, and channels to one address share that state: after a
# restart the app would keep failing for that long. Each channel of ours reconnects on its own, within 1 s.
GRPC_OPTIONS = {"grpc.use_local_subchannel_pool": 1, "grpc.initial_reconnect_backoff_ms": 250,
                "grpc.min_reconnect_backoff_ms": 250, "grpc.max_reconnect_backoff_ms": 1000}


class ServerClient:
    """A `MilvusClient` for a server URI that rides out the server stopping and restarting under a running
    app. Every call goes through `_call`: while the server is down, a call is retried for `RECONNECT_WAIT`
    seconds (pymilvus reconnects by itself, but a fresh gRPC channel needs a moment after the server is back)
    and then raises `StoreUnavailableError`, which says to check the server and try again. Each call carries a
    deadline (`deadline`), so a server that hangs without closing the connection fails it the same way. A call
    on a collection that the restarted server brought back released loads it and runs once more. Everything
    else is the `MilvusClient`'s own (attributes, errors)."""

    def __init__(self, client, uri: str, call_timeout: float = CALL_TIMEOUT):
        self._client, self.uri, self.call_timeout = client, uri, call_timeout

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            if _takes_timeout(type(self._client), name):  # a call that names its own timeout keeps it
                kwargs.setdefault("timeout", self.deadline(name))
            result = self._call(attribute, args, kwargs)
            return _Iterator(result, self) if name == "query_iterator" else result

        call.__name__ = name
        return call

    def _call(self, method, args: tuple, kwargs: dict):
        collection = kwargs.get("collection_name", args[0] if args and isinstance(args[0], str) else None)
        deadline = time.monotonic() + RECONNECT_WAIT
        while True:
            try:
                return self._loaded(method, args, kwargs, collection)
            except Exception as exc:  # noqa: BLE001 - only "no server answered" is ours; the rest goes on
                if not _unreachable(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise self.unavailable(exc) from exc
            time.sleep(RECONNECT_DELAY)

    def _loaded(self, method, args: tuple, kwargs: dict, collection: str | None):
        try:
            return method(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - only "not loaded" is handled here
            if collection is None or not _not_loaded(exc):
                raise
        log.warning("collection %s at %s is released (the Milvus server restarted?): loading it", collection,
                    self.uri)
        self._client.load_collection(collection, timeout=self.deadline("load_collection"))
        return method(*args, **kwargs)

    def deadline(self, name: str) -> float:
        """Seconds the call `name` may take before it counts as "no server answered"."""
        return max(self.call_timeout, SLOW_CALL_TIMEOUT) if name in SLOW_CALLS else self.call_timeout

    def unavailable(self, exc: BaseException) -> StoreUnavailableError:
        log.warning("Milvus server at %s unreachable: %s", self.uri, exc)
        return StoreUnavailableError(
            f"The Milvus server at {self.uri} isn't reachable right now ({_reason(exc)}). Check that it is "
            "running and reachable from this machine (RAG_MILVUS_URI / --db); the app reconnects by itself once "
            "it is back, so try again then (no restart needed).")


class _Iterator:
    """A query iterator whose pages are fetched under the same "server unreachable" rule."""

    def __init__(self, iterator, client: ServerClient):
        self._iterator, self._client = iterator, client

    def next(self):
        try:
            return self._iterator.next()
        except Exception as exc:  # noqa: BLE001 - only "no server answered" is ours
            if not _unreachable(exc):
                raise
            raise self._client.unavailable(exc) from exc

    def close(self) -> None:
        self._iterator.close()


@functools.lru_cache(maxsize=None)
def _takes_timeout(client_type: type, name: str) -> bool:
    try:
        return "timeout" in inspect.signature(getattr(client_type, name)).parameters
    except (AttributeError, TypeError, ValueError):  # not a method of the class, or no signature to read
        return False


def _status(exc: BaseException):
    code = getattr(exc, "code", None)
    return code() if callable(code) else code  # grpc.RpcError.code() is a method, MilvusException.code a value


def _unreachable(exc: BaseException) -> bool:
    status = _status(exc)
    return status == CONNECT_FAILED or getattr(status, "name", None) in UNREACHABLE


def _not_loaded(exc: BaseException) -> bool:
    return _status(exc) == NOT_LOADED or "not loaded" in str(exc).lower()


def _reason(exc: BaseException) -> str:
    name = getattr(_status(exc), "name", "")
    return "it did not answer in time" if name == "DEADLINE_EXCEEDED" else "the connection failed"


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
