"""Jobs: a job directory on disk (DESIGN.md) and its state in the library, kept up to date by reading the
engine's events.jsonl from where it was last read.

A job directory holds job.json (base model, settings), dataset/ (train.jsonl, val.jsonl, held_out.jsonl),
events.jsonl, engine.log, runner.json and checkpoints/. The engine never touches the library; `sync`
brings its events in.
"""

from __future__ import annotations

import datetime
import errno
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import hosts
from core.datasets import Dataset
from core.engine.config import TrainConfig
from core.engine.events import FILE as EVENTS_FILE
from core.engine.events import EventLog, read_events
from core.errors import KnownError
from core.hosts import LOCAL
from core.library import Library
from core.models import DEMO, PACKAGED, convert_packaged
from core.runners import engine_env, local, ssh

RUNNING = "running"
ENDED = {"done": "done", "error": "failed", "cancelled": "cancelled"}


@dataclass(frozen=True)
class Job:
    id: int
    dir: Path
    state: str  # running, done, failed or cancelled
    created: str
    base: str
    host: str
    dataset_id: int | None
    steps_total: int | None
    step: int
    message: str | None


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path
    val_loss: float | None
    answer_score: float | None


def create_job(
    library: Library, *, base: str, base_path: Path, config: TrainConfig, dataset: Dataset, host: str = LOCAL
) -> Job:
    """A new job directory with its settings and a copy of the dataset, recorded in the library.

    Refused while another job runs on the same machine: two trainings would fight over its memory.
    """
    for other in jobs(library):
        if other.host == host and sync(library, other.id)[0].state == RUNNING:
            raise KnownError(
                f"Job {other.id} is still running on this machine; wait for it to end, or stop it with "
                f"`tunedesk cancel {other.id}`."
            )
    with library.write() as db:
        row = {"dir": "", "state": RUNNING, "created": _now(), "base": base, "host": host, "dataset_id": dataset.id}
        job_id = int(db.table("jobs").insert(row).last_pk)  # type: ignore[arg-type]
        job_dir = library.data_dir / "jobs" / str(job_id)
        shutil.rmtree(job_dir, ignore_errors=True)
        spec = {"base": str(base_path), "base_name": base, "config": config.to_dict()}
        try:
            shutil.copytree(dataset.dir, job_dir / "dataset")
            (job_dir / "job.json").write_text(json.dumps(spec, indent=2))
        except OSError as error:  # the row goes with the transaction; the folder must go too
            shutil.rmtree(job_dir, ignore_errors=True)
            raise KnownError(f"The job's folder {job_dir} could not be written: {_why(error)}.") from None
        db.execute("UPDATE jobs SET dir = ? WHERE id = ?", [str(job_dir), job_id])
    return job(library, job_id)


def _why(error: OSError) -> str:
    # shutil.copytree gathers its failures into one shutil.Error whose text holds each one's.
    if error.errno == errno.ENOSPC or "No space left on device" in str(error):
        return "the disk is full"
    return error.strerror or str(error)


