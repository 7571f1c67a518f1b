"""The kinds of failure: the user's environment or input (KnownError), a stop the user asked for
(Cancelled), and our bugs (anything else)."""

from __future__ import annotations


class KnownError(Exception):
    """A failure the user can understand and fix; str() is the sentence that says what went wrong and why.

    Where a step of the user's fixes it, `cli` and `app` say that step as each front end offers it, as a
    sentence of its own: a command to run ("Run `tunedesk hosts trust box` ..."), the window's own button
    ("Select it in Settings and press Trust…"). The message never names either, so that neither front end
    sends the user to the other's way. Anything that is not a KnownError is a bug: the CLI and the GUI log
    its traceback.
    """

    def __init__(self, message: str, *, cli: str | None = None, app: str | None = None) -> None:
        super().__init__(message)
        self.cli, self.app = cli, app

    def for_cli(self) -> str:
        return f"{self} {self.cli}" if self.cli else str(self)

    def for_app(self) -> str:
        return f"{self} {self.app}" if self.app else str(self)


class Cancelled(Exception):
    """The user stopped the operation; whatever it was writing has been rolled back."""
