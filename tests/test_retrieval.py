from __future__ import annotations

import pytest

from core.citations import citation
from core.ingest import add_documents
from core.retrieval import match_expression, query_words, search
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
