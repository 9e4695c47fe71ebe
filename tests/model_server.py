"""A real model server on 127.0.0.1 for tests, speaking the APIs the remote clients use, over the in-process
tiny models (real scores, computed as a serving engine computes them):

    POST /v1/embeddings   OpenAI / vLLM: {model, input, dimensions?, encoding_format} -> {data: [{index, embedding}]}
    POST /v1/rerank       Cohere / Jina / vLLM: {model, query, documents, top_n?} -> {results: [{index, relevance_score}]}
    POST /v1/score        vLLM: {model, text_1, text_2} -> {data: [{index, score}]}
    POST /rerank          TEI: {query, texts, raw_scores?} -> [{index, score}]

    with ModelServer(embedder, reranker) as server:   # or the `model_server` fixture
        Settings(embedding_url=server.base_url, reranker_url=server.base_url, reranker_api="score")
        Settings(reranker_url=server.url, reranker_api="tei")          # TEI serves at the root
        server.configure(fail="429", fail_times=2, retry_after="1")   # scripted failures
        server.requests                                                # (path, JSON body) received

Like vLLM and TEI, the server knows nothing of prompts: an embedding is the model's vector of the text as sent
(normalised; `dimensions` cuts it and renormalises, or is refused with vLLM's 400 when `matryoshka=False`), a
rerank score is P("yes") of the query's and the document's tokens joined (vLLM's and TEI's text pair), sorted
by score as those servers do.

Failure modes (`fail`, for the next `fail_times` requests or all): "401" (also whenever `api_key` is set and
the request's bearer key differs), "429" (with `Retry-After: retry_after`), "500", "slow" (answer after
`delay` s), "count" (one result fewer), "nan" (a NaN score / vector value). A refused connection:
`tests.openai_server.refused_base_url()`. `latency` (seconds) delays every answer, like a busy GPU would; requests
are served concurrently, one thread each.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

import numpy as np

from tests.local_http import LocalHTTPServer

log = logging.getLogger(__name__)

FAILURES = (None, "401", "429", "500", "slow", "count", "nan")
NO_MATRYOSHKA = ("Model \"{model}\" does not support matryoshka representation, changing output dimensions "
                 "will lead to poor results.")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any  # tests.local_http._HTTPServer: `.owner` is the server object

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes: without this, Nagle + delayed ACK add ~40 ms per answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("model_server: " + format, *args)

    def do_POST(self) -> None:  # noqa: N802
        try:
            self._post()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def _post(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        owner = self.server.owner
        route = ROUTES.get(self.path.rstrip("/"))
        if route is None:
            self._json(404, {"error": {"message": f"Not Found: {self.path}", "type": "NotFoundError", "code": 404}})
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._json(400, {"error": {"message": "Body is not JSON", "type": "BadRequestError", "code": 400}})
            return
        failure, delay, retry_after = owner._next(self.path, body, self.headers.get("Authorization"))
        if failure == "401":
            self._json(401, {"error": {"message": "Unauthorized", "type": "AuthenticationError", "code": 401}})
        elif failure == "429":
            self._json(429, {"error": {"message": "Too many requests", "type": "RateLimitError", "code": 429}},
                       {"Retry-After": retry_after})
        elif failure == "500":
            self._json(500, {"error": {"message": "CUDA error: an illegal memory access was encountered",
                                       "type": "InternalServerError", "code": 500}})
        elif failure == "slow" and owner._stopping.wait(delay):
            self.close_connection = True
        else:
            started = time.perf_counter()
            try:
                status, payload = route(owner, body, failure)
            except (KeyError, TypeError, ValueError) as exc:
                status, payload = 400, {"error": {"message": f"invalid request: {exc}", "type": "BadRequestError",
                                                  "code": 400}}
            owner._computed(time.perf_counter() - started)
            self._json(status, payload)

    def _json(self, status: int, payload: Any, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()  # NaN goes out as the bare NaN token, as Python servers send it
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


class ModelServer(LocalHTTPServer):
    """See the module docstring. `embedder` is a `SentenceTransformerEmbedder`, `reranker` a `Qwen3Reranker`."""

    handler = _Handler

    def __init__(self, embedder=None, reranker=None, *, api_key: str | None = None, matryoshka: bool = True,
                 fail: str | None = None, fail_times: int | None = None, delay: float = 5.0,
                 retry_after: str = "0", latency: float = 0.0):
        super().__init__()
        self.embedder, self.reranker = embedder, reranker
        self.api_key = api_key
        self.matryoshka = matryoshka
        self.fail, self.fail_times, self.delay, self.retry_after = fail, fail_times, delay, retry_after
        self.latency = latency
        self.requests: list[tuple[str, dict]] = []
        self.compute_seconds: list[float] = []  # time each answered request spent in the models, in order
        self._lock = threading.Lock()

    # --- scripting ---------------------------------------------------------------------------------
    def configure(self, **changes: Any) -> None:
        if "fail" in changes and changes["fail"] not in FAILURES:
            raise ValueError(f"fail={changes['fail']!r}: use one of {FAILURES}")
        with self._lock:
            for name, value in changes.items():
                if name.startswith("_") or not hasattr(self, name):
                    raise AttributeError(name)
                setattr(self, name, value)

    def reset(self) -> None:
        self.configure(api_key=None, matryoshka=True, fail=None, fail_times=None, delay=5.0, retry_after="0",
                       latency=0.0)
        with self._lock:
            self.requests.clear()
            self.compute_seconds.clear()

    def _computed(self, seconds: float) -> None:
        with self._lock:
            self.compute_seconds.append(seconds)

    def paths(self) -> list[str]:
        with self._lock:
            return [path for path, _ in self.requests]

    def _next(self, path: str, body: dict, authorization: str | None) -> tuple[str | None, float, str]:
        if self.latency:
            self._stopping.wait(self.latency)
        with self._lock:
            self.requests.append((path, body))
            failure = self._take_failure()
            if self.api_key is not None and authorization != f"Bearer {self.api_key}":
                failure = "401"
            return failure, self.delay, self.retry_after

    # --- the models, as a serving engine runs them -------------------------------------------------
    def embed(self, texts: list[str]) -> np.ndarray:
        """Full-size unit vectors of the texts exactly as sent (no prompt)."""
        import torch

        embedder = self.embedder
        with embedder._lock, torch.inference_mode():
            vectors = embedder.model.encode(texts, batch_size=len(texts), convert_to_numpy=True,
                                            normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def score_pairs(self, query: str, documents: list[str]) -> list[float]:
        """P("yes") for the query's tokens followed by each document's (a text pair, as vLLM and TEI join it)."""
        import torch

        reranker = self.reranker
        tokenizer = reranker.tokenizer
        head = tokenizer.encode(query, add_special_tokens=False)
        scores = [0.0] * len(documents)
        with reranker._lock, torch.inference_mode():
            for i, document in enumerate(documents):
                ids = head + tokenizer.encode(document, add_special_tokens=False)
                hidden = reranker.model.model(input_ids=torch.tensor([ids])).last_hidden_state[:, -1]  # whole pair
                reranker._fill(scores, [i], hidden)
        return scores


def _embeddings(server: ModelServer, body: dict, failure: str | None) -> tuple[int, dict]:
    texts = body["input"]
    texts = [texts] if isinstance(texts, str) else list(texts)
    dimensions = body.get("dimensions")
    if dimensions is not None and not server.matryoshka:
        return 400, {"error": {"message": NO_MATRYOSHKA.format(model=body.get("model")),
                               "type": "BadRequestError", "param": None, "code": 400}}
    vectors = server.embed(texts)
    if dimensions is not None:
        vectors = vectors[:, :int(dimensions)]
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    data = [{"index": i, "object": "embedding", "embedding": [float(x) for x in v]} for i, v in enumerate(vectors)]
    if failure == "nan":
        data[0]["embedding"][0] = float("nan")
    if failure == "count":
        data = data[:-1]
    return 200, {"id": "embd-test", "object": "list", "created": 0, "model": body.get("model"), "data": data,
                 "usage": {"prompt_tokens": 0, "total_tokens": 0}}


def _scored(server: ModelServer, query: str, documents: list[str], failure: str | None) -> list[tuple[int, float]]:
    scores = server.score_pairs(query, documents)
    if failure == "nan":
        scores[-1] = float("nan")
    pairs = list(enumerate(scores))
    return pairs[:-1] if failure == "count" else pairs


def _rerank(server: ModelServer, body: dict, failure: str | None) -> tuple[int, dict]:
    documents = [d if isinstance(d, str) else d["text"] for d in body["documents"]]
    pairs = sorted(_scored(server, body["query"], documents, failure), key=lambda p: -p[1])
    pairs = pairs[: body.get("top_n") or len(pairs)]
    results = [{"index": i, "document": {"text": documents[i]}, "relevance_score": s} for i, s in pairs]
    return 200, {"id": "rerank-test", "model": body.get("model"), "usage": {"total_tokens": 0},
                 "results": results}


def _score(server: ModelServer, body: dict, failure: str | None) -> tuple[int, dict]:
    query, documents = body["text_1"], body["text_2"]
    documents = [documents] if isinstance(documents, str) else list(documents)
    pairs = _scored(server, query, documents, failure)
    return 200, {"id": "score-test", "object": "list", "created": 0, "model": body.get("model"),
                 "data": [{"index": i, "object": "score", "score": s} for i, s in pairs],
                 "usage": {"prompt_tokens": 0, "total_tokens": 0}}


def _tei(server: ModelServer, body: dict, failure: str | None) -> tuple[int, list]:
    pairs = sorted(_scored(server, body["query"], list(body["texts"]), failure), key=lambda p: -p[1])
    return 200, [{"index": i, "score": s} for i, s in pairs]


ROUTES = {"/v1/embeddings": _embeddings, "/v1/rerank": _rerank, "/v1/score": _score, "/rerank": _tei}
