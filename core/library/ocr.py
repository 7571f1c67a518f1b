"""Text from an image of a page, by Tesseract OCR (docs/extraction.md says why Tesseract).

Runs in the parsing child (core/library/extract.py), under its memory limit, which the tesseract process
inherits. The page goes to tesseract on stdin and its words come back on stdout: a confidential page is
never written to a temporary file (pytesseract writes both the image and the result to disk).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

TESSERACT = "tesseract"
DPI = 300  # what PDF pages are rendered at: 0.1% character errors on clean contract pages, 2.1 s a page
# The pixels a page image may have when it is read: an A4 page at 300 dpi has 8.7 M. A larger image (a
# poster, a 600 dpi scan) is scaled down to this, which keeps OCR's memory and time per page bounded.
MAX_PIXELS = 24_000_000
# Below this a page's text is marked as unsure: clean renders score 0.95 to 0.96, a 150 dpi copy with noise
# and a slight rotation about 0.91, a page blurred as a fax is 0.70 with words read wrong. On the held-back
# contracts, the pages under it were 69% off their text layer, the others 1.3% (docs/benchmarks.md).
LOW_CONFIDENCE = 0.80


# A word read: where it is in the page's text (start, end), and where on the page (left, right, top,
# bottom, in WHOLE-ths of the page's width and height, whatever the image's resolution).
Word = tuple[int, int, int, int, int, int]
WHOLE = 10_000


@dataclass(frozen=True)
class OcrPage:
    """What OCR says of a page besides its text."""

    confidence: float | None  # 0-1, the words' mean weighted by their length; None: no words at all
    words: list[Word]


@dataclass(frozen=True)
class Read:
    text: str
    page: OcrPage


class OcrError(Exception):
    """Worded to follow the file's name."""


def available() -> bool:
    return _bundled() is not None or shutil.which(TESSERACT) is not None


def _bundled() -> Path | None:
    """The Linux bundle's own Tesseract (docs/packaging.md), where this is the bundle."""
    folder = Path(sys.prefix) / "share" / "tunedesk" / "tesseract"
    return folder if (folder / "tesseract").is_file() else None


def _command() -> tuple[str, dict[str, str]]:
    """Tesseract's command and its environment: the bundle's, with its English model and the libraries it
    carries, or the system's. One thread: parallel pages (two parsing children) did better than OpenMP
    within a page on 2 cores."""
    environment = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    bundled = _bundled()
    if bundled is None:
        return TESSERACT, environment
    libraries = os.pathsep.join(filter(None, [sys.prefix, environment.get("LD_LIBRARY_PATH")]))
    return str(bundled / "tesseract"), environment | {
        "TESSDATA_PREFIX": str(bundled / "tessdata"),
        "LD_LIBRARY_PATH": libraries,
    }


def read_image(image: Image.Image, *, dpi: float, seconds: float) -> Read:
    """The words on `image`, a page scanned or rendered at `dpi`, in reading order: lines end in a newline
    and paragraphs in a blank line. Gives up after `seconds`."""
    image = image.convert("L")
    pixels = image.width * image.height
    if pixels > MAX_PIXELS:
        scale = (MAX_PIXELS / pixels) ** 0.5
        image = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))))
        dpi *= scale
    page = io.BytesIO()
    image.save(page, "PPM")  # uncompressed grey: no time spent packing what tesseract unpacks at once
    tesseract, environment = _command()
    command = [tesseract, "-", "-", "--dpi", str(max(int(dpi), 70)), "-l", "eng", "tsv"]
    try:
        run = subprocess.run(command, input=page.getvalue(), capture_output=True, timeout=seconds, env=environment)
    except subprocess.TimeoutExpired:
        raise OcrError(f"took longer than {seconds:g} s to read one page by OCR, so it was stopped") from None
    except OSError as error:
        raise OcrError(f"could not be read by OCR: tesseract did not start ({error.strerror})") from None
    if run.returncode != 0:
        last = (run.stderr.decode("utf-8", "replace").strip().splitlines() or [f"exit status {run.returncode}"])[-1]
        raise OcrError(f"could not be read by OCR ({last[:120]})")
    return words_to_text(run.stdout.decode("utf-8", "replace"), image.width, image.height)


def words_to_text(tsv: str, width: int, height: int) -> Read:
    """Tesseract's TSV (one row per word, with its block, paragraph, line and box in the `width` x `height`
    image) as page text, confidence and word boxes."""
    parts: list[str] = []
    length = 0
    words: list[Word] = []
    place = None
    weighted = characters = 0.0
    for row in csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
        word = (row.get("text") or "").strip()
        if row.get("level") != "5" or not word:
            continue
        here = (row["block_num"], row["par_num"], row["line_num"])
        if place is not None:
            separator = " " if here == place else "\n" if here[:2] == place[:2] else "\n\n"  # a new paragraph
            parts.append(separator)
            length += len(separator)
        place = here
        left, top = int(row["left"]), int(row["top"])
        right, bottom = left + int(row["width"]), top + int(row["height"])
        box = (_share(left, width), _share(right, width), _share(top, height), _share(bottom, height))
        words.append((length, length + len(word), *box))
        parts.append(word)
        length += len(word)
        weighted += max(float(row["conf"]), 0.0) * len(word)
        characters += len(word)
    confidence = weighted / characters / 100 if characters else None
    return Read("".join(parts), OcrPage(confidence, words))


def _share(pixels: int, of: int) -> int:
    return min(max(round(pixels * WHOLE / of), 0), WHOLE)
