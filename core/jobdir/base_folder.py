"""What a job's base model is, as the job directory names it (job.json's `base` and `base_name`): `demo` for the
built-in toy base that the job builds itself, or a folder the engine may load. The folder is checked here, by
the app before a job is made and by the engine before it reads a weight, so that opening a model never runs
code from it (docs/training.md). Standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.errors import KnownError

DEMO = "demo"
DEMO_ONE_PROCESS = "The built-in demo base trains in one process only."


class ModelError(KnownError):
    """A base model that cannot be used; the message names the folder and the reason."""


def check_base_folder(path: Path) -> None:
    """Refuse, with one sentence, a folder that is not a loadable safetensors model without custom code."""
    if not path.is_dir():
        raise ModelError(f"The base model {path} is not a folder (nor `demo`, nor a hub id such as org/name).")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelError(f"The base model folder {path} has no config.json: it is not a Hugging Face model.")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ModelError(f"The config.json of {path} is not valid JSON.") from None
    if not isinstance(config, dict):
        raise ModelError(f"The config.json of {path} is not a JSON object.")
    for name in ("config.json", "tokenizer_config.json"):
        if _needs_code(path / name):
            raise ModelError(
                f"The base model {path.name} needs its own Python code ({name} has auto_map); "
                "Tunedesk never runs code that comes with a model."
            )
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        if pickles:
            raise ModelError(
                f"The base model {path.name} has only pickle weights ({pickles[0]}), which can run code when "
                "loaded; Tunedesk loads safetensors only. Convert it to safetensors first."
            )
        raise ModelError(f"The base model folder {path} has no weights (no .safetensors file).")
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        raise ModelError(f"The base model folder {path} has no tokenizer (tokenizer.json or tokenizer.model).")


def _needs_code(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and bool(data.get("auto_map"))
