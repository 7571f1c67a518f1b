"""job.json, the app's word to the engine: the base model, the settings and what else a job starts from. Written
by the app (core/jobs/jobs.py) and read by the runners and the engine, here or on a remote host, only through
JobSpec, so that a key renamed on one side fails on this machine, in one sentence naming the file, not on a
remote GPU after the upload. Standard library only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import KnownError
from core.jobdir import layout
from core.jobdir.base_folder import DEMO
from core.jobdir.config import ConfigError, TrainConfig, config_from


@dataclass(frozen=True)
class UpdateOf:
    """The job and checkpoint an update goes on from (`train --update`)."""

    job: int
    step: int


@dataclass(frozen=True)
class JobSpec:
    base: str  # the base model's folder, on the machine that runs the job
    config: TrainConfig
    base_name: str | None = None  # what the user named: smollm2, demo, a hub id, a folder
    processes: int | None = None  # as asked; None: one per GPU of the machine (core/jobs/runners/local.py)
    start_adapter: str | None = None  # an update's first weights, in the job directory (layout.START_ADAPTER)
    update_of: UpdateOf | None = None

    @property
    def label(self) -> str:
        """The base as the user named it, for names and provenance."""
        return self.base_name or self.base

    @property
    def demo(self) -> bool:
        return self.base_name == DEMO

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, job_dir: Path) -> None:
        (job_dir / layout.JOB).write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")

    @classmethod
    def read(cls, job_dir: Path) -> JobSpec:
        """The job's spec; KnownError naming the file where it is not what the app wrote (damaged, edited by
        hand, or written by another version)."""
        path = job_dir / layout.JOB
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise KnownError(f"The job's settings {path} cannot be read: {error.strerror}.") from None
        except ValueError:
            raise KnownError(f"The job's settings {path} are damaged: they are not JSON.") from None
        return cls.of(values, path)

    @classmethod
    def of(cls, values: Any, path: Path) -> JobSpec:
        shapes = {
            "base": str,
            "config": dict,
            "base_name": str | None,
            "processes": int | None,
            "start_adapter": str | None,
            "update_of": dict | None,
        }
        required = ("base", "config")
        wrong = [
            key
            for key, shape in shapes.items()
            if not isinstance(values, dict)
            or (key in required and key not in values)
            or not isinstance(values.get(key), shape)
        ]
        if wrong:
            raise KnownError(f"The job's settings {path} are damaged: {', '.join(wrong)} missing or of the wrong kind.")
        if unknown := sorted(set(values) - set(shapes)):
            raise KnownError(f"The job's settings {path} hold what Tunedesk does not write: {', '.join(unknown)}.")
        try:
            config = config_from(values["config"])
            update_of = UpdateOf(**values["update_of"]) if values.get("update_of") else None
        except (ConfigError, TypeError) as error:
            raise KnownError(f"The job's settings {path} are damaged: {error}") from None
        return cls(**(values | {"config": config, "update_of": update_of}))
