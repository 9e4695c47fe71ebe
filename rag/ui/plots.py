"""The ranking plot: a slope chart from the BM25 and embedding ranks into the first-stage (fused) rank, then
to the reranker rank, one set of lines per candidate.

Built on a bare `matplotlib.figure.Figure` (no pyplot): no global figure registry to leak between sessions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rag.types import Candidate, Retrieval

SELECTED, DROPPED, OTHER = "#16a34a", "#dc2626", "#9ca3af"
LABEL_CHARS = 30


def _label(candidate: Candidate) -> str:
    """The heading tells chunks of one file apart; the file name when there is none."""
    name = candidate.heading.split(" > ")[-1] if candidate.heading else candidate.source
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def _color(candidate: Candidate, top_n: int, reranked: bool) -> str:
    if candidate.selected:
        return SELECTED
    return DROPPED if reranked and candidate.first_rank <= top_n else OTHER


@dataclass
class Column:
    """One ranking drawn as a column of points: where it stands, its title, and each candidate's rank and
    score in it (rank None: not in that list)."""
    x: float
    title: str
    rank: Callable[[Candidate], int | None]
    score: Callable[[Candidate], float | None]


def _columns(mode: str, reranked: bool, pending: bool) -> list[Column]:
    columns = [Column(0.0, "BM25", lambda c: c.bm25_rank, lambda c: c.bm25_score),
               Column(1.0, "dense", lambda c: c.dense_rank, lambda c: c.dense_score),
               Column(2.0, FIRST_TITLES.get(mode, mode), lambda c: c.first_rank, lambda c: c.fused_score)]
    if reranked or pending:
        columns.append(Column(3.0, "reranker", lambda c: c.rerank_rank, lambda c: c.rerank_score))
    return columns


FOUND = {"dense": "dense", "bm25": "BM25"}
FIRST_TITLES = {"hybrid": "fused (RRF)", "dense": "first stage\n(dense)", "bm25": "first stage\n(BM25)"}


def ranking_figure(retrieval: Retrieval | None, top_n: int, pending: bool = False):
    """BM25 rank and embedding rank -> first-stage (fused) rank -> reranker rank; green = sent to the LLM,
    red dashed = pushed out of the top_n by the reranker. A candidate outside a retriever's list has no point
    in that column. While `pending` (reranker still running) the reranker column is empty."""
    from matplotlib.figure import Figure

    candidates = retrieval.candidates if retrieval else []
    reranked = bool(retrieval and retrieval.reranked)
    columns = _columns(retrieval.mode if retrieval else "hybrid", reranked, pending)
    k = max([1, len(candidates), *(col.rank(c) or 0 for col in columns[:2] for c in candidates)])
    fig = Figure(figsize=(7.2, 1.5 + 0.3 * k), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    with _plain_text():
        _draw(ax, candidates, columns, top_n, reranked, pending)
    ax.set_ylim(k + 0.6, 0.4)
    ax.set_xlim(-0.3, columns[-1].x + 1.6)
    ax.set_xticks([c.x for c in columns], [f"{c.title}\nrank · score" for c in columns], fontsize=7.5)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    return fig


def warm_up() -> None:
    """Draw and encode one figure, so matplotlib's imports and font cache (~1 s) are paid at start-up rather
    than in the first user's question."""
    import io

    ranking_figure(None, 1).savefig(io.BytesIO(), format="png")


def _draw(ax, candidates: list[Candidate], columns: list[Column], top_n: int, reranked: bool,
          pending: bool) -> None:
    if not candidates:
        ax.text(1.5, 1, "No candidates yet: ask a question.", ha="center", va="center", color=OTHER)
        return
    first, last = columns[2], columns[-1]
    for c in candidates:
        color = _color(c, top_n, reranked)
        width, style = (2 if c.selected else 1.1), ("--" if color == DROPPED else "-")
        for feeder in columns[:2]:  # the two retrievers' ranks feeding the first-stage one
            if feeder.rank(c) is not None:
                ax.plot([feeder.x, first.x], [feeder.rank(c), first.rank(c)], color=color, lw=width * 0.6,
                        ls=":", zorder=1)
        if reranked and c.rerank_rank is not None:
            ax.plot([first.x, last.x], [first.rank(c), c.rerank_rank], color=color, lw=width, ls=style, zorder=2)
        for col in columns:
            rank, score = col.rank(c), col.score(c)
            if rank is None or (col is last and col is not first and not reranked):
                continue
            ax.scatter([col.x], [rank], color=color, zorder=3, s=18)
            if score is not None:
                ax.text(col.x + 0.06, rank, f"{rank} · {score:.3g}", ha="left", va="bottom", fontsize=6.5,
                        color="#374151")
        final = c.rerank_rank if reranked and c.rerank_rank is not None else c.first_rank
        ax.text(last.x + 0.35, final, _label(c) + ("" if c.found_by == "both" else f"  ({FOUND[c.found_by]} only)"),
                ha="left", va="center", fontsize=7.5)
    middle = (len(candidates) + 1) / 2
    if pending:
        ax.text(last.x, middle, "reranking…", ha="center", va="center", color=OTHER)
    elif not reranked:
        ax.text(first.x + 0.5, 0.2, "reranker off: first-stage order is final", ha="center", va="bottom",
                color=OTHER, fontsize=7.5)
    ax.text(0.5, 1.0, f"green: top {top_n}, sent to the LLM   red dashed: dropped by the reranker   "
            "dotted: BM25 / dense ranks feeding the first stage",
            transform=ax.transAxes, ha="center", va="bottom", fontsize=7, color="#4b5563")


def _plain_text():
    """File names may contain `$`: don't let matplotlib read them as math."""
    import matplotlib

    return matplotlib.rc_context({"text.parse_math": False, "text.usetex": False})
