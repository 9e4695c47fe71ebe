"""The default knowledge base, loaded once into an empty collection at first start.

In order: an existing shared collection is kept as it is; else `RAG_DEFAULT_KB` (a local folder or zip);
else the Milvus 2.4 FAQ (en/faq/*.md) from the milvus-docs release zip the Qwen3 + Milvus tutorial uses,
downloaded with a short timeout and cached in the data folder; else the Markdown files shipped in
assets/knowledge/ (offline fallback). The result says which one was loaded, for the logs and the UI.
"""
from __future__ import annotations

import fnmatch
import logging
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rag.ingest import BytesInput, IngestReport
from rag.ingest.loaders import IngestLimits
from rag.ingest.loaders.archive import iter_zip
from rag.ingest.report import ProgressFn, Span
from rag.pipeline import RAG
from rag.types import SHARED_OWNER

log = logging.getLogger(__name__)

MILVUS_DOCS_URL = ("https://github.com/milvus-io/milvus-docs/releases/download/v2.4.6-preview/"
                   "milvus_docs_2.4.x_en.zip")
FAQ_MEMBERS = "en/faq/*.md"
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "knowledge"
DOWNLOAD_TIMEOUT = 10.0  # seconds: offline machines must fall back quickly
MAX_DOWNLOAD_BYTES = 100 * 1024 * 1024

ORIGIN_ZIP = "milvus-docs zip"
ORIGIN_ASSETS = "bundled assets"
ORIGIN_LOCAL = "local path"
ORIGIN_EXISTING = "existing collection"


class DownloadError(OSError):
    """The milvus-docs zip could not be fetched (offline, timeout, HTTP error)."""


@dataclass
class KnowledgeBaseInfo:
    name: str  # what was loaded, e.g. "Milvus 2.4 FAQ"
    origin: str  # "milvus-docs zip" | "bundled assets" | "local path" | "existing collection"
    documents: int  # shared documents in the collection now
    chunks: int  # their chunks
    loaded_now: bool  # False when the collection already had a knowledge base
    message: str  # one line for the UI and the log
    report: IngestReport | None = None  # the ingestion report when loaded_now


def ensure_default_knowledge_base(rag: RAG, progress: ProgressFn | None = None, *,
                                  local: str | Path | None = None, url: str = MILVUS_DOCS_URL,
                                  timeout: float = DOWNLOAD_TIMEOUT,
                                  assets_dir: Path = ASSETS_DIR) -> KnowledgeBaseInfo:
    """Load the default knowledge base into an empty collection; keep an existing one untouched.
    `local` (default: `Settings.default_kb`, env RAG_DEFAULT_KB) is a folder or zip to load instead of the download."""
    if rag.store.has_documents(SHARED_OWNER):
        return _info(rag, "shared documents", ORIGIN_EXISTING, loaded_now=False)
    local = local or rag.settings.default_kb or None
    if local is not None:
        if Path(local).exists():
            report = rag.ingest_paths([Path(local)], owner=SHARED_OWNER, progress=progress)
            return _info(rag, Path(local).name, ORIGIN_LOCAL, report=report)
        log.warning("RAG_DEFAULT_KB=%s does not exist; falling back to the default knowledge base", local)
    try:
        report = _load_milvus_faq(rag, url, timeout, progress)
        return _info(rag, "Milvus 2.4 FAQ", ORIGIN_ZIP, report=report)
    except OSError as exc:
        log.warning("could not load the Milvus FAQ from %s (%s); loading the bundled knowledge base", url, exc)
    report = rag.ingest_paths(sorted(assets_dir.glob("*.md")), owner=SHARED_OWNER, progress=progress)
    return _info(rag, "bundled knowledge base", ORIGIN_ASSETS, report=report)


# --- the milvus-docs zip ----------------------------------------------------------------------------
def _load_milvus_faq(rag: RAG, url: str, timeout: float, progress: ProgressFn | None) -> IngestReport:
    Span(progress).report("downloading the Milvus FAQ", 0.0)
    data = _cached_or_download(url, timeout, Path(rag.settings.data_dir))
    members = [m for m in iter_zip(data, Path(url).name, IngestLimits(),
                                   lambda name: fnmatch.fnmatch(name, FAQ_MEMBERS) or
                                   fnmatch.fnmatch(name, "*/" + FAQ_MEMBERS))
               if m.error is None]
    if not members:
        raise DownloadError(f"no {FAQ_MEMBERS} files in {url}")
    return rag.ingest([BytesInput(Path(m.name).name, m.data) for m in members], owner=SHARED_OWNER,
                      progress=progress)


def _cached_or_download(url: str, timeout: float, data_dir: Path) -> bytes:
    cache = data_dir / Path(url).name
    if cache.is_file():
        log.info("using the cached %s", cache)
        return cache.read_bytes()
    data = download(url, timeout)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(data)
    except OSError:
        log.warning("could not cache %s in %s", Path(url).name, data_dir, exc_info=True)
    return data


def download(url: str, timeout: float = DOWNLOAD_TIMEOUT) -> bytes:
    """Fetch `url` within `timeout` seconds overall (DNS included: the fetch runs in a daemon thread)."""
    result: dict = {}

    def fetch() -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed https URL
                result["data"] = response.read(MAX_DOWNLOAD_BYTES + 1)
        except Exception as exc:  # reported to the caller below
            result["error"] = exc

    worker = threading.Thread(target=fetch, name="kb-download", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise DownloadError(f"download of {url} took longer than {timeout:.0f} s")
    if "error" in result:
        raise DownloadError(f"download of {url} failed: {result['error']}")
    if len(result["data"]) > MAX_DOWNLOAD_BYTES:
        raise DownloadError(f"{url} is larger than {MAX_DOWNLOAD_BYTES // 2**20} MB")
    return result["data"]


# --- reporting --------------------------------------------------------------------------------------
def _info(rag: RAG, name: str, origin: str, report: IngestReport | None = None,
          loaded_now: bool = True) -> KnowledgeBaseInfo:
    documents = rag.store.documents(SHARED_OWNER)
    chunks = sum(d.chunks for d in documents)
    if loaded_now:
        message = f"Loaded the {name} ({origin}): {len(documents)} documents, {chunks} chunks."
        if report is not None and report.failed:
            message += f" {len(report.failed)} file(s) failed: " + "; ".join(
                f"{f.source}: {f.reason}" for f in report.failed[:3])
    else:
        message = f"Using the existing knowledge base: {len(documents)} documents, {chunks} chunks."
    log.info(message)
    return KnowledgeBaseInfo(name, origin, len(documents), chunks, loaded_now, message, report)
