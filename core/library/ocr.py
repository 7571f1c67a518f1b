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
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

TESSERACT = "tesseract"
DPI = 300  # what PDF pages are rendered at: 0.1% character errors on clean contract pages, 2.1 s a page
# The pixels a page image may have when it is read: an A4 page at 300 dpi has 8.7 M. A larger image (a
# poster, a 600 dpi scan) is scaled down to this, which keeps OCR's memory and time per page bounded.
MAX_PIXELS = 24_000_000
# Below this a page's text is marked as unsure: clean renders score 0.93 to 0.96, a 150 dpi copy with noise
# and a slight rotation about 0.85, and words read wrong pull a page under 0.80 (docs/benchmarks.md).
LOW_CONFIDENCE = 0.80


@dataclass(frozen=True)
class Read:
    text: str
    confidence: float | None  # 0-1, the words' mean weighted by their length; None: no words at all


class OcrError(Exception):
    """Worded to follow the file's name."""


def available() -> bool:
    return shutil.which(TESSERACT) is not None


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
    # One thread: parallel pages (two parsing children) do better than OpenMP within a page on 2 cores.
    environment = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    command = [TESSERACT, "-", "-", "--dpi", str(max(int(dpi), 70)), "-l", "eng", "tsv"]
    try:
        run = subprocess.run(command, input=page.getvalue(), capture_output=True, timeout=seconds, env=environment)
    except subprocess.TimeoutExpired:
        raise OcrError(f"took longer than {seconds:g} s to read one page by OCR, so it was stopped") from None
    except OSError as error:
        raise OcrError(f"could not be read by OCR: tesseract did not start ({error.strerror})") from None
    if run.returncode != 0:
        last = (run.stderr.decode("utf-8", "replace").strip().splitlines() or [f"exit status {run.returncode}"])[-1]
        raise OcrError(f"could not be read by OCR ({last[:120]})")
    return words_to_text(run.stdout.decode("utf-8", "replace"))


def words_to_text(tsv: str) -> Read:
    """Tesseract's TSV (one row per word, with its block, paragraph and line) as page text and confidence."""
    lines: list[str] = []
    place = None
    words: list[str] = []
    weighted = characters = 0.0
    for row in csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
        word = (row.get("text") or "").strip()
        if row.get("level") != "5" or not word:
            continue
        here = (row["block_num"], row["par_num"], row["line_num"])
        if here != place:
            if words:
                lines.append(" ".join(words))
            if place is not None and here[:2] != place[:2]:
                lines.append("")  # a new paragraph
            place, words = here, []
        words.append(word)
        weighted += max(float(row["conf"]), 0.0) * len(word)
        characters += len(word)
    if words:
        lines.append(" ".join(words))
    confidence = weighted / characters / 100 if characters else None
    return Read("\n".join(lines), confidence)
