"""The chat handlers with the models on model servers (tests/model_server.py): where each stage ran is in the
timings line, a failing reranker server leaves the first-stage table and still answers, and every server failure
is a message that says what to do."""
from __future__ import annotations

import warnings

import pandas as pd
import pytest

from rag import RAG
from rag.answer import Answerer
from rag.models.remote_reranker import RemoteReranker
from rag.ui.handlers import ChatHandlers
from tests.ingest_files import CORPUS
from tests.model_server import ModelServer
from tests.openai_server import refused_base_url
from tests.ui.test_handlers import run_ask, sent, shown

FAILURES = {  # server failure -> what the message must say
    "401": "RAG_RERANKER_API_KEY",
    "429": "rate limiting",
    "500": "failed with 500",
    "slow": "did not answer within",
    "count": "returned 6 scores for 7 inputs",
    "nan": "not a finite number",
}


@pytest.fixture(scope="module")
def remote_rag(tmp_path_factory, model_server_session, corpus_rag):
    """The corpus embedded through the model server; both models on it (read-only)."""
    settings = corpus_rag.settings.replace(data_dir=tmp_path_factory.mktemp("remote-ui") / "data", milvus_uri=None,
                                           embedding_url=model_server_session.base_url,
                                           reranker_url=model_server_session.base_url, model_retries=0,
                                           model_timeout=30.0)
    rag = RAG(settings)
    rag.ingest_paths([CORPUS])
    yield rag
    rag.close()


@pytest.fixture
def chat(remote_rag, model_server, openai_server):
    settings = remote_rag.settings.replace(llm_base_url=openai_server.base_url)
    openai_server.reply = "Milvus is a vector database [1]."
    return ChatHandlers(remote_rag, settings, Answerer(settings))


def test_timings_say_where_each_model_ran(chat, model_server):
    steps = run_ask(chat, "Which database stores embeddings?")
    lines = [t for t in sent(steps, "timings") if t]
    pending, final = lines[0], lines[-1]
    assert "rerank …" in pending and f"{model_server.base_url} (rerank)" in pending  # shown while it runs
    assert "embed query **" in final and f"{model_server.base_url} (embeddings)" in final
    assert f"{model_server.base_url} (rerank)" in final


def test_local_models_show_device_and_precision(corpus_rag, openai_server):
    settings = corpus_rag.settings.replace(llm_base_url=openai_server.base_url)
    steps = run_ask(ChatHandlers(corpus_rag, settings, Answerer(settings)), "Which database stores embeddings?")
    assert "(local cpu float32)" in [t for t in sent(steps, "timings") if t][-1]


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failing_reranker_server_keeps_the_first_stage_and_still_answers(chat, remote_rag, tiny_reranker,
                                                                           tiny_embedder, failure, monkeypatch):
    with ModelServer(tiny_embedder, tiny_reranker, fail=failure, delay=3.0) as broken:
        reranker = RemoteReranker(remote_rag.settings.reranker_model, broken.base_url, retries=0, timeout=1.0)
        monkeypatch.setattr(remote_rag, "reranker", reranker)
        with pytest.warns(UserWarning, match=FAILURES[failure]):
            steps = run_ask(chat, "Which database stores embeddings?")
    table = [t for t in sent(steps, "table") if isinstance(t, pd.DataFrame)][-1]
    assert len(table) == 7 and set(table["Rerank score"]) == {""}  # first-stage table, no pending marks left
    assert list(table["First #"]) == [str(i) for i in range(1, 8)]
    assert (table["LLM"].str.startswith("✓")).sum() == 3
    page = shown(steps)
    assert "[[1]](#passage-1-1" in page.chatbot[-1]["content"]  # the answer still came, from first-stage passages
    assert page.turn.retrieval.reranked is False


def test_a_refused_reranker_connection_names_the_url(chat, remote_rag, monkeypatch):
    url = refused_base_url()
    monkeypatch.setattr(remote_rag, "reranker", RemoteReranker("m", url, retries=0))
    with pytest.warns(UserWarning, match=rf"{url}/rerank.*isn't running"):
        steps = run_ask(chat, "Which database stores embeddings?")
    assert len([t for t in sent(steps, "table") if isinstance(t, pd.DataFrame)][-1]) == 7


@pytest.mark.parametrize("failure", ["401", "500", "nan"])
def test_a_failing_embedding_server_is_a_message_in_the_chat(chat, model_server, failure):
    model_server.configure(fail=failure)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steps = run_ask(chat, f"a question the query cache has not seen ({failure})")
    reply = shown(steps).chatbot[-1]["content"]
    assert reply.startswith("⚠") and "embedding server" in reply
    assert {"401": "RAG_EMBEDDING_API_KEY", "500": "failed with 500", "nan": "NaN"}[failure] in reply
    assert any("embedding server" in str(w.message) for w in caught)


def test_the_api_reports_the_reranker_warning(chat, remote_rag, tiny_reranker, tiny_embedder, monkeypatch):
    from rag.chat import QueryOptions
    from rag.ui.api import ask_json

    with ModelServer(tiny_embedder, tiny_reranker, fail="500") as broken:
        monkeypatch.setattr(remote_rag, "reranker", RemoteReranker("m", broken.base_url, retries=0))
        result = ask_json(remote_rag, chat.answerer, "Which database stores embeddings?",
                          QueryOptions.from_settings(remote_rag.settings))
    assert "Reranking failed" in result["warning"] and "failed with 500" in result["warning"]
    assert result["retrieval"]["reranked"] is False and result["answer"]
    assert result["retrieval"]["ran_on"]["embed_query"].startswith(remote_rag.settings.embedding_url)


def test_with_models_on_servers_many_questions_are_in_flight_at_once(remote_rag, model_server):
    """No model lock in this process on the server path: 8 questions whose every model request takes 1 s
    finish in about two requests' time (embed + rerank), not sixteen."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from rag.ui import build_app
    from rag.ui.serving import chat_concurrency, ingest_concurrency

    settings = remote_rag.settings
    assert (chat_concurrency(settings), ingest_concurrency(settings)) == (32, 4)
    local = settings.replace(embedding_url=None, reranker_url=None)
    assert (chat_concurrency(local), ingest_concurrency(local)) == (8, 1)
    fns = {fn.api_name: fn for fn in build_app(remote_rag).fns.values()}
    assert fns["chat_submit"].concurrency_limit == 32 and fns["upload"].concurrency_limit == 4

    model_server.configure(latency=1.0)
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: remote_rag.retrieve(f"question number {i} about databases"), range(8)))
    elapsed = time.perf_counter() - started
    assert all(r.reranked and len(r.candidates) == 7 for r in results)
    assert elapsed < 6.0, f"8 concurrent questions took {elapsed:.1f} s: something serialises them"
