"""The dataset: the validation share, where the Q&A pairs come from, which example kinds; build it (with
progress and cancel), then a preview of the examples it made. Its passages are the chunks `add` made."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
)

from core.dataset import qa_pairs
from core.dataset.build import Dataset, DatasetSettings, added_since, dataset, prepare_dataset
from core.library.store import Library
from core.models.gguf_models import Model, models
from desktop.tasks import Task
from desktop.view import View

# "&&": a single "&" in a Qt label marks a keyboard shortcut.
KINDS = {"raw": "Raw chunks (the documents' language)", "qa": "Q&&A pairs", "grounded": "Grounded Q&&A (RAFT)"}
KIND_TIPS = {
    "raw": "The documents' own chunks as plain text: the model learns their words and style.",
    "qa": "A question and its short answer with the page it cites, without any passage.",
    "grounded": "RAFT, retrieval-augmented fine-tuning: the question over the passages search finds for it, as chat "
    "asks it, and an answer that quotes the passage that holds it and cites its page. This is how chat answers.",
}
PREVIEW = 2  # examples of each kind


@dataclass(frozen=True)
class Standing:
    """The library as the view shows it: the models that can make Q&A pairs, the newest dataset (None before
    the first) and the documents added since it was built."""

    models: list[Model]
    dataset: Dataset | None
    added_since: list[str]


@dataclass(frozen=True)
class Built:
    dataset: Dataset
    made: str  # how the Q&A pairs were made, in words
    examples: list[dict[str, Any]]  # the first examples of each kind, for the preview


class DatasetView(View):
    def __init__(self, main) -> None:
        super().__init__(main)
        self.val_share = QDoubleSpinBox(minimum=0.0, maximum=0.5, singleStep=0.05, value=0.1, decimals=2)
        self.source = QComboBox()
        self.source.addItem("Extractive: sentences of the documents", qa_pairs.EXTRACTIVE)
        self.source.addItem("Import a file of pairs (JSONL or CSV)…", "import")
        self.kinds = {kind: QCheckBox(label) for kind, label in KINDS.items()}
        for kind, box in self.kinds.items():
            box.setToolTip(KIND_TIPS[kind])
        for kind in DatasetSettings().kinds:
            self.kinds[kind].setChecked(True)
        kinds = QHBoxLayout()
        for box in self.kinds.values():
            kinds.addWidget(box)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        form.addRow("Validation share (of pages)", self.val_share)
        form.addRow("Q&&A pairs from", self.source)
        form.addRow("Example kinds", kinds)

        self.build_button = QPushButton("Build dataset")
        self.build_button.clicked.connect(self.build)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self._cancel)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel()
        self.status.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.build_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.progress, 1)
        self.preview = QTextBrowser()
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(QLabel("Preview of the training examples"))
        layout.addWidget(self.preview, 1)
        self.task: Task | None = None

    def refresh(self) -> None:
        def work(library: Library, task: Task) -> Standing:
            usable = [m for m in models(library) if m.path.is_file()]
            if not library.db.execute("SELECT count(*) FROM datasets").fetchone()[0]:
                return Standing(usable, None, [])
            newest = dataset(library)
            return Standing(usable, newest, added_since(library, newest))

        if self.task is None:  # a build in progress says how it goes
            self.main.tasks.start(work, self._show_library, latest_only=True)

    def _show_library(self, shown: Standing) -> None:
        self._show_models(shown.models)
        if shown.dataset is None:
            self.status.setText("No dataset yet: build one from the library's documents.")
            return
        built, newer = shown.dataset, shown.added_since
        text = f"Dataset {built.id}, built {built.created[:16].replace('T', ' ')}: {_sizes(built)}"
        if newer:
            text += f" Not in it: {', '.join(newer)}, added since; build again to train on them too."
        self.status.setText(text)

    def _show_models(self, gguf_models: list[Model]) -> None:
        chosen = self.source.currentData()
        while self.source.count() > 2:
            self.source.removeItem(2)
        for model in gguf_models:
            self.source.addItem(f"A local model: {model.path.name}", str(model.path))
        index = self.source.findData(chosen)
        self.source.setCurrentIndex(max(index, 0))

    def build(self) -> None:
        source = self.source.currentData()
        pairs_file = None
        if source == "import":
            name, _ = QFileDialog.getOpenFileName(self, "Q&A pairs", "", "Pairs (*.jsonl *.csv)")
            if not name:
                return
            pairs_file = Path(name)
        settings = DatasetSettings(
            val_share=round(self.val_share.value(), 2),
            kinds=tuple(kind for kind, box in self.kinds.items() if box.isChecked()),
        )

        def work(library: Library, task: Task) -> Built:
            dataset, made = prepare_dataset(
                library,
                settings,
                pairs=str(pairs_file or source),
                work=task.core_work(),
            )
            return Built(dataset, made, _preview(dataset.dir / "train.jsonl"))

        self._busy(True)
        self.task = self.main.tasks.start(
            work, self._built, on_progress=self._progress, on_failed=self._failed, on_cancelled=self._cancelled
        )

    def _cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _cancelled(self) -> None:
        self._busy(False)
        self.status.setText("Cancelled; the earlier dataset is kept.")

    def _busy(self, busy: bool) -> None:
        self.build_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.progress.setVisible(busy)
        self.progress.setRange(0, 0)
        if busy:
            self.status.setText("Making Q&A pairs…")
        else:
            self.task = None

    def _progress(self, report: tuple[str, int, int]) -> None:
        _, done, total = report
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _failed(self, sentence: str) -> None:
        self._busy(False)
        self.status.setText("")
        self.main.show_error(sentence)

    def _built(self, built: Built) -> None:
        self._busy(False)
        made, kinds = built.dataset, [kind for kind, box in self.kinds.items() if box.isChecked()]
        uses = "the Q&A examples and " if {"qa", "grounded"} & set(kinds) else ""
        self.status.setText(f"Dataset {made.id}: {built.made}, for {uses}the questions that score. {_sizes(made)}")
        self.preview.setPlainText("\n\n".join(_example_text(example) for example in built.examples))


def _sizes(built: Dataset) -> str:
    return (
        f"{built.train_examples} training and {built.val_examples} validation examples, {built.held_out} "
        "questions held out for scoring checkpoints."
    )


def _preview(path: Path) -> list[dict[str, Any]]:
    """The first examples of each kind (a grounded example is a chat whose prompt holds passages)."""
    seen: dict[str, list[dict[str, Any]]] = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            example = json.loads(line)
            kind = _kind(example)
            if len(seen.setdefault(kind, [])) < PREVIEW:
                seen[kind].append(example)
    return [example for examples in seen.values() for example in examples]


def _kind(example: dict[str, Any]) -> str:
    if example["kind"] == "raw":
        return "raw"
    return "grounded Q&A" if example["messages"][1]["content"].startswith("Passages:") else "Q&A"


def _example_text(example: dict[str, Any]) -> str:
    first, last = example["pages"][0], example["pages"][-1]
    where = f"{example['document']} " + (f"p. {first}" if first == last else f"pp. {first}-{last}")
    if example["kind"] == "raw":
        return f"— raw text, {where}\n{example['text']}"
    turns = [f"{m['role']}: {m['content']}" for m in example["messages"] if m["role"] != "system"]
    return f"— {_kind(example)}, {where}\n" + "\n".join(turns)
