"""Scans and images read by real OCR (Tesseract): pages rendered from the sample contract, clean and degraded;
and the bad images of docs/reliability.md."""

from __future__ import annotations

import io
import re
import struct
import threading
import zlib
from pathlib import Path

import pypdf
import pypdfium2
import pytest
from fpdf import FPDF
from PIL import Image, ImageFilter
from rapidfuzz.distance import Levenshtein

from core.answers.citations import Passage, check_citations
from core.errors import Cancelled, KnownError
from core.library import ocr
from core.library.extract import PAGE_BY_OCR, Limits, extract
from core.library.ingest import add_documents, reading
from core.library.search import search
from core.library.store import Library
from core.progress import Work
from tests.conftest import SAMPLE, make_pdf
from tests.scans import page_images, scanned_copy
from tests.test_cli import tunedesk

pytestmark = pytest.mark.skipif(not ocr.available(), reason="needs Tesseract (make test-prerequisites)")

PAGES = range(1, 4)  # pp. 2-4: definitions, dense small print
REAL_SCAN = SAMPLE.parent / "scanned_exhibit_1p.pdf"


def text_layer(index: int) -> str:
    pdf = pypdfium2.PdfDocument(SAMPLE)
    text = pdf[index].get_textpage().get_text_range()
    pdf.close()
    return text


def error_rate(read: str, truth: str) -> float:
    """Characters wrong per character of the text layer, whitespace aside."""
    read, truth = (re.sub(r"\s+", " ", text).strip() for text in (read, truth))
    return Levenshtein.distance(read, truth) / len(truth)


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    return scanned_copy(SAMPLE, tmp_path_factory.mktemp("scan") / "scan.pdf", PAGES)


def test_a_scanned_contract_is_read_page_by_page_as_its_text_layer_says(scan):
    said: list[tuple[str, int, int]] = []
    extracted = extract(scan, work=Work(lambda unit, done, total: said.append((unit, done, total))))
    assert sorted(extracted.ocr) == [0, 1, 2]
    for index, page in zip(PAGES, extracted.pages, strict=True):
        assert error_rate(page, text_layer(index)) < 0.02
    assert all(p.confidence is not None and p.confidence >= ocr.LOW_CONFIDENCE for p in extracted.ocr.values())
    assert (PAGE_BY_OCR, 1, 3) in said and said[-1][1:] == (3, 3)


def test_a_degraded_copy_is_still_read(tmp_path):
    # 150 dpi, turned by up to 1.2 degrees, with noise: as an office scanner makes it.
    copy = scanned_copy(SAMPLE, tmp_path / "copy.pdf", range(3, 4), degraded=True)
    extracted = extract(copy)
    assert error_rate(extracted.pages[0], text_layer(3)) < 0.03


def test_only_the_pages_without_text_are_read_by_ocr(tmp_path, scan):
    mixed = pypdf.PdfWriter(clone_from=make_pdf(tmp_path / "cover.pdf", ["Cover letter for the signed copy."]))
    mixed.append(scan, pages=(0, 1))
    mixed.write(tmp_path / "mixed.pdf")
    extracted = extract(tmp_path / "mixed.pdf")
    assert extracted.pages[0].startswith("Cover letter") and list(extracted.ocr) == [1]
    assert error_rate(extracted.pages[1], text_layer(PAGES[0])) < 0.02


def test_a_page_of_text_as_an_image_under_a_text_footer_is_read_by_ocr_and_a_logo_is_not(tmp_path):
    # As in EDGAR's filings: a scanned exhibit, or a table pasted as a picture, under a "Source:" line.
    (image,) = page_images(SAMPLE, range(1, 2))
    pdf = FPDF()
    pdf.set_font("Helvetica", size=9)
    pdf.add_page()
    pdf.image(image, x=10, y=10, w=190)
    pdf.text(10, 290, "Exhibit D-1 Source: an 8-K filing")
    pdf.add_page()
    pdf.image(image.resize((120, 170)), x=10, y=10, w=30)  # a logo's size
    pdf.text(10, 60, "Letterhead of the parties")
    pdf.output(str(tmp_path / "exhibit.pdf"))
    extracted = extract(tmp_path / "exhibit.pdf")
    assert list(extracted.ocr) == [0]
    assert "“Applicable Law” means all applicable statutes" in extracted.pages[0]
    assert extracted.pages[1].strip() == "Letterhead of the parties"


