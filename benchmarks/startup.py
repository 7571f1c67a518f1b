"""Time to the first paint of Tunedesk's main window against a bare QMainWindow, each in a fresh Python
process started the same way (offscreen), alternated, in the same run.

    .venv/bin/python benchmarks/startup.py

The clock runs from just before the process is started to the window's first paint event, so it counts
the interpreter, the imports (Tunedesk's must not pull in torch or llama.cpp) and building the window.
Goal (issue 7): at most 2x the bare window.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import save, verdict

ROOT = Path(__file__).resolve().parent.parent
REPEAT = 7
FIRST_PAINT = """
import sys, time
from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QApplication
app = QApplication([])
{make_window}
class FirstPaint(QObject):
    def eventFilter(self, watched, event):
        if event.type() == QEvent.Type.Paint:
            print(time.time(), flush=True)
            app.quit()
        return False
painted = FirstPaint()
window.installEventFilter(painted)
window.show()
app.exec()
"""
BARE = "from PySide6.QtWidgets import QMainWindow\nwindow = QMainWindow()\nwindow.resize(1180, 760)"
# What `tunedesk` imports on its way to the window (desktop/launch.py, desktop/app.py), then the window.
TUNEDESK = (
    "from pathlib import Path\nimport desktop.launch, desktop.app\nfrom desktop.window import MainWindow\n"
    "window = MainWindow(Path(sys.argv[1]))"
)


def first_paint_s(make_window: str, data_dir: str) -> float:
    started = time.time()
    out = subprocess.run(
        [sys.executable, "-c", FIRST_PAINT.format(make_window=make_window), data_dir],
        cwd=ROOT,
        env=os.environ | {"QT_QPA_PLATFORM": "offscreen"},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.split()[0]) - started


def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        first_paint_s(TUNEDESK, data_dir)  # the library is created once; warm the disk cache for both
        bare, ours = [], []
        for _ in range(REPEAT):
            bare.append(first_paint_s(BARE, data_dir))
            ours.append(first_paint_s(TUNEDESK, data_dir))
    ratio = statistics.median(ours) / statistics.median(bare)
    numbers = {
        "repeat": REPEAT,
        "bare_qmainwindow_s": round(statistics.median(bare), 3),
        "tunedesk_s": round(statistics.median(ours), 3),
        "ratio": round(ratio, 3),
    }
    print(json.dumps(numbers, indent=2))
    save("startup", numbers)
    verdict("startup", f"first paint {ratio:.2f}x a bare QMainWindow", "at most 2x", ratio <= 2)


if __name__ == "__main__":
    main()
