"""`tunedesk` with no arguments: the desktop app. Imports only what the first window needs: no torch, no
llama.cpp (those run in the engine and chat worker processes)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from core import RESOURCES, default_data_dir, versions
from core.errors import KnownError
from core.library.folder import check_folder

GEOMETRY_SETTING = "window/geometry"


def main(data_dir: Path | None = None, open_paths: list[Path] | None = None) -> int:
    """The window on the library in `data_dir`, else $TUNEDESK_HOME, else the folder chosen in Settings,
    else the platform's user data folder; `open_paths` (the desktop entry's "Open with") are added to it."""
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from desktop.settings_view import DATA_DIR_SETTING
    from desktop.window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv)
    app.setApplicationName("Tunedesk")
    app.setOrganizationName("Tunedesk")
    QApplication.setDesktopFileName("tunedesk")  # the .desktop entry (packaging/linux/): the dock's icon
    QApplication.setWindowIcon(QIcon(str(RESOURCES / "icons" / "tunedesk.svg")))
    chosen = QSettings().value(DATA_DIR_SETTING)
    if data_dir is None and not os.environ.get("TUNEDESK_HOME") and chosen:
        data_dir = Path(str(chosen))
    data_dir = data_dir or default_data_dir()
    try:
        check_folder(data_dir)  # before the log is written there
        _log_to(data_dir / "tunedesk.log")
        versions.check(versions.APP)
    except KnownError as error:
        from PySide6.QtWidgets import QMessageBox

        QMessageBox.critical(None, "Tunedesk", error.for_app())
        return 1
    window = MainWindow(data_dir)
    if geometry := QSettings().value(GEOMETRY_SETTING):
        window.restoreGeometry(geometry)  # type: ignore[arg-type]
    window.show()
    if open_paths:
        window.view("Library").add_paths(open_paths)
    # A logout's SIGTERM (or Ctrl-C in a terminal) closes the window as its close button does: tasks are
    # stopped and waited for. The timer gives Python's signal handlers a moment in Qt's event loop.
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: window.close())
    wake = QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(200)
    status = app.exec()
    QSettings().setValue(GEOMETRY_SETTING, window.saveGeometry())  # the next start opens at this size and place
    return status


def _log_to(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
