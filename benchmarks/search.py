"""Search latency over a library of 100,000 chunks, in-process, against a plain FTS5 MATCH of every query
word (no stopword filtering), measured in the same run.

    .venv/bin/python benchmarks/search.py

The library is built once from the sample contracts' sentences, shuffled into 200 synthetic contracts, with
made-up party names, amounts and dates so that the vocabulary has a realistic long tail. Goals: the first
stage (words alone, `meaning=False`) at a median of at most 20 ms (issue 3); the second (meaning's reorder of
the first 10 passages, core/library/meaning.py) at most 150 ms more (issue 31).
"""

from __future__ import annotations

import random
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import median, save, timed, verdict
from core import RESOURCES
from core.library import meaning
from core.library.extract import extract
from core.library.ingest import add_documents
from core.library.search import match_expression, search
from core.library.store import Library

TARGET_CHUNKS = 100_000
QUESTIONS = [
    "Which state's law governs the agreement?",
    "When does the agreement expire?",
    "Can either party terminate for convenience?",
    "What is the cap on liability?",
    "Who are the parties to the agreement?",
    "Is there a non-compete clause?",
    "What royalty is payable on net sales?",
    "How much notice is required to terminate?",
    "Which party bears the cost of insurance?",
    "What happens to confidential information after termination?",
    "Is the license exclusive or non-exclusive?",
    "Can the agreement be assigned without consent?",
    "What are the audit rights of the licensor?",
    "How are disputes resolved, by arbitration or in court?",
    "What is the minimum purchase commitment?",
    "When are invoices due for payment?",
    "Who owns the intellectual property developed under the agreement?",
    "What warranties does the supplier give?",
    "Is there a most favored nation clause?",
    "What is the effective date of the agreement?",
]


def build_library(data_dir: Path) -> Library:
    sentences: list[str] = []
    for name in ("license_agreement_50p.pdf", "transportation_contract_106p.pdf"):
        text = " ".join(extract(RESOURCES / "samples" / name).pages)
        sentences += [s for s in re.split(r"(?<=[.;:])\s+", " ".join(text.split())) if len(s) > 20]
    rng = random.Random(42)
    names = [f"{rng.choice('BCDFGKLMNPRSTVZ')}{rng.choice('aeiou')}{rng.randrange(10**6)}" for _ in range(20_000)]
    sources = Path(data_dir) / "sources"
    sources.mkdir()
    files = []
    for number in range(200):
        paragraphs = []
        for _ in range(900):
            sentence = rng.choice(sentences)
            extra = f" {rng.choice(names)} shall pay USD {rng.randrange(10**7):,} by {rng.randrange(1, 29)} May."
            paragraphs.append(sentence + extra)
        path = sources / f"contract_{number:03}.txt"
        path.write_text("\n\n".join(paragraphs))
        files.append(path)
    library = Library(Path(data_dir) / "library")
    for outcome in add_documents(library, files):
        assert outcome.status == "added", outcome.reason
    return library


def plain_match(library: Library, question: str) -> list:
    expression = match_expression(re.findall(r"\w+", question.lower()))
    return list(
        library.db.query(
            "SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts) LIMIT 5",
            [expression],
        )
    )


def main() -> int:
    with tempfile.TemporaryDirectory() as data_dir:
        library = build_library(Path(data_dir))
        chunks = library.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        for question in QUESTIONS:  # warm the page cache and load the meaning model
            search(library, question)

        def each(fn):
            return [s for q in QUESTIONS for s in timed(lambda q=q: fn(library, q), repeat=5)]

        ours = each(lambda lib, q: search(lib, q, k=5, meaning=False))
        whole = each(lambda lib, q: search(lib, q, k=5))
        plain = each(plain_match)
        library.close()
    ours_ms, whole_ms, plain_ms = (median(times) * 1000 for times in (ours, whole, plain))
    meaning_ms = whole_ms - ours_ms
    print(f"{chunks:,} chunks, {len(QUESTIONS)} questions x 5")
    p95_ms = sorted(ours)[int(len(ours) * 0.95)] * 1000
    print(f"  tunedesk search, words (median)    {ours_ms:7.2f} ms  p95 {p95_ms:.2f} ms")
    print(f"  with meaning (median)              {whole_ms:7.2f} ms  (+{meaning_ms:.1f} ms)")
    print(f"  plain FTS5 MATCH of every word     {plain_ms:7.2f} ms")
    save("search", {"chunks": chunks, "median_ms": ours_ms, "meaning_ms": meaning_ms, "plain_match_ms": plain_ms})
    lines = [
        verdict(
            "search_100k",
            f"median {ours_ms:.1f} ms, {plain_ms / ours_ms:.1f}x a plain FTS5 MATCH",
            "<= 20 ms",
            ours_ms <= 20 and chunks >= TARGET_CHUNKS,
        ),
        verdict(
            "search_meaning",
            f"meaning's reorder {meaning_ms:.0f} ms a question (median)",
            "<= 150 ms, and the model installed",
            meaning_ms <= 150 and meaning.available(),
        ),
    ]
    return 0 if all(line.endswith(": met") for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
