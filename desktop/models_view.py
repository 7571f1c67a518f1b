"""Models: a job's checkpoints with validation loss and answer score, the best marked; score them, export
one to GGUF (a progress bar per phase); the GGUF models exported or imported; delete one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from core.jobs import jobs
from core.library.store import Library
from core.llamacpp import DEFAULT_QUANT, QUANTS
from core.models import gguf_models
from core.sizes import format_size
from desktop.tasks import Task
from desktop.view import View

PHASES = ("merge", "convert", "quantize", "verify")
SCORE_SCALE = (
    "Answer score, from 0 to 1: for each question, the mean of the answer's correctness (the expected answer's "
    "words, numbers and dates in it) and whether it cites an expected page; then the mean over the questions."
)


def _table(headers: tuple[str, ...]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().hide()
    return table


def _fill(table: QTableWidget, rows: list[list[str]]) -> None:
    table.setRowCount(len(rows))
    for r, values in enumerate(rows):
        for c, value in enumerate(values):
            table.setItem(r, c, QTableWidgetItem(value))


@dataclass(frozen=True)
class Listed:
    """The jobs, and the GGUF models with what each one's documents have become since (standing's words)."""

    jobs: list[jobs.Job]
    models: list[gguf_models.Model]
    flags: dict[int, str | None]


@dataclass(frozen=True)
class Scored:
    """A checkpoint's score, in the library now (scoring's progress)."""

    step: int


class ModelsView(View):
    def __init__(self, main) -> None:
        super().__init__(main)
        self.job = QComboBox()
        self.job.currentIndexChanged.connect(lambda _: self._load_checkpoints())
        self.checkpoints = _table(("Step", "Validation loss", "Answer score", ""))
        header = self.checkpoints.horizontalHeaderItem(2)
        assert header is not None
        header.setToolTip(SCORE_SCALE)
        self.score_button = QPushButton("Score answers")
        self.score_button.setToolTip("Every checkpoint answers the questions; the best answers choose the checkpoint")
        self.score_button.clicked.connect(self._score_chosen)
        self.questions = QComboBox()
        self.questions.addItem("on the dataset's held-out questions", None)
        self.questions.addItem("on a question set file…", "file")
        self.quant = QComboBox()
        self.quant.addItems(list(QUANTS))
        self.quant.setCurrentText(DEFAULT_QUANT)
        self.export_button = QPushButton("Export to GGUF")
        self.export_button.clicked.connect(self.export)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self._cancel)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.phase = QLabel()
        self.phase.setWordWrap(True)  # what an export made is a long line: it wraps rather than widen the window
        job_row = QHBoxLayout()
        job_row.addWidget(QLabel("Job"))
        job_row.addWidget(self.job, 1)
        actions = QHBoxLayout()
        for widget in (self.score_button, self.questions, self.quant, self.export_button, self.cancel_button):
            actions.addWidget(widget)
        actions.addWidget(self.progress, 1)

        self.models = _table(("Id", "File", "Quantization", "Size", "From"))
        import_button = QPushButton("Import GGUF…")
        import_button.clicked.connect(self.import_model)
        delete_button = QPushButton("Delete")
        delete_button.clicked.connect(self.delete_model)
        model_actions = QHBoxLayout()
        model_actions.addWidget(import_button)
        model_actions.addWidget(delete_button)
        model_actions.addStretch(1)

        layout = QVBoxLayout(self)
        layout.addLayout(job_row)
        layout.addWidget(self.checkpoints, 1)
        scale = QLabel(SCORE_SCALE)
        scale.setWordWrap(True)
        scale.setStyleSheet("color: gray")
        layout.addWidget(scale)
        layout.addLayout(actions)
        layout.addWidget(self.phase)  # below the buttons, the whole width: what is being done, then what it made
        layout.addWidget(QLabel("GGUF models (chat with them in Chat)"))
        layout.addWidget(self.models, 1)
        layout.addLayout(model_actions)
        self.task: Task | None = None
        self.model_ids: list[int] = []

    # -- loading --------------------------------------------------------------------------------------
    def refresh(self) -> None:
        def work(library: Library, task: Task) -> Listed:
            listed = gguf_models.models(library)
            flags = {m.id: gguf_models.standing(library, gguf_models.made_from(m.path)) for m in listed}
            return Listed(jobs.jobs(library), listed, flags)

        self.main.tasks.start(work, self._show, latest_only=True)

    def reset(self) -> None:
        self.job.clear()
        self.checkpoints.setRowCount(0)
        self.models.setRowCount(0)

    def _show(self, loaded: Listed) -> None:
        chosen = self.job.currentData()
        self.job.blockSignals(True)
        self.job.clear()
        for job in reversed(loaded.jobs):
            self.job.addItem(f"Job {job.id}: {job.base}, {job.state}, step {job.step}", job.id)
        self.job.setCurrentIndex(max(self.job.findData(chosen), 0))
        self.job.blockSignals(False)
        self._load_checkpoints()
        self.model_ids = [m.id for m in loaded.models]
        _fill(
            self.models,
            [
                [str(m.id), m.path.name, m.quant or "?", format_size(m.bytes), _origin(m, loaded.flags[m.id])]
                for m in loaded.models
            ],
        )

    def _load_checkpoints(self) -> None:
        job_id = self.job.currentData()
        if job_id is None:
            self.checkpoints.setRowCount(0)
            return

        def work(library: Library, task: Task) -> tuple[list[jobs.Checkpoint], jobs.Checkpoint | None]:
            jobs.sync(library, job_id)
            saved = jobs.checkpoints(library, job_id)
            return saved, jobs.best_checkpoint(saved)

        self.main.tasks.start(work, self._show_checkpoints, latest_only=True)

    def _show_checkpoints(self, loaded: tuple[list[jobs.Checkpoint], jobs.Checkpoint | None]) -> None:
        saved, best = loaded
        if best is not None and best.answer_score is not None:
            label = "★ best (by answer score)"
        elif best is not None and best.val_loss is not None:
            label = "★ best (by validation loss)"
        else:  # nothing to rank by yet: jobs.best_checkpoint falls back to the newest
            label = "★ newest (not yet scored)"
        _fill(
            self.checkpoints,
            [
                [
                    str(c.step),
                    _number(c.val_loss, ".4f"),
                    _number(c.answer_score, ".3f"),
                    label if best is not None and c.step == best.step else "",
                ]
                for c in saved
            ],
        )

    # -- scoring and exporting ------------------------------------------------------------------------
    def _score_chosen(self) -> None:
        if self.questions.currentData() is None:
            self.score()
            return
        name, _ = QFileDialog.getOpenFileName(self, "Question set", "", "Questions (*.jsonl *.csv)")
        if name:
            self.score(Path(name))

    def score(self, questions_file: Path | None = None) -> None:
        """Score the chosen job's checkpoints on a question set (default: its held-out questions)."""
        job_id = self.job.currentData()
        if job_id is None:
            return

        def work(library: Library, task: Task) -> list[dict[str, Any]]:
            # Imported here, in the task: with chat and the dataset modules behind it, it held the GUI thread
            # for 100 ms when the view was first shown.
            from core.answers.evaluation import load_questions
            from core.jobs.checkpoint_scores import evaluate_job

            questions = load_questions(questions_file) if questions_file else None
            progress = lambda what, done, total: task.report((f"Scoring: {what}", done, total))  # noqa: E731
            scored = lambda row: task.report(Scored(row["step"]))  # noqa: E731
            return evaluate_job(library, job_id, questions, work=task.core_work(progress), on_score=scored)

        self._run(work, "scoring", cancelled="Cancelled: the checkpoints scored before it keep their scores.")

    def export(self) -> None:
        job_id, quant = self.job.currentData(), self.quant.currentText()
        if job_id is None:
            return

        def work(library: Library, task: Task) -> tuple[gguf_models.Model, dict[str, Any]]:
            return gguf_models.export_checkpoint(library, job_id, quant=quant, work=task.core_work())

        def said(exported: tuple[gguf_models.Model, dict[str, Any]]) -> str:
            model, details = exported
            return (
                f"Exported {model.path.name} ({format_size(model.bytes)}, step {model.step}), verified by "
                f"llama.cpp ({details['agreement']:.0%} greedy agreement): ask it in Chat."
            )

        self._run(work, "exporting", said, cancelled="Cancelled: nothing was exported.")

    def _run(self, work, doing: str, said: Callable[[Any], str] = lambda result: "", *, cancelled: str) -> None:
        self._busy(True, doing)
        self.task = self.main.tasks.start(
            work,
            lambda result: self._finished(lambda: said(result)),
            on_progress=self._progress,
            on_failed=self._failed,
            on_cancelled=lambda: self._finished(lambda: cancelled),
        )

    def _cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _finished(self, outcome: Callable[[], str]) -> None:
        """The work ended: what it made stays said beside the buttons until the next one starts."""
        self._idle()
        self.refresh()
        self.phase.setText(outcome())

    def _failed(self, sentence: str) -> None:
        self._idle()
        self.main.show_error(sentence)

    def _idle(self) -> None:
        self._busy(False)

    def _busy(self, busy: bool, doing: str = "") -> None:
        for button in (self.score_button, self.export_button):
            button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.progress.setVisible(busy)
        self.progress.setRange(0, 0)
        self.phase.setText(doing)
        if not busy:
            self.task = None

    def _progress(self, report: tuple[str, int, int] | Scored) -> None:
        if isinstance(report, Scored):  # a checkpoint's score is in the library: show it now, not at the end
            self._load_checkpoints()
            return
        what, done, total = report
        self.phase.setText(what)
        self.progress.setRange(0, total)  # 0 of 0: busy, as while the model loads
        self.progress.setValue(done)

    def _changed(self, _result: Any) -> None:
        self.refresh()

    # -- models ---------------------------------------------------------------------------------------
    def import_model(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Import a GGUF model", "", "GGUF (*.gguf)")
        if name:
            self.main.tasks.start(lambda library, task: gguf_models.import_gguf(library, Path(name)), self._changed)

    def delete_model(self) -> None:
        rows = self.models.selectionModel().selectedRows()
        if rows:
            model_id = self.model_ids[rows[0].row()]
            self.main.tasks.start(lambda library, task: gguf_models.delete_model(library, model_id), self._changed)


def _origin(model: gguf_models.Model, flag: str | None) -> str:
    """Where the model came from, and what became of its documents since (out of date, or one removed)."""
    origin = f"job {model.job_id}, step {model.step}" if model.source == "export" else f"imported ({model.path.parent})"
    return f"{origin} — {flag}" if flag else origin


def _number(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)
