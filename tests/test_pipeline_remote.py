"""`RAG` with both models on a model server (tests/model_server.py over the tiny models): the same candidates,
scores and order as the in-process models, and where each stage ran recorded for the panel and the trace."""
from __future__ import annotations

import pytest

from rag import RAG
from rag.eval.trace import build_trace, load_trace, trace_json
from rag.types import Backend
from tests.ingest_files import CORPUS


@pytest.fixture(scope="module")
def remote_corpus_rag(tmp_path_factory, model_server_session, corpus_rag):
    """The corpus ingested through the model server (read-only)."""
    server = model_server_session
    settings = corpus_rag.settings.replace(data_dir=tmp_path_factory.mktemp("remote") / "data", milvus_uri=None,
                                           embedding_url=server.base_url, reranker_url=server.base_url,
                                           reranker_api="score")
    rag = RAG(settings)
    rag.ingest_paths([CORPUS])
    yield rag
    rag.close()


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_retrieve_through_the_server_matches_in_process(remote_corpus_rag, corpus_rag, mode):
    for query in ("Which database stores embeddings?", "How do I install it?"):
        local = corpus_rag.retrieve(query, top_k=6, mode=mode)
        remote = remote_corpus_rag.retrieve(query, top_k=6, mode=mode)
        assert [c.chunk_id for c in remote.candidates] == [c.chunk_id for c in local.candidates]
        for r, l in zip(remote.candidates, local.candidates):
            assert r.dense_score == pytest.approx(l.dense_score, abs=1e-5)
            assert r.rerank_score == pytest.approx(l.rerank_score, abs=1e-5)
            assert r.rerank_rank == l.rerank_rank


def test_where_each_stage_ran_is_in_the_retrieval_and_the_trace(remote_corpus_rag, corpus_rag, model_server_session):
    remote = remote_corpus_rag.retrieve("Which database stores embeddings?")
    assert remote.ran_on == {"embed_query": Backend("server", url=model_server_session.base_url, api="embeddings"),
                             "rerank": Backend("server", url=model_server_session.base_url, api="score")}
    trace = build_trace(remote, remote_corpus_rag.settings)
    assert trace["stages"]["rerank"]["url"] == model_server_session.base_url
    assert trace["stages"]["rerank"]["seconds"] == remote.timings["rerank"] > 0
    assert trace["settings"]["reranker_api"] == "score" and "reranker_api_key" not in trace["settings"]
    assert load_trace(trace_json(trace))[1].ran_on == remote.ran_on

    local = corpus_rag.retrieve("Which database stores embeddings?")
    stage = build_trace(local, corpus_rag.settings)["stages"]["embed_query"]
    assert (stage["kind"], stage["device"], stage["precision"]) == ("local", "cpu", "float32")
    assert stage["seconds"] == local.timings["embed_query"]
