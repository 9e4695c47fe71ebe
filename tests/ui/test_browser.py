"""End to end in headless Chromium: the real app, tiny models, Milvus Lite and the local LLM server.

One app and one browser per module; each test gets its own browser context (= its own Gradio session).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from rag.ui.formatting import TABLE_HEADERS
from tests.browser_helpers import ask, clear_chat, open_page, running_app, set_number
from tests.openai_server import OpenAIServer

pytestmark = pytest.mark.browser

REPLY = "Otters hold hands while they sleep [1] and float on their backs [2]."
XSS_DOC = """# Injected document

Kelp forest payload <script>window.__xssScript = 1; alert('script')</script> with an image
<img src=x onerror="window.__xssImage = 1; alert('image')"> and [a link](javascript:alert('link')).
"""


@pytest.fixture(scope="module")
def llm():
    with OpenAIServer(reply=REPLY) as server:
        yield server


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_embedder, tiny_reranker, tiny_embedder_path, tiny_reranker_path, llm):
    with running_app(tmp_path_factory.mktemp("browser-data"), tiny_embedder, tiny_reranker, tiny_embedder_path,
                     tiny_reranker_path, llm.base_url) as running:
        yield running


@pytest.fixture
def dialogs() -> list[str]:
    return []


@pytest.fixture
def new_page(browser, app, dialogs):
    """Pages in fresh browser contexts (separate Gradio sessions); any JS dialog is recorded."""
    contexts = []

    def new() -> Page:
        page = open_page(browser, app.url, dialogs)
        contexts.append(page.context)
        return page

    yield new
    for context in contexts:
        context.close()


@pytest.fixture(autouse=True)
def reset_llm(llm):
    llm.reset()
    llm.reply = REPLY


def upload(page: Page, tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    page.get_by_role("tab", name="Knowledge").click()
    page.set_input_files("#rag-upload input[type=file]", str(path))
    # The uploaded file's row: Gradio names its cell after the file, and shows the name as two spans (stem, then
    # extension) with a space between, so the box's text reads "payload .md". The whole name is in the text only
    # while the upload is in flight ("Uploading 1 file... payload.md", ~20 ms here): a text match raced the upload
    # and failed in CI when the upload finished before the first check.
    box = page.locator("#rag-upload")
    expect(box.get_by_role("cell", name=name, exact=True)).to_be_visible()
    expect(box.get_by_role("link")).to_be_visible()  # uploaded: the row links the stored file
    page.click("#rag-add")
    expect(page.locator("#rag-report")).to_contain_text("added")
    expect(page.locator("#rag-documents")).to_contain_text(name)
    page.get_by_role("tab", name="Chat").click()


def table_rows(page: Page) -> list[dict[str, str]]:
    """The candidates table as dicts, read from its grid cells."""
    cells = page.locator("#rag-candidates [role=gridcell]")
    rows: dict[int, dict[str, str]] = {}
    for i in range(cells.count()):
        cell = cells.nth(i)
        row, col = int(cell.get_attribute("data-row")), int(cell.get_attribute("data-col"))
        rows.setdefault(row, {})[TABLE_HEADERS[col]] = cell.inner_text().strip()
    return [rows[r] for r in sorted(rows)]


def test_upload_ask_inspect_scores_plot_streamed_answer_and_citation(new_page, tmp_path, llm):
    page = new_page()
    upload(page, tmp_path, "otters.md", "# Sea otters\n\nSea otters hold hands while they sleep so they "
                                         "do not drift apart, and float on their backs in kelp forests.")
    llm.chunk_delay = 0.08  # ~1 s of streaming, so partial answers are visible
    page.fill("#rag-question textarea", "Why do sea otters hold hands?")
    page.click("#rag-ask")
    seen = set()
    deadline = time.time() + 30
    while "Sources:" not in (text := page.locator("#rag-chat").inner_text()) and time.time() < deadline:
        seen.add(text)
        time.sleep(0.05)
    assert any("Otters hold hands" in s and "backs" not in s for s in seen), "the answer did not stream"

    rows = table_rows(page)
    assert len(rows) == 8  # 7 corpus chunks + the upload, top_k = 10
    for row in rows:  # both scores for every candidate
        float(row["Rerank score"]), float(row["Embedding score"])
        assert row["Rerank #"].isdigit() and row["Dense #"].isdigit()
    assert [r["LLM"] for r in rows[:3]] == ["✓ [1]", "✓ [2]", "✓ [3]"]
    assert "otters.md" in {r["Source"] for r in rows}
    expect(page.locator("#rag-plot img")).to_have_count(1)
    expect(page.locator("#rag-timings")).to_contain_text("rerank")
    expect(page.locator("#rag-timings")).to_contain_text("generate")

    citation = page.locator("#rag-chat a[href='#passage-1-2']").first
    expect(citation).to_have_attribute("title", re.compile(r"\S"))
    citation.click()
    card = page.locator("#passage-1-2")
    expect(card).to_have_class(re.compile("rag-flash"))
    expect(card).to_be_in_viewport()
    assert page.url.rstrip("/") == page.url.split("#")[0].rstrip("/")  # the link did not navigate

    page.locator("#rag-candidates [role=gridcell][data-row='0'][data-col='7']").click()
    expect(page.locator("#rag-full-text textarea")).to_have_value(re.compile(r"chunk \d+, embedding rank"))


def test_another_session_does_not_see_the_upload_and_it_goes_when_the_tab_closes(new_page, tmp_path, app):
    alice = new_page()
    upload(alice, tmp_path, "alice-secret.md", "# Secret\n\nAlice keeps private notes about walruses.")
    bob = new_page()
    bob.get_by_role("tab", name="Knowledge").click()
    expect(bob.locator("#rag-documents")).to_contain_text("corpus.md")
    expect(bob.locator("#rag-documents")).not_to_contain_text("alice-secret.md")
    bob.get_by_role("tab", name="Chat").click()
    ask(bob, "private notes about walruses")
    assert "alice-secret.md" not in {r["Source"] for r in table_rows(bob)}

    alice.context.close()  # closing the tab ends the session: its uploads are removed
    deadline = time.time() + 20
    while any(d.source == "alice-secret.md" for d in app.rag.store.documents()) and time.time() < deadline:
        time.sleep(0.25)
    assert not any(d.source == "alice-secret.md" for d in app.rag.store.documents())
    assert any(d.source == "corpus.md" for d in app.rag.store.documents())


def test_html_in_documents_and_answers_shows_as_text_and_never_runs(new_page, tmp_path, llm, dialogs):
    page = new_page()
    upload(page, tmp_path, "payload.md", XSS_DOC)
    llm.reply = "See <script>window.__xssAnswer = 1; alert('answer')</script> <img src=x onerror=alert(2)> [1]"
    page.click("text=Settings (apply")
    set_number(page, "top_n: passages sent to the LLM", 10)  # every passage gets a card
    ask(page, "kelp forest payload script image")
    expect(page.locator("#rag-cards")).to_contain_text("<script>window.__xssScript")
    expect(page.locator("#rag-cards")).to_contain_text('<img src=x onerror="window.__xssImage')
    expect(page.locator("#rag-chat")).to_contain_text("<script>window.__xssAnswer")
    row = next(i for i, r in enumerate(table_rows(page)) if r["Source"] == "payload.md")
    page.locator(f"#rag-candidates [role=gridcell][data-row='{row}'][data-col='7']").click()
    expect(page.locator("#rag-full-text textarea")).to_have_value(re.compile("<script>window.__xssScript"))
    page.wait_for_timeout(500)
    flags = page.evaluate("[window.__xssScript, window.__xssImage, window.__xssAnswer]")
    assert flags == [None, None, None]
    assert dialogs == []
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("#rag-chat script, #rag-cards script").count() == 0


def test_clear_button_resets_chat_and_panels(new_page):
    page = new_page()
    ask(page, "volcano")
    page.locator("#rag-candidates [role=gridcell][data-row='0'][data-col='7']").click()
    expect(page.locator("#rag-grade-status")).to_contain_text("Grading row 1")
    page.click("#rag-clear")
    expect(page.locator("#rag-chat")).not_to_contain_text("Sources:")
    expect(page.locator("#rag-candidates [role=gridcell]")).to_have_count(0)
    expect(page.locator("#rag-cards")).to_contain_text("appear here after a question")
    expect(page.locator("#rag-full-text textarea")).to_have_value("")
    expect(page.locator("#rag-grade-status")).not_to_contain_text("Grading row")  # the record went too


def test_grade_a_passage_see_it_evaluated_and_download_the_trace(new_page):
    page = new_page()
    ask(page, "volcano")
    page.locator("#rag-candidates [role=gridcell][data-row='0'][data-col='7']").click()
    expect(page.locator("#rag-grade-status")).to_contain_text("Grading row 1")
    expect(page.locator("#rag-full-text textarea")).to_have_value(re.compile(r"chunk \d+, embedding rank \d+"))
    page.locator("#rag-grade").get_by_text("Relevant (2)", exact=True).click()
    expect(page.locator("#rag-grade-status")).to_contain_text("Recorded")
    with page.expect_download() as download:
        page.click("#rag-trace")
    trace = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert trace["query"] == "volcano" and trace["answer"] == REPLY and "generate" in trace["timings"]
    page.get_by_role("tab", name="Evaluate").click()
    expect(page.locator("#rag-eval-summary")).to_contain_text("1 judged question(s)")
    expect(page.locator("#rag-eval-metrics")).to_contain_text("nDCG@10")
    expect(page.locator("#rag-eval-queries")).to_contain_text("volcano")


def test_the_three_first_stage_modes_from_the_settings_panel(new_page, tmp_path):
    page = new_page()
    upload(page, tmp_path, "codes.md", "# Error codes\n\nWhen the proxy reports ZQ4417 the loader ran out of "
                                       "memory: raise the limit and restart it.")
    page.get_by_text("Settings (apply to the next question").click()
    modes = page.locator("#rag-retrieval-mode")
    expect(modes.get_by_label("hybrid")).to_be_checked()  # the default
    for mode in ("bm25", "dense", "hybrid"):
        modes.get_by_label(mode).check()
        clear_chat(page)  # a new conversation: a follow-up would be condensed by the LLM first
        ask(page, "ZQ4417")
        rows = table_rows(page)
        by_upload = next(r for r in rows if r["Source"] == "codes.md")
        if mode == "bm25":  # only the chunk holding the code shares a word with the question
            assert len(rows) == 1 and by_upload["BM25 #"] == "1" and float(by_upload["BM25 score"]) > 0
        if mode == "dense":  # every candidate from the dense list; BM25 scores still shown (0 without a match)
            assert len(rows) == 8 and all(r["Dense #"].isdigit() for r in rows)  # 7 corpus chunks + the upload
            assert {r["BM25 score"] for r in rows if r["Source"] != "codes.md"} == {"0.000"}
        if mode == "hybrid":  # the exact identifier: its chunk first of the fused ranking, BM25 rank 1
            assert by_upload["First #"] == "1" and by_upload["BM25 #"] == "1"
            assert {r["Found by"] for r in rows} == {"both", "dense only"}
