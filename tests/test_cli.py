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
