"""One place for every knob: a dataclass of commented defaults, filled from the environment."""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from rag.errors import SettingsError

log = logging.getLogger(__name__)

DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"


def default_data_dir() -> Path:
    """`/data` on Hugging Face Spaces with persistent storage, else `./data`."""
    spaces = Path("/data")
    if spaces.is_dir() and os.access(spaces, os.W_OK):
        return spaces
    return Path("data")


@dataclass
class Settings:
    # --- models ---------------------------------------------------------------------------------
    embedding_model: str = "Qwen/Qwen3-Embedding-0.6B"  # a sentence-transformers model id or folder
    reranker_model: str | None = "Qwen/Qwen3-Reranker-0.6B"  # None turns reranking off
    embedding_dim: int | None = None  # Matryoshka size 32..full; None keeps the model's full size
    query_instruction: str = DEFAULT_TASK  # goes into "Instruct: {task}\nQuery:{query}"
    rerank_instruction: str = DEFAULT_TASK  # goes into the reranker's <Instruct>: line
    device: str = "auto"  # auto = cuda -> mps -> cpu
    dtype: str = "auto"  # auto = bf16 on GPUs and CPUs whose bf16 matmuls measure faster, else fp32; or fp32/bf16/fp16
    embed_batch_size: int = 32  # texts per embedding batch or packed pass (tokens are capped too: batching.py)
    rerank_batch_size: int = 16  # documents per packed reranker pass (tokens are capped too: rag/models/batching.py)
    max_rerank_tokens: int = 1024  # per query+document pair, template included
    max_embed_tokens: int = 1024  # per document chunk
    # Fused C++ kernels for the Qwen3 layers' element-wise work and packed attention on CPU (rag/models/native.py):
    # compiled once per machine in the background (~20 s, needs g++), same results, faster passes (docs/benchmarks.md);
    # False keeps transformers' ops and torch's SDPA.
    fused_kernels: bool = True
    # Keep a CPU pass's freed activations in the process (glibc mallopt, rag/models/heap.py) instead of page-faulting
    # them in again every pass: 3-11% per pass on an AMX CPU, peak memory no higher; False leaves glibc's defaults.
    keep_cpu_heap: bool = True
    # --- model servers (rag/models/remote_embedder.py, remote_reranker.py) ---------------------------
    # A URL replaces the in-process model: the model named above runs on that server (vLLM, TEI, Infinity,
    # Ollama, OpenAI); its tokenizer is still loaded here to count chunk tokens.
    embedding_url: str | None = None  # base of an OpenAI-compatible API: POST {url}/embeddings
    embedding_api_key: str | None = None  # sent as "Authorization: Bearer ..." when set
    reranker_url: str | None = None  # base of a rerank API: POST {url}/rerank or {url}/score
    reranker_api_key: str | None = None
    reranker_api: str = "rerank"  # rerank (Cohere/Jina: vLLM, Infinity, llama.cpp, LiteLLM) | score (vLLM) | tei
    reranker_template: bool = True  # send Qwen3-Reranker's prompt template; false if the server applies it
    model_timeout: float = 60.0  # seconds one model-server request may take
    model_retries: int = 3  # retries after 429, 5xx or a refused connection, with backoff (Retry-After honoured)
    remote_batch_size: int = 64  # texts per embeddings request
    remote_batch_tokens: int = 16384  # tokens per embeddings request (the server's own limit may be lower)
    # Caches (rag/models/cache.py), bounded by entries; 0 turns one off. A query vector is ~4 KB (1024 floats),
    # a rerank score ~0.3 KB with its key: together a few MB at these sizes.
    query_cache_size: int = 256  # query embeddings, keyed by (instruction, query)
    rerank_cache_size: int = 10_000  # rerank scores, keyed by (model, instruction, query, chunk content hash)
    # --- vector store -----------------------------------------------------------------------------
    data_dir: Path = field(default_factory=default_data_dir)
    milvus_uri: str | None = None  # local path = Milvus Lite; http(s)://... = server / Zilliz Cloud
    milvus_token: str | None = None  # "user:password" or a Zilliz Cloud API key
    milvus_timeout: float = 30.0  # seconds one call to a Milvus server may take (loads, flushes, index builds: 600)
    collection: str = "rag_chunks"
    default_kb: str | None = None  # folder or zip loaded into an empty collection (else the Milvus FAQ)
    # --- retrieval ----------------------------------------------------------------------------------
    top_k: int = 10  # candidates fetched from each retriever, fused, and shown in the inspection panel
    # First stage: dense | bm25 | hybrid (both lists fused). Hybrid by default: with adaptive fusion it stays
    # within 0.006 MRR@10 of dense on two held-out paraphrase sets and puts exact identifiers first
    # (docs/evaluation.md); RRF lost 0.084 to dense there.
    retrieval_mode: str = "hybrid"
    # hybrid: adaptive (BM25's weight = the evidence of an exact, distinctive match in this query's lists),
    # rrf (reciprocal rank, k = rrf_k) or weighted (min-max scores, fixed dense_weight)
    fusion: str = "adaptive"
    rrf_k: int = 60  # RRF's damping constant: 1 / (rrf_k + rank) per list
    dense_weight: float = 0.5  # weighted fusion: dense share, BM25 gets 1 - dense_weight
    bm25_analyzer: str = "standard"  # how Milvus splits text into BM25 terms: standard | jieba (Chinese)
    top_n: int = 3  # reranked passages sent to the LLM
    chunk_tokens: int = 512  # cap per chunk, in tokens of the embedding model's tokenizer
    chunk_overlap: int = 64  # tokens repeated between consecutive pieces of a long section
    # --- generation ---------------------------------------------------------------------------------
    llm_model: str = "gpt-4o"
    llm_base_url: str | None = None  # any OpenAI-compatible endpoint; None = api.openai.com
    openai_api_key: str | None = None  # from OPENAI_API_KEY
    temperature: float = 0.2
    max_tokens: int = 1024
    llm_timeout: float = 60.0  # seconds before a request to the LLM gives up
    # --- app ----------------------------------------------------------------------------------------
    shared_uploads: bool = False  # True: uploads are visible to everyone and persist
    chat_concurrency: int = 8  # chat turns and /ask, /retrieve calls running at once (rag/ui/serving.py)
    ingest_concurrency: int = 1  # uploads running at once: embedding saturates the CPU/GPU
    # With the models on model servers this process only waits on the network; the servers batch the work:
    server_chat_concurrency: int = 32  # chat turns at once when both models run on servers (rag/ui/serving.py)
    server_ingest_concurrency: int = 4  # uploads at once when the embedder runs on a server
    default_concurrency: int = 4  # any other event (listing, deleting, selecting a row)
    queue_max_size: int = 64  # requests waiting beyond these are refused with "queue full"
    max_upload_chunks: int = 1000  # chunks one upload from the app may add: one user can't hold the models for long
    max_private_chunks: int = 50_000  # all sessions' private uploads together: many sessions can't fill the disk
    # On a Milvus server (several app replicas may share it): a session's private uploads outlive the app
    # process serving it by at most this many seconds (it renews a lease every third of it; a process that
    # stopped without ending its sessions leaves them until the lease expires, then any replica removes them).
    session_ttl: float = 600.0
    warm_start: bool = True  # after start-up, compute the example questions' retrievals in the background

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if self.milvus_uri is None:
            self.milvus_uri = str(self.data_dir / "milvus.db")
        if self.reranker_model is not None and self.reranker_model.strip().lower() in ("", "none", "off"):
            self.reranker_model = None
        for name in ("embedding_url", "reranker_url", "embedding_api_key", "reranker_api_key"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                setattr(self, name, None)  # an empty variable means "not set"
        for name in ("embedding_url", "reranker_url"):
            if getattr(self, name):
                setattr(self, name, getattr(self, name).strip().rstrip("/"))
        self._validate()

    def _validate(self) -> None:
        """Ranges and choices, each error naming the variable and what it accepts."""
        if self.embedding_dim is not None and not 32 <= self.embedding_dim <= 4096:
            raise SettingsError(f"{describe('embedding_dim', self.embedding_dim)}: use a Matryoshka size from 32 "
                                "to the model's full dimension (1024 for Qwen3-Embedding-0.6B), or none for full "
                                "size.")
        for name in ("top_k", "top_n", "embed_batch_size", "rerank_batch_size", "max_tokens", "chat_concurrency",
                     "ingest_concurrency", "default_concurrency", "queue_max_size", "max_upload_chunks",
                     "max_private_chunks", "remote_batch_size", "remote_batch_tokens", "server_chat_concurrency",
                     "server_ingest_concurrency"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{describe(name, getattr(self, name))}: use a whole number of at least 1.")
        for name in ("query_cache_size", "rerank_cache_size"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{describe(name, getattr(self, name))}: use a whole number of entries, "
                                    "0 to turn that cache off.")
        for name in ("max_rerank_tokens", "max_embed_tokens", "chunk_tokens"):
            if getattr(self, name) < 32:
                raise SettingsError(f"{describe(name, getattr(self, name))}: use at least 32 tokens.")
        if not 0 <= self.chunk_overlap < self.chunk_tokens:
            raise SettingsError(f"{describe('chunk_overlap', self.chunk_overlap)}: use 0 up to chunk_tokens - 1 "
                                f"({self.chunk_tokens - 1}).")
        if not 0.0 <= self.temperature <= 2.0:
            raise SettingsError(f"{describe('temperature', self.temperature)}: use a number from 0 to 2.")
        if not self.session_ttl >= 3:
            raise SettingsError(f"{describe('session_ttl', self.session_ttl)}: use a number of seconds of at least "
                                "3 (600 is usual).")
        for name in ("llm_timeout", "model_timeout", "milvus_timeout"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{describe(name, getattr(self, name))}: use a number of seconds above 0.")
        if self.model_retries < 0:
            raise SettingsError(f"{describe('model_retries', self.model_retries)}: use 0 (no retries) or more.")
        for name in ("embedding_url", "reranker_url"):
            url = getattr(self, name)
            if url is not None and not URL.fullmatch(url):
                raise SettingsError(f"{describe(name, url)}: use the server's base URL, e.g. "
                                    "http://localhost:8000/v1 (http:// or https://).")
        if self.dtype not in DTYPES:
            raise SettingsError(f"{describe('dtype', self.dtype)}: use one of {', '.join(DTYPES)}.")
        if not DEVICE.fullmatch(self.device):
            raise SettingsError(f"{describe('device', self.device)}: use auto, cpu, cuda, cuda:N or mps.")
        for name, choices in (("retrieval_mode", RETRIEVAL_MODES), ("fusion", FUSIONS),
                              ("bm25_analyzer", ANALYZERS), ("reranker_api", RERANKER_APIS)):
            if getattr(self, name) not in choices:
                raise SettingsError(f"{describe(name, getattr(self, name))}: use one of {', '.join(choices)}.")
        if self.rrf_k < 1:
            raise SettingsError(f"{describe('rrf_k', self.rrf_k)}: use a whole number of at least 1 (60 is usual).")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise SettingsError(f"{describe('dense_weight', self.dense_weight)}: use a number from 0 to 1.")
        if not self.collection or not COLLECTION.fullmatch(self.collection):
            raise SettingsError(f"{describe('collection', self.collection)}: a Milvus collection name starts "
                                "with a letter or _ and holds only letters, digits and _ (255 at most).")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read `RAG_<FIELD>` (and OPENAI_API_KEY / OPENAI_BASE_URL); keyword overrides win. A value that
        can't be read raises `SettingsError` naming the variable and what it accepts."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(env_name(f.name))
            if raw is not None:
                values[f.name] = parse_value(env_name(f.name), raw, str(f.type))
        if "openai_api_key" not in values and env.get("OPENAI_API_KEY"):
            values["openai_api_key"] = env["OPENAI_API_KEY"]
        if "llm_base_url" not in values and env.get("OPENAI_BASE_URL"):
            values["llm_base_url"] = env["OPENAI_BASE_URL"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        warn_unknown_variables(env)
        return cls(**values)

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


# --- reading values -------------------------------------------------------------------------------
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")
DTYPES = ("auto", "fp32", "float32", "bf16", "bfloat16", "fp16", "float16", "bf16w", "int8")
RETRIEVAL_MODES = ("dense", "bm25", "hybrid")
FUSIONS = ("adaptive", "rrf", "weighted")
ANALYZERS = ("standard", "jieba")
RERANKER_APIS = ("rerank", "score", "tei")
URL = re.compile(r"https?://\S+")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
COLLECTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
# RAG_* variables read outside `Settings` (ingest limits, queue sizes, the default knowledge base).
OTHER_VARIABLES = {"RAG_MAX_FILE_MB", "RAG_MAX_PDF_PAGES", "RAG_MAX_ZIP_ENTRIES", "RAG_MAX_ZIP_MB",
                   "RAG_MAX_ZIP_RATIO"}


def env_name(field_name: str) -> str:
    return f"RAG_{field_name.upper()}"


def describe(field_name: str, value: Any) -> str:
    """How an error names a setting: the field, its environment variable and the value it got."""
    return f"{field_name}={value!r} ({env_name(field_name)})"


def parse_value(name: str, raw: str, kind: str) -> Any:
    """Turn the text of variable `name` into a value of annotation `kind` ("int", "float | None", "bool",
    "Path", "str", ...); a value that doesn't read as that kind raises `SettingsError` saying what would."""
    text = raw.strip()
    optional = "None" in kind
    base = kind.replace("| None", "").strip()
    if optional and text.lower() in ("", "none"):
        return None
    try:
        if base == "int":
            return int(text)
        if base == "float":
            return float(text)
    except ValueError:
        what = "a whole number" if base == "int" else "a number"
        hint = " (or none)" if optional else ""
        raise SettingsError(f"{name}={raw!r} is not {what}: set it to {what}{hint}, or unset it for the "
                            "default.") from None
    if base == "bool":
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise SettingsError(f"{name}={raw!r} is not a yes/no value: use true or false (1/0, yes/no and on/off "
                            "work too), or unset it for the default.")
    if base == "Path":
        return Path(text)
    return raw


def env_int(name: str, default: int, env: Mapping[str, str] | None = None, minimum: int = 1) -> int:
    """An integer variable outside `Settings` (queue sizes, limits), read with the same rules and errors."""
    env = os.environ if env is None else env
    if name not in env:
        return default
    value = parse_value(name, env[name], "int")
    if value < minimum:
        raise SettingsError(f"{name}={env[name]!r}: use a whole number of at least {minimum}.")
    return value


def env_float(name: str, default: float, env: Mapping[str, str] | None = None) -> float:
    env = os.environ if env is None else env
    if name not in env:
        return default
    value = parse_value(name, env[name], "float")
    if not value > 0:
        raise SettingsError(f"{name}={env[name]!r}: use a number above 0.")
    return value


def warn_unknown_variables(env: Mapping[str, str]) -> None:
    """A misspelt RAG_ variable would otherwise be ignored without a word."""
    known = {env_name(f.name) for f in dataclasses.fields(Settings)} | OTHER_VARIABLES
    for name in sorted(k for k in env if k.startswith("RAG_") and k not in known and not k.startswith("RAG_TEST_")):
        log.warning("ignoring unknown environment variable %s (the RAG_* settings are listed in rag/settings.py)",
                    name)
