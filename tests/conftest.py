"""Fixtures: real SQLite libraries in temp dirs and real documents made on the spot."""

from __future__ import annotations

from pathlib import Path

import pytest
from fpdf import FPDF

from core import RESOURCES
from core.library import Library

SAMPLE = RESOURCES / "samples" / "license_agreement_50p.pdf"


def make_pdf(path: Path, pages: list[str]) -> Path:
    """A real PDF with one page per string (latin-1 text in a core font)."""
    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    pdf.output(str(path))
    return path


@pytest.fixture
def library(tmp_path: Path):
    with Library(tmp_path / "library") as library:
        yield library
