"""A retrieval trace holds every field and loads back to the same Retrieval."""
import json

from rag.chat import QueryOptions
from rag.eval.session import TurnRecord
from rag.eval.trace import build_trace, load_trace, turn_trace, write_trace


def test_trace_round_trips_every_field(tiny_rag, corpus_path, tmp_path):
    tiny_rag.ingest_paths([corpus_path])
    retrieval = tiny_rag.retrieve("How do volcanoes erupt?", top_k=4, top_n=2)
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    trace = build_trace(retrieval, tiny_rag.settings, embedding_dim=tiny_rag.embedder.dim, messages=messages,
                        answer="Magma [1]", overrides={"rerank_instruction": "custom"})
    path = write_trace(trace, tmp_path / "trace.json")
    raw = json.loads(path.read_text())
    assert set(raw) >= {"query", "settings", "candidates", "timings", "prompt", "answer", "reranked"}
    assert raw["settings"]["rerank_instruction"] == "custom"
    assert raw["settings"]["embedding_dim"] == tiny_rag.embedder.dim
    assert set(raw["settings"]) >= {"embedding_model", "reranker_model", "query_instruction", "top_k", "top_n"}
    assert set(raw["timings"]) == {"embed_query", "search", "bm25", "scores", "rerank"}
    first = raw["candidates"][0]
    assert set(first) >= {"text", "source", "chunk_id", "dense_score", "dense_rank", "rerank_score",
                          "rerank_rank", "selected", "bm25_score", "bm25_rank", "fused_score", "fused_rank"}
    assert raw["mode"] == tiny_rag.settings.retrieval_mode and raw["settings"]["retrieval_mode"] == raw["mode"]
    loaded, back = load_trace(path)
    assert back == retrieval and loaded["prompt"] == messages and loaded["answer"] == "Magma [1]"


def test_a_turn_trace_records_the_question_s_options_and_timings(tiny_rag, corpus_path):
    tiny_rag.ingest_paths([corpus_path])
    options = QueryOptions.from_settings(tiny_rag.settings, top_k=4, top_n=2, use_reranker=False,
                                         rerank_instruction="custom")
    retrieval = tiny_rag.retrieve("lava", top_k=4, top_n=2, use_reranker=False)
    record = TurnRecord("lava?", "lava", retrieval, options, {"condense": 0.1, **retrieval.timings})
    trace = turn_trace(record, tiny_rag.settings, embedding_dim=tiny_rag.embedder.dim)
    assert {k: trace["settings"][k] for k in ("top_k", "top_n", "use_reranker", "rerank_instruction")} == {
        "top_k": 4, "top_n": 2, "use_reranker": False, "rerank_instruction": "custom"}
    assert set(trace["timings"]) == {"condense", "embed_query", "search", "bm25", "scores"}  # the turn's, not the retrieval's
    assert trace["question"] == "lava?" and trace["query"] == "lava" and trace["prompt"] == []
    assert trace["answer"] is None and trace["reranked"] is False
