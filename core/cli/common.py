"""What the commands share: the library a command names, and progress shown in the terminal."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from core import default_data_dir
from core.db import row_id
from core.library import meaning
from core.library.store import Library
from core.progress import Work


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


def _printed(what: str, done: int, total: int) -> None:
    print(f"  [{done}/{total}] {what}" if total else f"  {what}", file=sys.stderr)


def say_if_meaning_loads() -> None:
    """A command's first search waits for the model that weighs meaning (core/library/meaning.py)."""
    if meaning.starting():
        _printed("Loading the model search weighs meaning with (about 3 s)", 0, 0)


T = TypeVar("T")

# A job's preparation, a line a step on stderr: the engine's set-up ("[1/3] ..."), a check, an upload.
PRINTED = Work(_printed)


def with_bar(unit: str, run: Callable[[Work], T]) -> T:
    """run(work), its progress as a bar of `unit`s."""
    from tqdm import tqdm

    with tqdm(unit="chunk", desc=unit, disable=None, leave=False) as bar:

        def progress(what: str, done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return run(Work(progress))


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
