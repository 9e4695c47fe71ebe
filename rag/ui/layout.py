"""`build_app`: the page — chat beside the retrieval inspection panel, a Knowledge tab, named API endpoints."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import gradio as gr

import rag.ui.formatting as fmt
import rag.ui.plots as plots
from rag.answer import Answerer
from rag.pipeline import RAG
from rag.settings import RETRIEVAL_MODES, Settings
from rag.ui.api import register_api
from rag.ui.assets import CITATION_SCRIPT
from rag.ui.cleanup import UPLOAD_CACHE
from rag.ui.evaluate import (
    SELECTION,
    EvaluateHandlers,
    PassageView,
    evaluate_tab,
    passage_controls,
    select_row,
)
from rag.ui.evaluate import wire as wire_evaluate
from rag.ui.handlers import (
    DOCUMENT_HEADERS,
    LISTING,
    REPORT_HEADERS,
    ChatHandlers,
    ChatView,
    KnowledgeHandlers,
    KnowledgeView,
)
from rag.ui.serving import chat_limits, ingest_limits
from rag.ui.view import bind

log = logging.getLogger(__name__)

EXAMPLE_QUESTIONS = [  # the Milvus FAQ (downloaded) first, then the bundled fallback documents
    "How is data stored in Milvus?",
    "What is the maximum vector dimension Milvus supports?",
    "Which index types does Milvus support?",
    "What are the ways to run Milvus?",
    "Why rerank the search results?",
    "What are Matryoshka embeddings?",
]
UPLOAD_TYPES_FALLBACK = [".md", ".markdown", ".txt", ".pdf", ".docx", ".html", ".htm", ".zip"]


def upload_types() -> list[str]:
    try:
        from rag.ingest.loaders import SUPPORTED_SUFFIXES
    except ImportError:  # loaders not installed in this tree: the plain-text formats always work
        return UPLOAD_TYPES_FALLBACK
    return sorted(SUPPORTED_SUFFIXES)


def build_app(rag: RAG, settings: Settings | None = None, answerer: Answerer | None = None, *,
              knowledge_base: str = "", examples: list[str] | None = None,
              judgments_file: str | None = None) -> gr.Blocks:
    """The Gradio app over one loaded `RAG` (models and collection stay loaded across sessions).
    `judgments_file`: a JSONL file the passage grades also go to (the format `python -m rag eval` reads)."""
    settings = settings or rag.settings
    answerer = answerer or Answerer(settings)
    chat = ChatHandlers(rag, settings, answerer)
    knowledge = KnowledgeHandlers(rag, settings, knowledge_base)
    evaluation = EvaluateHandlers(rag, settings, answerer, judgments_file)
    plots.warm_up()
    with gr.Blocks(title="RAG chat · Qwen3 + Milvus", delete_cache=UPLOAD_CACHE) as demo:
        gr.Markdown("## RAG chat — see what the retriever found, and how the reranker reordered it")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                ui = _chat_tab(rag, settings, answerer, examples or EXAMPLE_QUESTIONS)
            with gr.Tab("Knowledge", id="knowledge") as knowledge_tab:
                kb = _knowledge_tab()
            with gr.Tab("Evaluate", id="evaluate") as eval_tab:
                ev = evaluate_tab()
        register_api(rag, answerer, settings)  # first: the public names /retrieve and /ask are taken here
        _wire_chat(ui, chat, chat_limits(settings))
        _wire_knowledge(demo, kb, knowledge, knowledge_tab, ingest_limits(settings))
        wire_evaluate(ui, ev, evaluation, eval_tab)
        demo.unload(evaluation.end_session)
        demo.load(None, js=CITATION_SCRIPT)
    return demo


def _chat_tab(rag: RAG, settings: Settings, answerer: Answerer, examples: list[str]) -> SimpleNamespace:
    ui = SimpleNamespace()
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=360):
            ui.chatbot = gr.Chatbot(label="Chat", height=560, elem_id="rag-chat", sanitize_html=True,
                                    allow_tags=False, render_markdown=True, feedback_options=None,
                                    buttons=["copy"], placeholder="Ask a question about the documents.")
            with gr.Row():
                ui.question = gr.Textbox(placeholder="Ask about the documents…", show_label=False, scale=5,
                                         elem_id="rag-question", autofocus=True, max_lines=4)
                ui.ask = gr.Button("Ask", variant="primary", scale=1, min_width=80, elem_id="rag-ask")
            with gr.Row():
                ui.rerun = gr.Button("↻ Re-run last question", size="sm", elem_id="rag-rerun")
                ui.clear = gr.Button("Clear", size="sm", elem_id="rag-clear")
            gr.Examples(examples=[[q] for q in examples], inputs=[ui.question], label="Example questions")
            _settings_panel(ui, rag, settings, answerer)
        with gr.Column(scale=6, min_width=480):
            _inspection_panel(ui)
    ui.candidates = gr.State([])  # the table's rows (rag.types.Candidate), for a selected row
    ui.last = gr.State(None)
    return ui


def _settings_panel(ui: SimpleNamespace, rag: RAG, settings: Settings, answerer: Answerer) -> None:
    with gr.Accordion("Settings (apply to the next question — or re-run the last one)", open=False):
        with gr.Row():
            ui.top_k = gr.Slider(1, 50, value=settings.top_k, step=1, label="top_k: candidates retrieved")
            ui.top_n = gr.Slider(1, 20, value=settings.top_n, step=1, label="top_n: passages sent to the LLM")
        ui.retrieval_mode = gr.Radio(list(RETRIEVAL_MODES), value=settings.retrieval_mode,
                                     label="First stage", elem_id="rag-retrieval-mode",
                                     info="dense: embeddings · bm25: Milvus' BM25 over the words · hybrid: both "
                                          f"lists fused ({_fusion_text(settings)})")
        ui.use_reranker = gr.Checkbox(value=rag.reranker is not None, interactive=rag.reranker is not None,
                                      label="Rerank candidates",
                                      info=None if rag.reranker is not None else
                                      "No reranker loaded (started with --reranker-model none).")
        ui.query_instruction = gr.Textbox(settings.query_instruction, lines=2,
                                          label="Embedding query instruction (the task in 'Instruct: …')")
        ui.rerank_instruction = gr.Textbox(settings.rerank_instruction, lines=2,
                                           label="Reranker instruction (the <Instruct> line)")
        gr.Textbox(f"{rag.store.dim} (collection '{settings.collection}')", interactive=False,
                   label="Embedding dimension (Matryoshka)",
                   info="Fixed by the collection: its vectors were stored at this size, and a query must "
                        "match it. To try another size, restart with --embedding-dim N and a new "
                        "--collection, then re-ingest.")
        with gr.Row():
            ui.llm_model = gr.Textbox(settings.llm_model, label="LLM model")
            ui.temperature = gr.Slider(0, 2, value=settings.temperature, step=0.1, label="Temperature")
        gr.Textbox(_models_text(rag), interactive=False, label="Where the models run", lines=2,
                   info="Set at start-up: in this process (device, precision) or on a model server "
                        "(--embedding-url, --reranker-url). The timings above say it per question.")
        gr.Textbox(_endpoint_text(settings, answerer), interactive=False, label="LLM endpoint",
                   info="Set at start-up (--llm-base-url / OPENAI_BASE_URL). Not editable here, so the "
                        "server's API key is never sent to an address typed into the page.")


def _fusion_text(settings: Settings) -> str:
    if settings.fusion == "rrf":
        return f"RRF, k={settings.rrf_k}"
    return f"weighted, dense {settings.dense_weight:g} / BM25 {1 - settings.dense_weight:g}"


def _models_text(rag: RAG) -> str:
    lines = [f"embedding: {rag.embedder.model_name} — {rag.embedder.backend.describe()}"]
    if rag.reranker is not None:
        lines.append(f"reranker: {rag.settings.reranker_model} — {rag.reranker.backend.describe()}")
    return "\n".join(lines)


def _endpoint_text(settings: Settings, answerer: Answerer) -> str:
    if not answerer.configured:
        return "none — retrieval-only answers (set OPENAI_API_KEY or --llm-base-url)"
    return settings.llm_base_url or "https://api.openai.com/v1"


def _inspection_panel(ui: SimpleNamespace) -> None:
    gr.Markdown("### Retrieval inspection")
    ui.timings = gr.Markdown("", elem_id="rag-timings")
    ui.table = gr.Dataframe(value=fmt.candidates_table(None, 0), headers=fmt.TABLE_HEADERS, interactive=False,
                            wrap=True, max_height=420, elem_id="rag-candidates",
                            label="Candidates (select a row for its full text) — ✓ [n] sent to the LLM, "
                                  "↓ dropped by the reranker; Found by: which first-stage lists held it",
                            column_widths=["7%", "5%", "5%", "5%", "5%", "5%", "6%", "7%", "6%", "8%", "12%", "29%"])
    ui.plot = gr.Plot(label="BM25 and embedding ranks → fused rank → reranker rank", show_label=False, elem_id="rag-plot", format="png")
    ui.full_text = gr.Textbox(label="Full passage text", lines=6, max_lines=16, interactive=False,
                              elem_id="rag-full-text", placeholder="Select a row of the table.")
    passage_controls(ui)  # grade the selected row; download the question's trace
    with gr.Accordion("Passages sent to the LLM (the answer cites them as [n])", open=True):
        ui.cards = gr.HTML(fmt.passage_cards(None, 0), elem_id="rag-cards")


def _wire_chat(ui: SimpleNamespace, chat: ChatHandlers, limits: dict) -> None:
    """Ask, re-run and Clear output every `ChatView` field's component (`bind`: one order, the view's); a
    selected table row shows its full text and its grade controls (one handler, `select_row`)."""
    knobs = [ui.top_k, ui.top_n, ui.use_reranker, ui.query_instruction, ui.rerank_instruction, ui.llm_model,
             ui.temperature, ui.retrieval_mode]  # the mode last: the handlers take it after the request
    streamed = dict(api_visibility="private", show_progress="hidden", **limits)
    ask = dict(**bind(ChatView, ui, chat.ask), inputs=[ui.question, ui.chatbot, *knobs], **streamed)
    ui.question.submit(**ask, api_name="chat_submit")
    ui.ask.click(**ask, api_name="chat_ask")
    ui.rerun.click(**bind(ChatView, ui, chat.rerun), inputs=[ui.last, ui.chatbot, *knobs], **streamed)
    clear = dict(**bind(ChatView, ui, chat.clear), inputs=None, api_visibility="private")
    ui.clear.click(**clear)
    ui.chatbot.clear(**clear)
    ui.table.select(**bind(PassageView, ui, select_row, SELECTION), inputs=[ui.candidates, ui.turn, ui.judged],
                    api_visibility="private")


def _knowledge_tab() -> SimpleNamespace:
    kb = SimpleNamespace()
    kb.summary = gr.Markdown(elem_id="rag-kb-summary")
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            kb.files = gr.File(file_count="multiple", file_types=upload_types(), label="Upload documents",
                               elem_id="rag-upload")
            kb.add = gr.Button("Add to knowledge base", variant="primary", elem_id="rag-add")
            kb.report = gr.Dataframe(headers=REPORT_HEADERS, interactive=False, wrap=True, label="Upload report",
                                     elem_id="rag-report")
        with gr.Column(scale=5):
            kb.documents = gr.Dataframe(headers=DOCUMENT_HEADERS, interactive=False, wrap=True, max_height=480,
                                        label="Documents you can search", elem_id="rag-documents")
            with gr.Row():
                kb.choice = gr.Dropdown(choices=[], label="Delete one of your uploads", scale=3,
                                        elem_id="rag-delete-choice")
                kb.delete = gr.Button("Delete", variant="stop", scale=1, elem_id="rag-delete")
    with gr.Row(visible=False):  # the named /upload endpoint (gradio_client); not part of the page
        kb.api_files = gr.File(file_count="multiple")  # no type filter: the report says per file why not
        kb.api_add = gr.Button()
        kb.api_report = gr.JSON()
    return kb


def _wire_knowledge(demo: gr.Blocks, kb: SimpleNamespace, knowledge: KnowledgeHandlers, tab,
                    limits: dict) -> None:
    # first: the public name /upload is taken here (the private handler below is also called "upload")
    kb.api_add.click(knowledge.api_upload, [kb.api_files], [kb.api_report], api_name="upload", **limits)
    kb.add.click(**bind(KnowledgeView, kb, knowledge.upload), inputs=[kb.files], api_visibility="private",
                 **limits)
    # the listing events output only the LISTING components: the upload report and file input stay free
    # of their progress overlay
    kb.delete.click(**bind(KnowledgeView, kb, knowledge.delete, LISTING), inputs=[kb.choice],
                    api_visibility="private")
    refresh = dict(**bind(KnowledgeView, kb, knowledge.refresh, LISTING), inputs=None, api_visibility="private")
    tab.select(**refresh)
    demo.load(**refresh)
    demo.unload(knowledge.end_session)
