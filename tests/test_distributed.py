"""One job in two processes under torch.distributed (gloo, on CPU), launched by torchrun's launcher through
`tunedesk train --gpus 2`: the same steps as one process at the same global batch, events and checkpoints
from process 0 alone, a cancel that stops both, a resume with another count, and a killed process that
fails the job in one sentence naming it."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.jobdir import layout
from tests.engine_fixtures import wait_for
from tests.test_cli import tunedesk
from tests.test_jobs import FAST, job_json

# Two rows a step, so that each process has one; no dropout and float32, so that the two runs differ only
# in the order their sums are taken.
SAME = [*FAST, "--set", "grad_accum=2", "--set", "lora_dropout=0", "--set", "dtype=float32"]
# Sums taken in another order (DDP's bucketed all-reduce) move float32 losses by about 1e-7; a step with
# another batch would move them by 1e-2.
LOSS_TOLERANCE = 1e-5


def events(data: Path, job_id: int) -> list[dict]:
    return [json.loads(line) for line in (data / "jobs" / str(job_id) / layout.EVENTS).read_text().splitlines()]


@pytest.fixture(scope="module")
def tied_base(tiny_base, tmp_path_factory) -> Path:
    """The tiny model with its head tied to its embeddings, as SmolLM2's and most small bases' are: sharded,
    the head and the embeddings are one weight, and every process must hold them so."""
    import shutil

    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tied") / "tiny"
    shutil.copytree(tiny_base, folder)
    weights = load_file(folder / "model.safetensors")
    del weights["lm_head.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"tie_word_embeddings": True}))
    return folder


def test_two_processes_take_the_steps_one_does_and_process_0_alone_writes(data, tied_base):
    # Each checkpoint scored on the held-out questions (shared out between the processes), none stopping it.
    scored = ["--set", "save_every=2", "--set", "stop_after_unimproved=9"]
    for processes in (["--gpus", "1"], ["--gpus", "2"], ["--gpus", "2", "--set", "shard_weights=true"]):
        trained = tunedesk(
            "train", "--base", str(tied_base), "--max-steps", "4", *SAME, *scored, *processes, data_dir=data
        )
        assert trained.returncode == 0, trained.stderr
    one, ddp, sharded = (job_json(data, n) for n in (1, 2, 3))
    assert (one["processes"], ddp["processes"], sharded["processes"]) == (1, 2, 2)
    assert "training in 2 processes (cpu, sharing the weights)" in trained.stdout
    starts = [next(e for e in events(data, n) if e["type"] == "start") for n in (2, 3)]
    assert [start["shard_weights"] for start in starts] == [False, True]
    for two in (ddp, sharded):
        assert [row["step"] for row in two["losses"]] == [1, 2, 3, 4]
        for a, b in zip(one["losses"], two["losses"], strict=True):
            assert b["train_loss"] == pytest.approx(a["train_loss"], rel=LOSS_TOLERANCE)
            assert (b["val_loss"] is None) == (a["val_loss"] is None)
            assert b["val_loss"] is None or b["val_loss"] == pytest.approx(a["val_loss"], rel=LOSS_TOLERANCE)
    # The same answers to the same questions, each process having answered a share of them.
    for step in ("step-000002", "step-000004"):
        answers = [(data / "jobs" / str(n) / "eval" / f"{step}.jsonl").read_text() for n in (1, 2, 3)]
        assert answers[0].count("\n") > 1 and answers[1] == answers[0] and answers[2] == answers[0]
    assert [c["step"] for c in sharded["checkpoints"]] == [2, 4]
    for job_id in (2, 3):
        kinds = [event["type"] for event in events(data, job_id)]
        # One process's worth of events: a second writer would double every line.
        assert kinds.count("start") == 1 and kinds.count("step") == 4 and kinds.count("checkpoint") == 2
        assert kinds[-1] == "done"
    # The sharded job's checkpoint is the whole adapter, as one process saves it.
    whole, gathered = (
        load_file(data / "jobs" / str(n) / "checkpoints" / "step-000004" / "adapter_model.safetensors") for n in (1, 3)
    )
    assert whole.keys() == gathered.keys()
    assert all(torch.allclose(whole[k], gathered[k], rtol=1e-4, atol=1e-6) for k in whole)
    # And so is its optimizer state: any number of processes resumes from it.
    whole, gathered = (
        load_file(data / "jobs" / str(n) / "checkpoints" / "step-000004" / "training_state.safetensors") for n in (1, 3)
    )
    assert whole.keys() == gathered.keys() and any("exp_avg_sq" in k for k in whole)
    moments = [k for k in whole if k.startswith("optimizer.")]
    assert all(torch.allclose(whole[k], gathered[k], rtol=1e-3, atol=1e-9) for k in moments)


# peft's get_peft_model reads transformers 5's deprecated is_gradient_checkpointing.
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_sharded_the_processes_but_the_first_make_the_base_without_reading_its_weights(tiny_base):
    """What the first test's sharded run rests on: process 1 holds none of the base until process 0 sends
    it its part, so a base larger than one process's memory still loads."""
    from core.engine.train import load_model
    from core.jobdir.config import TrainConfig

    _, model = load_model(tiny_base, TrainConfig(), "cpu", weights=False)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {b.device.type for b in model.buffers()} == {"cpu"}  # computed in the model (rotary frequencies)
    assert any(p.requires_grad for p in model.parameters())  # the adapters, to be trained once filled


