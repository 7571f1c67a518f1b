"""The screenshots in docs/images/: the real app, offscreen, driven through the whole workflow on the
sample contract (add, search, open a page, build a dataset, fine-tune SmolLM2-135M, score, export, chat).

    make screenshots        # about 6 minutes on 2 cores, most of it the CPU training
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PySide6.QtWidgets import QApplication  # noqa: E402

from core import RESOURCES  # noqa: E402
from core.jobs.hosts import add_host  # noqa: E402
from core.library.store import Library  # noqa: E402
from desktop.window import MainWindow  # noqa: E402
from tests.scans import scanned_copy  # noqa: E402

IMAGES = Path(__file__).resolve().parent / "images"
SAMPLE = RESOURCES / "samples" / "license_agreement_50p.pdf"
QUESTIONS = RESOURCES / "questions" / "license_agreement_50p.jsonl"


def wait_until(app: QApplication, condition, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not get there in time")
        app.processEvents()
        time.sleep(0.02)


def settle(app: QApplication, seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def shoot(app: QApplication, window: MainWindow, name: str) -> None:
    settle(app)
    window.grab().save(str(IMAGES / f"{name}.png"))
    print(f"docs/images/{name}.png")


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    app = QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        bad = Path(tmp) / "renamed.pdf"
        bad.write_bytes(b"%PDF-1.4 not really a PDF")
        with Library(data) as library:  # a rented GPU box, recorded (nothing is sent to it)
            add_host(library, "a10g", "ubuntu@203.0.113.7", price_per_hour=1.006)
        window = MainWindow(data)
        window.show()

        library = window.view("Library")
        library.add_paths([SAMPLE, bad])
        wait_until(app, lambda: any(library.table.item(r, 1).text() == "50" for r in range(library.table.rowCount())))
        wait_until(app, lambda: "renamed.pdf" in library.refused())
        library.query.setText("Which state's law governs the agreement?")
        library._search()
        wait_until(app, lambda: library.hits.count() > 0)
        shoot(app, window, "library")

        library._open_hit(library.hits.item(0))
        document = window.view("Document")
        wait_until(app, lambda: document.highlighted_page() is not None)
        shoot(app, window, "document")

        window.show_view("Dataset")
        dataset = window.view("Dataset")
        dataset.kinds["raw"].setChecked(False)  # grounded examples alone, as the demo trains (docs/training.md)
        dataset.build()
        wait_until(app, lambda: dataset.status.text().startswith("Dataset 1"))
        shoot(app, window, "dataset")

        window.show_view("Training")
        training = window.view("Training")
        wait_until(app, training.advanced.isEnabled)  # its fields show the settings the job would run with
        training.advanced.setChecked(True)
        training.max_steps.setValue(40)
        training.make_estimate()  # SmolLM2 is converted first, once: the first run's preparation, with its bar
        wait_until(app, lambda: training.setup_bar.isVisible())
        shoot(app, window, "training-first-run")
        wait_until(app, lambda: "steps over" in training.estimate.text(), timeout=300)
        training.start()
        wait_until(app, lambda: training.job is not None and training.job.state != "running", timeout=900)
        shoot(app, window, "training")

        window.show_view("Models")
        models = window.view("Models")
        wait_until(app, lambda: models.checkpoints.rowCount() > 0)
        models.score(QUESTIONS)
        wait_until(app, lambda: models.task is None, timeout=900)
        models.quant.setCurrentText("q8_0")  # a 135M model keeps its sense at 8 bits, less so at 4 (the demo's)
        models.export()
        wait_until(app, lambda: models.task is None, timeout=900)
        wait_until(app, lambda: models.models.rowCount() > 0)
        shoot(app, window, "models")

        window.show_view("Chat")
        chat = window.view("Chat")
        wait_until(app, lambda: chat.model.count() > 0)
        for question in ("Which state's law governs the agreement?", "When can Vyera terminate the agreement?"):
            chat.question.setText(question)
            chat.ask()
            wait_until(app, lambda: chat.ask_button.isEnabled(), timeout=300)
        shoot(app, window, "chat")

        # A scan, read by OCR: its page's image beside the text OCR read, the passage marked on both.
        window.show_view("Library")
        library.add_paths([scanned_copy(SAMPLE, Path(tmp) / "signed-scan.pdf", range(1, 4))])
        wait_until(app, lambda: library.table.rowCount() > 1 and "OCR" in library.table.item(1, 4).text(), timeout=300)
        wait_until(app, lambda: library.table.item(1, 4).text().startswith("in the library"), timeout=300)
        with Library(data) as opened:
            passage = opened.db.execute(
                "SELECT text FROM chunks WHERE document_id = 2 AND text LIKE '%Applicable Law” means%'"
            ).fetchone()[0]
        window.open_document(2, 1, passage)
        wait_until(app, lambda: document.highlighted_page() == 1)
        shoot(app, window, "document-scan")

        window.show_view("Settings")
        settings = window.view("Settings")
        wait_until(app, lambda: settings.hosts.rowCount() == 1)
        shoot(app, window, "settings")
        window.close()


if __name__ == "__main__":
    main()
