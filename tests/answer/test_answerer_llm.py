"""Streaming, cited answers against a real local OpenAI-compatible server (tests/openai_server.py)."""
from __future__ import annotations

import re
import time

import pytest

from rag import Settings
from rag.answer import Answerer
from rag.types import Candidate
from tests.openai_server import refused_base_url


def make_passages(*texts: str) -> list[Candidate]:
    return [Candidate(text=t, source=f"doc{i}.md", chunk_id=100 + i, dense_score=0.9, dense_rank=i,
                      selected=True) for i, t in enumerate(texts, start=1)]


PASSAGES = make_passages("Milvus is a vector database.", "Qwen3-Reranker scores pairs.", "Gradio builds UIs.")


def answerer_for(base_url: str, **settings) -> Answerer:
    values = dict(llm_base_url=base_url, openai_api_key=None, llm_model="test-model", llm_timeout=5.0)
    values.update(settings)
    return Answerer(Settings(**values))


def test_answer_streams_in_pieces_with_citations(openai_server):
    openai_server.reply = "Milvus is a vector database [1], and the reranker scores pairs [2][9]."
    answerer = answerer_for(openai_server.base_url, temperature=0.3, max_tokens=77)
    assert answerer.configured
    updates = list(answerer.stream("What is Milvus?", PASSAGES))
    partial = [u for u in updates if not u.done]
    assert len(partial) > 1 and all(not u.citations and u.error is None for u in partial)
    assert all(len(a.text) <= len(b.text) and b.text.startswith(a.text) for a, b in zip(updates, updates[1:]))
    final = updates[-1]
    assert final.done and final.error is None and final.mode == "llm"
    assert final.text == openai_server.reply
    assert [(c.number, c.candidate) for c in final.citations] == [(1, PASSAGES[0]), (2, PASSAGES[1])]
    # what went over the wire
    (body,) = openai_server.requests
    assert body["stream"] is True and body["model"] == "test-model"
    assert body["temperature"] == 0.3 and body["max_tokens"] == 77
    assert body["messages"] == answerer.build_messages("What is Milvus?", PASSAGES)
    assert '<passage id="3" source="doc3.md">' in body["messages"][-1]["content"]
    # a base URL without a key: a dummy key is sent
    assert openai_server.request_headers[0]["authorization"] == "Bearer not-needed"


def test_overrides_and_bounded_history_are_sent(openai_server):
    openai_server.reply = "It is open source [1]."
    history = [{"role": "user", "content": "old " + "x" * 8000}, {"role": "assistant", "content": "old answer"},
               {"role": "user", "content": "What is Milvus?"}, {"role": "assistant", "content": "A vector DB [1]."}]
    final = answerer_for(openai_server.base_url, openai_api_key="sk-real").answer(
        "Is it open source?", PASSAGES, history, model="other-model", temperature=0.0)
    assert final.error is None and final.text == "It is open source [1]."
    body = openai_server.requests[0]
    assert body["model"] == "other-model" and body["temperature"] == 0.0
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]  # the 8000-char turn and its answer were cut
    assert body["messages"][1]["content"] == "What is Milvus?"
    assert openai_server.request_headers[0]["authorization"] == "Bearer sk-real"


def test_condense_uses_the_server_when_configured(openai_server):
    openai_server.reply = 'Standalone question: "Does Milvus Lite run on Windows?"'
    history = [{"role": "user", "content": "Tell me about Milvus Lite."},
               {"role": "assistant", "content": "It is an embedded Milvus [1]."}]
    answerer = answerer_for(openai_server.base_url)
    assert answerer.condense("Does it run on Windows?", history) == "Does Milvus Lite run on Windows?"
    (body,) = openai_server.requests
    assert not body.get("stream") and body["temperature"] == 0
    prompt = body["messages"][-1]["content"]
    assert "Tell me about Milvus Lite." in prompt and "It is an embedded Milvus" in prompt
    assert "<follow_up>\nDoes it run on Windows?\n</follow_up>" in prompt
    # no history -> no call at all
    assert answerer.condense("What is Milvus?", []) == "What is Milvus?"
    assert len(openai_server.requests) == 1


def test_condense_falls_back_to_the_heuristic_on_failure(openai_server):
    openai_server.fail = "500"
    history = [{"role": "user", "content": "Tell me about Milvus Lite."}]
    answerer = answerer_for(openai_server.base_url)
    assert answerer.condense("Does it run on Windows?", history) == "Tell me about Milvus Lite. Does it run on Windows?"
    assert len(openai_server.requests) == 1  # condensing doesn't retry


