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


def match_expression(query: str) -> str | None:
    """The FTS5 query for free text: any of its words, each quoted so that nothing in it is FTS syntax."""
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))
    content = [word for word in words if word not in STOPWORDS] or words
    return " OR ".join(f'"{word}"' for word in content) or None


def search(library: Library, query: str, *, k: int = 5, document_id: int | None = None) -> list[Hit]:
    """The `k` chunks that best match `query`, best first; only in one document if `document_id` is given."""
    expression = match_expression(query)
    if expression is None or k <= 0:
        return []
    where, params = "chunks_fts MATCH ?", [expression]
    if document_id is not None:
        where += " AND c.document_id = ?"
        params.append(str(document_id))
    rows = library.db.query(
        f"""
        SELECT c.id AS chunk_id, c.document_id, d.name AS document, c.page_first, c.page_last, c.text,
            -bm25(chunks_fts) AS score
        FROM chunks_fts
        JOIN chunks c ON c.id = chunks_fts.rowid
        JOIN documents d ON d.id = c.document_id
        WHERE {where}
        ORDER BY bm25(chunks_fts)
        LIMIT ?""",
        [*params, k],
    )
    return [Hit(**row) for row in rows]
