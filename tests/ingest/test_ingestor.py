"""Ingestion end to end with the tiny models: mixed batches, dedup, replace, delete, owners, progress."""
import threading

import pytest

from rag.ingest import FileInput, Ingestor
from rag.ingest.loaders import IngestLimits
from rag.types import document_id
from tests import ingest_files as files


def _by_source(report):
    return {f.source: f for f in report.files}


@pytest.fixture
def mixed_batch(tmp_path):
    """Every kind of good and bad file in one folder."""
    folder = tmp_path / "batch"
    folder.mkdir()
    files.write_markdown(folder)
    files.write_html(folder)
    files.write_latin1(folder)
    files.write_pdf(folder)
    files.write_docx(folder)
    files.write_empty(folder)
    files.write_binary_as_text(folder)
    files.write_corrupt_pdf(folder)
    files.write_pdf(folder, "locked.pdf", password="s3cret")
    files.write_zip(folder, {"inner/light.md": files.GOOD_ZIP_MEMBER, "../escape.md": b"# x\n\nescape",
                             "bomb.txt": files.BOMB_MEMBER})
    (folder / "ignored.xyz").write_text("not a supported type")
    (folder / ".hidden.md").write_text("# hidden\n\nnot picked up")
    return folder


def test_mixed_batch_stores_good_files_and_explains_bad_ones(tiny_rag, mixed_batch):
    report = tiny_rag.ingest_paths([mixed_batch])
    results = _by_source(report)
    ok = {s for s, f in results.items() if f.status == "ok"}
    assert ok == {"guide.md", "tides.html", "cuisine.txt", "ice.pdf", "report.docx", "bundle.zip/inner/light.md"}
    reasons = {s: f.reason for s, f in results.items() if f.status == "failed"}
    assert set(reasons) == {"empty.md", "photo.txt", "broken.pdf", "locked.pdf", "bundle.zip/../escape.md",
                            "bundle.zip/bomb.txt"}
    assert "empty" in reasons["empty.md"] and "binary" in reasons["photo.txt"]
    assert "not a readable PDF" in reasons["broken.pdf"] and "password" in reasons["locked.pdf"]
    assert "'..'" in reasons["bundle.zip/../escape.md"] and "zip bomb" in reasons["bundle.zip/bomb.txt"]
    assert not report.ok and len(report.failed) == 6
    # the store holds exactly the good documents, with the counts the report gave
    stored = {d.source: d.chunks for d in tiny_rag.store.documents()}
    assert stored == {s: results[s].chunks for s in ok}
    assert tiny_rag.store.count() == report.chunks == sum(stored.values())


def test_chunks_carry_source_position_heading_and_clean_text(tiny_rag, mixed_batch):
    tiny_rag.ingest_paths([mixed_batch])
    store = tiny_rag.store
    guide = store.chunks(document_id("guide.md"))
    assert [c.chunk_index for c in guide] == list(range(len(guide)))
    assert any(c.heading == "Birds > Owls > Barn owl" and c.text.startswith("Owls > Barn owl") for c in guide)
    html_text = " ".join(c.text for c in store.chunks(document_id("tides.html")))
    assert "sting small fish" in html_text and "SECRET" not in html_text
    pdf = store.chunks(document_id("ice.pdf"))
    assert "calving" in " ".join(c.text for c in pdf) and pdf[0].heading.startswith("Page 1")
    assert "crème brûlée" in " ".join(c.text for c in store.chunks(document_id("cuisine.txt")))
    docx_chunks = store.chunks(document_id("report.docx"))
    assert any(c.heading == "Annual report > Pears" for c in docx_chunks)


def test_oversize_file_fails_with_the_limit_and_others_go_in(tiny_rag, tmp_path):
    big = files.write_markdown(tmp_path, "big.md", "# Big\n\n" + "word " * 2000)
    small = files.write_markdown(tmp_path, "small.md", "# Small\n\nA short note about kites and wind.")
    ingestor = Ingestor(tiny_rag.embedder, tiny_rag.store, tiny_rag.settings, IngestLimits(max_file_bytes=2000))
    report = ingestor.ingest([FileInput(big), FileInput(small)])
    results = _by_source(report)
    assert results["big.md"].status == "failed" and "RAG_MAX_FILE_MB" in results["big.md"].reason
    assert results["small.md"].status == "ok"


def test_missing_path_is_a_failed_row(tiny_rag, tmp_path):
    report = tiny_rag.ingest_paths([tmp_path / "nope.md"])
    assert report.files[0].status == "failed" and "does not exist" in report.files[0].reason


