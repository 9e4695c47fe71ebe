"""`python app.py` as a newcomer runs it: the app starts and answers, and a configuration mistake ends it at
once with one line that says what to change — before any model loads, and with no traceback."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.app_process import ROOT, AppProcess
from tests.browser_helpers import free_port


@pytest.mark.e2e
def test_python_app_py_starts_and_answers_a_question_through_the_api(tmp_path, tiny_embedder_path,
                                                                       tiny_reranker_path):
    """The deliberate start-up check: no LLM key, tiny local models, the bundled corpus as knowledge base."""
    app = AppProcess(tmp_path, None, tiny_embedder_path, tiny_reranker_path, shared=False)
    try:
        app.start()
        page = httpx.get(app.url, timeout=30)
        assert page.status_code == 200 and "<gradio-app" in page.text
        answer = app.client().predict("How do sea otters sleep?", api_name="/ask")
        assert answer["mode"] == "retrieval-only" and answer["error"] is None
        assert answer["answer"].strip() and answer["citations"]
        assert answer["retrieval"]["candidates"][0]["source"] == "corpus.md"
        assert "Traceback" not in app.log_text()
    finally:
        app.stop()


def run_app(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    """`python app.py ARGS` with a model that does not exist: a check that runs after model loading would
    fail on the model instead, so each message below proves its check comes first."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "OPENAI_"))}
    base.update({"RAG_EMBEDDING_MODEL": "/nonexistent/model", "RAG_RERANKER_MODEL": "none",
                 "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"})
    base.update(env)
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(ROOT / "app.py"), "--no-default-kb", "--port", str(free_port()),
                             *args], cwd=ROOT, env=base, capture_output=True, text=True, timeout=timeout)
    return result, time.monotonic() - started


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


@pytest.mark.e2e
@pytest.mark.parametrize("env, args, expected", [
    ({"RAG_TOP_K": "abc"}, [], ["RAG_TOP_K='abc' is not a whole number"]),
    ({"RAG_SHARED_UPLOADS": "ture"}, [], ["RAG_SHARED_UPLOADS='ture' is not a yes/no value", "true or false"]),
    ({"RAG_TEMPERATURE": "hot"}, [], ["RAG_TEMPERATURE='hot' is not a number"]),
    ({"RAG_TOP_N": "0"}, [], ["top_n=0 (RAG_TOP_N)", "at least 1"]),
    ({"RAG_DTYPE": "fp64"}, [], ["dtype='fp64' (RAG_DTYPE)", "fp32"]),
    ({"RAG_CHAT_CONCURRENCY": "many"}, [], ["RAG_CHAT_CONCURRENCY='many'"]),
    ({"RAG_RERANKER_API": "cohere"}, [], ["reranker_api='cohere' (RAG_RERANKER_API)", "rerank, score, tei"]),
    ({}, ["--embedding-url", "gpu:8000"], ["embedding_url='gpu:8000' (RAG_EMBEDDING_URL)", "http://"]),
    ({}, ["--db", "{tmp}/notes.sqlite"], ["must end in .db", "notes.db"]),
])
def test_a_configuration_mistake_is_one_line_naming_the_setting(tmp_path, env, args, expected):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result, elapsed = run_app(args, {"RAG_DATA_DIR": str(tmp_path / "data"), **env})
    line = one_line_error(result)
    for text in expected:
        assert text in line, line
    assert "model" not in line.lower() or "RAG_" in line  # the model (which doesn't exist) never loaded
    assert elapsed < 45, elapsed


@pytest.mark.e2e
def test_an_embedding_server_that_is_not_running_is_one_line_naming_the_url(tmp_path, tiny_embedder_path):
    from tests.openai_server import refused_base_url

    url = refused_base_url()
    result, _ = run_app(["--embedding-url", url], {"RAG_DATA_DIR": str(tmp_path / "data"), "RAG_MODEL_RETRIES": "0",
                                                   "RAG_EMBEDDING_MODEL": str(tiny_embedder_path)}, timeout=180)
    line = one_line_error(result)
    assert f"{url}/embeddings" in line and "isn't running" in line and "RAG_EMBEDDING_URL" in line, line


