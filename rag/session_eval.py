"""Evaluation inside the app, independent of Gradio: per-session relevance grades on the passages of a
question, a JSONL judgments file the CLI reads (`python -m rag eval`), the session's metrics (dense vs
reranked), instruction experiments over the judged questions, and a finished question's trace.

A grade names a passage by its chunk id (as a string, which `Relevant.matches` compares with the
candidate's id): 2 = relevant, 1 = partly relevant, 0 = not relevant.
"""
from __future__ import annotations

from .errors import InputError

import json
import os
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .evaluation import EvalReport, Judgment, Relevant, evaluate_retrievals
from .trace import build_trace
from .types import Retrieval

GRADES = {2: "Relevant (2)", 1: "Partly (1)", 0: "Not relevant (0)"}
EXCLUDED_NOTE = "excluded from the metrics: trec_eval ignores questions without a relevant passage"
Progress = Callable[[float, str], Any]


# --- one finished question --------------------------------------------------------------------------------
@dataclass
class TurnRecord:
    """What a question did: enough to grade its passages and to export its trace."""
    question: str  # as typed
    query: str  # the standalone query the retriever searched (condensed for follow-ups)
    retrieval: Retrieval  # final ranking, both scores and ranks
    options: Any  # rag.ui.service.QueryOptions (top_k, top_n, instructions, LLM model, ...)
    timings: dict[str, float] = field(default_factory=dict)  # condense/embed/search/rerank/generate
    history: list[dict] = field(default_factory=list)  # the conversation sent with the question
    answer: str | None = None  # the final answer text (None while it is being written)
    mode: str = ""  # "llm" or "retrieval-only"

    @classmethod
    def settled(cls, step, question: str, history: list[dict], options) -> "TurnRecord | None":
        """A record for a turn step whose retrieval is final (reranked, answered, or empty), else None."""
        answer = getattr(step, "answer", None)
        if step.stage == "reranked" or (step.stage == "dense" and not step.retrieval.candidates):
            return cls(question, step.query, step.retrieval, options, dict(step.timings), list(history or []))
        if step.stage == "answer" and answer is not None and answer.done:
            return cls(question, step.query, step.retrieval, options, dict(step.timings), list(history or []),
                       answer.text, answer.mode)
        return None


def turn_trace(record: TurnRecord, settings, answerer=None, embedding_dim: int | None = None) -> dict:
    """`rag.trace.build_trace` for a finished question: per-question settings, every candidate, timings
    (generate included), the prompt messages sent to the LLM (none in retrieval-only mode) and the answer."""
    o = record.options
    messages = []
    if answerer is not None and answerer.configured:
        messages = answerer.build_messages(record.question, record.retrieval.selected, record.history)
    overrides = {"top_k": o.top_k, "top_n": o.top_n, "query_instruction": o.query_instruction,
                 "rerank_instruction": o.rerank_instruction, "use_reranker": o.use_reranker,
                 "llm_model": o.llm_model, "temperature": o.temperature}
    retrieval = Retrieval(record.retrieval.query, record.retrieval.candidates, dict(record.timings),
                          record.retrieval.reranked)
    trace = build_trace(retrieval, settings, embedding_dim=embedding_dim, messages=messages,
                        answer=record.answer, overrides=overrides)
    trace["question"] = record.question
    trace["answer_mode"] = record.mode
    return trace


# --- per-session grades ---------------------------------------------------------------------------------------
@dataclass
class JudgedQuestion:
    query: str
    retrieval: Retrieval  # the latest retrieval graded for this query: the one the metrics score
    grades: dict[str, int] = field(default_factory=dict)  # chunk id -> grade

    @property
    def has_relevant(self) -> bool:
        return any(g > 0 for g in self.grades.values())

    def judgment(self) -> Judgment:
        return Judgment(self.query, [Relevant(cid, g) for cid, g in self.grades.items()])

    def json_line(self) -> str:
        return json.dumps({"query": self.query, "relevant": [{"text": cid, "grade": g}
                                                             for cid, g in self.grades.items()]},
                          ensure_ascii=False)


@dataclass
class SessionJudgments:
    """One browser session's grades, keyed by the retrieval query (kept in a gr.State)."""
    questions: dict[str, JudgedQuestion] = field(default_factory=dict)

    def grade(self, retrieval: Retrieval, chunk_id: str, grade: int) -> JudgedQuestion:
        chunk_id = str(chunk_id)
        if grade not in GRADES:
            raise InputError(f"A grade is 0, 1 or 2, not {grade!r}.")
        if chunk_id not in {str(c.chunk_id) for c in retrieval.candidates}:
            raise InputError("That passage is not among this question's candidates; select a row again.")
        question = self.questions.get(retrieval.query)
        if question is None:
            question = self.questions[retrieval.query] = JudgedQuestion(retrieval.query, retrieval)
        question.retrieval = retrieval
        question.grades[chunk_id] = grade
        return question

    def grade_of(self, query: str, chunk_id: str) -> int | None:
        question = self.questions.get(query)
        return question.grades.get(str(chunk_id)) if question else None

    @property
    def scored(self) -> list[JudgedQuestion]:
        """Questions with at least one relevant (grade > 0) passage: the ones the metrics use."""
        return [q for q in self.questions.values() if q.has_relevant]

    @property
    def nothing_relevant(self) -> list[JudgedQuestion]:
        return [q for q in self.questions.values() if q.grades and not q.has_relevant]

    def judgments(self) -> list[Judgment]:
        return [q.judgment() for q in self.scored]

    def to_jsonl(self) -> str:
        return "".join(q.json_line() + "\n" for q in self.questions.values() if q.grades)


