"""Real vLLM (the CPU build, in its own virtualenv) serving small Qwen3 checkpoints: `RAG.retrieve` with both
models on vLLM returns what it returns with the same checkpoints in this process in fp32 — the same candidates in
the same order, dense and rerank scores within 1e-3 — for both rerank shapes vLLM serves (`rerank`, `score`;
TEI's shape is TEI's own, tested against tests/model_server.py) and at a Matryoshka size.

The two servers start once per session, at the same time (tests/vllm_server.py). They need the vLLM
virtualenv's python in RAG_TEST_VLLM_PYTHON (tests/setup_vllm.sh builds it); without it these tests skip on a
developer's machine and fail in CI (RAG_TEST_REQUIRE_VLLM=1, which .ci/run sets, or CI=true).
"""
from __future__ import annotations

import httpx
import numpy as np
import pytest

from rag import RAG, Settings
from rag.models.embedder import SentenceTransformerEmbedder
from rag.models.registry import make_embedder, make_reranker
from rag.models.reranker import Qwen3Reranker
from rag.types import Candidate
from tests.ingest_files import CORPUS
from tests.model_factory import VLLM_TINY, build_embedder, build_reranker
from tests.vllm_server import ENV_PYTHON, SETUP_HINT, VLLMServer, required_in_ci, start_all, stop_all, vllm_python

pytestmark = pytest.mark.e2e

TOLERANCE = 1e-3  # the contract: model servers give the in-process fp32 scores within this
KNOWLEDGE = [CORPUS, CORPUS.parents[2] / "assets" / "knowledge"]  # 5 files, ~7 kB of Markdown
CHUNKING = dict(chunk_tokens=48, chunk_overlap=8)  # small chunks: many more chunks than candidates
QUERIES = ["How long should sourdough ferment before baking?", "What does Milvus store and search?",
           "why do volcanoes erupt", "Reranker scores next to embedding scores"]
INSTRUCTIONS = dict(query_instruction="Given a question, find the passage of the handbook that answers it",
                    rerank_instruction="Judge whether the passage answers the question about the handbook")


# --- the servers and the in-process reference -----------------------------------------------------------------
@pytest.fixture(scope="session")
def vllm_venv_python() -> str:
    """RAG_TEST_VLLM_PYTHON, checked before anything is built: skip on a developer's machine, fail in CI."""
    python = vllm_python()
    if python is None:
        if required_in_ci():
            pytest.fail(f"{ENV_PYTHON} is not set, and CI must run the real-vLLM parity tests: {SETUP_HINT}.")
        pytest.skip(f"real-vLLM parity tests need {ENV_PYTHON}: {SETUP_HINT}")
    return python


@pytest.fixture(scope="session")
def vllm_checkpoints(vllm_venv_python, tmp_path_factory, tokenizer_cache):
    """Qwen3 checkpoints vLLM accepts (head_dim 32) with Qwen's real tokenizer, built once (~50 MB each)."""
    root = tmp_path_factory.mktemp("vllm-models")
    return (build_embedder(root / "qwen3-embedding", sizes=VLLM_TINY, tokenizer_cache=tokenizer_cache),
            build_reranker(root / "qwen3-reranker", sizes=VLLM_TINY, tokenizer_cache=tokenizer_cache))


@pytest.fixture(scope="session")
def vllm_servers(vllm_venv_python, vllm_checkpoints, tmp_path_factory):
    """{"embed": VLLMServer, "rerank": VLLMServer}, both started at once and stopped at the session's end."""
    python = vllm_venv_python
    workdir = tmp_path_factory.mktemp("vllm-logs")
    # quick_start: one process, no torch.compile (same model code and weights: minutes less start-up on CI)
    servers = [VLLMServer(python, model, kind, workdir, quick_start=True)
               for model, kind in zip(vllm_checkpoints, ("embed", "rerank"))]
    try:
        start_all(servers)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield {s.kind: s for s in servers}
    stop_all(servers)


@pytest.fixture(scope="module")
def local_models(vllm_checkpoints):
    embedder, reranker = vllm_checkpoints
    return (SentenceTransformerEmbedder(str(embedder), device="cpu", dtype="fp32"),
            Qwen3Reranker(str(reranker), device="cpu", dtype="fp32"))


def base_settings(checkpoints, data_dir, **changes) -> Settings:
    embedder, reranker = checkpoints
    return Settings(embedding_model=str(embedder), reranker_model=str(reranker), data_dir=data_dir, device="cpu",
                    dtype="fp32", llm_base_url=None, openai_api_key=None, **CHUNKING, **changes)


def remote_settings(checkpoints, servers, data_dir, **changes) -> Settings:
    return base_settings(checkpoints, data_dir, embedding_url=servers["embed"].base_url,
                         reranker_url=servers["rerank"].base_url, model_retries=0, **changes)


@pytest.fixture(scope="module")
def local_rag(vllm_checkpoints, local_models, tmp_path_factory):
    """The reference: the checkpoints in this process, fp32, the knowledge ingested through them."""
    embedder, reranker = local_models
    rag = RAG(base_settings(vllm_checkpoints, tmp_path_factory.mktemp("local") / "data"), embedder=embedder,
              reranker=reranker)
    rag.ingest_paths(KNOWLEDGE)
    yield rag
    rag.close()


