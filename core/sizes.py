"""Sizes in words ("4.8 GB"), for messages the app and the engine both write. Standard library only."""

from __future__ import annotations


def format_size(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")
