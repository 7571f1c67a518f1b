"""Files of questions the user brings (Q&A pairs to train on, question sets to score with): JSONL or CSV,
read into numbered records, so that a bad one is refused naming its file and line."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from core.errors import KnownError


def read_records(path: Path, what: str) -> list[tuple[int, Any]]:
    """(line number, record) for each JSON line or CSV row (its header is line 1); `what` names the file
    in the sentence that refuses it."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise KnownError(f"The {what} {path.name} cannot be read: {error}.") from None
    if path.suffix.lower() == ".csv":
        return list(enumerate(csv.DictReader(text.splitlines()), 2))
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise KnownError(f"{path.name} line {number} is not valid JSON ({error.msg}).") from None
    return records
