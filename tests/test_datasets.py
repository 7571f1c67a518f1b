"""Datasets from a real library: split by page with nothing on both sides, held-out questions, files that
the engine accepts."""

from __future__ import annotations

import json
import re

import pytest

from core.answers.form import choices
from core.answers.prompt import SYSTEM, question_turn
from core.dataset import qa_pairs
from core.dataset.build import DatasetSettings, build_dataset, dataset
from core.engine.data import read_records
from core.errors import KnownError
from core.library.ingest import add_documents
from core.library.search import search
from tests.conftest import SAMPLE, make_pdf
from tests.test_qa import CLAUSES


@pytest.fixture(scope="module")
def sample_library(tmp_path_factory):
    from core.library.store import Library

    with Library(tmp_path_factory.mktemp("library")) as library:
        (outcome,) = add_documents(library, [SAMPLE])
        assert outcome.status == "added"
        qa_pairs.generate(library)
        yield library


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_no_page_is_on_both_sides(library):
    # Chunks that overlap (as `add --overlap` makes them): their shared text must not be on both sides either.
    list(add_documents(library, [SAMPLE], overlap=100))
    qa_pairs.generate(library)
    built = build_dataset(library, DatasetSettings(kinds=("raw", "qa", "grounded")))
    train, val = lines(built.dir / "train.jsonl"), lines(built.dir / "val.jsonl")
    train_pages = {p for r in train for p in range(r["pages"][0], r["pages"][-1] + 1)}
    val_pages = {p for r in val for p in range(r["pages"][0], r["pages"][-1] + 1)}
    assert train_pages and val_pages
    assert not train_pages & val_pages
    assert 3 <= len(val_pages) <= 8  # about a tenth of 50 pages, in blocks of three
    # Overlapping chunks: no text of a validation chunk appears in a training chunk.
    train_text = "\n".join(r["text"] for r in train if r["kind"] == "raw")
    assert not any(r["text"][:80] in train_text for r in val if r["kind"] == "raw")


def test_raw_examples_are_the_documents_own_chunks(sample_library):
    """One owner for the chunk size: the chunks `add` made serve search, Q&A pairs, prompts and raw examples."""
    built = build_dataset(sample_library, DatasetSettings(kinds=("raw",)))
    examples = lines(built.dir / "train.jsonl") + lines(built.dir / "val.jsonl")
    chunks = {row["text"] for row in sample_library.db.query("SELECT text FROM chunks")}
    assert examples and {r["text"] for r in examples} <= chunks


def test_held_out_questions_come_from_validation_pages(sample_library):
    built = build_dataset(sample_library, DatasetSettings())
    held = lines(built.dir / "held_out.jsonl")
    val_pages = {p for r in lines(built.dir / "val.jsonl") for p in r["pages"]}
    assert held and built.held_out == len(held)
    assert {h["page"] for h in held} <= val_pages
    assert set(held[0]) >= {"question", "answer", "document", "page", "chunk_id"}


def test_grounded_examples_show_what_chat_retrieves_and_cite_the_answering_page(sample_library):
    built = build_dataset(sample_library, DatasetSettings(kinds=("grounded",), distractors=2))
    train, val = lines(built.dir / "train.jsonl"), lines(built.dir / "val.jsonl")
    val_pages = {p for r in val for p in r["pages"]}
    first_is_chats_first = 0
    for example in train:
        system, user, answer = example["messages"]
        assert system == {"role": "system", "content": SYSTEM}
        labels = re.findall(r"(?m)^\[(license_agreement_50p\.pdf pp?\. (\d+)(?:-(\d+))?)\]$", user["content"])
        assert 1 <= len(labels) <= 3  # what search finds, at most three, the answering passage among them
        shown = {p for _, first, last in labels for p in range(int(first), int(last or first) + 1)}
        assert example["pages"][0] in shown
        assert not shown & val_pages  # no validation text in a training prompt
        question = user["content"].split("\n\nQuestion: ")[1].split("\n")[0]
        # The answer's form is shown with a real label, not a placeholder a small model would copy.
        assert user["content"].endswith(question_turn(question, labels[0][0]))
        # The answer is one of the choices chat's answers are held to: a sentence of the answering passage,
        # with that passage's own label.
        blocks = re.split(r"(?m)^\[(.+)\]$", user["content"].split("\n\nQuestion: ")[0].removeprefix("Passages:\n"))
        passages = list(zip(blocks[1::2], blocks[2::2], strict=True))
        assert answer["content"] in choices(passages)
        first, last = re.findall(r"pp?\. (\d+)(?:-(\d+))?\]$", answer["content"])[0]
        assert int(first) <= example["pages"][0] <= int(last or first)
        quoted = answer["content"][1 : answer["content"].index("” [")]
        assert "“" not in quoted and "”" not in quoted  # its own quotation marks are single ones
        first_is_chats_first += labels[0][0] == search(sample_library, question, k=1)[0].citation
    assert first_is_chats_first >= len(train) // 2  # chat's ranking, where the search's best is a training page


def test_a_short_document_keeps_most_of_its_pages_for_training(library, tmp_path):
    pages = [f"Page {n}. " + CLAUSES.replace("“", '"').replace("”", '"') for n in range(1, 8)]
    list(add_documents(library, [make_pdf(tmp_path / "short.pdf", pages)], chunk_size=200))
    built = build_dataset(library, DatasetSettings(kinds=("raw",)))
    val_pages = {p for r in lines(built.dir / "val.jsonl") for p in r["pages"]}
    assert len(val_pages) == 1  # a tenth of 7 pages: one, not a block of three


def test_the_files_are_what_the_engine_reads(sample_library):
    built = build_dataset(sample_library, DatasetSettings(kinds=("raw", "qa", "grounded")))
    assert len(read_records(built.dir / "train.jsonl")) == built.train_examples
    assert len(read_records(built.dir / "val.jsonl")) == built.val_examples
    assert dataset(sample_library).id == built.id == dataset(sample_library, built.id).id


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (DatasetSettings(kinds=("poems",)), "Example kinds must be some of raw, qa, grounded"),
        (DatasetSettings(val_share=1.0), "validation share"),
    ],
)
def test_bad_settings_are_refused(sample_library, settings, message):
    with pytest.raises(KnownError, match=message):
        build_dataset(sample_library, settings)


def test_an_empty_library_has_no_dataset(library):
    with pytest.raises(KnownError, match="no documents"):
        build_dataset(library)
    with pytest.raises(KnownError, match="no dataset yet"):
        dataset(library)
