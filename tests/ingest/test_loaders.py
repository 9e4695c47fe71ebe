"""Loaders: every format becomes Markdown-like text, or a specific error that says what to do."""
import pytest

from rag.ingest.loaders import (
    BinaryContentError,
    CorruptDocumentError,
    EmptyDocumentError,
    EncryptedDocumentError,
    IngestLimits,
    LimitExceededError,
    UnsafeArchiveError,
    UnsupportedFormatError,
    load_document,
)
from rag.ingest.loaders.archive import iter_zip
from tests import ingest_files as files


def _load(path, limits=None):
    return load_document(path.name, path.read_bytes(), limits)


def test_markdown_keeps_headings_and_text(tmp_path):
    doc = _load(files.write_markdown(tmp_path))
    assert "### Barn owl" in doc.text and "heart-shaped" in doc.text


def test_latin1_text_is_decoded_with_its_accents(tmp_path):
    doc = _load(files.write_latin1(tmp_path))
    assert "crème brûlée" in doc.text and "française" in doc.text


def test_utf16_with_bom_is_text(tmp_path):
    path = tmp_path / "u16.txt"
    path.write_bytes("Zürich has a lake.\n".encode("utf-16"))
    assert "Zürich" in _load(path).text


def test_html_drops_scripts_styles_comments(tmp_path):
    doc = _load(files.write_html(tmp_path))
    assert doc.title == "Tide pools"
    assert "# Tide pools" in doc.text and "## Anemones" in doc.text and "sting small fish" in doc.text
    assert "SECRET" not in doc.text


def test_pdf_pages_become_sections(tmp_path):
    doc = _load(files.write_pdf(tmp_path))
    assert doc.pages == 3 and doc.title == "Ice"
    assert doc.text.index("## Page 1") < doc.text.index("Glaciers") < doc.text.index("## Page 2")
    assert "calving" in doc.text and "## Page 3" in doc.text


def test_docx_headings_lists_and_tables(tmp_path):
    doc = _load(files.write_docx(tmp_path))
    assert "# Annual report" in doc.text and "## Pears" in doc.text
    assert "- Plant frost-resistant varieties" in doc.text
    assert "| Fruit | Tonnes |" in doc.text and "| Apples | 120 |" in doc.text


@pytest.mark.parametrize("writer, error, words", [
    (files.write_empty, EmptyDocumentError, "empty"),
    (files.write_binary_as_text, BinaryContentError, "binary"),
    (files.write_corrupt_pdf, CorruptDocumentError, "not a readable PDF"),
    (lambda d: files.write_pdf(d, "locked.pdf", password="s3cret"), EncryptedDocumentError, "password"),
])
def test_bad_files_raise_specific_errors(tmp_path, writer, error, words):
    with pytest.raises(error, match=words):
        _load(writer(tmp_path))


def test_whitespace_only_file_is_empty(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("  \n\n \t\n")
    with pytest.raises(EmptyDocumentError):
        _load(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "sheet.xlsx"
    path.write_bytes(b"PK whatever")
    with pytest.raises(UnsupportedFormatError, match="Supported"):
        _load(path)


def test_file_size_limit_names_the_setting(tmp_path):
    path = files.write_markdown(tmp_path)
    with pytest.raises(LimitExceededError, match="RAG_MAX_FILE_MB"):
        _load(path, IngestLimits(max_file_bytes=100))


def test_pdf_page_limit(tmp_path):
    with pytest.raises(LimitExceededError, match="3 pages"):
        _load(files.write_pdf(tmp_path), IngestLimits(max_pdf_pages=2))


def test_zip_members_bomb_and_traversal(tmp_path):
    data = files.zip_bytes({"docs/good.md": files.GOOD_ZIP_MEMBER, "../evil.md": b"# x\n\nevil",
                            "/etc/abs.md": b"# y\n\nabs", "bomb.txt": files.BOMB_MEMBER,
                            "image.png": b"\x89PNG", "__MACOSX/._good.md": b"junk"})
    members = {m.name: m for m in iter_zip(data, "b.zip", IngestLimits(), lambda n: n.endswith((".md", ".txt")))}
    assert set(members) == {"docs/good.md", "../evil.md", "/etc/abs.md", "bomb.txt"}
    assert members["docs/good.md"].data == files.GOOD_ZIP_MEMBER and members["docs/good.md"].error is None
    assert isinstance(members["../evil.md"].error, UnsafeArchiveError)
    assert isinstance(members["/etc/abs.md"].error, UnsafeArchiveError)
    assert isinstance(members["bomb.txt"].error, LimitExceededError) and "zip bomb" in str(members["bomb.txt"].error)


def test_zip_entry_and_size_limits(tmp_path):
    data = files.zip_bytes({f"f{i}.md": b"# t\n\ntext" for i in range(5)})
    with pytest.raises(LimitExceededError, match="RAG_MAX_ZIP_ENTRIES"):
        list(iter_zip(data, "many.zip", IngestLimits(max_zip_entries=4), lambda n: True))
    with pytest.raises(LimitExceededError, match="RAG_MAX_ZIP_MB"):
        list(iter_zip(data, "big.zip", IngestLimits(max_zip_bytes=20), lambda n: True))


def test_not_a_zip(tmp_path):
    with pytest.raises(CorruptDocumentError, match="zip"):
        list(iter_zip(b"not a zip at all", "fake.zip", IngestLimits(), lambda n: True))


def test_a_file_just_over_the_limit_shows_sizes_that_differ(tmp_path):
    """A file one byte over 50 MB must not read "is 50.0 MB; the limit is 50.0 MB"."""
    from rag.ingest.loaders.limits import MB, over_limit

    assert over_limit(50 * MB + 1, 50 * MB) == ("52,428,801 bytes", "52,428,800 bytes")
    assert over_limit(int(50.02 * MB), 50 * MB) == ("50.02 MB", "50.00 MB")
    assert over_limit(80 * MB, 50 * MB) == ("80.0 MB", "50.0 MB")
    path = tmp_path / "big.md"
    path.write_bytes(b"# big\n\n" + b"x" * 2041)  # 2,048 bytes against a 2,047-byte limit
    with pytest.raises(LimitExceededError) as caught:
        _load(path, IngestLimits(max_file_bytes=2047))
    assert "big.md is 2.000 KB; the limit is 1.999 KB per file" in str(caught.value)


@pytest.mark.parametrize("part", ["word/document.xml", "[Content_Types].xml"])
def test_a_damaged_docx_says_it_is_not_a_valid_word_file(tmp_path, part):
    import io
    import zipfile

    good = files.write_docx(tmp_path).read_bytes()
    damaged = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            target.writestr(item, b"<w:document garbage" if item.filename == part else source.read(item.filename))
    with pytest.raises(CorruptDocumentError) as caught:
        load_document("report.docx", damaged.getvalue())
    message = str(caught.value)
    assert "report.docx is not a valid Word file" in message and "save it again" in message
    assert "XMLSyntaxError" in message or "KeyError" in message  # the kind of damage, not a raw parser dump
    assert "line 1, column" not in message


def test_a_file_that_is_not_a_zip_is_not_a_valid_word_file():
    with pytest.raises(CorruptDocumentError, match=r"old\.docx is not a valid Word file.*\.doc files are not"):
        load_document("old.docx", b"\xd0\xcf\x11\xe0 an OLE2 .doc file")
