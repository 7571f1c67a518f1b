"""A document at a page: the PDF page itself, the cited passage highlighted, fitted to the view's width
(again when the window is resized); a text document (DOCX, TXT, Markdown) shows the page's text with the
passage marked and scrolled to; a page read by OCR (a scan's, an image's) shows its image beside the text
OCR read from it, the passage marked in that text, which is what citations are checked against.

The page is rendered (QtPdf) and the passage found on it (QtPdf's text search, on that page only) in a
task, off the GUI thread: rendering a page and searching a document's text take longer than the GUI
thread may be busy (desktop.md). The view shows the finished image and scrolls to the passage.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QRectF, QSize, Qt, QTimer
from PySide6.QtGui import QColor, QImage, QImageReader, QPainter, QPixmap, QResizeEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
)

from core.library.ocr import WHOLE
from desktop.view import View

if TYPE_CHECKING:
    from core.library.store import Document, Library, Page
    from desktop.tasks import Task

HINT = "Open a document from the library, a search hit or a citation in the chat."
HIGHLIGHT = QColor(255, 214, 0, 110)
Box = tuple[int, int, int, int]  # a word's left, right, top and bottom, in WHOLE-ths of the page
MARK = "#ffe680"  # the same yellow, on a text document's page
REFIT_MS = 200  # a resize re-renders the page once the window has kept its size this long


@dataclass(frozen=True)
class Rendered:
    """A PDF page as an image, with the passage's top in pixels (None: not found on the page)."""

    image: QImage
    top: float | None


@dataclass(frozen=True)
class Shown:
    """A page to show: a PDF's or an image's rendered `width` pixels wide, or a text document's text; and for a
    page read by OCR, its text too."""

    document: Document
    page: int
    passage: str
    width: int
    content: Rendered | str
    by_ocr: Page | None = None


