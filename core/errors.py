"""The kinds of failure: the user's environment or input (KnownError), a stop the user asked for
(Cancelled), and our bugs (anything else)."""


class KnownError(Exception):
    """A failure the user can understand and fix; str() is the one sentence we show them.

    Anything that is not a KnownError is a bug: the CLI and the GUI log its traceback.
    """


class Cancelled(Exception):
    """The user stopped the operation; whatever it was writing has been rolled back."""
