"""events.jsonl: the engine's only channel to the app (docs/architecture.md, "Events"). One JSON object per line,
appended whole; a reader keeps its byte offset and tolerates a partial last line.

Each line type is a class below, and `parse` the one way from a line to an event: the app, the runners and
the engine read events as these types only, never by key.

Standard library only: the app reads events without torch, on this machine or from a remote host.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from core.jobdir import layout

TERMINAL = ("done", "error", "cancelled")
PROGRESS_EVERY_S = 1.0


class JobState(StrEnum):
    """A job's state, as the library keeps it: running from its start until one of the TERMINAL events."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ENDED_AS = {"done": JobState.DONE, "error": JobState.FAILED, "cancelled": JobState.CANCELLED}  # by TERMINAL event


# -- the events, a type a line type ------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Event:
    type: ClassVar[str]
    time: float


@dataclass(frozen=True, kw_only=True)
class Start(Event):
    """A run begins (again, on a resume): what it trains, and how."""

    type = "start"
    steps_total: int
    config: dict[str, Any] = field(default_factory=dict)  # as fitted to the GPU's memory (sizing.fit_memory)
    base: str | None = None
    device: str | None = None
    processes: int = 1
    shard_weights: bool = False
    bfloat16_compute: bool = False
    resumed_from: int = 0
    update_of: dict[str, int] | None = None
    tokens_total: int | None = None  # of one epoch
    examples: int | None = None


@dataclass(frozen=True, kw_only=True)
class Progress(Event):
    """Work under way: before the start (the demo model's build), or between steps (the validation loss, the
    held-out questions' answers), where `unit` names what is counted."""

    type = "progress"
    message: str
    done: int
    total: int
    unit: str | None = None


@dataclass(frozen=True, kw_only=True)
class Step(Event):
    type = "step"
    step: int
    loss: float | None  # None: diverged (not a finite number)
    tokens_per_s: float | None
    eta_s: float | None
    lr: float | None = None
    gpu_peak_gib: float | None = None


@dataclass(frozen=True, kw_only=True)
class Eval(Event):
    type = "eval"
    step: int
    val_loss: float | None


@dataclass(frozen=True, kw_only=True)
class Checkpoint(Event):
    type = "checkpoint"
    step: int
    path: str  # checkpoints/step-NNNNNN, in the job directory
    val_loss: float | None = None


@dataclass(frozen=True, kw_only=True)
class Score(Event):
    """A checkpoint's answers to the held-out questions, scored (core/answers/scoring.py, summary)."""

    type = "score"
    step: int
    answer_score: float | None
    cited_right: float | None = None
    citation_precision: float | None = None
    mean_words: float | None = None


@dataclass(frozen=True, kw_only=True)
class Warned(Event):
    type = "warning"
    message: str


@dataclass(frozen=True, kw_only=True)
class Wiped(Event):
    """A remote job's files deleted from its host (core/jobs/runners/ssh.py)."""

    type = "wiped"
    host: str


@dataclass(frozen=True, kw_only=True)
class Done(Event):
    type = "done"
    message: str | None = None  # why it ended before its last step (early stopping)


@dataclass(frozen=True, kw_only=True)
class Failed(Event):
    type = "error"
    message: str
    exit_code: int | None = None


@dataclass(frozen=True, kw_only=True)
class Stopped(Event):
    """Cancelled: the run stopped as asked, its steps up to `step` kept."""

    type = "cancelled"
    step: int = 0


TYPES: dict[str, type[Event]] = {
    kind.type: kind for kind in (Start, Progress, Step, Eval, Checkpoint, Score, Warned, Wiped, Done, Failed, Stopped)
}


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**63


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _number_or_none(value: Any) -> bool:
    return value is None or _number(value)


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _text_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _checkpoint_path(value: Any) -> bool:
    parts = value.split("/") if isinstance(value, str) else []
    return len(parts) == 2 and parts[0] == layout.CHECKPOINTS and parts[1].startswith("step-")


