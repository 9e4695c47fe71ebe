"""The UI's handlers called directly, with the tiny models, a fresh Milvus Lite and the local LLM server."""
from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd
import pytest

from rag.answer import Answerer
from rag.ui import formatting as fmt
from rag.ui.evaluate import select_row
from rag.ui.handlers import (
    EMPTY_KB,
    LISTING,
    ChatHandlers,
    ChatView,
    KnowledgeHandlers,
    KnowledgeView,
    passage_text,
)
from rag.ui.view import KEEP, bind

PAYLOAD = ('Vector payload <script>window.__xss = 1</script> and <img src=x onerror="window.__xss = 2"> '
           'in a document about vector search.')
KNOBS = dict(top_k=8, top_n=3, use_reranker=True, query_instruction="", rerank_instruction="", llm_model="",
             temperature=0.2)


def request(session: str) -> SimpleNamespace:
    """Stands in for gr.Request: the handlers only read the session hash."""
    return SimpleNamespace(session_hash=session)


def knobs(**changes) -> list:
    return list({**KNOBS, **changes}.values())


def run_ask(chat: ChatHandlers, question: str, history=None, session: str = "s1", retrieval_mode=None,
            **changes) -> list[ChatView]:
    return list(chat.ask(question, history or [], *knobs(**changes), request=request(session),
                         retrieval_mode=retrieval_mode))


def sent(views: list[ChatView], name: str) -> list:
    """The values the steps sent to one component, in order (steps that left it as it was are skipped)."""
    return [getattr(v, name) for v in views if getattr(v, name) is not KEEP]


def shown(views: list[ChatView]) -> ChatView:
    """What the page shows after all the steps: each component's last value sent (KEEP: never touched)."""
    page = ChatView()
    for view in views:
        page = replace(page, **{n: getattr(view, n) for n in ChatView.names() if getattr(view, n) is not KEEP})
    return page


def is_skip(value) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1


@pytest.fixture
def loaded_rag(tiny_rag, corpus_path):
    """A fresh database with the corpus, for tests that also write."""
    tiny_rag.ingest_paths([corpus_path])
    return tiny_rag


@pytest.fixture
def llm_chat(corpus_rag, openai_server):
    """Chat over the module's read-only corpus (asking writes nothing) with the local LLM server."""
    settings = corpus_rag.settings.replace(llm_base_url=openai_server.base_url)
    return ChatHandlers(corpus_rag, settings, Answerer(settings))


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
    tables = [t for t in sent(steps, "table") if isinstance(t, pd.DataFrame)]
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
    answers = [chat[-1]["content"] for chat in sent(steps, "chatbot")]
    assert answers[0] == "Searching the knowledge base…"
    assert any(a.startswith("Reranking 7 candidates") for a in answers)
    final = answers[-1]
    assert "[[1]](#passage-1-1" in final and "[[2]](#passage-1-2" in final  # links to the passage cards
    assert "Sources:" in final
    assert "passage-1-1" in [c for c in sent(steps, "cards") if isinstance(c, str)][-1]
    timings = steps[-1].timings
    for stage in ("embed query", "search", "rerank", "generate", "total"):
        assert stage in timings
    assert sent(steps, "question") == [""]  # the textbox was cleared (and not filled again)
    assert shown(steps).last == {"question": "Which database stores embeddings?", "context": 0}


def test_plot_is_drawn_once_every_rerank_score_is_in(llm_chat):
    """While the reranker runs the old plot is cleared and nothing is drawn: drawing would hold back its first
    pass. Without reranking the plot comes with the first-stage results."""
    from matplotlib.figure import Figure

    steps = run_ask(llm_chat, "volcano eruption")
    plots = sent(steps, "plot")
    assert plots[0] is None and [type(p) for p in plots[1:]] == [Figure]
    final_table = max(i for i, s in enumerate(steps) if isinstance(s.table, pd.DataFrame))
    assert isinstance(steps[final_table + 1].plot, Figure)  # right after the reranked table
    plots = sent(run_ask(llm_chat, "volcano eruption", use_reranker=False), "plot")
    assert plots and all(isinstance(p, Figure) for p in plots)


