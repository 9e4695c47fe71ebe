"""The UI's handlers called directly, with the tiny models, a fresh Milvus Lite and the local LLM server."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd
import pytest

from rag.answer import Answerer
from rag.ui import formatting as fmt
from rag.ui.handlers import EMPTY_KB, ChatHandlers, KnowledgeHandlers

PAYLOAD = ('Vector payload <script>window.__xss = 1</script> and <img src=x onerror="window.__xss = 2"> '
           'in a document about vector search.')
KNOBS = dict(top_k=8, top_n=3, use_reranker=True, query_instruction="", rerank_instruction="", llm_model="",
             temperature=0.2)


def request(session: str) -> SimpleNamespace:
    """Stands in for gr.Request: the handlers only read the session hash."""
    return SimpleNamespace(session_hash=session)


def knobs(**changes) -> list:
    return list({**KNOBS, **changes}.values())


def run_ask(chat: ChatHandlers, question: str, history=None, session: str = "s1", **changes) -> list[tuple]:
    return list(chat.ask(question, history or [], *knobs(**changes), request=request(session)))


def is_skip(value) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1


@pytest.fixture
def loaded_rag(tiny_rag, corpus_path):
    tiny_rag.ingest_paths([corpus_path])
    return tiny_rag


@pytest.fixture
def llm_chat(loaded_rag, tiny_settings, openai_server):
    settings = tiny_settings.replace(llm_base_url=openai_server.base_url)
    return ChatHandlers(loaded_rag, settings, Answerer(settings))


@pytest.fixture
def offline_chat(loaded_rag, tiny_settings):
    return ChatHandlers(loaded_rag, tiny_settings, Answerer(tiny_settings))


def upload_file(tmp_path: Path, name: str, text: str) -> str:
    folder = tmp_path / "gradio-upload"  # Gradio keeps the original name inside a hashed folder
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- chat -------------------------------------------------------------------------------------------------
def test_ask_shows_dense_results_before_the_reranker_then_both_scores(llm_chat, openai_server):
    openai_server.reply = "Milvus is a vector database [1]."
    steps = run_ask(llm_chat, "Which database stores embeddings?")
    tables = [s[2] for s in steps if isinstance(s[2], pd.DataFrame)]
    dense, reranked = tables[0], tables[-1]
    assert list(dense.columns) == fmt.TABLE_HEADERS and len(dense) == 7  # the whole corpus, top_k=8
    assert set(dense["Rerank score"]) == {fmt.PENDING}  # reranker scores not there yet
    assert all(float(v) == float(v) for v in dense["Embedding score"])
    assert all(float(v) >= 0 for v in reranked["Rerank score"])  # then both scores, for every candidate
    assert list(reranked["Rerank #"]) == [str(i) for i in range(1, 8)]
    assert (reranked["LLM"].str.startswith("✓")).sum() == 3


def test_ask_streams_a_cited_answer_with_timings_of_every_stage(llm_chat, openai_server):
    openai_server.reply = "Milvus is a vector database [1] built for scale [2]."
    steps = run_ask(llm_chat, "Which database stores embeddings?")
    answers = [s[0][-1]["content"] for s in steps]
    assert answers[0] == "Searching the knowledge base…"
    assert any(a.startswith("Reranking 7 candidates") for a in answers)
    final = answers[-1]
    assert "[[1]](#passage-1-1" in final and "[[2]](#passage-1-2" in final  # links to the passage cards
    assert "Sources:" in final
    assert "passage-1-1" in [s for s in (x[5] for x in steps) if isinstance(s, str)][-1]
    timings = steps[-1][4]
    for stage in ("embed query", "search", "rerank", "generate", "total"):
        assert stage in timings
    assert steps[-1][1] == "" or is_skip(steps[-1][1])  # the textbox was cleared
    assert steps[-1][7] == {"question": "Which database stores embeddings?", "context": 0}


def test_plot_is_a_figure_before_and_after_reranking(llm_chat):
    from matplotlib.figure import Figure

    plots = [s[3] for s in run_ask(llm_chat, "volcano eruption") if isinstance(s[3], Figure)]
    assert len(plots) == 2


def test_dense_table_is_sent_before_the_plot_is_drawn(llm_chat):
    # Gradio encodes all outputs of a yield before sending any: the table must not wait for the plot
    from matplotlib.figure import Figure

    steps = run_ask(llm_chat, "volcano eruption")
    first_table = next(i for i, s in enumerate(steps) if isinstance(s[2], pd.DataFrame))
    assert is_skip(steps[first_table][3])
    assert isinstance(steps[first_table + 1][3], Figure) and is_skip(steps[first_table + 1][2])


def test_reranker_off_keeps_the_dense_order(llm_chat):
    steps = run_ask(llm_chat, "honey bees", use_reranker=False, top_n=2)
    table = [s[2] for s in steps if isinstance(s[2], pd.DataFrame)][-1]
    assert list(table["Dense #"]) == [str(i) for i in range(1, 8)]
    assert set(table["Rerank score"]) == {""}
    assert list(table["LLM"][:3]) == ["✓ [1]", "✓ [2]", ""]


def test_follow_up_sends_history_and_rerun_compares_settings(llm_chat, openai_server):
    first = run_ask(llm_chat, "How do bees make honey?")
    history, last = first[-1][0], first[-1][7]
    second = run_ask(llm_chat, "And what about volcanoes?", history=history)
    assert len(second[-1][0]) == 4
    sent = openai_server.requests[-1]["messages"]
    assert any("How do bees make honey?" in m["content"] for m in sent if m["role"] == "user")
    assert not any("Sources:" in m["content"] for m in sent)  # the UI footer is not sent back
    rerun = list(llm_chat.rerun(last, second[-1][0], *knobs(use_reranker=False), request=request("s1")))
    chat = rerun[-1][0]
    assert len(chat) == 6 and chat[-2]["content"].startswith("↻ How do bees make honey?")
    assert "reranker off" in chat[-2]["content"]
    assert "#passage-3-1" in chat[-1]["content"]  # third turn: its own card anchors


def test_rerun_without_a_question_warns(llm_chat):
    with pytest.warns(UserWarning, match="Ask a question first"):
        steps = list(llm_chat.rerun(None, [], *knobs(), request=request("s1")))
    assert all(is_skip(v) for v in steps[0])


def test_empty_question_warns_and_changes_nothing(llm_chat):
    with pytest.warns(UserWarning, match="Type a question"):
        steps = run_ask(llm_chat, "   ")
    assert len(steps) == 1 and all(is_skip(v) for v in steps[0])


def test_empty_knowledge_base_says_what_to_do(tiny_rag, tiny_settings):
    chat = ChatHandlers(tiny_rag, tiny_settings, Answerer(tiny_settings))
    steps = run_ask(chat, "anything")
    assert steps[-1][0][-1]["content"] == EMPTY_KB


def test_llm_errors_become_a_message_not_an_exception(llm_chat, openai_server):
    openai_server.fail = "401"
    with pytest.warns(UserWarning, match="401"):
        steps = run_ask(llm_chat, "volcanoes")
    assert "OPENAI_API_KEY" in steps[-1][0][-1]["content"]


def test_retrieval_only_answer_quotes_passages_as_text(offline_chat, loaded_rag):
    loaded_rag.add_texts([PAYLOAD], "payload.md")
    steps = run_ask(offline_chat, "vector payload document", top_k=10, top_n=10)
    answer = steps[-1][0][-1]["content"]
    assert "No LLM configured" in answer
    assert "<script" not in answer and "<img" not in answer and "&lt;script>" in answer
    cards = [s[5] for s in steps if isinstance(s[5], str)][-1]
    assert "<script" not in cards and "&lt;script&gt;" in cards and "<img" not in cards


def test_model_output_html_is_shown_as_text(llm_chat, openai_server):
    openai_server.reply = 'Done <script>alert(1)</script> <img src=x onerror=alert(2)> `<b>code</b>` [1]'
    answer = run_ask(llm_chat, "volcanoes")[-1][0][-1]["content"]
    assert "<script" not in answer and "<img" not in answer
    assert "`<b>code</b>`" in answer  # code spans are escaped by Markdown itself


def test_user_question_is_escaped_in_the_chat(llm_chat):
    chat = run_ask(llm_chat, "<img src=x onerror=alert(1)> volcano?")[-1][0]
    assert chat[0]["content"].startswith("&lt;img")


def test_selecting_a_row_shows_the_full_passage(llm_chat):
    steps = run_ask(llm_chat, "chess")
    candidates = steps[-1][6] if not is_skip(steps[-1][6]) else [s[6] for s in steps if isinstance(s[6], list)][-1]
    text = ChatHandlers.show_passage(candidates, SimpleNamespace(index=[1, 7]))
    assert candidates[1]["text"] in text and candidates[1]["source"] in text
    assert ChatHandlers.show_passage(candidates, SimpleNamespace(index=[99, 0])) == ""


def test_clear_resets_chat_and_panels():
    chat, question, table, plot, timings, cards, candidates, last, full = ChatHandlers.clear()
    assert chat == [] and question == "" and table.empty and plot is None and last is None and full == ""


# --- knowledge tab ---------------------------------------------------------------------------------------
def test_upload_reports_each_file_and_lists_it_for_its_session_only(tiny_rag, tiny_settings, tmp_path,
                                                                    corpus_path):
    tiny_rag.ingest_paths([corpus_path])
    kb = KnowledgeHandlers(tiny_rag, tiny_settings, "test corpus")
    good = upload_file(tmp_path, "notes.md", "# Notes\n\nQuarterly notes about penguins and ice.")
    bad = upload_file(tmp_path, "empty.md", "   ")
    with pytest.warns(UserWarning, match="could not be added"):
        report, documents, dropdown, summary, files = kb.upload([good, bad], request("alice"))
    assert dict(zip(report["File"], report["Status"])) == {"notes.md": "✓ added", "empty.md": "✗ failed"}
    assert report.loc[report["File"] == "empty.md", "Note"].item()  # says why
    assert files is None
    assert dict(zip(documents["Document"], documents["Visible to"])) == {"corpus.md": "everyone",
                                                                          "notes.md": "this session"}
    assert [c[0] for c in dropdown.constructor_args["choices"]] == ["notes.md"]
    assert "test corpus" in summary and "only in this browser session" in summary
    bob_documents = kb.refresh(request("bob"))[0]
    assert list(bob_documents["Document"]) == ["corpus.md"]


def test_uploads_are_searchable_only_in_their_session(tiny_rag, tiny_settings, tmp_path, corpus_path):
    tiny_rag.ingest_paths([corpus_path])
    kb = KnowledgeHandlers(tiny_rag, tiny_settings)
    chat = ChatHandlers(tiny_rag, tiny_settings, Answerer(tiny_settings))
    kb.upload([upload_file(tmp_path, "penguins.md", "# Penguins\n\nPenguins live on the ice.")], request("alice"))
    alice = [s[6] for s in run_ask(chat, "penguins", session="alice", top_k=20) if isinstance(s[6], list)][-1]
    bob = [s[6] for s in run_ask(chat, "penguins", session="bob", top_k=20) if isinstance(s[6], list)][-1]
    assert "penguins.md" in {c["source"] for c in alice}
    assert "penguins.md" not in {c["source"] for c in bob}


def test_session_end_removes_its_uploads_but_not_the_shared_base(tiny_rag, tiny_settings, tmp_path, corpus_path):
    tiny_rag.ingest_paths([corpus_path])
    kb = KnowledgeHandlers(tiny_rag, tiny_settings)
    kb.upload([upload_file(tmp_path, "mine.md", "# Mine\n\nPrivate text about otters.")], request("alice"))
    kb.end_session(request("alice"))
    assert [d.source for d in tiny_rag.store.documents("alice")] == ["corpus.md"]


def test_shared_uploads_are_visible_to_everyone_and_persist(tiny_rag, tiny_settings, tmp_path):
    settings = tiny_settings.replace(shared_uploads=True)
    kb = KnowledgeHandlers(tiny_rag, settings)
    kb.upload([upload_file(tmp_path, "team.md", "# Team\n\nShared notes about otters.")], request("alice"))
    kb.end_session(request("alice"))
    documents = kb.refresh(request("bob"))[0]
    assert dict(zip(documents["Document"], documents["Visible to"])) == {"team.md": "everyone"}
    assert "shared" in kb.refresh(request("bob"))[2]


def test_delete_only_own_documents(tiny_rag, tiny_settings, tmp_path, corpus_path):
    tiny_rag.ingest_paths([corpus_path])
    kb = KnowledgeHandlers(tiny_rag, tiny_settings)
    kb.upload([upload_file(tmp_path, "mine.md", "# Mine\n\nText about otters.")], request("alice"))
    doc_id = next(d.doc_id for d in tiny_rag.store.documents("alice") if d.source == "mine.md")
    shared_id = next(d.doc_id for d in tiny_rag.store.documents("alice") if d.source == "corpus.md")
    with pytest.warns(UserWarning, match="Choose one of your"):
        kb.delete(doc_id, request("bob"))  # another session can't
    with pytest.warns(UserWarning, match="Choose one of your"):
        kb.delete(shared_id, request("alice"))  # nor can anyone delete the shared base
    documents = kb.delete(doc_id, request("alice"))[0]
    assert list(documents["Document"]) == ["corpus.md"]


def test_upload_without_files_warns(tiny_rag, tiny_settings):
    with pytest.warns(UserWarning, match="Choose one or more files"):
        result = KnowledgeHandlers(tiny_rag, tiny_settings).upload([], request("alice"))
    assert all(is_skip(v) for v in result)


# --- JSON for the API ------------------------------------------------------------------------------------
def test_api_results_are_json_friendly(loaded_rag, tiny_settings, openai_server):
    from rag.ui.api import ask_json, retrieve_json
    from rag.ui.service import QueryOptions

    settings = tiny_settings.replace(llm_base_url=openai_server.base_url)
    options = QueryOptions.from_settings(settings, top_k=5, top_n=2)
    retrieved = retrieve_json(loaded_rag, "volcano", options)
    json.dumps(retrieved)
    assert len(retrieved["candidates"]) == 5 and retrieved["reranked"]
    assert sum(c["selected"] for c in retrieved["candidates"]) == 2
    assert {"embed_query", "search", "rerank"} <= set(retrieved["timings"])
    openai_server.reply = "Lava [1]."
    answered = ask_json(loaded_rag, Answerer(settings), "volcano", options)
    json.dumps(answered)
    assert answered["answer"] == "Lava [1]." and answered["citations"][0]["number"] == 1
    assert "generate" in answered["retrieval"]["timings"]


@pytest.mark.parametrize("session", ["x" * 5000, 'a" or owner != "', "../../etc", "sess ion"])
def test_a_malformed_session_id_is_a_clear_message_not_a_milvus_error(tiny_rag, tiny_settings, tmp_path, session):
    kb = KnowledgeHandlers(tiny_rag, tiny_settings)
    good = upload_file(tmp_path, "notes.md", "# Notes\n\nQuarterly notes about penguins and ice.")
    with pytest.raises(gr.Error) as caught:
        kb.upload([good], request(session))
    assert "malformed session id" in str(caught.value) and "Reload the page" in str(caught.value)
    assert tiny_rag.store.documents() == []  # nothing was written
    with pytest.raises(gr.Error, match="malformed session id"):
        run_ask(ChatHandlers(tiny_rag, tiny_settings, Answerer(tiny_settings)), "penguins", session=session)
