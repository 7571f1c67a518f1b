"""Jobs: a job directory on disk (core/jobdir/layout.py) and its state in the library, kept up to date by reading the
engine's events.jsonl from where it was last read.

A job directory holds job.json (base model, settings), dataset/ (train.jsonl, val.jsonl, held_out.jsonl),
events.jsonl, engine.log, runner.json and checkpoints/. The engine never touches the library; `sync`
brings its events in.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.answers import evaluation
from core.dataset.build import Dataset, DatasetSettings, dataset, prepare_dataset
from core.db import now, row_id
from core.errors import KnownError
from core.jobdir import events, layout, provenance
from core.jobdir.base_folder import DEMO, DEMO_ONE_PROCESS
from core.jobdir.config import DEFAULT_PRESET, TrainConfig, load_config
from core.jobdir.events import ENDED_AS, JobState
from core.jobdir.job_spec import JobSpec, UpdateOf
from core.jobs import hosts
from core.jobs.estimate import Estimate
from core.jobs.hosts import LOCAL
from core.jobs.runners import Runner, local, ssh
from core.library.store import Library
from core.models.base_models import PACKAGED, base_settings, convert_packaged, resolve_base
from core.progress import QUIET, Work

log = logging.getLogger(__name__)

MAX_PROCESSES = 64  # of one job on one machine: GPU hosts have 8, a few 16


@dataclass(frozen=True)
class Job:
    id: int
    dir: Path
    state: JobState
    created: str
    base: str
    host: str
    dataset_id: int | None
    steps_total: int | None
    step: int
    message: str | None
    processes: int | None  # the processes its engine trains with (one per GPU); known once it starts


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path
    val_loss: float | None
    answer_score: float | None


def create_job(
    library: Library,
    *,
    base: str,
    base_path: Path,
    config: TrainConfig,
    dataset: Dataset,
    host: str = LOCAL,
    processes: int | None = None,
) -> Job:
    """A new job directory with its settings and a copy of the dataset, recorded in the library.

    `processes`: how many train it together (torch.distributed, one per GPU); None: one per GPU of the
    machine it runs on, one where it has none. Refused while another job runs on the same machine: two
    trainings would fight over its memory.
    """
    check_processes(config, processes, demo=base == DEMO)
    for other in jobs(library):
        if other.host == host and sync(library, other.id)[0].state == JobState.RUNNING:
            raise KnownError(
                f"Job {other.id} is still running on this machine; wait for it to end, or stop it.",
                cli=f"`tunedesk cancel {other.id}` stops it.",
                app="Cancel in the Training view stops it.",
            )
    with library.write() as db:
        row = {
            "dir": "",
            "state": JobState.RUNNING,
            "created": now(),
            "base": base,
            "host": host,
            "dataset_id": dataset.id,
        }
        job_id = int(db.table("jobs").insert(row).last_pk)  # type: ignore[arg-type]
        job_dir = library.data_dir / "jobs" / str(job_id)
        shutil.rmtree(job_dir, ignore_errors=True)
        try:
            shutil.copytree(dataset.dir, job_dir / layout.DATASET)
            JobSpec(str(base_path), config, base_name=base, processes=processes).write(job_dir)
            if config.stop_after_unimproved:
                _questions_for_the_engine(library, job_dir)
        except OSError as error:  # the row goes with the transaction; the folder must go too
            shutil.rmtree(job_dir, ignore_errors=True)
            raise KnownError(f"The job's folder {job_dir} could not be written: {_why(error)}.") from None
        db.execute("UPDATE jobs SET dir = ? WHERE id = ?", [library.stored_path(job_dir), job_id])
    return job(library, job_id)


def _questions_for_the_engine(library: Library, job_dir: Path) -> None:
    """The held-out questions with the prompts chat would send, for the engine to score each checkpoint as
    it saves it (stop_after_unimproved): the engine never reads the library."""
    questions = evaluation.held_out_questions(job_dir)
    if questions:
        evaluation.write_items(library, job_dir / evaluation.QUESTIONS, questions)


def check_processes(config: TrainConfig, processes: int | None, *, demo: bool) -> None:
    """Refuses, in one sentence, a number of processes the job cannot train with."""
    if processes is None or processes == 1:
        return
    if not 1 <= processes <= MAX_PROCESSES:
        raise KnownError(f"A job trains in 1 to {MAX_PROCESSES} processes, not {processes}.")
    if demo:
        raise KnownError(DEMO_ONE_PROCESS, cli="Give --gpus 1, or a real base with --base.")
    rows = config.grad_accum * config.batch_rows
    if rows < processes:
        # The global batch is the preset's whatever the processes: each takes a share of a step's rows.
        raise KnownError(
            f"{processes} processes need at least {processes} rows a step, and these settings train on {rows} "
            f"(grad_accum {config.grad_accum} x batch_rows {config.batch_rows}): raise grad_accum."
        )


def _why(error: OSError) -> str:
    # shutil.copytree gathers its failures into one shutil.Error whose text holds each one's.
    if error.errno == errno.ENOSPC or "No space left on device" in str(error):
        return "the disk is full"
    return error.strerror or str(error)


@dataclass(frozen=True)
class TrainingRequest:
    """A training as the user asks for it: the base model, the preset and their own settings over it, the
    dataset (None: the newest, or one made now with the default settings) and where it runs."""

    base: str
    preset: str = DEFAULT_PRESET
    overrides: dict[str, Any] = field(default_factory=dict)
    dataset_id: int | None = None
    host: str = LOCAL

    def config(self) -> TrainConfig:
        """The preset's settings, then the base model's own, then the user's."""
        return load_config(self.preset, base_settings(self.base) | self.overrides)


