"""The headless commands (DESIGN.md, "The command line"): a thin layer over the core functions.

Exit status: 0 success, 1 a failure the user can fix (the message says what), 2 wrong usage,
130 stopped with Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path

from core import RESOURCES, cli_chat, cli_hosts, cli_models, cli_train, default_data_dir, prompts, versions
from core.chunking import DEFAULT_SIZE
from core.errors import Cancelled, KnownError
from core.extract import format_size
from core.library import DATABASE, Library, known_error, shown


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 2
    if sys.stdin.isatty():  # a key file's passphrase is asked for, at a terminal; kept in memory only
        import getpass

        prompts.ask_secret = getpass.getpass
    try:
        versions.check(versions.APP)
        return args.run(args)
    except KnownError as error:
        print(f"tunedesk: {error}", file=sys.stderr)
        return 1
    except sqlite3.Error as error:
        # A library damaged after it opened fails on its first read; known_error re-raises a bug.
        database = (getattr(args, "data_dir", None) or default_data_dir()) / DATABASE
        print(f"tunedesk: {known_error(error, database)}", file=sys.stderr)
        return 1
    except (Cancelled, KeyboardInterrupt):
        print("tunedesk: stopped; what was finished is kept.", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the library's folder (default: $TUNEDESK_HOME or the user data dir)",
    )
    parser = argparse.ArgumentParser(
        prog="tunedesk",
        description="Your documents, a fine-tuned LLM, offline. Without a command: the desktop app.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    add = commands.add_parser("add", parents=[common], help="add documents (PDF, DOCX, TXT, Markdown)")
    add.add_argument("files", nargs="+", type=Path, metavar="FILE")
    add.add_argument("-r", "--recursive", action="store_true", help="add the documents inside folders")
    add.add_argument("--chunk-size", type=int, default=DEFAULT_SIZE, help="characters per chunk (default %(default)s)")
    add.add_argument("--overlap", type=int, default=0, help="characters each chunk repeats of the one before")
    add.set_defaults(run=_add)

    docs = commands.add_parser("docs", parents=[common], help="list the documents in the library")
    docs.add_argument("--json", action="store_true")
    docs.set_defaults(run=_docs)

    rm = commands.add_parser("rm", parents=[common], help="remove a document (by id or name)")
    rm.add_argument("document", metavar="DOC")
    rm.set_defaults(run=_rm)

    backup = commands.add_parser("backup", parents=[common], help="a consistent copy of the library's database")
    backup.add_argument("target", nargs="?", type=Path, metavar="FILE", help="default: backups/library-TIME.db")
    backup.set_defaults(run=_backup)

    search = commands.add_parser("search", parents=[common], help="the passages that best match a query")
    search.add_argument("query", metavar="QUERY")
    search.add_argument("-k", type=_positive, default=5, help="how many passages (default %(default)s)")
    search.add_argument("--doc", default=None, help="only in this document (id or name)")
    search.add_argument("--json", action="store_true")
    search.set_defaults(run=_search)

    cli_train.add_commands(commands, common)
    cli_models.add_commands(commands, common)
    cli_chat.add_commands(commands, common)
    cli_hosts.add_commands(commands, common)

    demo = commands.add_parser("demo", parents=[common], help="try Tunedesk on the sample contract")
    demo.add_argument(
        "--base", default="smollm2", help="the model to fine-tune (%(default)s: a real 135M instruct model)"
    )
    demo.add_argument(
        "--max-steps", type=int, default=DEMO_STEPS, help="train for this many steps (%(default)s: minutes on a CPU)"
    )
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any training setting")
    demo.set_defaults(run=_demo)
    return parser


def _add(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from core.ingest import add_documents, collect_files

    files = collect_files(args.files, recursive=args.recursive)
    refused = 0
    cancel = threading.Event()
    with cli_train.open_library(args) as library, tqdm(total=len(files), unit="file", disable=None, leave=False) as bar:

        def progress(path: Path, done: int, total: int) -> None:
            bar.set_postfix_str(f"{path.name}: page {done} of {total}", refresh=True)

        try:
            for outcome in add_documents(
                library, files, chunk_size=args.chunk_size, overlap=args.overlap, on_progress=progress, cancel=cancel
            ):
                bar.update()
                if outcome.status == "refused":
                    refused += 1
                    line = f"refused        {outcome.reason}"
                else:
                    document = outcome.document
                    assert document is not None
                    detail = f"{document.pages} pages, {document.chunks} chunks, id {document.id}"
                    line = f"{outcome.status:<14} {document.name} ({detail})"
                bar.write(shown(line), file=sys.stdout)
        except KeyboardInterrupt:
            cancel.set()
            raise
    return 1 if refused else 0


def _docs(args: argparse.Namespace) -> int:
    with cli_train.open_library(args) as library:
        documents = library.documents()
    if args.json:
        keys = ("id", "name", "pages", "chunks", "bytes")
        print(json.dumps({"documents": [{key: getattr(d, key) for key in keys} for d in documents]}, indent=2))
        return 0
    if not documents:
        print("The library is empty; add documents with `tunedesk add FILE...`.")
    for document in documents:
        detail = f"{document.pages} pages, {document.chunks} chunks, {format_size(document.bytes)}"
        print(f"{document.id:>4}  {document.name}  ({detail})")
    return 0


def _rm(args: argparse.Namespace) -> int:
    with cli_train.open_library(args) as library:
        document = library.remove(args.document)
    print(f"removed {document.name} (id {document.id})")
    return 0


def _backup(args: argparse.Namespace) -> int:
    with cli_train.open_library(args) as library:
        target = library.backup(args.target)
    print(f"backup: {target} ({format_size(target.stat().st_size)}; restore by copying it over library.db)")
    return 0


def _positive(text: str) -> int:
    """A whole number of at least 1, for argparse (a wrong one is a usage error, exit status 2)."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _search(args: argparse.Namespace) -> int:
    from core.retrieval import search

    with cli_train.open_library(args) as library:
        document_id = library.document(args.doc).id if args.doc is not None else None
        hits = search(library, args.query, k=args.k, document_id=document_id)
    if args.json:
        result = {
            "query": args.query,
            "hits": [
                {"chunk_id": h.chunk_id, "document": h.document, "pages": h.pages, "text": h.text, "score": h.score}
                for h in hits
            ],
        }
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    if not hits:
        print("No passage matches.")
    width = min(shutil.get_terminal_size().columns, 100)
    for rank, hit in enumerate(hits, 1):
        print(f"{rank}. {hit.citation}  (score {hit.score:.1f}, chunk {hit.chunk_id})")
        print(textwrap.fill(" ".join(hit.text.split()), width, initial_indent="   ", subsequent_indent="   "))
    return 0


