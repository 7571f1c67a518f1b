"""Tiny models and job helpers for the engine tests: the `tiny` demo model, built once per session."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from core.jobdir.config import load_config
from core.jobdir.events import read_events


def write_job(job_dir: Path, base: Path, train: list[dict], val: list[dict] | None = None, **overrides) -> Path:
    """A job directory as core.jobs.jobs writes it, for running the engine directly."""
    (job_dir / "dataset").mkdir(parents=True)
    for name, records in (("train.jsonl", train), ("val.jsonl", val or [])):
        (job_dir / "dataset" / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    settings = {"seq_len": 256, "lora_rank": 4, "eval_every": 5, "save_every": 5, "warmup_steps": 2} | overrides
    config = load_config("quick", settings)
    (job_dir / "job.json").write_text(json.dumps({"base": str(base), "base_name": "tiny", "config": config.to_dict()}))
    return job_dir


def raw_examples(text: str, count: int, size: int = 300) -> list[dict]:
    return [{"kind": "raw", "text": text[i * size : (i + 1) * size]} for i in range(count)]


def step_losses(job_dir: Path) -> dict[int, float]:
    """Each step's loss; a step run twice (before a kill and after the resume) keeps its last value."""
    return {e.step: e.loss for e in read_events(job_dir / "events.jsonl")[0] if e.type == "step"}


def wait_for(condition, timeout: float = 120.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s")


def run_engine(job_dir: Path, *module: str) -> subprocess.CompletedProcess[str]:
    """`python -m core.engine JOB_DIR` (or another engine module with its arguments), to the end."""
    args = list(module[1:]) if module else []
    command = [sys.executable, "-m", module[0] if module else "core.engine", str(job_dir), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)