def test_a_real_scan_is_read(tmp_path):
    # A scanned product list from a real filing, under a text layer of two lines (resources/samples/README.md).
    data = tmp_path / "data"
    added = tunedesk("add", str(REAL_SCAN), data_dir=data)
    assert added.returncode == 0 and "read by OCR" in added.stdout, added.stdout + added.stderr
    with Library(data) as library:
        text = library.page_text(1, 1)
        for words in ("Exhibit D", "FastPack IP Analyzer", "Quality Assurance Manual", "$23.64", "Source: RITTER"):
            assert words in text, words
        # Tesseract reads the table a column at a time: the product is found, its price is elsewhere on the page.
        (hit,) = search(library, "quality assurance manual", k=1)
        assert hit.pages == [1] and "Quality Assurance Manual" in hit.text


def test_images_and_a_multi_page_tiff_are_documents_of_pages(tmp_path):
    first, second = page_images(SAMPLE, range(1, 3))
    first.save(tmp_path / "page.png")
    first.convert("RGB").save(tmp_path / "page.jpg", quality=90, dpi=(300, 300))
    first.save(tmp_path / "pages.tiff", save_all=True, append_images=[second], compression="tiff_deflate")
    for name in ("page.png", "page.jpg"):
        extracted = extract(tmp_path / name)
        assert len(extracted.pages) == 1 and error_rate(extracted.pages[0], text_layer(1)) < 0.02, name
    tiff = extract(tmp_path / "pages.tiff")
    assert tiff.kind == "tiff" and list(tiff.ocr) == [0, 1]
    assert error_rate(tiff.pages[1], text_layer(2)) < 0.02


def test_a_page_read_poorly_is_marked_unsure_and_a_blank_one_is_not(tmp_path):
    pdf = pypdfium2.PdfDocument(SAMPLE)
    blurred = pdf[3].render(scale=200 / 72, grayscale=True).to_pil().filter(ImageFilter.GaussianBlur(2.0))
    pdf.close()
    blank = Image.new("L", blurred.size, 255)
    blurred.save(tmp_path / "fax.pdf", save_all=True, append_images=[blank], resolution=200)
    extracted = extract(tmp_path / "fax.pdf")
    confidence = extracted.ocr[0].confidence
    assert confidence is not None and confidence < ocr.LOW_CONFIDENCE and "Control" in extracted.pages[0]
    assert extracted.ocr[1].confidence is None and extracted.pages[1] == ""


def test_a_scan_is_searchable_citable_and_listed_as_read_by_ocr(tmp_path, scan):
    data = tmp_path / "data"
    added = tunedesk("add", str(scan), data_dir=data)
    assert added.returncode == 0, added.stderr
    assert re.fullmatch(r"added +scan\.pdf \(3 pages, \d+ chunks, all pages by OCR, id 1\)\n", added.stdout)
    assert "all pages by OCR" in tunedesk("docs", data_dir=data).stdout
    with Library(data) as library:
        (hit,) = search(library, "Applicable Law means all applicable statutes ordinances regulations", k=1)
        assert hit.pages == [1]  # the sample's p. 2, the scan's first
        quote = re.search(r"“Applicable Law” means [^,]+", hit.text)
        assert quote is not None
        passage = Passage(hit.chunk_id, 1, "scan.pdf", 1, 2, hit.text)
        cited, backed = check_citations(f"“{quote[0]}” [scan.pdf p. 1]", [passage], library.page_text)
        assert backed and cited[0].pages == [1]
        wrong, backed = check_citations(f"“{quote[0]}” [scan.pdf p. 2]", [passage], library.page_text)
        assert not backed and not wrong
        # Each word OCR read is kept with where it is in the page's text, and on the page.
        page = library.page(1, 1)
        assert page.by_ocr and not page.unsure and len(page.words) > 300
        assert [page.text[start:end] for start, end, *_ in page.words] == page.text.split()
        assert all(
            0 <= left < right <= ocr.WHOLE and 0 <= top < bottom <= ocr.WHOLE
            for *_, left, right, top, bottom in page.words
        )


