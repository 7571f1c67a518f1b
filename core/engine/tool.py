"""The engine's foreground tools (`core.engine.export`, `core.engine.score`): progress and the outcome as
JSON lines on stdout, the details on stderr; SIGTERM or SIGINT cancels."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from typing import Any

from core.errors import Cancelled, KnownError
from core.lifetime import end_with_parent


def say(kind: str, **fields: Any) -> None:
    print(json.dumps({"type": kind} | fields), flush=True)


def main(work: Callable[[], dict[str, Any]]) -> int:
    """Run `work`; say done (with what it returns), cancelled or error (one sentence)."""
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, _cancel)
    end_with_parent(lambda: os.kill(os.getpid(), signal.SIGTERM))  # a cancel: the tool cleans up
    try:
        say("done", **work())
    except Cancelled:
        say("cancelled")
        return 1
    except KnownError as error:
        say("error", message=str(error))
        return 1
    return 0


def _cancel(*_: Any) -> None:
    raise Cancelled()
