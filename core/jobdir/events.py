"""events.jsonl: the engine's only channel to the app (docs/architecture.md, "Events"). One JSON object per line,
appended whole; a reader keeps its byte offset and tolerates a partial last line.

Standard library only: the app reads events without torch, on this machine or from a remote host.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from core.jobdir import layout

TERMINAL = ("done", "error", "cancelled")


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
        except json.JSONDecodeError:
            continue  # a line torn by a crash mid-write: the events after it still count
        if isinstance(event, dict) and "type" in event:
            events.append(event)
    return events, offset + end


def _finite(value: Any) -> Any:
    # JSON has no NaN: a diverged loss is reported as null rather than writing a line no reader can parse.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
