"""The web app: `python app.py [flags]` — locally, in Docker, or unchanged on Hugging Face Spaces.

Flags override the RAG_* environment (see rag/settings.py); the models and the collection are loaded once
and shared by every browser session.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
from typing import Mapping, Sequence

from rag import RAG, Settings
from rag.errors import RAGError
from rag.settings import env_int

log = logging.getLogger("app")

DEFAULT_PORT = 7860
MAX_UPLOAD = "100mb"  # Gradio's request limit; the loaders apply their own per-file limits after


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="RAG chat with a retrieval inspection panel (Qwen3 + Milvus).")
    p.add_argument("--db", "--milvus-uri", dest="milvus_uri", metavar="URI",
                   help="Milvus Lite file (default <data_dir>/milvus.db) or http(s)://host:port")
    p.add_argument("--collection", help="collection name (default rag_chunks)")
    p.add_argument("--embedding-model", help="sentence-transformers model id or folder")
    p.add_argument("--reranker-model", help="Qwen3 reranker id or folder; 'none' turns reranking off")
    p.add_argument("--embedding-dim", type=int, help="Matryoshka size (must match the collection)")
    p.add_argument("--embedding-url", metavar="URL", help="an OpenAI-compatible embeddings server serving "
                   "--embedding-model (vLLM, TEI, Infinity, Ollama), e.g. http://gpu:8000/v1")
    p.add_argument("--reranker-url", metavar="URL", help="a rerank server serving --reranker-model, "
                   "e.g. http://gpu:8001/v1")
    p.add_argument("--reranker-api", choices=("rerank", "score", "tei"),
                   help="the reranker server's API: rerank (Cohere/Jina shape, default), score (vLLM), tei")
    p.add_argument("--top-k", type=int, help="candidates retrieved per question")
    p.add_argument("--top-n", type=int, help="reranked passages sent to the LLM")
    p.add_argument("--retrieval-mode", choices=("dense", "bm25", "hybrid"),
                   help="first stage: embeddings, BM25 over the words, or both fused (default dense)")
    p.add_argument("--fusion", choices=("rrf", "weighted"), help="how hybrid fuses the two lists (default rrf)")
    p.add_argument("--bm25-analyzer", choices=("standard", "jieba"),
                   help="how BM25 splits text into words: standard, or jieba for Chinese (migrates the collection)")
    p.add_argument("--llm-model", help="chat model name at the endpoint")
    p.add_argument("--llm-base-url", help="any OpenAI-compatible endpoint, e.g. http://localhost:11434/v1")
    p.add_argument("--device", help="auto | cpu | cuda | mps")
    p.add_argument("--dtype", help="auto | fp32 | bf16 | fp16")
    p.add_argument("--shared-uploads", action="store_true", default=None,
                   help="uploads are visible to every session and persist (default: private per session)")
    p.add_argument("--no-default-kb", action="store_true", help="don't load the default knowledge base")
    p.add_argument("--judgments-file", metavar="PATH", help="also save passage grades from the app to this "
                   "JSONL file (the format `python -m rag eval` reads)")
    p.add_argument("--mcp", action="store_true", help="also serve the API as MCP tools (needs gradio[mcp])")
    p.add_argument("--host", help="interface to bind (GRADIO_SERVER_NAME; 0.0.0.0 on Spaces, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (GRADIO_SERVER_PORT or PORT; default 7860)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def settings_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """RAG_* environment first, flags on top (a flag left out keeps the environment's value)."""
    return Settings.from_env(env, milvus_uri=args.milvus_uri, collection=args.collection,
                             embedding_model=args.embedding_model, reranker_model=args.reranker_model,
                             embedding_dim=args.embedding_dim, top_k=args.top_k, top_n=args.top_n,
                             embedding_url=args.embedding_url, reranker_url=args.reranker_url,
                             reranker_api=args.reranker_api,
                             llm_model=args.llm_model, llm_base_url=args.llm_base_url, device=args.device,
                             dtype=args.dtype, shared_uploads=args.shared_uploads,
                             retrieval_mode=args.retrieval_mode, fusion=args.fusion,
                             bm25_analyzer=args.bm25_analyzer)


def server_address(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """Flags, then GRADIO_SERVER_NAME/PORT (and PORT), then 0.0.0.0 on Spaces (SPACE_ID set) or localhost."""
    env = os.environ if env is None else env
    host = args.host or env.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if env.get("SPACE_ID") else "127.0.0.1")
    port = args.port or env_int("GRADIO_SERVER_PORT", 0, env) or env_int("PORT", DEFAULT_PORT, env)
    return host, port


def load_knowledge_base(rag: RAG) -> str:
    """Load the default knowledge base into an empty collection; the app still starts if that fails."""
    from rag.knowledge_base import ensure_default_knowledge_base

    def progress(message: str, fraction: float) -> None:
        log.info("knowledge base: %s (%.0f%%)", message, 100 * fraction)

    try:
        info = ensure_default_knowledge_base(rag, progress=progress)
    except Exception:  # noqa: BLE001 - uploads still work without it
        log.exception("could not load the default knowledge base; starting without it")
        return ""
    log.info(info.message)
    return f"{info.name} ({info.origin})"


def create_app(settings: Settings, default_kb: bool = True, judgments_file: str | None = None):
    """Load the models and the collection once, then build the page over them."""
    from rag.ui import build_app
    from rag.ui.sessions import remove_orphans

    rag = RAG(settings)
    remove_orphans(rag)  # private uploads of sessions that ended with an earlier process
    knowledge_base = load_knowledge_base(rag) if default_kb else ""
    return build_app(rag, settings, knowledge_base=knowledge_base, judgments_file=judgments_file), rag


def check_mcp() -> None:
    try:
        import mcp  # noqa: F401
    except ImportError:
        raise SystemExit("--mcp needs Gradio's MCP extra: pip install 'gradio[mcp]'") from None


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.mcp:
        check_mcp()
    try:  # settings are checked, and the data folder or server reached, before the models load
        settings = settings_from_args(args)
        host, port = server_address(args)
        demo, _ = create_app(settings, default_kb=not args.no_default_kb, judgments_file=args.judgments_file)
    except RAGError as exc:  # the message says what to change: one line, no traceback
        raise SystemExit(f"error: {exc}") from None
    from rag.ui import launch_options
    from rag.ui.serving import queue_options

    # SIGTERM (docker stop, Spaces, systemd) stops the server like Ctrl-C: Gradio shuts down and deletes its
    # cached uploads, and the process's atexit clean-up (rag/ui/cleanup.py) runs; by default it just dies.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    demo.queue(**queue_options(settings)).launch(server_name=host, server_port=port,
                                                 mcp_server=True if args.mcp else None, max_file_size=MAX_UPLOAD,
                                                 **launch_options())


if __name__ == "__main__":
    main()
