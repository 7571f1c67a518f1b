"""How long work says how far along it is and hears a cancel: one shape for all of core, the pipeline's stages
and the front ends alike. Standard library only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# What is being done (a sentence's worth: "reading page 12", "Setting up training…", a file's path), how much
# of it is done, of how much: 0 of 0 is a step with nothing to count, which a front end shows as busy.
Progress = Callable[[str, int, int], None]


def _quiet(what: str, done: int, total: int) -> None:
    pass


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Work:
    """What a long operation is handed by whoever started it: where to say how far along it is, and where
    to ask whether it should stop (it then raises core.errors.Cancelled, having undone what it began)."""

    progress: Progress = _quiet
    cancelled: Callable[[], bool] = _never

    def say(self, what: str) -> None:
        """A step with nothing to count."""
        self.progress(what, 0, 0)


QUIET = Work()
