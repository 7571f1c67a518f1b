"""BM25 search over the library's chunks (SQLite FTS5), each hit with the citation it supports."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
class Hit:
    chunk_id: int
    document_id: int
    document: str
    page_first: int
    page_last: int
    text: str
    score: float  # BM25; higher is better

    @property
    def pages(self) -> list[int]:
        return list(range(self.page_first, self.page_last + 1))

    @property
    def citation(self) -> str:
        return citation(self.document, self.page_first, self.page_last)


def citation(document: str, page_first: int, page_last: int) -> str:
    """'contract.pdf p. 37', or 'contract.pdf pp. 37-38' for a passage across pages."""
    if page_first == page_last:
        return f"{document} p. {page_first}"
    return f"{document} pp. {page_first}-{page_last}"


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


def search(library: Library, query: str, *, k: int = 5, document_id: int | None = None) -> list[Hit]:
    """The `k` chunks that best match `query`, best first; only in one document if `document_id` is given."""
    words = query_words(query)
    if not words or k <= 0:
        return []
    rare = _rare_words(library, words)
    hits = _ranked(library, match_expression(rare), k, document_id)
    if len(hits) < k and len(rare) < len(words):
        hits = _ranked(library, match_expression(words), k, document_id)
    return hits


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