@pytest.mark.parametrize("failure, expected", [
    ("401", ["rejected the API key (401)", "OPENAI_API_KEY"]),
    ("404", ["Model 'test-model' was not found", "(404)", "RAG_LLM_MODEL"]),
    ("429", ["rate-limiting", "(429)", "try again"]),
    ("500", ["server error (500)", "Try again"]),
])
def test_http_failures_become_short_messages(openai_server, failure, expected):
    openai_server.fail = failure
    updates = list(answerer_for(openai_server.base_url).stream("What is Milvus?", PASSAGES))
    final = updates[-1]
    assert len(updates) == 1 and final.done and final.mode == "llm"
    for fragment in expected:
        assert fragment in final.error
    assert final.text == "⚠️ " + final.error and "Traceback" not in final.text
    retried = failure in ("429", "500")
    assert len(openai_server.requests) == (2 if retried else 1)  # max_retries=1: one retry, no more


def test_a_rate_limit_once_is_retried_transparently(openai_server):
    openai_server.configure(fail="429", fail_times=1, reply="Fine [1].")
    final = answerer_for(openai_server.base_url).answer("q", PASSAGES)
    assert final.error is None and final.text == "Fine [1]." and len(openai_server.requests) == 2


def test_timeout_gives_a_message_within_the_limit(openai_server):
    openai_server.configure(fail="slow", delay=10)
    started = time.perf_counter()
    final = answerer_for(openai_server.base_url, llm_timeout=0.5).answer("q", PASSAGES)
    elapsed = time.perf_counter() - started
    assert "did not respond within 0.5 s" in final.error and "RAG_LLM_TIMEOUT" in final.error
    assert elapsed < 5  # two 0.5 s attempts plus one short backoff, not the server's 10 s


def test_refused_connection(tmp_path):
    url = refused_base_url()
    final = answerer_for(url, llm_timeout=2).answer("q", PASSAGES)
    assert final.error.startswith(f"Could not connect to the LLM endpoint at {url}")
    assert "server is running" in final.error and final.citations == []


def test_cut_stream_keeps_partial_text_and_appends_the_note(openai_server):
    openai_server.configure(fail="cut", reply="Milvus is a vector database [1] built for similarity search at scale.")
    updates = list(answerer_for(openai_server.base_url).stream("q", PASSAGES))
    final = updates[-1]
    assert len(updates) > 1 and final.done
    assert "connection to the LLM was lost mid-answer" in final.error
    assert final.text.startswith("Milvus is a vector database [1]")
    assert "at scale" not in final.text and final.text.endswith("⚠️ " + final.error)
    assert [c.number for c in final.citations] == [1]  # citations of the partial text still work


def test_stream_ending_without_finish_is_flagged(openai_server):
    openai_server.configure(fail="eof", reply="Milvus is a vector database [1] built for similarity search.")
    final = answerer_for(openai_server.base_url).answer("q", PASSAGES)
    assert final.text.startswith("Milvus is a vector database")
    assert "ended before the model finished" in final.error


def test_length_finish_adds_a_note(openai_server):
    openai_server.configure(reply="A long answer [1]", finish_reason="length")
    final = answerer_for(openai_server.base_url, max_tokens=5).answer("q", PASSAGES)
    assert final.error is None and "5-token limit" in final.text and "RAG_MAX_TOKENS" in final.text


def test_thinking_is_hidden(openai_server):
    openai_server.reply = "<think>The user wants Milvus [3].</think>Milvus stores vectors [1]."
    final = answerer_for(openai_server.base_url).answer("q", PASSAGES)
    assert final.text == "Milvus stores vectors [1]." and [c.number for c in final.citations] == [1]


def test_answerer_with_an_injected_client(openai_server):
    import openai

    client = openai.OpenAI(api_key="k", base_url=openai_server.base_url, max_retries=0)
    answerer = Answerer(Settings(openai_api_key=None, llm_base_url=None), client=client)
    assert answerer.configured
    assert answerer.answer("q", PASSAGES).text == openai_server.reply


def test_a_follow_up_with_a_hung_llm_stays_within_two_timeouts(openai_server):
    """Condensing and answering share the turn's (1 + MAX_RETRIES) x llm_timeout: 3 x before, as condense came
    on top of the answer's two attempts."""
    openai_server.configure(fail="slow", delay=20)
    answerer = answerer_for(openai_server.base_url, llm_timeout=2.0)
    history = [{"role": "user", "content": "What is Milvus?"}, {"role": "assistant", "content": "A database."}]
    assert answerer.client is not None  # built (and openai imported, ~2 s) before the clock starts, as in the app
    started = time.perf_counter()
    query = answerer.condense("and how does it index?", history)  # the LLM hangs: falls back after 2 s
    spent = time.perf_counter() - started
    final = list(answerer.stream("and how does it index?", PASSAGES, history, spent=spent))[-1]
    elapsed = time.perf_counter() - started
    assert "Milvus" in query and spent >= 2.0
    assert re.search(r"did not respond within 0\.[5-9] s", final.error), final.error  # (4 - spent) / 2
    assert elapsed < 2 * 2.0 + 1.0, elapsed  # two timeouts plus the client's one short backoff
