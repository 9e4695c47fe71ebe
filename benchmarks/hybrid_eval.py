"""Hybrid fusions against dense and BM25 on judged query sets, and the exact-identifier contract, through the
real pipeline (`RAG.retrieve`, no reranker) over an ingested collection.

    RAG_EMBEDDING_MODEL=<all-MiniLM-L6-v2 dir> RAG_RERANKER_MODEL=none RAG_DATA_DIR=D \\
        python benchmarks/hybrid_eval.py assets/eval/milvus_faq_paraphrases.jsonl ... [--identifiers 60]

For each set: Recall@3 / MRR@10 / nDCG@10 of dense, BM25 and hybrid with each fusion (rag.settings.FUSIONS).
Identifier contract (issue 15): a query that is an exact identifier held by one chunk only must put that chunk
first in hybrid mode with bm25_rank == 1. Two query sets, both drawn from the collection itself:
- words: `--identifiers` words (4+ characters, seed 0) that BM25 finds in exactly one chunk;
- code-like: every identifier-like token (rag.store.fusion.identifiers: digits, _, camelCase, dotted.keys,
  CAPITALS) that occurs verbatim in exactly one chunk and that BM25 ranks first (else no fusion can pass).
"""
from __future__ import annotations

import argparse
import logging
import random
import re
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("hybrid_eval")


def identifier_queries(rag, count: int) -> dict[str, list[tuple[str, int]]]:
    from rag.store.fusion import exact_matches, identifiers

    rows = rag.store._query("id >= 0", ["id", "text"])
    texts = {int(r["id"]): r["text"] for r in rows}
    words = sorted({w for t in texts.values() for w in re.findall(r"[A-Za-z][A-Za-z0-9]{3,}", t)})
    random.Random(0).shuffle(words)
    single = []
    for word in words:
        hits = rag.store.bm25_search(word, 2)
        if len(hits) == 1:
            single.append((word, hits[0].chunk.id))
        if len(single) == count:
            break
    codes = []
    for token in sorted({tok for t in texts.values() for tok in identifiers(t)}):
        held = exact_matches(token, texts)
        top = rag.store.bm25_search(token, 1)
        if len(held) == 1 and top and top[0].chunk.id in held:
            codes.append((token, top[0].chunk.id))
    return {"words": single, "code-like": codes}


def main(argv=None) -> None:
    from rag import RAG, Settings
    from rag.chat import QueryOptions
    from rag.eval.judgments import load_judgments
    from rag.eval.runner import evaluate
    from rag.settings import FUSIONS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="*", type=Path)
    parser.add_argument("--identifiers", type=int, default=60, help="words held by one chunk to draw")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rag = RAG(Settings.from_env())
    base = rag.settings
    runs = [("dense", "dense", base.fusion), ("bm25", "bm25", base.fusion)]
    runs += [(f"hybrid {f}", "hybrid", f) for f in FUSIONS]
    print(f"collection: {rag.store.count()} chunks; embedding model {base.embedding_model}")
    for path in args.sets:
        judgments = load_judgments(path)
        print(f"\n{path.name} ({len(judgments)} queries)\n{'first stage':18s} Recall@3  MRR@10  nDCG@10")
        for name, mode, fusion in runs:
            rag.settings = base.replace(fusion=fusion)
            options = replace(QueryOptions.from_settings(rag.settings), retrieval_mode=mode, use_reranker=False,
                              top_k=10, top_n=3)
            m = evaluate(rag, judgments, options).dense
            print(f"{name:18s} {m['Recall@3']:8.3f} {m['MRR@10']:7.3f} {m['nDCG@10']:8.3f}")
    if args.identifiers:
        for kind, queries in identifier_queries(rag, args.identifiers).items():
            print(f"\nidentifier contract, {kind} ({len(queries)} queries): first with bm25_rank 1")
            for fusion in FUSIONS:
                rag.settings = base.replace(fusion=fusion)
                ok, missed = 0, []
                for query, chunk in queries:
                    top = rag.retrieve(query, top_k=10, mode="hybrid", use_reranker=False).candidates[0]
                    if top.chunk_id == chunk and top.bm25_rank == 1:
                        ok += 1
                    else:
                        missed.append(query)
                print(f"  hybrid {fusion:9s} {ok}/{len(queries)}" + (f"  missed: {', '.join(missed[:8])}"
                                                                     if missed else ""))
    rag.close()


if __name__ == "__main__":
    main()
