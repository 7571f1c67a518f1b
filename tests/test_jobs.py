"""Training from the command line, as a user runs it: `tunedesk dataset build`, `train`, `jobs`, `job`,
`cancel`, `resume`, with real processes on the tiny model."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.dataset.build import dataset
from core.errors import KnownError
from core.jobdir.config import load_config
from core.jobdir.events import JobState, Progress, Start, read_events
from core.jobs import jobs
from core.jobs.runners import local
from core.library.folder import OWN_NAMES
from core.library.store import Library
from tests.conftest import SAMPLE, make_pdf
from tests.engine_fixtures import wait_for
from tests.test_cli import tunedesk

FAST = ["--set", "seq_len=2048", "--set", "lora_rank=4", "--set", "eval_every=5", "--set", "save_every=5"]


def job_json(data, job_id=1):
    result = tunedesk("job", str(job_id), "--json", data_dir=data)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_train_follows_the_job_and_lists_its_checkpoints(data, tiny_base):
    result = tunedesk("train", "--base", str(tiny_base), "--max-steps", "10", *FAST, data_dir=data)
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.splitlines()[0] == f"job 1: training {tiny_base} on dataset 1 ({_train_examples(data)} examples)"
    )
    assert "Job 1 finished at step 10 of 10." in result.stdout
    assert "step     10  val loss" in result.stdout and "<- best" in result.stdout

    # The validation's wait names itself and counts its rows to the end.
    validating = [e for e in _events(data) if isinstance(e, Progress) and e.message == "computing the validation loss"]
    assert validating and validating[-1].done == validating[-1].total > 0

    shown = job_json(data)
    assert shown["state"] == "done" and shown["best_step"] in (5, 10)
    assert [c["step"] for c in shown["checkpoints"]] == [5, 10]
    assert all(os.path.isdir(c["path"]) and c["val_loss"] > 0 for c in shown["checkpoints"])
    assert [row["step"] for row in shown["losses"]] == list(range(1, 11))
    listed = json.loads(tunedesk("jobs", "--json", data_dir=data).stdout)["jobs"]
    assert [(j["id"], j["state"], j["base"]) for j in listed] == [(1, "done", str(tiny_base))]
    assert set(listed[0]) >= {"id", "state", "created", "base"}


def test_export_records_the_gguf_in_the_library(data, tiny_base):
    assert tunedesk("train", "--base", str(tiny_base), "--max-steps", "5", *FAST, data_dir=data).returncode == 0
    exported = tunedesk("export", "1", "--quant", "q8_0", data_dir=data)
    assert exported.returncode == 0, exported.stderr
    path = data / "jobs" / "1" / "exports" / f"{tiny_base.name}-job1-step-000005-q8_0.gguf"
    assert exported.stdout.startswith(f"model 1: {path} (")
    assert "verified: llama.cpp loads it; tokenizer ids match; greedy agreement" in exported.stdout
    (listed,) = json.loads(tunedesk("models", "--json", data_dir=data).stdout)["models"]
    assert (listed["path"], listed["quant"], listed["source"], listed["step"]) == (str(path), "q8_0", "export", 5)
    assert listed["bytes"] == path.stat().st_size
    assert job_json(data)["gguf"][0]["sha256"] == listed["sha256"]

    wrong = tunedesk("export", "1", "--checkpoint", "7", data_dir=data)
    assert wrong.returncode == 1 and "Job 1 has no checkpoint 7 (checkpoints: 5)" in wrong.stderr
    added = tunedesk("models", "--add", str(path), data_dir=data)
    assert added.stdout.startswith("model 1:")  # the same file is not listed twice
    (data / "notes.gguf").write_text("not a model")
    refused = tunedesk("models", "--add", str(data / "notes.gguf"), data_dir=data)
    assert refused.returncode == 1 and "notes.gguf is not a GGUF file." in refused.stderr
    (data / "garbage.gguf").write_bytes(b"GGUF" + os.urandom(64))
    damaged = tunedesk("models", "--add", str(data / "garbage.gguf"), data_dir=data)
    assert (
        damaged.returncode == 1 and "garbage.gguf is not a usable GGUF file: its header is damaged." in damaged.stderr
    )
    os.mkfifo(data / "pipe.gguf")  # read, it would hang the command
    piped = tunedesk("models", "--add", str(data / "pipe.gguf"), data_dir=data)
    assert piped.returncode == 1 and "pipe.gguf is not a regular file" in piped.stderr
    removed = tunedesk("models", "--rm", "1", data_dir=data)
    assert removed.returncode == 0 and not path.exists()  # an exported file is Tunedesk's own
    assert json.loads(tunedesk("models", "--json", data_dir=data).stdout)["models"] == []


def test_an_estimate_counts_the_steps_the_job_then_takes_and_starts_nothing(data, tiny_base):
    estimated = tunedesk("train", "--estimate", "--base", str(tiny_base), *FAST, data_dir=data)
    assert estimated.returncode == 0, estimated.stderr
    said = re.search(
        r"(\d+) steps over ([\d,]+) tokens; (about \d+ min|under a minute) on this computer's CPU "
        r"\(([\d,]+) tokens a second, timed on one step\); at most about ([\d.]+) (MB|GB) of memory, measured\.",
        estimated.stdout,
    )
    assert said, estimated.stdout
    assert int(said[4].replace(",", "")) > 0 and float(said[5]) * (1024 if said[6] == "GB" else 1) > 100
    assert json.loads(tunedesk("jobs", "--json", data_dir=data).stdout) == {"jobs": []}

    started = tunedesk("train", "--base", str(tiny_base), *FAST, "--detach", data_dir=data)
    assert started.returncode == 0, started.stderr
    assert f"{said[1]} steps over {said[2]} tokens; at most about " in started.stderr  # said before the launch
    wait_for(lambda: any(isinstance(e, Start) for e in _events(data)))
    assert tunedesk("cancel", "1", data_dir=data).returncode == 0
    wait_for(lambda: job_json(data)["state"] != "running")
    (start,) = [e for e in _events(data) if isinstance(e, Start)]
    # The engine's own count: one epoch (the preset's) of packed rows, one a step.
    assert (start.steps_total, start.tokens_total) == (int(said[1]), int(said[2].replace(",", "")))


def _events(data, job_id=1):
    return read_events(data / "jobs" / str(job_id) / "events.jsonl")[0]


def _train_examples(data):
    return len((data / "datasets" / "1" / "train.jsonl").read_text().splitlines())


def test_cancel_then_resume_finishes_the_job(data, tiny_base):
    started = tunedesk("train", "--base", str(tiny_base), "--max-steps", "30", *FAST, "--detach", data_dir=data)
    assert started.returncode == 0, started.stderr
    wait_for(lambda: job_json(data)["step"] >= 2)

    second = tunedesk("train", "--base", str(tiny_base), "--max-steps", "5", "--detach", data_dir=data)
    assert second.returncode == 1
    assert "Job 1 is still running on this machine" in second.stderr

    cancelled = tunedesk("cancel", "1", data_dir=data)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.splitlines()[-1].startswith("Job 1 cancelled at step ")
    shown = job_json(data)
    assert shown["state"] == "cancelled"
    assert shown["checkpoints"][-1]["step"] == shown["step"]

    resumed = tunedesk("resume", "1", "--detach", data_dir=data)
    assert resumed.returncode == 0, resumed.stderr
    wait_for(lambda: job_json(data)["state"] != "running", timeout=240)
    assert job_json(data)["state"] == "done"
    assert job_json(data)["step"] == 30


def test_a_killed_engine_shows_as_failed_with_the_reason(data, tiny_base):
    started = tunedesk("train", "--base", str(tiny_base), "--max-steps", "100000", *FAST, "--detach", data_dir=data)
    assert started.returncode == 0, started.stderr
    job_dir = data / "jobs" / "1"
    wait_for(lambda: job_json(data)["step"] >= 1)
    os.kill(local.engine_pid(job_dir), signal.SIGKILL)
    wait_for(lambda: job_json(data)["state"] != "running")
    shown = job_json(data)
    assert shown["state"] == "failed"
    assert shown["message"].startswith("The engine was killed (SIGKILL)")
    text = tunedesk("job", "1", data_dir=data).stdout
    assert "Job 1 failed" in text and "`tunedesk resume 1` continues" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "lora_rank=0"], "The setting lora_rank must be between 1 and 4096, not 0."),
        (["--set", "lr=nan"], "The setting lr must be a positive number below 1"),
        (["--set", "colour=blue"], "Unknown setting 'colour'"),
        (["--dataset", "7"], "No dataset 7"),
        (["--base", "/nonexistent/model"], "The base model /nonexistent/model is not a folder"),
        # Counted with the base's own tokenizer before launch, not found a model load into the job.
        (["--set", "seq_len=32"], "tokens long, more than the sequence length of 32: raise the sequence length"),
    ],
)
def test_bad_settings_are_refused_before_a_job_exists(data, tiny_base, args, message):
    result = tunedesk("train", "--base", str(tiny_base), *args, data_dir=data)
    assert result.returncode == 1
    assert message in result.stderr
    assert json.loads(tunedesk("jobs", "--json", data_dir=data).stdout) == {"jobs": []}


@pytest.mark.timeout(900)  # the whole pipeline: on a loaded 2-core machine it ran past the default 300 s
def test_the_demo_runs_the_whole_workflow(tmp_path, tiny_base):
    # The tiny tokenizer needs longer rows than the demo model's for the grounded examples.
    args = ["--base", str(tiny_base), "--max-steps", "4", "--set", "seq_len=2048"]
    result = tunedesk("demo", *args, data_dir=tmp_path / "home", timeout=840)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "license_agreement_50p.pdf: 50 pages" in out
    assert "[license_agreement_50p.pdf p. 41]" in out  # the governing-law clause
    assert "training, " in out and "Job 1 finished at step 4 of 4." in out
    assert (tmp_path / "home" / "demo" / "jobs" / "1" / "checkpoints" / "step-000004").is_dir()
    assert "verified: llama.cpp loads it" in out
    assert "step     2  answer score " in out and "step     4  answer score " in out  # both checkpoints scored
    best = re.search(
        r"best: step (\d), by answer score .*; by the last step it would be step 4, by validation loss", out
    )
    assert best, out
    exports = tmp_path / "home" / "demo" / "jobs" / "1" / "exports"
    assert (exports / f"{tiny_base.name}-job1-step-00000{best[1]}-q8_0.gguf").is_file()
    assert "6. Asking it, offline through llama.cpp" in out
    said = ("unsupported: no citation backed by a passage", "cited: ", "not answered: search found no passage")
    assert sum(out.count(line) for line in said) == 2
    for library in [tmp_path / "home", tmp_path / "home" / "demo"]:  # only names a library folder may hold
        assert {path.name for path in library.iterdir()} <= OWN_NAMES


def test_a_full_disk_while_the_job_is_made_leaves_no_job(data, tiny_base, monkeypatch):
    def full(source, target, **_):
        Path(target).mkdir(parents=True)
        (Path(target) / "train.jsonl").write_bytes(b"x" * 8192)  # as far as the disk had room
        raise shutil.Error([(str(source), str(target), "[Errno 28] No space left on device")])

    monkeypatch.setattr(shutil, "copytree", full)
    with Library(data) as library:
        with pytest.raises(KnownError, match=r"The job's folder .*jobs/1 could not be written: the disk is full\."):
            jobs.create_job(library, base="x", base_path=tiny_base, config=load_config(), dataset=dataset(library))
        assert jobs.jobs(library) == []
    assert not (data / "jobs" / "1").exists()


def test_bad_lines_in_a_jobs_events_are_passed_over_and_the_job_still_ends(data, tiny_base):
    with Library(data) as library:
        job = jobs.create_job(library, base="x", base_path=tiny_base, config=load_config(), dataset=dataset(library))
    step = {"type": "step", "time": 1.0, "loss": 2.5, "lr": 1e-4, "tokens_per_s": 10.0, "eta_s": 1.0}
    lines = [
        json.dumps({"type": "start", "time": 1.0, "steps_total": 2}).encode(),
        json.dumps(step | {"step": 2**64}).encode(),  # past SQLite's integers
        b'{"type": "step", "time": 1.0, "step": 1, "loss": "\xff"}',  # not UTF-8
        json.dumps(step | {"step": -1}).encode(),
        json.dumps({"type": "checkpoint", "time": 1.0, "step": 1, "path": "../../outside"}).encode(),
        json.dumps({"type": "checkpoint", "time": 1.0, "step": 1, "path": "/etc"}).encode(),
        json.dumps({"type": "eval", "time": 1.0, "step": 1, "val_loss": "low"}).encode(),
        b"[1, 2]",
        json.dumps(step | {"step": 1}).encode(),
        json.dumps({"type": "error"}).encode(),  # no time: every event has one
        json.dumps({"type": "done", "time": 2.0}).encode(),
    ]
    (job.dir / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    for command in [("jobs",), ("job", "1"), ("export", "1")]:
        result = tunedesk(*command, data_dir=data)
        assert "Traceback" not in result.stderr, command
    shown = job_json(data)
    assert shown["state"] == "done"
    assert [row["step"] for row in shown["losses"]] == [1]
    assert shown["checkpoints"] == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "are damaged: they are not JSON"),
        ('{"base": 7, "config": []}', "are damaged: base, config missing or of the wrong kind"),
        ('{"config": {}}', "are damaged: base missing or of the wrong kind"),
        # A key renamed on one side fails here, on the first read, not on a remote GPU after the upload.
        ('{"base": "x", "config": {}, "base_nmae": "x"}', "hold what Tunedesk does not write: base_nmae"),
        ('{"base": "x", "config": {"lr": -1}}', "are damaged: The setting lr must be a positive number below 1"),
    ],
)
def test_a_tampered_job_file_fails_the_job_with_one_sentence(data, tiny_base, content, reason):
    with Library(data) as library:
        job = jobs.create_job(library, base="x", base_path=tiny_base, config=load_config(), dataset=dataset(library))
        (job.dir / "job.json").write_text(content)
        jobs.start_job(library, job.id)
        wait_for(lambda: jobs.sync(library, job.id)[0].state != JobState.RUNNING, timeout=60)
        ended = jobs.job(library, job.id)
    assert ended.state == "failed"
    assert ended.message.startswith(f"The job's settings {job.dir / 'job.json'} {reason}")


def test_a_copied_library_drives_its_own_jobs_and_models_not_the_originals(data, tiny_base, tmp_path):
    from core.models import gguf_models

    with Library(data) as library:
        job = jobs.create_job(library, base="x", base_path=tiny_base, config=load_config(), dataset=dataset(library))
        (job.dir / "exports").mkdir()
        gguf = job.dir / "exports" / "step-000005-q8_0.gguf"
        gguf.write_bytes(b"GGUF" + bytes(60))
        outcome = {"path": str(gguf), "quant": "q8_0", "bytes": 64, "sha256": "0" * 64, "step": 5}
        receipt = outcome | {"agreement": 1.0, "types": {}, "fallback": None}
        (job.dir / "exports" / "step-000005-q8_0.gguf.json").write_text(json.dumps(receipt))
    copy = tmp_path / "copy"
    shutil.copytree(data, copy, symlinks=True)
    shutil.rmtree(data)  # the original is gone: nothing may reach for it
    with Library(copy) as library:
        assert jobs.job(library, 1).dir == copy / "jobs" / "1"
        assert dataset(library).dir == copy / "datasets" / "1"
        (model,) = gguf_models.models(library)  # recorded from its receipt, where the copy holds it
        assert model.path == copy / "jobs" / "1" / "exports" / gguf.name


def test_a_library_from_before_relative_paths_is_moved_to_them(data, tiny_base, tmp_path):
    from core.db import migrations

    with Library(data) as library:
        jobs.create_job(library, base="x", base_path=tiny_base, config=load_config(), dataset=dataset(library))
        # As an earlier version wrote them, in the library the copy was made from.
        library.db.execute("UPDATE jobs SET dir = '/elsewhere/jobs/1'")
        library.db.execute("UPDATE datasets SET dir = '/elsewhere/datasets/1'")
        library.db.execute(
            "INSERT INTO models (path, bytes, sha256, source, job_id, step, created) "
            "VALUES ('/elsewhere/jobs/1/exports/step-000005-q8_0.gguf', 1, 'x', 'export', 1, 5, 'now')"
        )
        library.db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm009_paths_in_the_library'")
    assert "m009_paths_in_the_library" in {m.name for m in migrations._migrations}
    with Library(data) as library:
        assert jobs.job(library, 1).dir == data / "jobs" / "1"
        assert dataset(library).dir == data / "datasets" / "1"
        paths = [row["path"] for row in library.db.query("SELECT path FROM models")]
        assert paths == ["jobs/1/exports/step-000005-q8_0.gguf"]


def _contract_pages(count: int) -> list[str]:
    """The first `count` pages' worth (2,000 characters each) of the sample contract, in latin-1."""
    text = SAMPLE.with_suffix(".txt").read_text().translate({0x201C: '"', 0x201D: '"', 0x2019: "'", 0x2018: "'"})
    text = text.encode("latin-1", "replace").decode("latin-1")
    return [text[i * 2000 : (i + 1) * 2000] for i in range(count)]


