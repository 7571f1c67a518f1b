"""Tunedesk's core: everything but the GUI. Never imports Qt."""

import os
from pathlib import Path

__version__ = "0.1.0"  # pyproject.toml reads it from here; exported models record it

# Shipped data: the sample contracts and default question sets.
RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def default_data_dir() -> Path:
    """The library's folder: $TUNEDESK_HOME, else the platform's user data folder."""
    import platformdirs

    return Path(os.environ.get("TUNEDESK_HOME") or platformdirs.user_data_dir("tunedesk", appauthor=False))
