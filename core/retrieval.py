"""BM25 search over the library's chunks (SQLite FTS5), each hit with the citation it supports."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cache

from core import RESOURCES
from core.citations import Passage
from core.library import Library

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
    score: float  # higher is better: BM25, or the fused reciprocal ranks of BM25 rankings


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


# How deep each ranking goes before two are fused: the fused top k rarely comes from further down.
FUSION_DEPTH = 20


def search(library: Library, query: str, *, k: int = 5, document_id: int | None = None) -> list[Hit]:
    """The `k` chunks that best match `query`, best first; only in one document if `document_id` is given.

    People ask in plain words ("can the licence be transferred?") and contracts answer in their own
    ("shall not be transferrable"): where resources/retrieval/contract_terms.txt knows a question word, a
    second ranking searches for the contract's words too, and the two rankings are fused by reciprocal rank,
    so that neither the literal words nor the expansion can push the other's best passages out."""
    words = query_words(query)
    if not words or k <= 0:
        return []
    rare = _rare_words(library, words)
    expansion = [term for word in words for term in contract_terms().get(word, ())]
    depth = FUSION_DEPTH if expansion else k
    literal = _ranked(library, match_expression(rare), depth, document_id)
    if len(literal) < depth and len(rare) < len(words):
        literal = _ranked(library, match_expression(words), depth, document_id)
    if not expansion:
        return literal
    expanded = _ranked(library, match_expression(list(dict.fromkeys(rare + expansion))), depth, document_id)
    return _fused([literal, expanded], k)


@cache
def contract_terms() -> dict[str, tuple[str, ...]]:
    """Question word -> the words and phrases contracts use for it."""
    terms = {}
    for line in (RESOURCES / "retrieval" / "contract_terms.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            word, _, alternatives = line.partition(":")
            terms[word.strip()] = tuple(term.strip() for term in alternatives.split(","))
    return terms


def _fused(rankings: list[list[Hit]], k: int) -> list[Hit]:
    # Reciprocal rank fusion (Cormack et al., 2009), with its usual constant 60.
    scores: dict[int, float] = {}
    hits: dict[int, Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1 / (60 + rank)
            hits.setdefault(hit.chunk_id, hit)
    best = sorted(scores, key=scores.__getitem__, reverse=True)[:k]
    return [replace(hits[chunk], score=scores[chunk]) for chunk in best]


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
            -hit.rank AS score
        FROM (SELECT rowid, bm25(chunks_fts) AS rank FROM chunks_fts WHERE {where} ORDER BY rank LIMIT ?) hit
        JOIN chunks c ON c.id = hit.rowid
        JOIN documents d ON d.id = c.document_id
        ORDER BY hit.rank""",
        [*params, k],
    )
    return [Hit(**row) for row in rows]
