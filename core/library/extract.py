"""Files to pages of text, each file parsed in a child process with limits.

A hostile or broken file can crash a native parser, loop, or ask for gigabytes; in a child process with a
deadline and a memory cap it fails alone (docs/reliability.md, promise 6), with one sentence that names it.

PDF: pypdf does what it is good at (is it a PDF, encryption and passwords, the page count, metadata); PDFium
(pypdfium2) extracts the text, 20-70x faster than pypdf's extract_text on real contracts
(docs/extraction.md), and renders the pages that have no text (scans) for OCR (core/library/ocr.py). Images
(PNG, JPEG, TIFF; a multi-page TIFF is a document of pages): Pillow, then OCR. DOCX: python-docx, paged at
Word's own page breaks. TXT and Markdown: pages at form feeds, as `pr` and printers do.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import cast

from core.errors import Cancelled, KnownError
from core.library import ocr as _ocr
from core.progress import QUIET, Work
from core.sizes import format_size

KINDS = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".txt": "text",
    ".md": "text",
    ".markdown": "text",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
}
IMAGES = ("png", "jpeg", "tiff")
MiB = 2**20
# What extract() says of each page it reads: its unit of progress.
PAGE, PAGE_BY_OCR = "page", "page by OCR"


@dataclass(frozen=True)
class Limits:
    """What one file may cost to read; beyond any of these it is refused."""

    max_bytes: int = 256 * MiB
    max_pages: int = 2000
    max_seconds: float = 120.0
    max_memory: int = 2048 * MiB  # address space of the parsing child (and of its OCR)
    max_chars: int = 64 * MiB
    max_image_pixels: int = 100_000_000  # of an image file's page; a 35000 x 35000 bomb has 1,225 M


@dataclass(frozen=True)
class Extracted:
    sha256: str  # of the bytes that were parsed, so a file that changes meanwhile cannot slip through
    kind: str
    pages: list[str]
    title: str | None
    ocr: dict[int, _ocr.OcrPage]  # page index -> what OCR said of it, for the pages read by OCR


def kind_of(path: Path) -> str | None:
    return KINDS.get(path.suffix.lower())


def extract(
    path: Path,
    *,
    limits: Limits = Limits(),
    ocr: bool = True,
    work: Work = QUIET,
) -> Extracted:
    """Read `path` into pages of text in a child process (two for a long PDF, each reading half); with `ocr`,
    the pages without text (scans, images) are read by OCR where Tesseract is installed.

    Raises KnownError with one sentence naming the file for every input that cannot be read, and
    Cancelled as soon as `work` is cancelled; its progress counts the pages read (PAGE or PAGE_BY_OCR, done,
    total). A page read by OCR may take `limits.max_seconds` of its own.
    """
    name = path.name
    kind = _check_file(path, limits)
    ocr = ocr and _ocr.available()
    if kind in IMAGES and not ocr:
        raise KnownError(f"{name} is an image, {_no_ocr()}.")
    context = _context()
    children: dict[Connection, multiprocessing.process.BaseProcess] = {}
    done: dict[Connection, int] = {}  # pages done by each child, for progress
    parts: dict[int, list[str]] = {}  # first page index -> pages
    read_by_ocr: dict[int, _ocr.OcrPage] = {}
    result = None

    def start(target: Callable[..., None], *args: object) -> None:
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(target=target, args=(*args, sender), daemon=True)
        child.start()
        sender.close()  # so that the child's exit shows here as end of file
        children[receiver] = child

    start(_child_main, str(path), kind, limits, ocr, (os.cpu_count() or 1) > 1)
    deadline = time.monotonic() + limits.max_seconds
    try:
        while children:
            if work.cancelled():
                raise Cancelled()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KnownError(f"{name} took longer than {limits.max_seconds:g} s to read, so it was stopped.")
            ready = cast(list[Connection], wait(list(children), timeout=min(remaining, 0.1)))
            for receiver in ready:
                try:
                    message = json.loads(receiver.recv_bytes())
                except EOFError:
                    child = children.pop(receiver)
                    child.join()
                    raise KnownError(f"{name} crashed the {kind.upper()} reader ({_how(child.exitcode)}).") from None
                if "error" in message:
                    raise KnownError(f"{name} {message['error']}.")
                if "progress" in message:
                    done[receiver] = message["progress"][0]
                    if message.get("ocr"):
                        deadline = time.monotonic() + limits.max_seconds  # each page read by OCR has its own
                    work.progress(
                        PAGE_BY_OCR if message.get("ocr") else PAGE, sum(done.values()), message["progress"][1]
                    )
                elif "split" in message:
                    start(_child_pages, str(path), limits, ocr, *message["split"])
                else:
                    part = message.get("result") or message["part"]
                    if "result" in message:
                        result = part
                    parts[part["first"]] = part["pages"]
                    for index, (confidence, words) in part["ocr"].items():
                        read_by_ocr[int(index)] = _ocr.OcrPage(confidence, [tuple(word) for word in words])
                    children.pop(receiver).join()
                    receiver.close()
    finally:
        for receiver, child in children.items():
            child.kill()
            child.join()
            receiver.close()
    assert result is not None
    pages = [page for first in sorted(parts) for page in parts[first]]
    if sum(map(len, pages)) > limits.max_chars:
        raise KnownError(f"{name} holds more than {limits.max_chars:,} characters of text, the limit for one file.")
    if not any(page.strip() for page in pages):
        if kind == "pdf":
            raise KnownError(f"{name} {_NO_TEXT_PDF if ocr else _NO_TEXT_LAYER + ', ' + _no_ocr()}.")
        raise KnownError(f"{name} {_NO_TEXT_IMAGE if kind in IMAGES else _NO_TEXT}.")
    return Extracted(sha256=result["sha256"], kind=kind, pages=pages, title=result["title"], ocr=read_by_ocr)


_NO_TEXT = "contains no text"
_NO_TEXT_LAYER = "has no text layer (is it a scan?)"
_NO_TEXT_PDF = "has no text, even by OCR (are its pages blank?)"
_NO_TEXT_IMAGE = "shows no text that OCR can read"


def _no_ocr() -> str:
    """Why images are not read here, worded to follow "NAME is an image, " or "NAME has no text layer, "."""
    if not _ocr.available():
        return (
            "and reading scans needs Tesseract OCR, which is not installed "
            "(on Debian or Ubuntu: apt install tesseract-ocr)"
        )
    return "and reading scans by OCR is turned off"


def _how(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}; it is probably damaged, or too large to read"
    return f"exit status {exitcode}; it is probably damaged"


def _check_file(path: Path, limits: Limits) -> str:
    """What can be told without parsing; returns the kind of file."""
    name = path.name
    if path.is_dir():
        raise KnownError(f"{name} is a folder, not a file.")
    kind = kind_of(path)
    if kind is None:
        known = ", ".join(sorted(KINDS))
        raise KnownError(f"{name} has an unsupported type ({path.suffix or 'no extension'}); Tunedesk reads {known}.")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise KnownError(f"{name} does not exist (was it moved or deleted?).") from None
    except OSError as error:
        raise KnownError(f"{name} cannot be read: {error.strerror}.") from None
    if not path.is_file():
        raise KnownError(f"{name} is not a regular file (a pipe, socket or device cannot be added).")
    if size == 0:
        raise KnownError(f"{name} is empty (0 bytes).")
    if size > limits.max_bytes:
        raise KnownError(f"{name} is {format_size(size)}, more than the limit of {format_size(limits.max_bytes)}.")
    if not os.access(path, os.R_OK):
        raise KnownError(f"{name} cannot be read: permission denied.")
    return kind


@functools.cache
def start_parsers() -> None:
    """Start the fork server the parsing children come from, from this thread: from the main thread (a
    command's) it starts deaf to Ctrl-C, which the worker threads that call extract() cannot arrange, and a
    Ctrl-C during its preload printed its traceback."""
    _context()


def _context() -> multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext:
    # A fork server forks each child from a small, clean, single-threaded process that has the parsers
    # already imported: milliseconds a file instead of 200 ms for a fresh interpreter, and safe to use
    # from a process with threads (the GUI), which plain fork is not. Each child still runs the main
    # module again (multiprocessing's rule; its own preload of "__main__" does nothing in Python 3.11:
    # it looks for a "main_path" that get_preparation_data never sets), so the server also preloads the
    # core modules this process has imported, and the main module's imports are then already there.
    # Scripts that call extract() need the usual `if __name__ == "__main__":` guard.
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    ours = sorted(name for name in sys.modules if name.partition(".")[0] == "core")
    context.set_forkserver_preload([*ours, "pypdf", "pypdfium2", "docx", "PIL.Image", "PIL.TiffImagePlugin"])
    _start_deaf_to_ctrl_c()
    return context


def _start_deaf_to_ctrl_c() -> None:
    """Start the fork server with SIGINT ignored, which it and its children inherit: a Ctrl-C reaches the
    whole process group, and CPython's server ignores it only after its preload, so one during the
    preload printed the server's KeyboardInterrupt. The parent answers a Ctrl-C; its children need not."""
    if threading.current_thread() is not threading.main_thread():
        return  # the app's tasks: no terminal, and signal handlers belong to the main thread
    import multiprocessing.forkserver

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------------------------------------------------
# The child: everything below runs in the parsing process.


class _Refused(Exception):
    """Raised in the child with the reason, worded to follow the file's name."""


Send = Callable[[dict], None]


@dataclass
class _Reading:
    """What a parsing child is reading with, and what it has read by OCR."""

    limits: Limits
    ocr: bool  # read the pages without text by OCR
    send: Send
    by_ocr: dict[int, _ocr.OcrPage]  # page index -> what OCR said of it

    def read(self, index: int, image, dpi: float) -> _ocr.Read:
        try:
            return _ocr.read_image(image, dpi=dpi, seconds=self.limits.max_seconds)
        except _ocr.OcrError as error:
            raise _Refused(f"{error} (page {index + 1})") from None

    def keep(self, index: int, read: _ocr.Read) -> str:
        """The page's text is what OCR read."""
        self.by_ocr[index] = read.page
        return read.text

    def sent_by_ocr(self) -> dict[int, tuple]:
        return {index: (page.confidence, page.words) for index, page in self.by_ocr.items()}


def _child_main(path: str, kind: str, limits: Limits, ocr: bool, may_split: bool, sender: Connection) -> None:
    def work(send: Send) -> None:
        data = _read_bytes(path, limits)
        sha256 = hashlib.sha256(data).hexdigest()
        reading = _Reading(limits, ocr, send, {})
        title, pages = _READERS[kind](data, reading, sha256 if may_split else None)
        part = {"first": 0, "pages": [_clean(page) for page in pages], "ocr": reading.sent_by_ocr()}
        send({"result": {**part, "sha256": sha256, "title": title}})

    _run_child(work, limits, sender)


def _child_pages(
    path: str,
    limits: Limits,
    ocr: bool,
    sha256: str,
    password: str | None,
    first: int,
    last: int,
    sender: Connection,
) -> None:
    """Pages [first, last) of a PDF that the main child has already checked."""

    def work(send: Send) -> None:
        data = _read_bytes(path, limits)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise _Refused("changed while it was being read")
        reading = _Reading(limits, ocr, send, {})
        pages = _pdf_text(_open_pdf(data, password), first, last, reading)
        send({"part": {"first": first, "pages": [_clean(page) for page in pages], "ocr": reading.sent_by_ocr()}})

    _run_child(work, limits, sender)


def _run_child(work: Callable[[Send], None], limits: Limits, sender: Connection) -> None:
    def send(message: dict) -> None:
        sender.send_bytes(json.dumps(message).encode())

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its repair notes are not for the user's terminal
    # A Ctrl-C at the terminal reaches the whole process group: the parent answers it and ends its
    # children, which must not each print a KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limits.max_memory, limits.max_memory))
            work(send)
        except _Refused as refusal:
            send({"error": str(refusal)})
        except MemoryError:
            send({"error": f"needs more than {format_size(limits.max_memory)} of memory to read"})
        except FileNotFoundError:
            send({"error": "disappeared before it could be read"})
        except OSError as error:
            send({"error": f"cannot be read: {error.strerror}"})
    except (BrokenPipeError, ConnectionResetError, EOFError):
        pass  # the parent is gone (killed): there is no one to tell
    finally:
        sender.close()


def _read_bytes(path: str, limits: Limits) -> bytes:
    with open(path, "rb") as file:
        data = file.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise _Refused(f"grew past the limit of {format_size(limits.max_bytes)} while being read")
    return data


# C0 controls other than tab, newline and form feed; NUL bytes in particular break FTS and display.
_CONTROLS = re.compile("[\x00-\x08\x0b\x0d-\x1f\x7f]")


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\ufffe", "-")  # PDFium marks hyphens it found at line ends this way
    text = _CONTROLS.sub("", text)
    # Lone surrogates (from broken UTF-16 in PDFs) cannot be stored as UTF-8.
    return text.encode("utf-8", "replace").decode("utf-8")


# Below this many pages a second child costs more than it saves; a scan is split from 2 pages, since each
# page takes seconds to read by OCR.
SPLIT_FROM_PAGES = 24


def _read_pdf(data: bytes, reading: _Reading, split_as: str | None) -> tuple[str | None, list[str]]:
    """Checks the PDF, then reads its text; with `split_as` (the file's hash) a long PDF's second half is
    handed to a second child."""
    import pypdf
    from pypdf.errors import PyPdfError

    if b"%PDF-" not in data[:1024]:
        raise _Refused(f"is not a PDF{_looks_like(data)}")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        password = None
        if reader.is_encrypted:
            # Many PDFs are encrypted only against editing: the empty user password opens them.
            if not reader.decrypt(""):
                raise _Refused("is encrypted and needs a password")
            password = ""
        count = len(reader.pages)
        title = reader.metadata.title if reader.metadata else None
    except (PyPdfError, ValueError, KeyError, TypeError, RecursionError, AttributeError) as error:
        raise _Refused(f"is damaged and cannot be read as a PDF ({_short(error)})") from None
    if count > reading.limits.max_pages:
        raise _Refused(f"has {count:,} pages, more than the limit of {reading.limits.max_pages:,}")
    if count == 0:
        raise _Refused("has no pages")
    pdf = _open_pdf(data, password)
    last = count
    first_page = pdf[0]
    split_from = 2 if reading.ocr and _image_of_text(first_page, _page_text(first_page)) else SPLIT_FROM_PAGES
    first_page.close()
    if split_as is not None and count >= split_from:
        last = count // 2
        reading.send({"split": [split_as, password, last, count]})
    return (str(title) if title else None), _pdf_text(pdf, 0, last, reading, total=count)


def _open_pdf(data: bytes, password: str | None):
    import pypdfium2

    try:
        return pypdfium2.PdfDocument(data, password=password)
    except pypdfium2.PdfiumError as error:
        # pypdf cannot tell every encryption (AES-256 without its crypto library) from none; PDFium can.
        if "password" in str(error).lower():
            raise _Refused("is encrypted and needs a password") from None
        raise _Refused(f"is damaged and cannot be read as a PDF ({_short(error)})") from None


def _page_text(page) -> str:
    textpage = page.get_textpage()
    text = textpage.get_text_range()
    textpage.close()
    return text


def _pdf_text(pdf, first: int, last: int, reading: _Reading, *, total: int | None = None) -> list[str]:
    """The text of pages [first, last) of `pdf` (PDFium's document, which it closes), by OCR where a page
    holds its text as an image."""
    total = total or len(pdf)
    pages = []
    for index in range(first, min(last, len(pdf))):
        page = pdf[index]
        text = _page_text(page)
        by_ocr = reading.ocr and _image_of_text(page, text)
        if by_ocr:
            read = reading.read(index, *_render(page))
            if not _letters(text) or _letters(read.text) > _letters(text):
                text = reading.keep(index, read)
        page.close()
        pages.append(text)
        if by_ocr or len(pages) % 10 == 0:
            reading.send({"progress": [len(pages), total], "ocr": by_ocr})
    pdf.close()
    reading.send({"progress": [len(pages), total], "ocr": bool(reading.by_ocr)})
    return pages


# A page whose text layer holds fewer letters than this, and an image over a fifth of the page, is read by
# OCR too: a scanned exhibit or a table pasted as a picture, under a header or footer that is text (EDGAR's
# "Source:" line on every page). Of the 42 sample and CUAD contracts, 9 pages are such; their images covered
# 27% to 53% of the page, a logo far less.
SHORT_TEXT, IMAGE_SHARE = 200, 0.2


def _image_of_text(page, text: str) -> bool:
    """Whether the page may hold text as an image: it has no text, or little text and a large image."""
    import pypdfium2.raw as pdfium

    letters = _letters(text)
    if letters == 0:
        return True
    if letters >= SHORT_TEXT:
        return False
    width, height = page.get_size()
    for item in page.get_objects(max_depth=0):
        inside = item.type == pdfium.FPDF_PAGEOBJ_FORM and any(
            True for _ in page.get_objects(filter=[pdfium.FPDF_PAGEOBJ_IMAGE], form=item)
        )
        if item.type == pdfium.FPDF_PAGEOBJ_IMAGE or inside:
            left, bottom, right, top = item.get_bounds()
            shown = max(min(right, width) - max(left, 0), 0) * max(min(top, height) - max(bottom, 0), 0)
            if shown >= IMAGE_SHARE * width * height:
                return True
    return False


def _letters(text: str) -> int:
    return len("".join(text.split()))


def _render(page) -> tuple[object, float]:
    """A page as a grey image for OCR, at core.library.ocr.DPI or less, at most MAX_PIXELS; with its dpi."""
    width, height = page.get_size()  # in points, 72 to the inch
    scale = min(_ocr.DPI / 72, (_ocr.MAX_PIXELS / max(width * height, 1.0)) ** 0.5)
    return page.render(scale=scale, grayscale=True).to_pil(), scale * 72


def _read_image(data: bytes, reading: _Reading, split_as: str | None) -> tuple[str | None, list[str]]:
    """Each frame of an image file (a TIFF may hold many) is a page, read by OCR."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    limits = reading.limits
    Image.MAX_IMAGE_PIXELS = None  # the limit below is checked on every page, with its own sentence
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only: the size is known before any pixel
    except UnidentifiedImageError:
        if "image" in _looks_like(data):
            raise _Refused("is damaged and cannot be read as an image") from None
        raise _Refused(f"is not an image Tunedesk can read{_looks_like(data)}") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise _Refused(f"is damaged and cannot be read as an image ({_short(error)})") from None
    count = getattr(image, "n_frames", 1)
    if count > limits.max_pages:
        raise _Refused(f"has {count:,} pages, more than the limit of {limits.max_pages:,}")
    pages = []
    try:
        for index, frame in enumerate(ImageSequence.Iterator(image)):
            if frame.width * frame.height > limits.max_image_pixels:
                raise _Refused(
                    f"has a page of {frame.width:,} x {frame.height:,} pixels, more than the limit of "
                    f"{limits.max_image_pixels / 1e6:,.0f} million"
                )
            dpi = frame.info.get("dpi", (_ocr.DPI, _ocr.DPI))[0] or _ocr.DPI
            pages.append(reading.keep(index, reading.read(index, frame, float(dpi))))
            reading.send({"progress": [index + 1, count], "ocr": True})
    except (OSError, ValueError, SyntaxError) as error:
        raise _Refused(f"is damaged and cannot be read as an image ({_short(error)})") from None
    return None, pages


def _read_docx(data: bytes, reading: _Reading, split_as: str | None) -> tuple[str | None, list[str]]:
    import zipfile

    import docx
    from docx.oxml.ns import qn

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        expanded = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        raise _Refused(f"is not a Word document{_looks_like(data)}") from None
    if expanded > reading.limits.max_bytes:
        limit = format_size(reading.limits.max_bytes)
        raise _Refused(f"expands to {format_size(expanded)}, more than the limit of {limit}")
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as error:  # python-docx raises a range of types for broken packages
        raise _Refused(f"is damaged and cannot be read as a Word document ({_short(error)})") from None

    body = document.element.body
    # Word records where its last layout broke pages; where it never laid the file out, only the
    # explicit page breaks are known.
    rendered = next(body.iter(qn("w:lastRenderedPageBreak")), None) is not None
    pages: list[list[str]] = [[]]

    def walk(element) -> None:
        for child in element:
            tag = child.tag
            if tag == qn("w:t"):
                pages[-1].append(child.text or "")
            elif tag == qn("w:tab"):
                pages[-1].append("\t")
            elif tag == qn("w:br"):
                if child.get(qn("w:type")) == "page" and not rendered:
                    pages.append([])
                else:
                    pages[-1].append("\n")
            elif tag == qn("w:lastRenderedPageBreak") and rendered:
                pages.append([])
            elif tag == qn("w:p"):
                walk(child)
                pages[-1].append("\n\n")
            else:
                walk(child)

    walk(body)
    title = document.core_properties.title or None
    return title, ["".join(parts).strip("\n") for parts in pages]


def _read_text(data: bytes, reading: _Reading, split_as: str | None) -> tuple[str | None, list[str]]:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
    else:
        # Text has next to no control bytes besides tab, newline, carriage return and form feed; random or
        # binary bytes have one in nine (random bytes named .txt were added as 712 pages of mojibake).
        head = data[:65536]
        if len(head) - len(head.translate(None, _TEXT_CONTROLS)) > max(16, len(head) // 100):
            raise _Refused(f"is not a text file{_looks_like(data)}")
        text = data.decode("utf-8-sig", errors="replace")
        # A stray byte in a UTF-8 file is one character lost, not the whole file read as cp1252; many bytes
        # that are not UTF-8 make an old Windows file, in that encoding.
        if text.count("\ufffd") > len(text) // 1000:
            text = data.decode("cp1252", errors="replace")
    return None, text.split("\f")


_TEXT_CONTROLS = bytes([*range(0x09), 0x0B, *range(0x0E, 0x20), 0x7F])  # the controls text does not use

_READERS = {"pdf": _read_pdf, "docx": _read_docx, "text": _read_text, **dict.fromkeys(IMAGES, _read_image)}

_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"PK\x03\x04": "a ZIP archive",
    b"%PDF-": "a PDF",
    b"{\\rtf": "an RTF document",
    b"\xd0\xcf\x11\xe0": "an old Office document (.doc/.xls)",
}


def _looks_like(data: bytes) -> str:
    for magic, what in _MAGIC.items():
        if data.startswith(magic):
            return f" (its bytes say it is {what})"
    return ""


def _short(error: BaseException) -> str:
    text = str(error).strip().rstrip(".") or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."
