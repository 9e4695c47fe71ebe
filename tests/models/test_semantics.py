"""Real semantics with the packaged all-MiniLM-L6-v2: paraphrased questions find the right document first."""
import pytest

from rag import RAG
from tests.ingest_files import CORPUS

PARAPHRASES = {
    "Sourdough bread": ["How do I make bread rise without store-bought yeast?",
                        "why does my loaf need a starter culture"],
    "Volcanoes": ["What happens when a mountain spews molten rock?", "why do eruptions stop flights"],
    "Photosynthesis": ["How do leaves turn sunlight into food?"],
    "Chess openings": ["what should I do in the first moves of a chess game"],
    "Marathon training": ["how to get ready for a 42 km race"],
    "Vector databases": ["Which database finds nearest neighbours of embeddings?"],
    "Honey bees": ["how do insects in a hive make honey"],
}


@pytest.fixture(scope="module")
def minilm_rag(tmp_path_factory, minilm_path):
    from rag import Settings

    settings = Settings(embedding_model=str(minilm_path), reranker_model=None, device="cpu", dtype="fp32",
                        data_dir=tmp_path_factory.mktemp("minilm"))
    rag = RAG(settings)
    rag.ingest_paths([CORPUS])
    yield rag
    rag.close()


@pytest.mark.parametrize("heading,query", [(h, q) for h, qs in PARAPHRASES.items() for q in qs])
def test_paraphrase_finds_right_section_first(minilm_rag, heading, query):
    top = minilm_rag.retrieve(query, top_k=3).candidates[0]
    assert top.text.startswith(heading), (query, top.text[:60])


def test_minilm_gets_no_qwen_instruction(minilm_rag):
    assert minilm_rag.embedder.dim == 384
    assert minilm_rag.embedder.query_prompt("anything") is None


def test_a_vector_does_not_depend_on_its_batch_mates(minilm_rag):
    """MiniLM has absolute positions: padding it on the left would shift them with the batch's longest text."""
    embedder = minilm_rag.embedder
    short = "Honey bees live in colonies."
    alone = embedder.embed_documents([short])[0]
    batched = embedder.embed_documents([short, "A much longer passage about volcanoes and lava. " * 20])[0]
    assert float(alone @ batched) >= 0.9999
    assert embedder.tokenizer.padding_side == "right"


def test_qwen_last_token_pooling_pads_left(tiny_embedder):
    assert tiny_embedder.tokenizer.padding_side == "left"
