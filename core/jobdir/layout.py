"""The job directory's names: what the app writes there for the engine, and what the engine writes back.

job.json        the base model and the training settings; written once, by the app
dataset/        train.jsonl, val.jsonl, held_out.jsonl and dataset.json: a copy of the library's dataset
events.jsonl    the engine's events (core/jobdir/events.py), its only channel back to the app
cancel          created by the app to ask the engine to stop (the same over SSH)
runner.json     the supervisor's and the engine's pids
engine.log      the engine's stderr; each foreground tool has a log of its own (score.log, export.log)
checkpoints/    one folder per saved step (core/engine/checkpoint.py)
eval/           the questions a scoring reads, and the answers it gives
exports/        the GGUF files made from the job's checkpoints, each with its receipt (NAME.gguf.json: what
                the export tool reported), written just before the file takes its name
"""

from __future__ import annotations

from pathlib import Path

JOB = "job.json"
DATASET = "dataset"
TRAIN, VAL, HELD_OUT = "train.jsonl", "val.jsonl", "held_out.jsonl"
EVENTS = "events.jsonl"
CANCEL = "cancel"
RUNNER = "runner.json"
REMOTE = "remote.json"  # where on a remote host the job runs (core/jobs/runners/ssh.py)
ENGINE_LOG = "engine.log"
CHECKPOINTS = "checkpoints"
START_ADAPTER = "start_adapter"  # an update's first weights: the adapter of the job it updates (train --update)
EVAL = "eval"
QUESTIONS = f"{EVAL}/questions.jsonl"  # the questions a job's checkpoints are scored with, prompts included
EXPORTS = "exports"
RECEIPT = ".json"  # beside an exported GGUF, added to its whole name


def demo_base(job_dir: Path) -> Path:
    """The built-in demo base's folder: DATA_DIR/models/demo, beside the jobs folder, here and on a remote host
    alike. The engine builds it there and nowhere else, whatever job.json says: a tampered `base` must not
    make it delete and write a folder outside the library."""
    return job_dir.resolve().parent.parent / "models" / "demo"


def receipt(gguf: Path) -> Path:
    return gguf.with_name(gguf.name + RECEIPT)
