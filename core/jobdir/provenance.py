"""What an exported model was made from: the documents (name, SHA-256, pages), the dataset (its settings, the
SHA-256 of its train and validation files), the base model (its name, the SHA-256 of its weights), the job,
the step and its answer score, and the Tunedesk version. The export writes it into the GGUF file as keys of
their own (tunedesk.*), with the SHA-256 of the file's tensor data, so that a copy on another machine can
still be checked: `tunedesk verify FILE.gguf`.

The documents come from the dataset's dataset.json, which the app writes when it builds the dataset (the
engine never reads the library). Standard library, and llama.cpp's gguf-py for the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from core.jobdir import layout
from core.jobdir.events import Score, read_events
from core.jobdir.job_spec import JobSpec

DATASET_INFO = "dataset.json"  # in a dataset's folder: {"settings", "documents": [{"name", "sha256", "pages"}]}
PREFIX = "tunedesk."
TENSORS_KEY = PREFIX + "tensors_sha256"


def keys(job_dir: Path, step: int, *, base_sha256: str, tensors_sha256: str, version: str) -> dict[str, str]:
    """The GGUF keys of a job's checkpoint; structured values are JSON text."""
    job = JobSpec.read(job_dir)
    dataset = job_dir / layout.DATASET
    info = json.loads((dataset / DATASET_INFO).read_text()) if (dataset / DATASET_INFO).is_file() else {}
    scores = [e for e in read_events(job_dir / layout.EVENTS)[0] if isinstance(e, Score) and e.step == step]
    return {
        PREFIX + "version": version,
        PREFIX + "documents": json.dumps(info.get("documents", [])),
        PREFIX + "dataset": json.dumps(
            {
                "settings": info.get("settings", {}),
                "train_sha256": file_sha256(dataset / layout.TRAIN),
                "val_sha256": file_sha256(dataset / layout.VAL) if (dataset / layout.VAL).is_file() else None,
            }
        ),
        PREFIX + "base": json.dumps({"name": job.label, "sha256": base_sha256}),
        PREFIX + "job": json.dumps(
            {"job": job_dir.name, "step": step, "answer_score": scores[-1].answer_score if scores else None}
        ),
        TENSORS_KEY: tensors_sha256,
    }


def read(path: Path) -> dict[str, Any]:
    """A GGUF file's provenance, its JSON values decoded ({} for a file Tunedesk did not export); KnownError
    for a file that is no usable GGUF."""
    from core.llamacpp import check_gguf, gguf_py

    check_gguf(path)
    fields = gguf_py().GGUFReader(path, "r").fields
    found = {name.removeprefix(PREFIX): fields[name].contents() for name in fields if name.startswith(PREFIX)}
    return {key: value if key in ("version", "tensors_sha256") else json.loads(value) for key, value in found.items()}


def tensors_sha256(path: Path) -> str:
    """The SHA-256 of a GGUF file's tensors (each one's name and bytes, in order): what adding metadata,
    which moves and pads the data, does not change."""
    from core.llamacpp import gguf_py

    digest = hashlib.sha256()
    for tensor in gguf_py().GGUFReader(path, "r").tensors:
        digest.update(tensor.name.encode())
        digest.update(tensor.data.tobytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