@pytest.fixture(scope="module")
def vllm_rag(vllm_checkpoints, vllm_servers, tmp_path_factory):
    """Both models on vLLM (picked by the registry from the URLs), the knowledge ingested through vLLM."""
    rag = RAG(remote_settings(vllm_checkpoints, vllm_servers, tmp_path_factory.mktemp("vllm") / "data"))
    rag.ingest_paths(KNOWLEDGE)
    yield rag
    rag.close()
    rag.embedder.close()
    rag.reranker.close()


# --- comparing rankings ---------------------------------------------------------------------------------------
def key(candidate: Candidate) -> tuple[str, int]:
    return candidate.source, candidate.chunk_index


def assert_same_retrieval(local, remote, query: str) -> None:
    """Same candidates in the same order; dense and rerank scores within TOLERANCE, position by position."""
    table = "\n".join(f"  {key(a)!s:40} dense {a.dense_score:+.6f} / {b.dense_score:+.6f}   rerank "
                      f"{a.rerank_score!s:.8} / {b.rerank_score!s:.8}   {key(b)}"
                      for a, b in zip(local.candidates, remote.candidates))
    where = f"query {query!r}, in-process / vLLM:\n{table}"
    assert [key(c) for c in remote.candidates] == [key(c) for c in local.candidates], where
    dense = np.array([[a.dense_score, b.dense_score] for a, b in zip(local.candidates, remote.candidates)])
    assert np.abs(dense[:, 0] - dense[:, 1]).max() <= TOLERANCE, where
    assert local.reranked and remote.reranked
    rerank = np.array([[a.rerank_score, b.rerank_score] for a, b in zip(local.candidates, remote.candidates)])
    assert np.abs(rerank[:, 0] - rerank[:, 1]).max() <= TOLERANCE, where
    assert [c.selected for c in remote.candidates] == [c.selected for c in local.candidates]


# --- tests ----------------------------------------------------------------------------------------------------
def test_the_app_runs_both_models_on_the_vllm_servers(vllm_rag, vllm_servers):
    retrieval = vllm_rag.retrieve(QUERIES[0])
    assert retrieval.ran_on["rerank"].url == vllm_servers["rerank"].base_url
    assert vllm_rag.embedder.backend.url == vllm_servers["embed"].base_url
    assert vllm_rag.store.count() > 3 * vllm_rag.settings.top_k  # candidates are a real choice among chunks


def test_document_and_query_vectors_match_in_process(vllm_rag, local_models):
    local_embedder, _ = local_models
    texts = [c.text for q in QUERIES[:2] for c in vllm_rag.retrieve(q, use_reranker=False).candidates]
    assert len(set(texts)) > 10
    np.testing.assert_allclose(vllm_rag.embedder.embed_documents(texts), local_embedder.embed_documents(texts),
                               atol=TOLERANCE, rtol=0)
    for query in QUERIES:
        for instruction in (None, INSTRUCTIONS["query_instruction"]):
            np.testing.assert_allclose(vllm_rag.embedder.embed_query(query, instruction),
                                       local_embedder.embed_query(query, instruction), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("api", ["rerank", "score"])
def test_retrieve_through_vllm_matches_in_process(api, vllm_rag, local_rag, vllm_checkpoints, vllm_servers,
                                                  tmp_path):
    """Stored vectors from vLLM, query vector from vLLM, rerank scores from vLLM in the `api` shape."""
    settings = remote_settings(vllm_checkpoints, vllm_servers, tmp_path / "data", reranker_api=api)
    reranker = make_reranker(settings)
    assert reranker.backend.api == api
    remote = RAG(settings, embedder=vllm_rag.embedder, reranker=reranker, store=vllm_rag.store)
    results = []
    try:
        for query in QUERIES:
            for options in ({}, INSTRUCTIONS):
                local, through_vllm = local_rag.retrieve(query, **options), remote.retrieve(query, **options)
                assert_same_retrieval(local, through_vllm, query)
                results.append(local)
    finally:
        reranker.close()
    # Order parity means something only if the scores spread out: they do (dozens of distinct values).
    assert len({round(c.rerank_score, 3) for r in results for c in r.candidates}) > 20


def test_matryoshka_dimensions_match_in_process(vllm_checkpoints, vllm_servers, local_models, tmp_path):
    """embedding_dim=32: vLLM cuts and renormalises (it accepts `dimensions`: the checkpoint is served with
    is_matryoshka), the in-process embedder does the same; the whole retrieval still matches."""
    embedder, _ = vllm_checkpoints
    answer = httpx.post(vllm_servers["embed"].base_url + "/embeddings", timeout=60,
                        json={"model": str(embedder), "input": ["a volcano"], "dimensions": 32})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["data"][0]["embedding"]) == 32
    local_embedder = SentenceTransformerEmbedder(str(embedder), dim=32, device="cpu", dtype="fp32",
                                                 model=local_models[0].model)
    local = RAG(base_settings(vllm_checkpoints, tmp_path / "local", embedding_dim=32), embedder=local_embedder,
                reranker=local_models[1])
    remote_settings_32 = remote_settings(vllm_checkpoints, vllm_servers, tmp_path / "vllm", embedding_dim=32)
    remote = RAG(remote_settings_32, embedder=make_embedder(remote_settings_32))
    try:
        assert remote.embedder.dim == local.embedder.dim == 32
        for rag in (local, remote):
            rag.ingest_paths(KNOWLEDGE)
        for query in QUERIES:
            assert_same_retrieval(local.retrieve(query), remote.retrieve(query), query)
    finally:
        local.close()
        remote.close()
        remote.embedder.close()
        remote.reranker.close()