def test_no_ocr_keeps_the_old_refusal_and_a_missing_tesseract_is_named(tmp_path, scan, monkeypatch):
    page_images(SAMPLE, range(1, 2))[0].save(tmp_path / "page.png")
    with pytest.raises(KnownError, match=r"^scan\.pdf has no text layer \(is it a scan\?\), and reading scans by OCR"):
        extract(scan, ocr=False)
    with pytest.raises(KnownError, match=r"^page\.png is an image, and reading scans by OCR is turned off\.$"):
        extract(tmp_path / "page.png", ocr=False)
    data = tmp_path / "data"
    refused = tunedesk("add", "--no-ocr", str(scan), data_dir=data)
    assert refused.returncode == 1 and "reading scans by OCR is turned off" in refused.stdout
    monkeypatch.setattr(ocr, "TESSERACT", "no-such-tesseract")
    with pytest.raises(KnownError, match=r"needs Tesseract OCR, which is not installed \(on Debian or Ubuntu: apt"):
        extract(scan)


def _png(width: int, height: int, rows: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.mark.timeout(120)
def test_bad_images_are_one_sentence(tmp_path):
    # A 35000 x 35000 page (1.2 GB of pixels) in a PNG of 1.2 MB: refused from its header, before any pixel.
    squeezer = zlib.compressobj(9)
    row = b"\0" * 35001
    rows = b"".join(squeezer.compress(row * 1000) for _ in range(35)) + squeezer.flush()
    (tmp_path / "bomb.png").write_bytes(_png(35000, 35000, rows))
    message = refuse(tmp_path / "bomb.png")
    assert message == "bomb.png has a page of 35,000 x 35,000 pixels, more than the limit of 100 million."
    # One below the limit still cannot take more memory than the parsing child has.
    assert "memory" in refuse(tmp_path / "bomb.png", max_image_pixels=2_000_000_000, max_memory=512 * 2**20)
    (tmp_path / "cut.png").write_bytes(_png(800, 800, zlib.compress(b"\0" * 8001)))
    assert "is damaged and cannot be read as an image" in refuse(tmp_path / "cut.png")
    (tmp_path / "notes.jpg").write_text("Not an image at all.")
    assert refuse(tmp_path / "notes.jpg") == "notes.jpg is not an image Tunedesk can read."


def refuse(path: Path, **limits) -> str:
    with pytest.raises(KnownError) as caught:
        extract(path, limits=Limits(**limits))
    return str(caught.value)


def test_a_password_protected_scan_is_refused(tmp_path, scan):
    locked = pypdf.PdfWriter(clone_from=scan)
    locked.encrypt("secret", algorithm="AES-128")
    locked.write(tmp_path / "locked.pdf")
    assert refuse(tmp_path / "locked.pdf") == "locked.pdf is encrypted and needs a password."


def test_a_page_past_the_time_limit_is_stopped(scan):
    assert refuse(scan, max_seconds=0.5).startswith("scan.pdf took longer than 0.5 s to read")


def test_cancel_during_ocr_adds_nothing(library, scan):
    stop = threading.Event()
    seen: list[tuple[Path, bool]] = []

    def progress(what: str, done: int, total: int) -> None:
        seen.append(reading(what))
        stop.set()  # at the first page read

    with pytest.raises(Cancelled):
        list(add_documents(library, [scan], work=Work(progress, stop.is_set)))
    assert seen[0] == (scan, True)
    assert library.documents() == [] and not any((library.files_dir).glob("*"))


def test_image_pages_keep_the_resolution_they_were_scanned_at(tmp_path):
    # A 150 dpi scan told tesseract it is 300 dpi reads worse; the file's own dpi is what it is told.
    (image,) = page_images(SAMPLE, range(3, 4), dpi=150)
    saved = io.BytesIO()
    image.save(saved, format="PNG", dpi=(150, 150))
    (tmp_path / "low.png").write_bytes(saved.getvalue())
    assert error_rate(extract(tmp_path / "low.png").pages[0], text_layer(3)) < 0.02
