from __future__ import annotations

import pytest

from core.answers.citations import citation
from core.library import meaning
from core.library.chunking import OPENING_MARK
from core.library.ingest import add_documents
from core.library.search import contract_terms, match_expression, query_words, search
from tests.conftest import SAMPLE, make_pdf


@pytest.fixture
def contract(library):
    (outcome,) = add_documents(library, [SAMPLE])
    return outcome.document


def test_best_passage_and_its_citation(library, contract):
    hits = search(library, "Which state's law governs this agreement?", k=5)
    assert len(hits) == 5
    assert hits[0].citation == "license_agreement_50p.pdf p. 41"
    assert "governed by and construed in accordance with the laws of the State of New" in " ".join(hits[0].text.split())
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_a_passage_across_two_pages_cites_both():
    assert citation("contract.pdf", 37, 38) == "contract.pdf pp. 37-38"
    assert citation("contract.pdf", 37, 37) == "contract.pdf p. 37"


def test_spanning_hit_pages(library, tmp_path):
    path = make_pdf(tmp_path / "two.pdf", ["filler " * 10 + "The escrow clause begins", "and ends here with escrow."])
    list(add_documents(library, [path]))
    (hit,) = search(library, "escrow", k=1)
    assert hit.pages == [1, 2]
    assert hit.citation == "two.pdf pp. 1-2"


def test_fts_syntax_in_a_query_is_just_text(library, contract):
    assert search(library, 'royalty AND "NEAR( OR * -"', k=3)
    assert match_expression(query_words('x"y')) == '"x" OR "y"'


def test_only_stopwords_still_search_and_empty_finds_nothing(library, contract):
    assert search(library, "what is it", k=1)
    assert search(library, "  ?! ", k=3) == []
    assert search(library, "royalty", k=0) == []


def test_filter_by_document(library, contract, tmp_path):
    other = make_pdf(tmp_path / "other.pdf", ["This other agreement is governed by the laws of Texas."])
    (outcome,) = add_documents(library, [other])
    hits = search(library, "governed laws", k=10, document_id=outcome.document.id)
    assert {h.document for h in hits} == {"other.pdf"}


def test_empty_library(library):
    assert search(library, "royalty") == []


def test_a_question_about_the_agreement_itself_finds_its_opening(library, tmp_path):
    # As in a real contract, "agreement" is on every page and the opening is a small part of the text.
    filler = "The Agreement binds each party to this Agreement as set out in this Agreement. " * 20
    path = make_pdf(tmp_path / "supply.pdf", ["MASTER SUPPLY AGREEMENT\n" + filler, *[filler] * 9])
    list(add_documents(library, [path]))
    (hit,) = search(library, "What is this agreement called?", k=1)
    assert hit.page_first == 1 and hit.context == OPENING_MARK


def test_plain_words_find_the_contracts_words(library, tmp_path):
    pages = [
        "Prices are set out in Schedule B. " * 8,
        "Neither party may assign this Agreement without the prior written consent of the other. " * 3,
    ]
    list(add_documents(library, [make_pdf(tmp_path / "c.pdf", pages)]))
    (hit,) = search(library, "Can the agreement be handed over to another company?", k=1)
    assert hit.page_first == 2


def test_everyday_words_find_the_contracts_words(library, tmp_path):
    # "deal" and "side" are in no contract: without their lines in the word list, nothing here matches.
    filler = "The Agreement binds each party to this Agreement as set out in this Agreement. " * 20
    pages = [
        "SUPPLY AGREEMENT by and between Acme Corp. and Widget LLC\n" + filler,
        "Neither party may assign this Agreement without the prior written consent of the other. " * 3,
        *[filler] * 8,
    ]
    list(add_documents(library, [make_pdf(tmp_path / "c.pdf", pages)]))
    assert search(library, "Who is bound by this deal?", k=1)[0].page_first == 1
    assert search(library, "May a side pass its rights to someone else?", k=1)[0].page_first == 2