def test_each_process_takes_as_many_items_and_their_results_come_back_in_order():
    from core.engine.train import interleaved, share

    items = list("abcde")
    for processes in (1, 2, 3, 5, 7):
        shares = [share(items, rank, processes) for rank in range(processes)]
        assert len({len(s) for s in shares}) == 1  # sharded, no process may run a forward pass fewer
        assert sorted(set().union(*shares)) == items
        assert interleaved([[x.upper() for x in s] for s in shares], len(items)) == list("ABCDE")


@pytest.mark.parametrize(
    ("weights", "resumed_in"),
    [("shard_weights=false", 1), ("shard_weights=true", 2)],  # sharded, each process restores its part
)
def test_a_cancel_stops_both_and_a_resume_goes_on(data, tiny_base, weights, resumed_in):
    started = tunedesk(
        "train",
        "--base",
        str(tiny_base),
        "--max-steps",
        "12",
        *SAME,
        "--set",
        weights,
        "--gpus",
        "2",
        "--detach",
        data_dir=data,
    )
    assert started.returncode == 0, started.stderr
    wait_for(lambda: job_json(data)["step"] >= 2, timeout=240)
    cancelled = tunedesk("cancel", "1", data_dir=data)
    assert cancelled.returncode == 0, cancelled.stderr
    shown = job_json(data)
    assert shown["state"] == "cancelled" and shown["checkpoints"][-1]["step"] == shown["step"]
    assert [event["type"] for event in events(data, 1)].count("cancelled") == 1
    stopped_at = shown["step"]

    resumed = tunedesk("resume", "1", "--gpus", str(resumed_in), data_dir=data, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    shown = job_json(data)
    assert (shown["state"], shown["step"], shown["processes"]) == ("done", 12, resumed_in)
    starts = [event for event in events(data, 1) if event["type"] == "start"]
    assert [(s["processes"], s["resumed_from"]) for s in starts] == [(2, 0), (resumed_in, stopped_at)]
    assert [row["step"] for row in shown["losses"]] == list(range(1, 13))


def _process_of_rank(job_dir: Path, rank: int) -> int:
    """The pid of the job's process `rank` (torchrun gives each its RANK in the environment)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(job_dir).encode() in command and b"core.engine" in command and f"RANK={rank}".encode() in environ:
            return int(proc.name)
    raise AssertionError(f"no process of rank {rank}")


def test_a_killed_process_fails_the_job_in_one_sentence_naming_it(data, tiny_base):
    started = tunedesk(
        "train", "--base", str(tiny_base), "--max-steps", "400", *SAME, "--gpus", "2", "--detach", data_dir=data
    )
    assert started.returncode == 0, started.stderr
    wait_for(lambda: job_json(data)["step"] >= 2, timeout=240)
    os.kill(_process_of_rank(data / "jobs" / "1", 1), signal.SIGKILL)
    wait_for(lambda: job_json(data)["state"] != "running", timeout=120)  # no hang: the other one is stopped
    shown = job_json(data)
    assert shown["state"] == "failed"
    assert (
        shown["message"] == "Process 1 of 2 was killed (SIGKILL); if nobody stopped it, the computer ran out of memory."
    )
    assert tunedesk("resume", "1", "--gpus", "3", "--detach", data_dir=data).returncode == 1  # 2 rows a step


def test_a_count_the_job_cannot_train_with_is_one_sentence(data, tiny_base):
    refused = tunedesk("train", "--base", str(tiny_base), "--max-steps", "4", *FAST, "--gpus", "2", data_dir=data)
    assert refused.returncode == 1
    assert "2 processes need at least 2 rows a step, and these settings train on 1" in refused.stderr
    assert json.loads(tunedesk("jobs", "--json", data_dir=data).stdout) == {"jobs": []}
    demo = tunedesk("train", "--base", "demo", "--gpus", "2", data_dir=data)
    assert demo.returncode == 1 and "The built-in demo base trains in one process" in demo.stderr


def test_by_default_a_job_takes_every_gpu_a_step_can_share(monkeypatch):
    from core.jobs.runners import local

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    from core.jobdir.config import TrainConfig
    from core.jobdir.job_spec import JobSpec

    def job(grad_accum=1, **spec):
        return JobSpec(**({"base": "b", "base_name": "smollm2", "config": TrainConfig(grad_accum=grad_accum)} | spec))

    assert local.processes(job()) == 1  # the quick preset: one row a step, so one process, not a refusal
    assert local.processes(job(2)) == 2
    assert local.processes(job(8)) == 4  # every GPU
    assert local.processes(job(8, base_name="demo")) == 1
    assert local.processes(job(processes=3)) == 3  # as asked (checked when the job was made)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local.processes(job(8)) == 1  # no GPU: one


def test_a_process_dying_after_the_job_ended_does_not_change_its_outcome(tmp_path):
    # Seen once: process 1 aborted in torch's teardown after process 0 had written "cancelled", and the job
    # showed as failed.
    from core.jobdir.events import EventLog, outcome

    events = EventLog(tmp_path)
    events.write("start", steps_total=2)
    events.write("step", step=1, loss=2.0, lr=1e-3, tokens_per_s=1.0, eta_s=1.0)
    assert outcome(tmp_path) is None
    events.write("cancelled", step=1)
    assert outcome(tmp_path) == "cancelled"  # what the launcher keeps, whatever a process does after
    events.write("error", message="Process 1 of 2 was stopped by signal SIGABRT.")
    assert outcome(tmp_path) == "error"
