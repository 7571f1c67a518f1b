"""Training: base model, where to run, preset and advanced settings; start, cancel, resume; a live chart of
the loss with step, tokens/s and ETA. The job runs in the engine process: closing the window leaves it
running, and reopening the view reattaches to it."""

from __future__ import annotations

import datetime
import threading
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QThread, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from core.jobdir import events
from core.jobdir.base_folder import DEMO
from core.jobdir.config import PRESET_NAMES, TrainConfig, load_config, preset_description
from core.jobdir.events import JobState
from core.jobdir.job_spec import JobSpec
from core.jobs import hosts, jobs
from core.library.store import Library
from core.models.base_models import PACKAGED, base_settings
from desktop.loss_chart import LossChart
from desktop.tasks import Task
from desktop.view import View

POLL_S = 0.5


@dataclass(frozen=True)
class History:
    """What the library holds of a job when the view starts to follow it."""

    job: jobs.Job
    losses: list[dict[str, Any]]  # jobs.losses' rows: step, train_loss, val_loss
    checkpoints: list[jobs.Checkpoint]
    config: TrainConfig  # what it runs with


@dataclass(frozen=True)
class Latest:
    job: jobs.Job | None  # the newest job, if any
    hosts: list[hosts.Host]


class JobWatcher(QThread):
    """Follows one job from its own thread: first what the library holds of it, then its new events."""

    history = Signal(object)  # History
    new_events = Signal(object)  # (jobs.Job, list[events.Event])

    def __init__(self, data_dir, job_id: int, parent=None) -> None:
        super().__init__(parent)
        self.data_dir, self.job_id = data_dir, job_id
        self.stopped = threading.Event()

    def run(self) -> None:
        with Library(self.data_dir) as library:
            job, _ = jobs.sync(library, self.job_id)
            config = JobSpec.read(job.dir).config
            self.history.emit(History(job, jobs.losses(library, job.id), jobs.checkpoints(library, job.id), config))
            while job.state == JobState.RUNNING and not self.stopped.wait(POLL_S):
                job, new = jobs.sync(library, self.job_id)
                if new or job.state != JobState.RUNNING:
                    self.new_events.emit((job, new))


ADVANCED = "Advanced settings (instead of the preset's)"


