"""`python -m rag eval QUERIES.jsonl`: Recall / MRR / nDCG of dense vs reranked over the collection.

Errors (an unreadable judgments file, an empty collection) are `InputError`s: `rag.cli.main` prints their
message and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rag.commands import Command, settings_from
from rag.errors import InputError
from rag.eval.report import VERDICT_METRIC, EvalReport
from rag.eval.tables import metric_table

EXPERIMENT_TITLE = "Instruction experiment (A = first instructions, B = --vs-*):"


class ReportWriteError(InputError):
    """The --json report can't be written where asked."""


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queries", type=Path, help='JSONL: {"query": "...", "relevant": [chunk id | document '
                        'name | text snippet | {"text": ..., "grade": 2}, ...]} per line')
    parser.add_argument("--top-k", type=int, default=None, help="candidates per query (default 10)")
    parser.add_argument("--mode", choices=("dense", "bm25", "hybrid"), default=None,
                        help="first stage to rerank and compare instructions on (default RAG_RETRIEVAL_MODE)")
    parser.add_argument("--no-modes", action="store_true",
                        help="skip the dense / BM25 / hybrid comparison (one mode only: faster)")
    parser.add_argument("--top-n", type=int, default=None, help="passages that would go to the LLM (default 3)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the full report as JSON")
    parser.add_argument("--query-instruction", help="embedding query instruction (default from settings)")
    parser.add_argument("--rerank-instruction", help="reranker instruction (default from settings)")
    parser.add_argument("--vs-query-instruction", help="compare against this query instruction")
    parser.add_argument("--vs-rerank-instruction", help="compare against this reranker instruction")


def _run(args: argparse.Namespace) -> int:
    from rag.eval.judgments import load_judgments
    from rag.eval.modes import compare_modes
    from rag.eval.runner import evaluate, instruction_variant, options_for
    from rag.eval.tables import comparison_table, mode_table
    from rag.pipeline import RAG

    judgments = load_judgments(args.queries)  # before loading models: a bad file fails in a moment
    rag = RAG(settings_from(args))
    try:
        options = options_for(rag.settings, top_k=args.top_k, top_n=args.top_n,
                              query_instruction=args.query_instruction, rerank_instruction=args.rerank_instruction,
                              retrieval_mode=args.mode)
        result = {}
        if args.no_modes:
            report = evaluate(rag, judgments, options)
        else:
            modes = compare_modes(rag, judgments, options)
            report = modes.reports[options.retrieval_mode]
            result["modes"] = modes.to_dict()
        print(report_text(report))
        if not args.no_modes:
            print(f"\n{MODES_TITLE}\n{mode_table(modes).text()}")
        result["report"] = report.to_dict()
        if args.vs_query_instruction or args.vs_rerank_instruction:
            variant = instruction_variant(options, args.vs_query_instruction, args.vs_rerank_instruction)
            other = evaluate(rag, judgments, variant)
            print(f"\n{EXPERIMENT_TITLE}\n{comparison_table(report, other).text()}")
            result["vs"] = other.to_dict()
    finally:
        rag.close()
    if args.json:
        _write_json(args.json, result)
        print(f"\nwrote {args.json}")
    return 0


def report_text(report: EvalReport) -> str:
    """The metrics table, then what was excluded and how many queries the reranker helped or hurt."""
    lines = [metric_table(report).text()]
    if report.excluded:
        lines.append(f"\n{len(report.excluded)} queries excluded: no relevant item (grade > 0) judged")
    lines.append(f"\n{len(report.queries)} queries; reranker helped {len(report.helped)}, "
                 f"hurt {len(report.hurt)} (by {VERDICT_METRIC})")
    return "\n".join(lines)


def _write_json(path: Path, result: dict) -> None:
    try:
        path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    except OSError as exc:
        raise ReportWriteError(f"Can't write the report to {path} ({exc.strerror or exc}): pass --json a "
                               "path in a folder you can write to.") from exc


MODES_TITLE = "First stage: dense vs BM25 vs hybrid (no reranker), and the reranker over the chosen mode"

COMMAND = Command("evaluate retrieval (dense vs reranked) on a judged query file", _arguments, _run)
