"""Every evaluation result as a table of formatted cells, built once: the CLI prints `Table.text()`, the
Evaluate tab shows `pd.DataFrame(table.rows, columns=table.headers)`. Same cells, so the two can't disagree."""
from __future__ import annotations

from dataclasses import dataclass

from rag.eval.report import VERDICT_METRIC, EvalReport

MODE_LABELS = {"dense": "Dense", "bm25": "BM25", "hybrid": "Hybrid"}

METRIC_HEADERS = ["Metric", "Dense", "Reranked", "Δ"]
QUERY_HEADERS = ["Question", f"{VERDICT_METRIC} dense", f"{VERDICT_METRIC} reranked", "Δ", "Reranker"]


def comparison_headers(label_a: str = "A", label_b: str = "B") -> list[str]:
    return ["Metric", f"Dense {label_a}", f"Dense {label_b}", "Δ dense", f"Reranked {label_a}",
            f"Reranked {label_b}", "Δ reranked"]


COMPARISON_HEADERS = comparison_headers()


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]

    def text(self) -> str:
        """Aligned for a terminal: labels to the left, numbers to the right, a rule under the headers."""
        lines = [self.headers, *self.rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(self.headers))]
        text = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
                for line in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(text)


def metric_table(report: EvalReport) -> Table:
    """Mean of each metric, first stage (dense unless the report says otherwise) vs reranked, Δ = reranked − it."""
    headers = [METRIC_HEADERS[0], MODE_LABELS.get(report.mode, report.mode), *METRIC_HEADERS[2:]]
    return Table(headers, [[m, _score(report.dense[m]), _score(report.reranked[m]), _change(report.delta[m])]
                                  for m in report.metrics])


def query_table(report: EvalReport) -> Table:
    """Each query's verdict metric, dense vs reranked, worst change first."""
    rows = [[q.query, _score(q.dense[VERDICT_METRIC]), _score(q.reranked[VERDICT_METRIC]), _change(q.delta),
             q.verdict] for q in sorted(report.queries, key=lambda q: q.delta)]
    return Table(QUERY_HEADERS, rows)


def comparison_table(a: EvalReport, b: EvalReport, label_a: str = "A", label_b: str = "B") -> Table:
    """Instruction experiments: the same judged queries under two configurations, both stages, Δ = B − A."""
    rows = [[m, _score(a.dense[m]), _score(b.dense[m]), _change(b.dense[m] - a.dense[m]),
             _score(a.reranked[m]), _score(b.reranked[m]), _change(b.reranked[m] - a.reranked[m])]
            for m in a.metrics]
    return Table(comparison_headers(label_a, label_b), rows)


def mode_table(comparison) -> Table:
    """First-stage modes side by side (rag.eval.modes.ModeComparison), then the reranker over the chosen one."""
    modes = list(comparison.first_stage)
    headers = ["Metric", *(MODE_LABELS.get(m, m) for m in modes)]
    if comparison.reranked is not None:
        headers.append(f"Reranked ({MODE_LABELS.get(comparison.reranked_mode, comparison.reranked_mode)})")
    rows = []
    for metric in comparison.metrics:
        row = [metric, *(_score(comparison.first_stage[m][metric]) for m in modes)]
        if comparison.reranked is not None:
            row.append(_score(comparison.reranked[metric]))
        rows.append(row)
    return Table(headers, rows)


def _score(value: float) -> str:
    return f"{value:.3f}"


def _change(value: float) -> str:
    return f"{value:+.3f}"
