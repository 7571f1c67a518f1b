"""What the commands share: the library a command names, and progress shown in the terminal."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core import default_data_dir
from core.db import row_id
from core.library.store import Library


def row_id_argument(text: str) -> int:
    """An argparse type: a row's id (a job's, a dataset's, a model's, a conversation's)."""
    number = row_id(text)
    if number is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an id (a whole number from 1)")
    return number


def open_library(args: argparse.Namespace) -> Library:
    """The library the command names with --data-dir, else $TUNEDESK_HOME, else the user data dir."""
    library = Library(args.data_dir or default_data_dir())
    if library.tightened:
        print(f"note: {library.data_dir} was readable by other users; now only you can read it.", file=sys.stderr)
    return library


def print_setup(message: str, done: int, total: int) -> None:
    """The engine environment's set-up (once, the first time this machine trains without one)."""
    print(f"  [{done}/{total}] {message}", file=sys.stderr)


def with_bar(unit: str, work: Any) -> Any:
    from tqdm import tqdm

    with tqdm(unit="chunk", desc=unit, disable=None, leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return work(progress)


def progress_bar():
    """A tqdm bar per phase ("step 50", "model.gguf + retrieval"); called with None to close the last."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def progress(what: str | None, done: int, total: int) -> None:
        for name, bar in list(bars.items()):
            if name != what:
                bar.close()
                del bars[name]
        if what is None:
            return
        bar = bars.get(what) or bars.setdefault(what, tqdm(total=total, desc=what, unit="question", disable=None))
        bar.update(done - bar.n)

    return progress
