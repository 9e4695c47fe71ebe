"""The app as users meet it after start-up: the example questions are ready from the caches (warm start), and a
new question's rerank scores reach the page batch by batch through Gradio's queue; the plot is drawn once they
are all in, and the answer follows."""
from __future__ import annotations

import json
import re
import time
import uuid

import httpx
import pytest

from rag.ui import EXAMPLE_QUESTIONS
from tests.reliability.helpers import completed_output, no_traceback, queue_messages

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def app(make_app):
    """Warm start on (off in every other test app); two candidates per rerank batch, so progress shows."""
    return make_app("latency-app", shared=False,
                    extra_env={"RAG_WARM_START": "true", "RAG_RERANK_BATCH_SIZE": "2"})


def test_warm_start_readies_the_example_questions_without_blocking_the_page(app):
    answer = app.client().predict("How do sea otters sleep?", api_name="/retrieve")  # not an example question
    assert answer["candidates"] and answer["reranked"]  # served meanwhile
    deadline = time.monotonic() + 150
    while "warm start:" not in app.log_text() and time.monotonic() < deadline:
        time.sleep(1)
    ready = re.search(r"warm start: (\d+) of (\d+) example questions ready", app.log_text())
    assert ready and ready.group(1) == ready.group(2) == str(len(EXAMPLE_QUESTIONS)), app.log_text()[-2000:]
    for question in EXAMPLE_QUESTIONS:  # what a first click on an example searches: the page's defaults
        result = app.client().predict(question, api_name="/retrieve")
        assert result["reranked"] and all(c["rerank_cached"] for c in result["candidates"]), question
    no_traceback(app.log_text())


def sends_a_figure(output) -> bool:
    """Whether a streamed plot output carries an image: a full value, or a diff adding or replacing its `plot`
    field (a skipped output shows as {"__type__": "update"}, or as a diff to or from that marker)."""
    if isinstance(output, dict):
        return "plot" in output
    return any(op in ("add", "replace") and (path == ["plot"] or (path == [] and isinstance(value, dict)
                                                                  and "plot" in value))
               for op, path, value in output)


def test_rerank_progress_streams_through_the_queue_before_the_plot_and_answer(app, fresh_llm):
    config = httpx.get(app.url + "config", timeout=10).json()
    dep = next(d for d in config["dependencies"] if d.get("api_name") == "chat_ask")
    values = {c["id"]: c.get("props", {}).get("value") for c in config["components"]}
    types = {c["id"]: c.get("type") for c in config["components"]}
    data = [values[i] for i in dep["inputs"]]
    data[0] = f"Where do otters and bees live? {uuid.uuid4().hex[:6]}"  # new: no score is cached
    received = queue_messages(app.url, dep["id"], data, uuid.uuid4().hex[:11])
    completed_output(received)
    generating = [m["output"]["data"] for _, m in received if m.get("msg") == "process_generating"]
    texts = [json.dumps(d) for d in generating]
    plot = next(n for n, i in enumerate(dep["outputs"]) if types[i] == "plot")
    progress = [n for n, t in enumerate(texts) if re.search(r"reranked [1-6]/7", t)]
    assert len(progress) >= 2, texts  # 7 candidates, 2 per batch (the first alone): 4 batches, 3 partial steps
    writing = next(n for n, t in enumerate(texts) if "Writing the answer" in t)
    plots = [n for n, d in enumerate(generating) if sends_a_figure(d[plot])]
    # the plot is drawn once, right after the reranked table: drawing it earlier would delay the first scores
    assert len(plots) == 1, (progress, writing, [str(d[plot])[:80] for d in generating])
    assert progress[0] < progress[-1] < writing < plots[0]
