"""Tunedesk's core: everything but the GUI. Never imports Qt."""

from pathlib import Path

# Shipped data: the sample contracts and default question sets.
RESOURCES = Path(__file__).resolve().parent.parent / "resources"
