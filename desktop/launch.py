"""The `tunedesk` command: with no command, the desktop app; with one, the CLI (core/cli/main.py). It decides
before importing either, so that neither pays for the other's imports."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    # Everything Tunedesk writes (the library, datasets, jobs, models, and the engine's and workers' files,
    # which inherit this) is readable by the user alone: the documents are confidential.
    os.umask(0o077)
    args = list(sys.argv[1:] if argv is None else argv)
    if getattr(sys, "frozen", False):
        _frozen_child(args)
    window = argparse.ArgumentParser(add_help=False)
    window.add_argument("--data-dir", default=None)
    window.add_argument("--open", nargs="*", default=[])  # files to add (the desktop entry's %F)
    known, rest = window.parse_known_args(args)
    if not rest:
        from pathlib import Path

        from desktop.app import main as desktop

        return desktop(Path(known.data_dir) if known.data_dir else None, [Path(name) for name in known.open])
    try:
        from core.cli.main import main as cli

        return cli(args)
    except KeyboardInterrupt:  # in the second of imports and parsing before the command's own handling
        print("tunedesk: stopped; what was finished is kept.", file=sys.stderr)
        return 130


def _frozen_child(args: list[str]) -> None:
    """In the bundle (packaging/tunedesk.spec) the executable is the only Python: the app's helper processes
    (`sys.executable -m core.answers.chat_worker`, extraction's fork server) start it again, and are run here."""
    import multiprocessing

    multiprocessing.freeze_support()  # PyInstaller's: runs a fork server or resource tracker, then exits
    if len(args) >= 2 and args[0] == "-m":
        import runpy

        sys.argv = [sys.executable, *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        sys.exit(0)


if __name__ == "__main__":
    sys.exit(main())
