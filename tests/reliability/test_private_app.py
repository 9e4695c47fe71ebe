"""One app with private uploads, driven by headless Chromium and raw API calls: hostile documents show as
text and never run; one session's upload never reaches another session through any endpoint; it is gone
when its session ends."""
from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser_helpers import ask, open_page, set_number
from tests.reliability.helpers import call_fn_index, no_traceback, offline_chunk_counts

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

SECRET = "Zebracorn-7731 is the private launch code of Alice"
MARKER = "Quokkalith"  # only in the private document, never in a query
HOSTILE_MD = "\n".join([
    "# Hostile kelp notes",
    "zero\u200bwidth\u200dkelp \u202eRTL override kelp\u202c \u2067isolate\u2069 end",
    "Kelp payload <script>window.__x1 = 1; alert('s')</script> and <img src=x onerror=\"window.__x2=1\">.",
    "<svg onload=\"window.__x3=1\"><a href=\"javascript:window.__x4=1\">click me</a></svg>",
    "[md link](javascript:window.__x5=1) and ![img](x onerror=window.__x6=1) <iframe src=\"javascript:1\">",
    "<" * 200 + "div>" * 300 + " deeply nested " + "</div>" * 300,
    "kelp" + "A" * 20000,  # a huge single line
])
HOSTILE_HTML = ("<html><body><h1>Kelp page</h1><p>Kelp html body text.</p>"
                "<script>window.__x7=1</script><img src=x onerror=\"window.__x8=1\"></body></html>")
FLAGS = "[1,2,3,4,5,6,7,8].map(i => window['__x' + i])"


@pytest.fixture(scope="module")
def app(make_app):
    return make_app("private-app", shared=False)


def upload(page, files: list[dict]) -> None:
    page.get_by_role("tab", name="Knowledge").click()
    page.set_input_files("#rag-upload input[type=file]", files)
    page.click("#rag-add")
    expect(page.locator("#rag-report")).to_contain_text(files[-1]["name"])
    page.get_by_role("tab", name="Chat").click()


def test_hostile_documents_and_names_show_as_text_and_nothing_runs(browser, app, fresh_llm):
    dialogs: list[str] = []
    page = open_page(browser, app.url, dialogs)
    fresh_llm.reply = "Answer <script>window.__x1=1</script> <img src=x onerror=window.__x2=1> [1]"
    evil_name = "<img src=x onerror=window.__x8=1>.md"
    upload(page, [{"name": evil_name, "mimeType": "text/markdown", "buffer": b"# Kelp\n\nKelp by name."},
                  {"name": "hostile.html", "mimeType": "text/html", "buffer": HOSTILE_HTML.encode()},
                  {"name": "hostile.md", "mimeType": "text/markdown", "buffer": HOSTILE_MD.encode()}])
    page.get_by_role("tab", name="Knowledge").click()
    # Gradio strips the angle brackets from uploaded file names; the rest shows as text
    expect(page.locator("#rag-documents")).to_contain_text("onerror=window.__x8=1.md")
    page.get_by_role("tab", name="Chat").click()
    page.click("text=Settings (apply")
    # BM25 first stage: the candidates are the chunks sharing a word with the question, wherever the tiny
    # models' random weights rank them; every one of them gets a card (fewer than 20 match)
    page.locator("#rag-retrieval-mode").get_by_label("bm25").check()
    set_number(page, "top_k: candidates retrieved", 20)
    set_number(page, "top_n: passages sent to the LLM", 20)
    ask(page, "kelp payload html body")
    cards = page.locator("#rag-cards")
    expect(cards).to_contain_text("<script>window.__x1 = 1")
    expect(cards).to_contain_text("zero\u200bwidth")
    expect(page.locator("#rag-chat")).to_contain_text("<script>window.__x1=1</script>")
    page.wait_for_timeout(500)
    assert page.evaluate(FLAGS) == [None] * 8 and dialogs == []
    assert page.locator("#rag-chat script, #rag-cards script, #rag-cards iframe, #rag-cards svg").count() == 0
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("a[href^='javascript:']").count() == 0
    assert "window.__x7" not in cards.inner_text()  # the HTML loader drops <script> contents
    page.context.close()


