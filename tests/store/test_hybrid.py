"""The hybrid first stage: Milvus' BM25 next to dense search, fused by RRF or weights, every candidate with every
score; migration of collections made before BM25; the same on Milvus Lite and on a Milvus server."""
import logging

import numpy as np
import pytest

from rag import RAG, Settings
from rag.store import Store
from rag.store.fusion import Ranked, adaptive, bm25_margin, exact_matches, identifiers, lexical_weight, rrf, weighted
from rag.store.migration import staging_name
from rag.store.milvus import SPARSE
from rag.types import Chunk

DIM = 8
# Hand-made: "honey" occurs in two chunks (0 short, 1 long), "glacier" only in chunk 2, "qzx" nowhere.
TEXTS = ["Bees make honey.",
         "Honey is stored by bees in wax cells; the colony eats it through the long winter months ahead.",
         "A glacier carves valleys over thousands of years.",
         "Volcanoes erupt when magma rises through the crust."]


def _unit(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _store(uri: str, owner: str = "", **kwargs) -> tuple[Store, list[Chunk], np.ndarray]:
    store = Store(uri, "c", DIM, **kwargs)
    chunks = [Chunk(text=t, source=f"{i}.md", owner=owner) for i, t in enumerate(TEXTS)]
    vectors = _unit(len(chunks))
    store.upsert(chunks, vectors)
    return store, chunks, vectors


# --- BM25 in the store ----------------------------------------------------------------------------------
def test_bm25_scores_are_positive_rank_by_term_rarity_and_length_and_zero_without_a_match(tmp_path):
    store, chunks, _ = _store(str(tmp_path / "m.db"))
    honey = store.bm25_search("honey", top_k=10)
    # Both chunks with "honey", and only those; same tf, so the shorter chunk wins (length normalisation).
    assert [h.chunk.id for h in honey] == [chunks[0].id, chunks[1].id]
    assert all(h.score > 0 for h in honey)  # Milvus Lite returns them negated; we turn them round
    # "glacier" is in one chunk of four, "honey" in two: the rarer term weighs more (IDF).
    glacier = store.bm25_search("glacier", top_k=10)
    assert [h.chunk.id for h in glacier] == [chunks[2].id]
    assert store.bm25_search("qzx", top_k=10) == [] and store.bm25_search("  ", top_k=10) == []
    # Scores restricted to given ids equal the unrestricted ones; a chunk without the term scores exactly 0.
    restricted = store.bm25_scores("honey", [chunks[1].id, chunks[3].id])
    assert restricted == {chunks[1].id: pytest.approx(honey[1].score, rel=1e-6), chunks[3].id: 0.0}
    store.close()


def test_rarer_term_outweighs_a_common_one_in_chunks_of_equal_length(tmp_path):
    store = Store(str(tmp_path / "m.db"), "c", DIM)
    texts = ["alpha beta", "alpha gamma", "alpha delta"]
    chunks = [Chunk(text=t, source=f"{i}.md") for i, t in enumerate(texts)]
    store.upsert(chunks, _unit(3))
    common, rare = store.bm25_search("alpha", 10), store.bm25_search("gamma", 10)
    assert len(common) == 3 and len(rare) == 1 and rare[0].score > common[0].score
    assert common[0].score == pytest.approx(common[2].score)  # same tf, same length: same score
    store.close()


def test_bm25_applies_the_owner_filter(tmp_path):
    store, _, _ = _store(str(tmp_path / "m.db"))
    private = Chunk(text="The secret code XJ-9 opens the vault.", source="secret.md", owner="alice")
    store.upsert([private], _unit(1, seed=5))
    assert [h.chunk.id for h in store.bm25_search("vault", 10, owner="alice")] == [private.id]
    assert store.bm25_search("vault", 10, owner="bob") == [] and store.bm25_search("vault", 10) == []
    assert store.bm25_scores("vault", [private.id], owner="bob") == {private.id: 0.0}
    store.close()


def test_chinese_text_is_split_into_words_with_jieba(tmp_path):
    store = Store(str(tmp_path / "m.db"), "c", DIM, analyzer="jieba")
    texts = ["向量数据库支持混合检索", "今天天气很好，我们去公园散步", "数据库索引的构建需要时间"]
    chunks = [Chunk(text=t, source=f"{i}.md") for i, t in enumerate(texts)]
    store.upsert(chunks, _unit(3))
    assert [h.chunk.id for h in store.bm25_search("混合检索", 10)] == [chunks[0].id]
    # "数据库" is a word in two chunks: jieba finds it inside both unspaced sentences.
    assert {h.chunk.id for h in store.bm25_search("数据库", 10)} == {chunks[0].id, chunks[2].id}
    store.close()


# --- fusion, by hand ----------------------------------------------------------------------------------
def test_rrf_order_and_scores_by_hand():
    dense = [Ranked(1, 0.9), Ranked(2, 0.8), Ranked(3, 0.7)]
    bm25 = [Ranked(3, 12.0), Ranked(4, 7.0), Ranked(1, 2.0)]
    fused = rrf([dense, bm25], k=60)
    # 1: 1/61 + 1/63; 3: 1/63 + 1/61 (a tie: 1 reached rank 1 first); 2: 1/62; 4: 1/62 (tie: dense list first)
    assert [f.chunk_id for f in fused] == [1, 3, 2, 4]
    assert [f.score for f in fused] == pytest.approx([1 / 61 + 1 / 63, 1 / 61 + 1 / 63, 1 / 62, 1 / 62])
    assert [f.chunk_id for f in rrf([bm25, dense], k=60)] == [3, 1, 4, 2]  # ties go to the first list


def test_weighted_fusion_by_hand():
    dense = [Ranked(1, 0.9), Ranked(2, 0.5), Ranked(3, 0.4)]
    bm25 = [Ranked(3, 10.0), Ranked(4, 6.0), Ranked(5, 2.0)]
    fused = {f.chunk_id: f.score for f in weighted([dense, bm25], [0.7, 0.3])}
    # min-max per list: dense 1 -> 1, 2 -> 0.2, 3 -> 0; bm25 3 -> 1, 4 -> 0.5, 5 -> 0
    assert fused == pytest.approx({1: 0.7, 2: 0.14, 3: 0.3, 4: 0.15, 5: 0.0})
    assert [f.chunk_id for f in weighted([dense, bm25], [0.7, 0.3])] == [1, 3, 4, 2, 5]


def test_adaptive_fusion_by_hand():
    dense = {1: 0.9, 2: 0.8, 3: 0.6, 4: 0.5}  # every candidate's cosine: min-max -> 1, 0.75, 0.25, 0
    decisive = [Ranked(4, 8.0), Ranked(2, 2.0)]  # BM25's best leads by (8 - 2) / 8 = 0.75
    assert bm25_margin(decisive) == pytest.approx(0.75)
    bm25 = {1: 0.0, 2: 2.0, 3: 0.0, 4: 8.0}  # / 8 -> 0, 0.25, 0, 1
    fused = adaptive(dense, bm25, 0.75)
    # 1: 0.25 * 1; 2: 0.25 * 0.75 + 0.75 * 0.25; 3: 0.25 * 0.25; 4: 0.75 * 1
    assert [(f.chunk_id, f.score) for f in fused] == [(4, pytest.approx(0.75)), (2, pytest.approx(0.375)),
                                                        (1, pytest.approx(0.25)), (3, pytest.approx(0.0625))]
    # The same lists under RRF k=60: 2 (1/62 + 1/62) beats 4 (1/64 + 1/61): ranks, not the lead, count.
    assert [f.chunk_id for f in rrf([[Ranked(i, s) for i, s in dense.items()], decisive])][:2] == [2, 4]
    # BM25 barely prefers 4 over 2 ((8 - 7) / 8 = 0.125): the dense order stands.
    close = [Ranked(4, 8.0), Ranked(2, 7.0)]
    weight = bm25_margin(close)
    assert weight == pytest.approx(0.125)
    fused = adaptive(dense, {1: 0.0, 2: 7.0, 3: 0.0, 4: 8.0}, weight)
    # 1: 0.875; 2: 0.875 * 0.75 + 0.125 * 0.875; 3: 0.875 * 0.25; 4: 0.125
    assert [(f.chunk_id, f.score) for f in fused] == [(1, pytest.approx(0.875)), (2, pytest.approx(0.765625)),
                                                        (3, pytest.approx(0.21875)), (4, pytest.approx(0.125))]
    # One chunk alone holds a query term: margin 1, BM25 decides; no hit at all: 0, dense decides.
    assert bm25_margin([Ranked(7, 3.2)]) == 1.0 and bm25_margin([]) == 0.0
    assert [f.chunk_id for f in adaptive(dense, bm25, 0.0)] == [1, 2, 3, 4]
    with pytest.raises(ValueError):
        adaptive(dense, bm25, 1.5)


def test_identifier_tokens_and_the_chunk_that_alone_holds_one():
    assert identifiers("What does MV2047 mean in queryNode.memoryLimit, or ENABLE_TLS / HNSW?") == [
        "MV2047", "queryNode.memoryLimit", "ENABLE_TLS", "HNSW"]
    assert identifiers("why is my search slow? L2 or IP") == []  # plain words, and too short to be codes
    texts = {1: "Set queryNode.memoryLimit to 8 GB.", 2: "The queryNode section holds limits.",
             3: "Error MV2047: out of memory. See querynode.memorylimit.", 4: "HNSW and HNSW again.",
             5: "Error mv2047 is logged, and so is QUERYNODE.MEMORYLIMIT."}
    # The spelling typed first: queryNode.memoryLimit is spelt so in 1 only, querynode.memorylimit in 3 only.
    assert exact_matches("queryNode.memoryLimit", texts) == {1}
    assert exact_matches("querynode.memorylimit", texts) == {3}
    # No chunk has that spelling: any case counts, so Querynode.Memorylimit is in 1, 3 and 5: none alone.
    assert exact_matches("Querynode.Memorylimit", texts) == set()
    assert exact_matches("MV2047", texts) == {3} and exact_matches("Mv2047", texts) == set()  # 3 and 5
    assert exact_matches("HNSW", texts) == {4} and exact_matches("memoryLimit", texts) == set()  # part of a key
    # BM25's weight: 1 when BM25's best is the chunk that alone holds an identifier, else BM25's lead.
    assert lexical_weight("MV2047", [Ranked(3, 5.0), Ranked(1, 4.0)], texts) == 1.0
    assert lexical_weight("MV2047", [Ranked(1, 5.0), Ranked(3, 4.0)], texts) == pytest.approx(0.2)


# --- the pipeline: every candidate carries every score ------------------------------------------------
IDENTIFIER_DOCS = {
    "errors.md": "# Errors\n\nIf the proxy log shows error code MV2047 the segment loader ran out of memory; "
                 "raise queryNode.memoryLimit and restart the query node.",
    "index.md": "# Index\n\nHNSW builds a graph over the vectors; IVF_FLAT clusters them into nlist buckets.",
    "memory.md": "# Memory\n\nQuery nodes hold loaded segments in memory, so memory limits decide how much "
                 "data a node can serve.",
    "restart.md": "# Restart\n\nRestarting a node reloads its segments from object storage.",
    "bees.md": "# Bees\n\nHoney bees live in colonies and make honey from nectar.",
    "limits.md": "# Limits\n\nThe queryNode section of milvus.yaml sets the memory limit of each query node.",
}


@pytest.fixture
def minilm_rag(tmp_path, minilm_path):
    settings = Settings(embedding_model=str(minilm_path), reranker_model=None, data_dir=tmp_path / "data",
                        device="cpu", dtype="fp32", retrieval_mode="hybrid")
    rag = RAG(settings)
    for name, text in IDENTIFIER_DOCS.items():
        rag.add_texts([text], source=name)
    yield rag
    rag.close()


def test_an_exact_identifier_puts_its_only_chunk_first_in_hybrid_mode(minilm_rag):
    r = minilm_rag.retrieve("MV2047", top_k=5, top_n=2)
    top = r.candidates[0]
    assert r.mode == "hybrid" and top.source == "errors.md" and top.bm25_rank == 1
    assert [c.bm25_rank for c in r.candidates].count(None) == len(r.candidates) - 1  # no other chunk has it
    assert [c.fused_rank for c in r.candidates] == list(range(1, len(r.candidates) + 1))
    # With one candidate per list, a chunk the embedding ranks first ties with the identifier's chunk (1/61
    # each); the one sharing no term with the query loses the tie.
    alone = minilm_rag.retrieve("MV2047", top_k=1, top_n=1).candidates
    assert [(c.source, c.bm25_rank) for c in alone] == [("errors.md", 1)]


def test_a_dotted_config_key_whose_parts_occur_elsewhere_puts_its_chunk_first(minilm_rag):
    """queryNode.memoryLimit is in errors.md only, but "querynode", "memory" and "limit" are in other chunks
    too, so BM25 matches several chunks: the key's chunk must still come first. (RRF k=60 puts limits.md,
    BM25's second, first here: it is high in both lists.)"""
    r = minilm_rag.retrieve("queryNode.memoryLimit", top_k=5, top_n=2)
    assert (r.candidates[0].source, r.candidates[0].bm25_rank) == ("errors.md", 1)
    assert sum(c.bm25_rank is not None for c in r.candidates) > 1 and r.lexical_weight == 1.0


def test_every_candidate_carries_both_exact_scores_and_ranks(minilm_rag):
    minilm_rag.settings = minilm_rag.settings.replace(fusion="rrf")
    query = "why does the query node run out of memory"
    hybrid = minilm_rag.first_stage(query, top_k=3, mode="hybrid")
    dense = minilm_rag.store.search(minilm_rag.embedder.embed_query(query, minilm_rag.settings.query_instruction),
                                    top_k=3)
    bm25 = minilm_rag.store.bm25_search(query, top_k=3)
    dense_at = {h.chunk.id: (n, h.score) for n, h in enumerate(dense, 1)}
    bm25_at = {h.chunk.id: (n, h.score) for n, h in enumerate(bm25, 1)}
    everything = minilm_rag.store.bm25_search(query, top_k=10)
    vector = minilm_rag.embedder.embed_query(query, minilm_rag.settings.query_instruction)
    stored = minilm_rag.store.vectors([c.chunk_id for c in hybrid.candidates])
    for c in hybrid.candidates:
        assert c.dense_rank == dense_at.get(c.chunk_id, (None,))[0]
        assert c.bm25_rank == bm25_at.get(c.chunk_id, (None,))[0]
        assert c.dense_score == pytest.approx(float(stored[c.chunk_id] @ vector), abs=1e-5)
        expected_bm25 = next((h.score for h in everything if h.chunk.id == c.chunk_id), 0.0)
        assert c.bm25_score == pytest.approx(expected_bm25, rel=1e-6) and c.bm25_score >= 0
    # RRF(k=60) of the two lists, recomputed from the reported ranks, is the candidates' order.
    rrf_of = [sum(1 / (60 + r) for r in (c.dense_rank, c.bm25_rank) if r is not None) for c in hybrid.candidates]
    assert [c.fused_score for c in hybrid.candidates] == pytest.approx(rrf_of)
    assert rrf_of == sorted(rrf_of, reverse=True)


def test_adaptive_order_is_its_formula_over_the_reported_scores(minilm_rag):
    assert minilm_rag.settings.fusion == "adaptive"  # the default
    for query in ("why does the query node run out of memory", "honey bees", "MV2047"):
        r = minilm_rag.retrieve(query, top_k=10, top_n=3)  # 6 chunks: every candidate of both lists is shown
        lists = sorted((c for c in r.candidates if c.bm25_rank is not None), key=lambda c: c.bm25_rank)
        texts = {c.chunk_id: c.text for c in r.candidates}
        weight = lexical_weight(query, [Ranked(c.chunk_id, c.bm25_score) for c in lists], texts)
        assert r.lexical_weight == pytest.approx(weight)
        dense = [c.dense_score for c in r.candidates]
        low, high, best = min(dense), max(dense), max(c.bm25_score for c in r.candidates)
        expected = [(1 - weight) * (c.dense_score - low) / (high - low) + weight * (c.bm25_score / best if best else 0)
                    for c in r.candidates]
        assert [c.fused_score for c in r.candidates] == pytest.approx(expected, abs=1e-9)
        assert expected == sorted(expected, reverse=True)


def test_each_mode_orders_by_its_own_list(minilm_rag):
    query = "memory limit of the query node"
    dense = minilm_rag.retrieve(query, top_k=4, mode="dense")
    bm25 = minilm_rag.retrieve(query, top_k=4, mode="bm25")
    assert [c.dense_rank for c in dense.candidates] == [1, 2, 3, 4]
    assert [c.bm25_rank for c in bm25.candidates] == list(range(1, len(bm25.candidates) + 1))
    assert all(c.bm25_score > 0 for c in bm25.candidates)
    # Without a reranker the candidates come in first-stage order, and the first top_n are selected.
    assert [c.rank for c in bm25.candidates] == [c.fused_rank for c in bm25.candidates]
    assert [c.selected for c in dense.candidates] == [True, True, True, False]


def test_weighted_fusion_is_an_option(tmp_path, minilm_rag):
    minilm_rag.settings = minilm_rag.settings.replace(fusion="weighted", dense_weight=0.0)
    r = minilm_rag.retrieve("memory limit of the query node", top_k=4, mode="hybrid")
    # All weight on BM25: the chunks BM25 found come first, in BM25 order.
    found = [c for c in r.candidates if c.bm25_rank is not None]
    assert r.candidates[:len(found)] == found and [c.bm25_rank for c in found] == list(range(1, len(found) + 1))


def test_settings_reject_an_unknown_mode_naming_the_variable():
    with pytest.raises(Exception, match="RAG_RETRIEVAL_MODE.*dense, bm25, hybrid"):
        Settings(retrieval_mode="sparse")
    assert Settings.from_env({"RAG_RETRIEVAL_MODE": "bm25"}).retrieval_mode == "bm25"


# --- migration ----------------------------------------------------------------------------------------
def _old_collection(uri: str, chunks: list[Chunk], vectors: np.ndarray) -> None:
    """A collection as this app made it before BM25: no analyzer, no sparse field."""
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    for name, size in (("text", 65535), ("source", 1024), ("doc_id", 64)):
        schema.add_field(name, DataType.VARCHAR, max_length=size)
    schema.add_field("chunk_index", DataType.INT64)
    for name, size in (("heading", 2048), ("content_hash", 64), ("owner", 256)):
        schema.add_field(name, DataType.VARCHAR, max_length=size)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="AUTOINDEX", metric_type="IP")
    client.create_collection("c", schema=schema, index_params=index, consistency_level="Strong",
                             properties={"rag.embedding_dim": str(DIM)})
    client.insert("c", [{"id": c.id, "vector": v.tolist(), "text": c.text, "source": c.source, "doc_id": c.doc_id,
                         "chunk_index": c.chunk_index, "heading": c.heading, "content_hash": c.content_hash,
                         "owner": c.owner} for c, v in zip(chunks, vectors)])
    client.flush("c")
    client.close()