def test_an_update_goes_on_from_the_old_adapter_on_what_an_amendment_changed(tmp_path, tiny_base):
    data = tmp_path / "data"
    pages = _contract_pages(8)
    original = make_pdf(tmp_path / "contract.pdf", pages)
    assert tunedesk("add", str(original), data_dir=data).returncode == 0
    fast = [*FAST, "--set", "lr=0.005", "--set", "warmup_steps=0"]
    first = tunedesk("train", "--base", str(tiny_base), "--max-steps", "10", *fast, data_dir=data)
    assert first.returncode == 0, first.stderr
    unchanged = tunedesk("train", "--update", "1", data_dir=data)
    assert unchanged.returncode == 1
    assert "Nothing in the library changed since job 1: it holds the same documents." in unchanged.stderr

    # The amendment rewrites page 4.
    amendment = "AMENDMENT No. 1. The royalty is twelve percent of Net Sales, paid each quarter. " * 20
    amended = [*pages[:3], amendment, *pages[4:]]
    version = make_pdf(tmp_path / "contract_amendment_1.pdf", amended)
    assert tunedesk("add", str(version), "--replaces", "contract.pdf", data_dir=data).returncode == 0
    # A learning rate too small to move the weights: what the update saved is what it started from.
    still = ["--set", "lr=1e-12"]
    updated = tunedesk("train", "--update", "1", "--replay", "0.25", "--max-steps", "2", *fast, *still, data_dir=data)
    assert updated.returncode == 0, updated.stderr
    said = re.search(
        r"job 2: updating job 1 on dataset 2: (\d+) changed examples, and (\d+) of the (\d+)", updated.stdout
    )
    assert said, updated.stdout
    changed, replayed, same = map(int, said.groups())
    assert 0 < changed < same and replayed == round(same * 0.25)
    job_dir = data / "jobs" / "2"
    trained_on = (job_dir / "dataset" / "train.jsonl").read_text().splitlines()
    assert len(trained_on) == changed + replayed
    assert sum("AMENDMENT No. 1" in line for line in trained_on) >= 1
    start = next(e for e in read_events(job_dir / "events.jsonl")[0] if isinstance(e, Start))
    assert start.update_of == {"job": 1, "step": 10}
    shown = job_json(data, 2)
    assert shown["state"] == "done" and [c["step"] for c in shown["checkpoints"]] == [2]
    # It went on from job 1's adapter, not from fresh adapters (whose B matrices start at zero).
    old = load_file(data / "jobs" / "1" / "checkpoints" / "step-000010" / "adapter_model.safetensors")
    new = load_file(job_dir / "checkpoints" / "step-000002" / "adapter_model.safetensors")
    assert old.keys() == new.keys() and any(bool(t.abs().sum()) for k, t in old.items() if "lora_B" in k)
    assert all(torch.allclose(old[k], new[k], atol=1e-6) for k in old)


