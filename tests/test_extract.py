"""core.library.extract on real files, and on the hostile and broken ones of docs/reliability.md."""

from __future__ import annotations

import io
import os
import random
import threading
import zlib
from pathlib import Path

import docx
import pypdf
import pytest
from fpdf import FPDF
from PIL import Image

from core.errors import Cancelled, KnownError
from core.library import extract as extract_module
from core.library import ocr
from core.library.extract import Limits, extract
from core.progress import Work
from tests.conftest import SAMPLE, make_pdf


def refusal(path: Path, **limits) -> str:
    with pytest.raises(KnownError) as caught:
        extract(path, limits=Limits(**limits))
    message = str(caught.value)
    assert message.startswith(path.name), message
    assert "\n" not in message
    return message


def test_pdf_pages_in_order(tmp_path):
    path = make_pdf(tmp_path / "three.pdf", ["First page text.", "Second page text.", "Third page text."])
    extracted = extract(path)
    assert extracted.kind == "pdf"
    assert [page.strip() for page in extracted.pages] == ["First page text.", "Second page text.", "Third page text."]


def test_the_sample_contract(tmp_path):
    progress = []
    extracted = extract(SAMPLE, work=Work(lambda what, done, total: progress.append((done, total))))
    assert len(extracted.pages) == 50
    assert "14.2 Governing Law" in extracted.pages[40]
    assert "\r" not in "".join(extracted.pages)
    assert progress[-1] == (50, 50)


def test_docx_pages_follow_page_breaks_and_keep_tables(tmp_path):
    document = docx.Document()
    document.add_paragraph("Article 1. Definitions.")
    document.add_page_break()
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "Royalty"
    table.cell(0, 1).text = "5 percent"
    document.add_paragraph("Article 2. Term.")
    path = tmp_path / "agreement.docx"
    document.save(str(path))
    extracted = extract(path)
    assert len(extracted.pages) == 2
    assert "Article 1. Definitions." in extracted.pages[0]
    assert "Royalty" in extracted.pages[1] and "5 percent" in extracted.pages[1]
    assert extracted.pages[1].index("Royalty") < extracted.pages[1].index("Article 2. Term.")


def test_text_and_markdown(tmp_path):
    (tmp_path / "notes.md").write_text("# Title\n\nBody text.\fSecond page.", encoding="utf-8")
    assert extract(tmp_path / "notes.md").pages == ["# Title\n\nBody text.", "Second page."]
    (tmp_path / "old.txt").write_bytes("Caf\xe9 \u201cquoted\u201d".encode("cp1252"))
    assert extract(tmp_path / "old.txt").pages == ["Café “quoted”"]
    (tmp_path / "wide.txt").write_text("UTF-16 text", encoding="utf-16")
    assert extract(tmp_path / "wide.txt").pages == ["UTF-16 text"]
    # One stray byte costs one character, not the whole file read as cp1252.
    (tmp_path / "stray.txt").write_bytes("Café “quoted” ".encode() * 500 + b"\xff")
    assert extract(tmp_path / "stray.txt").pages == ["Café “quoted” " * 500 + "\ufffd"]


def test_random_bytes_named_txt_are_refused(tmp_path):
    (tmp_path / "noise.txt").write_bytes(random.Random(7).randbytes(1 << 20))
    with pytest.raises(KnownError, match=r"^noise.txt is not a text file\.$"):
        extract(tmp_path / "noise.txt")


def test_nul_bytes_right_to_left_text_and_a_10_mb_line(tmp_path):
    (tmp_path / "nul.txt").write_bytes(b"before\x00after")
    assert extract(tmp_path / "nul.txt").pages == ["beforeafter"]
    (tmp_path / "rtl.txt").write_text("العقد ينص על החוזה", encoding="utf-8")
    assert extract(tmp_path / "rtl.txt").pages == ["العقد ينص על החוזה"]
    (tmp_path / "line.txt").write_text("word " * 2_000_000, encoding="utf-8")
    assert len(extract(tmp_path / "line.txt").pages[0]) == 10_000_000


def test_owner_only_encryption_opens_without_a_password(tmp_path):
    writer = pypdf.PdfWriter(clone_from=make_pdf(tmp_path / "plain.pdf", ["Protected against editing."]))
    writer.encrypt(user_password="", owner_password="owner-secret")
    writer.write(tmp_path / "locked.pdf")
    assert "Protected against editing." in extract(tmp_path / "locked.pdf").pages[0]


def test_encrypted_pdf_without_password(tmp_path):
    writer = pypdf.PdfWriter(clone_from=make_pdf(tmp_path / "plain.pdf", ["Secret."]))
    writer.encrypt(user_password="secret")
    writer.write(tmp_path / "secret.pdf")
    assert "encrypted and needs a password" in refusal(tmp_path / "secret.pdf")


def test_aes256_encryption_that_pypdf_lets_pass_is_said_by_pdfium(tmp_path):
    # Without its crypto library pypdf can take an AES-256 PDF for readable; PDFium then asks for a password.
    writer = pypdf.PdfWriter(clone_from=make_pdf(tmp_path / "plain.pdf", ["Secret."]))
    writer.encrypt(user_password="secret", algorithm="AES-256")
    writer.write(tmp_path / "aes.pdf")
    with pytest.raises(extract_module._Refused, match=r"^is encrypted and needs a password$"):
        extract_module._open_pdf((tmp_path / "aes.pdf").read_bytes(), "")


