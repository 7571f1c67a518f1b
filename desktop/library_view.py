"""The library: drop files or folders (or pick them), watch each one's progress, then its pages and chunks
or the reason it was refused; remove a document (once confirmed) or a refused file's row; search, with the
query's words marked in each hit, and open a hit at its page."""

from __future__ import annotations

import html
import itertools
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.settings_view import reads_scans
from desktop.view import GETTING_STARTED_HTML, View

if TYPE_CHECKING:
    from core.library.ingest import Outcome
    from core.library.store import Library
    from desktop.tasks import Task

# core's modules are imported by the tasks, off the GUI thread: this view is the first one shown, and the
# window must paint before the SQLite layer (0.1 s to import) is loaded.

COLUMNS = ("Document", "Pages", "Chunks", "Size", "Status")
DOCUMENT_FILES = "Documents (*.pdf *.docx *.txt *.md *.markdown *.png *.jpg *.jpeg *.tif *.tiff);;All files (*)"
HIT_CHARS = 300  # of a hit's text shown in the list, cut at a word
# Search as the user types, once they pause this long: a search takes milliseconds, a keystroke each would
# only flicker the list.
TYPING_PAUSE_MS = 250
# A search slower than this says it is searching: the first of a session loads the model that weighs meaning
# (core/library/meaning.py), about 3 s.
SLOW_SEARCH_MS = 400


@dataclass(frozen=True)
class Queued:
    """Files found to add, each shown waiting until it is read."""

    files: list[Path]


@dataclass(frozen=True)
class Reading:
    path: Path
    done: int  # pages
    total: int
    by_ocr: bool


