from __future__ import annotations

import itertools
import re

import pytest

from core.errors import KnownError
from core.library.chunking import PAGE_SEPARATOR, chunk_pages

PARAGRAPH = "The Licensee shall pay the royalty within thirty (30) days of the end of each quarter. " * 3


def test_chunks_are_exact_slices_of_the_document_text():
    pages = [PARAGRAPH + "\n\n" + PARAGRAPH, "Short second page.", PARAGRAPH * 4]
    text = PAGE_SEPARATOR.join(pages)
    chunks = chunk_pages(pages, size=200)
    for chunk in chunks:
        assert chunk.text == text[chunk.start : chunk.end]
        assert 0 < len(chunk.text) <= 200
    # Nothing is lost: every word of the document is in a chunk, and chunks do not overlap.
    assert " ".join(c.text for c in chunks).split() == text.split()
    assert all(a.end <= b.start for a, b in itertools.pairwise(chunks))


def test_cuts_at_sentence_ends_rather_than_inside_sentences():
    sentences = [f"Clause {i} obliges the parties to act in good faith at all times." for i in range(40)]
    chunks = chunk_pages([" ".join(sentences)], size=300)
    assert len(chunks) > 5
    assert all(chunk.text.endswith(".") for chunk in chunks)


def test_prefers_a_blank_line_to_a_sentence_end():
    first = "A heading\n\n" + "Short sentence one. Short sentence two. " * 3
    chunks = chunk_pages([first + "\n\n" + "x " * 300], size=160)
    assert chunks[0].text == first.strip()


def test_pages_of_a_chunk_across_a_page_break():
    pages = ["alpha " * 30, "beta " * 30, "gamma " * 30]
    chunks = chunk_pages(pages, size=400)
    spanning = [c for c in chunks if c.page_first != c.page_last]
    assert spanning, "some chunk should span two pages"
    for chunk in chunks:
        words = set(chunk.text.split())
        expected = {p for p, word in ((1, "alpha"), (2, "beta"), (3, "gamma")) if word in words}
        assert {chunk.page_first, chunk.page_last} == {min(expected), max(expected)}


def test_empty_pages_keep_the_numbering():
    chunks = chunk_pages(["", "", "text on page three"], size=64)
    assert [(c.page_first, c.page_last) for c in chunks] == [(3, 3)]


def test_a_run_without_spaces_is_cut_hard():
    chunks = chunk_pages(["x" * 1000], size=256)
    assert [len(c.text) for c in chunks] == [256, 256, 256, 232]


def test_overlap_repeats_the_end_of_the_previous_chunk_from_a_word_start():
    words = " ".join(f"w{i}" for i in range(400))
    chunks = chunk_pages([words], size=200, overlap=50)
    for before, after in itertools.pairwise(chunks):
        assert before.start < after.start < before.end
        assert before.end - after.start <= 50
        assert re.match(r"w\d+", after.text)
        assert words[after.start - 1] == " "


@pytest.mark.parametrize(("size", "overlap"), [(8, 0), (512, 300), (512, -1)])
def test_bad_settings_are_refused(size, overlap):
    with pytest.raises(KnownError, match=r"chunk size|overlap"):
        chunk_pages(["text"], size=size, overlap=overlap)
