"""`Reranker` over a model server, in one of three request shapes (`Settings.reranker_api`):

- `rerank` — the Cohere/Jina shape vLLM, Infinity, llama.cpp and LiteLLM speak: `POST {url}/rerank`
  `{model, query, documents, top_n}` -> `{results: [{index, relevance_score}, ...]}` (sorted by score);
- `score` — vLLM's `POST {url}/score` `{model, text_1, text_2}` -> `{data: [{index, score}, ...]}`;
- `tei` — Hugging Face TEI's `POST {url}/rerank` `{query, texts}` -> `[{index, score}, ...]`.

Servers score `query + document` as one text and know nothing of Qwen3-Reranker's prompt, so by default the
client sends the official template (rag/models/reranker.py, the one implementation): the query is the system
prefix + `<Instruct>: …\\n<Query>: …\\n`, each document `<Document>: …` + the assistant suffix — together exactly
the text the in-process reranker scores, custom instruction included. `template=False` sends the bare query and
documents, for servers that apply the template themselves (the server's instruction then applies).
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

from rag.errors import ModelServerBadResponse, SettingsError
from rag.models.http import ModelServer, Role, check_count, finite_scores
from rag.models.reranker import template_document, template_query
from rag.types import Backend

log = logging.getLogger(__name__)

ROLE = Role("reranker server", "reranker_url (RAG_RERANKER_URL / --reranker-url) and reranker_api "
            "(RAG_RERANKER_API: rerank, score or tei)", "reranker_api_key (RAG_RERANKER_API_KEY)")
TEI_BATCH = 32  # TEI's default --max-client-batch-size: more texts in one request are refused


class RemoteReranker:
    """`rag.models.Reranker` served by a model server; see the module docstring."""

    def __init__(self, model_name: str, url: str, *, api: str = "rerank", api_key: str | None = None,
                 template: bool = True, batch_size: int = 64, timeout: float = 60.0, retries: int = 3,
                 server: ModelServer | None = None):
        if api not in APIS:
            raise SettingsError(f"reranker_api={api!r} (RAG_RERANKER_API): use one of {', '.join(APIS)}.")
        self.model_name = model_name
        self.api = api
        self.template = template
        self.batch_size = min(batch_size, TEI_BATCH) if api == "tei" else batch_size
        self.server = server or ModelServer(url, ROLE, api_key=api_key, timeout=timeout, retries=retries)

    @property
    def backend(self) -> Backend:
        return Backend("server", url=self.server.base_url, api=self.api)

    def score(self, query: str, documents: Sequence[str], instruction: str | None = None) -> list[float]:
        if not documents:
            return []
        if self.template:
            query, documents = template_query(query, instruction), [template_document(d) for d in documents]
        scores: list[float] = []
        for start in range(0, len(documents), self.batch_size):
            batch = list(documents[start:start + self.batch_size])
            scores.extend(APIS[self.api](self, query, batch))
        return scores

    # --- the three shapes: (query, documents) -> scores in the documents' order ---------------------------
    def _rerank(self, query: str, documents: list[str]) -> list[float]:
        answer = self.server.post("rerank", {"model": self.model_name, "query": query, "documents": documents,
                                             "top_n": len(documents)})
        items = answer.get("results") if isinstance(answer, dict) else None
        return self._by_index(items, len(documents), "rerank", "relevance_score")

    def _score(self, query: str, documents: list[str]) -> list[float]:
        answer = self.server.post("score", {"model": self.model_name, "text_1": query, "text_2": documents})
        items = answer.get("data") if isinstance(answer, dict) else None
        return self._by_index(items, len(documents), "score", "score")

    def _tei(self, query: str, documents: list[str]) -> list[float]:
        answer = self.server.post("rerank", {"query": query, "texts": documents, "raw_scores": False,
                                             "return_text": False, "truncate": True})
        return self._by_index(answer, len(documents), "rerank", "score")

    def _by_index(self, items, count: int, path: str, field: str) -> list[float]:
        """Scores put back in the documents' order from `[{index, <field>}, ...]` in any order."""
        url = self.server.url(path)
        if not isinstance(items, list):
            raise ModelServerBadResponse(
                f"The reranker server at {url} did not answer in the {self.api!r} API's shape. Check "
                f"{ROLE.url_setting}.")
        check_count(len(items), count, self.server, url, "scores")
        try:
            pairs = [(int(item["index"]), item[field]) for item in items]
        except (KeyError, TypeError, ValueError):
            raise ModelServerBadResponse(
                f"The reranker server at {url} sent results without `index` and `{field}`: it does not speak the "
                f"{self.api!r} API. Check {ROLE.url_setting}.") from None
        if sorted(i for i, _ in pairs) != list(range(count)):
            raise ModelServerBadResponse(
                f"The reranker server at {url} returned scores for documents {sorted(i for i, _ in pairs)} of "
                f"0..{count - 1}: some are missing or repeated. Check {ROLE.url_setting}.")
        pairs.sort()
        return finite_scores([value for _, value in pairs], self.server, url)

    def close(self) -> None:
        self.server.close()


APIS: dict[str, Callable[[RemoteReranker, str, list[str]], list[float]]] = {
    "rerank": RemoteReranker._rerank, "score": RemoteReranker._score, "tei": RemoteReranker._tei}
