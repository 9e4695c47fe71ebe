"""Command line: `python -m rag {ingest,list,delete} ...` over the same RAG_* settings as the app.

Subcommands are registered in `COMMANDS`: name -> `Command(help, add_arguments, run)`, or a
"module:ATTRIBUTE" string naming such a Command, imported when the parser is built. Adding one from another
module is one line here (as `eval` is), or `register("name", COMMAND)` at runtime.
Every subcommand also gets --db, --collection and -v; `run(args)` returns the exit status.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from rag.commands import Command, common_options, settings_from
from rag.eval.cli import COMMAND as EVAL

log = logging.getLogger(__name__)


# --- ingest -----------------------------------------------------------------------------------------
# An app removes a session's uploads once no live session holds them (rag/ui/sessions.py): say so up front.
PRIVATE_NOTE = ("note: --owner makes these that session's private uploads, which an app removes once no live "
                "session holds them (at its next start on Milvus Lite, RAG_SESSION_TTL seconds later on a "
                "server). Leave --owner out for documents everyone sees and that stay.")


def _ingest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files, folders (recursive) or .zip archives")
    parser.add_argument("--owner", default="", help="session id owning the documents, as its private upload, "
                        "which an app removes once that session is gone (default: shared, kept)")


def _ingest(args: argparse.Namespace) -> int:
    from rag.pipeline import RAG

    if args.owner:
        print(PRIVATE_NOTE, file=sys.stderr)
    rag = RAG(settings_from(args, reranker_model="none"))  # ingestion never reranks: don't load it
    try:
        with _ProgressBar() as bar:
            report = rag.ingest_paths(args.paths, owner=args.owner, progress=bar.update)
    finally:
        rag.close()
    for f in report.files:
        print(f"{f.status:<8}{f.chunks:>6}  {f.source}" + (f"  ({f.reason})" if f.reason else ""))
    print(report.summary())
    if not report.files:
        print("no supported files found (.md .txt .pdf .docx .html .htm .zip)", file=sys.stderr)
        return 1
    return 1 if report.failed else 0


class _ProgressBar:
    """tqdm over the ingestion's (message, fraction) callback."""

    def __enter__(self):
        from tqdm import tqdm

        self.bar = tqdm(total=1000, unit="‰", bar_format="{l_bar}{bar}| {elapsed}<{remaining}", leave=False)
        return self

    def update(self, message: str, fraction: float) -> None:
        self.bar.set_description_str(message[:60], refresh=False)
        self.bar.update(max(0, round(fraction * 1000) - self.bar.n))

    def __exit__(self, *exc) -> None:
        self.bar.close()


# --- list -------------------------------------------------------------------------------------------
def _list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--owner", default=None, help="only what this session sees (shared + its uploads)")
    parser.add_argument("-l", "--long", action="store_true", help="also print document ids and owners")


def _list(args: argparse.Namespace) -> int:
    store = _open_store(args)
    if store is None:
        return 0
    try:
        documents = store.documents(args.owner)
    finally:
        store.close()
    for d in documents:
        print(f"{d.doc_id}\t{d.owner or '-'}\t{d.chunks}\t{d.source}" if args.long else f"{d.source}\t{d.chunks}")
    if not documents:
        print("no documents", file=sys.stderr)
    return 0


# --- delete -----------------------------------------------------------------------------------------
def _delete_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("document", metavar="DOC", help="file name (as `list` prints it) or document id")
    parser.add_argument("--owner", default=None, help="only among this session's documents ('' = shared)")


def _delete(args: argparse.Namespace) -> int:
    store = _open_store(args)
    if store is None:
        print(f"no document {args.document!r}: the collection is empty", file=sys.stderr)
        return 1
    try:
        matches = [d for d in store.find_documents(args.document)
                   if args.owner is None or d.owner == args.owner]
        if len(matches) != 1:
            return _ambiguous(args.document, matches)
        removed = store.delete_document(matches[0].doc_id)
    finally:
        store.close()
    print(f"deleted {matches[0].source} ({removed} chunks)")
    return 0


def _ambiguous(ref: str, matches) -> int:
    if not matches:
        print(f"no document named {ref!r}; run `python -m rag list` to see the names", file=sys.stderr)
    else:
        print(f"{ref!r} matches {len(matches)} documents; pass one of these ids:", file=sys.stderr)
        for d in matches:
            print(f"  {d.doc_id}  owner={d.owner or '-'}  {d.source}", file=sys.stderr)
    return 1


def _open_store(args: argparse.Namespace):
    from rag.store import Store

    settings = settings_from(args)
    store = Store.open_existing(str(settings.milvus_uri), settings.collection, token=settings.milvus_token,
                                call_timeout=settings.milvus_timeout)
    if store is None:
        print(f"collection {settings.collection!r} does not exist at {settings.milvus_uri}", file=sys.stderr)
    return store


# --- registry and entry point -------------------------------------------------------------------------
COMMANDS: dict[str, Command | str] = {
    "ingest": Command("add files, folders and zips to the knowledge base", _ingest_arguments, _ingest),
    "list": Command("list documents with their chunk counts", _list_arguments, _list),
    "delete": Command("delete one document (all its chunks)", _delete_arguments, _delete),
    "eval": EVAL,
}


def register(name: str, command: Command | str) -> None:
    COMMANDS[name] = command


def _resolve(command: Command | str) -> Command:
    if isinstance(command, Command):
        return command
    module, _, attribute = command.partition(":")
    return getattr(importlib.import_module(module), attribute or "COMMAND")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rag", description="Manage the RAG knowledge base.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parent = common_options()
    for name, entry in COMMANDS.items():
        command = _resolve(entry)
        child = sub.add_parser(name, help=command.help, description=command.help, parents=[parent])
        command.add_arguments(child)
        child.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except Exception as exc:  # a clear one-line error instead of a traceback (use -v for details)
        from rag.errors import user_message

        if args.verbose:
            log.exception("%s failed", args.command)
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2