def test_dense_table_is_sent_before_the_plot_is_drawn(llm_chat):
    # Gradio encodes all outputs of a yield before sending any: the table must not wait for the plot
    from matplotlib.figure import Figure

    steps = run_ask(llm_chat, "volcano eruption", use_reranker=False)
    first_table = next(i for i, s in enumerate(steps) if isinstance(s.table, pd.DataFrame))
    assert steps[first_table].plot is KEEP
    assert isinstance(steps[first_table + 1].plot, Figure) and steps[first_table + 1].table is KEEP
    outputs = bind(ChatView, SimpleNamespace(**{n: n for n in ChatView.names()}), llm_chat.ask)["outputs"]
    values = dict(zip(outputs, steps[first_table].values()))  # what Gradio is given for that yield
    assert isinstance(values["table"], pd.DataFrame) and is_skip(values["plot"])


@pytest.fixture
def progressive_chat(small_batch_rag, openai_server):
    """Chat over a fresh corpus database (empty score cache) whose reranker scores two candidates per batch."""
    settings = small_batch_rag.settings.replace(llm_base_url=openai_server.base_url)
    return ChatHandlers(small_batch_rag, settings, Answerer(settings))


def test_rerank_scores_fill_the_table_batch_by_batch_then_plot_and_answer_follow(progressive_chat, openai_server):
    openai_server.reply = "Bees make honey [1]."
    steps = run_ask(progressive_chat, "How do bees make honey?", top_k=7, retrieval_mode="dense")
    tables = [(i, t) for i, t in enumerate(sent(steps, "table")) if isinstance(t, pd.DataFrame)]
    scored = [sum(v != fmt.PENDING for v in t["Rerank score"]) for _, t in tables]
    assert scored[0] == 0 and scored[-1] == 7  # the dense table first, the complete one last
    partial = scored[1:-1]
    assert len(partial) >= 2 and all(0 < n < 7 for n in partial) and partial == sorted(partial)
    for _, table in tables[1:-1]:  # ranks and the LLM marks wait for every score; known ones say where from
        assert set(table["Rerank #"]) == {fmt.PENDING} and set(table["LLM"]) == {fmt.PENDING}
        assert set(table["Scored by"]) == {fmt.SCORED_BY_MODEL, fmt.PENDING}
    assert list(tables[-1][1]["Rerank #"]) == [str(i) for i in range(1, 8)]
    replies = [chat[-1]["content"] for chat in sent(steps, "chatbot")]
    progress = [r for r in replies if re.fullmatch(r"Reranking 7 candidates… reranked \d/7", r)]
    assert [int(r[-3]) for r in progress] == partial
    # the plot: once with the dense table, once when every score is in, never in between
    figure_steps = [i for i, v in enumerate(steps) if v.plot is not KEEP]
    last_partial = max(i for i, v in enumerate(steps) if isinstance(v.chatbot, list)
                       and v.chatbot[-1]["content"] in progress)
    assert len(figure_steps) == 2 and figure_steps[1] > last_partial
    first_answer = next(i for i, v in enumerate(steps) if isinstance(v.chatbot, list)
                        and "Bees make honey" in v.chatbot[-1]["content"])
    assert first_answer > last_partial and len(openai_server.requests) == 1


def test_asking_again_shows_scores_from_the_cache_at_once(progressive_chat):
    first = run_ask(progressive_chat, "How do bees make honey?", top_k=7, retrieval_mode="dense")
    again = run_ask(progressive_chat, "How do bees make honey?", top_k=7, retrieval_mode="dense")
    tables = [t for t in sent(again, "table") if isinstance(t, pd.DataFrame)]
    assert len(tables) == 2 and set(tables[-1]["Scored by"]) == {fmt.SCORED_BY_CACHE}  # dense, then complete
    assert list(tables[-1]["Rerank score"]) == list([t for t in sent(first, "table")
                                                     if isinstance(t, pd.DataFrame)][-1]["Rerank score"])
    assert "**Rerank:** reranked 7/7 (7 from the score cache)" in sent(again, "timings")[-1]
    assert "from the score cache" not in sent(first, "timings")[-1]
    assert "**Rerank:** reranked 7/7" in sent(first, "timings")[-1]


