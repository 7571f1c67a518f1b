"""BM25 search over the library's chunks (SQLite FTS5), each hit with the citation it supports."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from functools import cache

from core import RESOURCES
from core.answers.citations import Passage
from core.library.chunking import OPENING_MARK
from core.library.meaning import similarities
from core.library.store import Library

# A question's function words match nearly every chunk: they add nothing to BM25 but cost time.
STOPWORDS = frozenset(
    """a about above after again all am an and any are as at be because been before being below between both
    but by can could did do does doing down during each few for from further had has have having he her here
    hers him his how i if in into is it its itself just me more most my no nor not now of off on once only or
    other our ours out over own same she should so some such than that the their theirs them then there these
    they this those through to too under until up very was we were what when where which while who whom why
    will with would you your yours""".split()  # noqa: SIM905  (a word list reads better as text)
)
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Hit(Passage):
    score: float  # BM25 times the coordination (_coordinated) and meaning (_by_meaning) factors: higher is better
    context: str = field(default="", repr=False)  # what the index holds besides the text (index_context)


def query_words(query: str) -> list[str]:
    """The words of a free-text query that are worth matching: not function words, not single letters
    (the "s" of "state's"), unless nothing else is left."""
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))
    content = [word for word in words if word not in STOPWORDS and len(word) > 1]
    return content or words


def match_expression(words: list[str]) -> str:
    """FTS5 syntax for any of the words, each quoted so that nothing in a query is FTS syntax."""
    return " OR ".join('"{}"'.format(word.replace('"', "")) for word in words)


# A word in more than this share of the chunks ("agreement", "party" in a contract library) weighs little in
# BM25 but makes FTS5 score a large part of the index; it is left out while rarer words find enough hits.
COMMON_SHARE = 0.1
# A chunk's context (the document's opening: core.library.chunking.index_context) weighs this many times a word of
# its text, so that a question about the agreement itself finds the opening before a page that merely
# repeats "agreement" (chosen on the first half of the CUAD set, docs/retrieval.md).
CONTEXT_WEIGHT = 2.0
# How far down the ranking the search looks for passages on other pages.
DEPTH = 30


def search(
    library: Library, query: str, *, k: int = 5, document_id: int | None = None, meaning: bool = True
) -> list[Hit]:
    """The `k` chunks that best match `query`, best first, at most one a page while other pages match; only
    in one document if `document_id` is given.

    People ask in plain words ("can the agreement be handed over?") and contracts answer in their own
    ("shall not assign"): the question's words are searched together with the contract words that
    resources/retrieval/contract_terms.txt gives for them, in one BM25 ranking over each chunk's text and its
    context. Questions about the agreement itself (its name, parties, date) also ask for the document's
    opening. Of the best DEPTH, a passage that answers to more of the question's words ranks higher (BM25
    alone lets one word repeated outweigh the rest); the first MEANING_DEPTH are reordered by how near their
    meaning is to the question's where the model for it is installed (core/library/meaning.py; `meaning`
    False for a query that is a passage's own words); and one passage a page leaves room in the top k for
    the other places a clause may be."""
    words = query_words(query)
    if not words or k <= 0:
        return []
    terms = list(dict.fromkeys(words + [term for word in words for term in contract_terms().get(word, ())]))
    rare = _rare_words(library, terms)
    depth = max(DEPTH, k)
    ranked = _ranked(library, match_expression(rare), depth, document_id)
    if len(ranked) < k and len(rare) < len(terms):
        ranked = _ranked(library, match_expression(terms), depth, document_id)
    ranked = _coordinated(ranked, words)
    return _one_a_page(_by_meaning(ranked, query) if meaning else ranked, k)


@cache
def contract_terms() -> dict[str, tuple[str, ...]]:
    """Question word -> the words and phrases contracts use for it; "[opening]" is the document's opening."""
    terms: dict[str, list[str]] = {}
    for line in (RESOURCES / "retrieval" / "contract_terms.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            word, _, alternatives = line.partition(":")
            terms.setdefault(word.strip(), []).extend(
                OPENING_MARK if term.strip() == "[opening]" else term.strip() for term in alternatives.split(",")
            )
    return {word: tuple(dict.fromkeys(alternatives)) for word, alternatives in terms.items()}


# How much a passage's BM25 score grows when it answers to every word of the question, against none:
# Lucene's classic coordination factor, with a weight chosen on the first half of the CUAD set
# (docs/retrieval.md).
COORDINATION = 2.0


def _coordinated(ranked: list[Hit], words: list[str]) -> list[Hit]:
    patterns = [_word_or_terms(word) for word in words]

    def coverage(hit: Hit) -> float:
        text = f"{hit.text} {hit.context}"
        return sum(bool(pattern.search(text)) for pattern in patterns) / len(patterns)

    scored = [replace(hit, score=hit.score * (1 + COORDINATION * coverage(hit))) for hit in ranked]
    return sorted(scored, key=lambda hit: hit.score, reverse=True)


# The first passages that meaning reorders, and how much the cosine of their embeddings with the question's
# weighs: a passage's score is multiplied by e^(weight x cosine), the weight that makes the right pages
# likeliest on the first half of the CUAD set, its questions in two wordings (docs/retrieval.md). Ten
# passages take about 0.1 s on 2 cores.
MEANING_DEPTH = 10
MEANING_WEIGHT = 2.0


def _by_meaning(ranked: list[Hit], query: str) -> list[Hit]:
    first = ranked[:MEANING_DEPTH]
    near = similarities(query, [hit.text for hit in first])
    if near is None:
        return ranked
    weighed = [
        replace(hit, score=hit.score * math.exp(MEANING_WEIGHT * cosine))
        for hit, cosine in zip(first, near, strict=True)
    ]
    return sorted(weighed, key=lambda hit: hit.score, reverse=True) + ranked[MEANING_DEPTH:]


def _word_or_terms(word: str) -> re.Pattern[str]:
    # A prefix stands in for the stem ("assign" for "assigned", "assignment"): the index stems, this
    # cannot use its stemmer.
    terms = (word, *contract_terms().get(word, ()))
    prefixes = {term[: max(4, len(term) - 2)] for term in terms}
    return re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(prefixes))) + ")", re.IGNORECASE)


