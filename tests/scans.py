"""Scans made from real PDFs: their pages rendered to images and saved as image-only PDFs (no text layer),
clean or degraded as real scans are, so that OCR's text can be compared with the PDF's own text layer."""

from __future__ import annotations

import random
from pathlib import Path

import pypdfium2
from PIL import Image, ImageChops

# A copy as an office scanner makes it: 150 dpi, slightly turned, with noise.
DEGRADED_DPI, DEGRADED_DEGREES, DEGRADED_NOISE = 150, 1.2, 24


def page_images(source: Path, pages: range, *, dpi: int = 300, degraded: bool = False) -> list[Image.Image]:
    """The pages (indexes) of the PDF `source`, as grey images."""
    pdf = pypdfium2.PdfDocument(source)
    images = []
    for index in pages:
        image = pdf[index].render(scale=(DEGRADED_DPI if degraded else dpi) / 72, grayscale=True).to_pil()
        if degraded:
            image = _degraded(image, random.Random(index))
        images.append(image)
    pdf.close()
    return images


def scanned_copy(source: Path, target: Path, pages: range, *, dpi: int = 300, degraded: bool = False) -> Path:
    """An image-only PDF of the pages of `source`."""
    images = page_images(source, pages, dpi=dpi, degraded=degraded)
    images[0].save(target, save_all=True, append_images=images[1:], resolution=DEGRADED_DPI if degraded else dpi)
    return target


def _degraded(image: Image.Image, chance: random.Random) -> Image.Image:
    turned = image.rotate(chance.uniform(-1, 1) * DEGRADED_DEGREES, expand=True, fillcolor=255)
    noise = Image.effect_noise(turned.size, DEGRADED_NOISE)
    return ImageChops.add(turned, noise, scale=1.0, offset=-128)