def test_reranker_off_keeps_the_dense_order(llm_chat):
    steps = run_ask(llm_chat, "honey bees", use_reranker=False, top_n=2, retrieval_mode="dense")
    table = [t for t in sent(steps, "table") if isinstance(t, pd.DataFrame)][-1]
    assert list(table["Dense #"]) == [str(i) for i in range(1, 8)]
    assert set(table["Rerank score"]) == {""}
    assert list(table["LLM"][:3]) == ["✓ [1]", "✓ [2]", ""]


@pytest.mark.parametrize("mode, own_rank", [("dense", "Dense #"), ("bm25", "BM25 #"), ("hybrid", "First #")])
def test_each_first_stage_mode_orders_the_table_by_its_own_ranking(llm_chat, mode, own_rank):
    steps = run_ask(llm_chat, "honey bees", use_reranker=False, top_n=2, retrieval_mode=mode)
    table = [t for t in sent(steps, "table") if isinstance(t, pd.DataFrame)][-1]
    assert list(table[own_rank]) == [str(i) for i in range(1, len(table) + 1)] and len(table) >= 1
    assert list(table["First #"]) == [str(i) for i in range(1, len(table) + 1)]  # no reranker: first-stage order
    assert all(float(v) >= 0 for v in table["BM25 score"]) and all(float(v) == float(v) for v in
                                                                     table["Embedding score"])
    assert set(table["Found by"]) <= {"both", "dense only", "BM25 only"}
    if mode == "bm25":  # every BM25 candidate shares a word with the question
        assert all(float(v) > 0 for v in table["BM25 score"]) and "dense only" not in set(table["Found by"])


def test_follow_up_sends_history_and_rerun_compares_settings(llm_chat, openai_server):
    first = run_ask(llm_chat, "How do bees make honey?")
    history, last = first[-1].chatbot, shown(first).last
    second = run_ask(llm_chat, "And what about volcanoes?", history=history)
    assert len(second[-1].chatbot) == 4
    sent = openai_server.requests[-1]["messages"]
    assert any("How do bees make honey?" in m["content"] for m in sent if m["role"] == "user")
    assert not any("Sources:" in m["content"] for m in sent)  # the UI footer is not sent back
    rerun = list(llm_chat.rerun(last, second[-1].chatbot, *knobs(use_reranker=False), request=request("s1")))
    chat = rerun[-1].chatbot
    assert len(chat) == 6 and chat[-2]["content"].startswith("↻ How do bees make honey?")
    assert "reranker off" in chat[-2]["content"]
    assert "#passage-3-1" in chat[-1]["content"]  # third turn: its own card anchors


def test_rerun_without_a_question_warns(llm_chat):
    with pytest.warns(UserWarning, match="Ask a question first"):
        steps = list(llm_chat.rerun(None, [], *knobs(), request=request("s1")))
    assert steps == [ChatView()] and all(is_skip(v) for v in steps[0].values())


def test_empty_question_warns_and_changes_nothing(llm_chat):
    with pytest.warns(UserWarning, match="Type a question"):
        steps = run_ask(llm_chat, "   ")
    assert steps == [ChatView()] and all(is_skip(v) for v in steps[0].values())


def test_empty_knowledge_base_says_what_to_do(tiny_rag, tiny_settings):
    chat = ChatHandlers(tiny_rag, tiny_settings, Answerer(tiny_settings))
    steps = run_ask(chat, "anything")
    assert shown(steps).chatbot[-1]["content"] == EMPTY_KB


