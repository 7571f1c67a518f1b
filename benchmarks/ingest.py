"""Ingest speed: `add` of the 106-page sample contract (extraction + chunking + indexing), against a plain
pypdf extract_text() loop and a bare pypdfium2 text loop over the same file, in the same run.

    .venv/bin/python benchmarks/ingest.py

Goals (issue 3): at least 10x pypdf's pages per second, at least 0.7x pypdfium2's, and a 150-page contract
in the library within 5 seconds. These are the text layer's figures, so `add` runs without OCR here, as the
two loops do: the sample's three tables pasted as images (pp. 68, 70, 71) are read by OCR in a plain `add`,
which benchmarks/ocr.py measures.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pypdf
import pypdfium2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import median, save, timed, verdict
from core import RESOURCES
from core.library.ingest import add_documents
from core.library.store import Library

CONTRACT = RESOURCES / "samples" / "transportation_contract_106p.pdf"


def pypdf_loop(path: Path) -> int:
    return sum(len(page.extract_text()) for page in pypdf.PdfReader(path).pages)


def pdfium_loop(path: Path) -> int:
    pdf = pypdfium2.PdfDocument(path)
    return sum(len(pdf[i].get_textpage().get_text_range()) for i in range(len(pdf)))


def add_to_fresh_library(path: Path, workdir: Path) -> None:
    with tempfile.TemporaryDirectory(dir=workdir) as data_dir, Library(Path(data_dir)) as library:
        (outcome,) = add_documents(library, [path], ocr=False)
        assert outcome.status == "added", outcome.reason


def main() -> int:
    pages = len(pypdf.PdfReader(CONTRACT).pages)
    with tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        cold = timed(lambda: add_to_fresh_library(CONTRACT, workdir), repeat=1)[0]  # starts the fork server
        ours = median(timed(lambda: add_to_fresh_library(CONTRACT, workdir), repeat=7))
        pdfium = median(timed(lambda: pdfium_loop(CONTRACT), repeat=7))
        slow = timed(lambda: pypdf_loop(CONTRACT), repeat=1)[0]  # about 10 s; once is enough

        # A 156-page contract: the 106-page one followed by the 50-page one.
        long_contract = workdir / "contract_156p.pdf"
        writer = pypdf.PdfWriter()
        writer.append(CONTRACT)
        writer.append(RESOURCES / "samples" / "license_agreement_50p.pdf")
        writer.write(long_contract)
        long_seconds = timed(lambda: add_to_fresh_library(long_contract, workdir), repeat=1)[0]

    print(f"{CONTRACT.name}: {pages} pages")
    for label, seconds in [
        ("tunedesk add (median of 7)", ours),
        ("tunedesk add, first in process", cold),
        ("bare pypdfium2 loop (median of 7)", pdfium),
        ("pypdf extract_text loop", slow),
    ]:
        print(f"  {label:<36} {seconds:7.3f} s  {pages / seconds:8.1f} pages/s")
    print(f"  156-page contract, first add in process: {long_seconds:.2f} s")
    save(
        "ingest",
        {
            "pages": pages,
            "tunedesk_s": ours,
            "tunedesk_cold_s": cold,
            "pdfium_s": pdfium,
            "pypdf_s": slow,
            "vs_pypdf": slow / ours,
            "vs_pdfium": pdfium / ours,
            "contract_156p_s": long_seconds,
        },
    )
    lines = [
        verdict("ingest_vs_pypdf", f"{slow / ours:.1f}x pypdf's pages/s", ">= 10x", slow / ours >= 10),
        verdict("ingest_vs_pdfium", f"{pdfium / ours:.2f}x pypdfium2's pages/s", ">= 0.7x", pdfium / ours >= 0.7),
        verdict("ingest_156_pages", f"{long_seconds:.2f} s", "<= 5 s", long_seconds <= 5),
    ]
    return 0 if all(line.endswith(": met") for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
