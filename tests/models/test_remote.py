"""The model-server clients against a real HTTP server (tests/model_server.py) computing real scores with the
tiny models: the same vectors and scores as the in-process models, and every failure a clear error."""
from __future__ import annotations

import time

import numpy as np
import pytest

from rag.errors import (
    ModelServerAuthError,
    ModelServerBadResponse,
    ModelServerBusy,
    ModelServerFailed,
    ModelServerTimeout,
    ModelServerUnreachable,
)
from rag.models.embedder import SentenceTransformerEmbedder
from rag.models.registry import make_embedder, make_reranker, models_on_servers
from rag.models.remote_embedder import RemoteEmbedder
from rag.models.remote_reranker import RemoteReranker
from rag.models.reranker import template_document, template_query
from rag.settings import Settings
from tests.openai_server import refused_base_url

DOCUMENTS = ["Milvus is a vector database built for scalable similarity search.",
             "The capital of France is Paris.",
             "Qwen3-Reranker scores a query and a document with the probability of yes.",
             "Horses and cows are both animals.",
             "Dense retrieval embeds the query and the passages into the same vector space."]
QUERY = "What is a vector database?"
INSTRUCTION = "Given a question about databases, find the passage that answers it"


def remote_embedder(path, url, **kwargs) -> RemoteEmbedder:
    return RemoteEmbedder(str(path), url, retries=kwargs.pop("retries", 0), **kwargs)


def remote_reranker(path, url, api="rerank", **kwargs) -> RemoteReranker:
    return RemoteReranker(str(path), url, api=api, retries=kwargs.pop("retries", 0), **kwargs)


# --- parity with the in-process models -------------------------------------------------------------------
def test_embedder_matches_in_process(model_server, tiny_embedder, tiny_embedder_path):
    remote = remote_embedder(tiny_embedder_path, model_server.base_url)
    assert remote.dim == tiny_embedder.dim  # probed from the server
    np.testing.assert_allclose(remote.embed_documents(DOCUMENTS), tiny_embedder.embed_documents(DOCUMENTS),
                               atol=1e-5)
    for instruction in (None, INSTRUCTION):
        np.testing.assert_allclose(remote.embed_query(QUERY, instruction),
                                   tiny_embedder.embed_query(QUERY, instruction), atol=1e-5)
    assert remote.count_tokens(DOCUMENTS) == tiny_embedder.count_tokens(DOCUMENTS)
    query_input = [body["input"] for path, body in model_server.requests if path == "/v1/embeddings"][-1]
    assert query_input == [f"Instruct: {INSTRUCTION}\nQuery:{QUERY}"]  # the client applies the instruction


def test_a_text_longer_than_max_tokens_is_cut_like_in_process(model_server, tiny_embedder, tiny_embedder_path):
    long_text = " ".join(DOCUMENTS * 120)
    assert tiny_embedder.count_tokens([long_text])[0] > tiny_embedder.max_tokens
    remote = remote_embedder(tiny_embedder_path, model_server.base_url, max_tokens=tiny_embedder.max_tokens)
    np.testing.assert_allclose(remote.embed_documents([long_text]), tiny_embedder.embed_documents([long_text]),
                               atol=1e-5)


@pytest.mark.parametrize("matryoshka", [True, False], ids=["server-cuts", "client-cuts"])
def test_matryoshka_size_either_way(model_server, tiny_embedder, tiny_embedder_path, matryoshka):
    model_server.configure(matryoshka=matryoshka)
    local = SentenceTransformerEmbedder(str(tiny_embedder_path), dim=32, model=tiny_embedder.model)
    remote = remote_embedder(tiny_embedder_path, model_server.base_url, dim=32)
    assert remote.dim == 32
    for _ in range(2):
        np.testing.assert_allclose(remote.embed_documents(DOCUMENTS), local.embed_documents(DOCUMENTS), atol=1e-5)
    np.testing.assert_allclose(remote.embed_query(QUERY), local.embed_query(QUERY), atol=1e-5)
    sent = [body.get("dimensions") for path, body in model_server.requests]
    if matryoshka:
        assert sent == [32, 32, 32]
    else:  # refused once (vLLM's 400), remembered: the full vectors are cut here from then on
        assert sent == [32, None, None, None]


def test_documents_go_in_batches_with_progress(model_server, tiny_embedder, tiny_embedder_path):
    remote = remote_embedder(tiny_embedder_path, model_server.base_url, batch_size=2)
    done = []
    vectors = remote.embed_documents(DOCUMENTS, progress=lambda n, total: done.append((n, total)))
    np.testing.assert_allclose(vectors, tiny_embedder.embed_documents(DOCUMENTS), atol=1e-5)
    assert [len(body["input"]) for _, body in model_server.requests[1:]] == [2, 2, 1]
    assert done == [(2, 5), (4, 5), (5, 5)]


