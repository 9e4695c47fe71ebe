"""The OpenAI-compatible chat client, built from Settings, and short user-facing error messages."""
from __future__ import annotations

from typing import Any

from rag.settings import Settings

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DUMMY_API_KEY = "not-needed"  # local servers (Ollama, vLLM, llama.cpp) accept any key, the client needs one
MAX_RETRIES = 1  # the client retries 429/5xx/timeouts itself; once is enough for a chat UI


def is_configured(settings: Settings) -> bool:
    """An LLM is usable when there's an API key (api.openai.com) or a base URL (any compatible server)."""
    return bool(settings.openai_api_key or settings.llm_base_url)


def make_client(settings: Settings) -> Any:
    """An `openai.OpenAI` client: key and URL from settings only (explicit, so a stray env var can't
    redirect a client built from Settings), `llm_timeout` per request, `MAX_RETRIES` retries."""
    import openai  # imported here: nothing heavy at import time

    return openai.OpenAI(api_key=settings.openai_api_key or DUMMY_API_KEY,
                         base_url=settings.llm_base_url or DEFAULT_BASE_URL,
                         timeout=settings.llm_timeout, max_retries=MAX_RETRIES)


def endpoint_of(client: Any, settings: Settings) -> str:
    url = getattr(client, "base_url", None) or settings.llm_base_url or DEFAULT_BASE_URL
    return str(url).rstrip("/")


def _detail(exc: Exception, limit: int = 200) -> str:
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    message = str(message or getattr(exc, "message", None) or exc).strip().replace("\n", " ")
    return message if len(message) <= limit else message[: limit - 1] + "…"


def describe_error(exc: Exception, *, model: str, endpoint: str, timeout: float, mid_stream: bool = False) -> str:
    """One or two sentences for the chat: what went wrong and what to do about it."""
    import openai

    code = str(getattr(exc, "code", "") or "")
    if isinstance(exc, openai.APITimeoutError):
        if mid_stream:
            return (f"The LLM stopped sending for more than {timeout:g} s, so the answer above is "
                    "incomplete. Try again.")
        return (f"The LLM at {endpoint} did not respond within {timeout:g} s (timeout). Try again, or "
                "raise RAG_LLM_TIMEOUT.")
    if isinstance(exc, openai.APIConnectionError):
        if mid_stream:
            return "The connection to the LLM was lost mid-answer, so the answer above is incomplete. Try again."
        return (f"Could not connect to the LLM endpoint at {endpoint}. Check that the server is running "
                "and the base URL (OPENAI_BASE_URL / --llm-base-url) is right.")
    if isinstance(exc, openai.AuthenticationError):
        return "The LLM endpoint rejected the API key (401). Check OPENAI_API_KEY."
    if isinstance(exc, openai.PermissionDeniedError):
        return f"The LLM endpoint refused access to model '{model}' (403). Check that your API key may use it."
    if isinstance(exc, openai.NotFoundError):
        return (f"Model '{model}' was not found at {endpoint} (404). Check the model name (RAG_LLM_MODEL) "
                "and that the base URL ends in /v1.")
    if isinstance(exc, openai.RateLimitError):
        if code == "insufficient_quota" or "quota" in _detail(exc).lower():
            return "The LLM account has run out of quota (429). Check your plan and billing."
        return "The LLM endpoint is rate-limiting requests (429). Wait a minute and try again."
    if isinstance(exc, openai.BadRequestError):
        detail = _detail(exc)
        if code == "context_length_exceeded" or "context length" in detail.lower() or "too long" in detail.lower():
            return (f"The prompt is too long for model '{model}' (400). Send fewer passages (top_n) or "
                    "use smaller chunks.")
        return f"The LLM endpoint rejected the request (400): {detail}"
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status >= 500:
            return f"The LLM endpoint had a server error ({status}). Try again in a moment."
        return f"The LLM endpoint returned an error ({status}): {_detail(exc)}"
    if isinstance(exc, openai.APIError):
        return f"The LLM endpoint reported an error: {_detail(exc)}"
    return f"Generating the answer failed ({type(exc).__name__}: {_detail(exc)}). See the server log."