class LibraryView(View):
    def __init__(self, main) -> None:
        super().__init__(main)
        self.setAcceptDrops(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.cellDoubleClicked.connect(self._open_row)
        self.rows: dict[str, int] = {}  # file path or document id -> table row
        self.versions: dict[str, str] = {}  # document id -> the name of the version it replaced

        add = QPushButton("Add files…")
        add.clicked.connect(self.pick_files)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Select the documents to remove in the table first.")
        self.remove_button.setEnabled(False)
        self.remove_button.clicked.connect(self._remove_selected)
        self.version_button = QPushButton("New version…")
        self.version_button.setToolTip(
            "Add an amended file as the new version of the selected document: the old version leaves the "
            "library, and the models made from it are marked out of date."
        )
        self.version_button.setEnabled(False)
        self.version_button.clicked.connect(self._add_version)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        hint = QLabel("Drop PDF, DOCX, TXT or Markdown files, scans and images, or folders, anywhere here.")
        hint.setStyleSheet("color: gray")
        hint.setWordWrap(True)  # so that it never widens the window: it takes the room the buttons leave
        hint.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        buttons = QHBoxLayout()
        buttons.addWidget(add)
        buttons.addWidget(self.remove_button)
        buttons.addWidget(self.version_button)
        buttons.addWidget(hint, 1)

        self.query = QLineEdit(placeholderText="Search the documents: type a question or a few words")
        self.query.setClearButtonEnabled(True)
        self.typing = QTimer(self, singleShot=True, interval=TYPING_PAUSE_MS)
        self.typing.timeout.connect(self._search)
        self.query.textChanged.connect(self.typing.start)
        self.query.returnPressed.connect(self._search)
        self.slow = QTimer(self, singleShot=True, interval=SLOW_SEARCH_MS)
        self.slow.timeout.connect(self._searching)
        self.hits = QListWidget()
        self.hits.setWordWrap(True)
        self.hits.itemActivated.connect(self._open_hit)
        search_box = QWidget()
        search_layout = QVBoxLayout(search_box)
        search_layout.setContentsMargins(0, 0, 0, 0)
        search_layout.addWidget(self.query)
        search_layout.addWidget(self.hits)

        documents = QWidget()
        documents_layout = QVBoxLayout(documents)
        documents_layout.setContentsMargins(0, 0, 0, 0)
        # Until the first document is in: what to do first, and the steps after it.
        self.welcome = QLabel(
            "<p><b>Your library is empty.</b> Start here: drop your documents anywhere on this view, or use "
            f"<i>Add files…</i>. Then, step by step:</p>{GETTING_STARTED_HTML}"
        )
        self.welcome.setWordWrap(True)
        self.welcome.setContentsMargins(8, 8, 8, 8)
        self.welcome.hide()
        documents_layout.addLayout(buttons)
        documents_layout.addWidget(self.welcome)
        documents_layout.addWidget(self.table)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(documents)
        split.addWidget(search_box)
        split.setSizes([420, 300])
        QVBoxLayout(self).addWidget(split)

    # -- showing the library --------------------------------------------------------------------------
    def refresh(self) -> None:
        def work(library: Library, task: Task) -> list[dict[str, Any]]:
            from core.sizes import format_size

            return [vars(d) | {"size": format_size(d.bytes), "reading": d.reading} for d in library.documents()]

        self.main.tasks.start(work, self._show_documents, latest_only=True)

    def reset(self) -> None:
        self.table.setRowCount(0)
        self.rows.clear()
        self.hits.clear()

    def _show_documents(self, documents: list[dict[str, Any]]) -> None:
        # Files still being added, and refused ones with their reason, stay listed below the documents.
        pending = {
            key: self._text(row, 4)
            for key, row in self.rows.items()
            if not key.isdigit() and self._text(row, 4) not in ("added", "already there")
        }
        self.table.setRowCount(0)
        self.rows = {}
        for document in documents:
            replaced = self.versions.get(str(document["id"]))
            status = f"in the library: the new version of {replaced}" if replaced else "in the library"
            if document["reading"]:
                status += f" ({document['reading']})"
            self._set_row(str(document["id"]), document["name"], document, status)
        for key, status in pending.items():
            self._set_row(key, Path(key).name, None, status)
        self.welcome.setVisible(not documents and not pending)

    def _set_row(self, key: str, name: str, document: dict[str, Any] | None, status: str) -> None:
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = self.table.rowCount()
            self.table.insertRow(row)
        values = [name, "", "", "", status]
        if document is not None:
            values[1:4] = [str(document["pages"]), str(document["chunks"]), document["size"]]
        for column, value in enumerate(values):
            item = QTableWidgetItem(value)
            item.setData(Qt.ItemDataRole.UserRole, document["id"] if document is not None else None)
            item.setToolTip(value)  # a long reason is cut to the column's width
            self.table.setItem(row, column, item)

    def _text(self, row: int, column: int) -> str:
        item = self.table.item(row, column)
        return item.text() if item else ""

    def _document_id(self, row: int) -> int | None:
        item = self.table.item(row, 0)
        return item.data(Qt.ItemDataRole.UserRole) if item else None

    # -- adding ---------------------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [Path(url.toLocalFile()) for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.add_paths(paths)

    def pick_files(self) -> None:
        names, _ = QFileDialog.getOpenFileNames(self, "Add documents", "", DOCUMENT_FILES)
        if names:
            self.add_paths([Path(name) for name in names])

    def add_paths(self, paths: list[Path]) -> None:
        ocr = reads_scans()

        def work(library: Library, task: Task) -> None:
            from core.library.ingest import add_documents, collect_files, reading

            files, links = collect_files(paths, recursive=True)
            task.report(Queued(files))

            def progress(what: str, done: int, total: int) -> None:
                path, by_ocr = reading(what)
                task.report(Reading(path, done, total, by_ocr))

            for outcome in itertools.chain(
                links, add_documents(library, files, ocr=ocr, work=task.core_work(progress))
            ):
                task.report(outcome)

        self.main.tasks.start(work, lambda _: self.refresh(), on_progress=self._on_add_progress)

    def _on_add_progress(self, report: Queued | Reading | Outcome) -> None:
        if isinstance(report, Queued):
            for path in report.files:
                self._set_row(str(path), path.name, None, "waiting")
        elif isinstance(report, Reading):
            by_ocr = " (OCR)" if report.by_ocr else ""
            self._set_row(
                str(report.path), report.path.name, None, f"reading: page {report.done} of {report.total}{by_ocr}"
            )
        else:
            outcome = report
            reason = f"refused: {outcome.reason}" if outcome.status == "refused" else outcome.status
            self._set_row(str(outcome.path), outcome.path.name, None, reason)
            if outcome.document is not None:
                self.refresh()  # the document's own row, with its pages and chunks, replaces the file's

    def _selection_changed(self) -> None:
        rows = {index.row() for index in self.table.selectionModel().selectedRows()}
        self.remove_button.setEnabled(bool(rows))
        self.version_button.setEnabled(len(rows) == 1 and self._document_id(next(iter(rows))) is not None)

    def _add_version(self) -> None:
        (row,) = {index.row() for index in self.table.selectionModel().selectedRows()}
        document_id, name = self._document_id(row), self._text(row, 0)
        path = self.pick_version(name)
        if path is None or document_id is None:
            return
        ocr = reads_scans()

        def work(library: Library, task: Task) -> Outcome:
            from core.library.ingest import add_version

            return add_version(library, document_id, path, ocr=ocr)[0]

        def done(outcome: Outcome) -> None:
            if outcome.document is not None:
                self.versions[str(outcome.document.id)] = name
            self._set_row(str(path), path.name, None, "added" if outcome.document else f"refused: {outcome.reason}")
            self.refresh()

        self._set_row(str(path), path.name, None, f"reading: the new version of {name}")
        self.main.tasks.start(work, done)

    def pick_version(self, name: str) -> Path | None:
        chosen, _ = QFileDialog.getOpenFileName(self, f"The new version of {name}", "", DOCUMENT_FILES)
        return Path(chosen) if chosen else None

    def refused(self) -> dict[str, str]:
        """File name -> the sentence it was refused with (what the table shows)."""
        return {
            self._text(row, 0): self._text(row, 4).removeprefix("refused: ")
            for row in range(self.table.rowCount())
            if self._text(row, 4).startswith("refused: ")
        }

    # -- removing, searching, opening -----------------------------------------------------------------
    def _remove_selected(self) -> None:
        """Documents leave the library once the user confirms; a refused or waiting file's row just goes."""
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        ids = {i for i in (self._document_id(row) for row in rows) if i is not None}
        names = [self._text(row, 0) for row in rows if self._document_id(row) is not None]
        files = [row for row in rows if self._document_id(row) is None]
        for row in reversed(files):
            self.table.removeRow(row)
        self.rows = {key: row - sum(r < row for r in files) for key, row in self.rows.items() if row not in files}
        if ids and self.confirm(
            f"Remove {', '.join(names)} from the library? Its pages, chunks and Q&A pairs go with it; the "
            "original file is not touched."
            if len(ids) == 1
            else f"Remove these {len(ids)} documents from the "
            "library? Their pages, chunks and Q&A pairs go with them; the original files are not touched."
        ):
            self.main.tasks.start(lambda library, task: [library.remove(i) for i in ids], lambda _: self.refresh())

    def confirm(self, question: str) -> bool:
        buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel
        answer = QMessageBox.question(self, "Remove", question, buttons, QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Yes

    def _search(self) -> None:
        self.typing.stop()
        query = self.query.text().strip()
        if not query:
            self.slow.stop()
            self.hits.clear()
            return

        def work(library: Library, task: Task) -> list[tuple[Any, str, str]]:
            from core.library.search import query_words, search

            words = query_words(query)
            return [(hit, *_glimpse(hit.text, words)) for hit in search(library, query, k=10)]

        self.slow.start()
        self.main.tasks.start(work, self._show_hits, on_failed=self._search_failed, latest_only=True)

    def _searching(self) -> None:
        self.hits.clear()
        self.hits.addItem("Searching…")

    def _search_failed(self, message: str) -> None:
        self.slow.stop()
        self.hits.clear()
        self.main.tasks.on_error(message)

    def _show_hits(self, hits: list[tuple[Any, str, str]]) -> None:
        self.slow.stop()
        self.hits.clear()
        if not hits:
            self.hits.addItem("Nothing in the documents matches.")
        width = self.hits.viewport().width() - self.hits.verticalScrollBar().sizeHint().width() - 8
        for hit, matched, marked in hits:
            item = QListWidgetItem()  # the label below draws it; the plain text is for screen readers
            item.setData(Qt.ItemDataRole.AccessibleTextRole, f"[{hit.citation}]  {_shortened(matched)}")
            item.setData(Qt.ItemDataRole.UserRole, (hit, matched))
            self.hits.addItem(item)
            label = QLabel(f"<b>[{html.escape(hit.citation)}]</b>&nbsp; {marked}")
            label.setWordWrap(True)
            label.setContentsMargins(4, 3, 4, 3)
            label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)  # clicks are the list's
            item.setSizeHint(QSize(width, label.heightForWidth(width)))
            self.hits.setItemWidget(item, label)

    def _open_hit(self, item: QListWidgetItem) -> None:
        found = item.data(Qt.ItemDataRole.UserRole)
        if found is not None:
            hit, matched = found
            self.main.open_document(hit.document_id, hit.page_first, matched)

    def _open_row(self, row: int, _column: int) -> None:
        document_id = self._document_id(row)
        if document_id is not None:
            self.main.open_document(document_id, 1)


def _shortened(text: str) -> str:
    return textwrap.shorten(" ".join(text.split()), HIT_CHARS, placeholder=" …")


def _glimpse(text: str, words: list[str]) -> tuple[str, str]:
    """Where a hit matched, and that part as HTML: its text from the line of the first of the query's words
    (a passage often begins with the end of the clause before), shortened, with the words in bold in the
    forms search found them in too (it stems: "terminate" finds "termination", "governs" finds "governed",
    "state" not "statement"). The same part is what the document view marks on the page."""
    if not words:
        return text, html.escape(_shortened(text))
    stems = [re.sub(r"(?:es|ed|ing|s|e)$", "", word) or word for word in words]
    forms = r"(?:e|es|ed|d|s|ing|ion|ions)?"
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, stems)) + r")" + forms + r"\b", re.IGNORECASE)
    first = pattern.search(text)
    line = text.rfind("\n", 0, first.start()) + 1 if first else 0
    matched = text[line:]
    shown, marked, last = ("… " if line else "") + _shortened(matched), [], 0
    for match in pattern.finditer(shown):
        marked += [html.escape(shown[last : match.start()]), f"<b>{html.escape(match.group())}</b>"]
        last = match.end()
    return matched, "".join([*marked, html.escape(shown[last:])])