def test_an_old_collection_is_migrated_keeping_every_chunk_and_vector(tmp_path, caplog):
    uri = str(tmp_path / "m.db")
    chunks = [Chunk(text=t, source=f"{i}.md", owner="alice" if i == 3 else "") for i, t in enumerate(TEXTS * 300)]
    chunks = list({c.id: c for c in chunks}.values())  # TEXTS repeat with the same source: keep unique ids
    chunks += [Chunk(text=f"{t} (copy {n})", source=f"copy{n}.md") for n in range(600) for t in TEXTS[:2]]
    vectors = _unit(len(chunks), seed=3)
    _old_collection(uri, chunks, vectors)
    with caplog.at_level(logging.WARNING, logger="rag.store.migration"):
        store = Store(uri, "c", DIM)
    assert "created before BM25" in caplog.text and "nothing re-embedded" in caplog.text
    assert store.count() == len(chunks) and store.has_bm25
    assert SPARSE in {f["name"] for f in store.client.describe_collection("c")["fields"]}
    assert not store.client.has_collection(staging_name("c"))
    stored = store.vectors([c.id for c in chunks])
    assert all(np.array_equal(stored[c.id], v) for c, v in zip(chunks, vectors))
    back = {c.id: c for doc in {c.doc_id for c in chunks} for c in store.chunks(doc)}
    assert all((back[c.id].text, back[c.id].owner, back[c.id].source) == (c.text, c.owner, c.source)
               for c in chunks)
    assert store.bm25_search("glacier", 10)[0].chunk.text == TEXTS[2]
    store.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rag.store.migration"):
        Store(uri, "c", DIM).close()  # migrated once: opening again copies nothing
    assert "migrat" not in caplog.text


