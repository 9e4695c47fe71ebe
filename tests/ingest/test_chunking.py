"""Chunking: heading paths, token caps, overlap, tiny-fragment merging, nothing lost."""
import re
from unittest.mock import patch

import pytest

from rag.ingest import chunking
from rag.ingest.chunking import _enforce_cap as enforce
from rag.ingest.chunking import chunk_text, split_sections, strip_front_matter
from tests.ingest_files import NESTED_MD


def words(text: str) -> int:
    return len(text.split())


def test_nested_headings_give_paths_and_prefix_the_text():
    pieces = chunk_text(NESTED_MD, count=words, min_tokens=1)
    assert [p.heading for p in pieces] == ["Birds", "Birds > Owls", "Birds > Owls > Barn owl", "Birds > Penguins"]
    assert pieces[2].text.startswith("Owls > Barn owl\n\nThe barn owl")  # the title "Birds" is metadata only
    assert pieces[0].text.startswith("Birds\n\nBirds are")
    assert "# not a heading" in pieces[2].text  # a comment in a code fence is not a heading
    assert "title:" not in "".join(p.text for p in pieces)  # front matter stripped


def test_the_title_stays_in_the_text_when_the_document_has_several_top_headings():
    pieces = chunk_text("# A\n\n## A1\n\nBody of A1.\n\n# B\n\nBody of B.\n", count=words, min_tokens=1)
    assert [p.text.split("\n\n")[0] for p in pieces] == ["A > A1", "B"]


def test_front_matter_title_heads_text_before_the_first_heading():
    body, title = strip_front_matter("---\ntitle: 'My doc'\nid: x\n---\nIntro text here.\n")
    assert title == "My doc" and body == "Intro text here.\n"
    pieces = chunk_text("---\ntitle: My doc\n---\nIntro text here, long enough.\n", count=words, min_tokens=1)
    assert pieces[0].heading == "My doc" and pieces[0].text.startswith("My doc\n\nIntro")


def test_setext_and_indented_headings():
    sections = split_sections("Guide\n=====\n\nintro\n\nInstall\n-------\n\nsteps\n\n  ### Linux\n\napt\n")
    assert [s.heading for s in sections] == ["Guide", "Guide > Install", "Guide > Install > Linux"]
    assert [s.body for s in sections] == ["intro", "steps", "apt"]


def test_a_dash_line_under_a_list_or_table_is_not_a_heading():
    sections = split_sections("# T\n\n- item\n---\n\n| a |\n|---|\n")
    assert [s.heading for s in sections] == ["T"]


def test_heading_only_sections_live_on_in_paths():
    pieces = chunk_text("# A\n\n## B\n\nSome body text for B here.\n", count=words, min_tokens=1)
    assert [p.heading for p in pieces] == ["A > B"]


def test_long_section_is_capped_with_overlap_and_nothing_lost():
    sentences = [f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(200)]
    text = "# Long\n\n" + "\n\n".join(" ".join(sentences[i:i + 5]) for i in range(0, 200, 5))
    pieces = chunk_text(text, max_tokens=120, overlap=20, count=words)
    assert len(pieces) > 5 and all(words(p.text) <= 120 for p in pieces)
    assert all(p.text.startswith("Long\n\n") for p in pieces)
    joined = " ".join(p.text for p in pieces)
    assert all(s in joined for s in sentences)  # every sentence survives
    opening = pieces[1].text.split("\n\n")[1].split(". ")[0]
    assert opening in pieces[0].text.split("\n\n")[-1]  # the next window repeats closing sentences (overlap)
    sizes = [words(p.text) for p in pieces]
    assert min(sizes) > 0.5 * max(sizes)  # balanced: no scrap at the end


def test_one_huge_line_and_a_wordless_blob_are_cut():
    text = "# Big\n\n" + " ".join(f"w{i}" for i in range(3000)) + "\n\n" + "x" * 5000
    pieces = chunk_text(text, max_tokens=100, overlap=10, count=lambda t: max(1, len(t) // 4))
    assert all(len(p.text) // 4 <= 100 for p in pieces)
    assert "w2999" in " ".join(p.text for p in pieces)
    assert sum(p.text.count("x") for p in pieces) >= 5000


def utf8_quarters(text: str) -> int:
    return max(1, len(text.encode()) // 4)


def test_a_piece_over_the_cap_is_cut_again_under_its_heading():
    # One paragraph, no sentence ends, words far over the cap that turn from Latin to CJK: counted in UTF-8
    # bytes, their tokens crowd at the end, so the even spread that sizes character cuts undercounts them
    # and the cap check must cut those pieces again.
    word = "ab" * 300 + "鳥類学者" * 60
    body = " ".join(f"{i}{word}" for i in range(6))
    text = "# Birds\n\n## Owls\n\n### Barn owl\n\n" + body
    checked = []

    def enforce_cap(pieces, *args):
        checked.append(len(pieces))
        return enforce(pieces, *args)

    with patch.object(chunking, "_enforce_cap", enforce_cap):
        pieces = chunk_text(text, max_tokens=100, overlap=0, count=utf8_quarters)
    assert len(pieces) > checked[0]  # the cap check did cut
    assert all(p.text.startswith("Owls > Barn owl\n\n") and p.heading == "Birds > Owls > Barn owl" for p in pieces)
    assert all(utf8_quarters(p.text) <= 100 for p in pieces)
    bodies = "".join(p.text.removeprefix("Owls > Barn owl\n\n") for p in pieces)
    assert "".join(bodies.split()) == "".join(body.split())  # nothing lost or repeated (no overlap asked)


def test_tiny_fragments_merge_into_a_neighbour():
    text = "# Intro\n\nSee below.\n\n# Main\n\n" + "Real content words " * 10 + "\n\n# Outro\n\nBye.\n"
    pieces = chunk_text(text, count=words, min_tokens=8)
    assert len(pieces) == 1
    assert "See below." in pieces[0].text and "Bye." in pieces[0].text


def test_an_intro_merges_forward_into_its_subsection():
    text = "# Guide\n\nRead this.\n\n## Install\n\n" + "Install steps go here. " * 5 + "\n\n# Other\n\n" + \
           "Other content words. " * 5
    pieces = chunk_text(text, count=words, min_tokens=6)
    assert pieces[0].heading == "Guide > Install" and pieces[0].text.startswith("Guide\n\nRead this.")


def test_real_tokenizer_cap(tiny_embedder):
    count_many = tiny_embedder.count_tokens  # a batch of texts in, a count each out

    def count(text: str) -> int:
        return count_many([text])[0]

    text = "# Bees\n\n" + ("Honey bees collect nectar from flowers and turn it into honey. " * 80)
    pieces = chunk_text(text, max_tokens=64, overlap=8, count=count, count_many=count_many)
    assert len(pieces) > 3 and all(count(p.text) <= 64 for p in pieces)


@pytest.mark.parametrize("text", ["", "   \n\n", "# Only a heading\n", "---\ntitle: x\n---\n"])
def test_nothing_to_chunk(text):
    assert chunk_text(text, count=words) == []


def test_plain_text_without_headings_uses_the_title():
    pieces = chunk_text("Just a paragraph of plain text without any headings.", title="notes", count=words)
    assert [(p.heading, p.text.split("\n\n")[0]) for p in pieces] == [("notes", "notes")]
    assert re.search(r"plain text", pieces[0].text)
