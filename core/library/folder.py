"""The library's folder: the names Tunedesk makes in it, which folders may become a library, and permissions
taken off only what Tunedesk made. Standard library only: the app checks a folder before anything else loads."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from core.errors import KnownError

DATABASE = "library.db"
LOCK = "library.lock"  # held while the schema is migrated
RESERVE = "library.reserve"  # room kept for removals on a full disk (core/db.py)

# What Tunedesk makes at the top of a library folder: the only entries it ever tightens, and the only ones a
# folder may hold to become a library (a log or a host key written before the database are its own too).
OWN_NAMES = frozenset(
    {DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", LOCK, RESERVE, "tunedesk.log", "known_hosts"}
    | {"files", "datasets", "jobs", "backups", "models", "engine", "demo"}
)


def _own(name: str) -> bool:
    return name in OWN_NAMES or name.startswith(f"{DATABASE}.before-")


def check_folder(data_dir: Path) -> None:
    """Refuse a folder that holds files of the user's and no library: it is not Tunedesk's to change."""
    if (data_dir / DATABASE).exists():
        return
    if data_dir.exists() and not data_dir.is_dir():
        raise KnownError(f"The library folder {data_dir} is not a folder.")
    try:
        names = os.listdir(data_dir) if data_dir.is_dir() else []
    except OSError as error:
        raise KnownError(f"The library folder {data_dir} cannot be read: {error.strerror}.") from None
    if not all(_own(name) for name in names):
        raise KnownError(
            f"The folder {data_dir} is neither empty nor a Tunedesk library (it holds other files and no "
            f"{DATABASE}); choose an empty or new folder for the library."
        )


def make_private(data_dir: Path) -> bool:
    """Take group and other permissions off the data dir and what Tunedesk made in it; whether any had them.
    The folder and its database tell: a library written under Tunedesk's umask is not walked again. Links are
    never followed, and nothing the user put beside the library is touched."""
    database = data_dir / DATABASE
    if not any(path.stat().st_mode & 0o077 for path in (data_dir, database)):
        return False
    changed = _tighten(str(data_dir))
    for name in filter(_own, os.listdir(data_dir)):
        top = os.path.join(data_dir, name)
        changed |= _tighten(top)
        if not os.path.islink(top) and os.path.isdir(top):
            for folder, dirs, files in os.walk(top):
                for entry in dirs + files:
                    changed |= _tighten(os.path.join(folder, entry))
    return changed


def _tighten(path: str) -> bool:
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode) or not mode & 0o077:
        return False
    os.chmod(path, stat.S_IMODE(mode) & 0o700)
    return True
