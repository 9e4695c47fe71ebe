"""Errors users can act on. Every error of ours derives from `RAGError`, whose message says what to change;
`user_message` is the one mapping from any exception to what a page, an API caller or the CLI shows."""
from __future__ import annotations

import contextlib
import logging

log = logging.getLogger(__name__)

UNEXPECTED = "Something went wrong ({kind}). Try again; if it keeps happening, see the server log."


class RAGError(Exception):
    """Base of the project's errors: the message is meant for the user and says how to fix the problem."""


class SettingsError(RAGError, ValueError):
    """A setting (environment variable, flag or `Settings` field) has a value it can't take."""


class ModelLoadError(RAGError, RuntimeError):
    """A model could not be loaded (no network to the hub, a wrong name or folder)."""


class StoreError(RAGError, RuntimeError):
    """The vector store can't be used as configured; the message says what to change."""


class InputError(RAGError, ValueError):
    """A request can't be served as asked (an empty question, an unknown passage, a bad session)."""


class ModelServerError(RAGError, RuntimeError):
    """A model server (RAG_EMBEDDING_URL / RAG_RERANKER_URL) failed a request; the message names the server,
    what went wrong and what to change. Subclasses say which failure it was."""


class ModelServerUnreachable(ModelServerError):
    """Nothing answers at the URL (connection refused, unknown host)."""


class ModelServerAuthError(ModelServerError):
    """The server refused the API key (401/403)."""


class ModelServerBusy(ModelServerError):
    """The server kept answering 429 (rate limited / overloaded) after every retry."""


class ModelServerFailed(ModelServerError):
    """The server answered 5xx after every retry, or an error status we can't act on."""


class ModelServerRejected(ModelServerFailed):
    """The server refused the request itself (a 4xx other than 401/403/429): a wrong path, an unknown field."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class ModelServerTimeout(ModelServerError):
    """No answer within the timeout (RAG_MODEL_TIMEOUT)."""


class ModelServerBadResponse(ModelServerError):
    """The server answered, but not with what was asked: wrong number of results, a NaN score, not JSON."""


def user_message(exc: BaseException) -> str:
    """What to show for `exc`: our own messages as they are (they are written for users); anything else —
    numpy, pymilvus, torch internals — only by its type, with a pointer to the log (which has the traceback)."""
    if isinstance(exc, RAGError):
        return str(exc)
    return UNEXPECTED.format(kind=type(exc).__name__)


@contextlib.contextmanager
def loading(kind: str, name: str, setting: str):
    """Turn the hub's and the loaders' OSError/ValueError into one actionable `ModelLoadError`."""
    try:
        yield
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"Could not load the {kind} {name!r}: {exc}\nModels download from the Hugging Face hub on first "
            f"use: check the network (and HF_HUB_OFFLINE), or set {setting} to a local model folder.") from exc