def test_changing_the_analyzer_migrates_and_an_interrupted_swap_is_finished(tmp_path):
    uri = str(tmp_path / "m.db")
    store, chunks, vectors = _store(uri)
    client = store.client
    client.rename_collection("c", staging_name("c"))  # as if a migration stopped after dropping the old one
    store.close()
    store = Store(uri, "c", DIM, analyzer="jieba")  # finished, then migrated to the jieba analyzer
    assert store.count() == len(chunks) and not store.client.has_collection(staging_name("c"))
    assert store.client.describe_collection("c")["properties"]["rag.bm25_analyzer"] == "jieba"
    assert [h.chunk.id for h in store.bm25_search("glacier", 10)] == [chunks[2].id]
    assert np.array_equal(store.vectors([chunks[0].id])[chunks[0].id], vectors[0])
    store.close()


# --- a Milvus server (the session's `milvus-lite server`, tests/conftest.py) ---------------------------------
def test_bm25_and_migration_work_the_same_on_a_milvus_server(milvus_server, tmp_path):
    uri = milvus_server.uri
    lite, chunks, _ = _store(str(tmp_path / "m.db"))
    server, _, _ = _store(uri)
    for query in ("honey", "glacier valleys", "qzx"):
        expected = [(h.chunk.id, round(h.score, 4)) for h in lite.bm25_search(query, 10)]
        assert [(h.chunk.id, round(h.score, 4)) for h in server.bm25_search(query, 10)] == expected
    assert server.bm25_scores("honey", [chunks[3].id]) == {chunks[3].id: 0.0}
    lite.close()
    server.client.drop_collection("c")
    server.close()
    _old_collection(uri, chunks, _unit(len(chunks)))
    migrated = Store(uri, "c", DIM)
    assert migrated.count() == len(chunks) and migrated.bm25_search("glacier", 10)[0].chunk.id == chunks[2].id
    migrated.close()
