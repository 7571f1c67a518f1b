"""The headless commands (docs/architecture.md, "The command line"): a thin layer over the core functions.

Exit status: 0 success, 1 a failure the user can fix (the message says what), 2 wrong usage,
130 stopped with Ctrl-C.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import sqlite3
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path

from core import default_data_dir, secret_prompt, versions
from core.cli import chat as cli_chat
from core.cli import demo as cli_demo
from core.cli import hosts as cli_hosts
from core.cli import models as cli_models
from core.cli import train as cli_train
from core.cli.common import open_library, say_if_meaning_loads
from core.db import DATABASE, known_error
from core.errors import Cancelled, KnownError
from core.library.chunking import DEFAULT_SIZE
from core.library.store import Document, shown
from core.progress import Work
from core.sizes import format_size


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 2
    if sys.stdin.isatty():  # a key file's passphrase is asked for, at a terminal; kept in memory only
        import getpass

        secret_prompt.ask_secret = getpass.getpass
    try:
        versions.check(versions.APP)
        return args.run(args)
    except KnownError as error:
        print(f"tunedesk: {error.for_cli()}", file=sys.stderr)
        return 1
    except sqlite3.Error as error:
        # A library damaged after it opened fails on its first read; known_error re-raises a bug.
        database = (getattr(args, "data_dir", None) or default_data_dir()) / DATABASE
        print(f"tunedesk: {known_error(error, database)}", file=sys.stderr)
        return 1
    except (Cancelled, KeyboardInterrupt):
        print("tunedesk: stopped; what was finished is kept.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Whatever read the output stopped reading (`tunedesk search ... | head`): stop as the shell's own
        # tools do, without a traceback, also from the flush of stdout at exit (Python's documented way).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=_folder,
        default=None,
        help="the library's folder (default: $TUNEDESK_HOME or the user data dir)",
    )
    parser = argparse.ArgumentParser(
        prog="tunedesk",
        description="Your documents, a fine-tuned LLM, offline. Without a command: the desktop app.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    add = commands.add_parser(
        "add", parents=[common], help="add documents (PDF, DOCX, TXT, Markdown; scans and images by OCR)"
    )
    add.add_argument("files", nargs="+", type=Path, metavar="FILE")
    add.add_argument("-r", "--recursive", action="store_true", help="add the documents inside folders")
    add.add_argument("--chunk-size", type=int, default=DEFAULT_SIZE, help="characters per chunk (default %(default)s)")
    add.add_argument("--overlap", type=int, default=0, help="characters each chunk repeats of the one before")
    add.add_argument(
        "--replaces", metavar="DOC", default=None, help="the FILE is a new version of this document (id or name)"
    )
    add.add_argument(
        "--no-ocr", dest="ocr", action="store_false", help="refuse scans and images rather than read them by OCR"
    )
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

    cli_demo.add_commands(commands, common)
    return parser


def _folder(text: str) -> Path:
    if not text:
        raise argparse.ArgumentTypeError("an empty name is not a folder")
    return Path(text)


def _add(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from core.library.ingest import add_documents, collect_files, reading

    if args.replaces is not None:
        return _add_version(args)
    files, links = collect_files(args.files, recursive=args.recursive)
    refused = 0
    cancel = threading.Event()
    with (
        open_library(args) as library,
        tqdm(total=len(files) + len(links), unit="file", disable=None, leave=False) as bar,
    ):

        def progress(what: str, done: int, total: int) -> None:
            path, by_ocr = reading(what)
            bar.set_postfix_str(f"{path.name}: page {done} of {total}{' (OCR)' if by_ocr else ''}", refresh=True)

        try:
            added = add_documents(
                library,
                files,
                chunk_size=args.chunk_size,
                overlap=args.overlap,
                ocr=args.ocr,
                work=Work(progress, cancel.is_set),
            )
            for outcome in itertools.chain(links, added):
                bar.update()
                if outcome.status == "refused":
                    refused += 1
                    line = f"refused        {outcome.reason}"
                else:
                    document = outcome.document
                    assert document is not None
                    line = f"{outcome.status:<14} {document.name} ({_detail(document, f'id {document.id}')})"
                bar.write(shown(line), file=sys.stdout)
        except KeyboardInterrupt:
            cancel.set()
            raise
    return 1 if refused else 0


def _add_version(args: argparse.Namespace) -> int:
    from core.library.ingest import add_version

    if len(args.files) != 1 or args.recursive:
        raise KnownError("--replaces takes one file: the new version of that document.")
    with open_library(args) as library:
        outcome, old = add_version(
            library, args.replaces, args.files[0], chunk_size=args.chunk_size, overlap=args.overlap, ocr=args.ocr
        )
    if outcome.document is None:
        print(shown(f"refused        {outcome.reason}"))
        return 1
    new = outcome.document
    print(shown(f"{outcome.status:<14} {new.name} ({_detail(new, f'id {new.id}')})"))
    print(shown(f"  the new version of {old.name} (document {old.id}), which left the library"))
    return 0


def _docs(args: argparse.Namespace) -> int:
    with open_library(args) as library:
        documents = library.documents()
    if args.json:
        keys = ("id", "name", "pages", "chunks", "bytes", "ocr_pages", "unsure_pages")
        print(json.dumps({"documents": [{key: getattr(d, key) for key in keys} for d in documents]}, indent=2))
        return 0
    if not documents:
        print("The library is empty; add documents with `tunedesk add FILE...`.")
    for document in documents:
        print(f"{document.id:>4}  {document.name}  ({_detail(document, format_size(document.bytes))})")
    return 0


def _detail(document: Document, last: str) -> str:
    """ "50 pages, 389 chunks, 2 pages by OCR, unsure on p. 2, id 1": the document in a line of add or docs."""
    return ", ".join(
        part for part in (f"{document.pages} pages", f"{document.chunks} chunks", document.reading, last) if part
    )


def _rm(args: argparse.Namespace) -> int:
    with open_library(args) as library:
        document = library.remove(args.document)
    print(f"removed {document.name} (id {document.id})")
    return 0


def _backup(args: argparse.Namespace) -> int:
    with open_library(args) as library:
        target = library.backup(args.target)
    print(f"backup: {target} ({format_size(target.stat().st_size)}; restore by copying it over library.db)")
    return 0


MOST_PASSAGES = 10_000  # past SQLite's integers, a count is an OverflowError in the query


def _positive(text: str) -> int:
    """A whole number from 1 to MOST_PASSAGES, for argparse (a wrong one is a usage error, exit status 2)."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= number <= MOST_PASSAGES:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MOST_PASSAGES:,}, not {number}")
    return number


def _search(args: argparse.Namespace) -> int:
    from core.library.search import search

    with open_library(args) as library:
        document_id = library.document(args.doc).id if args.doc is not None else None
        say_if_meaning_loads()
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


if __name__ == "__main__":
    sys.exit(main())
