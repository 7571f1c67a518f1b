"""The cost arithmetic of issue 9 (core/engine/sizing.py), checked against the figures the issue states and
against the GPU run recorded in benchmarks/results/."""

from __future__ import annotations

import dataclasses
import json

import pytest

from core.engine import sizing
from core.errors import KnownError


def test_the_reference_job_is_about_four_petaflops_an_epoch():
    # The issue: about 4 x 7.2e9 x 136k = 3.9e15 FLOPs an epoch.
    assert sizing.training_flops(7.2e9, 136_000) == pytest.approx(3.9e15, rel=0.01)


def test_an_epoch_at_forty_percent_of_an_a10g_takes_under_three_minutes():
    h100 = sizing.PEAK_BF16["NVIDIA H100 80GB HBM3"]
    tokens_per_s = 0.4 * h100 / (4 * sizing.MISTRAL_7B_PARAMETERS)  # 40% MFU on an H100
    projection = sizing.project(tokens_per_s, sizing.MISTRAL_7B_PARAMETERS, h100)
    assert projection.mfu == pytest.approx(0.4)
    assert projection.seconds == pytest.approx(3.94e15 / (0.4 * 70e12), rel=0.01)  # about 141 s
    assert projection.usd == pytest.approx(projection.seconds / 3600 * 1.006)


def test_the_recorded_h100_run_projects_to_the_a10g():
    from benchmarks.common import RESULTS

    run = json.loads((RESULTS / "gpu_reference.json").read_text())
    projection = sizing.project(run["tokens_per_s"], sizing.MISTRAL_7B_PARAMETERS, sizing.PEAK_BF16[run["gpu"]])
    # 2,584 tokens/s of a 7.24B model on an H100 is about 7.6% MFU: an A10G epoch in about 12 minutes.
    assert 0.07 < projection.mfu < 0.08
    assert projection.seconds == pytest.approx(run["a10g_epoch_s"], abs=1)
    assert 700 < projection.seconds < 800 and projection.usd > 0.20


MISTRAL_7B = sizing.Shape(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, vocab=32000)
GiB = sizing.GiB


def test_the_memory_model_gives_back_the_peaks_measured_on_an_h100():
    """In-sample: its constants were fitted to these two figures (docs/benchmarks.md, 2 x 768 tokens)."""
    from benchmarks.train import MISTRAL_7B as MISTRAL_7B_CONFIG  # the benchmarks' 7B shape

    assert sizing.Shape.of(MISTRAL_7B_CONFIG) == MISTRAL_7B
    assert MISTRAL_7B.parameters == pytest.approx(sizing.MISTRAL_7B_PARAMETERS, rel=0.001)
    on = sizing.training_bytes(MISTRAL_7B, 2 * 768, qlora=True, rank=16, checkpointing=True)
    off = sizing.training_bytes(MISTRAL_7B, 2 * 768, qlora=True, rank=16, checkpointing=False, dropout=False)
    assert on / GiB == pytest.approx(6.1, rel=0.05) and off / GiB == pytest.approx(26.5, rel=0.05)


def test_the_micro_batch_and_checkpointing_follow_the_free_memory():
    from core.jobdir.config import load_config

    reference = load_config("quick", {"qlora": True, "seq_len": 768, "batch_rows": 2, "grad_accum": 2})

    def fitted(free_gib: float, processes: int = 1, config=reference) -> tuple[int, int, bool]:
        chosen = sizing.fit_memory(config, MISTRAL_7B, free_gib * GiB, processes)
        return chosen.batch_rows, chosen.grad_accum, chosen.gradient_checkpointing

    assert fitted(79) == (4, 1, False)  # an H100: the whole step at once, no recomputing
    assert fitted(22) == (1, 4, False)  # an A10G: one row at a time fits without checkpointing
    assert fitted(8) == (2, 2, True)  # a small card: checkpointing, and two rows then fit
    assert fitted(79, processes=2) == (2, 2, False)  # each process takes half a step's rows
    # Without dropout no layer keeps a dropped copy of its input: two rows fit where one did.
    assert fitted(32) == (1, 4, False) and fitted(32, config=dataclasses.replace(reference, lora_dropout=0)) == (
        2,
        2,
        False,
    )
    with pytest.raises(KnownError, match=r"One row of 768 tokens needs about 5.0 GiB .* 4.0 GiB is free; lower seq"):
        fitted(4)
    assert sizing.Shape.of({"n_embd": 768, "n_layer": 12}) is None  # not Llama-like: the settings stay


def test_a_base_too_large_for_one_gpu_is_shared_between_the_processes():
    """7B in bfloat16, 1 x 768 tokens: 14.7 GiB whole with checkpointing, 5.6 GiB in each of 4 sharing it."""
    from core.jobdir.config import load_config

    bf16 = load_config("quick", {"seq_len": 768, "batch_rows": 1, "grad_accum": 4})

    def fitted(free_gib: float, config=bf16):
        chosen = sizing.fit_memory(config, MISTRAL_7B, free_gib * GiB, 4)
        return chosen.shard_weights, chosen.gradient_checkpointing

    assert fitted(40) == (False, False)  # it fits whole: each process holds the base (DDP)
    assert fitted(20) == (False, True)  # recomputing is preferred to gathering the weights at every layer
    assert fitted(8) == (True, True)  # only shared between the 4
    assert fitted(40, dataclasses.replace(bf16, shard_weights=True)) == (True, False)  # as the settings ask
    with pytest.raises(KnownError, match=r"needs about 5.6 GiB of GPU memory in each of 4 processes sharing"):
        fitted(4)
    qlora = dataclasses.replace(bf16, qlora=True)
    assert fitted(8, qlora) == (False, True)  # 4-bit weights are never shared (config.py refuses it)
    with pytest.raises(KnownError, match=r"needs about 14.7 GiB of GPU memory and 8.0 GiB is free"):
        sizing.fit_memory(bf16, MISTRAL_7B, 8 * GiB, 1)  # one process has nobody to share with
