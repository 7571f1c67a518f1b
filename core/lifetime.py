"""Helper processes that end when the process that started them is gone, however it went (a SIGKILL runs
no clean-up in it): the chat worker, and the engine's foreground tools (export, score, convert). A killed
`ask` left its worker rendering at full CPU; a killed `export` left its export writing an unrecorded file.

Not Linux's PR_SET_PDEATHSIG: it fires when the thread that started the child ends, and the app starts
workers from pool threads that come and go. The training engine is meant to outlive the app and does not
use this.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

POLL_SECONDS = 1.0


def end_with_parent(on_orphaned: Callable[[], None]) -> None:
    """Call `on_orphaned` (from a watcher thread) once this process's parent has gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_SECONDS)
        on_orphaned()

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()
