"""Milvus Lite store: persistence, idempotent writes, owners, dimension checks."""
import numpy as np
import pytest

from rag import RAG
from rag.store import CollectionMismatchError, Store
from rag.types import Chunk


def _vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _chunks(n: int, source: str = "a.md", owner: str = "") -> list[Chunk]:
    return [Chunk(text=f"chunk {i} of {source}", source=source, chunk_index=i, owner=owner) for i in range(n)]


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "milvus.db")


def test_data_survives_close_and_reopen(db):
    store = Store(db, "c", 16)
    vectors = _vectors(5, 16)
    store.upsert(_chunks(5), vectors)
    store.close()
    reopened = Store(db, "c", 16)  # an indexed collection reopens released: Store must load it
    hits = reopened.search(vectors[3], top_k=2)
    assert reopened.count() == 5
    assert hits[0].chunk.text == "chunk 3 of a.md" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    reopened.close()


def test_readding_identical_chunks_adds_nothing(db):
    store = Store(db, "c", 16)
    store.upsert(_chunks(4), _vectors(4, 16))
    store.upsert(_chunks(4), _vectors(4, 16))
    assert store.count() == 4
    assert [d.chunks for d in store.documents()] == [4]


def test_delete_document_removes_only_that_document(db):
    store = Store(db, "c", 16)
    store.upsert(_chunks(3, "a.md") + _chunks(2, "b.md"), _vectors(5, 16))
    doc_a = _chunks(1, "a.md")[0].doc_id
    assert store.delete_document(doc_a) == 3
    assert [(d.source, d.chunks) for d in store.documents()] == [("b.md", 2)]


def test_owner_uploads_are_visible_only_to_their_owner(db):
    store = Store(db, "c", 16)
    vectors = _vectors(3, 16)
    store.upsert(_chunks(1, "shared.md") + _chunks(1, "mine.md", owner="s1") + _chunks(1, "theirs.md", "s2"),
                 vectors)
    seen_by_s1 = {h.chunk.source for h in store.search(vectors[1], top_k=10, owner="s1")}
    assert seen_by_s1 == {"shared.md", "mine.md"}
    assert {h.chunk.source for h in store.search(vectors[1], top_k=10)} == {"shared.md"}
    assert store.delete_owner("s2") == 1 and store.count() == 2


def test_dimension_mismatch_says_how_to_fix(db):
    Store(db, "c", 16).close()
    with pytest.raises(CollectionMismatchError, match="RAG_EMBEDDING_DIM=16"):
        Store(db, "c", 32)


def test_text_with_quotes_and_unicode_round_trips(db):
    store = Store(db, "c", 8)
    chunk = Chunk(text='He said "hi" \\ \u202e\u200b 火山', source='we"ird\\name.md')
    store.upsert([chunk], _vectors(1, 8))
    assert store.chunks(chunk.doc_id)[0].text == chunk.text
    assert store.delete_document(chunk.doc_id) == 1


def test_rag_with_matryoshka_dimension(tiny_settings, tiny_embedder, tiny_reranker, corpus_path):
    from rag.models.embedder import SentenceTransformerEmbedder

    small = SentenceTransformerEmbedder(tiny_settings.embedding_model, dim=32, model=tiny_embedder.model)
    rag = RAG(tiny_settings.replace(embedding_dim=32, collection="small"), embedder=small,
              reranker=tiny_reranker)
    report = rag.ingest_paths([corpus_path])
    retrieval = rag.retrieve("volcano", top_k=4, top_n=2)
    assert report.chunks > 0 and len(retrieval.candidates) == 4
    rag.close()
    with pytest.raises(CollectionMismatchError):  # same collection, full-size embedder
        RAG(tiny_settings.replace(collection="small"), embedder=tiny_embedder, reranker=tiny_reranker)


def test_a_collection_is_stamped_with_its_embedding_model_and_refuses_another(db):
    Store(db, "c", 16, embedding_model="Qwen/Qwen3-Embedding-0.6B").close()
    Store(db, "c", 16, embedding_model="/models/Qwen3-Embedding-0.6B").close()  # a local copy: same space
    with pytest.raises(CollectionMismatchError) as caught:
        Store(db, "c", 16, embedding_model="sentence-transformers/all-MiniLM-L6-v2")
    message = str(caught.value)
    assert "'Qwen/Qwen3-Embedding-0.6B'" in message and "RAG_EMBEDDING_MODEL" in message
    assert "RAG_COLLECTION" in message and "re-ingest" in message
    listing = Store(db, "c", 16)  # opened without an embedder (CLI list/delete): no model to compare
    listing.close()


def test_a_collection_made_before_stamping_is_adopted_by_the_first_model(db):
    from rag.store import make_client

    Store(db, "old", 8).close()  # no model known: no model stamp
    Store(db, "old", 8, embedding_model="model-a").close()  # adopts it
    client = make_client(db)
    assert client.describe_collection("old")["properties"]["rag.embedding_model"] == "model-a"
    client.close()
    with pytest.raises(CollectionMismatchError, match="model-a"):
        Store(db, "old", 8, embedding_model="model-b")


def test_the_rag_facade_stamps_with_the_embedder_it_uses(tiny_settings, tiny_embedder, tiny_reranker):
    rag = RAG(tiny_settings, embedder=tiny_embedder, reranker=tiny_reranker)
    info = rag.store.client.describe_collection(tiny_settings.collection)
    assert info["properties"]["rag.embedding_model"] == tiny_embedder.model_name
    assert info["properties"]["rag.embedding_dim"] == str(tiny_embedder.dim)
    rag.close()