def test_truncated_pdf(tmp_path):
    data = SAMPLE.read_bytes()
    (tmp_path / "truncated.pdf").write_bytes(data[: len(data) // 3])
    assert "damaged" in refusal(tmp_path / "truncated.pdf")


def test_other_files_renamed_pdf(tmp_path):
    image = io.BytesIO()
    Image.new("RGB", (8, 8)).save(image, format="PNG")
    (tmp_path / "image.pdf").write_bytes(image.getvalue())
    assert "is not a PDF (its bytes say it is a PNG image)" in refusal(tmp_path / "image.pdf")
    (tmp_path / "archive.docx").write_bytes(b"%PDF-1.7\n" + b"x" * 100)
    assert "is not a Word document (its bytes say it is a PDF)" in refusal(tmp_path / "archive.docx")


def test_a_blank_scan(tmp_path):
    pdf = FPDF()
    pdf.add_page()
    pdf.image(Image.new("L", (200, 300), color=255), x=10, y=10, w=100)
    pdf.output(str(tmp_path / "scan.pdf"))
    message = refusal(tmp_path / "scan.pdf")
    assert (
        message == "scan.pdf has no text, even by OCR (are its pages blank?)."
        if ocr.available()
        else "has no text layer" in message
    )


def test_empty_folder_unsupported_special_and_missing(tmp_path):
    (tmp_path / "empty.pdf").write_bytes(b"")
    assert "is empty (0 bytes)" in refusal(tmp_path / "empty.pdf")
    (tmp_path / "folder.pdf").mkdir()
    assert "is a folder" in refusal(tmp_path / "folder.pdf")
    (tmp_path / "sheet.xlsx").write_bytes(b"PK\x03\x04")
    assert "unsupported type (.xlsx)" in refusal(tmp_path / "sheet.xlsx")
    os.mkfifo(tmp_path / "pipe.txt")
    assert "not a regular file" in refusal(tmp_path / "pipe.txt")
    (tmp_path / "gone.pdf").symlink_to(tmp_path / "nowhere.pdf")
    assert "does not exist" in refusal(tmp_path / "gone.pdf")


def test_limits_on_bytes_pages_time_and_memory(tmp_path):
    assert "more than the limit of 1000 bytes" in refusal(SAMPLE, max_bytes=1000)
    assert "has 50 pages, more than the limit of 20" in refusal(SAMPLE, max_pages=20)
    assert "took longer than 0.001 s" in refusal(SAMPLE, max_seconds=0.001)
    assert "needs more than 64.0 MB of memory" in refusal(SAMPLE, max_memory=64 * 2**20)


def test_a_pdf_of_thousands_of_pages(tmp_path):
    writer = pypdf.PdfWriter()
    for _ in range(3000):
        writer.add_blank_page(width=612, height=792)
    writer.write(tmp_path / "huge.pdf")
    assert "has 3,000 pages, more than the limit of 2,000" in refusal(tmp_path / "huge.pdf")


@pytest.mark.timeout(60)
def test_cyclic_page_tree_ends(tmp_path):
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Pages /Kids [2 0 R] /Count 1 /Parent 2 0 R >>",
    ]
    body, offsets = b"%PDF-1.7\n", []
    for number, content in enumerate(objects, 1):
        offsets.append(len(body))
        body += b"%d 0 obj\n%s\nendobj\n" % (number, content)
    xref = len(body)
    body += b"xref\n0 4\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    body += b"trailer\n<< /Size 4 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    (tmp_path / "cycle.pdf").write_bytes(body)
    refusal(tmp_path / "cycle.pdf")


@pytest.mark.timeout(120)
def test_decompression_bomb(tmp_path):
    squeezer = zlib.compressobj(9)
    block = b"0 0 m " * (1 << 17)
    stream = b"".join(squeezer.compress(block) for _ in range(1200)) + squeezer.flush()  # ~900 MB inflated
    pdf = pypdf.PdfWriter(clone_from=make_pdf(tmp_path / "plain.pdf", ["Bomb."]))
    content = pypdf.generic.DecodedStreamObject()
    content.set_data(b"")
    stream_object = pypdf.generic.StreamObject()
    stream_object._data = stream
    stream_object[pypdf.generic.NameObject("/Filter")] = pypdf.generic.NameObject("/FlateDecode")
    pdf.pages[0][pypdf.generic.NameObject("/Contents")] = pdf._add_object(stream_object)
    pdf.write(tmp_path / "bomb.pdf")
    refusal(tmp_path / "bomb.pdf", max_memory=512 * 2**20, max_seconds=60)


def test_cancel(tmp_path):
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        extract(SAMPLE, work=Work(cancelled=stop.is_set))


def test_a_ctrl_c_while_the_fork_server_starts_prints_no_traceback():
    """A Ctrl-C reaches the whole process group; the fork server, still importing the parsers, once answered
    it with a KeyboardInterrupt traceback."""
    import os
    import signal
    import subprocess
    import sys

    code = (
        "import multiprocessing.forkserver as server, time; from core.library import extract; "
        "extract._context(); server.ensure_running(); print(server._forkserver._forkserver_pid, flush=True); "
        "time.sleep(3)"
    )
    started = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert started.stdout is not None
    pid = int(started.stdout.readline())
    os.kill(pid, signal.SIGINT)  # while it preloads (pypdf, pypdfium2, docx and core take a while)
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    ignored = int(next(line for line in status if line.startswith("SigIgn:")).split()[1], 16)
    _, errors = started.communicate(timeout=60)
    assert ignored & (1 << (signal.SIGINT - 1))
    assert "Traceback" not in errors and "KeyboardInterrupt" not in errors
