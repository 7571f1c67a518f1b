"""The real engine (`python -m core.engine`) on the tiny model: events, checkpoints, cancel, kill, resume
with the same losses, a full disk, bad data refused before training."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from core.engine import checkpoint
from core.jobdir.events import read_events
from core.jobs.runners import local
from core.jobs.runners.engine_env import Engine
from tests.engine_fixtures import raw_examples, run_engine, step_losses, wait_for, write_job


@pytest.fixture
def job(tmp_path, tiny_base, sample_text):
    return write_job(
        tmp_path / "job", tiny_base, raw_examples(sample_text, 24), raw_examples(sample_text[9000:], 4), max_steps=12
    )


def test_a_job_runs_to_the_end_with_events_and_checkpoints(job):
    result = run_engine(job)
    assert result.returncode == 0, result.stderr
    events, _ = read_events(job / "events.jsonl")
    kinds = [e.type for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    start = events[0]
    assert start.steps_total == 12 and start.tokens_total > 0
    steps = [e for e in events if e.type == "step"]
    assert [e.step for e in steps] == list(range(1, 13))
    assert all(e.tokens_per_s > 0 and e.eta_s >= 0 and e.loss > 0 for e in steps)
    saved = [e for e in events if e.type == "checkpoint"]
    assert [e.step for e in saved] == [5, 10, 12]
    assert all(e.val_loss > 0 for e in saved)
    assert [p.name for p in checkpoint.complete(job)] == ["step-000005", "step-000010", "step-000012"]
    adapter = load_file(job / "checkpoints" / "step-000012" / "adapter_model.safetensors")
    assert any("lora_A" in name for name in adapter)


def test_lora_trains_in_bfloat16_on_the_cpu_too(tmp_path, tiny_base, sample_text):
    job_dir = write_job(tmp_path / "job", tiny_base, raw_examples(sample_text, 8), max_steps=3, dtype="bfloat16")
    assert run_engine(job_dir).returncode == 0
    events = read_events(job_dir / "events.jsonl")[0]
    assert events[0].config["dtype"] == "bfloat16" and events[-1].type == "done"


def test_the_same_seed_gives_the_same_losses(tmp_path, tiny_base, sample_text):
    runs = []
    for name in ("a", "b"):
        job_dir = write_job(tmp_path / name, tiny_base, raw_examples(sample_text, 16), max_steps=6)
        assert run_engine(job_dir).returncode == 0
        runs.append(step_losses(job_dir))
    assert runs[0] == runs[1]


def test_killed_engine_fails_the_job_and_resume_reproduces_the_losses(tmp_path, tiny_base, sample_text):
    train, val = raw_examples(sample_text, 24), raw_examples(sample_text[9000:], 4)
    reference = write_job(tmp_path / "reference", tiny_base, train, val, max_steps=30)
    assert run_engine(reference).returncode == 0

    job_dir = write_job(tmp_path / "killed", tiny_base, train, val, max_steps=30)
    local.start(job_dir, Engine(sys.executable))
    wait_for(lambda: len(checkpoint.complete(job_dir)) >= 2)
    os.kill(local.engine_pid(job_dir), signal.SIGKILL)
    wait_for(lambda: not local.is_alive(job_dir))
    events, _ = read_events(job_dir / "events.jsonl")
    assert events[-1].type == "error"
    assert events[-1].message.startswith("The engine was killed (SIGKILL)")

    last = checkpoint.complete(job_dir)[-1]
    assert int(last.name.split("-")[1]) >= 10
    local.start(job_dir, Engine(sys.executable))  # resume: the engine continues from the last complete checkpoint
    wait_for(lambda: not local.is_alive(job_dir))
    events, _ = read_events(job_dir / "events.jsonl")
    assert events[-1].type == "done"
    restart = [e for e in events if e.type == "start"][-1]
    assert restart.resumed_from == int(last.name.split("-")[1])
    # Not exact: float32 sums in another order (oneDNN's and MKL's kernels may take one by the memory's
    # alignment) moved a loss of about 5 by 2e-6 once in many runs. A resume that lost the optimizer's moments
    # moved the losses by up to 9e-4, one that lost the random state by 3e-4.
    assert step_losses(job_dir) == pytest.approx(step_losses(reference), abs=1e-5)


def test_cancel_saves_a_checkpoint_and_says_cancelled(tmp_path, tiny_base, sample_text):
    job_dir = write_job(tmp_path / "job", tiny_base, raw_examples(sample_text, 24), max_steps=100_000, save_every=1000)
    local.start(job_dir, Engine(sys.executable))
    wait_for(lambda: any(e.type == "step" for e in read_events(job_dir / "events.jsonl")[0]))
    local.cancel(job_dir)
    wait_for(lambda: not local.is_alive(job_dir))
    events, _ = read_events(job_dir / "events.jsonl")
    assert events[-1].type == "cancelled"
    stopped_at = events[-1].step
    assert (events[-2].type, events[-2].step) == ("checkpoint", stopped_at)
    assert checkpoint.complete(job_dir)[-1].name == checkpoint.name(stopped_at)


def test_a_cancel_during_a_long_step_drops_that_step_and_keeps_the_ones_before(tmp_path, tiny_base, sample_text):
    # 400 micro-batches a step: the tiny model takes seconds over one step, as a real one does on a CPU.
    settings = {"max_steps": 100, "save_every": 1000, "grad_accum": 400, "batch_rows": 1}
    job_dir = write_job(tmp_path / "job", tiny_base, raw_examples(sample_text, 24), **settings)
    local.start(job_dir, Engine(sys.executable))
    wait_for(lambda: any(e.type == "step" for e in read_events(job_dir / "events.jsonl")[0]), interval=0.02)
    local.cancel(job_dir)
    wait_for(lambda: not local.is_alive(job_dir))
    events, _ = read_events(job_dir / "events.jsonl")
    assert [e.step for e in events if e.type == "step"] == [1]  # step 2 was under way, and dropped
    assert (events[-1].type, events[-1].step) == ("cancelled", 1)
    assert checkpoint.complete(job_dir)[-1].name == checkpoint.name(1)


@pytest.mark.parametrize(
    ("line", "message"),
    [('{"kind": "raw", "text": "x', "train.jsonl line 3 is not valid JSON"), ('{"kind": "raw", "text": ""}', "line 3")],
)
def test_bad_data_fails_before_training(tmp_path, tiny_base, sample_text, line, message):
    job_dir = write_job(tmp_path / "job", tiny_base, raw_examples(sample_text, 2), max_steps=3)
    with open(job_dir / "dataset" / "train.jsonl", "a") as file:
        file.write(line + "\n")
    result = run_engine(job_dir)
    assert result.returncode == 1
    events, _ = read_events(job_dir / "events.jsonl")
    assert [e.type for e in events] == ["error"]
    assert message in events[0].message


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, tiny_base, sample_text):
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs unprivileged mount namespaces (unshare -rm) for a small tmpfs")
    probe = write_job(tmp_path / "probe", tiny_base, raw_examples(sample_text, 8), max_steps=1)
    assert run_engine(probe).returncode == 0
    size = sum(f.stat().st_size for f in (probe / "checkpoints" / "step-000001").iterdir())

    job_dir = write_job(tmp_path / "job", tiny_base, raw_examples(sample_text, 8), max_steps=10)
    (job_dir / "checkpoints").mkdir()
    # A tmpfs with room for one checkpoint and a half, mounted over checkpoints/ in a private namespace;
    # after the engine, the same namespace checks that the first checkpoint still loads.
    first = job_dir / "checkpoints" / "step-000005" / "adapter_model.safetensors"
    check = (
        f"from safetensors.torch import load_file; load_file('{first}'); "
        f"import os; print(sorted(os.listdir('{job_dir}/checkpoints')))"
    )
    script = (
        f"mount -t tmpfs -o size={int(size * 1.5) // 4096 * 4096 + 4096} tmpfs {job_dir}/checkpoints && "
        f'{sys.executable} -m core.engine {job_dir}; echo exit=$?; {sys.executable} -c "{check}"'
    )
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=240)
    assert "exit=1" in result.stdout, result.stderr
    assert "['step-000005']" in result.stdout, result.stderr
    events, _ = read_events(job_dir / "events.jsonl")
    assert events[-1].type == "error"
    assert events[-1].message == (
        f"The checkpoint at step 10 could not be written to {job_dir}/checkpoints: No space left on device; "
        "the earlier checkpoints are kept."
    )


def test_the_job_file_names_what_the_engine_trained(job):
    spec = json.loads((job / "job.json").read_text())
    assert spec["config"]["max_steps"] == 12


@pytest.mark.filterwarnings("ignore:.*deprecated and will be removed in v6:FutureWarning")  # peft's calls
def test_qlora_trains_on_4bit_weights(tmp_path, tiny_base, sample_text):
    # bitsandbytes' CPU backend runs the QLoRA code path; only real model sizes need CUDA (test_gpu.py).
    bnb = pytest.importorskip("bitsandbytes")
    from core.engine.train import load_model
    from core.jobdir.config import load_config

    config = load_config("quick", {"qlora": True, "gradient_checkpointing": True, "lora_rank": 4})
    _, model = load_model(tiny_base, config, "cpu")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())

    job_dir = write_job(tmp_path / "job", tiny_base, raw_examples(sample_text, 8), max_steps=4, qlora=True)
    result = run_engine(job_dir)
    assert result.returncode == 0, result.stderr
    assert [e.type for e in read_events(job_dir / "events.jsonl")[0]][-1] == "done"


def test_any_optimizer_state_survives_a_checkpoint():
    import torch

    # The shape of bitsandbytes' paged 8-bit AdamW state: quantization maps, a tensor learning rate.
    state = {
        "state": {0: {"step": 3, "state1": torch.arange(4, dtype=torch.uint8), "qmap1": torch.rand(256)}},
        "param_groups": [{"lr": torch.tensor(0.1), "betas": [0.9, 0.99], "params": [0], "optim_bits": 8}],
    }
    tensors: dict = {}
    saved = json.loads(json.dumps(checkpoint.split_state(state, "optimizer", tensors)))
    restored = checkpoint.join_state(saved, tensors)
    assert list(restored["state"]) == [0]
    assert torch.equal(restored["state"][0]["state1"], state["state"][0]["state1"])
    assert restored["state"][0]["step"] == 3
    assert restored["param_groups"][0]["lr"] == state["param_groups"][0]["lr"]
    assert restored["param_groups"][0]["betas"] == [0.9, 0.99]


@pytest.mark.filterwarnings("ignore:.*deprecated and will be removed in v6:FutureWarning")  # peft's calls
def test_every_training_step_runs_in_training_mode(tmp_path, tiny_base, sample_text, monkeypatch):
    # Gradient checkpointing and dropout act only in training mode; from_pretrained hands back eval mode.
    from core.engine import train

    modes = []
    step = train._train_step

    def observed(model, *args):
        modes.append(all(module.training for module in model.modules()))  # peft's wrapper alone says True
        return step(model, *args)

    monkeypatch.setattr(train, "_train_step", observed)
    # The engine's SIGTERM handler is for its own process: in pytest's it outlived the test, and CI's timeout
    # could not stop the run.
    monkeypatch.setattr(train.signal, "signal", lambda *_: None)
    job_dir = write_job(tmp_path / "job", tiny_base, raw_examples(sample_text, 8), max_steps=3, eval_every=10**6)
    train.run(job_dir)
    assert modes == [True, True, True]


def test_the_demo_base_is_built_beside_the_jobs_folder_whatever_job_json_says(tmp_path, tiny_base, sample_text):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "x.partial").mkdir(parents=True)
    (elsewhere / "x.partial" / "keep.txt").write_text("the user's")
    job_dir = write_job(tmp_path / "lib" / "jobs" / "1", tiny_base, raw_examples(sample_text, 4))
    job = json.loads((job_dir / "job.json").read_text())
    (job_dir / "job.json").write_text(json.dumps(job | {"base": str(elsewhere / "x"), "base_name": "demo"}))
    (job_dir / "cancel").touch()  # stops the build at its first check, once it has started
    result = run_engine(job_dir)
    assert result.returncode == 0, result.stderr
    assert [e.type for e in read_events(job_dir / "events.jsonl")[0]][-1] == "cancelled"
    assert (elsewhere / "x.partial" / "keep.txt").read_text() == "the user's"
    assert sorted(path.name for path in elsewhere.iterdir()) == ["x.partial"]
    assert not (tmp_path / "lib" / "models" / "demo.partial").exists()  # built there, and cleaned up on cancel
