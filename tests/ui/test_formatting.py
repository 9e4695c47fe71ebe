"""Formatting of retrieval results and escaping of untrusted text, without models."""
from __future__ import annotations

from rag.types import Candidate, Retrieval
from rag.ui import formatting as fmt
from rag.ui.plots import ranking_figure
from rag.ui.safety import safe_markdown


def candidate(dense_rank: int, rerank_rank: int | None, selected: bool, source: str = "a.md") -> Candidate:
    return Candidate(text=f"text {dense_rank}", source=source, chunk_id=dense_rank, dense_score=1 - dense_rank / 10,
                     dense_rank=dense_rank, rerank_score=None if rerank_rank is None else 1 - rerank_rank / 10,
                     rerank_rank=rerank_rank, selected=selected)


def reranked() -> Retrieval:
    """Dense 1..4; the reranker promotes 4 to the top and pushes dense 2 out of the top 2."""
    order = [candidate(4, 1, True), candidate(1, 2, True), candidate(2, 3, False), candidate(3, 4, False)]
    return Retrieval("q", order, {"embed_query": 0.01, "search": 0.002, "rerank": 1.5}, reranked=True)


def test_table_marks_selected_dropped_and_rank_moves():
    table = fmt.candidates_table(reranked(), top_n=2)
    rows = {r["Dense #"]: r for _, r in table.iterrows()}
    assert rows["4"]["LLM"] == "✓ [1]" and rows["4"]["Δ rank"] == "+3 ↑"
    assert rows["1"]["LLM"] == "✓ [2]" and rows["1"]["Δ rank"] == "-1 ↓"
    assert rows["2"]["LLM"] == "↓ dropped"
    assert rows["3"]["LLM"] == "" and rows["3"]["Δ rank"] == "-1 ↓"
    assert rows["4"]["Rerank score"] == "0.9000" and rows["4"]["Embedding score"] == "0.6000"


def test_pending_table_has_dense_values_only():
    dense = Retrieval("q", [candidate(1, None, False), candidate(2, None, False)])
    table = fmt.candidates_table(dense, top_n=1, pending=True)
    assert list(table["Rerank #"]) == [fmt.PENDING] * 2 and list(table["Dense #"]) == ["1", "2"]


def test_timings_name_every_stage_and_the_running_one():
    assert fmt.timings_markdown({"embed_query": 0.012, "rerank": 1.5}) == (
        "**Timings:** embed query **12 ms** · rerank **1.50 s** · total **1.51 s**")
    assert fmt.timings_markdown({"search": 0.001}, running="rerank").endswith("rerank …")


def test_citations_link_to_their_turns_cards_and_unknown_numbers_stay():
    passages = reranked().selected
    text = fmt.link_citations("A [1], B [1, 2], C [7], D [2](x)", passages, turn=3)
    assert "[[1]](#passage-3-1 " in text and "[[1]](#passage-3-1 \"a.md\")[[2]](#passage-3-2" in text
    assert "C [7]" in text and "D [2](x)" in text


def test_passage_cards_escape_document_text():
    bad = Candidate(text="<script>alert(1)</script>", source="<img src=x onerror=alert(1)>.md", chunk_id=1,
                    dense_score=0.5, dense_rank=1, selected=True)
    html = fmt.passage_cards(Retrieval("q", [bad]), turn=1)
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "id='passage-1-1'" in html


def test_safe_markdown_defuses_html_links_and_images_but_keeps_code():
    text = safe_markdown('<b>x</b> & ![i](http://e/x.png) [l](javascript:alert(1)) `<i>` ```\n<p>\n```')
    assert "<b>" not in text and "&lt;b>" in text and "&amp;" in text
    assert "![" not in text and "javascript:" not in text.replace("blocked-javascript:", "")
    assert "`<i>`" in text and "```\n<p>\n```" in text


def test_sources_footer_is_stripped_from_history():
    answer = fmt.render_answer("Yes [1].", reranked().selected, turn=1, cited={1}, final=True)
    assert "Sources:" in answer
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}]
    assert fmt.strip_sources(history)[1]["content"] == "Yes [[1]](#passage-1-1 \"a.md\")."


def test_ranking_figure_draws_both_sides_and_survives_dollar_names():
    fig = ranking_figure(reranked(), top_n=2)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any(t.startswith("a.md") for t in texts) and any(t.startswith("1 · ") for t in texts)
    odd = Retrieval("q", [candidate(1, None, True, source="$x$_price.md")])
    ranking_figure(odd, top_n=1, pending=True).savefig(__import__("io").BytesIO(), format="png")
    ranking_figure(None, top_n=1).savefig(__import__("io").BytesIO(), format="png")


def test_timings_say_where_each_model_stage_ran():
    from rag.types import Backend

    ran_on = {"embed_query": Backend("local", device="cpu", precision="float32"),
              "rerank": Backend("server", url="http://gpu:8000/v1", api="score")}
    line = fmt.timings_markdown({"embed_query": 0.012, "search": 0.003}, running="rerank", ran_on=ran_on)
    assert line == ("**Timings:** embed query **12 ms** (local cpu float32) · search **3 ms** · "
                    "rerank … (http://gpu:8000/v1 (score))")
