"""Default knowledge base: milvus-docs zip when reachable, bundled assets offline, RAG_DEFAULT_KB, existing."""
import time

from rag.knowledge_base import ASSETS_DIR, ensure_default_knowledge_base
from tests import ingest_files as files

UNREACHABLE = "http://127.0.0.1:9/milvus_docs_2.4.x_en.zip"  # the discard port: connection refused at once


def test_offline_falls_back_to_bundled_assets_fast(tiny_rag):
    started = time.perf_counter()
    info = ensure_default_knowledge_base(tiny_rag, url=UNREACHABLE, timeout=5)
    assert time.perf_counter() - started < 60
    assert info.origin == "bundled assets" and info.loaded_now
    assert info.documents == len(list(ASSETS_DIR.glob("*.md"))) >= 3
    assert info.chunks == tiny_rag.store.count() > 0 and "bundled" in info.message
    again = ensure_default_knowledge_base(tiny_rag, url=UNREACHABLE)
    assert again.origin == "existing collection" and not again.loaded_now and again.chunks == info.chunks


def test_milvus_docs_zip_loads_only_the_faq(tiny_rag, tmp_path):
    archive = files.write_zip(tmp_path, {
        "en/faq/product_faq.md": b"# Product FAQ\n\n## Is Milvus free?\n\nYes, it is open source.",
        "en/faq/performance_faq.md": b"# Performance FAQ\n\n## Is it fast?\n\nSearch takes milliseconds.",
        "en/about/overview.md": b"# Overview\n\nNot part of the FAQ."}, name="milvus_docs_2.4.x_en.zip")
    info = ensure_default_knowledge_base(tiny_rag, url=archive.as_uri())
    assert info.origin == "milvus-docs zip" and info.documents == 2
    assert {d.source for d in tiny_rag.store.documents()} == {"product_faq.md", "performance_faq.md"}
    assert (tiny_rag.settings.data_dir / "milvus_docs_2.4.x_en.zip").is_file()  # cached for next time


def test_local_path_from_the_environment(tiny_rag, tmp_path):
    from rag import Settings

    folder = tmp_path / "kb"
    folder.mkdir()
    files.write_markdown(folder)
    tiny_rag.settings = tiny_rag.settings.replace(
        default_kb=Settings.from_env({"RAG_DEFAULT_KB": str(folder)}).default_kb)
    info = ensure_default_knowledge_base(tiny_rag, url=UNREACHABLE)
    assert info.origin == "local path" and info.documents == 1 and info.name == "kb"


def test_uploads_do_not_count_as_a_knowledge_base(tiny_rag, tmp_path):
    tiny_rag.ingest_paths([files.write_markdown(tmp_path)], owner="session-1")
    info = ensure_default_knowledge_base(tiny_rag, url=UNREACHABLE)
    assert info.origin == "bundled assets" and info.loaded_now
