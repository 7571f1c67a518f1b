"""GGUF models in the library: exported from a job's checkpoint (by the engine's export process) or
imported from a file the user has; `tunedesk models` lists both."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.db import now
from core.errors import KnownError
from core.jobdir import layout, provenance
from core.jobs import jobs as jobs_
from core.jobs.runners import engine_env
from core.jobs.runners.engine_env import Engine
from core.jobs.runners.local import run_tool
from core.library.store import Library
from core.llamacpp import DEFAULT_QUANT, check_gguf, template_renders
from core.progress import QUIET, Work


@dataclass(frozen=True)
class Model:
    id: int
    path: Path
    quant: str | None
    bytes: int
    sha256: str
    source: str  # export or import
    job_id: int | None
    step: int | None
    details: str | None
    created: str


def export_checkpoint(
    library: Library,
    job_id: int,
    *,
    step: int | None = None,
    quant: str = DEFAULT_QUANT,
    work: Work = QUIET,
) -> tuple[Model, dict[str, Any]]:
    """Export one checkpoint (the best when `step` is None) to a verified GGUF file and record it."""
    from core.llamacpp import check_quant

    check_quant(quant)
    job, _ = jobs_.sync(library, job_id)
    saved = jobs_.checkpoints(library, job_id)
    chosen = jobs_.best_checkpoint(saved) if step is None else next((c for c in saved if c.step == step), None)
    if chosen is None:
        steps = ", ".join(str(c.step) for c in saved) or "none yet"
        raise KnownError(f"Job {job_id} has no checkpoint {'' if step is None else step} (checkpoints: {steps}).")
    engine = engine_env.local(library.data_dir, work)
    outcome = _run_export(job.dir, chosen.step, quant, engine, work)
    return _record_export(library, job_id, outcome), {key: outcome[key] for key in DETAILS}


DETAILS = ("agreement", "types", "fallback")


def _record_export(library: Library, job_id: int, outcome: dict[str, Any]) -> Model:
    path = library.stored_path(outcome["path"])
    with library.write() as db:
        db.execute("DELETE FROM models WHERE path = ?", [path])
        row = {
            "path": path,
            "quant": outcome["quant"],
            "bytes": outcome["bytes"],
            "sha256": outcome["sha256"],
            "source": "export",
            "job_id": job_id,
            "step": outcome["step"],
            "details": json.dumps({key: outcome[key] for key in DETAILS}),
            "created": now(),
        }
        model_id = int(db.table("models").insert(row).last_pk)  # type: ignore[arg-type]
    return model(library, model_id)


def _record_finished_exports(library: Library) -> None:
    """Record the GGUF files an export finished but did not get to record (its command was killed after the
    file took its name): each has its receipt, and is the size the receipt says."""
    recorded = {row["path"] for row in library.db.query("SELECT path FROM models")}
    for job in jobs_.jobs(library):
        for receipt in sorted((job.dir / layout.EXPORTS).glob(f"*.gguf{layout.RECEIPT}")):
            path = receipt.with_name(receipt.name.removesuffix(layout.RECEIPT))  # here, in a copied library too
            try:
                outcome = json.loads(receipt.read_text()) | {"path": str(path)}
                whole = path.is_file() and path.stat().st_size == outcome["bytes"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a receipt half-written, or hand-edited: the file is not vouched for
            if whole and library.stored_path(path) not in recorded:
                _record_export(library, job.id, outcome)


def _run_export(job_dir: Path, step: int, quant: str, engine: Engine, work: Work) -> dict[str, Any]:
    def event(event: dict[str, Any]) -> None:
        if event["type"] == "phase":
            work.progress(event["phase"], event["done"], event["total"])

    args = [str(job_dir), str(step), quant]
    return run_tool(
        "core.engine.export",
        args,
        job_dir / "export.log",
        engine=engine,
        on_event=event,
        cancel=work.cancelled,
        what="The export",
    )


def import_gguf(library: Library, path: Path) -> Model:
    """Record a GGUF file the user has (a base model to compare with, say); it is not copied."""
    template = check_gguf(path)  # garbage after the magic would otherwise be found only when a question is asked
    if template and not template_renders(template):
        raise KnownError(
            f"{path.name} has a chat template that breaks the sandbox's rules or limits (it reaches outside it, "
            "or would hang or fill memory); it is not added."
        )
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    with library.write() as db:
        row = {
            "path": library.stored_path(path),
            "quant": None,
            "bytes": path.stat().st_size,
            "sha256": digest.hexdigest(),
            "source": "import",
            "created": now(),
        }
        existing = db.execute("SELECT id FROM models WHERE path = ?", [row["path"]]).fetchone()
        if existing:
            return model(library, existing[0])
        model_id = int(db.table("models").insert(row).last_pk)  # type: ignore[arg-type]
    return model(library, model_id)


def delete_model(library: Library, model_id: int) -> Model:
    """Forget a model; an exported file (Tunedesk's own) is deleted with it, an imported one is left."""
    gone = model(library, model_id)
    with library.write() as db:
        db.execute("DELETE FROM models WHERE id = ?", [model_id])
    if gone.source == "export":
        gone.path.unlink(missing_ok=True)
        layout.receipt(gone.path).unlink(missing_ok=True)
    return gone


def models(library: Library, *, job_id: int | None = None) -> list[Model]:
    """The library's GGUF models, oldest first (with any finished export not yet recorded)."""
    _record_finished_exports(library)
    where, params = ("WHERE job_id = ?", [job_id]) if job_id is not None else ("", [])
    return [_model(library, row) for row in library.db.query(f"SELECT * FROM models {where} ORDER BY id", params)]


def model(library: Library, model_id: int) -> Model:
    rows = list(library.db.query("SELECT * FROM models WHERE id = ?", [model_id]))
    if not rows:
        raise KnownError(f"No model {model_id}.", cli="`tunedesk models` lists them.")
    return _model(library, rows[0])


def _model(library: Library, row: dict[str, Any]) -> Model:
    return Model(**(row | {"path": library.full_path(row["path"])}))


@dataclass(frozen=True)
class Provenance:
    """What a GGUF file says it was made from, and how that stands against this library."""

    made: dict[str, Any]  # core/jobdir/provenance.py's keys, decoded
    intact: bool  # its tensors are the ones the export recorded
    documents: list[tuple[dict[str, Any], str]]  # each recorded document, and what became of it here


def made_from(path: Path) -> list[dict[str, Any]]:
    """The documents (name, SHA-256, pages) a GGUF file records it was made from; none for another file."""
    try:
        return provenance.read(path).get("documents", []) if path.is_file() else []
    except (KnownError, OSError, ValueError, KeyError, IndexError):
        return []


def check_provenance(library: Library, path: Path) -> Provenance:
    """Read a GGUF file's provenance (a file from another machine too) and check it: its tensors against
    the hash it records, its documents against the library."""
    try:
        made = provenance.read(path)
    except (OSError, ValueError, KeyError, IndexError) as error:
        raise KnownError(f"{path.name} is not a GGUF file that can be read ({error}).") from None
    if "tensors_sha256" not in made:
        raise KnownError(f"{path.name} records nothing it was made from: Tunedesk did not export it.")
    states = _states(library, made.get("documents", []))
    return Provenance(made, provenance.tensors_sha256(path) == made["tensors_sha256"], states)


UNCHANGED, CHANGED, REMOVED = (
    "unchanged in the library",
    "changed: the library holds another version",
    "not in the library",
)


def standing(library: Library, documents: list[dict[str, Any]]) -> str | None:
    """What became of a model's documents since it was made, in a few words; None while all are unchanged."""
    states = _states(library, documents)
    changed = [d["name"] for d, state in states if state == CHANGED]
    removed = [d["name"] for d, state in states if state == REMOVED]
    said = ([f"out of date: {', '.join(changed)} changed since"] if changed else []) + (
        [f"trained on a document you removed: {', '.join(removed)}"] if removed else []
    )
    return "; ".join(said) or None


def _states(library: Library, documents: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """Each document: unchanged; changed (a newer version replaced it, or the library holds another file
    under its name); or removed."""
    here = library.documents()
    hashes, names, replaced = {d.sha256 for d in here}, {d.name for d in here}, library.replaced()

    def state(document: dict[str, Any]) -> str:
        if document["sha256"] in hashes:
            return UNCHANGED
        return CHANGED if document["sha256"] in replaced or document["name"] in names else REMOVED

    return [(d, state(d)) for d in documents]
