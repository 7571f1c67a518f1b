"""`python -m core.engine.export JOB_DIR STEP QUANT`: one checkpoint of a job to one verified GGUF file.

Phases: merge (the adapter into the base, shard by shard), convert (llama.cpp's converter, f16), quantize
(llama.cpp's quantizer, then the provenance keys: core/jobdir/provenance.py), verify (the GGUF loads; its
tokenizer and greedy predictions agree with the merged model; the chat template renders in the sandbox).
Progress and the outcome go to stdout as JSON lines:
    {"type": "phase", "phase": "merge", "done": 1, "total": 2}
    {"type": "done", "path", "quant", "bytes", "sha256", "agreement", "types", "fallback"}
    {"type": "error", "message"} | {"type": "cancelled"}
Everything is written under exports/ with temporary names; only the final GGUF remains, and only when
verification passed, with its receipt (the done event's fields) written just before it takes its name, so
that the app can record a file whose export command was killed after the rename. SIGTERM or SIGINT cancels,
leaving nothing that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from core import __version__
from core.engine import checkpoint, gguf, tool
from core.engine.merge import merge
from core.errors import KnownError
from core.jobdir import layout, provenance
from core.jobdir.job_spec import JobSpec
from core.llamacpp import check_quant
from core.sizes import format_size

NEED_AGREEMENT = {"f16": 0.95}  # quantized files are reported, not held to it: 4 bits do change predictions


def export_stem(job_dir: Path, job: JobSpec, step: int, quant: str) -> str:
    """The exported file's name without .gguf: the base it was tuned from, the job and the step, the
    quantization ("smollm2-job3-step-000010-q8_0"), so that a file copied out of the library still says
    what it is."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", (job.base_name or Path(job.base).name).rsplit("/", 1)[-1])
    return f"{base.strip('-.') or 'model'}-job{job_dir.name}-{checkpoint.name(step)}-{quant}"


def export(job_dir: Path, step: int, quant: str) -> dict[str, Any]:
    check_quant(quant)
    job = JobSpec.read(job_dir)
    base = Path(job.base)
    adapter = job_dir / layout.CHECKPOINTS / checkpoint.name(step)
    if not (adapter / "adapter_model.safetensors").is_file():
        raise KnownError(f"Job {job_dir.name} has no checkpoint at step {step}.")
    folder = job_dir / layout.EXPORTS
    folder.mkdir(exist_ok=True)
    _check_space(base, folder, quant)
    stem = export_stem(job_dir, job, step, quant)
    merged, f16 = folder / f"{stem}.merged", folder / f"{stem}.f16.gguf.work"
    final = folder / f"{stem}.gguf"
    try:
        merge(base, adapter, merged, on_progress=lambda done, total: _phase("merge", done, total))
        _phase("convert", 0, 1)
        gguf.convert(merged, f16)
        _phase("quantize", 0, 1)
        work = final.with_name(final.name + ".work")
        if quant == "f16":
            f16.replace(work)
        else:
            gguf.quantize(f16, work, quant)
        made_from = provenance.keys(
            job_dir,
            step,
            base_sha256=_weights_sha256(base),
            tensors_sha256=provenance.tensors_sha256(work),
            version=__version__,
        )
        gguf.add_metadata(work, made_from)
        _phase("verify", 0, 1)
        checked = gguf.verify(work, merged)
        problems = checked.problems(need_agreement=NEED_AGREEMENT.get(quant, 0.0))
        if problems:
            raise KnownError(f"The GGUF export of step {step} failed verification: {'; '.join(problems)}.")
        types = gguf.tensor_types(work)
        outcome = {
            "path": str(final),
            "step": step,
            "quant": quant,
            "bytes": work.stat().st_size,
            "sha256": _sha256(work),
            "agreement": round(checked.agreement, 4),
            "types": dict(types),
            "fallback": gguf.fallbacks(quant, types),
        }
        layout.receipt(final).write_text(json.dumps(outcome))
        work.replace(final)
    finally:
        shutil.rmtree(merged, ignore_errors=True)
        shutil.rmtree(merged.with_name(merged.name + ".partial"), ignore_errors=True)
        for leftover in folder.glob(f"{stem}*.work*"):
            leftover.unlink()
    return outcome


def _check_space(base: Path, folder: Path, quant: str) -> None:
    """Merged copy + f16 GGUF + quantized GGUF, at most about three times the base on disk."""
    size = sum(f.stat().st_size for f in base.glob("*.safetensors"))
    need = 3 * size if quant != "f16" else 2 * size
    free = shutil.disk_usage(folder).free
    if free < need:
        raise KnownError(
            f"Exporting needs about {format_size(need)} free in {folder}, but only {format_size(free)} is free."
        )


def _weights_sha256(base: Path) -> str:
    """One SHA-256 over the base model's safetensors files, in name order."""
    digest = hashlib.sha256()
    for path in sorted(base.glob("*.safetensors")):
        with open(path, "rb") as file:
            while block := file.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _phase(name: str, done: int, total: int) -> None:
    tool.say("phase", phase=name, done=done, total=total)


if __name__ == "__main__":
    sys.exit(tool.main(lambda: export(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])))
