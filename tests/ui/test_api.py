"""The named API endpoints through gradio_client, and app.py's flags and server address."""
from __future__ import annotations

import pytest

import app as app_module
from tests.browser_helpers import running_app
from tests.openai_server import OpenAIServer


@pytest.fixture(scope="module")
def llm():
    with OpenAIServer(reply="Lava flows from volcanoes [1].") as server:
        yield server


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_embedder, tiny_reranker, tiny_embedder_path, tiny_reranker_path, llm):
    from gradio_client import Client

    with running_app(tmp_path_factory.mktemp("api-data"), tiny_embedder, tiny_reranker, tiny_embedder_path,
                     tiny_reranker_path, llm.base_url, launch={"mcp_server": True}) as running:
        yield Client(running.url, verbose=False)


def test_retrieve_endpoint_returns_ranked_candidates_with_both_scores(client):
    result = client.predict("volcano eruption", 5, 2, True, api_name="/retrieve")
    assert result["reranked"] is True and len(result["candidates"]) == 5
    assert [c["rerank_rank"] for c in result["candidates"]] == [1, 2, 3, 4, 5]
    assert all(isinstance(c["dense_score"], float) and isinstance(c["rerank_score"], float)
               for c in result["candidates"])
    assert sum(c["selected"] for c in result["candidates"]) == 2
    assert {"embed_query", "search", "rerank"} <= set(result["timings"])


def test_retrieve_endpoint_defaults_and_reranker_off(client):
    result = client.predict(query="honey bees", use_reranker=False, retrieval_mode="dense", api_name="/retrieve")
    assert result["reranked"] is False and len(result["candidates"]) == 7
    assert [c["dense_rank"] for c in result["candidates"]] == list(range(1, 8))
    hybrid = client.predict(query="honey bees", use_reranker=False, retrieval_mode="hybrid", api_name="/retrieve")
    assert hybrid["mode"] == "hybrid" and [c["fused_rank"] for c in hybrid["candidates"]] == list(range(1, 8))
    assert all(c["bm25_score"] >= 0 and "bm25_rank" in c for c in hybrid["candidates"])


def test_ask_endpoint_answers_with_citations(client):
    result = client.predict("What comes out of volcanoes?", api_name="/ask")
    assert result["answer"] == "Lava flows from volcanoes [1]." and result["mode"] == "llm"
    assert result["citations"][0]["number"] == 1 and result["citations"][0]["source"] == "corpus.md"


def test_only_retrieve_ask_and_upload_are_public(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert names == {"/retrieve", "/ask", "/upload"}  # /upload: shared KB, only with --shared-uploads


def test_mcp_server_offers_retrieve_and_ask_as_tools(client):
    import httpx

    tools = httpx.get(client.src.rstrip("/") + "/gradio_api/mcp/schema", timeout=10).json()
    assert {t["name"] for t in tools} == {"retrieve", "ask", "api_upload"}  # api_upload: --shared-uploads only
    retrieve = next(t for t in tools if t["name"] == "retrieve")
    assert retrieve["inputSchema"]["required"] == ["query"] and "reranker" in retrieve["description"]


# --- app.py ----------------------------------------------------------------------------------------------
def test_flags_override_the_environment():
    args = app_module.parse_args(["--db", "x.db", "--reranker-model", "none", "--top-k", "20",
                                  "--embedding-dim", "256", "--shared-uploads", "--llm-model", "m"])
    settings = app_module.settings_from_args(args, env={"RAG_TOP_K": "5", "RAG_TOP_N": "4",
                                                        "RAG_LLM_MODEL": "env-model"})
    assert settings.milvus_uri == "x.db" and settings.reranker_model is None and settings.embedding_dim == 256
    assert settings.top_k == 20 and settings.top_n == 4 and settings.llm_model == "m"
    assert settings.shared_uploads is True


def test_unset_flags_keep_the_environment():
    settings = app_module.settings_from_args(app_module.parse_args([]), env={"RAG_SHARED_UPLOADS": "true"})
    assert settings.shared_uploads is True and settings.top_k == 10


@pytest.mark.parametrize("argv, env, expected", [
    ([], {}, ("127.0.0.1", 7860)),
    ([], {"SPACE_ID": "me/app"}, ("0.0.0.0", 7860)),
    ([], {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "8000"}, ("0.0.0.0", 8000)),
    ([], {"PORT": "9000"}, ("127.0.0.1", 9000)),
    (["--host", "::", "--port", "1234"], {"GRADIO_SERVER_PORT": "8000", "SPACE_ID": "x"}, ("::", 1234)),
])
def test_server_address(argv, env, expected):
    assert app_module.server_address(app_module.parse_args(argv), env) == expected