def test_llm_errors_become_a_message_not_an_exception(llm_chat, openai_server):
    openai_server.fail = "401"
    with pytest.warns(UserWarning, match="401"):
        steps = run_ask(llm_chat, "volcanoes")
    assert "OPENAI_API_KEY" in steps[-1].chatbot[-1]["content"]


def test_retrieval_only_answer_quotes_passages_as_text(offline_chat, loaded_rag):
    loaded_rag.add_texts([PAYLOAD], "payload.md")
    steps = run_ask(offline_chat, "vector payload document", top_k=10, top_n=10)
    answer = steps[-1].chatbot[-1]["content"]
    assert "No LLM configured" in answer
    assert "<script" not in answer and "<img" not in answer and "&lt;script>" in answer
    cards = [c for c in sent(steps, "cards") if isinstance(c, str)][-1]
    assert "<script" not in cards and "&lt;script&gt;" in cards and "<img" not in cards


def test_model_output_html_is_shown_as_text(llm_chat, openai_server):
    openai_server.reply = 'Done <script>alert(1)</script> <img src=x onerror=alert(2)> `<b>code</b>` [1]'
    answer = run_ask(llm_chat, "volcanoes")[-1].chatbot[-1]["content"]
    assert "<script" not in answer and "<img" not in answer
    assert "`<b>code</b>`" in answer  # code spans are escaped by Markdown itself


def test_user_question_is_escaped_in_the_chat(llm_chat):
    chat = run_ask(llm_chat, "<img src=x onerror=alert(1)> volcano?")[-1].chatbot
    assert chat[0]["content"].startswith("&lt;img")


def test_selecting_a_row_shows_the_full_passage(llm_chat):
    steps = run_ask(llm_chat, "chess")
    candidates = shown(steps).candidates
    text = select_row(candidates, None, None, SimpleNamespace(index=[1, 7])).full_text
    assert candidates[1].text in text and candidates[1].source in text
    assert text == passage_text(candidates[1])
    assert select_row(candidates, None, None, SimpleNamespace(index=[99, 0])).full_text == ""
    assert select_row([], None, None, SimpleNamespace(index=[0, 0])).full_text == ""  # after Clear


def test_clear_resets_chat_and_panels():
    view = ChatHandlers.clear()
    assert view.chatbot == [] and view.question == "" and view.table.empty and view.plot is None
    assert view.last is None and view.full_text == "" and view.candidates == [] and view.turn is None
    assert not any(is_skip(v) for v in view.values())  # every component of the chat tab is reset


def test_a_view_maps_to_its_components_in_one_order_and_unset_fields_are_skipped():
    ui = SimpleNamespace(**{name: f"<{name}>" for name in ChatView.names()})

    def handler():
        yield ChatView(table="T", turn=None)

    wired = bind(ChatView, ui, handler)
    [values] = list(wired["fn"]())
    assert wired["outputs"] == [f"<{name}>" for name in ChatView.names()]
    mapped = dict(zip(wired["outputs"], values))
    assert mapped.pop("<table>") == "T" and mapped.pop("<turn>") is None  # None is a value: it clears
    assert all(is_skip(v) for v in mapped.values())
    kb = SimpleNamespace(**{name: f"<{name}>" for name in KnowledgeView.names()})
    listing = bind(KnowledgeView, kb, lambda: KnowledgeView(summary="S"), LISTING)
    assert listing["outputs"] == ["<documents>", "<choice>", "<summary>"]
    assert listing["fn"]() == [gr.skip(), gr.skip(), "S"]
    with pytest.raises(ValueError, match="report"):  # a field the event does not output would be lost
        KnowledgeView(report="R").values(LISTING)


