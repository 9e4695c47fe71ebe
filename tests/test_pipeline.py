"""RAG facade: two stages, ranks, selection, persistence."""
import pytest

from rag import RAG, Settings
from rag.errors import SettingsError


def test_retrieve_ranks_both_stages_and_selects_top_n(tiny_rag, corpus_path):
    report = tiny_rag.ingest_paths([corpus_path])
    assert report.ok and report.chunks == 7
    r = tiny_rag.retrieve("How do bees make honey?", top_k=5, top_n=2, mode="dense")
    assert r.reranked and len(r.candidates) == 5
    assert [c.rerank_rank for c in r.candidates] == [1, 2, 3, 4, 5]
    assert sorted(c.dense_rank for c in r.candidates) == [1, 2, 3, 4, 5]
    scores = [c.rerank_score for c in r.candidates]
    assert scores == sorted(scores, reverse=True)
    assert [c.selected for c in r.candidates] == [True, True, False, False, False]
    assert set(r.timings) == {"embed_query", "search", "bm25", "scores", "rerank"}
    dense = sorted(r.candidates, key=lambda c: c.dense_rank)
    assert [c.dense_score for c in dense] == sorted((c.dense_score for c in dense), reverse=True)


def test_reranker_off_keeps_dense_order(tiny_settings, tiny_embedder, corpus_path):
    rag = RAG(tiny_settings.replace(reranker_model=None), embedder=tiny_embedder)
    rag.ingest_paths([corpus_path])
    r = rag.retrieve("bread", top_k=3, top_n=1, mode="dense")
    assert not r.reranked and rag.reranker is None
    assert [c.dense_rank for c in r.candidates] == [1, 2, 3]
    assert [c.rerank_score for c in r.candidates] == [None, None, None]
    assert [c.selected for c in r.candidates] == [True, False, False]
    rag.close()


def test_reingesting_the_same_file_is_a_noop(tiny_rag, corpus_path):
    tiny_rag.ingest_paths([corpus_path])
    count = tiny_rag.store.count()
    again = tiny_rag.ingest_paths([corpus_path])
    assert again.files[0].status == "skipped" and tiny_rag.store.count() == count


def test_add_texts_then_reopen_finds_them(tiny_settings, tiny_embedder, tiny_reranker):
    rag = RAG(tiny_settings, embedder=tiny_embedder, reranker=tiny_reranker)
    report = rag.add_texts(["# Kites\n\nKites fly on windy beaches.", "# Boats\n\nBoats float."], source="notes")
    rag.close()
    reopened = RAG(tiny_settings, embedder=tiny_embedder, reranker=tiny_reranker)
    assert report.chunks == 2 and reopened.store.count() == 2
    assert {c.source for c in reopened.retrieve("kites").candidates} == {"notes"}
    reopened.close()


def test_settings_from_env():
    s = Settings.from_env({"RAG_TOP_K": "7", "RAG_RERANKER_MODEL": "none", "RAG_EMBEDDING_DIM": "256",
                           "OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "http://h/v1",
                           "RAG_MILVUS_URI": "https://x.zillizcloud.com"}, top_n=2)
    assert (s.top_k, s.top_n, s.reranker_model, s.embedding_dim) == (7, 2, None, 256)
    assert (s.openai_api_key, s.llm_base_url) == ("sk-x", "http://h/v1")
    from rag.store import is_remote

    assert is_remote(s.milvus_uri) and not is_remote(Settings().milvus_uri)


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="Matryoshka"):
        Settings(embedding_dim=8)


def test_missing_model_gives_an_actionable_error(tmp_path):
    from rag.errors import ModelLoadError
    from rag.models.reranker import Qwen3Reranker

    with pytest.raises(ModelLoadError, match="RAG_RERANKER_MODEL"):
        Qwen3Reranker(str(tmp_path / "no-such-model"), device="cpu")
    with pytest.raises(ModelLoadError, match="RAG_EMBEDDING_MODEL"):
        RAG(Settings(embedding_model=str(tmp_path / "nothing-here"), reranker_model=None, data_dir=tmp_path))


