"""What a `python -m rag` subcommand is, and the options and settings every one of them shares."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# --- shared options -----------------------------------------------------------------------------------
def common_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--db", metavar="URI", help="Milvus URI: a local .db file (Milvus Lite) or "
                        "http(s)://host:port; default RAG_MILVUS_URI or <data_dir>/milvus.db")
    parent.add_argument("--collection", metavar="NAME", help="collection name (default RAG_COLLECTION)")
    parent.add_argument("--embedding-url", metavar="URL", help="an OpenAI-compatible embeddings server "
                        "(default RAG_EMBEDDING_URL; none = the model runs in this process)")
    parent.add_argument("--reranker-url", metavar="URL", help="a rerank server (default RAG_RERANKER_URL)")
    parent.add_argument("--reranker-api", choices=("rerank", "score", "tei"),
                        help="the reranker server's API (default RAG_RERANKER_API or rerank)")
    parent.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return parent


def settings_from(args: argparse.Namespace, **overrides):
    from rag.settings import Settings

    flags = dict(milvus_uri=args.db, collection=args.collection, embedding_url=args.embedding_url,
                 reranker_url=args.reranker_url, reranker_api=args.reranker_api)
    return Settings.from_env(**{**flags, **overrides})