# --- knowledge tab ---------------------------------------------------------------------------------------
def test_upload_reports_each_file_and_lists_it_for_its_session_only(tiny_rag, tiny_settings, tmp_path,
                                                                    corpus_path):
    tiny_rag.ingest_paths([corpus_path])
    kb = KnowledgeHandlers(tiny_rag, tiny_settings, "test corpus")
    good = upload_file(tmp_path, "notes.md", "# Notes\n\nQuarterly notes about penguins and ice.")
    bad = upload_file(tmp_path, "empty.md", "   ")
    with pytest.warns(UserWarning, match="could not be added"):
        result = kb.upload([good, bad], request("alice"))
    report, documents, dropdown, summary = result.report, result.documents, result.choice, result.summary
    assert dict(zip(report["File"], report["Status"])) == {"notes.md": "✓ added", "empty.md": "✗ failed"}
    assert report.loc[report["File"] == "empty.md", "Note"].item()  # says why
    assert result.files is None
    assert dict(zip(documents["Document"], documents["Visible to"])) == {"corpus.md": "everyone",
                                                                          "notes.md": "this session"}
    assert [c[0] for c in dropdown.constructor_args["choices"]] == ["notes.md"]
    assert "test corpus" in summary and "only in this browser session" in summary
    bob_documents = kb.refresh(request("bob")).documents
    assert list(bob_documents["Document"]) == ["corpus.md"]


def test_uploads_are_searchable_only_in_their_session(tiny_rag, tiny_settings, tmp_path, corpus_path):
    tiny_rag.ingest_paths([corpus_path])
    kb = KnowledgeHandlers(tiny_rag, tiny_settings)
    chat = ChatHandlers(tiny_rag, tiny_settings, Answerer(tiny_settings))
    kb.upload([upload_file(tmp_path, "penguins.md", "# Penguins\n\nPenguins live on the ice.")], request("alice"))
    alice = shown(run_ask(chat, "penguins", session="alice", top_k=20)).candidates
    bob = shown(run_ask(chat, "penguins", session="bob", top_k=20)).candidates
    assert "penguins.md" in {c.source for c in alice}
    assert "penguins.md" not in {c.source for c in bob}


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
    documents = kb.refresh(request("bob")).documents
    assert dict(zip(documents["Document"], documents["Visible to"])) == {"team.md": "everyone"}
    assert "shared" in kb.refresh(request("bob")).summary


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
    documents = kb.delete(doc_id, request("alice")).documents
    assert list(documents["Document"]) == ["corpus.md"]


def test_upload_without_files_warns(tiny_rag, tiny_settings):
    with pytest.warns(UserWarning, match="Choose one or more files"):
        result = KnowledgeHandlers(tiny_rag, tiny_settings).upload([], request("alice"))
    assert result == KnowledgeView() and all(is_skip(v) for v in result.values())


# --- JSON for the API ------------------------------------------------------------------------------------
def test_api_results_are_json_friendly(corpus_rag, tiny_settings, openai_server):
    from rag.chat import QueryOptions
    from rag.ui.api import ask_json, retrieve_json

    settings = tiny_settings.replace(llm_base_url=openai_server.base_url)
    options = QueryOptions.from_settings(settings, top_k=5, top_n=2)
    retrieved = retrieve_json(corpus_rag, "volcano", options)
    json.dumps(retrieved)
    assert len(retrieved["candidates"]) == 5 and retrieved["reranked"]
    assert sum(c["selected"] for c in retrieved["candidates"]) == 2
    assert {"embed_query", "search", "rerank"} <= set(retrieved["timings"])
    openai_server.reply = "Lava [1]."
    answered = ask_json(corpus_rag, Answerer(settings), "volcano", options)
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


