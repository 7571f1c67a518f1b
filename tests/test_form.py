"""The answer's form (core/answers/form.py): the choices built from the passages, the prefix tree that holds
decoding to them, and the baseline that quotes the top hit with no model."""

from __future__ import annotations

from core.answers.citations import Passage, check_citations
from core.answers.form import (
    ABSTAIN,
    LONGEST,
    Choices,
    choices,
    fitting,
    quote_top_hit,
    sentence_with,
    sentences,
)

PASSAGES = [
    ("lease.pdf p. 3", "4.1 Term. The lease runs for five (5) years. Either party may renew it once."),
    ("lease.pdf p. 9", "9.2 Governing Law. This lease is governed by the laws of the State of Ohio."),
]


def test_each_sentence_is_a_choice_only_with_its_own_passages_label():
    allowed = choices(PASSAGES)
    assert ABSTAIN not in allowed and choices([]) == [ABSTAIN]
    assert "“The lease runs for five (5) years.” [lease.pdf p. 3]" in allowed
    assert "“This lease is governed by the laws of the State of Ohio.” [lease.pdf p. 9]" in allowed
    for answer in allowed:  # no sentence of p. 3 with the label of p. 9, nor the other way round
        quote, label = answer[1:].split("” [")
        assert next(text for name, text in PASSAGES if name == label.rstrip("]")).count(quote) == 1


def test_every_choice_is_a_citation_the_check_keeps():
    passages = [
        Passage(n, 1, "lease.pdf", int(label[-1]), int(label[-1]), text) for n, (label, text) in enumerate(PASSAGES)
    ]
    pages = {(1, p.page_first): p.text for p in passages}
    for answer in choices(PASSAGES):
        kept, supported = check_citations(answer, passages, lambda document, page: pages.get((document, page), ""))
        assert supported and len(kept) == 1, answer


def test_long_sentences_are_cut_into_clauses_and_headings_dropped():
    long = "The Supplier shall deliver, " * 30 + "on time."
    cut = sentences(f"12.3 {long}")
    assert all(len(s) <= LONGEST for s in cut)
    assert " ".join(cut).replace("  ", " ") == " ".join(f"12.3 {long}".split())
    assert sentences("1. 2. Definitions.") == []
    assert sentences("[***] 14.2 Governing Law. This Agreement is governed by New York law.") == [
        "This Agreement is governed by New York law."
    ]


def test_the_taught_sentence_is_the_one_that_holds_the_answer():
    assert sentence_with(PASSAGES[0][1], "five (5)  years") == "The lease runs for five (5) years."
    assert sentence_with(PASSAGES[0][1], "ten years") is None


def test_choices_too_long_for_the_reply_are_left_out_but_never_all():
    assert fitting(["a", "bb", "ccc"], [5, 50, 500], room=60) == ["a", "bb"]
    assert fitting(["a", "bb"], [500, 400], room=60) == ["bb"]


def test_the_tree_allows_only_the_choices_and_then_the_end():
    tree = Choices([[5, 6, 7], [5, 8], [9]], end=0)
    assert sorted(tree.allowed([])) == [5, 9]
    assert sorted(tree.allowed([5])) == [6, 8]
    assert tree.allowed([5, 8]) == [0]
    assert tree.allowed([5, 8, 0]) == [0]
    assert tree.allowed([4]) == [0]  # off the tree: only the end


def test_retrieval_alone_quotes_the_top_passages_sentence_nearest_the_question():
    assert (
        quote_top_hit("How long does the lease run?", PASSAGES)
        == "“The lease runs for five (5) years.” [lease.pdf p. 3]"
    )
    assert quote_top_hit("Anything?", []) == ABSTAIN
