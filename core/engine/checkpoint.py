"""Checkpoints: the adapter (peft, safetensors) plus everything a resume needs to continue exactly as an
uninterrupted run would (optimizer, scheduler, random state), under checkpoints/step-NNNNNN.

A checkpoint is written under a temporary name and renamed when complete, so a kill or a full disk never
leaves a checkpoint that looks finished; the previous ones are untouched.

It holds the whole adapter and optimizer state whatever the processes that trained (one, DDP, or sharded,
each holding a part; torch.distributed.checkpoint gathers them, keyed by parameter name), so a job resumes
in any number of processes.
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
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor

from core.errors import KnownError
from core.jobdir import layout

_PREFIX = "step-"
_PARTIAL = ".partial"
# Gathered whole on the CPU of process 0 (the others get nothing).
_GATHERED = StateDictOptions(full_state_dict=True, cpu_offload=True)


def name(step: int) -> str:
    return f"{_PREFIX}{step:06d}"


def complete(job_dir: Path) -> list[Path]:
    """The finished checkpoints, oldest first."""
    folder = job_dir / layout.CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(_PREFIX) and not p.name.endswith(_PARTIAL))


def save(job_dir: Path, step: int, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any, rank: int = 0) -> Path:
    """Every process calls it (sharded, the state is gathered from all of them); process 0 writes."""
    # The trained parameters alone: a model's state_dict holds bitsandbytes' quantization state under names
    # that are no attribute, which torch.distributed.checkpoint's get_model_state_dict cannot follow.
    adapter = {
        key: (p.full_tensor() if isinstance(p, DTensor) else p).detach().cpu()
        for key, p in model.named_parameters()
        if p.requires_grad
    }
    optimizer_state = get_optimizer_state_dict(model, optimizer, options=_GATHERED)
    final = job_dir / layout.CHECKPOINTS / name(step)
    if rank != 0:
        return final
    partial = final.with_name(final.name + _PARTIAL)
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        model.save_pretrained(partial, state_dict=adapter)
        tensors: dict[str, torch.Tensor] = {"rng.cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        state = {
            "step": step,
            "optimizer": split_state(optimizer_state, "optimizer", tensors),
            "scheduler": split_state(scheduler.state_dict(), "scheduler", tensors),
        }
        save_file(tensors, partial / "training_state.safetensors")
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
    """A checkpoint's optimizer, scheduler and random state into a fresh optimizer and scheduler of a model
    that holds its adapter (load_adapter, before the model was split between processes); returns its step."""
    state = json.loads((path / "training_state.json").read_text())
    tensors = load_file(path / "training_state.safetensors")
    torch.set_rng_state(tensors.pop("rng.cpu"))
    cuda_rng = tensors.pop("rng.cuda", None)
    if cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda_rng)
    # Each process reads the whole state and keeps its part.
    whole = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(model, optimizer, join_state(state["optimizer"], tensors), options=whole)
    scheduler.load_state_dict(join_state(state["scheduler"], tensors))
    return int(state["step"])


def load_adapter(path: Path, model: Any) -> None:
    """A checkpoint's adapter weights into a model with fresh adapters of the same shape."""
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))


def split_state(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A state dict as JSON, each tensor moved into `tensors` (for safetensors) and replaced by its key.

    Optimizers differ in what they keep (AdamW: step and moments; bitsandbytes' 8-bit: quantization maps
    and scales), so the walk takes any nesting of dicts, lists and numbers.
    """
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().clone()  # bitsandbytes shares tensors between states; safetensors may not
        return {_TENSOR: key}
    if isinstance(value, dict):
        # JSON keys are strings: remember which were integers (the optimizer's parameter indices).
        return {_INT_KEYS: [k for k in value if isinstance(k, int)]} | {
            str(k): split_state(v, f"{key}.{k}", tensors) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [split_state(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
    return value


def join_state(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if _TENSOR in value:
            return tensors[value[_TENSOR]]
        ints = {str(k) for k in value.get(_INT_KEYS, [])}
        return {(int(k) if k in ints else k): join_state(v, tensors) for k, v in value.items() if k != _INT_KEYS}
    if isinstance(value, list):
        return [join_state(v, tensors) for v in value]
    return value


_TENSOR = "__tensor__"
_INT_KEYS = "__int_keys__"


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
