"""The main window: a list of views on the left, the chosen view on the right, and a banner that shows
the one sentence of the latest error (its details go to the log)."""

from __future__ import annotations

import html
import importlib
import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core import __version__, secret_prompt
from desktop.tasks import SecretPrompt, Tasks
from desktop.view import GETTING_STARTED_HTML, GETTING_STARTED_TEXT, STEPS, View

log = logging.getLogger("tunedesk")


class ErrorBanner(QFrame):
    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("errorBanner")
        self.setStyleSheet("#errorBanner { background: #fde8e8; border-bottom: 1px solid #e0a0a0; }")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setText("×")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 6, 6, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(close)
        self.hide()

    def show_text(self, text: str) -> None:
        self.label.setText(text)
        self.show()


# Each view is built (and its module imported) the first time it is shown: the window paints before
# QtCharts, QtPdf or the library's SQLite layer are loaded (benchmarks/startup.py). The five steps of the
# work are numbered in the list, in their order; Document and Settings are places, not steps.
VIEWS = {
    "Library": "desktop.library_view:LibraryView",
    "Dataset": "desktop.dataset_view:DatasetView",
    "Training": "desktop.training_view:TrainingView",
    "Models": "desktop.models_view:ModelsView",
    "Chat": "desktop.chat_view:ChatView",
    "Document": "desktop.document_view:DocumentView",
    "Settings": "desktop.settings_view:SettingsView",
}


class MainWindow(QMainWindow):
    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.setWindowTitle("Tunedesk")
        self.resize(1180, 760)
        self.data_dir = data_dir
        self.banner = ErrorBanner()
        self.tasks = Tasks(data_dir, self.show_error, self)
        self.secret_prompt = SecretPrompt(self)  # an SSH key's passphrase, asked when a task needs it
        secret_prompt.ask_secret = self.secret_prompt
        self.views: dict[str, View] = {}
        self.nav = QListWidget()
        self.nav.addItems([f"{STEPS.index(name) + 1}. {name}" if name in STEPS else name for name in VIEWS])
        self.nav.setToolTip(GETTING_STARTED_TEXT)
        self.nav.setFixedWidth(140)
        self.nav.setSpacing(3)
        self.stack = QStackedWidget()
        for _ in VIEWS:
            self.stack.addWidget(QWidget())  # a placeholder until the view is first shown
        self.nav.currentRowChanged.connect(self._show_view)

        body = QHBoxLayout()
        body.setContentsMargins(0, 0, 0, 0)
        body.addWidget(self.nav)
        body.addWidget(self.stack, 1)
        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        outer.addWidget(self.banner)
        outer.addLayout(body, 1)
        self.setCentralWidget(central)
        self.nav.setCurrentRow(0)
        self._menus()

    def _menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        add = QAction("&Add documents…", self)
        add.setShortcut(QKeySequence.StandardKey.Open)
        add.triggered.connect(self._add_documents)
        quit_app = QAction("&Quit", self)
        quit_app.setObjectName("quit")
        quit_app.setShortcut(QKeySequence.StandardKey.Quit)
        quit_app.triggered.connect(self.close)
        file_menu.addAction(add)
        file_menu.addSeparator()
        file_menu.addAction(quit_app)
        help_menu = self.menuBar().addMenu("&Help")
        steps = QAction("&Getting started", self)
        steps.triggered.connect(lambda: QMessageBox.information(self, "Getting started", GETTING_STARTED_HTML))
        about = QAction("&About Tunedesk", self)
        about.triggered.connect(self._about)
        help_menu.addAction(steps)
        help_menu.addAction(about)

    def _about(self) -> None:
        QMessageBox.about(
            self,
            "About Tunedesk",
            f"<p><b>Tunedesk {__version__}</b></p><p>Fine-tunes an open language model on your own documents "
            "and answers questions about them offline, citing the pages. Your documents stay on this computer, "
            "or go only to a GPU host you added; nothing is sent anywhere else, and there is no telemetry.</p>"
            f"<p>Library: {html.escape(str(self.data_dir))}</p>"
            "<p>The sample contracts are from CUAD v1 (CC BY 4.0).</p>",
        )

    def _add_documents(self) -> None:
        self.show_view("Library")
        self.view("Library").pick_files()

    def view(self, name: str) -> Any:
        """The view called `name`, built now if it has not been shown yet."""
        if name not in self.views:
            module, _, cls = VIEWS[name].partition(":")
            view = getattr(importlib.import_module(module), cls)(self)
            self.views[name] = view
            index = list(VIEWS).index(name)
            placeholder = self.stack.widget(index)
            assert placeholder is not None
            self.stack.insertWidget(index, view)
            self.stack.removeWidget(placeholder)
            placeholder.deleteLater()
        return self.views[name]

    def show_view(self, name: str) -> None:
        self.nav.setCurrentRow(list(VIEWS).index(name))

    def show_error(self, text: str) -> None:
        log.warning("%s", text)
        self.banner.show_text(text)

    def open_document(self, document_id: int, page: int, passage: str = "") -> None:
        """Show a document at a page, the passage highlighted (a search hit, a citation)."""
        self.view("Document").open(document_id, page, passage)
        self.show_view("Document")

    def set_data_dir(self, data_dir: Path) -> None:
        self.shutdown()
        self.data_dir = data_dir
        self.tasks = Tasks(data_dir, self.show_error, self)
        secret_prompt.ask_secret = self.secret_prompt  # shutdown took it back
        for view in self.views.values():
            view.reset()
        self.view(list(VIEWS)[self.nav.currentRow()]).refresh()

    def shutdown(self) -> None:
        """Stop what belongs to the window (chat worker, job watcher, tasks); a training job runs on."""
        for view in self.views.values():
            view.stop()
        self.tasks.wait()
        if secret_prompt.ask_secret is self.secret_prompt:
            secret_prompt.ask_secret = None

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)

    def _show_view(self, row: int) -> None:
        view = self.view(list(VIEWS)[row])
        self.stack.setCurrentWidget(view)
        view.refresh()
