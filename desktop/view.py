"""What every view shares: the main window (its tasks, its errors), and the hooks the window calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QWidget

if TYPE_CHECKING:
    from desktop.window import MainWindow

# The steps of the work, in their order: numbered in the window's list, told in Help > Getting started and
# in the Library while it is empty.
GETTING_STARTED = [
    (
        "Library",
        "add your documents: drop PDF, DOCX, TXT or Markdown files, scans or images on it; search them at once.",
    ),
    ("Dataset", "build the training data from them: passages, questions and answers, a validation split."),
    ("Training", "fine-tune a base model on it, here or on a GPU host added in Settings; watch the loss."),
    ("Models", "export the best checkpoint to a GGUF file, or import one you have."),
    ("Chat", "ask questions; every answer cites its pages, and shows the passages it was given."),
]
STEPS = [name for name, _ in GETTING_STARTED]
GETTING_STARTED_TEXT = "\n".join(f"{n}. {name}: {what}" for n, (name, what) in enumerate(GETTING_STARTED, 1))
GETTING_STARTED_HTML = "<ol>" + "".join(f"<li><b>{name}</b>: {what}</li>" for name, what in GETTING_STARTED) + "</ol>"


class View(QWidget):
    def __init__(self, main: MainWindow) -> None:
        super().__init__()
        self.main = main

    def refresh(self) -> None:
        """The view is being shown: load what it displays (in a task)."""

    def reset(self) -> None:
        """The library changed under the view (another data dir): forget what it shows."""

    def stop(self) -> None:
        """The window is closing: stop threads of the view's own (a training job runs on)."""