def test_reingest_is_a_noop_and_a_copy_under_another_name_is_a_duplicate(tiny_rag, tmp_path):
    path = files.write_markdown(tmp_path)
    first = tiny_rag.ingest_paths([path])
    count = tiny_rag.store.count()
    again = tiny_rag.ingest_paths([path])
    copy = tiny_rag.ingest_paths([(path, "copy-of-guide.md")])
    assert first.files[0].status == "ok"
    assert again.files[0].status == "skipped" and "unchanged" in again.files[0].reason
    assert copy.files[0].status == "skipped" and "duplicate of guide.md" in copy.files[0].reason
    assert tiny_rag.store.count() == count and len(tiny_rag.store.documents()) == 1


def test_changed_file_replaces_its_old_version(tiny_rag, tmp_path):
    path = files.write_markdown(tmp_path)
    tiny_rag.ingest_paths([path])
    doc = document_id("guide.md")
    before = {c.text for c in tiny_rag.store.chunks(doc)}
    files.write_markdown(tmp_path, text=files.NESTED_MD.replace("Penguins cannot fly", "Penguins never fly"))
    report = tiny_rag.ingest_paths([path])
    after = {c.text for c in tiny_rag.store.chunks(doc)}
    assert report.files[0].status == "ok" and report.files[0].reused == len(before) - 1  # 1 chunk re-embedded
    assert len(after) == len(before) and len(after - before) == 1
    assert any("never fly" in t for t in after) and not any("cannot fly" in t for t in after)
    assert tiny_rag.store.count() == len(after)


def test_search_during_replacement_sees_one_whole_version(tiny_rag, tmp_path):
    """Searches racing with replacements see exactly the old or exactly the new chunk set of the document."""
    versions = [f"# Rivers\n\nVersion {v}: rivers carry water to the sea, {v} times a day.\n\n## Deltas\n\n"
                f"Version {v}: deltas form where rivers drop sand and silt.\n" for v in range(4)]
    path = tmp_path / "rivers.md"
    path.write_text(versions[0])
    tiny_rag.ingest_paths([path])
    vector = tiny_rag.embedder.embed_query("rivers")
    seen, stop = [], threading.Event()

    def search() -> None:
        while not stop.is_set():
            texts = [h.chunk.text for h in tiny_rag.store.search(vector, top_k=20)]
            seen.append(frozenset(t.split("Version ")[1][0] for t in texts))

    thread = threading.Thread(target=search)
    thread.start()
    try:
        for text in versions[1:]:
            path.write_text(text)
            assert tiny_rag.ingest_paths([path]).files[0].status == "ok"
    finally:
        stop.set()
        thread.join()
    assert seen and all(len(s) == 1 for s in seen)  # never a mix of versions, never empty


def test_delete_removes_exactly_one_document(tiny_rag, tmp_path):
    a = files.write_markdown(tmp_path, "a.md", "# A\n\nApples grow on trees in orchards across the valley.")
    b = files.write_markdown(tmp_path, "b.md", "# B\n\nBananas grow in warm climates on large plants.")
    report = tiny_rag.ingest_paths([a, b])
    b_chunks = _by_source(report)["b.md"].chunks
    [doc] = tiny_rag.store.find_documents("a.md")
    assert tiny_rag.store.delete_document(doc.doc_id) == _by_source(report)["a.md"].chunks
    assert [(d.source, d.chunks) for d in tiny_rag.store.documents()] == [("b.md", b_chunks)]
    assert tiny_rag.store.count() == b_chunks


def test_owners_and_display_names(tiny_rag, tmp_path):
    upload = files.write_markdown(tmp_path, "tmp8f3k2.md", "# Kites\n\nKites fly best in steady coastal wind.")
    shared = files.write_markdown(tmp_path, "base.md", "# Boats\n\nSailing boats tack against the wind.")
    tiny_rag.ingest_paths([shared])
    report = tiny_rag.ingest_paths([upload], owner="session-1", names=["kites.md"])
    assert report.files[0].source == "kites.md"
    assert {d.source for d in tiny_rag.store.documents("session-1")} == {"base.md", "kites.md"}
    assert {d.source for d in tiny_rag.store.documents("")} == {"base.md"}
    assert {c.source for c in tiny_rag.retrieve("kites", owner="session-2").candidates} == {"base.md"}
    with pytest.raises(ValueError, match="one name"):
        tiny_rag.ingest_paths([upload], names=["a", "b"])