def test_rerank_steps_fill_scores_batch_by_batch_then_end_as_rerank_does(small_batch_rag):
    first = small_batch_rag.first_stage("How do bees make honey?", top_k=7, mode="dense")
    steps = list(small_batch_rag.rerank_steps(first, top_n=2))
    partial, final = steps[:-1], steps[-1]
    assert len(partial) >= 2 and all(s.pending and not s.reranked for s in partial)
    assert [s.scored for s in partial] == sorted(s.scored for s in partial) and partial[0].scored > 0
    assert all(s.scored + s.pending == 7 for s in partial)
    for step in partial:  # first-stage order, no ranks or selection yet, and nothing from the cache
        assert [c.chunk_id for c in step.candidates] == [c.chunk_id for c in first.candidates]
        assert {c.rerank_rank for c in step.candidates} == {None} and not any(c.selected for c in step.candidates)
    assert final.reranked and final.pending == 0 and final.scored == 7 and final.cached == 0
    assert [c.rerank_rank for c in final.candidates] == list(range(1, 8))
    assert {c.rerank_score for c in first.candidates} == {None}  # the first stage's result is left as it was
    known = {c.chunk_id: c.rerank_score for c in partial[-1].candidates if c.rerank_score is not None}
    assert all(c.rerank_score == known[c.chunk_id] for c in final.candidates if c.chunk_id in known)


def test_rerank_steps_and_a_turn_start_the_reranker_before_the_first_stage_is_shown(small_batch_rag, monkeypatch):
    """A turn yields the first-stage step to the page, which draws it; the reranker works meanwhile."""
    from rag.chat import DENSE, QueryOptions, run_turn
    from tests.models.test_scores import signal_on_score

    started = signal_on_score(small_batch_rag.reranker, monkeypatch)
    first = small_batch_rag.first_stage("How do bees make honey?", top_k=7, mode="dense")
    steps = small_batch_rag.rerank_steps(first, top_n=2)
    assert started.wait(timeout=60)  # no step read yet
    assert list(steps)[-1].scored == 7
    started.clear()
    options = QueryOptions.from_settings(small_batch_rag.settings, retrieval_mode="dense", top_k=7)
    turn = run_turn(small_batch_rag, None, "Why do bees dance?", None, options)  # no answer is read here
    assert next(turn).stage == DENSE and started.wait(timeout=60)
    turn.close()


def test_a_repeated_query_takes_every_score_from_the_cache(small_batch_rag):
    fresh = small_batch_rag.retrieve("How do bees make honey?", top_k=7, top_n=2, mode="dense")
    again = small_batch_rag.retrieve("How do bees make honey?", top_k=7, top_n=2, mode="dense")
    assert fresh.cached == 0 and again.cached == 7 and all(c.rerank_cached for c in again.candidates)
    assert [(c.chunk_id, c.rerank_score, c.selected) for c in again.candidates] == \
        [(c.chunk_id, c.rerank_score, c.selected) for c in fresh.candidates]
    first = small_batch_rag.first_stage("How do bees make honey?", top_k=7, mode="dense")
    assert len(list(small_batch_rag.rerank_steps(first))) == 1  # nothing to wait for: no partial step
    other = small_batch_rag.retrieve("How do bees make honey?", top_k=7, rerank_instruction="Judge the topic")
    assert other.cached == 0  # another instruction is another score


def test_score_cache_size_is_a_setting(tiny_settings, tiny_embedder, tiny_reranker, corpus_path):
    rag = RAG(tiny_settings.replace(rerank_cache_size=3), embedder=tiny_embedder,
              reranker=tiny_reranker)
    rag.ingest_paths([corpus_path])
    rag.retrieve("bread", top_k=5, mode="dense")
    assert len(rag.scorer.cache) == 3
    rag.close()
    with pytest.raises(SettingsError, match="rerank_cache_size.*0 to turn that cache off"):
        Settings(rerank_cache_size=-1)
