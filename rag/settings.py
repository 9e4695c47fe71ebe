"""One place for every knob: a dataclass of commented defaults, filled from the environment."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

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
    dtype: str = "auto"  # auto = bf16 on GPUs and CPUs with bf16 matmul, else fp32; or fp32/bf16/fp16
    embed_batch_size: int = 16
    rerank_batch_size: int = 8
    max_rerank_tokens: int = 1024  # per query+document pair, template included
    max_embed_tokens: int = 1024  # per document chunk
    # --- vector store -----------------------------------------------------------------------------
    data_dir: Path = field(default_factory=default_data_dir)
    milvus_uri: str | None = None  # local path = Milvus Lite; http(s)://... = server / Zilliz Cloud
    milvus_token: str | None = None  # "user:password" or a Zilliz Cloud API key
    collection: str = "rag_chunks"
    # --- retrieval ----------------------------------------------------------------------------------
    top_k: int = 10  # dense candidates fetched from Milvus and shown in the inspection panel
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

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if self.milvus_uri is None:
            self.milvus_uri = str(self.data_dir / "milvus.db")
        if self.reranker_model is not None and self.reranker_model.strip().lower() in ("", "none", "off"):
            self.reranker_model = None
        if self.embedding_dim is not None and not 32 <= self.embedding_dim <= 4096:
            raise ValueError(f"embedding_dim={self.embedding_dim}: use a Matryoshka size from 32 to the "
                             "model's full dimension (1024 for Qwen3-Embedding-0.6B), or None for full size.")
        if self.top_k < 1 or self.top_n < 1:
            raise ValueError("top_k and top_n must be at least 1.")

    @property
    def is_local_milvus(self) -> bool:
        return not str(self.milvus_uri).startswith(("http://", "https://", "tcp://", "unix:"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read `RAG_<FIELD>` (and OPENAI_API_KEY / OPENAI_BASE_URL); keyword overrides win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"RAG_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _parse(f, raw)
        if "openai_api_key" not in values and env.get("OPENAI_API_KEY"):
            values["openai_api_key"] = env["OPENAI_API_KEY"]
        if "llm_base_url" not in values and env.get("OPENAI_BASE_URL"):
            values["llm_base_url"] = env["OPENAI_BASE_URL"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


def _parse(f: dataclasses.Field, raw: str) -> Any:
    """Turn an environment string into the field's type (ints, floats, bools, optional values)."""
    kind = str(f.type)
    if raw.strip().lower() in ("none", "") and "None" in kind:
        return None
    if kind.startswith("int"):
        return int(raw)
    if kind.startswith("float"):
        return float(raw)
    if kind.startswith("bool"):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if kind.startswith("Path"):
        return Path(raw)
    if kind.startswith("int |"):
        return int(raw)
    return raw
