"""`python -m rag ingest|list|delete` in a subprocess with the tiny embedder: output and exit codes."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag import cli
from tests import ingest_files as files

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run(tmp_path, tiny_embedder_path):
    env = {**os.environ, "RAG_EMBEDDING_MODEL": str(tiny_embedder_path), "RAG_RERANKER_MODEL": "none",
           "RAG_DEVICE": "cpu", "RAG_DTYPE": "fp32", "RAG_DATA_DIR": str(tmp_path / "data"),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    db = str(tmp_path / "cli.db")

    def _run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rag", *args, "--db", db], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
    return _run


@pytest.mark.e2e
def test_ingest_list_delete(run, tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    files.write_markdown(folder)
    files.write_markdown(folder / "sub", "seas.md", "# Seas\n\nThe Baltic Sea is brackish and shallow.")
    good = run("ingest", str(folder))
    assert good.returncode == 0, good.stderr
    assert "ok" in good.stdout and "sub/seas.md" in good.stdout and "2 added, 0 skipped, 0 failed" in good.stdout

    bad = files.write_binary_as_text(tmp_path)
    mixed = run("ingest", str(bad), str(folder / "guide.md"), "--collection", "rag_chunks")
    assert mixed.returncode == 1
    assert "failed" in mixed.stdout and "photo.txt" in mixed.stdout and "binary" in mixed.stdout
    assert "skipped" in mixed.stdout  # guide.md again under the same name: unchanged

    listed = run("list")
    assert listed.returncode == 0
    lines = sorted(listed.stdout.strip().splitlines())
    assert [line.split("\t")[0] for line in lines] == ["guide.md", "sub/seas.md"]
    assert all(int(line.split("\t")[1]) > 0 for line in lines)

    deleted = run("delete", "sub/seas.md")
    assert deleted.returncode == 0 and "deleted sub/seas.md" in deleted.stdout
    missing = run("delete", "sub/seas.md")
    assert missing.returncode == 1 and "no document named" in missing.stderr
    assert [line.split("\t")[0] for line in run("list").stdout.strip().splitlines()] == ["guide.md"]

    private = run("ingest", str(folder / "sub" / "seas.md"), "--owner", "alice")
    assert private.returncode == 0, private.stderr
    assert "private uploads, which an app removes" in private.stderr and "RAG_SESSION_TTL" in private.stderr
    assert "alice\t" in run("list", "-l").stdout and "private" not in good.stderr


@pytest.mark.e2e
def test_list_on_a_fresh_database_is_empty(run):
    result = run("list")
    assert result.returncode == 0 and result.stdout == ""


def test_commands_register_in_one_line():
    seen = {}
    cli.register("echo", cli.Command("echo a word", lambda p: p.add_argument("word"),
                                     lambda args: seen.setdefault("word", args.word) and 0))
    try:
        assert cli.main(["echo", "hi", "--db", "unused.db"]) == 0 and seen == {"word": "hi"}
    finally:
        del cli.COMMANDS["echo"]
    assert set(cli.COMMANDS) >= {"ingest", "list", "delete"}


# --- models on a model server (tests/model_server.py) --------------------------------------------------
@pytest.fixture
def server_env(monkeypatch, tmp_path, tiny_embedder_path, tiny_reranker_path):
    for name, value in {"RAG_EMBEDDING_MODEL": str(tiny_embedder_path), "RAG_RERANKER_MODEL": str(tiny_reranker_path),
                        "RAG_DEVICE": "cpu", "RAG_DTYPE": "fp32", "RAG_DATA_DIR": str(tmp_path / "data"),
                        "RAG_MODEL_RETRIES": "0"}.items():
        monkeypatch.setenv(name, value)
    return str(tmp_path / "cli.db")


def test_cli_ingests_and_evaluates_through_model_servers_and_says_what_failed(server_env, model_server, tmp_path,
                                                                              capsys):
    from tests.openai_server import refused_base_url

    folder = tmp_path / "docs"
    folder.mkdir()
    files.write_markdown(folder)
    url = refused_base_url()
    assert cli.main(["ingest", str(folder), "--db", server_env, "--embedding-url", url]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: Could not connect to the embedding server at {url}/embeddings")
    assert "isn't running" in error and "RAG_EMBEDDING_URL" in error

    model_server.configure(api_key="secret")
    assert cli.main(["ingest", str(folder), "--db", server_env, "--embedding-url", model_server.base_url]) == 2
    assert "key is wrong or missing" in capsys.readouterr().err
    model_server.configure(api_key=None)

    assert cli.main(["ingest", str(folder), "--db", server_env, "--embedding-url", model_server.base_url]) == 0
    assert "1 added" in capsys.readouterr().out
    assert {path for path, _ in model_server.requests} == {"/v1/embeddings"}

    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"query": "How do I install it?", "relevant": ["guide.md"]}\n', encoding="utf-8")
    flags = ["--db", server_env, "--embedding-url", model_server.base_url, "--reranker-url", model_server.url,
             "--reranker-api", "tei", "--no-modes"]
    assert cli.main(["eval", str(queries), *flags]) == 0
    assert "/rerank" in model_server.paths()  # TEI's route, at the root
    capsys.readouterr()
    model_server.configure(fail="500")
    assert cli.main(["eval", str(queries), *flags]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: The ") and "failed with 500" in error and "server's log" in error
