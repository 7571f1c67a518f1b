"""events.jsonl: the engine's only channel to the app (docs/architecture.md, "Events"). One JSON object per line,
appended whole; a reader keeps its byte offset and tolerates a partial last line.

Standard library only: the app reads events without torch, on this machine or from a remote host.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from core.jobdir import layout

TERMINAL = ("done", "error", "cancelled")


class JobState(StrEnum):
    """A job's state, as the library keeps it: running from its start until one of the TERMINAL events."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ENDED_AS = {"done": JobState.DONE, "error": JobState.FAILED, "cancelled": JobState.CANCELLED}  # by TERMINAL event
PROGRESS_EVERY_S = 1.0


class EventLog:
    def __init__(self, job_dir: Path) -> None:
        self.path = job_dir / layout.EVENTS

    def write(self, type: str, **fields: Any) -> None:
        event = {"type": type, "time": round(time.time(), 3)} | {k: _finite(v) for k, v in fields.items()}
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


def read_events(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
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
            event = json.loads(line)
        except ValueError:  # not JSON, not UTF-8, or a number of thousands of digits
            continue  # a line torn by a crash mid-write: the events after it still count
        if well_formed(event):
            events.append(event)
    return events, offset + end


def outcome(job_dir: Path) -> str | None:
    """The event that ended the job's last run (done, error or cancelled); None before its first start and
    while a run goes on."""
    lifecycle = [e["type"] for e in read_events(job_dir / layout.EVENTS)[0] if e["type"] in (*TERMINAL, "start")]
    return lifecycle[-1] if lifecycle and lifecycle[-1] in TERMINAL else None


def well_formed(event: Any) -> bool:
    """Whether an event carries what its type needs, each field of the kind every reader takes for granted.
    Events come home from remote hosts: a line that breaks this (a step past SQLite's integers, a checkpoint
    path out of the job) is dropped like a torn one, not handed to a reader that would fail on it."""
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return False
    required = ("time", *REQUIRED.get(event["type"], ()))
    return all(name in event for name in required) and all(
        check(event[name]) for name, check in FIELDS.items() if name in event
    )


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**63


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _number_or_none(value: Any) -> bool:
    return value is None or _number(value)


def _text_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _checkpoint_path(value: Any) -> bool:
    parts = value.split("/") if isinstance(value, str) else []
    return len(parts) == 2 and parts[0] == layout.CHECKPOINTS and parts[1].startswith("step-")


FIELDS = {
    "time": _number,
    "step": _count,
    "steps_total": _count,
    "processes": _count,
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
}
REQUIRED = {
    "start": ("steps_total",),
    "progress": ("message", "done", "total"),
    "step": ("step", "loss", "tokens_per_s", "eta_s"),
    "eval": ("step", "val_loss"),
    "checkpoint": ("step", "path"),
    "score": ("step", "answer_score"),
    "error": ("message",),
    "warning": ("message",),
}


def _finite(value: Any) -> Any:
    # JSON has no NaN: a diverged loss is reported as null rather than writing a line no reader can parse.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