def test_a_run_stops_once_its_checkpoints_answer_no_better(data, tiny_base):
    early = ["--set", "save_every=2", "--set", "stop_after_unimproved=2"]
    trained = tunedesk("train", "--base", str(tiny_base), "--max-steps", "60", *FAST, *early, data_dir=data)
    assert trained.returncode == 0, trained.stderr
    shown = job_json(data)
    scores = [(c["step"], c["answer_score"]) for c in shown["checkpoints"]]
    assert scores and all(score is not None for _, score in scores)  # each scored as it was saved
    # Where it should have stopped, from its own scores: the second checkpoint in a row below the best.
    best, unimproved, expected = None, 0, None
    for step, score in scores:
        best, unimproved = (score, 0) if best is None or score > best else (best, unimproved + 1)
        if unimproved == 2:
            expected = step
            break
    assert expected is not None and shown["step"] == expected < 60
    assert shown["state"] == "done" and shown["message"].startswith(f"Stopped early at step {expected} of 60: 2 ")
    assert (data / "jobs" / "1" / "eval" / "questions.jsonl").is_file()


def test_a_resumed_run_counts_each_checkpoints_last_score_in_step_order(tmp_path):
    from core.engine.train import _Scorer
    from core.jobdir.events import EventLog

    events = EventLog(tmp_path)
    for step, score in ((2, 0.5), (4, 0.3), (2, 0.2)):  # step 2 scored again later (`tunedesk eval`)
        events.write("score", step=step, answer_score=score)
    scorer = _Scorer(tmp_path, 4, load_config(overrides={"stop_after_unimproved": 2}))
    assert (scorer.best, scorer.unimproved, scorer.past_best()) == ((0.3, 4), 0, False)


def test_a_quiet_tool_is_cancelled_within_a_second(tmp_path):
    # Scoring loads a model and answers a question for up to a minute on a CPU without a line of output: a
    # cancel must not wait for the next one.
    import sys
    import time

    from core.errors import Cancelled
    from core.jobs.runners.engine_env import Engine
    from core.jobs.runners.local import run_tool

    asked = time.monotonic() + 1.0
    with pytest.raises(Cancelled):
        run_tool(
            "tests.quiet_tool",
            [],
            tmp_path / "tool.log",
            engine=Engine(sys.executable),
            on_event=lambda event: None,
            cancel=lambda: time.monotonic() > asked,
            what="The quiet tool",
        )
    assert time.monotonic() - asked < 1.0
