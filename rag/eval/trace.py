"""One question's full retrieval trace as JSON: settings, every candidate with its dense, BM25, fused and
reranker scores and ranks, timings, where each model stage ran (`stages`: local device and precision, or the
model server's URL, with its latency), the prompt sent and the answer. Lets users share, diff and re-score a run
outside the app."""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.settings import Settings
from rag.types import Backend, Candidate, Retrieval

if TYPE_CHECKING:
    from rag.answer import Answerer
    from rag.eval.session import TurnRecord

TRACE_VERSION = 1
SETTINGS_FIELDS = ("embedding_model", "reranker_model", "embedding_dim", "query_instruction",
                   "rerank_instruction", "top_k", "top_n", "collection", "llm_model", "temperature",
                   "device", "dtype", "retrieval_mode", "fusion", "rrf_k", "dense_weight", "bm25_analyzer",
                   "embedding_url", "reranker_url", "reranker_api")  # never the API keys


def build_trace(retrieval: Retrieval, settings: Settings, *, embedding_dim: int | None = None,
                messages: list[dict] | None = None, answer: str | None = None,
                overrides: dict[str, Any] | None = None) -> dict:
    """`overrides` records per-question values (instructions, k, n) that differ from `settings`."""
    config = {f: getattr(settings, f) for f in SETTINGS_FIELDS}
    config["embedding_dim"] = embedding_dim or settings.embedding_dim
    config.update(overrides or {})
    return {"version": TRACE_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "query": retrieval.query, "settings": config, "reranked": retrieval.reranked,
            "mode": retrieval.mode, "timings": dict(retrieval.timings),
            "stages": stages(retrieval),
            "candidates": [asdict(c) for c in retrieval.candidates],
            "prompt": messages or [], "answer": answer}


def stages(retrieval: Retrieval) -> dict[str, dict]:
    """Model stage -> where it ran (`kind` local with `device`/`precision`, or server with `url`/`api`) and
    its `seconds`."""
    return {stage: {**asdict(backend), "seconds": retrieval.timings.get(stage)}
            for stage, backend in retrieval.ran_on.items()}


def turn_trace(record: TurnRecord, settings: Settings, answerer: Answerer | None = None,
               embedding_dim: int | None = None) -> dict:
    """`build_trace` for a finished question: its options, every candidate, timings (generate included), the
    prompt messages sent to the LLM (none in retrieval-only mode) and the answer."""
    messages = []
    if answerer is not None and answerer.configured:
        messages = answerer.build_messages(record.question, record.retrieval.selected, record.history)
    # The record's timings cover the whole turn (condense, generate); the retrieval's only its own steps.
    retrieval = Retrieval(record.retrieval.query, record.retrieval.candidates, dict(record.timings),
                          record.retrieval.reranked, record.retrieval.mode, dict(record.retrieval.ran_on))
    # Every `QueryOptions` field is a per-question setting: all of them override the server's settings.
    trace = build_trace(retrieval, settings, embedding_dim=embedding_dim, messages=messages,
                        answer=record.answer, overrides=asdict(record.options))
    trace["question"] = record.question
    trace["answer_mode"] = record.mode
    return trace


def trace_json(trace: dict) -> str:
    return json.dumps(trace, ensure_ascii=False, indent=2)


def write_trace(trace: dict, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(trace_json(trace), encoding="utf-8")
    return path


def load_trace(path_or_text: str | Path) -> tuple[dict, Retrieval]:
    """Read a trace back: the raw dict and the `Retrieval` it describes."""
    text = str(path_or_text)
    if not text.lstrip().startswith("{"):  # a path (a trace's JSON text may be longer than a file name can be)
        text = Path(path_or_text).read_text(encoding="utf-8")
    trace = json.loads(text)
    candidates = [Candidate(**c) for c in trace["candidates"]]
    ran_on = {stage: Backend(**{k: v for k, v in where.items() if k != "seconds"})
              for stage, where in trace.get("stages", {}).items()}
    return trace, Retrieval(query=trace["query"], candidates=candidates, timings=trace["timings"],
                            reranked=trace["reranked"], mode=trace.get("mode", "dense"), ran_on=ran_on)
