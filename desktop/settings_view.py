"""Settings: the library's folder (data directory), and where the log is. Remote GPU hosts will appear
here when that work lands."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout

from desktop.view import View

DATA_DIR_SETTING = "data_dir"


class SettingsView(View):
    def __init__(self, main) -> None:
        super().__init__(main)
        self.data_dir = QLineEdit()
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._pick)
        apply = QPushButton("Use this folder")
        apply.clicked.connect(self._apply)
        row = QHBoxLayout()
        row.addWidget(self.data_dir, 1)
        row.addWidget(browse)
        row.addWidget(apply)
        self.log = QLabel()
        self.log.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Library folder", row)
        form.addRow("Log", self.log)
        note = QLabel(
            "The library folder holds library.db, a copy of each document, datasets, training jobs and models. "
            "Tunedesk makes no network connection unless you give a Hugging Face model id to train from."
        )
        note.setWordWrap(True)
        note.setStyleSheet("color: gray")
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addStretch(1)

    def refresh(self) -> None:
        self.data_dir.setText(str(self.main.data_dir))
        self.log.setText(str(self.main.data_dir / "tunedesk.log"))

    def _pick(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Library folder", self.data_dir.text())
        if folder:
            self.data_dir.setText(folder)

    def _apply(self) -> None:
        folder = Path(self.data_dir.text()).expanduser()
        if folder != self.main.data_dir:
            QSettings().setValue(DATA_DIR_SETTING, str(folder))  # the next start opens it too
            self.main.set_data_dir(folder)