def test_bad_queries_in_the_page_get_a_reply_or_a_message_never_a_traceback(browser, app, fresh_llm):
    page = open_page(browser, app.url, [])
    for n, question in enumerate(["otters " * 16_667, "\x01\x07 otters \x1b[31m", "🦦🌊", "海獭为什么牵手"], 1):
        page.fill("#rag-question textarea", question)
        page.click("#rag-ask")
        expect(page.locator("#rag-chat").get_by_text("Sources:")).to_have_count(n)  # each turn finished
        no_traceback(page.locator("#rag-chat").inner_text())
    before = page.locator("#rag-chat").inner_text()
    page.fill("#rag-question textarea", "   ")
    page.click("#rag-ask")  # a warning toast; the chat is left as it was
    page.wait_for_timeout(1000)
    assert page.locator("#rag-chat").inner_text() == before
    page.context.close()


def _component_value(component: dict, query: str):
    props = component.get("props", {})
    kind = component.get("type")
    if kind in ("textbox", "dropdown"):
        return query
    if kind == "state":
        return None
    return props.get("value")


def test_another_session_never_gets_the_upload_through_any_endpoint_and_it_goes_with_the_session(
        browser, app, fresh_llm):
    alice = open_page(browser, app.url, [])
    upload(alice, [{"name": "alice-secret.md", "mimeType": "text/markdown",
                    "buffer": f"# Private\n\n{SECRET}, sealed {MARKER}. Walrus notes.".encode()}])
    ask(alice, "private launch code of Alice")  # Alice herself finds it
    expect(alice.locator("#rag-candidates")).to_contain_text("alice-secret.md")  # 8 visible chunks, top_k 10

    bob = open_page(browser, app.url, [])
    bob.get_by_role("tab", name="Knowledge").click()
    expect(bob.locator("#rag-documents")).to_contain_text("corpus.md")
    expect(bob.locator("#rag-documents")).not_to_contain_text("alice-secret")
    bob.get_by_role("tab", name="Chat").click()
    ask(bob, "private launch code of Alice Zebracorn-7731")
    assert MARKER not in bob.content()

    # every named endpoint through gradio_client
    client = app.client()
    named = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(named) == {"/retrieve", "/ask", "/upload"}
    tried = 0
    for api_name in ("/retrieve", "/ask"):
        result = client.predict(f"private launch code of Alice {SECRET}", 100, 100, True, api_name=api_name)
        assert MARKER not in json.dumps(result)
        tried += 1
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="--shared-uploads"):  # API uploads are refused in private mode
        client.predict([], api_name="/upload")
    # every dependency in /config, called the way the page calls it, from a session of its own
    config = httpx.get(app.url + "config", timeout=10).json()
    components = {c["id"]: c for c in config["components"]}
    succeeded = 0
    for dep in config["dependencies"]:
        if not dep.get("backend_fn"):
            continue
        data = [_component_value(components[i], f"launch code of Alice {SECRET}") for i in dep["inputs"]]
        received = call_fn_index(app.url, dep["id"], data, timeout=30)
        assert MARKER not in received, (dep.get("api_name"), received[:300])
        tried += 1
        succeeded += bool(re.search(r'"msg":\s*"process_completed".*"success":\s*true', received))
    assert succeeded >= 5, succeeded  # the calls really ran (chat, listing, ...), not just got refused
    print(f"isolation: {tried} endpoint calls from another session ({succeeded} ran), none returned the "
          "private chunk")
    fresh_llm.requests.clear()

    alice.context.close()  # the tab closes: the session ends, its upload must go
    bob.context.close()
    deadline = time.monotonic() + 30  # Gradio notices the closed tabs by their lost heartbeat
    while app.log_text().count("session ended: removed") < 2 and time.monotonic() < deadline:
        time.sleep(0.25)
    app.stop()  # a graceful stop; then read the store directly
    counts = offline_chunk_counts(app.data_dir)
    assert "alice-secret.md" not in counts and "hostile.md" not in counts, counts
    assert counts.get("corpus.md", 0) > 0