# --- the shared judgments file ------------------------------------------------------------------------
class JudgmentsFile:
    """A JSONL file in the CLI's format, one line per judged query. Each grade rewrites that query's line
    (merging grades from every session; the newest grade of a passage wins), atomically and under a lock
    (a thread lock, plus an flock on `<file>.lock` where available, for several app processes)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def record(self, query: str, grades: dict[str, int]) -> None:
        with self._lock, _file_lock(self.path.with_name(self.path.name + ".lock")):
            lines = self.path.read_text(encoding="utf-8").splitlines() if self.path.exists() else []
            merged: dict[str, int] = {}
            kept, position = [], None
            for line in lines:
                obj = _query_line(line)
                if obj is not None and obj.get("query") == query:
                    merged.update(_items(obj))
                    position = len(kept) if position is None else position
                    continue
                kept.append(line)
            merged.update({str(k): int(v) for k, v in grades.items()})
            line = JudgedQuestion(query, Retrieval(query), merged).json_line()
            kept.insert(len(kept) if position is None else position, line)
            _atomic_write(self.path, "".join(f"{x}\n" for x in kept))


def _query_line(line: str) -> dict | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _items(obj: dict) -> dict[str, int]:
    items = {}
    for item in obj.get("relevant") or []:
        if isinstance(item, dict) and "text" in item:
            items[str(item["text"])] = int(item.get("grade", 1))
        elif isinstance(item, (str, int)):
            items[str(item)] = 1
    return items


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: the thread lock still serialises this process
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- metrics ----------------------------------------------------------------------------------------------------
def session_report(judged: SessionJudgments, top_n: int, top_k: int) -> EvalReport | None:
    """Dense vs reranked over the stored retrievals of the questions with a relevant passage."""
    scored = judged.scored
    if not scored:
        return None
    return evaluate_retrievals([(q.judgment(), q.retrieval) for q in scored], top_n=top_n, top_k=top_k)


def rerun_judged(rag, judgments: list[Judgment], *, top_k: int, top_n: int, query_instruction: str | None,
                 rerank_instruction: str | None, use_reranker: bool = True, owner: str | None = None,
                 progress: Progress | None = None, label: str = "") -> EvalReport:
    """Retrieve every judged query again with these instructions and score both stages."""
    pairs = []
    for i, j in enumerate(judgments):
        if progress:
            progress(i / max(1, len(judgments)), f"{label}question {i + 1} of {len(judgments)}")
        pairs.append((j, rag.retrieve(j.query, top_k=top_k, top_n=top_n, query_instruction=query_instruction,
                                      rerank_instruction=rerank_instruction, owner=owner,
                                      use_reranker=use_reranker)))
    return evaluate_retrievals(pairs, top_n=top_n, top_k=top_k)


METRIC_HEADERS = ["Metric", "Dense", "Reranked", "Δ"]
QUERY_HEADERS = ["Question", "nDCG@10 dense", "nDCG@10 reranked", "Δ", "Reranker"]
COMPARISON_HEADERS = ["Metric", "Dense A", "Dense B", "Δ dense", "Reranked A", "Reranked B", "Δ reranked"]


def metric_rows(report: EvalReport) -> list[list]:
    return [[m, f"{report.dense[m]:.3f}", f"{report.reranked[m]:.3f}", f"{report.delta[m]:+.3f}"]
            for m in report.metrics]


def query_rows(report: EvalReport) -> list[list]:
    def verdict(d: float) -> str:
        return "helped" if d > 1e-9 else ("hurt" if d < -1e-9 else "same")

    return [[q.query, f"{q.dense['nDCG@10']:.3f}", f"{q.reranked['nDCG@10']:.3f}", f"{q.delta:+.3f}",
             verdict(q.delta)] for q in sorted(report.queries, key=lambda q: q.delta)]


def comparison_rows(a: EvalReport, b: EvalReport) -> list[list]:
    """`rag.evaluation.format_comparison` as table rows: B minus A for both stages."""
    return [[m, f"{a.dense[m]:.3f}", f"{b.dense[m]:.3f}", f"{b.dense[m] - a.dense[m]:+.3f}",
             f"{a.reranked[m]:.3f}", f"{b.reranked[m]:.3f}", f"{b.reranked[m] - a.reranked[m]:+.3f}"]
            for m in a.metrics]
