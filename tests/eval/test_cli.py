"""`python -m rag eval` on a tiny corpus with tiny models: a table on stdout and a JSON report, the same
numbers as the app's Evaluate tab for the same judgments."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from rag.answer import Answerer
from rag.cli import main
from rag.eval.session import SessionJudgments
from rag.eval.tables import METRIC_HEADERS
from rag.ui.evaluate import EvaluateHandlers

ROOT = Path(__file__).resolve().parents[2]


def _run(args, env):
    return subprocess.run([sys.executable, "-m", "rag", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.e2e
def test_eval_cli_prints_table_and_writes_json(tmp_path, tiny_embedder_path, tiny_reranker_path, corpus_path):
    env = {**os.environ, "RAG_EMBEDDING_MODEL": str(tiny_embedder_path),
           "RAG_RERANKER_MODEL": str(tiny_reranker_path), "RAG_DEVICE": "cpu", "RAG_DTYPE": "fp32",
           "RAG_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    assert _run(["ingest", str(corpus_path)], env).returncode == 0
    queries = tmp_path / "q.jsonl"
    queries.write_text("\n".join(json.dumps(q) for q in [
        {"query": "how do bees make honey", "relevant": ["Honey bees live in colonies"]},
        {"query": "lava and ash", "relevant": [{"text": "Volcanoes", "grade": 2}, "corpus.md"]}]))
    out = tmp_path / "report.json"
    done = _run(["eval", str(queries), "--top-k", "5", "--top-n", "2", "--json", str(out),
                 "--vs-rerank-instruction", "Judge whether the passage is about insects"], env)
    assert done.returncode == 0, done.stderr
    assert "nDCG@10" in done.stdout and "Recall@2" in done.stdout and "Instruction experiment" in done.stdout
    report = json.loads(out.read_text())
    assert set(report) == {"report", "modes", "vs"}
    assert set(report["modes"]["first_stage"]) == {"dense", "bm25", "hybrid"}
    assert "First stage: dense vs BM25 vs hybrid" in done.stdout
    assert len(report["report"]["queries"]) == 2
    assert set(report["report"]["dense"]) == {"Recall@2", "Recall@5", "MRR@10", "nDCG@10"}


@pytest.mark.e2e
def test_eval_cli_rejects_a_bad_judgments_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json}\n")
    done = _run(["eval", str(bad)], {**os.environ, "RAG_DATA_DIR": str(tmp_path)})
    assert done.returncode == 2 and "bad.jsonl:1" in done.stderr


def test_the_cli_and_the_evaluate_tab_compute_identical_metrics(tiny_rag, tiny_settings, tiny_embedder_path,
                                                                tiny_reranker_path, corpus_path, tmp_path,
                                                                monkeypatch, capsys):
    tiny_rag.ingest_paths([corpus_path])
    judged = SessionJudgments()  # graded as in the Chat tab: on the ranking the settings panel's values give
    for query, row in (("How do volcanoes erupt?", 1), ("how do bees make honey", 0), ("chess openings", 3)):
        retrieval = tiny_rag.retrieve(query, top_k=6, top_n=2)
        judged.grade(retrieval, retrieval.candidates[row].chunk_id, 2)
    request = SimpleNamespace(session_hash="session-1")
    tab = EvaluateHandlers(tiny_rag, tiny_settings, Answerer(tiny_settings), work_dir=tmp_path / "work")
    report = tab.refresh(judged, 6, 2, request)
    metrics, download = report.metrics, report.download
    experiment = tab.experiment(judged, 6, 2, True, "", "", "", "", request).comparison
    tiny_rag.close()  # Milvus Lite lets one client at a time open the database: the CLI opens its own

    for name, value in {"RAG_EMBEDDING_MODEL": tiny_embedder_path, "RAG_RERANKER_MODEL": tiny_reranker_path,
                        "RAG_DEVICE": "cpu", "RAG_DTYPE": "fp32", "RAG_DATA_DIR": tiny_settings.data_dir,
                        "RAG_RETRIEVAL_MODE": tiny_settings.retrieval_mode}.items():
        monkeypatch.setenv(name, str(value))
    out = tmp_path / "report.json"
    judgments = download.constructor_args["value"]  # the Evaluate tab's export: the CLI's format
    assert main(["eval", judgments, "--top-k", "6", "--top-n", "2", "--json", str(out)]) == 0

    tab_rows = metrics.values.tolist()
    assert list(metrics.columns) == METRIC_HEADERS and len(tab_rows) == 4
    printed = [line.split() for line in capsys.readouterr().out.splitlines()[2:2 + len(tab_rows)]]
    assert printed == tab_rows  # the CLI's table is the tab's table, cell for cell
    cli = json.loads(out.read_text())["report"]
    assert [q["query"] for q in cli["queries"]] == list(judged.questions)
    for metric, dense, reranked, delta in tab_rows:
        assert (f"{cli['dense'][metric]:.3f}", f"{cli['reranked'][metric]:.3f}") == (dense, reranked)
        assert f"{cli['delta'][metric]:+.3f}" == delta
    rerun = experiment[["Metric", "Dense A", "Reranked A"]].values.tolist()
    assert rerun == [row[:3] for row in tab_rows]  # the tab's A/B re-run agrees too