def test_progress_reports_files_and_embedding_batches(tiny_rag, tmp_path):
    paths = [files.write_markdown(tmp_path, f"n{i}.md", f"# Note {i}\n\n" + f"Topic {i} sentence. " * 40)
             for i in range(3)]
    calls = []
    tiny_rag.ingest_paths(paths, progress=lambda message, fraction: calls.append((message, fraction)))
    fractions = [f for _, f in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and all(0 <= f <= 1 for f in fractions)
    messages = " | ".join(m for m, _ in calls)
    assert "n0.md (1/3)" in messages and "n2.md (3/3)" in messages and "embedded" in messages


def test_add_texts_is_one_document(tiny_rag):
    report = tiny_rag.add_texts(["# Kites\n\nKites fly on windy beaches.", "# Boats\n\nBoats float."], "notes")
    again = tiny_rag.add_texts(["# Kites\n\nKites fly on windy beaches.", "# Boats\n\nBoats float."], "notes")
    assert report.files[0].status == "ok" and again.files[0].status == "skipped"
    assert [(d.source, d.chunks) for d in tiny_rag.store.documents()] == [("notes", report.chunks)]
    assert set(report.timings) == {"parse", "chunk", "embed", "write", "index"}


# --- fair sharing: a chunk budget per call, writes in steps, cancel -------------------------------------
def _sections(n: int, word: str = "glacier") -> str:
    """A document of `n` sections, each long enough to be a chunk of its own."""
    return "# Field notes\n\n" + "\n\n".join(
        f"## Section {i}\n\n" + " ".join(f"The {word} survey {i} measured ice flow at station {j}." for j in range(4))
        for i in range(n))


def test_a_document_over_the_chunk_budget_fails_with_the_limit_and_writes_nothing(tiny_rag):
    from rag.ingest import TextInput

    report = tiny_rag.ingest([TextInput("small.md", (_sections(3),)), TextInput("big.md", (_sections(40),))],
                             max_chunks=20)
    small, big = report.files
    assert small.status == "ok" and 0 < small.chunks <= 20
    assert big.status == "failed" and f"more than this upload may add ({20 - small.chunks}" in big.reason
    assert "limit per upload is 20 chunks" in big.reason and "Split it" in big.reason
    assert {d.source for d in tiny_rag.store.documents()} == {"small.md"}
    assert tiny_rag.ingest([TextInput("big.md", (_sections(40),))]).files[0].status == "ok"  # no limit: no cap


def test_text_too_long_for_the_budget_fails_before_it_is_chunked(tiny_rag):
    import time

    from rag.ingest import BytesInput

    huge = ("word " * 2_000_000).encode()  # 10 MB on one line: chunking it would take over a minute
    started = time.perf_counter()
    result = tiny_rag.ingest([BytesInput("huge.md", huge)], max_chunks=100).files[0]
    assert time.perf_counter() - started < 5
    assert result.status == "failed" and "10,000,000 characters" in result.reason and "100 chunks" in result.reason
    assert tiny_rag.store.count() == 0


def test_a_large_document_is_written_in_steps_and_a_cancel_stops_it_between_steps(tiny_rag):
    from rag.ingest import IngestCancelled, TextInput
    from rag.ingest.ingestor import WRITE_BATCH

    counts = []
    report = tiny_rag.ingest([TextInput("long.md", (_sections(3 * WRITE_BATCH),))],
                             progress=lambda message, _: counts.append(tiny_rag.store.count()))
    total = report.files[0].chunks
    assert report.files[0].status == "ok" and total > 2 * WRITE_BATCH
    assert any(0 < n < total for n in counts)  # searchable step by step, never all held in memory first
    assert tiny_rag.store.count() == total

    cancel = threading.Event()

    def progress(message: str, _: float) -> None:
        if tiny_rag.store.count() > total:  # the second document's first step is in: the session ends
            cancel.set()

    with pytest.raises(IngestCancelled, match="session ended"):
        tiny_rag.ingest([TextInput("other.md", (_sections(3 * WRITE_BATCH, "volcano"),))], owner="alice",
                        progress=progress, cancel=cancel)
    written = tiny_rag.store.count() - total
    assert 0 < written < total  # stopped within a step or two; the caller removes what it wrote


def test_bidi_and_control_characters_never_reach_a_stored_name(tiny_rag):
    from rag.ingest import BytesInput

    spoofed = "invoice\u202efdp.md"  # shows as "invoicedm.pdf"
    report = tiny_rag.ingest([BytesInput(spoofed, b"# Invoice\n\nPay the walrus."),
                              BytesInput("isolate\u2067x\u2069\x1b[31m.md", b"# Isolate\n\nText about seals.")])
    assert [f.source for f in report.files] == ["invoicefdp.md", "isolatex[31m.md"]
    assert {d.source for d in tiny_rag.store.documents()} == {"invoicefdp.md", "isolatex[31m.md"}