def launch(
    library: Library,
    *,
    base: str,
    base_path: Path,
    config: TrainConfig,
    dataset: Dataset,
    host: str = LOCAL,
    on_progress: Callable[[str], None] = lambda message: None,
    on_setup: engine_env.ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Job:
    """Create a job and start it, here or on a remote host. Where it will run is readied first (this
    machine's engine environment made, or a remote host checked: trusted, reachable, a Python, room for the
    job), so that a place that cannot run it costs no job and no upload. A packaged base is converted here
    first, once, for either place."""
    if base in PACKAGED:
        convert_packaged(base, library.data_dir, on_progress=on_setup, cancel=cancel)
    if host == LOCAL:
        engine_env.local(library.data_dir, on_setup, cancel)
    else:
        need = ssh.need_bytes(base_path, dataset.dir, demo=base == DEMO)
        ssh.preflight(ssh.Remote.to(hosts.host(library, host), library.data_dir), need)
    created = create_job(library, base=base, base_path=base_path, config=config, dataset=dataset, host=host)
    return start_job(library, created.id, on_progress)


def start_job(
    library: Library,
    job_id: int,
    on_progress: Callable[[str], None] = lambda message: None,
    on_setup: engine_env.ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Job:
    """Start (or, after a failure or a cancel, resume from its last checkpoint) the job's engine, on this
    machine or on its remote host."""
    current, _ = sync(library, job_id)
    if current.state == RUNNING and _alive(library, current):
        raise KnownError(f"Job {job_id} is already running.")
    if current.state == "done":
        raise KnownError(f"Job {job_id} has finished; there is nothing to resume.")
    if current.host == LOCAL:
        local.start(current.dir, engine_env.local(library.data_dir, on_setup, cancel))
    else:
        try:
            ssh.start(_remote(library, current), current.dir, on_progress)
        except KnownError as error:
            with library.write() as db:
                db.execute("UPDATE jobs SET state = 'failed', message = ? WHERE id = ?", [str(error), job_id])
            raise
    with library.write() as db:
        db.execute("UPDATE jobs SET state = ?, message = NULL WHERE id = ?", [RUNNING, job_id])
    return job(library, job_id)


def cancel_job(library: Library, job_id: int) -> Job:
    current, _ = sync(library, job_id)
    if current.state != RUNNING:
        raise KnownError(f"Job {job_id} is not running (it is {current.state}).")
    if current.host == LOCAL:
        local.cancel(current.dir)
    else:
        ssh.cancel(_remote(library, current), current.dir)
    return current


def sync(library: Library, job_id: int) -> tuple[Job, list[dict[str, Any]]]:
    """Bring the job's new events into the library; returns the job and those events.

    A job whose engine is gone without a final event is marked failed: it will never finish.
    """
    current = job(library, job_id)
    lost = None
    try:
        if current.host != LOCAL and (current.dir / ssh.REMOTE_FILE).exists() and not ssh.wiped(current.dir):
            _remote_sync(library, current)
        alive = current.state != RUNNING or _alive(library, current)
    except KnownError as error:  # the host is out of reach: the job goes on there; look again later
        lost = f"{error} The job goes on there; Tunedesk reconnects when it can."
        alive = True
    events, offset = read_events(current.dir / EVENTS_FILE, _offset(library, job_id))
    if not alive:  # the engine may have written its last words after the read above
        more, offset = read_events(current.dir / EVENTS_FILE, offset)
        events += more
    with library.write() as db:
        for event in events:
            _apply(db, job_id, event)
        db.execute("UPDATE jobs SET events_offset = ? WHERE id = ?", [offset, job_id])
        if current.state == RUNNING and job(library, job_id).state == RUNNING:
            db.execute("UPDATE jobs SET message = ? WHERE id = ?", [lost, job_id])
        if not alive and job(library, job_id).state == RUNNING:
            db.execute(
                "UPDATE jobs SET state = 'failed', message = ? WHERE id = ?",
                ["The engine stopped without a word (its supervisor was killed).", job_id],
            )
    return job(library, job_id), events


def _alive(library: Library, current: Job) -> bool:
    if current.host == LOCAL:
        return local.is_alive(current.dir)
    if not (current.dir / ssh.REMOTE_FILE).exists():
        return False
    return not ssh.ended(current.dir) and ssh.is_alive(_remote(library, current), current.dir)


def _remote_sync(library: Library, current: Job) -> None:
    """Bring a remote job's events and checkpoints home; once it has ended there, wipe it there."""
    remote = _remote(library, current)
    if ssh.pull(remote, current.dir) or not ssh.is_alive(remote, current.dir):
        ssh.pull(remote, current.dir)  # what it wrote last
        left = ssh.wipe(remote, current.dir)
        if left:
            EventLog(current.dir).write("warning", message=f"Not everything was deleted on the host: {left}.")
        else:
            EventLog(current.dir).write("wiped", host=current.host)


def _remote(library: Library, current: Job) -> ssh.Remote:
    return ssh.Remote.to(hosts.host(library, current.host), library.data_dir)


def _apply(db: Any, job_id: int, event: dict[str, Any]) -> None:
    kind = event["type"]
    if kind == "start":
        db.execute("UPDATE jobs SET steps_total = ?, state = ? WHERE id = ?", [event["steps_total"], RUNNING, job_id])
    elif kind == "step":
        db.execute("UPDATE jobs SET step = ? WHERE id = ?", [event["step"], job_id])
        db.table("losses").upsert(
            {"job_id": job_id, "step": event["step"], "train_loss": event["loss"]}, pk=("job_id", "step")
        )
    elif kind == "eval":
        db.table("losses").upsert(
            {"job_id": job_id, "step": event["step"], "val_loss": event["val_loss"]}, pk=("job_id", "step")
        )
    elif kind == "checkpoint":
        row = {"job_id": job_id, "step": event["step"], "path": event["path"], "val_loss": event.get("val_loss")}
        db.table("checkpoints").upsert(row, pk=("job_id", "step"))
    elif kind == "score":
        db.execute(
            "UPDATE checkpoints SET answer_score = ? WHERE job_id = ? AND step = ?",
            [event["answer_score"], job_id, event["step"]],
        )
    elif kind in ENDED:
        db.execute("UPDATE jobs SET state = ?, message = ? WHERE id = ?", [ENDED[kind], event.get("message"), job_id])
    elif kind == "warning":
        db.execute("UPDATE jobs SET message = ? WHERE id = ?", [event["message"], job_id])


def jobs(library: Library) -> list[Job]:
    return [_job(row) for row in library.db.query("SELECT * FROM jobs ORDER BY id")]


def job(library: Library, job_id: int | str) -> Job:
    rows = list(library.db.query("SELECT * FROM jobs WHERE id = ?", [_as_int(job_id)]))
    if not rows:
        raise KnownError(f"No job {job_id} (see `tunedesk jobs`).")
    return _job(rows[0])


def checkpoints(library: Library, job_id: int) -> list[Checkpoint]:
    current = job(library, job_id)
    rows = library.db.query("SELECT * FROM checkpoints WHERE job_id = ? ORDER BY step", [job_id])
    return [Checkpoint(r["step"], current.dir / r["path"], r["val_loss"], r["answer_score"]) for r in rows]


def best_checkpoint(saved: list[Checkpoint]) -> Checkpoint | None:
    """The best by answer score where checkpoints were scored (ties: the lower validation loss), else by
    validation loss, else the last."""

    def val_loss(c: Checkpoint) -> float:
        return math.inf if c.val_loss is None else c.val_loss

    scored = [c for c in saved if c.answer_score is not None]
    if scored:
        return min(scored, key=lambda c: (-(c.answer_score or 0.0), val_loss(c), -c.step))
    rated = [c for c in saved if c.val_loss is not None]
    if rated:
        return min(rated, key=lambda c: (val_loss(c), -c.step))
    return saved[-1] if saved else None


def usage(library: Library, current: Job) -> tuple[float, float | None]:
    """Hours the job's engine has run (over all its runs) and, on a host with an hourly price, their cost
    in USD. Counted from each run's start to its end: the renting of a machine before and after is not."""
    hours, began = 0.0, None
    for event in read_events(current.dir / EVENTS_FILE)[0]:
        if event["type"] == "start":
            began = event["time"]
        elif event["type"] in ENDED and began is not None:
            hours, began = hours + (event["time"] - began) / 3600, None
    if began is not None and current.state == RUNNING:
        hours += (time.time() - began) / 3600
    price = None
    if current.host != LOCAL:
        price = next((h.price_per_hour for h in hosts.hosts(library) if h.name == current.host), None)
    return hours, None if price is None else hours * price


def losses(library: Library, job_id: int) -> list[dict[str, Any]]:
    return list(
        library.db.query("SELECT step, train_loss, val_loss FROM losses WHERE job_id = ? ORDER BY step", [job_id])
    )


def _offset(library: Library, job_id: int) -> int:
    return library.db.execute("SELECT events_offset FROM jobs WHERE id = ?", [job_id]).fetchone()[0]


def _job(row: dict[str, Any]) -> Job:
    fields = {k: v for k, v in row.items() if k != "events_offset"}
    return Job(**(fields | {"dir": Path(row["dir"])}))


def _as_int(value: int | str) -> int:
    try:
        return int(value)
    except ValueError:
        raise KnownError(f"{value!r} is not a job id (see `tunedesk jobs`).") from None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
