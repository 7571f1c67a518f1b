"""Checkpoints: the adapter (peft, safetensors) plus everything a resume needs to continue exactly as an
uninterrupted run would (optimizer, scheduler, random state), under checkpoints/step-NNNNNN.

A checkpoint is written under a temporary name and renamed when complete, so a kill or a full disk never
leaves a checkpoint that looks finished; the previous ones are untouched.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from core.errors import KnownError

DIR = "checkpoints"
_PREFIX = "step-"
_PARTIAL = ".partial"


def name(step: int) -> str:
    return f"{_PREFIX}{step:06d}"


def complete(job_dir: Path) -> list[Path]:
    """The finished checkpoints, oldest first."""
    folder = job_dir / DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(_PREFIX) and not p.name.endswith(_PARTIAL))


def save(job_dir: Path, step: int, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any) -> Path:
    final = job_dir / DIR / name(step)
    partial = final.with_name(final.name + _PARTIAL)
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        model.save_pretrained(partial)
        tensors, rest = _flatten(optimizer.state_dict())
        tensors["rng.cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        save_file(tensors, partial / "training_state.safetensors")
        state = {"step": step, "optimizer": rest, "scheduler": scheduler.state_dict()}
        (partial / "training_state.json").write_text(json.dumps(state))
        for file in partial.iterdir():
            _fsync(file)
        if final.exists():  # a resumed run saving the step it resumed from
            shutil.rmtree(final)
        partial.rename(final)
        _fsync(final.parent)
    except (OSError, SafetensorError) as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise KnownError(
            f"The checkpoint at step {step} could not be written to {final.parent}: {_reason(error)}; "
            "the earlier checkpoints are kept."
        ) from error
    return final


def restore(path: Path, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any) -> int:
    """Load a checkpoint into a freshly set-up model, optimizer and scheduler; returns its step."""
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
    state = json.loads((path / "training_state.json").read_text())
    tensors = load_file(path / "training_state.safetensors")
    torch.set_rng_state(tensors.pop("rng.cpu"))
    cuda_rng = tensors.pop("rng.cuda", None)
    if cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda_rng)
    optimizer.load_state_dict(_unflatten(tensors, state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])


def _flatten(optimizer_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    # safetensors holds flat tensors only; the numbers and the param groups go to JSON.
    tensors: dict[str, torch.Tensor] = {}
    numbers: dict[str, dict[str, Any]] = {}
    for index, values in optimizer_state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.contiguous()
            else:
                numbers.setdefault(str(index), {})[key] = value
    return tensors, {"numbers": numbers, "param_groups": optimizer_state["param_groups"]}


def _unflatten(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in rest["numbers"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


def _reason(error: Exception) -> str:
    if isinstance(error, OSError):
        return error.strerror or str(error)
    # safetensors reports "Error while serializing: I/O error: No space left on device (os error 28)".
    return str(error).rsplit("I/O error: ", 1)[-1].split(" (os error")[0]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