def _object_or_none(value: Any) -> bool:
    return value is None or isinstance(value, dict)


FIELDS = {
    "time": _number,
    "step": _count,
    "steps_total": _count,
    "processes": _count,
    "resumed_from": _count,
    "done": _count,
    "total": _count,
    "loss": _number_or_none,
    "val_loss": _number_or_none,
    "lr": _number_or_none,
    "tokens_per_s": _number_or_none,
    "eta_s": _number_or_none,
    "answer_score": _number_or_none,
    "path": _checkpoint_path,
    "message": _text_or_none,
    "unit": _text_or_none,
    "host": _text,
    "config": lambda value: isinstance(value, dict),
    "update_of": _object_or_none,
}


def parse(value: Any) -> Event | None:
    """The event a JSON line holds; None where it is not one a reader can take: of an unknown type, without
    what its type needs, or with a field of another kind than every reader takes for granted. Events come
    home from remote hosts: a line that breaks this (a step past SQLite's integers, a checkpoint path out of
    the job) is dropped like a torn one, not handed to a reader that would fail on it. Fields no type holds
    are passed over, so that an engine newer than the app is still read."""
    if not isinstance(value, dict) or value.get("type") not in TYPES:
        return None
    kind = TYPES[value["type"]]
    names = {f.name for f in fields(kind)}
    if not all(check(value[name]) for name, check in FIELDS.items() if name in value and name in names):
        return None
    if kind in (Warned, Failed) and not _text(value.get("message")):
        return None
    try:
        return kind(**{name: value[name] for name in names if name in value})
    except TypeError:  # a field its type needs is missing
        return None


# -- writing and reading ---------------------------------------------------------------------------------------
class EventLog:
    def __init__(self, job_dir: Path) -> None:
        self.path = job_dir / layout.EVENTS

    def write(self, type: str, **fields: Any) -> None:
        """Append one event; one that no reader would take (a field of a wrong name or kind) is a bug of the
        writer, and fails here rather than be dropped by every reader."""
        event = {"type": type, "time": round(time.time(), 3)} | {k: _finite(v) for k, v in fields.items()}
        if parse(event) is None:
            raise ValueError(f"Not an event the readers take: {event}")
        line = json.dumps(event) + "\n"
        # One write() of the whole line with O_APPEND: a reader never sees two events interleaved.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            if type in TERMINAL or type == "checkpoint":
                os.fsync(fd)
        finally:
            os.close(fd)

    def progress_of(self, message: str, unit: str) -> Callable[[int, int], None]:
        """A reporter of work done of total, as "progress" events ("computing the validation loss", "rows"):
        the first, the last and at most one a second between them, since a GPU does dozens a second and the
        log is read over SSH."""
        said = [0.0]

        def report(done: int, total: int) -> None:
            if done in (1, total) or time.monotonic() - said[0] >= PROGRESS_EVERY_S:
                said[0] = time.monotonic()
                self.write("progress", message=message, unit=unit, done=done, total=total)

        return report


def read_events(path: Path, offset: int = 0) -> tuple[list[Event], int]:
    """The complete events after byte `offset`, and the offset to read from next time."""
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            data = file.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1  # a last line without its newline is still being written
    events = []
    for line in data[:end].splitlines():
        try:
            event = parse(json.loads(line))
        except ValueError:  # not JSON, not UTF-8, or a number of thousands of digits
            continue  # a line torn by a crash mid-write: the events after it still count
        if event is not None:
            events.append(event)
    return events, offset + end


def outcome(job_dir: Path) -> str | None:
    """The event that ended the job's last run (done, error or cancelled); None before its first start and
    while a run goes on."""
    lifecycle = [e.type for e in read_events(job_dir / layout.EVENTS)[0] if e.type in (*TERMINAL, "start")]
    return lifecycle[-1] if lifecycle and lifecycle[-1] in TERMINAL else None


def _finite(value: Any) -> Any:
    # JSON has no NaN: a diverged loss is reported as null rather than writing a line no reader can parse.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
