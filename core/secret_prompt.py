"""How core asks the user for a secret it must not keep on disk (an SSH key's passphrase): each front end
sets `ask_secret` (the CLI at a terminal: getpass; the app: a dialog). None: nobody can be asked, and the
caller says what to do instead. Standard library only, so that setting it imports nothing."""

from __future__ import annotations

from collections.abc import Callable

ask_secret: Callable[[str], str] | None = None