def start_training(
    library: Library,
    asked: TrainingRequest,
    *,
    processes: int | None = None,
    models_home: Path | None = None,
    work: Work = QUIET,
) -> tuple[Job, Dataset]:
    """A training started, here or on a remote host: what `train`, the Training view and the demo do.

    The settings are the preset's, then the base model's own, then the user's `overrides`. The base is
    found (or converted, once, for a packaged one) under `models_home`, by default the library's data dir.
    The dataset is the one named, else the newest, else one made now with the default settings. Where the
    job will run is readied before the job is made (this machine's engine environment, or a remote host
    checked: trusted, reachable, a Python, room for the job), so that a place that cannot run it costs no
    job and no upload. Here, the dataset is counted in the base's tokens first: a sequence length too short
    for its longest example is refused, and `work` hears the steps and memory the job will take."""
    base, host, config = asked.base, asked.host, asked.config()
    check_processes(config, processes, demo=base == DEMO)
    base_path, chosen, runner = _prepare(library, base, asked.dataset_id, host, models_home, work)
    if isinstance(runner, local.Here) and base != DEMO:  # the demo base is built by the job itself
        work.say("counting the dataset's tokens, to check that its examples fit the sequence length")
        work.say(_planned(runner.plan(base_path, chosen.dir, config, measure=False), config.seq_len).sentence())
    created = create_job(
        library, base=base, base_path=base_path, config=config, dataset=chosen, host=host, processes=processes
    )
    return _launch(library, created, work), chosen


def estimate_training(
    library: Library, asked: TrainingRequest, *, models_home: Path | None = None, work: Work = QUIET
) -> Estimate:
    """What start_training with the same arguments would cost on this computer, without starting it: its
    steps, its time at the rate of one of its steps timed here, and its memory, measured on that step."""
    if asked.host != LOCAL:
        raise KnownError(
            f"Estimates are made for this computer; a job on {asked.host} shows its time from its first step."
        )
    if asked.base == DEMO:
        raise KnownError("The demo base is built by its own job, so its time shows from the job's first step.")
    config = asked.config()
    base_path, chosen, runner = _prepare(library, asked.base, asked.dataset_id, LOCAL, models_home, work)
    assert isinstance(runner, local.Here)
    work.say("loading the base model to time one training step")
    return _planned(runner.plan(base_path, chosen.dir, config, measure=True), config.seq_len)


def _prepare(
    library: Library,
    base: str,
    dataset_id: int | None,
    host: str,
    models_home: Path | None,
    work: Work,
) -> tuple[Path, Dataset, Runner]:
    """The base's folder, the dataset and the place that will run the job, readied (start_training)."""
    home = models_home or library.data_dir
    base_path = resolve_base(base, home, work)
    if base in PACKAGED:
        convert_packaged(base, home, work)
    if dataset_id is None and not library.db.execute("SELECT count(*) FROM datasets").fetchone()[0]:
        work.say("no dataset yet: building one with the default settings")
        chosen, _ = prepare_dataset(library, work=work)
    else:
        chosen = dataset(library, dataset_id)
    runner = _runner(library, host, work)
    runner.ready(base_path, chosen.dir, demo=base == DEMO)
    return base_path, chosen, runner


