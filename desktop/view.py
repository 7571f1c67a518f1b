"""What every view shares: the main window (its tasks, its errors), and the hooks the window calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QWidget

if TYPE_CHECKING:
    from desktop.window import MainWindow


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
