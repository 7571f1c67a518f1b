"""Retrieval quality on the sample contract's question set (resources/questions/, built from CUAD's expert
annotations): is an expected page among the pages of the top passages? Tunedesk's `search` against a plain
FTS5 MATCH of every query word ranked by bm25, on the same library, in the same run.

    .venv/bin/python benchmarks/retrieval.py

Reports page-hit@1, page-hit@5 and MRR (by the rank of the first passage on an expected page). Goal
(issue 6): page-hit@5 at least 90%.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import save, verdict
from core import RESOURCES
from core.ingest import add_documents
from core.library import Library
from core.retrieval import Hit, match_expression, query_words, search

QUESTIONS = RESOURCES / "questions" / "license_agreement_50p.jsonl"
K = 5


def plain_fts(library: Library, question: str, k: int) -> list[Hit]:
    rows = library.db.query(
        """SELECT c.id AS chunk_id, c.document_id, d.name AS document, c.page_first, c.page_last, c.text,
            -bm25(chunks_fts) AS score
        FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid JOIN documents d ON d.id = c.document_id
        WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts) LIMIT ?""",
        [match_expression(query_words(question)), k],
    )
    return [Hit(**row) for row in rows]


def scores(ranked: list[list[Hit]], expected: list[set[int]]) -> dict[str, float]:
    first_ranks = []
    for hits, pages in zip(ranked, expected, strict=True):
        rank = next((n for n, hit in enumerate(hits, 1) if pages & set(hit.pages)), None)
        first_ranks.append(rank)
    count = len(first_ranks)
    return {
        "hit@1": sum(r == 1 for r in first_ranks) / count,
        f"hit@{K}": sum(r is not None for r in first_ranks) / count,
        "mrr": sum(1 / r for r in first_ranks if r) / count,
    }


def main() -> None:
    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines()]
    expected = [set(q["pages"]) for q in questions]
    with tempfile.TemporaryDirectory() as tmp, Library(Path(tmp)) as library:
        list(add_documents(library, [RESOURCES / "samples" / "license_agreement_50p.pdf"]))
        ours = scores([search(library, q["question"], k=K) for q in questions], expected)
        plain = scores([plain_fts(library, q["question"], K) for q in questions], expected)
    numbers = {"questions": len(questions), "k": K, "tunedesk": ours, "plain_fts5": plain}
    print(json.dumps(numbers, indent=2))
    save("retrieval", numbers)
    figure = (
        f"page-hit@{K} {ours[f'hit@{K}']:.0%}, hit@1 {ours['hit@1']:.0%}, MRR {ours['mrr']:.2f} "
        f"(plain FTS5: {plain[f'hit@{K}']:.0%}, {plain['hit@1']:.0%}, {plain['mrr']:.2f})"
    )
    verdict("retrieval", figure, "page-hit@5 at least 90%", ours[f"hit@{K}"] >= 0.9)


if __name__ == "__main__":
    main()
