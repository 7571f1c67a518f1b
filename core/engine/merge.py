"""Merge a LoRA adapter into its base model, shard by shard: W += (alpha / r) * B @ A.

The base is read from its own folder, so a QLoRA adapter is merged into the original unquantized weights,
never into dequantized 4-bit ones. One shard is in memory at a time (peak resident memory: the largest
shard plus the adapter), so a 7B model merges on a 16 GB machine. Everything is checked from the files'
headers before a byte is written, and the output folder is written under a temporary name.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from core.errors import KnownError
from core.models import check_base_folder

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
            if file.is_file() and file.suffix not in (".safetensors", ".bin", ".pt", ".pth", ".ckpt"):
                shutil.copy2(file, partial / file.name)  # config, tokenizer.model and its config, chat template
        for done, shard in enumerate(shards, 1):
            tensors = load_file(shard)
            for name, (a, b) in pairs.items():
                if name in tensors:
                    # In place, the product in float32: one temporary of the weight's size, not three.
                    tensors[name] += (scale * (b.float() @ a.float())).to(tensors[name].dtype)
            save_file(tensors, partial / shard.name, metadata={"format": "pt"})
            del tensors
            if on_progress:
                on_progress(done, len(shards))
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


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
