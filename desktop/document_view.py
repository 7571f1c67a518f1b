"""A document at a page: the PDF page itself (QtPdf), the cited passage highlighted by a search for its
opening words; a text document (DOCX, TXT, Markdown) shows the page's text with the passage marked."""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import QBuffer, QByteArray, QPointF
from PySide6.QtPdf import QPdfDocument, QPdfSearchModel
from PySide6.QtPdfWidgets import QPdfView
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QStackedWidget, QTextBrowser, QVBoxLayout

from core.library import Library
from desktop.view import View

HINT = "Open a document from the library, a search hit or a citation in the chat."


class DocumentView(View):
    def __init__(self, main) -> None:
        super().__init__(main)
        self.title = QLabel(HINT)
        self.pdf = QPdfDocument(self)
        self.pdf_view = QPdfView()
        # One whole page at a time: the cited page shows entire, its passage highlighted, whatever the size.
        self.pdf_view.setPageMode(QPdfView.PageMode.SinglePage)
        self.pdf_view.setZoomMode(QPdfView.ZoomMode.FitInView)
        self.pdf_view.setDocument(self.pdf)
        self.search = QPdfSearchModel(self)
        self.search.setDocument(self.pdf)
        self.pdf_view.setSearchModel(self.search)
        self.search.countChanged.connect(self._select_hit)
        self.pdf.statusChanged.connect(self._go)
        self.text = QTextBrowser()
        self.pages = QStackedWidget()
        self.pages.addWidget(self.pdf_view)
        self.pages.addWidget(self.text)
        self.buffer: QBuffer | None = None  # QPdfDocument reads from it for as long as it shows the file
        self.loaded_id: int | None = None
        self.page = 1
        self.passage = ""
        self.previous = QPushButton("◀ Page")
        self.previous.setEnabled(False)
        self.previous.clicked.connect(lambda: self._turn(-1))
        self.next = QPushButton("Page ▶")
        self.next.setEnabled(False)
        self.next.clicked.connect(lambda: self._turn(1))
        header = QHBoxLayout()
        header.addWidget(self.title, 1)
        header.addWidget(self.previous)
        header.addWidget(self.next)
        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(self.pages, 1)
        self.document_id: int | None = None

    def open(self, document_id: int, page: int, passage: str = "") -> None:
        def work(library: Library, task) -> dict[str, Any]:
            document = library.document(document_id)
            shown = {"document": document, "page": page, "passage": passage}
            if document.kind == "pdf" and document_id != self.loaded_id:
                shown["bytes"] = library.stored_file(document).read_bytes()
            elif document.kind != "pdf":
                shown["text"] = library.page_text(document_id, page)
            return shown

        self.main.tasks.start(work, self._show)

    def reset(self) -> None:
        self.pdf.close()
        self.loaded_id = None
        self.title.setText(HINT)
        self.text.clear()

    def _show(self, shown: dict[str, Any]) -> None:
        document, self.page, self.passage = shown["document"], shown["page"], shown["passage"]
        self.document_id = document.id
        self.previous.setEnabled(self.page > 1)
        self.next.setEnabled(self.page < document.pages)
        self.title.setText(f"<b>{html.escape(document.name)}</b> — page {self.page} of {document.pages}")
        if document.kind != "pdf":
            self.loaded_id = None
            self.pages.setCurrentWidget(self.text)
            self.text.setHtml(_marked(shown["text"], self.passage))
            return
        self.pages.setCurrentWidget(self.pdf_view)
        if "bytes" in shown:  # loading is asynchronous: _go runs when the document is ready
            self.buffer = QBuffer(self)
            self.buffer.setData(QByteArray(shown["bytes"]))
            self.buffer.open(QBuffer.OpenModeFlag.ReadOnly)
            self.pdf.load(self.buffer)
            self.loaded_id = document.id
        self._go()

    def _go(self) -> None:
        if self.pdf.status() != QPdfDocument.Status.Ready:
            return
        self.pdf_view.pageNavigator().jump(self.page - 1, QPointF(), self.pdf_view.zoomFactor())
        self.search.setSearchString(_probe(self.passage))

    def _turn(self, by: int) -> None:
        if self.document_id is not None:
            self.open(self.document_id, self.page + by)

    def _select_hit(self) -> None:
        # The search runs page by page in the background; the first hit on the shown page is the passage.
        for index in range(self.search.count()):
            hit = self.search.resultAtIndex(index)
            if hit.page() == self.page - 1:
                if self.pdf_view.currentSearchResultIndex() != index:
                    self.pdf_view.setCurrentSearchResultIndex(index)
                return

    def highlighted_page(self) -> int | None:
        """The page (from 1) of the highlighted passage, if one is."""
        index = self.pdf_view.currentSearchResultIndex()
        return self.search.resultAtIndex(index).page() + 1 if index >= 0 else None


def _probe(passage: str) -> str:
    """A few words from the passage that sit on one line of the page, so that the PDF's text search finds
    them: up to ten words of the first line that has five or more."""
    for line in passage.splitlines():
        words = line.split()
        if len(words) >= 5:
            return " ".join(words[:10])
    return " ".join(passage.split()[:3])


def _marked(text: str, passage: str) -> str:
    escaped = html.escape(text)
    probe = html.escape(_probe(passage)) if passage else ""
    if probe and probe in escaped:
        escaped = escaped.replace(probe, f"<mark>{probe}</mark>", 1)
    return f"<pre style='white-space: pre-wrap; font-family: sans-serif'>{escaped}</pre>"