def _planned(found: dict[str, Any], seq_len: int) -> Estimate:
    # The engine refuses the same example too, but only once the job has started and its model loaded.
    if found["longest"] > seq_len:
        raise KnownError(
            f"The dataset's longest example ({found['source']} line {found['line']}) is {found['longest']} tokens "
            f"long, more than the sequence length of {seq_len}: raise the sequence length to at least "
            f"{found['longest']}, or build the dataset with smaller chunks."
        )
    return Estimate.of(found)


LORA_SHAPE = ("lora_rank", "target_modules", "qlora")  # what an update must keep: its adapter's shape
DEFAULT_REPLAY = 0.2


@dataclass(frozen=True)
class Update:
    """What `train --update` trains on: the examples that changed since the job it updates, and a share of
    the unchanged ones replayed."""

    job: Job
    dataset: Dataset
    changed: int
    replayed: int
    unchanged: int


def start_update(
    library: Library,
    job_id: int | str,
    *,
    replay: float = DEFAULT_REPLAY,
    overrides: dict[str, Any] | None = None,
    processes: int | None = None,
    work: Work = QUIET,
) -> Update:
    """A job that goes on from another job's best checkpoint on what changed in the library since (an amended
    contract): a dataset made now with the old one's settings, of which it trains on the examples the old
    job never saw, with `replay` of the others so that what did not change is not forgotten. Its settings
    are the old job's (as many epochs, over the smaller set), with `overrides`; its checkpoints are scored
    like any other."""
    old = job(library, job_id)
    best = best_checkpoint(checkpoints(library, old.id))
    if best is None:
        raise KnownError(f"Job {old.id} has no checkpoint to update from.")
    if not 0 <= replay <= 1:
        raise KnownError(f"The share of unchanged examples trained on again must be between 0 and 1, not {replay}.")
    spec = JobSpec.read(old.dir)
    asked = overrides or {}
    if changed_shape := [key for key in LORA_SHAPE if key in asked and asked[key] != getattr(spec.config, key)]:
        raise KnownError(
            f"An update keeps the adapter of job {old.id}, so it cannot change {', '.join(changed_shape)}."
        )
    config = load_config(overrides=spec.config.to_dict() | {"max_steps": 0} | (overrides or {}))
    check_processes(config, processes, demo=old.base == DEMO)
    info = json.loads((old.dir / layout.DATASET / provenance.DATASET_INFO).read_text())
    if {d["sha256"] for d in info["documents"]} == {d.sha256 for d in library.documents()}:
        raise KnownError(f"Nothing in the library changed since job {old.id}: it holds the same documents.")
    fresh = _dataset_as_before(library, info["settings"], work)
    seen = {_content(record) for record in _records(old.dir / layout.DATASET / layout.TRAIN)}
    records = _records(fresh.dir / layout.TRAIN)
    new = [r for r in records if _content(r) not in seen]
    same = [r for r in records if _content(r) in seen]
    if not new:
        raise KnownError(f"Nothing in the library changed since job {old.id}: its examples are all the same.")
    kept = random.Random(config.seed).sample(same, round(len(same) * replay))
    _runner(library, old.host, work).ready(Path(spec.base), fresh.dir, demo=old.base == DEMO)
    created = create_job(
        library,
        base=old.base,
        base_path=Path(spec.base),
        config=config,
        dataset=fresh,
        host=old.host,
        processes=processes,
    )
    try:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new + kept)
        (created.dir / layout.DATASET / layout.TRAIN).write_text(lines)
        shutil.copytree(best.path, created.dir / layout.START_ADAPTER)
        update_of = UpdateOf(old.id, best.step)
        replace(JobSpec.read(created.dir), start_adapter=layout.START_ADAPTER, update_of=update_of).write(created.dir)
    except OSError as error:
        with library.write() as db:
            db.execute(
                "UPDATE jobs SET state = ?, message = ? WHERE id = ?", [JobState.FAILED, _why(error), created.id]
            )
        raise KnownError(f"The update's folder {created.dir} could not be written: {_why(error)}.") from None
    started = _launch(library, created, work)
    return Update(started, fresh, len(new), len(kept), len(same))


