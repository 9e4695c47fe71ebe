"""Reliability fixtures: app processes (tests/app_process.py) sharing one local OpenAI-protocol server."""
from __future__ import annotations

import pytest

from tests.app_process import AppProcess
from tests.openai_server import OpenAIServer

REPLY = "Sea otters hold hands while they sleep [1]."
MAX_FILE_MB = 1  # RAG_MAX_FILE_MB of the shared app: the oversize-upload test sends 1.5 MB


@pytest.fixture(scope="session")
def llm():
    """One OpenAI-protocol server for the whole reliability run; tests reset it (see `fresh_llm`)."""
    with OpenAIServer(reply=REPLY) as server:
        yield server


@pytest.fixture
def fresh_llm(llm):
    llm.reset()
    llm.configure(reply=REPLY, delay=30.0)
    yield llm
    llm.reset()


@pytest.fixture(scope="session")
def make_app(tmp_path_factory, tiny_embedder_path, tiny_reranker_path, llm):
    """Factory: make_app(name, shared=..., start=True) -> AppProcess; every one is stopped at the end."""
    apps: list[AppProcess] = []

    def make(name: str, *, shared: bool, start: bool = True, llm_url: str | None = None, **kwargs) -> AppProcess:
        app = AppProcess(tmp_path_factory.mktemp(name), llm_url or llm.base_url, tiny_embedder_path,
                         tiny_reranker_path, shared=shared, **kwargs)
        apps.append(app)
        return app.start() if start else app

    yield make
    for app in apps:
        app.stop()


@pytest.fixture(scope="session")
def shared_app(make_app) -> AppProcess:
    """An app with --shared-uploads (API uploads allowed), shared by the load/inputs/dependency modules."""
    return make_app("shared-app", shared=True, extra_env={"RAG_MAX_FILE_MB": str(MAX_FILE_MB)})


@pytest.fixture(scope="session")
def private_app(make_app) -> AppProcess:
    """An app with private (per-session) uploads, for the isolation and browser checks."""
    return make_app("private-app", shared=False)
