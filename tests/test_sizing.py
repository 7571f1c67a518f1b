"""The cost arithmetic of issue 9 (core/engine/sizing.py), checked against the figures the issue states and
against the GPU run recorded in benchmarks/results/."""

from __future__ import annotations

import json

import pytest

from core.engine import sizing


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

    run = json.loads((RESULTS / "gpu_reference_cuda.json").read_text())
    projection = sizing.project(run["tokens_per_s"], sizing.MISTRAL_7B_PARAMETERS, sizing.PEAK_BF16[run["gpu"]])
    # 2,584 tokens/s of a 7.24B model on an H100 is about 7.6% MFU: an A10G epoch in about 12 minutes.
    assert 0.07 < projection.mfu < 0.08
    assert projection.seconds == pytest.approx(run["a10g_epoch_s"], abs=1)
    assert 700 < projection.seconds < 800 and projection.usd > 0.20