DEMO_QUESTIONS = ("Which state's law governs the agreement?", "When can Vyera terminate the agreement?")
# The sample's 124 grounded examples, in 40 rows of about four (1.3 passes): 3 minutes of a 2-core CPU for
# SmolLM2-135M (docs/benchmarks.md), and enough for it to learn to quote a passage and cite its label.
DEMO_STEPS = 40


def _demo(args: argparse.Namespace) -> int:
    from core import exports, jobs, qa
    from core.chat import ask
    from core.datasets import DatasetSettings, build_dataset
    from core.engine.config import load_config, parse_override
    from core.evaluation import evaluate_job, load_questions
    from core.ingest import add_documents
    from core.models import DEMO, PACKAGED, base_settings, convert_packaged, resolve_base
    from core.retrieval import search

    home = args.data_dir or default_data_dir()
    data_dir = home / "demo"
    # The demo starts from a fresh library; the demo model stays in the main data dir, built once.
    shutil.rmtree(data_dir, ignore_errors=True)
    base_path = resolve_base(args.base, home)
    if args.base in PACKAGED:  # converted once into the main data dir, which the demo's fresh library leaves be
        convert_packaged(args.base, home, on_progress=cli_train.print_setup)
    contract = RESOURCES / "samples" / "license_agreement_50p.pdf"
    print(f"1. Adding the sample contract to a fresh library in {data_dir}")
    with Library(data_dir) as library:
        (outcome,) = add_documents(library, [contract])
        if outcome.document is None:
            raise KnownError(outcome.reason or "The sample contract could not be added.")
        print(f"   {outcome.document.name}: {outcome.document.pages} pages, {outcome.document.chunks} chunks")
        for question in DEMO_QUESTIONS:
            print(f"\n   {question}")
            for hit in search(library, question, k=2):
                print(f"   [{hit.citation}] " + textwrap.shorten(" ".join(hit.text.split()), 200))

        print("\n2. Building a dataset: Q&A pairs drawn from the text, each asked over the passages search finds")
        pairs = qa.generate(library)
        # Grounded examples only: what the demo's minutes teach is the answer's form (a quote and the label of
        # its passage); in the one comparison made so far, raw text added to them did not teach it
        # (docs/benchmarks.md).
        dataset = build_dataset(library, DatasetSettings(kinds=("grounded",)))
        print(f"   {pairs} Q&A pairs; {dataset.train_examples} training, {dataset.val_examples} validation examples")

        # Two checkpoints, so that choosing by answer score has something to choose from.
        every = max(args.max_steps // 2, 1)
        overrides = base_settings(args.base) | {"max_steps": args.max_steps, "save_every": every, "eval_every": every}
        overrides |= dict(parse_override(text) for text in args.set)
        print(f"\n3. Fine-tuning the {args.base} model on it, on this computer's CPU (Ctrl-C leaves it running)")
        job = jobs.create_job(
            library, base=args.base, base_path=base_path, config=load_config("quick", overrides), dataset=dataset
        )
        jobs.start_job(library, job.id, on_setup=cli_train.print_setup)
        if cli_train.follow(library, job.id) != 0:
            return 1

        questions = load_questions(RESOURCES / "questions" / "license_agreement_50p.jsonl")
        print(f"\n4. Scoring every checkpoint on {len(questions)} questions about the contract (CUAD's annotations)")
        progress = cli_chat.progress_bar()
        try:
            rows = evaluate_job(library, job.id, questions, on_progress=progress)
        finally:
            progress(None, 0, 0)
        for row in rows:
            score, cited = row["answer_score"], row["citation_hit"]
            print(f"   step {row['step']:>5}  answer score {score:.3f}  cited right {cited:.0%}")
        saved = jobs.checkpoints(library, job.id)
        best = jobs.best_checkpoint(saved)
        assert best is not None
        print(f"   best: step {best.step}, by answer score (ties: the lower validation loss); {_other_choices(saved)}")

        print("\n5. Exporting the best checkpoint to GGUF (merge, llama.cpp's converter and quantizer, verify)")
        cli_models.export_with_bars(library, job.id, step=None, quant="q8_0")
        exported = exports.models(library, job_id=job.id)[-1]
        print("\n6. Asking it, offline through llama.cpp, with the best passages in the prompt")
        for question in DEMO_QUESTIONS:
            answer = ask(library, question, exported.path, max_tokens=120)
            print(f"   {question}")
            print(
                textwrap.fill(
                    answer.text or "(the model gave an empty answer)",
                    100,
                    initial_indent="     ",
                    subsequent_indent="     ",
                )
            )
            cited = "; ".join(f"{c.document} p. {c.pages[0]}" for c in answer.citations)
            print(f"     cited: {cited}" if answer.supported else "     unsupported: no citation backed by a passage")
        if args.base == DEMO:
            print("   (the demo model is 3.4M parameters: it has learned the contract's words, not yet sense)")
    return 0


def _other_choices(saved: list) -> str:
    """What choosing by the last step, or by the lowest validation loss, would have taken instead."""
    rated = [c for c in saved if c.val_loss is not None]
    by_loss = f"by validation loss, step {min(rated, key=lambda c: c.val_loss).step}" if rated else "no validation loss"
    return f"by the last step it would be step {saved[-1].step}, {by_loss}"


if __name__ == "__main__":
    sys.exit(main())
