"""`tunedesk` with no arguments: the desktop app. Imports only what the first window needs: no torch, no
llama.cpp (those run in the engine and chat worker processes)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from core import default_data_dir, versions
from core.errors import KnownError


def main(data_dir: Path | None = None) -> int:
    """The window on the library in `data_dir`, else $TUNEDESK_HOME, else the folder chosen in Settings,
    else the platform's user data folder."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from desktop.settings_view import DATA_DIR_SETTING
    from desktop.window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv)
    app.setApplicationName("Tunedesk")
    app.setOrganizationName("Tunedesk")
    chosen = QSettings().value(DATA_DIR_SETTING)
    if data_dir is None and not os.environ.get("TUNEDESK_HOME") and chosen:
        data_dir = Path(str(chosen))
    data_dir = data_dir or default_data_dir()
    _log_to(data_dir / "tunedesk.log")
    try:
        versions.check(versions.APP)
    except KnownError as error:
        from PySide6.QtWidgets import QMessageBox

        QMessageBox.critical(None, "Tunedesk", str(error))
        return 1
    window = MainWindow(data_dir)
    window.show()
    return app.exec()


def _log_to(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
