"""Which PyTorch build the engine's venv gets (core/jobs/runners/engine_env.py). The venv's making itself is
tested through the bundle (tests/test_package.py), which has no engine of its own."""

from __future__ import annotations

import pytest

from core.errors import KnownError
from core.jobs.runners import engine_env
from core.progress import QUIET

# nvidia-smi's header on the H100 machine this was checked on (driver 580), and on an older driver.
H100 = "| NVIDIA-SMI 580.159.04             Driver Version: 580.159.04     CUDA Version: 13.0     |"
OLDER = "| NVIDIA-SMI 535.230.02             Driver Version: 535.230.02     CUDA Version: 12.2     |"


def test_the_newest_cuda_build_the_driver_runs_is_chosen():
    assert engine_env.driver_cuda(H100) == (13, 0)
    assert engine_env.torch_build((13, 0)) == "cu130"
    assert engine_env.torch_build((12, 9)) == "cu128"
    assert engine_env.torch_build((12, 6)) == "cu126"
    assert engine_env.torch_build(None) == "cpu"  # no nvidia-smi, or it says nothing


def test_a_driver_too_old_for_pytorch_is_named():
    with pytest.raises(KnownError, match=r"supports CUDA 12\.2; PyTorch needs 12\.6 or newer"):
        engine_env.torch_build(engine_env.driver_cuda(OLDER))


def test_only_a_cuda_venv_gets_bitsandbytes_and_torch_comes_from_its_builds_index():
    cpu = engine_env.install_steps("python3", "/v", build="cpu")
    cuda = engine_env.install_steps("python3", "/v", build="cu128")
    assert cpu[0] == ["python3", "-m", "venv", "/v"]
    assert cpu[1][-3:] == ["--index-url", "https://download.pytorch.org/whl/cpu", engine_env.TORCH]
    assert cuda[1][-3:] == ["--index-url", "https://download.pytorch.org/whl/cu128", engine_env.TORCH]
    assert not any("bitsandbytes" in word for word in cpu[2])
    assert any(word.startswith("bitsandbytes") for word in cuda[2])


def test_a_disk_without_room_for_the_venv_is_named_before_anything_is_made(tmp_path, monkeypatch):
    monkeypatch.setitem(engine_env.ROOM_BYTES, "cpu", 10**18)  # an exabyte: no disk here has it
    monkeypatch.setitem(engine_env.ROOM_BYTES, "cuda", 10**18)
    with pytest.raises(KnownError, match=r"needs about 931322574.6 GB free in .*, but only .* is free\."):
        engine_env._make_venv(tmp_path / "venv", QUIET)
    assert list(tmp_path.iterdir()) == []


def test_settings_says_where_training_here_runs(tmp_path):
    # This test venv has the engine's packages: the app's own Python runs it, and nothing is to be set up.
    assert engine_env.local_state(tmp_path).startswith("ready: the app's own Python")
    assert not (tmp_path / "engine").exists()
