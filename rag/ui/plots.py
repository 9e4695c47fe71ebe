"""The ranking plot: a slope chart from embedding rank (left) to reranker rank (right), one line per candidate.

Built on a bare `matplotlib.figure.Figure` (no pyplot): no global figure registry to leak between sessions.
"""
from __future__ import annotations

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
    return DROPPED if reranked and candidate.dense_rank <= top_n else OTHER


def ranking_figure(retrieval: Retrieval | None, top_n: int, pending: bool = False):
    """Embedding rank -> reranker rank; green = sent to the LLM, red dashed = pushed out of the top_n.

    While `pending` (reranker still running) or with the reranker off, only the embedding side is drawn.
    """
    from matplotlib.figure import Figure

    candidates = retrieval.candidates if retrieval else []
    k = max(1, len(candidates))
    fig = Figure(figsize=(6.4, 1.3 + 0.3 * k), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    with _plain_text():
        _draw(ax, candidates, top_n, bool(retrieval and retrieval.reranked), pending)
    ax.set_ylim(k + 0.6, 0.4)
    ax.set_xlim(-1.1, 1.6)
    ax.set_xticks([0, 1], ["embedding rank · score", "reranker rank · score"], fontsize=8)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    return fig


def warm_up() -> None:
    """Draw and encode one figure, so matplotlib's imports and font cache (~1 s) are paid at start-up rather
    than in the first user's question."""
    import io

    ranking_figure(None, 1).savefig(io.BytesIO(), format="png")


def _draw(ax, candidates: list[Candidate], top_n: int, reranked: bool, pending: bool) -> None:
    if not candidates:
        ax.text(0.25, 1, "No candidates yet: ask a question.", ha="center", va="center", color=OTHER)
        return
    for c in candidates:
        color = _color(c, top_n, reranked)
        ax.scatter([0], [c.dense_rank], color=color, zorder=3, s=22)
        ax.text(-0.05, c.dense_rank, f"{_label(c)}   {c.dense_rank} · {c.dense_score:.2f}", ha="right",
                va="center", fontsize=7.5)
        if reranked and c.rerank_rank is not None:
            ax.plot([0, 1], [c.dense_rank, c.rerank_rank], color=color, lw=2 if c.selected else 1.2,
                    ls="--" if color == DROPPED else "-", zorder=2)
            ax.scatter([1], [c.rerank_rank], color=color, zorder=3, s=22)
            ax.text(1.05, c.rerank_rank, f"{c.rerank_rank} · {c.rerank_score:.3f}", ha="left", va="center",
                    fontsize=7.5)
    middle = (len(candidates) + 1) / 2
    if pending:
        ax.text(1, middle, "reranking…", ha="center", va="center", color=OTHER)
    elif not reranked:
        ax.text(1, middle, "reranker off:\nembedding order is final", ha="center", va="center", color=OTHER,
                fontsize=8)
    ax.text(0.5, 1.0, f"green: top {top_n}, sent to the LLM   red dashed: dropped by the reranker",
            transform=ax.transAxes, ha="center", va="bottom", fontsize=7.5, color="#4b5563")


def _plain_text():
    """File names may contain `$`: don't let matplotlib read them as math."""
    import matplotlib

    return matplotlib.rc_context({"text.parse_math": False, "text.usetex": False})