def _one_a_page(ranked: list[Hit], k: int) -> list[Hit]:
    first: list[Hit] = []
    rest: list[Hit] = []
    pages: set[int] = set()
    for hit in ranked:
        (rest if hit.page_first in pages else first).append(hit)
        pages.add(hit.page_first)
    return (first + rest)[:k]


def _rare_words(library: Library, words: list[str]) -> list[str]:
    chunks = library.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
    counts = {
        word: library.db.execute(
            "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?", [match_expression([word])]
        ).fetchone()[0]
        for word in words
    }
    return [word for word in words if counts[word] <= COMMON_SHARE * chunks] or [min(words, key=counts.__getitem__)]


def _ranked(library: Library, expression: str, k: int, document_id: int | None) -> list[Hit]:
    # Rank inside the index first and fetch only the k winners' rows: joining every match to its chunk
    # before the LIMIT costs twice the time on a large library.
    where, params = "chunks_fts MATCH ?", [expression]
    if document_id is not None:
        where += " AND rowid IN (SELECT id FROM chunks WHERE document_id = ?)"
        params.append(str(document_id))
    rows = library.db.query(
        f"""
        SELECT c.id AS chunk_id, c.document_id, d.name AS document, c.page_first, c.page_last, c.text,
            c.context, -hit.rank AS score
        FROM (
            SELECT rowid, bm25(chunks_fts, 1.0, {CONTEXT_WEIGHT}) AS rank FROM chunks_fts WHERE {where}
            ORDER BY rank LIMIT ?
        ) hit
        JOIN chunks c ON c.id = hit.rowid
        JOIN documents d ON d.id = c.document_id
        ORDER BY hit.rank""",
        [*params, k],
    )
    return [Hit(**row) for row in rows]
