"""The training commands of the CLI: dataset build, train, jobs, job, cancel, resume (docs/architecture.md,
"The command line"). A thin layer over core.dataset.build and core.jobs.jobs, as the GUI is."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from core.cli.common import PRINTED, open_library, row_id_argument, with_bar
from core.errors import KnownError
from core.jobdir import events
from core.jobdir.config import PRESET_NAMES, preset_description
from core.jobdir.events import JobState
from core.jobs import jobs as jobs_
from core.library.store import Library

FOLLOW_INTERVAL_S = 0.5
PROGRESS_LINE_EVERY = 100  # of the engine's preparation steps (the demo model's build reports every 10)
GPUS_HELP = "processes that train together, one per GPU (default: every GPU of the machine; on a CPU, 1)"


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    dataset = commands.add_parser("dataset", help="build a training dataset from the library")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", metavar="COMMAND", required=True)
    build = dataset_commands.add_parser("build", parents=[common], help="chunks and Q&A pairs -> train/val files")
    build.add_argument("--val-share", type=float, default=0.1, help="share of pages held out (%(default)s)")
    build.add_argument("--kinds", default="grounded", help="example kinds: raw, qa, grounded (%(default)s)")
    build.add_argument(
        "--qa",
        default="extractive",
        metavar="SOURCE",
        help="Q&A pairs from: extractive (no model), a GGUF model file, or a JSONL/CSV file to import",
    )
    build.add_argument("--seed", type=int, default=0)
    build.set_defaults(run=_dataset_build)

    train = commands.add_parser("train", parents=[common], help="fine-tune a model on a dataset")
    train.add_argument(
        "--base",
        default="smollm2",
        help="smollm2 (a real 135M instruct model, offline), a model folder, a hub id (org/name) or demo (a toy "
        "model built here) (%(default)s)",
    )
    train.add_argument(
        "--dataset", type=row_id_argument, default=None, help="dataset id (default: the newest; built if none)"
    )
    presets = "; ".join(f"{name}: {preset_description(name).rstrip('.')}" for name in PRESET_NAMES)
    train.add_argument("--preset", default="quick", help=f"{presets} (default: %(default)s)")
    train.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    train.add_argument("--epochs", type=float, default=None, help="passes over the training examples")
    train.add_argument("--qlora", action="store_true", help="4-bit base weights (QLoRA; needs CUDA)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any setting of the preset")
    train.add_argument("--host", default=None, help="a remote host (see `tunedesk hosts`; default: this machine)")
    train.add_argument("--gpus", type=int, default=None, help=GPUS_HELP)
    train.add_argument(
        "--update",
        type=row_id_argument,
        default=None,
        metavar="JOB",
        help="go on from that job's best checkpoint on what changed in the library since (its base and settings)",
    )
    train.add_argument(
        "--replay",
        type=float,
        default=jobs_.DEFAULT_REPLAY,
        help="with --update: the share of unchanged examples trained on again (%(default)s)",
    )
    train.add_argument("--detach", action="store_true", help="print the job id and return; the job goes on")
    train.add_argument(
        "--estimate",
        action="store_true",
        help="say the steps, time (one step timed here) and memory the job would take, and start nothing",
    )
    train.set_defaults(run=_train)

    listing = commands.add_parser("jobs", parents=[common], help="list training jobs")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_jobs)

    show = commands.add_parser("job", parents=[common], help="a job's state and checkpoints; follows a running job")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=_job)

    cancel = commands.add_parser("cancel", parents=[common], help="stop a job (it saves a checkpoint first)")
    cancel.add_argument("id", metavar="ID")
    cancel.set_defaults(run=_cancel)

    resume = commands.add_parser("resume", parents=[common], help="continue a stopped job from its last checkpoint")
    resume.add_argument("id", metavar="ID")
    resume.add_argument("--detach", action="store_true")
    resume.add_argument("--gpus", type=int, default=None, help="processes to go on with (default: as before)")
    resume.set_defaults(run=_resume)


def _dataset_build(args: argparse.Namespace) -> int:
    from core.dataset.build import DatasetSettings, prepare_dataset

    settings = DatasetSettings(
        val_share=args.val_share,
        kinds=tuple(kind.strip() for kind in args.kinds.split(",") if kind.strip()),
        seed=args.seed,
    )
    with open_library(args) as library:
        built, made = with_bar("Q&A pairs", lambda work: prepare_dataset(library, settings, pairs=args.qa, work=work))
    print(made)
    print(
        f"dataset {built.id}: {built.train_examples} training and {built.val_examples} validation examples, "
        f"{built.held_out} questions held out for scoring ({built.dir})"
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from core.jobdir.config import parse_override

    overrides = dict(parse_override(text) for text in args.set)
    for key, value in (("max_steps", args.max_steps), ("epochs", args.epochs)):
        if value is not None:
            overrides[key] = value
    if args.qlora:
        overrides |= {"qlora": True, "gradient_checkpointing": True}
    if args.update is not None:
        return _update(args, overrides)
    with open_library(args) as library:
        host = args.host or jobs_.LOCAL
        asked = jobs_.TrainingRequest(args.base, args.preset, overrides, args.dataset, host)
        if args.estimate:
            estimate = jobs_.estimate_training(library, asked, work=PRINTED)
            print(f"{args.base}, preset {args.preset}: {estimate.sentence()}")
            return 0
        job, chosen = jobs_.start_training(library, asked, processes=args.gpus, work=PRINTED)
        where = "" if host == jobs_.LOCAL else f" on {host}"
        print(f"job {job.id}: training {args.base}{where} on dataset {chosen.id} ({chosen.train_examples} examples)")
        if args.detach:
            return 0
        return follow(library, job.id)


def _update(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    with open_library(args) as library:
        update = jobs_.start_update(
            library,
            args.update,
            replay=args.replay,
            overrides=overrides,
            processes=args.gpus,
            work=PRINTED,
        )
        print(
            f"job {update.job.id}: updating job {args.update} on dataset {update.dataset.id}: {update.changed} "
            f"changed examples, and {update.replayed} of the {update.unchanged} unchanged ones again"
        )
        return 0 if args.detach else follow(library, update.job.id)


def follow(library: Library, job_id: int) -> int:
    """A live progress bar until the job ends; Ctrl-C leaves the job running."""
    from tqdm import tqdm

    bar = tqdm(unit="step", disable=None, dynamic_ncols=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} {postfix}")
    shown: dict[str, Any] = {}
    try:
        while True:
            job, new = jobs_.sync(library, job_id)
            for event in new:
                shown.pop("now", None)  # what the engine was doing is done once it says anything else
                if isinstance(event, events.Progress) and event.unit:  # the validation, the held-out answers
                    shown["now"] = f"{event.message} {event.done}/{event.total}"
                elif isinstance(event, events.Progress):
                    if event.done % PROGRESS_LINE_EVERY == 0 or event.done == event.total:
                        bar.write(f"  {event.message}")
                elif isinstance(event, events.Start):
                    if event.processes > 1:
                        shared = ", sharing the weights" if event.shard_weights else ""
                        bar.write(f"  training in {event.processes} processes ({event.device}{shared})")
                    bar.reset(total=event.steps_total)
                    bar.set_description(f"job {job_id}")
                elif isinstance(event, events.Step):
                    shown |= {
                        "loss": _figure(event.loss, ".3f"),
                        "tok/s": _figure(event.tokens_per_s, ".0f"),
                        "eta": _duration(event.eta_s) if event.eta_s is not None else "?",
                    }
                elif isinstance(event, events.Eval):
                    shown["val"] = _figure(event.val_loss, ".3f")
                elif isinstance(event, events.Checkpoint):
                    bar.write(f"  checkpoint at step {event.step}")
            bar.n = job.step
            bar.set_postfix(shown, refresh=True)
            if job.state != JobState.RUNNING:
                break
            time.sleep(FOLLOW_INTERVAL_S)
    except KeyboardInterrupt:
        bar.close()
        print(f"\nJob {job_id} goes on; `tunedesk job {job_id}` follows it, `tunedesk cancel {job_id}` stops it.")
        return 0
    bar.close()
    _print_job(library, job)
    return 0 if job.state == JobState.DONE else 1


def _figure(value: float | None, form: str) -> str:
    return "?" if value is None else format(value, form)  # None: a diverged loss


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


def _print_job(library: Library, job: jobs_.Job) -> None:
    saved = jobs_.checkpoints(library, job.id)
    best = jobs_.best_checkpoint(saved)
    status = {
        JobState.DONE: "finished",
        JobState.CANCELLED: "was cancelled",
        JobState.FAILED: "failed",
        JobState.RUNNING: "is running",
    }[job.state]
    print(f"Job {job.id} {status} at step {job.step} of {job.steps_total or '?'}.")
    if job.message:
        print(f"  {job.message}")
    if job.host != jobs_.LOCAL:
        hours, cost = jobs_.usage(library, job)
        gpus = f" in {job.processes} processes" if job.processes and job.processes > 1 else ""
        print(f"  ran {hours:.2f} h on {job.host}{gpus}" + (f", {cost:.2f} USD" if cost is not None else ""))
    for c in saved:
        val = f"val loss {c.val_loss:.3f}" if c.val_loss is not None else "no val loss"
        mark = "  <- best" if best and c.step == best.step else ""
        print(f"  step {c.step:>6}  {val}  {c.path}{mark}")
    if job.state in (JobState.FAILED, JobState.CANCELLED):
        print(f"  `tunedesk resume {job.id}` continues from the last checkpoint.")


def _job_json(library: Library, job: jobs_.Job) -> dict[str, Any]:
    from core.models.gguf_models import models

    saved = jobs_.checkpoints(library, job.id)
    best = jobs_.best_checkpoint(saved)
    hours, cost = jobs_.usage(library, job)
    return {
        "id": job.id,
        "state": job.state,
        "created": job.created,
        "base": job.base,
        "host": job.host,
        "processes": job.processes,
        "hours": round(hours, 4),
        "cost_usd": None if cost is None else round(cost, 4),
        "step": job.step,
        "steps_total": job.steps_total,
        "message": job.message,
        "checkpoints": [
            {"step": c.step, "val_loss": c.val_loss, "answer_score": c.answer_score, "path": str(c.path)} for c in saved
        ],
        "best_step": best.step if best else None,
        "gguf": [
            {"path": str(m.path), "quant": m.quant, "bytes": m.bytes, "sha256": m.sha256, "step": m.step}
            for m in models(library, job_id=job.id)
        ],
        "losses": jobs_.losses(library, job.id),
    }


def _jobs(args: argparse.Namespace) -> int:
    with open_library(args) as library:
        listed = [jobs_.sync(library, j.id)[0] if j.state == JobState.RUNNING else j for j in jobs_.jobs(library)]
    if args.json:
        keys = ("id", "state", "created", "base", "step", "steps_total")
        print(json.dumps({"jobs": [{k: getattr(j, k) for k in keys} for j in listed]}, indent=2))
        return 0
    if not listed:
        print("No jobs yet; start one with `tunedesk train`.")
    for j in listed:
        print(f"{j.id:>4}  {j.state:<9}  step {j.step}/{j.steps_total or '?'}  {j.base}  {j.created}")
    return 0


def _job(args: argparse.Namespace) -> int:
    with open_library(args) as library:
        job, _ = jobs_.sync(library, jobs_.job(library, args.id).id)
        if args.json:
            print(json.dumps(_job_json(library, job), indent=2))
            return 0
        if job.state == JobState.RUNNING:
            return follow(library, job.id)
        _print_job(library, job)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    with open_library(args) as library:
        job = jobs_.cancel_job(library, jobs_.job(library, args.id).id)
        print(f"Stopping job {job.id}: it saves a checkpoint first.")
        deadline = time.monotonic() + 60
        while job.state == JobState.RUNNING and time.monotonic() < deadline:
            time.sleep(FOLLOW_INTERVAL_S)
            job, _ = jobs_.sync(library, job.id)
    if job.state == JobState.RUNNING:
        raise KnownError(f"Job {job.id} has not stopped yet; `tunedesk job {job.id}` shows when it has.")
    print(f"Job {job.id} {job.state} at step {job.step}.")
    return 0


def _resume(args: argparse.Namespace) -> int:
    with open_library(args) as library:
        job = jobs_.start_job(library, jobs_.job(library, args.id).id, work=PRINTED, processes=args.gpus)
        print(f"job {job.id}: resuming from its last checkpoint")
        return 0 if args.detach else follow(library, job.id)