class DocumentView(View):
    def __init__(self, main) -> None:
        super().__init__(main)
        self.title = QLabel(HINT)
        self.image = QLabel()
        self.image.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self.page_area = QScrollArea()
        self.page_area.setWidget(self.image)
        self.page_area.setWidgetResizable(True)
        self.page_area.setStyleSheet("QScrollArea { background: #9a9a9a; }")
        self.text = QTextBrowser()
        self.pages = QSplitter()  # the image, the text, or both (a page read by OCR)
        self.pages.addWidget(self.page_area)
        self.pages.addWidget(self.text)
        self.pages.setChildrenCollapsible(False)
        self.previous = QPushButton("◀ Page")
        self.previous.clicked.connect(lambda: self._turn(-1))
        self.next = QPushButton("Page ▶")
        self.next.clicked.connect(lambda: self._turn(1))
        header = QHBoxLayout()
        header.addWidget(self.title, 1)
        header.addWidget(self.previous)
        header.addWidget(self.next)
        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(self.pages, 1)
        self.document_id: int | None = None
        self.page = 1
        self.found: int | None = None  # the page the passage was found and highlighted on
        self.passage = ""
        self.rendered_width = 0  # of the PDF page shown; 0 for a text document
        self.refit = QTimer(singleShot=True, interval=REFIT_MS)
        self.refit.timeout.connect(self._refit)
        self._buttons(1, 1)

    def open(self, document_id: int, page: int, passage: str = "") -> None:
        width, half = self._page_width(split=False), self._page_width(split=True)

        def work(library: Library, task: Task) -> Shown:
            document = library.document(document_id)
            text = library.page(document_id, page)
            if text.by_ocr:  # the passage is found in the text OCR read, and marked on the words it read
                found = _found(text.text, passage)
                words = [w[2:] for w in text.words if found and w[0] < found.end() and w[1] > found.start()]
                rendered = render(library.stored_file(document), page, "", half, words=words)
                return Shown(document, page, passage, half, rendered, text)
            if document.kind == "pdf":
                return Shown(
                    document, page, passage, width, render(library.stored_file(document), page, passage, width)
                )
            return Shown(document, page, passage, width, text.text)

        self.main.tasks.start(work, self._show, latest_only=True)

    def _page_width(self, *, split: bool) -> int:
        """How wide a page's image can be: the view's whole width, or half of it beside the text OCR read
        (less a scroll bar and a margin). The view may not have been shown yet: the window's content area then
        says how wide it will be."""
        whole = self.pages.width() if self.isVisible() else self.main.stack.width()
        return max((whole // 2 if split else whole) - 40, 300)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.refit.start()

    def _refit(self) -> None:
        split = self.text.isVisible() and self.page_area.isVisible()
        if (
            self.document_id is not None
            and self.rendered_width
            and abs(self._page_width(split=split) - self.rendered_width) > 8
        ):
            self.open(self.document_id, self.page, self.passage)

    def reset(self) -> None:
        self.document_id, self.found, self.passage, self.rendered_width = None, None, "", 0
        self.title.setText(HINT)
        self.image.clear()
        self.text.clear()

    def highlighted_page(self) -> int | None:
        """The page (from 1) on which the passage is highlighted, if it is."""
        return self.found

    def _show(self, shown: Shown) -> None:
        document, self.page, self.passage = shown.document, shown.page, shown.passage
        self.document_id = document.id
        title = f"<b>{html.escape(document.name)}</b> — page {self.page} of {document.pages}"
        if shown.by_ocr is not None:
            title += " — read by OCR" + (
                ", with low confidence: check its text against the image" if shown.by_ocr.unsure else ""
            )
        self.title.setText(title)
        self._buttons(self.page, document.pages)
        text = shown.content if isinstance(shown.content, str) else shown.by_ocr.text if shown.by_ocr else None
        self.text.setVisible(text is not None)
        self.page_area.setVisible(not isinstance(shown.content, str))
        if shown.by_ocr is not None:
            self.pages.setSizes([1, 1])  # image and text, half each
        self.found = None
        if text is not None:
            marked, found = _marked(text, self.passage)
            self.text.setHtml(marked)
            self.found = self.page if found else None
            if found:
                self.text.scrollToAnchor(PASSAGE_ANCHOR)
        if isinstance(shown.content, str):
            self.rendered_width = 0
            return
        rendered = shown.content
        self.rendered_width = shown.width
        self.image.setPixmap(QPixmap.fromImage(rendered.image))
        if rendered.top is not None:
            self.found = self.page
        # After the layout has taken the new image's height: until then the scroll bar's range is the old
        # page's (or nothing, when the view is shown for the first time), and the passage would stay out of
        # sight below.
        top = max(int(rendered.top or 0) - 60, 0)
        QTimer.singleShot(0, lambda: self.page_area.verticalScrollBar().setValue(top))

    def _buttons(self, page: int, pages: int) -> None:
        self.previous.setEnabled(page > 1)
        self.next.setEnabled(page < pages)

    def _turn(self, by: int) -> None:
        if self.document_id is not None:
            self.open(self.document_id, self.page + by)


def render(path: Path, page: int, passage: str, width: int, *, words: Sequence[Box] = ()) -> Rendered:
    """The page as an image `width` pixels wide with the passage highlighted, and the passage's top (pixels),
    or None where it was not found. Runs in a task: a QPdfDocument of its own, loaded synchronously; an image
    file's page (a TIFF's frame) is read with QImageReader. A page read by OCR has no text to search: the
    boxes of the passage's `words` (as core.library.ocr.Word has them) are highlighted instead."""
    if path.suffix == ".pdf":
        image, top = _pdf_page(path, page, passage, width)
    else:
        reader = QImageReader(str(path))
        reader.jumpToImage(page - 1)
        image, top = reader.read().scaledToWidth(width, Qt.TransformationMode.SmoothTransformation), None
    if words:
        across, down = image.width() / WHOLE, image.height() / WHOLE
        rectangles = [QRectF(x0 * across, y0 * down, (x1 - x0) * across, (y1 - y0) * down) for x0, x1, y0, y1 in words]
        painter = QPainter(image)
        for rectangle in rectangles:
            painter.fillRect(rectangle.adjusted(-2, -1, 2, 1), HIGHLIGHT)
        painter.end()
        top = min(r.top() for r in rectangles)
    return Rendered(image, top)


def _pdf_page(path: Path, page: int, passage: str, width: int) -> tuple[QImage, float | None]:
    from PySide6.QtPdf import QPdfDocument, QPdfSearchModel

    document = QPdfDocument()
    document.load(str(path))
    size = document.pagePointSize(page - 1)
    scale = width / size.width()
    pixels = QSize(width, round(size.height() * scale))
    image = QImage(pixels, QImage.Format.Format_ARGB32)
    image.fill(QColor("white"))  # what the PDF does not paint is paper, not transparency
    painter = QPainter(image)
    painter.drawImage(0, 0, document.render(page - 1, pixels))
    painter.end()
    top = None
    if passage:
        search = QPdfSearchModel()
        search.setDocument(document)
        search.setSearchString(_probe(passage))
        hits = search.resultsOnPage(page - 1)
        if hits:
            rectangles = [
                QRectF(r.x() * scale, r.y() * scale, r.width() * scale, r.height() * scale)
                for r in hits[0].rectangles()
            ]
            painter = QPainter(image)
            for rectangle in rectangles:
                painter.fillRect(rectangle.adjusted(-2, -1, 2, 1), HIGHLIGHT)
            painter.end()
            top = min(r.top() for r in rectangles)
    document.close()
    return image, top


def _probe(passage: str) -> str:
    """A few words from the passage that sit on one line of the page, so that the PDF's text search finds
    them: up to ten words of the first line that has five or more."""
    for line in passage.splitlines():
        words = line.split()
        if len(words) >= 5:
            return " ".join(words[:10])
    return " ".join(passage.split()[:3])


PASSAGE_ANCHOR = "passage"


def _found(text: str, passage: str) -> re.Match | None:
    """Where the passage is in the page's text. Its words are matched whatever the whitespace between them: a
    chunk's line breaks are not always the page's."""
    for count in (len(passage.split()), 10):  # the whole passage, else its first words
        words = passage.split()[:count]
        found = re.search(r"\s+".join(map(re.escape, words)), text) if words else None
        if found:
            return found
    return None


def _marked(text: str, passage: str) -> tuple[str, bool]:
    """The page's text as HTML with the passage marked, and whether it was found."""
    found = _found(text, passage)
    if found is None:
        body = html.escape(text)
    else:
        start, end = found.span()
        inside = html.escape(text[start:end])
        mark = f"<a name='{PASSAGE_ANCHOR}'></a><span style='background-color: {MARK}'>{inside}</span>"
        body = html.escape(text[:start]) + mark + html.escape(text[end:])
    return f"<pre style='white-space: pre-wrap; font-family: sans-serif'>{body}</pre>", found is not None
