"""Retrieval evaluation: dense vs reranked rankings scored against judged queries, one implementation for the
CLI (`python -m rag eval`), the app's Evaluate tab and the grades users give passages in the Chat tab.

- `judgments`: the judgments format (JSONL): read, parse, write one line; which candidate an item matches.
- `judgments_file`: the app's shared judgments file, merged and rewritten under a lock on every grade.
- `report`: `EvalReport` and the one rule for "the reranker helped / hurt this query".
- `metrics`: scoring judged retrievals with trec_eval (through `ir_measures`).
- `runner`: the one retrieve-then-score loop (judgments + a RAG + `QueryOptions` -> `EvalReport`).
- `tables`: the rows and headers of every result table; the CLI's text and the UI's dataframes.
- `session`: a browser session's grades and the record of a finished question.
- `trace`: one question's full trace as JSON, and reading it back.
- `cli`: the `eval` subcommand.

Submodules are imported where needed: this package imports nothing, so `rag.cli` stays quick to start.
"""
