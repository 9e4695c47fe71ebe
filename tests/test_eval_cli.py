"""`python -m rag eval` on a tiny corpus with tiny models: a table on stdout and a JSON report."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(args, env):
    return subprocess.run([sys.executable, "-m", "rag", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


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
    assert set(report) == {"report", "vs"}
    assert len(report["report"]["queries"]) == 2
    assert set(report["report"]["dense"]) == {"Recall@2", "Recall@5", "MRR@10", "nDCG@10"}


def test_eval_cli_rejects_a_bad_judgments_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json}\n")
    done = _run(["eval", str(bad)], {**os.environ, "RAG_DATA_DIR": str(tmp_path)})
    assert done.returncode == 2 and "bad.jsonl:1" in done.stderr
