"""What an evaluation found: each query's metrics for the dense and the reranked ranking, their means, and
the one rule deciding whether reranking helped or hurt a query (the CLI's counts, the Evaluate tab's lists
and its per-question verdicts all use `verdict`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

HELPED, HURT, SAME = "helped", "hurt", "same"
VERDICT_METRIC = "nDCG@10"  # graded and position-aware: the one number a verdict is read from
# trec_eval's float sums can differ in the last bits for rankings that score the same: not a change.
NOISE = 1e-9


def verdict(delta: float) -> str:
    """HELPED, HURT or SAME for a change of `VERDICT_METRIC` from the dense to the reranked ranking."""
    if delta > NOISE:
        return HELPED
    if delta < -NOISE:
        return HURT
    return SAME


@dataclass
class QueryResult:
    query: str
    dense: dict[str, float]
    reranked: dict[str, float]

    @property
    def delta(self) -> float:
        """`VERDICT_METRIC` change from reranking: > 0 the reranker helped, < 0 it hurt."""
        return self.reranked[VERDICT_METRIC] - self.dense[VERDICT_METRIC]

    @property
    def verdict(self) -> str:
        return verdict(self.delta)


@dataclass
class EvalReport:
    metrics: list[str]
    queries: list[QueryResult] = field(default_factory=list)
    dense: dict[str, float] = field(default_factory=dict)  # metric -> mean over `queries`
    reranked: dict[str, float] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)  # queries judged with nothing relevant
    mode: str = "dense"  # the first stage the `dense` figures come from: dense | bm25 | hybrid

    @property
    def delta(self) -> dict[str, float]:
        return {m: self.reranked[m] - self.dense[m] for m in self.metrics}

    @property
    def helped(self) -> list[QueryResult]:
        return [q for q in self.queries if q.verdict == HELPED]

    @property
    def hurt(self) -> list[QueryResult]:
        return [q for q in self.queries if q.verdict == HURT]

    def to_dict(self) -> dict:
        """The `--json` report: its keys are what scripts reading it rely on."""
        return {"metrics": self.metrics, "dense": self.dense, "reranked": self.reranked, "delta": self.delta,
                "queries": [asdict(q) | {"delta_ndcg@10": q.delta} for q in self.queries],
                "excluded": self.excluded}
