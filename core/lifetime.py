"""Helper processes that end when the process that started them is gone, however it went (a SIGKILL runs
no clean-up in it): the chat worker, the meaning model's worker, and the engine's foreground tools
(export, score, convert). A killed `ask` left its worker rendering at full CPU; a killed `export` left its
export writing an unrecorded file.

Not Linux's PR_SET_PDEATHSIG: it fires when the thread that started the child ends, and the app starts
workers from pool threads that come and go. The training engine is meant to outlive the app and does not
use this.
"""

from __future__ import annotations

import os
import subprocess
import sys
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


def start_helper(module: str, *args: str, stderr: int) -> subprocess.Popen[str]:
    """`python -m MODULE ARGS...`, which speaks JSON lines on its stdin and stdout (the chat worker, the
    meaning model's), in a session of its own: a Ctrl-C in the terminal is the app's to handle."""
    command = [sys.executable, "-m", module, *args]
    pipe = subprocess.PIPE
    return subprocess.Popen(command, stdin=pipe, stdout=pipe, stderr=stderr, text=True, start_new_session=True)