@pytest.mark.parametrize("session", [None, ""])
def test_without_a_session_private_mode_refuses_writes_and_reads_the_shared_base(tiny_rag, tiny_settings, tmp_path,
                                                                                 corpus_path, session):
    """A direct API call that carries no session must not fall back to the shared owner for a write."""
    tiny_rag.ingest_paths([corpus_path])
    kb = KnowledgeHandlers(tiny_rag, tiny_settings)
    phish = upload_file(tmp_path, "phish.md", "# Login\n\n[Sign in here](http://evil.example) about otters.")
    with pytest.raises(gr.Error, match="no browser session") as caught:
        kb.upload([phish], request(session))
    assert "--shared-uploads" in str(caught.value)
    shared_id = tiny_rag.store.documents()[0].doc_id
    with pytest.raises(gr.Error, match="no browser session"):
        kb.delete(shared_id, request(session))
    assert [d.source for d in tiny_rag.store.documents()] == ["corpus.md"]  # nothing written, nothing deleted
    assert list(kb.refresh(request(session)).documents["Document"]) == ["corpus.md"]  # reading still works


def _long_markdown(sections: int) -> str:
    return "# Long\n\n" + "\n\n".join(f"## Part {i}\n\n" + " ".join(
        f"Walrus colony {i} was counted from the air at site {j}." for j in range(4)) for i in range(sections))


def test_a_session_that_ends_during_its_upload_leaves_nothing(tiny_rag, tiny_settings, tmp_path, corpus_path):
    import threading
    import time

    tiny_rag.ingest_paths([corpus_path])
    kb = KnowledgeHandlers(tiny_rag, tiny_settings)
    path = upload_file(tmp_path, "long.md", _long_markdown(400))
    done = threading.Event()
    thread = threading.Thread(target=lambda: (kb.upload([path], request("alice")), done.set()))
    thread.start()
    deadline = time.monotonic() + 60
    while not any(d.owner == "alice" for d in tiny_rag.store.documents("alice")) and time.monotonic() < deadline:
        time.sleep(0.02)  # the first steps are in the store: the upload is running
    assert not done.is_set(), "the upload finished before the session could end during it"
    kb.end_session(request("alice"))  # the tab closes
    thread.join(60)
    assert done.is_set()
    assert [d.source for d in tiny_rag.store.documents("alice")] == ["corpus.md"]  # nothing of it stayed
    kb.upload([upload_file(tmp_path, "late.md", "# Late\n\nA late upload about walruses.")], request("alice"))
    assert [d.source for d in tiny_rag.store.documents("alice")] == ["corpus.md"]  # nor after it ended


def test_an_upload_over_the_chunk_limit_fails_with_a_message(tiny_rag, tiny_settings, tmp_path):
    kb = KnowledgeHandlers(tiny_rag, tiny_settings.replace(max_upload_chunks=10))
    with pytest.warns(UserWarning, match="could not be added"):
        result = kb.upload([upload_file(tmp_path, "long.md", _long_markdown(30))], request("alice"))
    assert "limit per upload is 10 chunks" in result.report["Note"].item()
    assert tiny_rag.store.count() == 0


def test_all_sessions_private_uploads_together_are_capped(tiny_rag, tiny_settings, tmp_path, corpus_path):
    """Sessions are free to make (a made-up session id through the queue is one), so a per-upload limit alone
    would not bound what they store together."""
    tiny_rag.ingest_paths([corpus_path])  # shared chunks don't count
    kb = KnowledgeHandlers(tiny_rag, tiny_settings.replace(max_private_chunks=12))
    kb.upload([upload_file(tmp_path, "first.md", _long_markdown(8))], request("alice"))
    assert tiny_rag.store.count(private=True) == 8
    with pytest.warns(UserWarning, match="could not be added"):
        result = kb.upload([upload_file(tmp_path, "second.md", _long_markdown(8))], request("bob"))
    assert "more than this upload may add (4" in result.report["Note"].item()
    kb.upload([upload_file(tmp_path, "third.md", _long_markdown(4))], request("carol"))
    with pytest.warns(UserWarning, match="RAG_MAX_PRIVATE_CHUNKS"):
        kb.upload([upload_file(tmp_path, "fourth.md", "# Four\n\nOne more note.")], request("dave"))
    assert tiny_rag.store.count(private=True) == 12
    kb.end_session(request("alice"))
    assert tiny_rag.store.count(private=True) == 4  # room again once a session ends
