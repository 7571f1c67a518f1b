"""The model commands of the CLI: export (a checkpoint to a verified GGUF file), models (list, add) and verify
(what a GGUF file was made from, and whether that still stands)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from core.cli.common import open_library, row_id_argument
from core.errors import KnownError
from core.library.store import Library
from core.llamacpp import DEFAULT_QUANT, QUANTS
from core.progress import Work
from core.sizes import format_size

PHASES = ("merge", "convert", "quantize", "verify")


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    export = commands.add_parser("export", parents=[common], help="a job's checkpoint -> a verified GGUF file")
    export.add_argument("job", metavar="JOB")
    export.add_argument("--checkpoint", default="best", help="best (default) or a step number")
    export.add_argument("--quant", default=DEFAULT_QUANT, help=f"{', '.join(QUANTS)} (default: %(default)s)")
    export.set_defaults(run=_export)

    listing = commands.add_parser("models", parents=[common], help="exported and imported GGUF models")
    listing.add_argument(
        "--add", metavar="FILE", help="import a GGUF file you have (not copied), or smollm2: the packaged base model"
    )
    listing.add_argument(
        "--rm", type=row_id_argument, metavar="ID", help="forget a model (an exported file is deleted)"
    )
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_models)

    rebuild = commands.add_parser(
        "rebuild",
        parents=[common],
        help="make a model again from the library as it is now (a document removed or amended): dataset, "
        "training, export",
    )
    rebuild.add_argument("model", type=row_id_argument, metavar="MODEL", help="a model id (see `tunedesk models`)")
    rebuild.set_defaults(run=_rebuild)

    verify = commands.add_parser(
        "verify", parents=[common], help="whether a GGUF file is intact, and its documents still in the library"
    )
    verify.add_argument("file", type=Path, metavar="FILE.gguf")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(run=_verify)


def export_with_bars(library: Library, job_id: int, *, step: int | None, quant: str) -> None:
    """Export with one progress bar per phase, then the result in a few lines."""
    from tqdm import tqdm

    from core.models.gguf_models import export_checkpoint

    bars: dict[str, Any] = {}

    def phase(name: str, done: int, total: int) -> None:
        for earlier in PHASES[: PHASES.index(name)]:
            if earlier in bars and bars[earlier].n < bars[earlier].total:
                bars[earlier].update(bars[earlier].total - bars[earlier].n)
                bars[earlier].close()
        bar = bars.get(name) or bars.setdefault(name, tqdm(total=total, desc=f"{name:<8}", unit="step", disable=None))
        bar.update(done - bar.n)

    try:
        exported, details = export_checkpoint(library, job_id, step=step, quant=quant, work=Work(phase))
    finally:
        for bar in bars.values():
            bar.close()
    print(f"model {exported.id}: {exported.path} ({format_size(exported.bytes)}, {quant}, from step {exported.step})")
    print(f"  verified: llama.cpp loads it; tokenizer ids match; greedy agreement {details['agreement']:.0%}")
    if details["fallback"]:
        print(f"  note: {details['fallback']}")
    print(f"  sha256 {exported.sha256}")


def _export(args: argparse.Namespace) -> int:
    from core.jobs import jobs

    if args.checkpoint == "best":
        step = None
    elif args.checkpoint.isdigit():
        step = int(args.checkpoint)
    else:
        raise KnownError(f"--checkpoint takes best or a step number, not {args.checkpoint!r}.")
    with open_library(args) as library:
        export_with_bars(library, jobs.job(library, args.job).id, step=step, quant=args.quant)
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    from core.cli.common import PRINTED
    from core.cli.train import follow
    from core.jobs import jobs
    from core.models.gguf_models import model

    with open_library(args) as library:
        old = model(library, args.model)
        if old.job_id is None:
            raise KnownError(f"Model {old.id} was imported, not made here: there is no job to make it again from.")
        job, chosen = jobs.start_rebuild(library, old.job_id, work=PRINTED)
        print(f"job {job.id}: job {old.job_id} again, on dataset {chosen.id} ({chosen.train_examples} examples)")
        if follow(library, job.id) != 0:
            return 1
        export_with_bars(library, job.id, step=None, quant=old.quant or DEFAULT_QUANT)
    return 0


def _models(args: argparse.Namespace) -> int:
    from core.models.gguf_models import delete_model, import_gguf, made_from, models, standing

    with open_library(args) as library:
        if args.rm is not None:
            gone = delete_model(library, args.rm)
            print(f"model {gone.id} removed" + (f"; {gone.path} deleted" if gone.source == "export" else ""))
            return 0
        if args.add:
            from core.models.base_models import PACKAGED, packaged_file

            path = packaged_file(PACKAGED[args.add]) if args.add in PACKAGED else Path(args.add)
            added = import_gguf(library, path)
            print(f"model {added.id}: {added.path} ({format_size(added.bytes)})")
            return 0
        listed = [(m, made_from(m.path)) for m in models(library)]
        flags = {m.id: standing(library, documents) for m, documents in listed}
    if args.json:
        keys = ("id", "quant", "bytes", "sha256", "source", "job_id", "step", "created")
        rows = [
            {"path": str(m.path)} | {k: getattr(m, k) for k in keys} | {"made_from": made, "standing": flags[m.id]}
            for m, made in listed
        ]
        print(json.dumps({"models": rows}, indent=2))
        return 0
    if not listed:
        print("No models yet; `tunedesk export JOB` makes one, `tunedesk models --add FILE.gguf` adds one.")
    for m, _ in listed:
        origin = f"job {m.job_id} step {m.step}" if m.source == "export" else "imported"
        flag = f"  ({flags[m.id]})" if flags[m.id] else ""
        print(f"{m.id:>4}  {m.path.name}  {m.quant or '?'}  {format_size(m.bytes)}  {origin}{flag}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    """Exit 0 when the file is intact and every document it was made from is unchanged in the library."""
    from core.models.gguf_models import check_provenance

    with open_library(args) as library:
        checked = check_provenance(library, args.file)
    made, good = checked.made, checked.intact and all(s.startswith("unchanged") for _, s in checked.documents)
    if args.json:
        documents = [document | {"state": state} for document, state in checked.documents]
        print(json.dumps({"intact": checked.intact, "made_from": made | {"documents": documents}}, indent=2))
        return 0 if good else 1
    job, base = made.get("job", {}), made.get("base", {})
    print(
        f"{args.file.name}: "
        + ("intact" if checked.intact else "NOT intact: its tensors differ from the exported ones")
    )
    score = job.get("answer_score")
    print(
        f"  made by Tunedesk {made.get('version')} from job {job.get('job')}, step {job.get('step')}"
        + (f" (answer score {score:.3f})" if score is not None else "")
        + f", base {base.get('name')}"
    )
    for document, state in checked.documents:
        print(f"  {document['name']} ({document['pages']} pages, sha256 {document['sha256'][:12]}…): {state}")
    return 0 if good else 1
