"""Q&A pairs: extracted from the text, parsed from a model's reply, imported from a file; each tied to the
passage and page that answer it."""

from __future__ import annotations

import json

import pytest

from core.dataset import qa_pairs
from core.errors import KnownError
from core.library.ingest import add_documents
from tests.conftest import SAMPLE, make_pdf

CLAUSES = """ARTICLE 1
“Net Sales” means the gross amount invoiced by Vyera for sales of Licensed Product, less deductions.
2.1 Royalties. Vyera shall pay CytoDyn a royalty of fifteen percent (15%) of Net Sales. Payments are due
within thirty (30) days after the end of each Calendar Quarter.
2.2 Audit. CytoDyn may audit the records once each year.
"""


def test_extractive_pairs_quote_the_passage():
    pairs = qa_pairs.extractive_pairs(CLAUSES)
    by_question = {p.question: p.answer for p in pairs}
    assert by_question["What does “Net Sales” mean?"].startswith("“Net Sales” means the gross amount invoiced")
    assert by_question["What does the document say about royalties?"] == (
        "Vyera shall pay CytoDyn a royalty of fifteen percent (15%) of Net Sales."
    )
    assert "fifteen percent" in by_question["What amount is set for royalties?"]
    assert by_question["What date or time limit is set for royalties?"].startswith("Payments are due within")
    flat = " ".join(CLAUSES.split())
    assert all(p.answer in flat for p in pairs)
    assert all(CLAUSES[p.offset :].startswith(p.answer.split()[0]) for p in pairs)


# Headings and definitions as real contracts write them (CUAD): capitals, a dash, a title on its own line
# with a lettered clause under it, an unquoted defined term, a term named in parentheses.
HEADINGS = """3.       ORDERS
A.       Distributor may purchase Products by placing orders under this Agreement which are accepted.
5. Ownership - Individual agrees that she does not have any right, title or interest in the materials.
1.9. Effective Date shall mean May 1, 2016, the day the parties signed this Agreement.
The initial term shall continue for a period of five (5) years from the Effective Date (the "Term").
2.7 The Professional agrees to use only the golf clubs of the Company.
"""


def test_headings_and_terms_as_contracts_write_them():
    by_question = {p.question: p.answer for p in qa_pairs.extractive_pairs(HEADINGS)}
    assert by_question["What does the document say about orders?"].startswith("Distributor may purchase Products")
    assert by_question["What does the document say about ownership?"].startswith("Individual agrees that she")
    assert by_question["What does “Effective Date” mean?"].startswith("Effective Date shall mean May 1, 2016")
    assert by_question["What is the “Term”?"].startswith("The initial term shall continue")
    # A section ends at the next numbered line: the date of 1.9 is not section 5's.
    assert "What date or time limit is set for ownership?" not in by_question
    # A numbered sentence is not a heading: "The Professional agrees ..." asks nothing.
    assert not any("professional" in question.lower() for question in by_question)


def test_model_replies_keep_only_quoted_answers():
    reply = "Q: What is the royalty?\nA: fifteen percent (15%) of Net Sales\nQ: Who wins?\nA: Nobody at all\n"
    (pair,) = qa_pairs.model_pairs(reply, CLAUSES)
    assert pair.question == "What is the royalty?"
    assert CLAUSES[pair.offset :].startswith("fifteen percent")


def test_generated_pairs_are_stored_with_their_page(library, tmp_path):
    pdf = make_pdf(tmp_path / "c.pdf", ["Cover page.", CLAUSES.replace("“", '"').replace("”", '"')])
    list(add_documents(library, [pdf]))
    assert qa_pairs.generate(library) >= 3
    rows = list(library.db.query("SELECT page, question, source FROM qa_pairs"))
    assert {r["page"] for r in rows} == {2}
    assert {r["source"] for r in rows} == {"extractive"}
    assert qa_pairs.generate(library) == len(rows)  # regenerating replaces, never duplicates
    assert library.db.execute("SELECT count(*) FROM qa_pairs").fetchone()[0] == len(rows)


@pytest.fixture
def sample_library(library):
    list(add_documents(library, [SAMPLE]))
    return library


def test_imported_pairs_find_their_passage(sample_library, tmp_path):
    path = tmp_path / "questions.jsonl"
    records = [
        {"question": "Which law governs?", "answer": "the laws of the State of New York", "page": 41},
        {"question": "What is a Calendar Quarter?", "answer": "each successive period of three (3) calendar months"},
        {"question": "Moon?", "answer": "made of green cheese and moonbeams", "page": 3},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert qa_pairs.import_pairs(sample_library, path) == (2, 1)
    rows = list(sample_library.db.query("SELECT q.page, c.text FROM qa_pairs q JOIN chunks c ON c.id = q.chunk_id"))
    assert rows[0]["page"] == 41 and "New York" in rows[0]["text"]


def test_csv_imports_too(sample_library, tmp_path):
    path = tmp_path / "questions.csv"
    path.write_text("question,answer,page\nWhich law governs?,the laws of the State of New York,41\n")
    assert qa_pairs.import_pairs(sample_library, path) == (1, 0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "q", "answer": "a"}\nnot json\n', "questions.jsonl line 2 is not valid JSON"),
        ('{"question": "", "answer": "a"}\n', "line 1 needs a question and an answer"),
        ('{"question": "q", "answer": "a", "page": "two"}\n', "line 1: page must be a number"),
    ],
)
def test_bad_question_files_are_refused_by_line(sample_library, tmp_path, content, message):
    path = tmp_path / "questions.jsonl"
    path.write_text(content)
    with pytest.raises(KnownError, match=message):
        qa_pairs.import_pairs(sample_library, path)
    assert sample_library.db.execute("SELECT count(*) FROM qa_pairs").fetchone()[0] == 0


def test_a_question_model_that_is_not_gguf_is_refused(library, tmp_path):
    (tmp_path / "model.bin").write_bytes(b"\0" * 10)
    with pytest.raises(KnownError, match="is not a GGUF file"):
        qa_pairs.generate(library, source=str(tmp_path / "model.bin"))