def test_batches_are_capped_in_tokens(model_server, tiny_embedder_path):
    remote = remote_embedder(tiny_embedder_path, model_server.base_url, batch_tokens=40)
    lengths = [n + remote._special_tokens for n in remote.count_tokens(DOCUMENTS)]
    remote.embed_documents(DOCUMENTS)
    for _, body in model_server.requests[1:]:
        sizes = [lengths[DOCUMENTS.index(t)] for t in body["input"]]
        assert len(sizes) == 1 or sum(sizes) <= 40 or max(sizes) * len(sizes) <= 40


@pytest.mark.parametrize("api", ["rerank", "score", "tei"])
def test_reranker_matches_in_process(model_server, tiny_reranker, tiny_reranker_path, api):
    url = model_server.url if api == "tei" else model_server.base_url
    remote = remote_reranker(tiny_reranker_path, url, api=api)
    for instruction in (None, INSTRUCTION):
        expected = tiny_reranker.score(QUERY, DOCUMENTS, instruction)
        np.testing.assert_allclose(remote.score(QUERY, DOCUMENTS, instruction), expected, atol=1e-5)
    assert len(set(np.argsort(expected))) == len(DOCUMENTS)
    path, body = model_server.requests[-1]
    assert path == {"rerank": "/v1/rerank", "score": "/v1/score", "tei": "/rerank"}[api]
    query = body.get("query", body.get("text_1"))
    assert query == template_query(QUERY, INSTRUCTION)  # the official template, custom instruction included


def test_template_switch_sends_the_bare_texts(model_server, tiny_reranker_path):
    remote = remote_reranker(tiny_reranker_path, model_server.base_url, template=False)
    remote.score(QUERY, DOCUMENTS[:2])
    body = model_server.requests[-1][1]
    assert body["query"] == QUERY and body["documents"] == DOCUMENTS[:2]
    templated = remote_reranker(tiny_reranker_path, model_server.base_url)
    templated.score(QUERY, DOCUMENTS[:2])
    assert model_server.requests[-1][1]["documents"] == [template_document(d) for d in DOCUMENTS[:2]]


def test_many_documents_go_in_batches(model_server, tiny_reranker, tiny_reranker_path):
    documents = DOCUMENTS * 3
    remote = remote_reranker(tiny_reranker_path, model_server.base_url, api="score", batch_size=4)
    np.testing.assert_allclose(remote.score(QUERY, documents), tiny_reranker.score(QUERY, documents), atol=1e-5)
    assert [len(body["text_2"]) for _, body in model_server.requests] == [4, 4, 4, 3]


# --- registry ----------------------------------------------------------------------------------------
def test_settings_pick_the_server(model_server, tiny_settings):
    settings = tiny_settings.replace(embedding_url=model_server.base_url, reranker_url=model_server.url,
                                     reranker_api="tei")
    assert isinstance(make_embedder(settings), RemoteEmbedder)
    reranker = make_reranker(settings)
    assert isinstance(reranker, RemoteReranker) and reranker.api == "tei"
    assert reranker.backend.url == model_server.url
    assert models_on_servers(settings) and not models_on_servers(tiny_settings)


def test_settings_read_the_urls_from_the_environment():
    settings = Settings.from_env({"RAG_EMBEDDING_URL": "http://gpu:8000/v1/", "RAG_RERANKER_URL": "http://gpu:8080",
                                  "RAG_RERANKER_API": "tei", "RAG_RERANKER_API_KEY": "k"})
    assert (settings.embedding_url, settings.reranker_url, settings.reranker_api, settings.reranker_api_key) == \
        ("http://gpu:8000/v1", "http://gpu:8080", "tei", "k")
    with pytest.raises(ValueError, match="RAG_RERANKER_API.*rerank, score, tei"):
        Settings(reranker_api="cohere")
    with pytest.raises(ValueError, match="RAG_EMBEDDING_URL.*http://"):
        Settings(embedding_url="gpu:8000")


# --- failures ----------------------------------------------------------------------------------------
def test_api_key_is_sent_and_a_wrong_one_says_which_setting(model_server, tiny_reranker_path):
    model_server.configure(api_key="secret")
    good = remote_reranker(tiny_reranker_path, model_server.base_url, api_key="secret")
    assert len(good.score(QUERY, DOCUMENTS[:2])) == 2
    bad = remote_reranker(tiny_reranker_path, model_server.base_url, api_key="wrong")
    with pytest.raises(ModelServerAuthError, match=r"key is wrong or missing.*reranker_api_key \(RAG_RERANKER_API_KEY\)"):
        bad.score(QUERY, DOCUMENTS[:2])