@pytest.mark.e2e
def test_a_data_directory_that_is_a_file_is_reported_before_the_models_load(tmp_path):
    blocker = tmp_path / "data"
    blocker.write_text("not a folder")
    result, _ = run_app([], {"RAG_DATA_DIR": str(blocker)})
    line = one_line_error(result)
    assert str(blocker) in line and "a file of that name is in the way" in line and "RAG_DATA_DIR" in line


def test_a_db_folder_is_used_as_folder_slash_milvus_db(tmp_path, tiny_embedder_path):
    """--db with a folder (existing or new, no suffix) works: the database is <folder>/milvus.db."""
    from rag import RAG, Settings

    for folder in (tmp_path / "existing", tmp_path / "new-kb"):
        if folder.name == "existing":
            folder.mkdir()
        rag = RAG(Settings(embedding_model=str(tiny_embedder_path), reranker_model=None, device="cpu",
                           dtype="fp32", milvus_uri=str(folder), data_dir=tmp_path / "unused"))
        try:
            rag.add_texts(["Sea otters hold hands while they sleep."], source="otters.md")
            assert rag.retrieve("otters", top_k=1).candidates[0].source == "otters.md"
        finally:
            rag.close()
        assert (folder / "milvus.db").exists()


@pytest.mark.e2e
def test_a_database_in_use_says_so_and_not_more(tmp_path, tiny_embedder_path):
    """Milvus Lite allows one process: the second gets exactly that, with what to do."""
    from rag.errors import StoreError
    from rag.store import make_client

    db = str(tmp_path / "kb.db")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom rag.store import make_client\n"
                               "make_client(sys.argv[1]); print('open', flush=True); time.sleep(60)", db],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreError, match="in use by another process") as caught:
            make_client(db)
        assert "another --db path" in str(caught.value)
    finally:
        holder.kill()
        holder.wait()
    make_client(db).close()  # the lock goes with its holder


def test_settings_errors_name_the_variable_without_starting_anything():
    """The same rules in-process (the fast loop): `Settings.from_env` reads and checks every variable."""
    from rag import Settings
    from rag.errors import SettingsError

    assert Settings.from_env({"RAG_SHARED_UPLOADS": "yes", "RAG_TOP_K": " 7 "}).shared_uploads is True
    assert Settings.from_env({"RAG_SHARED_UPLOADS": "0"}).shared_uploads is False
    assert Settings.from_env({"RAG_EMBEDDING_DIM": "none"}).embedding_dim is None
    for env, text in [({"RAG_TOP_K": "ten"}, "RAG_TOP_K"), ({"RAG_SHARED_UPLOADS": "maybe"}, "true or false"),
                      ({"RAG_EMBEDDING_DIM": "16"}, "RAG_EMBEDDING_DIM"), ({"RAG_DEVICE": "gpu"}, "cuda"),
                      ({"RAG_CHUNK_OVERLAP": "600"}, "chunk_tokens"), ({"RAG_COLLECTION": "my-docs"}, "letters"),
                      ({"RAG_MILVUS_TIMEOUT": "0"}, "RAG_MILVUS_TIMEOUT.*seconds above 0")]:
        with pytest.raises(SettingsError, match=text):
            Settings.from_env(env)


def test_the_milvus_lite_path_rule():
    from rag.errors import StoreError
    from rag.store import lite_database_path

    assert lite_database_path("data/milvus.db") == Path("data/milvus.db")
    assert lite_database_path("data/kb") == Path("data/kb/milvus.db")
    with pytest.raises(StoreError, match=r"must end in \.db.*kb\.db"):
        lite_database_path("data/kb.sqlite")
