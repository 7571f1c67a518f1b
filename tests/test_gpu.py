"""QLoRA on CUDA: 4-bit NF4 weights, the paged 8-bit optimizer, checkpoints, an exact resume, and the export
of a checkpoint to a GGUF that llama.cpp answers with as the merged model does.

Marked `gpu`: skipped where CUDA is missing (conftest.py), run wherever it exists.
"""

from __future__ import annotations

import json

import pytest

from core.engine import checkpoint
from core.jobdir.events import read_events
from tests.engine_fixtures import raw_examples, run_engine, step_losses, write_job

pytestmark = pytest.mark.gpu


def test_qlora_on_cuda_checkpoints_and_resumes_with_the_same_losses(tmp_path, tiny_base, sample_text):
    train, val = raw_examples(sample_text, 32), raw_examples(sample_text[12000:], 4)
    settings = {"qlora": True, "gradient_checkpointing": True, "max_steps": 12}
    reference = write_job(tmp_path / "reference", tiny_base, train, val, **settings)
    result = run_engine(reference)
    assert result.returncode == 0, result.stderr
    events = read_events(reference / "events.jsonl")[0]
    assert events[0].device == "cuda"
    state = checkpoint.complete(reference)[-1] / "training_state.safetensors"
    from safetensors.torch import load_file

    assert any(key.endswith(".state1") for key in load_file(state))  # bitsandbytes' 8-bit optimizer state

    resumed = write_job(tmp_path / "resumed", tiny_base, train, val, **(settings | {"max_steps": 12}))
    (resumed / "checkpoints").mkdir()
    import shutil

    shutil.copytree(checkpoint.complete(reference)[0], resumed / "checkpoints" / "step-000005")
    assert run_engine(resumed).returncode == 0
    expected = {step: loss for step, loss in step_losses(reference).items() if step > 5}
    assert step_losses(resumed) == pytest.approx(expected, rel=1e-3)


def test_a_qlora_checkpoint_exports_to_a_gguf_that_agrees_with_the_merged_model(tmp_path, tiny_base, sample_text):
    settings = {"qlora": True, "gradient_checkpointing": True, "max_steps": 3, "save_every": 3}
    job_dir = write_job(tmp_path / "1", tiny_base, raw_examples(sample_text, 8), **settings)
    trained = run_engine(job_dir)
    assert trained.returncode == 0, trained.stderr
    assert read_events(job_dir / "events.jsonl")[0][0].device == "cuda"
    result = run_engine(job_dir, "core.engine.export", "3", "q8_0")
    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    assert done["type"] == "done"
    assert done["agreement"] >= 0.9  # the GGUF's next tokens against the merged model's (core/engine/export.py)
