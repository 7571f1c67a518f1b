"""The `tunedesk` command: with no command, the desktop app; with one, the CLI (core/cli.py). It decides
before importing either, so that neither pays for the other's imports."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    window = argparse.ArgumentParser(add_help=False)
    window.add_argument("--data-dir", default=None)
    known, rest = window.parse_known_args(args)
    if not rest:
        from pathlib import Path

        from desktop.app import main as desktop

        return desktop(Path(known.data_dir) if known.data_dir else None)
    from core.cli import main as cli

    return cli(args)


if __name__ == "__main__":
    sys.exit(main())
