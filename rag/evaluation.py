"""Measure retrieval: Recall, MRR and nDCG of the dense ranking and the reranked ranking of the same
candidates, per query and overall, computed by trec_eval (through `ir_measures`), not hand-written formulas.

Judgments name relevant items three ways: a chunk id, a document (file name or document id), or a text
snippet that the relevant chunk contains. Each item counts once: a document is found at its first chunk.
"""
from __future__ import annotations

from .errors import InputError

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from .types import Candidate, Retrieval

if TYPE_CHECKING:
    from .pipeline import RAG

STAGES = ("dense", "reranked")


class JudgmentError(InputError):
    """A judgments file line can't be read; the message names the line and the expected form."""


@dataclass
class Relevant:
    value: str  # a chunk id, a document name or id, or a text snippet
    grade: int = 1  # graded relevance (0 = not relevant, 1 = relevant, 2 = highly relevant)

    def matches(self, c: Candidate) -> bool:
        v = self.value.strip()
        return (v == str(c.chunk_id) or v in (c.source, c.doc_id)
                or (len(v) >= 3 and v.lower() in c.text.lower()))


@dataclass
class Judgment:
    query: str
    relevant: list[Relevant]


@dataclass
class QueryResult:
    query: str
    dense: dict[str, float]
    reranked: dict[str, float]

    @property
    def delta(self) -> float:
        """nDCG@10 change from reranking: > 0 the reranker helped, < 0 it hurt."""
        return self.reranked["nDCG@10"] - self.dense["nDCG@10"]


@dataclass
class EvalReport:
    metrics: list[str]
    queries: list[QueryResult] = field(default_factory=list)
    dense: dict[str, float] = field(default_factory=dict)
    reranked: dict[str, float] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)  # queries judged with nothing relevant

    @property
    def delta(self) -> dict[str, float]:
        return {m: self.reranked[m] - self.dense[m] for m in self.metrics}

    @property
    def helped(self) -> list[QueryResult]:
        return [q for q in self.queries if q.delta > 1e-9]

    @property
    def hurt(self) -> list[QueryResult]:
        return [q for q in self.queries if q.delta < -1e-9]

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "dense": self.dense, "reranked": self.reranked, "delta": self.delta,
                "queries": [asdict(q) | {"delta_ndcg@10": q.delta} for q in self.queries],
                "excluded": self.excluded}


# --- judgments ------------------------------------------------------------------------------------------
def parse_judgment(obj: dict) -> Judgment:
    if not isinstance(obj, dict) or not isinstance(obj.get("query"), str) or not obj["query"].strip():
        raise JudgmentError('each line needs {"query": "...", "relevant": [...]}')
    items = obj.get("relevant")
    if not isinstance(items, list) or not items:
        raise JudgmentError(f"query {obj['query']!r}: 'relevant' must be a non-empty list")
    relevant = []
    for item in items:
        if isinstance(item, dict) and "text" in item:
            relevant.append(Relevant(str(item["text"]), int(item.get("grade", 1))))
        elif isinstance(item, (str, int)):
            relevant.append(Relevant(str(item)))
        else:
            raise JudgmentError(f"query {obj['query']!r}: entries are strings, ids or "
                                f'{{"text": ..., "grade": n}}, not {item!r}')
    return Judgment(obj["query"], relevant)


def load_judgments(path: str | Path) -> list[Judgment]:
    judgments = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            judgments.append(parse_judgment(json.loads(line)))
        except (json.JSONDecodeError, JudgmentError, ValueError) as exc:
            raise JudgmentError(f"{path}:{number}: {exc}") from exc
    if not judgments:
        raise JudgmentError(f"{path}: no judgments found (one JSON object per line)")
    return judgments


# --- metrics ------------------------------------------------------------------------------------------------
def metric_names(top_n: int, top_k: int) -> list[str]:
    return list(dict.fromkeys([f"Recall@{top_n}", f"Recall@{top_k}", "MRR@10", "nDCG@10"]))


def _measures(names: Sequence[str]) -> dict:
    """Our metric names -> ir_measures measures (Recall@k is R@k there, MRR@k is RR@k)."""
    import ir_measures

    return {ir_measures.parse_measure(n.replace("MRR", "RR").replace("Recall", "R")): n for n in names}