class TrainingView(View):
    def __init__(self, main) -> None:
        super().__init__(main)
        self.base = QComboBox(editable=True)
        self.base.addItems([*PACKAGED, DEMO])  # the real model first: the first run's default
        self.base.setToolTip(
            "smollm2 (a real 135M instruct model, offline), demo (a toy model built here), a model folder "
            "(safetensors), or a Hugging Face id such as org/name"
        )
        browse = QPushButton("Folder…")
        browse.clicked.connect(self._pick_base)
        base_row = QHBoxLayout()
        base_row.addWidget(self.base, 1)
        base_row.addWidget(browse)
        self.host = QComboBox()
        self.host.addItem("This computer", jobs.LOCAL)
        self.preset = QComboBox()
        self.preset.addItems(PRESET_NAMES)
        # Unchecked, the advanced settings show what the job will run with: the preset's, with the base's own.
        self.advanced = QGroupBox(ADVANCED, checkable=True, checked=False)
        self.advanced.setEnabled(False)  # until its fields show the settings (a task reads the presets)
        self.max_steps = QSpinBox(minimum=0, maximum=1_000_000)
        self.max_steps.setSpecialValueText("as the epochs take")
        self.lr = QDoubleSpinBox(decimals=5, minimum=0.00001, maximum=0.1, singleStep=0.0001)
        self.seq_len = QSpinBox(minimum=64, maximum=32768, singleStep=256)
        self.rank = QSpinBox(minimum=1, maximum=256)
        advanced = QFormLayout(self.advanced)
        advanced.addRow("Steps", self.max_steps)
        advanced.addRow("Learning rate", self.lr)
        advanced.addRow("Sequence length (tokens)", self.seq_len)
        advanced.addRow("LoRA rank", self.rank)
        form = QFormLayout()
        form.addRow("Base model", base_row)
        form.addRow("Run on", self.host)
        form.addRow("Preset", self.preset)
        self.preset_about = QLabel()
        self.preset_about.setWordWrap(True)
        self.preset_about.setStyleSheet("color: gray")
        self.preset.currentTextChanged.connect(self._describe_preset)
        self._describe_preset(self.preset.currentText())
        form.addRow("", self.preset_about)
        self.estimate = QLabel()
        self.estimate.setWordWrap(True)
        form.addRow("Estimate", self.estimate)

        self.estimate_button = QPushButton("Estimate")
        self.estimate_button.setToolTip("Count the steps, time one of them here and measure its memory")
        self.estimate_button.clicked.connect(self.make_estimate)
        self.start_button = QPushButton("Start training")
        self.start_button.setEnabled(False)  # until the settings are shown
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setEnabled(False)
        self.resume_button.clicked.connect(self.resume)
        buttons = QHBoxLayout()
        for button in (self.estimate_button, self.start_button, self.cancel_button, self.resume_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        self.status = QLabel("No training job yet.")
        self.status.setWordWrap(True)
        # The engine's environment, made the first time this computer trains (core/jobs/runners/engine_env.py).
        self.setup_bar = QProgressBar()
        self.setup_bar.setVisible(False)
        self.chart = LossChart()

        top = QHBoxLayout()
        top.addLayout(form, 1)
        top.addWidget(self.advanced, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.setup_bar)
        layout.addWidget(self.chart, 1)
        self.job: jobs.Job | None = None
        self.starting: Task | None = None
        self.estimating: Task | None = None
        self.watcher: JobWatcher | None = None
        self.last_step: events.Step | None = None
        # The engine's last progress event, until its next step or result: what it prepares before training
        # (the demo model's build), the validation loss, the held-out questions' answers.
        self.working: events.Progress | None = None
        self.job_config: TrainConfig | None = None  # what the job shown runs with
        for changed in (self.base.currentTextChanged, self.preset.currentTextChanged, self.advanced.toggled):
            changed.connect(self._show_chosen_settings)
        for changed in (self.base.currentTextChanged, self.host.currentIndexChanged, self.preset.currentTextChanged):
            changed.connect(self._forget_estimate)
        for field in (self.max_steps, self.lr, self.seq_len, self.rank):
            field.valueChanged.connect(self._forget_estimate)
        self.advanced.toggled.connect(self._forget_estimate)
        self._forget_estimate()
        self._show_chosen_settings()

    # -- the job shown ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        def work(library: Library, task: Task) -> Latest:
            return Latest(next(reversed(jobs.jobs(library)), None), hosts.hosts(library))

        self.main.tasks.start(work, self._show_latest, latest_only=True)

    def _show_latest(self, loaded: Latest) -> None:
        chosen = self.host.currentData()
        self.host.blockSignals(True)  # the list read again is no change of host, unless the chosen one went
        self.host.clear()
        self.host.addItem("This computer", jobs.LOCAL)
        for h in loaded.hosts:
            price = f", {h.price_per_hour:.2f} USD/h" if h.price_per_hour is not None else ""
            self.host.addItem(f"{h.name} ({h.where}{price})", h.name)
        self.host.setCurrentIndex(max(self.host.findData(chosen), 0))
        self.host.blockSignals(False)
        if self.host.currentData() != chosen:
            self._forget_estimate()
        if loaded.job and self.watcher is None and self.job is None:
            self.watch(loaded.job.id)

    def watch(self, job_id: int) -> None:
        self.stop()
        self.chart.clear()
        self.last_step, self.working = None, None
        self.watcher = JobWatcher(self.main.data_dir, job_id, self)
        self.watcher.history.connect(self._history)
        self.watcher.new_events.connect(self._events)
        self.watcher.start()

    def stop(self) -> None:
        if self.watcher is not None:
            # A sync in flight (an SSH round trip to a remote host) ends on its own; nobody waits for it.
            self.watcher.history.disconnect()
            self.watcher.new_events.disconnect()
            self.watcher.stopped.set()
            self.main.tasks.retire(self.watcher)
            self.watcher = None

    def reset(self) -> None:
        self.stop()
        self.job = None
        self.chart.clear()
        self.status.setText("No training job yet.")
        self._buttons()

    def _history(self, history: History) -> None:
        self.job = history.job
        self.job_config = history.config
        running = self._running_config()
        if running is not None:
            self._show_settings(running)
        if self.job.steps_total:
            self.chart.set_steps_total(self.job.steps_total)
        for row in history.losses:
            self.chart.add_loss(row["step"], row["train_loss"], row["val_loss"])
        for saved in history.checkpoints:
            self.chart.mark_checkpoint(saved.step, saved.val_loss, saved.answer_score)
        self._show_status()

    def _events(self, update: tuple[jobs.Job, list[events.Event]]) -> None:
        was_running = self._running_config() is not None
        self.job, new = update
        if was_running and self._running_config() is None:
            self._show_title()
            self._show_chosen_settings()  # back to what the next Start would use
        for event in new:
            self.working = event if isinstance(event, events.Progress) else None
            if isinstance(event, events.Start):
                self.chart.set_steps_total(event.steps_total)
            elif isinstance(event, events.Step):
                self.chart.add_loss(event.step, train=event.loss)
                self.last_step = event
            elif isinstance(event, events.Eval):
                self.chart.add_loss(event.step, val=event.val_loss)
            elif isinstance(event, events.Checkpoint):
                self.chart.mark_checkpoint(event.step, event.val_loss)
            elif isinstance(event, events.Score):
                self.chart.mark_checkpoint(event.step, None, event.answer_score)
        self._show_status()
        if self.job.state != JobState.RUNNING:
            self.watcher = None

    def _show_status(self) -> None:
        job = self.job
        assert job is not None
        text = f"Job {job.id} ({job.base}): {job.state}, step {job.step} of {job.steps_total or '?'}"
        if job.processes and job.processes > 1:
            text += f", {job.processes} processes"
        working = self.working if job.state == JobState.RUNNING else None
        if working and not job.steps_total:  # before its first start
            text = f"Job {job.id} ({job.base}): preparing, {working.message}"
        step = self.last_step
        if job.state == JobState.RUNNING and step and step.tokens_per_s is not None and step.eta_s is not None:
            eta = datetime.timedelta(seconds=round(step.eta_s))
            text += f", {step.tokens_per_s:,.0f} tokens/s, {eta} to go"
        if working and job.steps_total:
            unit = f" {working.unit}" if working.unit else ""
            text += f"; now {working.message}, {working.done} of {working.total}{unit}"
        if working:
            self._show_bar(working.done, working.total)
        else:
            self.setup_bar.hide()
        if job.message:
            text += f". {job.message}"
        self.status.setText(text)
        self._buttons()

    def _buttons(self) -> None:
        running = self.job is not None and self.job.state == JobState.RUNNING
        ready = self.advanced.isEnabled()  # what the job will run with is known
        idle = self.starting is None and self.estimating is None
        self.start_button.setEnabled(not running and idle and ready)
        here = self.host.currentData() == jobs.LOCAL and self.base.currentText().strip() != DEMO
        self.estimate_button.setEnabled(here and idle and ready)
        self.cancel_button.setEnabled(running or not idle)
        self.resume_button.setEnabled(self.job is not None and self.job.state in (JobState.FAILED, JobState.CANCELLED))

    # -- start, cancel, resume -------------------------------------------------------------------------
    def _describe_preset(self, preset: str) -> None:
        said = preset_description(preset)
        self.preset_about.setText(said[:1].upper() + said[1:])

    def _pick_base(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Base model folder (safetensors)")
        if folder:
            self.base.setCurrentText(folder)

    def _show_chosen_settings(self) -> None:
        if self.advanced.isChecked():
            self._show_title()  # the fields are the next job's now, not the running one's
            return  # the user's own now
        spec, preset = self.base.currentText().strip(), self.preset.currentText()
        self.main.tasks.start(
            lambda library, task: load_config(preset, base_settings(spec)), self._show_settings, latest_only=True
        )

    def _running_config(self) -> TrainConfig | None:
        """While the job shown runs and the settings are not the user's own: what it runs with (its preset's
        or the user's own), which the settings box shows rather than what a Start would use."""
        if self.job is None or self.job.state != JobState.RUNNING or self.advanced.isChecked():
            return None
        return self.job_config

    def _show_title(self) -> None:
        running = self.job if self._running_config() is not None else None
        self.advanced.setTitle(f"Settings of job {running.id}, running" if running else ADVANCED)

    def _show_settings(self, config: TrainConfig) -> None:
        """The newest choice's settings; while a job runs, the ones it runs with (_running_config)."""
        config = self._running_config() or config
        self._show_title()
        if not self.advanced.isChecked():  # checked, they are the user's own
            self.max_steps.setValue(config.max_steps or 0)
            self.lr.setValue(config.lr)
            self.seq_len.setValue(config.seq_len)
            self.rank.setValue(config.lora_rank)
        self.advanced.setEnabled(True)  # its fields hold the job's settings now
        self._buttons()

    def settings(self) -> dict[str, Any]:
        """The user's own settings, when Advanced is checked (start_training adds the base's own under them)."""
        if not self.advanced.isChecked():
            return {}
        overrides = {"lr": self.lr.value(), "seq_len": self.seq_len.value(), "lora_rank": self.rank.value()}
        if self.max_steps.value():
            overrides["max_steps"] = self.max_steps.value()
        return overrides

    def start(self) -> None:
        if not self.start_button.isEnabled():
            return  # running, starting, or the settings not shown yet
        spec, preset, overrides = self.base.currentText().strip(), self.preset.currentText(), self.settings()

        host = self.host.currentData()

        def work(library: Library, task: Task) -> int:
            asked = jobs.TrainingRequest(spec, preset, overrides, host=host)
            job, _ = jobs.start_training(library, asked, work=task.core_work())
            return job.id

        self.status.setText("Starting…")
        self.starting = self.main.tasks.start(
            work,
            self._started,
            on_progress=self._starting,
            on_failed=self._failed_to_start,
            on_cancelled=lambda: self._failed_to_start(""),
        )
        self._buttons()

    # -- estimate ---------------------------------------------------------------------------------------
    def _forget_estimate(self) -> None:
        """What an estimate said holds for the settings it was made with only."""
        if self.estimating is not None:
            self.estimating.cancel()
        if self.host.currentData() != jobs.LOCAL:
            said = "Estimates are made for this computer; a job elsewhere shows its time from its first step."
        elif self.base.currentText().strip() == DEMO:
            said = "The demo base is built by its own job; its time shows from the job's first step."
        else:
            said = "Estimate counts the steps, times one of them on this computer and measures its memory."
        self.estimate.setText(said)
        self.estimate.setStyleSheet("color: gray")
        self._buttons()

    def make_estimate(self) -> None:
        if not self.estimate_button.isEnabled():
            return
        spec, preset, overrides = self.base.currentText().strip(), self.preset.currentText(), self.settings()

        def work(library: Library, task: Task) -> str:
            return jobs.estimate_training(
                library, jobs.TrainingRequest(spec, preset, overrides), work=task.core_work()
            ).sentence()

        self.status.setText("Estimating…")
        self.estimating = self.main.tasks.start(
            work,
            self._estimated,
            on_progress=self._starting,
            on_failed=self._failed_to_estimate,
            on_cancelled=lambda: self._failed_to_estimate(""),
        )
        self._buttons()

    def _estimated(self, sentence: str) -> None:
        self._end_estimate()
        self.estimate.setText(sentence[:1].upper() + sentence[1:])
        self.estimate.setStyleSheet("")

    def _failed_to_estimate(self, sentence: str) -> None:
        self._end_estimate()
        if sentence:
            self.main.show_error(sentence)

    def _end_estimate(self) -> None:
        self.estimating = None
        self.setup_bar.setVisible(False)
        if self.job is not None:
            self._show_status()
        else:
            self.status.setText("No training job yet.")
        self._buttons()

    def _starting(self, progress: tuple[str, int, int]) -> None:
        """What a start or an estimate is doing: a step with a count, or without one (a busy bar)."""
        message, done, total = progress
        message = message[:1].upper() + message[1:]
        self.status.setText(message)
        self._show_bar(done, total)

    def _show_bar(self, done: int, total: int) -> None:
        self.setup_bar.setRange(0, total)
        self.setup_bar.setValue(done)
        self.setup_bar.setVisible(done < total or total == 0)  # 0 of 0: busy

    def _started(self, job_id: int) -> None:
        self.starting = None
        self.setup_bar.setVisible(False)
        self.watch(job_id)

    def _failed_to_start(self, sentence: str) -> None:
        self.starting = None
        self.setup_bar.setVisible(False)
        self.status.setText("")
        self._buttons()
        if sentence:
            self.main.show_error(sentence)

    def cancel(self) -> None:
        if self.estimating is not None:
            self.estimating.cancel()
            self.status.setText("Stopping the estimate…")
        elif self.starting is not None:
            self.starting.cancel()
            self.status.setText("Stopping the set-up…")
        elif self.job is not None:
            job_id = self.job.id
            self.cancel_button.setEnabled(False)
            self.status.setText(f"Job {job_id}: stopping, keeping the steps done so far…")
            self.main.tasks.start(lambda library, task: jobs.cancel_job(library, job_id))

    def resume(self) -> None:
        if self.job is not None:
            job_id = self.job.id
            self.main.tasks.start(lambda library, task: jobs.start_job(library, job_id).id, self.watch)
