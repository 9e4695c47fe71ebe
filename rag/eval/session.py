"""Evaluation inside the app, independent of Gradio: the record of a finished question (what it retrieved,
with which options) and one browser session's relevance grades of its passages, scored on the ranking each
question had when it was graded.

A grade names a passage by its chunk id (as a string, which `Relevant.matches` compares with the
candidate's id): 2 = relevant, 1 = partly relevant, 0 = not relevant.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rag.chat import ANSWER, DENSE, RERANKED, QueryOptions, TurnStep
from rag.errors import InputError
from rag.eval.judgments import Judgment
from rag.eval.metrics import evaluate_retrievals
from rag.eval.report import EvalReport
from rag.types import Retrieval

GRADES = {2: "Relevant (2)", 1: "Partly (1)", 0: "Not relevant (0)"}


class GradeError(InputError):
    """A grade can't be recorded as given; the message says what to select or pick instead."""


# --- one finished question --------------------------------------------------------------------------------
@dataclass
class TurnRecord:
    """What a question did: enough to grade its passages and to export its trace."""
    question: str  # as typed
    query: str  # the standalone query the retriever searched (condensed for follow-ups)
    retrieval: Retrieval  # final ranking, both scores and ranks
    options: QueryOptions  # the settings panel's values it ran with
    timings: dict[str, float] = field(default_factory=dict)  # condense/embed/search/rerank/generate
    history: list[dict] = field(default_factory=list)  # the conversation sent with the question
    answer: str | None = None  # the final answer text (None while it is being written)
    mode: str = ""  # "llm" or "retrieval-only"

    @classmethod
    def settled(cls, step: TurnStep, question: str, history: list[dict] | None,
                options: QueryOptions) -> TurnRecord | None:
        """A record for a turn step whose retrieval is final (reranked, answered, or empty), else None."""
        if not _settled(step):
            return None
        record = cls(question, step.query, step.retrieval, options, dict(step.timings), list(history or []))
        if step.stage == ANSWER:
            record.answer, record.mode = step.answer.text, step.answer.mode
        return record


def _settled(step: TurnStep) -> bool:
    # An empty dense search is final too: no rerank step follows it.
    if step.stage == ANSWER:
        return step.answer is not None and step.answer.done
    return step.stage == RERANKED or (step.stage == DENSE and not step.retrieval.candidates)


# --- per-session grades ---------------------------------------------------------------------------------------
@dataclass
class JudgedQuestion:
    query: str
    retrieval: Retrieval  # the latest retrieval graded for this query: the one the metrics score
    grades: dict[str, int] = field(default_factory=dict)  # chunk id -> grade

    def judgment(self) -> Judgment:
        return Judgment.from_grades(self.query, self.grades)

    @property
    def has_relevant(self) -> bool:
        return self.judgment().has_relevant


@dataclass
class SessionJudgments:
    """One browser session's grades, keyed by the retrieval query (kept in a gr.State)."""
    questions: dict[str, JudgedQuestion] = field(default_factory=dict)

    def grade(self, retrieval: Retrieval, chunk_id: str, grade: int) -> JudgedQuestion:
        chunk_id = str(chunk_id)
        if grade not in GRADES:
            raise GradeError(f"A grade is 0, 1 or 2, not {grade!r}: pick one of {', '.join(GRADES.values())}.")
        if chunk_id not in {str(c.chunk_id) for c in retrieval.candidates}:
            raise GradeError("That passage is not among this question's candidates; select a row again.")
        question = self.questions.setdefault(retrieval.query, JudgedQuestion(retrieval.query, retrieval))
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
        """Every graded question in the judgments format (`python -m rag eval` reads it)."""
        return "".join(q.judgment().to_line() + "\n" for q in self.questions.values() if q.grades)


def session_report(judged: SessionJudgments, top_n: int, top_k: int) -> EvalReport | None:
    """Dense vs reranked over the stored retrievals of the questions with a relevant passage."""
    scored = judged.scored
    if not scored:
        return None
    return evaluate_retrievals([(q.judgment(), q.retrieval) for q in scored], top_n=top_n, top_k=top_k)
