"""Merge a LoRA adapter into its base model, shard by shard: W += (alpha / r) * B @ A.

The base is read from its own folder, so a QLoRA adapter is merged into the original unquantized weights,
never into dequantized 4-bit ones. One tensor is read at a time and the output goes out in small shards,
so the memory the merge holds is a fraction of a shard plus the adapter: a 7B model merges on a 16 GB
machine. Everything is checked from the files'
headers before a byte is written, and the output folder is written under a temporary name.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from core.errors import KnownError
from core.jobdir.base_folder import check_base_folder

ADAPTER_PREFIX = "base_model.model."


def merge(base: Path, adapter: Path, out: Path, *, on_progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the merged model (safetensors, config, tokenizer, chat template) to `out`."""
    check_base_folder(base)
    config = json.loads((adapter / "adapter_config.json").read_text())
    if config.get("use_dora") or config.get("fan_in_fan_out"):
        raise KnownError(f"The adapter in {adapter} is not a plain LoRA adapter; Tunedesk cannot merge it.")
    rank = int(config["r"])
    scale = float(config["lora_alpha"]) / (rank**0.5 if config.get("use_rslora") else rank)
    pairs = _adapter_pairs(adapter)
    shards = sorted(base.glob("*.safetensors"))
    _check_shapes(base, shards, pairs, adapter)

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        for file in base.iterdir():
            if file.is_file() and file.suffix not in _NOT_COPIED and not file.name.endswith(".safetensors.index.json"):
                shutil.copy2(file, partial / file.name)  # config, tokenizer.model and its config, chat template
        _write_merged(shards, pairs, scale, partial, on_progress)
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def _write_merged(shards: list[Path], pairs: dict, scale: float, out: Path, on_progress) -> None:
    """Merged tensors, read one at a time from the memory-mapped input and written in output shards of an
    eighth of the largest input shard, so that the memory the merge holds is a small output shard, not a
    whole input shard (the mapped input pages are the page cache's, dropped under memory pressure)."""
    limit = max(shard.stat().st_size for shard in shards) // 8
    group: dict[str, torch.Tensor] = {}
    written: list[tuple[Path, list[str]]] = []
    total = 0

    def flush() -> None:
        path = out / f"part-{len(written):05d}.safetensors"
        save_file(group, path, metadata={"format": "pt"})
        written.append((path, list(group)))
        group.clear()
        _release_freed_memory()

    for done, shard in enumerate(shards, 1):
        with safe_open(shard, "pt") as reader:
            for name in reader.keys():  # noqa: SIM118  (safe_open is not a mapping)
                tensor = reader.get_tensor(name)
                if name in pairs:
                    a, b = pairs[name]
                    # Not in place: the tensor is a view of the mapped file, and writing to it would turn the
                    # file's pages into private memory that lives as long as the mapping (the whole shard).
                    tensor = tensor + (scale * (b.float() @ a.float())).to(tensor.dtype)
                group[name] = tensor
                total += tensor.numel() * tensor.element_size()
                if sum(t.numel() * t.element_size() for t in group.values()) >= limit:
                    flush()
        if on_progress:
            on_progress(done, len(shards))
    if group:
        flush()
    weight_map: dict[str, str] = {}
    for number, (path, names) in enumerate(written, 1):
        final = out / f"model-{number:05d}-of-{len(written):05d}.safetensors"
        path.rename(final)
        weight_map |= dict.fromkeys(names, final.name)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


_NOT_COPIED = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def _release_freed_memory() -> None:
    # glibc keeps freed tensor memory in its heap for reuse; without this the merge's footprint creeps up
    # shard after shard (measured: 3.0x the largest shard instead of 1.5x, benchmarks/export.py).
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _adapter_pairs(adapter: Path) -> dict:
    """Base weight name -> (lora_A, lora_B) tensors."""
    try:
        tensors = load_file(adapter / "adapter_model.safetensors")
    except (OSError, SafetensorError) as error:
        raise KnownError(f"The adapter in {adapter} cannot be read ({error}).") from None
    pairs = {}
    for key, a in tensors.items():
        if key.endswith(".lora_A.weight"):
            stem = key.removeprefix(ADAPTER_PREFIX).removesuffix(".lora_A.weight")
            pairs[f"{stem}.weight"] = (a, tensors[key.replace(".lora_A.", ".lora_B.")])
    if not pairs:
        raise KnownError(f"The adapter in {adapter} holds no LoRA weights.")
    return pairs


def _check_shapes(base: Path, shards: list[Path], pairs: dict, adapter: Path) -> None:
    shapes: dict[str, list[int]] = {}
    for shard in shards:
        try:
            with safe_open(shard, "pt") as file:
                for key in file.keys():  # noqa: SIM118  (safe_open is not a mapping)
                    shapes[key] = file.get_slice(key).get_shape()
        except (OSError, SafetensorError):
            raise KnownError(f"The base model file {shard.name} in {base} is damaged (truncated?).") from None
    for name, (a, b) in pairs.items():
        if name not in shapes:
            raise KnownError(f"The adapter in {adapter} was trained on another base model: {base.name} has no {name}.")
        expected = [b.shape[0], a.shape[1]]
        if shapes[name] != expected:
            raise KnownError(
                f"The adapter in {adapter} was trained on another base model: {name} is {shapes[name]} in "
                f"{base.name} but {expected} in the adapter."
            )