def start_rebuild(
    library: Library,
    job_id: int,
    *,
    work: Work = QUIET,
) -> tuple[Job, Dataset]:
    """The job trained again, from the start, on the library as it is now (a document withdrawn, or
    amended): a dataset with its dataset's settings, then a job with its base, settings and host."""
    old = job(library, job_id)
    spec = JobSpec.read(old.dir)
    settings = json.loads((old.dir / layout.DATASET / provenance.DATASET_INFO).read_text())["settings"]
    fresh = _dataset_as_before(library, settings, work)
    return start_training(
        library,
        TrainingRequest(old.base, overrides=spec.config.to_dict(), dataset_id=fresh.id, host=old.host),
        processes=spec.processes,
        work=work,
    )


def _dataset_as_before(library: Library, settings: dict[str, Any], work: Work) -> Dataset:
    """A dataset of the library as it is now, with the settings (dataset.json's) of an earlier one."""
    work.say("building a dataset of the library as it is now")
    made, _ = prepare_dataset(library, DatasetSettings(**settings | {"kinds": tuple(settings["kinds"])}), work=work)
    return made


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _content(record: dict[str, Any]) -> str:
    """An example as the model sees it, but for the document's name, which a new version may change: a
    grounded example names it in every passage's label."""
    seen = json.dumps({k: v for k, v in record.items() if k not in ("document", "pages")}, sort_keys=True)
    name = json.dumps(record.get("document") or "")[1:-1]
    return seen.replace(f"[{name} p", "[\0 p") if name else seen  # "[name p. 3]", "[name pp. 3-4]"


def start_job(
    library: Library,
    job_id: int,
    work: Work = QUIET,
    processes: int | None = None,
) -> Job:
    """Start (or, after a failure or a cancel, resume from its last checkpoint) the job's engine, on this
    machine or on its remote host; `processes` changes how many train it (a checkpoint resumes with any)."""
    current, _ = sync(library, job_id)
    if current.state == JobState.RUNNING and _runner(library, current.host).is_alive(current.dir):
        raise KnownError(f"Job {job_id} is already running.")
    if current.state == JobState.DONE:
        raise KnownError(f"Job {job_id} has finished; there is nothing to resume.")
    if processes is not None:
        spec = JobSpec.read(current.dir)
        check_processes(spec.config, processes, demo=current.base == DEMO)
        replace(spec, processes=processes).write(current.dir)
    return _launch(library, current, work)


def _launch(
    library: Library,
    current: Job,
    work: Work,
) -> Job:
    """The job's engine started, here or there. A job just made goes straight here: a sync before its
    engine exists would find no engine and call the job dead."""
    job_id = current.id
    try:
        _runner(library, current.host, work).start(current.dir)
    except KnownError as error:
        with library.write() as db:
            db.execute("UPDATE jobs SET state = ?, message = ? WHERE id = ?", [JobState.FAILED, str(error), job_id])
        raise
    with library.write() as db:
        db.execute("UPDATE jobs SET state = ?, message = NULL WHERE id = ?", [JobState.RUNNING, job_id])
    return job(library, job_id)


def cancel_job(library: Library, job_id: int) -> Job:
    current, _ = sync(library, job_id)
    if current.state != JobState.RUNNING:
        raise KnownError(f"Job {job_id} is not running (it is {current.state}).")
    _runner(library, current.host).cancel(current.dir)
    return current


def sync(library: Library, job_id: int) -> tuple[Job, list[events.Event]]:
    """Bring the job's new events into the library; returns the job and those events.

    A job whose engine is gone without a final event is marked failed: it will never finish.
    """
    current = job(library, job_id)
    lost = None
    try:
        runner = _runner(library, current.host)
        runner.bring_home(current.dir)
        alive = current.state != JobState.RUNNING or runner.is_alive(current.dir)
    except KnownError as error:  # the host is out of reach: the job goes on there; look again later
        lost = f"{error} The job goes on there; Tunedesk reconnects when it can."
        alive = True
    new, offset = events.read_events(current.dir / layout.EVENTS, _offset(library, job_id))
    if not alive:  # the engine may have written its last words after the read above
        more, offset = events.read_events(current.dir / layout.EVENTS, offset)
        new += more
    state = _state_after(current.state, new)
    with library.write() as db:
        for event in new:
            _apply(db, job_id, event)
        db.execute("UPDATE jobs SET events_offset = ? WHERE id = ?", [offset, job_id])
        if state == JobState.RUNNING and not alive:
            db.execute(
                "UPDATE jobs SET state = ?, message = ? WHERE id = ?",
                [JobState.FAILED, "The engine stopped without a word (its supervisor was killed).", job_id],
            )
        elif state == JobState.RUNNING and current.state == JobState.RUNNING:
            db.execute("UPDATE jobs SET message = ? WHERE id = ?", [lost, job_id])
    synced = job(library, job_id)
    if current.state == JobState.RUNNING and synced.state != JobState.RUNNING:
        # For the app's log (tunedesk.log); at INFO, so that a command, which says it itself, prints nothing.
        details = synced.dir / layout.ENGINE_LOG
        message = synced.message or "no message"
        log.info("Job %d %s at step %d: %s (the engine's log: %s)", job_id, synced.state, synced.step, message, details)
    return synced, new


