"""End to end in headless Chromium with both models on model servers (tests/model_server.py): the panel says
where each stage ran, and a failing reranker server leaves the first-stage table, a warning and an answer."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from rag.models.remote_embedder import RemoteEmbedder
from rag.models.remote_reranker import RemoteReranker
from tests.browser_helpers import ask, clear_chat, open_page, running_app
from tests.model_server import ModelServer
from tests.openai_server import OpenAIServer
from tests.ui.test_browser import table_rows

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def servers(tiny_embedder, tiny_reranker):
    """One server for embeddings, another for reranking, so the reranker's can fail alone."""
    with ModelServer(tiny_embedder, tiny_reranker) as embeddings, ModelServer(tiny_embedder, tiny_reranker) as rerank:
        yield embeddings, rerank


@pytest.fixture(scope="module")
def app(tmp_path_factory, servers, tiny_embedder_path, tiny_reranker_path):
    embeddings, rerank = servers
    embedder = RemoteEmbedder(str(tiny_embedder_path), embeddings.base_url)
    reranker = RemoteReranker(str(tiny_reranker_path), rerank.base_url, api="score", retries=0)
    with OpenAIServer(reply="Vector databases store embeddings [1].") as llm, \
            running_app(tmp_path_factory.mktemp("browser-remote"), embedder, reranker, tiny_embedder_path,
                        tiny_reranker_path, llm.base_url, embedding_url=embeddings.base_url,
                        reranker_url=rerank.base_url, reranker_api="score") as running:
        yield running


def test_the_panel_says_where_each_stage_ran_and_survives_a_failing_reranker(browser, app, servers):
    embeddings, rerank = servers
    page = open_page(browser, app.url, [])
    try:
        ask(page, "Which database stores embeddings?")
        timings = page.locator("#rag-timings")
        expect(timings).to_contain_text(f"{embeddings.base_url} (embeddings)")
        expect(timings).to_contain_text(f"{rerank.base_url} (score)")
        assert all(row["Rerank score"] for row in table_rows(page))

        rerank.configure(fail="500")
        clear_chat(page)
        ask(page, "How do plants make sugar?")
        expect(page.get_by_text("Reranking failed", exact=False).first).to_be_visible()
        rows = table_rows(page)
        assert len(rows) == 7 and all(row["Rerank score"] == "" for row in rows)  # the first stage, shown
        assert [row["First #"] for row in rows] == [str(i) for i in range(1, 8)]
        expect(page.locator("#rag-chat")).to_contain_text("Vector databases store embeddings")
    finally:
        rerank.reset()
        page.context.close()
