"""The Embedder computes what the official Qwen3-Embedding reference computes."""
import numpy as np
import pytest

from rag.models.embedder import SentenceTransformerEmbedder, query_prompt
from tests.reference import ReferenceEmbedder, get_detailed_instruct

TEXTS = ["Milvus is a vector database.", "short",
         "A much longer passage about volcanoes, ash clouds, lava flows and the pressure of magma " * 6,
         "Sourdough bread rises slowly with wild yeast."]


@pytest.fixture(scope="module")
def reference(tiny_embedder_path):
    return ReferenceEmbedder(str(tiny_embedder_path))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_documents_match_reference_last_token_pooling(tiny_embedder, reference):
    ours = tiny_embedder.embed_documents(TEXTS)
    ref = reference.embed(TEXTS).numpy()
    assert ours.shape == (len(TEXTS), tiny_embedder.full_dim) and ours.dtype == np.float32
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert _cosines(ours, ref).min() >= 0.9999


def test_query_uses_exact_instruction_prompt(tiny_embedder, reference):
    task = "Given a question about baking, find the recipe that answers it"
    ours = tiny_embedder.embed_query("how do I feed a starter?", instruction=task)
    ref = reference.embed([get_detailed_instruct(task, "how do I feed a starter?")]).numpy()[0]
    assert float(ours @ ref) >= 0.9999
    assert query_prompt(task) + "q" == f"Instruct: {task}\nQuery:q"  # no space after "Query:"


def test_changed_instruction_changes_query_vector(tiny_embedder):
    a = tiny_embedder.embed_query("what is milvus", instruction="Retrieve passages that answer the question")
    b = tiny_embedder.embed_query("what is milvus", instruction="Find documents about databases")
    assert float(a @ b) < 0.9999


def test_query_cache_returns_copies(tiny_embedder):
    first = tiny_embedder.embed_query("cache me")
    first[:] = 0
    assert np.linalg.norm(tiny_embedder.embed_query("cache me")) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("dim", [32, 48, 63])
def test_matryoshka_truncates_then_renormalises(tiny_embedder_path, tiny_embedder, dim):
    small = SentenceTransformerEmbedder(str(tiny_embedder_path), dim=dim, device="cpu", dtype="fp32",
                                        model=tiny_embedder.model)
    full = tiny_embedder.embed_documents(TEXTS)
    ours = small.embed_documents(TEXTS)
    expected = full[:, :dim] / np.linalg.norm(full[:, :dim], axis=1, keepdims=True)
    assert small.dim == dim and ours.shape == (len(TEXTS), dim)
    assert np.allclose(ours, expected, atol=1e-5)


def test_invalid_matryoshka_size_says_what_is_valid(tiny_embedder_path, tiny_embedder):
    with pytest.raises(ValueError, match="32..64"):
        SentenceTransformerEmbedder(str(tiny_embedder_path), dim=16, device="cpu", model=tiny_embedder.model)


def test_empty_input_gives_empty_matrix(tiny_embedder):
    assert tiny_embedder.embed_documents([]).shape == (0, tiny_embedder.dim)


def test_progress_reports_every_batch(tiny_embedder):
    seen = []
    tiny_embedder.embed_documents([f"text {i}" for i in range(150)], progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (150, 150) and len(seen) >= 2


def test_length_sorted_batches_come_back_in_input_order(tiny_embedder_path, tiny_embedder, reference):
    texts = [("word " * n).strip() for n in (3, 40, 1, 17, 60, 8, 2, 33, 5)] * 3
    small = SentenceTransformerEmbedder(str(tiny_embedder_path), device="cpu", dtype="fp32", batch_size=2,
                                        model=tiny_embedder.model)
    ours = small.embed_documents(texts)
    one_by_one = np.concatenate([reference.embed([t]).numpy() for t in texts[:9]])
    assert _cosines(ours[:9], one_by_one).min() >= 0.9999
    assert np.allclose(ours[:9], ours[9:18], atol=1e-5)


@pytest.mark.parametrize("dtype,min_cosine", [("bf16", 0.999), ("int8", 0.99)])
def test_reduced_precision_stays_close_to_fp32_reference(tiny_embedder_path, reference, dtype, min_cosine):
    """bf16 and int8 (quantised Linear layers) against the fp32 reference: cosine per text (tiny model: bf16
    ~0.9999, int8 ~0.996; the bench measures the 0.6B shape)."""
    emb = SentenceTransformerEmbedder(str(tiny_embedder_path), device="cpu", dtype=dtype)
    assert emb.precision.name == ("int8" if dtype == "int8" else "bfloat16")
    assert _cosines(emb.embed_documents(TEXTS), reference.embed(TEXTS).numpy()).min() >= min_cosine
    task = "Given a question about baking, find the recipe that answers it"
    q = emb.embed_query("how do I feed a starter?", instruction=task)
    assert float(q @ reference.embed([get_detailed_instruct(task, "how do I feed a starter?")]).numpy()[0]) \
        >= min_cosine