def test_429_waits_as_told_then_succeeds(model_server, tiny_reranker, tiny_reranker_path):
    model_server.configure(fail="429", fail_times=1, retry_after="1")
    remote = remote_reranker(tiny_reranker_path, model_server.base_url, retries=2)
    started = time.perf_counter()
    scores = remote.score(QUERY, DOCUMENTS)
    assert time.perf_counter() - started >= 1.0  # Retry-After: 1 honoured
    np.testing.assert_allclose(scores, tiny_reranker.score(QUERY, DOCUMENTS), atol=1e-5)
    assert len(model_server.requests) == 2


def test_429_after_every_retry(model_server, tiny_embedder_path):
    remote = remote_embedder(tiny_embedder_path, model_server.base_url, dim=32, retries=2)
    model_server.configure(fail="429")
    with pytest.raises(ModelServerBusy, match=r"rate limiting.*after 2 retries"):
        remote.embed_query(QUERY)
    assert len(model_server.requests) == 3


def test_500_retried_then_reported(model_server, tiny_embedder, tiny_embedder_path):
    remote = RemoteEmbedder(str(tiny_embedder_path), model_server.base_url, retries=1)
    remote.server.backoff = 0.01
    model_server.configure(fail="500", fail_times=1)
    np.testing.assert_allclose(remote.embed_query(QUERY), tiny_embedder.embed_query(QUERY), atol=1e-5)
    model_server.configure(fail="500", fail_times=None)
    with pytest.raises(ModelServerFailed, match=r"failed with 500.*server's log.*illegal memory access"):
        remote.embed_documents(DOCUMENTS)


def test_timeout(model_server, tiny_reranker_path):
    model_server.configure(fail="slow", delay=5.0)
    remote = remote_reranker(tiny_reranker_path, model_server.base_url, timeout=0.3)
    with pytest.raises(ModelServerTimeout, match=r"did not answer within 0.3 s.*RAG_MODEL_TIMEOUT"):
        remote.score(QUERY, DOCUMENTS)


@pytest.mark.parametrize("api", ["rerank", "score", "tei"])
def test_wrong_result_count_and_nan(model_server, tiny_reranker_path, api):
    url = model_server.url if api == "tei" else model_server.base_url
    remote = remote_reranker(tiny_reranker_path, url, api=api)
    model_server.configure(fail="count")
    with pytest.raises(ModelServerBadResponse, match="returned 4 scores for 5 inputs"):
        remote.score(QUERY, DOCUMENTS)
    model_server.configure(fail="nan")
    with pytest.raises(ModelServerBadResponse, match="not a finite number"):
        remote.score(QUERY, DOCUMENTS)


def test_embedding_count_and_nan(model_server, tiny_embedder_path):
    remote = remote_embedder(tiny_embedder_path, model_server.base_url)
    model_server.configure(fail="count")
    with pytest.raises(ModelServerBadResponse, match="returned 4 embeddings for 5 inputs"):
        remote.embed_documents(DOCUMENTS)
    model_server.configure(fail="nan")
    with pytest.raises(ModelServerBadResponse, match="NaN"):
        remote.embed_documents(DOCUMENTS)


def test_connection_refused_names_the_url(tiny_embedder_path, tiny_reranker_path):
    url = refused_base_url()
    with pytest.raises(ModelServerUnreachable, match=rf"{url}/embeddings.*isn't running.*RAG_EMBEDDING_URL"):
        remote_embedder(tiny_embedder_path, url)  # the dimension probe
    with pytest.raises(ModelServerUnreachable, match=rf"{url}/score.*isn't running.*RAG_RERANKER_URL"):
        remote_reranker(tiny_reranker_path, url, api="score").score(QUERY, DOCUMENTS)


def test_a_wrong_path_says_to_check_the_base_url(model_server, tiny_reranker_path):
    remote = remote_reranker(tiny_reranker_path, model_server.url, api="score")  # /score without /v1
    with pytest.raises(ModelServerFailed, match=r"no .*/score \(404\).*RAG_RERANKER_URL"):
        remote.score(QUERY, DOCUMENTS)


def test_retry_after_reads_milliseconds_seconds_and_dates():
    import email.utils

    from rag.models.http import retry_after

    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "3"}) == 3.0
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after({"retry-after": soon}) <= 30
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None
