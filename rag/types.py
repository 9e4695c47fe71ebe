"""Results as dataclasses: chunks going into the store, candidates and retrievals coming out."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

SHARED_OWNER = ""  # owner of the base knowledge base: visible to every session


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def document_id(source: str, owner: str = SHARED_OWNER) -> str:
    """Same file name, same owner -> same document: re-uploading it replaces the old version."""
    return hashlib.sha256(f"{owner}\x00{source}".encode("utf-8")).hexdigest()[:24]


def chunk_id(doc_id: str, text_hash: str) -> int:
    """A positive INT64 primary key from the document and the chunk's content: re-adding never duplicates."""
    digest = hashlib.sha256(f"{doc_id}\x00{text_hash}".encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass
class Chunk:
    text: str
    source: str  # file name shown to users
    chunk_index: int = 0  # position within the document
    heading: str = ""  # heading path, e.g. "FAQ > Performance"
    owner: str = SHARED_OWNER
    doc_id: str = ""
    content_hash: str = ""
    id: int = 0
    tokens: int = 0  # counted when chunked, for ingestion reports; not stored (0 when read back)

    def __post_init__(self) -> None:
        self.doc_id = self.doc_id or document_id(self.source, self.owner)
        self.content_hash = self.content_hash or content_hash(self.text)
        self.id = self.id or chunk_id(self.doc_id, self.content_hash)


@dataclass
class Hit:
    """A chunk found by a search: the dense one's inner-product (cosine) score, or BM25's (higher is better)."""
    chunk: Chunk
    score: float


@dataclass
class DocumentInfo:
    doc_id: str
    source: str
    owner: str
    chunks: int


@dataclass
class Candidate:
    text: str
    source: str
    chunk_id: int
    dense_score: float  # inner product with the query's embedding, computed for every candidate
    dense_rank: int | None  # 1-based rank in the dense top_k list; None when only BM25 found it
    rerank_score: float | None = None  # P("yes") from the reranker; None when reranking is off
    rerank_rank: int | None = None  # 1-based rank by reranker score
    selected: bool = False  # one of the top_n passages sent to the LLM
    heading: str = ""
    doc_id: str = ""
    chunk_index: int = 0
    bm25_score: float = 0.0  # Milvus' BM25 for the query, computed for every candidate; 0 when no term matches
    bm25_rank: int | None = None  # 1-based rank in the BM25 top_k list; None when only dense search found it
    fused_score: float | None = None  # first-stage score: RRF / weighted in hybrid mode, else the mode's own
    fused_rank: int | None = None  # 1-based first-stage rank (None in traces from before hybrid search)

    @property
    def first_rank(self) -> int:
        """Rank after the first stage (dense, BM25 or their fusion), before any reranking."""
        if self.fused_rank is not None:
            return self.fused_rank
        return self.dense_rank if self.dense_rank is not None else self.bm25_rank or 0

    @property
    def rank(self) -> int:
        """Final rank: the reranker's when it ran, else the first stage's."""
        return self.rerank_rank if self.rerank_rank is not None else self.first_rank

    @property
    def found_by(self) -> str:
        """Which first-stage lists hold it: "both", "dense" or "bm25"."""
        if self.dense_rank is not None and self.bm25_rank is not None:
            return "both"
        return "dense" if self.dense_rank is not None else "bm25"


@dataclass(frozen=True)
class Backend:
    """Where a model runs: in this process (`device`, `precision`) or on a model server (`url`, `api`)."""
    kind: str  # "local" | "server"
    device: str = ""  # local: cpu, cuda, mps
    precision: str = ""  # local: fp32, bfloat16, int8, ...
    url: str = ""  # server: the base URL requests go to
    api: str = ""  # server: embeddings | rerank | score | tei

    def describe(self) -> str:
        if self.kind == "local":
            return f"local {self.device} {self.precision}".strip()
        return f"{self.url} ({self.api})" if self.api else self.url


@dataclass
class Retrieval:
    query: str
    candidates: list[Candidate] = field(default_factory=list)  # in final rank order
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    reranked: bool = False
    mode: str = "dense"  # the first stage: dense | bm25 | hybrid
    ran_on: dict[str, Backend] = field(default_factory=dict)  # model stage (embed_query, rerank) -> where it ran

    @property
    def selected(self) -> list[Candidate]:
        return [c for c in self.candidates if c.selected]