def _runner(
    library: Library,
    host: str,
    work: Work = QUIET,
) -> Runner:
    if host == LOCAL:
        return local.Here(library.data_dir, work)
    return ssh.There(hosts.host(library, host), library.data_dir, work)


def _state_after(state: JobState, new: list[events.Event]) -> JobState:
    """The state _apply leaves the job in: the last start or end among the new events decides."""
    for event in new:
        if isinstance(event, events.Start):
            state = JobState.RUNNING
        elif event.type in ENDED_AS:
            state = ENDED_AS[event.type]
    return state


def _apply(db: Any, job_id: int, event: events.Event) -> None:
    if isinstance(event, events.Start):
        db.execute(
            "UPDATE jobs SET steps_total = ?, processes = ?, state = ? WHERE id = ?",
            [event.steps_total, event.processes, JobState.RUNNING, job_id],
        )
    elif isinstance(event, events.Step):
        db.execute("UPDATE jobs SET step = ? WHERE id = ?", [event.step, job_id])
        db.table("losses").upsert(
            {"job_id": job_id, "step": event.step, "train_loss": event.loss}, pk=("job_id", "step")
        )
    elif isinstance(event, events.Eval):
        db.table("losses").upsert(
            {"job_id": job_id, "step": event.step, "val_loss": event.val_loss}, pk=("job_id", "step")
        )
    elif isinstance(event, events.Checkpoint):
        row = {"job_id": job_id, "step": event.step, "path": event.path, "val_loss": event.val_loss}
        db.table("checkpoints").upsert(row, pk=("job_id", "step"))
    elif isinstance(event, events.Score):
        db.execute(
            "UPDATE checkpoints SET answer_score = ? WHERE job_id = ? AND step = ?",
            [event.answer_score, job_id, event.step],
        )
    elif isinstance(event, events.Done | events.Failed | events.Stopped):
        ended = [ENDED_AS[event.type], getattr(event, "message", None), job_id]
        db.execute("UPDATE jobs SET state = ?, message = ? WHERE id = ?", ended)
    elif isinstance(event, events.Warned):
        db.execute("UPDATE jobs SET message = ? WHERE id = ?", [event.message, job_id])


def jobs(library: Library) -> list[Job]:
    return [_job(library, row) for row in library.db.query("SELECT * FROM jobs ORDER BY id")]


def job(library: Library, job_id: int | str) -> Job:
    rows = list(library.db.query("SELECT * FROM jobs WHERE id = ?", [_as_int(job_id)]))
    if not rows:
        raise KnownError(f"No job {job_id}.", cli="`tunedesk jobs` lists them.")
    return _job(library, rows[0])


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
    for event in events.read_events(current.dir / layout.EVENTS)[0]:
        if isinstance(event, events.Start):
            began = event.time
        elif event.type in ENDED_AS and began is not None:
            hours, began = hours + (event.time - began) / 3600, None
    if began is not None and current.state == JobState.RUNNING:
        hours += (time.time() - began) / 3600
    price = next((h.price_per_hour for h in hosts.hosts(library) if h.name == current.host), None)
    return hours, None if price is None else hours * price


def losses(library: Library, job_id: int) -> list[dict[str, Any]]:
    return list(
        library.db.query("SELECT step, train_loss, val_loss FROM losses WHERE job_id = ? ORDER BY step", [job_id])
    )


def _offset(library: Library, job_id: int) -> int:
    return library.db.execute("SELECT events_offset FROM jobs WHERE id = ?", [job_id]).fetchone()[0]


def _job(library: Library, row: dict[str, Any]) -> Job:
    fields = {k: v for k, v in row.items() if k != "events_offset"}
    return Job(**(fields | {"dir": library.full_path(row["dir"]), "state": JobState(row["state"])}))


def _as_int(value: int | str) -> int:
    number = row_id(value)
    if number is None:
        raise KnownError(f"{value!r} is not a job id .", cli="`tunedesk jobs` lists them.")
    return number
