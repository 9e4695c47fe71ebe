"""One JSON POST to a model server, with what every model-server client needs: a bearer key, a timeout,
retries with backoff after 429 / 5xx / a refused connection (`Retry-After` honoured), and every failure turned
into a `ModelServerError` (rag/errors.py) that names the server and says what to change.

A `ModelServer` is thread-safe (one pooled `httpx.Client`): many questions may be in flight at once.
"""
from __future__ import annotations

import email.utils
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from rag.errors import (
    ModelServerAuthError,
    ModelServerBadResponse,
    ModelServerBusy,
    ModelServerError,
    ModelServerFailed,
    ModelServerRejected,
    ModelServerTimeout,
    ModelServerUnreachable,
)

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF = 0.5  # seconds before the first retry; doubled for each next one
MAX_WAIT = 30.0  # a Retry-After longer than this is cut to it (the question's user is waiting)


@dataclass(frozen=True)
class Role:
    """Which model a server serves and the settings that configure it, for the error messages."""
    name: str  # "embedding server"
    url_setting: str  # "embedding_url (RAG_EMBEDDING_URL / --embedding-url)"
    key_setting: str  # "embedding_api_key (RAG_EMBEDDING_API_KEY)"


class ModelServer:
    """POST JSON to `{base_url}/{path}` and return the decoded JSON answer."""

    def __init__(self, base_url: str, role: Role, *, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 3, backoff: float = BACKOFF):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.role = role
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), headers=headers)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def post(self, path: str, body: dict) -> Any:
        """The JSON answer; retries 429 / 5xx / refused connections up to `retries` times, then raises."""
        url = self.url(path)
        for attempt in range(self.retries + 1):
            error, wait = self._attempt(url, body)
            if not isinstance(error, ModelServerError):
                return error  # the decoded answer
            if attempt == self.retries:
                raise error
            wait = min(MAX_WAIT, wait if wait is not None else self.backoff * 2 ** attempt)
            log.warning("%s %s: %s; retrying in %.2f s (%d/%d)", self.role.name, url, type(error).__name__,
                        wait, attempt + 1, self.retries)
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _attempt(self, url: str, body: dict) -> tuple[Any, float | None]:
        """(answer, None) on success; (a retryable error, seconds to wait or None for the backoff) otherwise.
        Errors retrying can't fix are raised at once."""
        import httpx

        try:
            response = self._http.post(url, json=body)
        except httpx.ConnectError as exc:
            return self._unreachable(url, exc), None
        except httpx.TimeoutException:
            raise ModelServerTimeout(
                f"The {self.role.name} at {url} did not answer within {self.timeout:g} s. It may be overloaded "
                "or still loading the model: try again, or raise model_timeout (RAG_MODEL_TIMEOUT).") from None
        except httpx.HTTPError as exc:  # the connection dropped mid-answer, a malformed response, ...
            return ModelServerFailed(f"The {self.role.name} at {url} broke off the request "
                                     f"({type(exc).__name__}: {exc}). Check the server's log."), None
        if response.status_code < 400:
            try:
                return response.json(), None
            except ValueError:
                raise ModelServerBadResponse(
                    f"The {self.role.name} at {url} answered with something that is not JSON "
                    f"({response.text[:120]!r}). Check that {self.role.url_setting} points at the API's base "
                    "URL.") from None
        if response.status_code in RETRY_STATUSES:
            return self._status_error(url, response), retry_after(response.headers)
        raise self._status_error(url, response)

    def _unreachable(self, url: str, exc: Exception) -> ModelServerUnreachable:
        return ModelServerUnreachable(
            f"Could not connect to the {self.role.name} at {url} ({exc}): the server isn't running or isn't "
            f"reachable from here. Start it, or fix {self.role.url_setting}.")

    def _status_error(self, url: str, response) -> ModelServerError:
        status = response.status_code
        detail = server_message(response)
        said = f" The server said: {detail}" if detail else ""
        if status in (401, 403):
            return ModelServerAuthError(
                f"The {self.role.name} at {url} refused the API key ({status}): the key is wrong or missing. "
                f"Set {self.role.key_setting} to a key this server accepts.{said}")
        if status == 429:
            return ModelServerBusy(
                f"The {self.role.name} at {url} is rate limiting us (429) and still was after "
                f"{self.retries} retries. Wait a moment and try again, or give the server more capacity.{said}")
        if status >= 500:
            return ModelServerFailed(
                f"The {self.role.name} at {url} failed with {status} (after {self.retries} retries). "
                f"Check the server's log.{said}")
        if status == 404:
            return ModelServerRejected(
                f"The {self.role.name} has no {url} (404). Check {self.role.url_setting}: it is the API's base "
                f"URL (vLLM's ends in /v1) and the server must serve this API.{said}", status=status)
        return ModelServerRejected(f"The {self.role.name} at {url} refused the request ({status}).{said}",
                                   status=status)

    def close(self) -> None:
        self._http.close()


def server_message(response) -> str:
    """The error text of an OpenAI / vLLM / TEI / Cohere style error body, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip()
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error)[:300]
        for key in ("message", "detail", "error"):
            if body.get(key):
                return str(body[key])[:300]
    return str(body)[:200]


def retry_after(headers) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def finite_scores(values: list, server: ModelServer, url: str) -> list[float]:
    """Floats, or `ModelServerBadResponse` naming the first value that is missing, not a number or NaN/inf."""
    scores = []
    for i, value in enumerate(values):
        try:
            score = float(value)
        except (TypeError, ValueError):
            score = math.nan
        if not math.isfinite(score):
            raise ModelServerBadResponse(
                f"The {server.role.name} at {url} returned {value!r} as the score of item {i}: not a finite "
                "number. The model on the server is broken or mis-configured (wrong dtype, wrong model?): "
                "check the server's log and model.")
        scores.append(score)
    return scores


def check_count(got: int, expected: int, server: ModelServer, url: str, what: str) -> None:
    if got != expected:
        raise ModelServerBadResponse(
            f"The {server.role.name} at {url} returned {got} {what} for {expected} inputs. The server is not "
            f"speaking the expected API: check {server.role.url_setting} and the API it serves.")