def test_one_passage_a_page_while_other_pages_match(library, tmp_path):
    crowded = "\n\n".join(f"Escrow clause {n}: the escrow agent holds the escrow deposit." for n in range(12))
    pages = [crowded, "Fees. The licensee pays an escrow fee once.", "Nothing here."]
    list(add_documents(library, [make_pdf(tmp_path / "e.pdf", pages)], chunk_size=64))
    hits = search(library, "escrow", k=3)
    assert [hit.page_first for hit in hits[:2]] == [1, 2]
    assert hits[2].page_first == 1  # then the rest of the ranking fills up


def test_a_passage_with_more_of_the_question_ranks_first(library, tmp_path):
    # BM25 alone ranks the page that repeats the rarer word first (6.3 against 5.8).
    pages = [
        "Escrow, escrow, escrow and escrow.",
        "Code goes in escrow on deposit.",
        *["A deposit is paid with each order."] * 8,
        *["Goods go to the named warehouse."] * 90,
    ]
    list(add_documents(library, [make_pdf(tmp_path / "e.pdf", pages)], chunk_size=40))
    assert [hit.page_first for hit in search(library, "Is an escrow deposit required?", k=2)] == [2, 1]


def test_the_thesaurus_reads_every_line_of_a_word_and_the_opening():
    terms = contract_terms()
    assert OPENING_MARK in terms["called"]
    assert "change of control" in terms["bought"]
    assert all(OPENING_MARK not in term or term == OPENING_MARK for values in terms.values() for term in values)


@pytest.fixture
def assignment(library, tmp_path):
    """A contract whose shipping page shares more of the question's words than its assignment clause does."""
    fees = "The fee for service level {0} is {0}00 dollars, invoiced monthly, and settled by arbitration. " * 4
    shipping = (
        "The Supplier shall ship the goods to the other company named by the Buyer, and the Buyer's company shall pay "
        "for shipping to that company within thirty days. The Supplier shall pack the goods in crates, label each "
        "crate with the order number, and insure the goods until the company receives them."
    )
    transfer = (
        "Neither party may assign or transfer its rights under this Agreement to any third party without the prior "
        "written consent of the other party. Any assignment or transfer made without that consent is void, and a "
        "change of control of a party counts as an assignment of this Agreement."
    )
    filler = [fees.format(n) for n in range(3, 23)]
    list(add_documents(library, [make_pdf(tmp_path / "supply.pdf", [shipping, *filler[:10], transfer, *filler[10:]])]))


QUESTION = "Could the deal be given to some other company?"


def test_meaning_puts_the_passage_that_answers_first(library, assignment):
    assert meaning.available(), "the meaning model is not installed: make installs it (Makefile, MINILM)"
    assert search(library, QUESTION, k=2, meaning=False)[0].page_first == 1  # by words, the shipping page
    assert [hit.page_first for hit in search(library, QUESTION, k=2)] == [12, 1]


def test_without_the_meaning_model_search_ranks_by_words(library, assignment, monkeypatch):
    monkeypatch.setattr(meaning, "available", lambda: False)
    assert [hit.page_first for hit in search(library, QUESTION, k=2)] == [1, 12]


def test_a_meaning_worker_that_stopped_is_started_again(library, assignment):
    search(library, QUESTION, k=2)
    stopped = meaning._Worker.running()
    stopped.process.kill()
    stopped.process.wait()
    assert [hit.page_first for hit in search(library, QUESTION, k=2)] == [12, 1]
    assert meaning._Worker.running() is not stopped


def test_a_meaning_worker_that_cannot_load_the_model_is_not_started_again(library, assignment, tmp_path, monkeypatch):
    started = []

    def start_helper(*args, **kwargs):
        started.append(args)
        return real_start_helper(*args, **kwargs)

    real_start_helper = meaning.start_helper
    monkeypatch.setattr(meaning, "start_helper", start_helper)
    monkeypatch.setattr(meaning, "packaged_file", lambda _: tmp_path / "empty" / "model.safetensors")
    monkeypatch.setattr(meaning._Worker, "_current", None)
    for _ in range(3):  # words alone, and one attempt at the model, not one a search
        assert [hit.page_first for hit in search(library, QUESTION, k=2)] == [1, 12]
    assert len(started) == 1
    assert not meaning.starting()  # nothing to say "loading" about
