"""`python -m rag eval QUERIES.jsonl`: Recall / MRR / nDCG of dense vs reranked over the collection."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli import Command, settings_from


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queries", type=Path, help='JSONL: {"query": "...", "relevant": [chunk id | document '
                        'name | text snippet | {"text": ..., "grade": 2}, ...]} per line')
    parser.add_argument("--top-k", type=int, default=None, help="dense candidates per query (default 10)")
    parser.add_argument("--top-n", type=int, default=None, help="passages that would go to the LLM (default 3)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the full report as JSON")
    parser.add_argument("--query-instruction", help="embedding query instruction (default from settings)")
    parser.add_argument("--rerank-instruction", help="reranker instruction (default from settings)")
    parser.add_argument("--vs-query-instruction", help="compare against this query instruction")
    parser.add_argument("--vs-rerank-instruction", help="compare against this reranker instruction")


def _run(args: argparse.Namespace) -> int:
    from .evaluation import JudgmentError, evaluate, format_comparison, format_table, load_judgments
    from .pipeline import RAG

    try:
        judgments = load_judgments(args.queries)
    except (OSError, JudgmentError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rag = RAG(settings_from(args))
    try:
        if rag.store.count() == 0:
            print("error: the collection is empty; ingest documents first (python -m rag ingest PATH)",
                  file=sys.stderr)
            return 2
        report = evaluate(rag, judgments, top_k=args.top_k, top_n=args.top_n,
                          query_instruction=args.query_instruction, rerank_instruction=args.rerank_instruction)
        print(format_table(report))
        result = {"report": report.to_dict()}
        if args.vs_query_instruction or args.vs_rerank_instruction:
            other = evaluate(rag, judgments, top_k=args.top_k, top_n=args.top_n,
                             query_instruction=args.vs_query_instruction or args.query_instruction,
                             rerank_instruction=args.vs_rerank_instruction or args.rerank_instruction)
            print("\nInstruction experiment (A = first instructions, B = --vs-*):")
            print(format_comparison(report, other))
            result["vs"] = other.to_dict()
    finally:
        rag.close()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


COMMAND = Command("evaluate retrieval (dense vs reranked) on a judged query file", _arguments, _run)