def _qrels_and_run(judgment: Judgment, ranking: Sequence[Candidate]) -> tuple[dict, dict]:
    """Item-level qrels, and a run where each candidate stands for the first uncredited item it matches."""
    qrels = {f"item{i}": r.grade for i, r in enumerate(judgment.relevant)}
    credited: set[str] = set()
    run = {}
    for position, c in enumerate(ranking):
        item = next((f"item{i}" for i, r in enumerate(judgment.relevant)
                     if f"item{i}" not in credited and r.matches(c)), None)
        doc = item or f"chunk{c.chunk_id}"
        if item:
            credited.add(item)
        run.setdefault(doc, float(len(ranking) - position))  # strictly decreasing: trec_eval sorts by score
    return qrels, run


def rankings(retrieval: Retrieval) -> dict[str, list[Candidate]]:
    dense = sorted(retrieval.candidates, key=lambda c: c.dense_rank)
    reranked = sorted(retrieval.candidates, key=lambda c: c.rank)
    return {"dense": dense, "reranked": reranked}


def evaluate_retrievals(pairs: Iterable[tuple[Judgment, Retrieval]], top_n: int = 3,
                        top_k: int = 10) -> EvalReport:
    """Score both rankings of each retrieval against its judgment."""
    import ir_measures

    names = metric_names(top_n, top_k)
    measures = _measures(names)
    report = EvalReport(metrics=names)
    per_stage: dict[str, dict[str, dict]] = {s: {} for s in STAGES}
    qrels: dict[str, dict] = {}
    pairs = list(pairs)
    # trec_eval ignores queries without a relevant item; say so instead of averaging in a silent zero.
    report.excluded = [j.query for j, _ in pairs if not any(r.grade > 0 for r in j.relevant)]
    pairs = [(j, r) for j, r in pairs if any(x.grade > 0 for x in j.relevant)]
    for n, (judgment, retrieval) in enumerate(pairs):
        qid = f"q{n}"
        for stage, ranking in rankings(retrieval).items():
            qrels[qid], run = _qrels_and_run(judgment, ranking)
            per_stage[stage][qid] = run
        report.queries.append(QueryResult(judgment.query, {}, {}))
    for stage in STAGES:
        for m in ir_measures.iter_calc(measures, qrels, per_stage[stage]):
            getattr(report.queries[int(m.query_id[1:])], stage)[measures[m.measure]] = m.value
    for q in report.queries:  # trec_eval omits queries with nothing retrieved: they score 0
        for stage in STAGES:
            for name in names:
                getattr(q, stage).setdefault(name, 0.0)
    for stage in STAGES:
        values = [getattr(q, stage) for q in report.queries]
        setattr(report, stage, {m: sum(v[m] for v in values) / max(1, len(values)) for m in names})
    return report


def evaluate(rag: "RAG", judgments: Sequence[Judgment], top_k: int | None = None, top_n: int | None = None,
             query_instruction: str | None = None, rerank_instruction: str | None = None,
             owner: str | None = None) -> EvalReport:
    """Run every judged query through the pipeline and score both stages."""
    top_k = top_k or rag.settings.top_k
    top_n = top_n or rag.settings.top_n
    pairs = [(j, rag.retrieve(j.query, top_k=top_k, top_n=top_n, query_instruction=query_instruction,
                              rerank_instruction=rerank_instruction, owner=owner)) for j in judgments]
    return evaluate_retrievals(pairs, top_n=top_n, top_k=top_k)


# --- presentation -----------------------------------------------------------------------------------------------
def format_table(report: EvalReport) -> str:
    rows = [("metric", "dense", "reranked", "Δ")]
    rows += [(m, f"{report.dense[m]:.3f}", f"{report.reranked[m]:.3f}", f"{report.delta[m]:+.3f}")
             for m in report.metrics]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if report.excluded:
        lines.append(f"\n{len(report.excluded)} queries excluded: no relevant item (grade > 0) judged")
    lines.append(f"\n{len(report.queries)} queries; reranker helped {len(report.helped)}, "
                 f"hurt {len(report.hurt)} (by nDCG@10)")
    return "\n".join(lines)


def format_comparison(a: EvalReport, b: EvalReport, label_a: str = "A", label_b: str = "B") -> str:
    """Instruction experiments: the same judged queries under two configurations, both stages."""
    rows = [("metric", f"dense {label_a}", f"dense {label_b}", "Δ dense", f"reranked {label_a}",
             f"reranked {label_b}", "Δ reranked")]
    for m in a.metrics:
        rows.append((m, f"{a.dense[m]:.3f}", f"{b.dense[m]:.3f}", f"{b.dense[m] - a.dense[m]:+.3f}",
                     f"{a.reranked[m]:.3f}", f"{b.reranked[m]:.3f}", f"{b.reranked[m] - a.reranked[m]:+.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
