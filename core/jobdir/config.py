"""Training settings: a preset (a commented TOML file in presets/) plus the user's overrides, checked
before any training starts so that a typo fails in a second, not after the model has loaded.

No torch here: the app validates a job's settings before it starts the engine.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import KnownError

PRESETS = Path(__file__).parent / "presets"
PRESET_NAMES = ("quick", "balanced", "thorough")  # presets/*.toml, smallest first
DEFAULT_PRESET = "quick"


class ConfigError(KnownError):
    """A setting that cannot work; the message names the setting."""


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    epochs: float = 1.0
    max_steps: int = 0  # 0: as many as `epochs` take
    seq_len: int = 1024  # tokens in one packed row
    batch_rows: int = 1  # packed rows side by side in one forward pass
    grad_accum: int = 1  # forward passes per optimizer step
    lr: float = 2e-4
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    eval_every: int = 50
    save_every: int = 100
    # Stop once this many checkpoints in a row have not raised the answer score (each checkpoint scored on
    # the dataset's held-out questions as it is saved); 0: no scoring during training, no early stop.
    stop_after_unimproved: int = 0
    # auto: bfloat16 on CUDA; on CPU float32 weights, computed in bfloat16 where the CPU has bf16 units
    dtype: str = "auto"  # auto, float32 or bfloat16
    qlora: bool = False  # 4-bit NF4 base weights (bitsandbytes); on CUDA
    gradient_checkpointing: bool = False
    # On CUDA, choose batch_rows (keeping batch_rows x grad_accum) and gradient_checkpointing from the free
    # GPU memory (core/engine/sizing.py); off: as set.
    fit_memory: bool = True
    # In several processes, each holds 1/N of the base weights (FSDP) instead of all of them (DDP): for a base
    # that does not fit one GPU; fit_memory turns it on where it has to. Not with qlora.
    shard_weights: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(preset: str = DEFAULT_PRESET, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The preset's settings with `overrides` on top; raises ConfigError naming the first bad setting."""
    path = PRESETS / f"{preset}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.toml")))
        raise ConfigError(f"There is no preset {preset!r}; the presets are {known}.")
    with open(path, "rb") as file:
        values = tomllib.load(file)
    return config_from(values | (overrides or {}))


def preset_description(preset: str) -> str:
    """What a preset is for, as its file's opening comment says it ("a first look in minutes. One pass over
    the dataset with a small adapter.")."""
    said = []
    for line in (PRESETS / f"{preset}.toml").read_text(encoding="utf-8").splitlines():
        if not line.startswith("# ") or line.startswith("#   "):  # the usage line ends the description
            break
        said.append(line[2:].strip())
    return " ".join(said).removeprefix(f"{preset}:").strip()


def config_from(values: dict[str, Any]) -> TrainConfig:
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for key in values:
        if key not in fields:
            raise ConfigError(f"Unknown setting {key!r}; the settings are {', '.join(fields)}.")
    checked = {key: _typed(key, value, type(getattr(TrainConfig(), key))) for key, value in values.items()}
    config = TrainConfig(**checked)
    _check_ranges(config)
    return config


def parse_override(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` from the command line, VALUE read as TOML (`lr=1e-4`, `target_modules=["q_proj"]`),
    or as a plain string when it is not TOML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{text!r} is not a setting; write KEY=VALUE, for example lr=1e-4.")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value


def _typed(key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf"):
        return float(value)  # caught by the range check, with a better sentence than a type error
    if kind is list and isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise ConfigError(f"The setting {key} must be {_KIND_NAMES[kind]}, not {value!r}.")


_KIND_NAMES = {int: "a whole number", float: "a number", bool: "true or false", list: "a list of names", str: "text"}


# Far past any real run (a 7B epoch over a 181-page contract is about 200 steps), and small enough that every
# count derived from them fits SQLite's integers: a step count of 1e23 once made every job command fail.
MOST_STEPS = 10_000_000
MOST_EPOCHS = 1000


def _check_ranges(config: TrainConfig) -> None:
    rules = [
        ("seed", 0 <= config.seed < 2**32, "between 0 and 4294967295"),
        (
            "epochs",
            math.isfinite(config.epochs) and 0 < config.epochs <= MOST_EPOCHS,
            f"above 0 and at most {MOST_EPOCHS}",
        ),
        (
            "max_steps",
            0 <= config.max_steps <= MOST_STEPS,
            f"between 0 and {MOST_STEPS:,} (0: as many as the epochs take)",
        ),
        ("seq_len", 16 <= config.seq_len <= 131072, "between 16 and 131072 tokens"),
        ("batch_rows", 1 <= config.batch_rows <= 1024, "between 1 and 1024"),
        ("grad_accum", 1 <= config.grad_accum <= 1024, "between 1 and 1024"),
        ("lr", math.isfinite(config.lr) and 0 < config.lr < 1, "a positive number below 1, such as 2e-4"),
        ("warmup_steps", 0 <= config.warmup_steps <= MOST_STEPS, f"between 0 and {MOST_STEPS:,}"),
        ("weight_decay", math.isfinite(config.weight_decay) and config.weight_decay >= 0, "at least 0"),
        ("max_grad_norm", math.isfinite(config.max_grad_norm) and config.max_grad_norm > 0, "a positive number"),
        ("lora_rank", 1 <= config.lora_rank <= 4096, "between 1 and 4096"),
        ("lora_alpha", math.isfinite(config.lora_alpha) and config.lora_alpha > 0, "a positive number"),
        ("lora_dropout", 0 <= config.lora_dropout < 1, "between 0 and 1"),
        ("target_modules", bool(config.target_modules), "at least one module name"),
        ("dtype", config.dtype in ("auto", "float32", "bfloat16"), "auto, float32 or bfloat16"),
        ("eval_every", 1 <= config.eval_every <= MOST_STEPS, f"between 1 and {MOST_STEPS:,}"),
        ("save_every", 1 <= config.save_every <= MOST_STEPS, f"between 1 and {MOST_STEPS:,}"),
        ("stop_after_unimproved", 0 <= config.stop_after_unimproved <= 100, "between 0 and 100 (0: never)"),
    ]
    for name, ok, expected in rules:
        if not ok:
            raise ConfigError(f"The setting {name} must be {expected}, not {getattr(config, name)!r}.")
    if config.shard_weights and config.qlora:
        raise ConfigError(
            "The settings shard_weights and qlora cannot both be on: FSDP2 gathers bitsandbytes' 4-bit weights "
            "without their quantization state; turn one of them off."
        )
