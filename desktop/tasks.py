"""Work off the GUI thread. A Task opens its own Library (a Library belongs to one thread), runs a core
function, and hands back its progress and its result as signals, which Qt delivers on the GUI thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from PySide6.QtCore import QObject, QThread, Signal
from PySide6.QtWidgets import QInputDialog, QLineEdit, QWidget

from core.errors import Cancelled, KnownError
from core.progress import Progress, Work

if TYPE_CHECKING:
    from core.library.store import Library

log = logging.getLogger("tunedesk")
T = TypeVar("T")  # what a task's work returns, and so what its on_done takes: mypy holds the two together


def sentence(error: BaseException) -> str:
    """The one sentence a user sees; a bug's traceback goes to the log."""
    if isinstance(error, KnownError):
        return error.for_app()
    log.error("unexpected error", exc_info=error)
    return f"Something went wrong ({type(error).__name__}: {error}); the details are in the log."


class Task(QThread):
    progress = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, data_dir: Path, work: Callable[[Library, Task], Any], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.data_dir, self.work = data_dir, work
        self.cancel_event = threading.Event()

    def report(self, value: Any) -> None:
        """Called by the work, from this thread or the threads it starts."""
        self.progress.emit(value)

    def cancel(self) -> None:
        self.cancel_event.set()

    def is_cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def core_work(self, progress: Progress | None = None) -> Work:
        """This task as core's Work: its progress reported as (what, done, total), or through `progress`; its
        cancel, the task's."""
        return Work(progress or (lambda what, done, total: self.report((what, done, total))), self.is_cancelled)

    def run(self) -> None:
        from core.library.store import Library  # here, off the GUI thread: sqlite-utils takes 0.1 s to import

        try:
            with Library(self.data_dir) as library:
                result = self.work(library, self)
        except Cancelled:
            self.cancelled.emit()
        except Exception as error:  # every failure reaches the window as one sentence
            self.failed.emit(sentence(error))
        else:
            self.succeeded.emit(result)


class SecretPrompt(QObject):
    """core.secret_prompt.ask_secret for the app: a task's thread asks, a password dialog opens on the GUI thread,
    and the task waits for the answer. Cancelling the dialog cancels the task."""

    asked = Signal(str)

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.window = parent
        self.asked.connect(self._ask)  # queued: emitted from the task's thread, run on the GUI thread
        self.one_at_a_time = threading.Lock()
        self.answered = threading.Event()
        self.answer: str | None = None

    def __call__(self, prompt: str) -> str:
        assert QThread.currentThread() is not self.thread(), "the GUI thread would wait for itself"
        with self.one_at_a_time:
            self.answered.clear()
            self.asked.emit(prompt)
            self.answered.wait()
            if self.answer is None:
                raise Cancelled()
            return self.answer

    def _ask(self, prompt: str) -> None:
        text, ok = QInputDialog.getText(self.window, "Key passphrase", prompt, QLineEdit.EchoMode.Password)
        self.answer = text if ok else None
        self.answered.set()


class Tasks(QObject):
    """The window's running tasks: keeps each alive until it ends; errors go to `on_error`."""

    def __init__(self, data_dir: Path, on_error: Callable[[str], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.data_dir, self.on_error = data_dir, on_error
        self.running: set[Task] = set()
        self.retiring: set[QThread] = set()
        self.closed = False  # the window has shut down: a timer that fires after (a page's refit) starts nothing
        self.latest: dict[Callable[[Any], None], Task] = {}  # each latest_only on_done: its task started last

    def start(
        self,
        work: Callable[[Library, Task], T],
        on_done: Callable[[T], None] | None = None,
        *,
        on_progress: Callable[[Any], None] | None = None,
        on_failed: Callable[[str], None] | None = None,
        on_cancelled: Callable[[], None] | None = None,
        latest_only: bool = False,
    ) -> Task:
        """With `latest_only`, once a later task for the same `on_done` (a view's table, its list of hits) has
        started, this one's result is dropped: tasks end in any order, and a listing that began before a
        change, or a search for what was typed before, must not overwrite what came after."""
        task = Task(self.data_dir, work, self)
        if on_done and latest_only:
            self.latest[on_done] = task

            def unless_superseded(result: T) -> None:
                if self.latest.get(on_done) is task:
                    on_done(result)

            task.succeeded.connect(unless_superseded)
        elif on_done:
            task.succeeded.connect(on_done)
        if on_progress:
            task.progress.connect(on_progress)
        task.failed.connect(on_failed or self.on_error)
        if on_cancelled:
            task.cancelled.connect(on_cancelled)
        if self.closed:
            return task  # never started: a thread still running when the window is deleted aborts the app
        self.running.add(task)
        task.finished.connect(lambda: self._ended(task))
        task.start()
        return task

    def retire(self, thread: QThread) -> None:
        """Keep a thread that was asked to end alive until it has: the GUI thread does not wait for it."""
        self.retiring.add(thread)
        thread.finished.connect(lambda: self.retiring.discard(thread))

    def wait(self, timeout_ms: int = 30_000) -> None:
        """At the window's close: cancel the tasks, and wait for them and for the retiring threads; start no
        more."""
        self.closed = True
        for task in list(self.running):
            task.cancel()
        for thread in [*self.running, *self.retiring]:
            thread.wait(timeout_ms)

    def _ended(self, task: Task) -> None:
        self.running.discard(task)
        for shows in [shows for shows, latest in self.latest.items() if latest is task]:
            del self.latest[shows]
        task.deleteLater()
