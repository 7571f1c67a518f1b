"""Runners start the engine on a job directory somewhere (this machine, or a remote host) and report
whether it is still alive; events.jsonl, read by core/jobs/jobs.py, says everything else.

Nothing is imported here: the supervisor (`python -m core.jobs.runners.local`) runs on remote hosts too, where
only the engine's packages are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Runner(Protocol):
    """Where a job runs: core/jobs/runners/local.py (Here) or core/jobs/runners/ssh.py (There)."""

    def ready(self, base: Path, dataset_dir: Path, *, demo: bool) -> None:
        """Check, before any job is made, that a job can run there; make what it needs once."""

    def start(self, job_dir: Path) -> None:
        """Start the job's engine; the runner's Work (given when it was made) hears the steps before it."""

    def cancel(self, job_dir: Path) -> None:
        """Ask the engine to stop: it saves a checkpoint and writes `cancelled`."""

    def is_alive(self, job_dir: Path) -> bool: ...

    def bring_home(self, job_dir: Path) -> None:
        """The job's new events and checkpoints into `job_dir`; once it has ended there, wipe it there."""
