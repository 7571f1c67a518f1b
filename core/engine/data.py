"""Dataset files to token ids, and token ids to packed micro-batches.

A dataset file is JSONL, one example a line (core/dataset/build.py writes them):
    {"kind": "raw", "text": "..."}                                   loss on every token
    {"kind": "chat", "messages": [{"role": ..., "content": ...}, ...]} loss on the last (assistant) turn only

Packing puts whole examples end to end in rows of at most `seq_len` tokens, with position ids restarting
at each example: transformers then masks attention at the example boundaries (no cross-example leakage),
and no compute goes to padding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import KnownError

IGNORE = -100  # the label that transformers' loss skips


class DatasetError(KnownError):
    """A dataset line that cannot be trained on; the message names the file and the line."""


@dataclass(frozen=True)
class Example:
    ids: list[int]
    labels: list[int]  # IGNORE where the model is not taught (the prompt of a chat example)
    line: int


def read_records(path: Path) -> list[dict[str, Any]]:
    """The examples of a JSONL file, each checked for shape; raises DatasetError naming the line."""
    records = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path.name} line {number} is not valid JSON ({error.msg}).") from None
            problem = _shape_problem(record)
            if problem:
                raise DatasetError(f"{path.name} line {number}: {problem}.")
            record["line"] = number
            records.append(record)
    if not records:
        raise DatasetError(f"{path.name} has no examples.")
    return records


def _shape_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "an example must be a JSON object"
    kind = record.get("kind")
    if kind == "raw":
        text = record.get("text")
        return None if isinstance(text, str) and text.strip() else "a raw example needs a non-empty text"
    if kind == "chat":
        messages = record.get("messages")
        if not isinstance(messages, list) or len(messages) < 2:
            return "a chat example needs at least a user and an assistant message"
        for message in messages:
            if not (isinstance(message, dict) and isinstance(message.get("content"), str) and message["content"]):
                return "every message needs a role and a non-empty content"
            if message.get("role") not in ("system", "user", "assistant"):
                return f"unknown role {message.get('role')!r}"
        return None if messages[-1]["role"] == "assistant" else "the last message must be the assistant's answer"
    return f"unknown kind {kind!r} (raw or chat)"


def tokenize(records: list[dict[str, Any]], tokenizer: Any, *, max_len: int, source: str) -> list[Example]:
    """Token ids and labels; an example longer than `max_len` is refused, naming its line."""
    examples = []
    for record in records:
        if record["kind"] == "raw":
            ids = [tokenizer.bos_token_id, *tokenizer.encode(record["text"], add_special_tokens=False)]
            ids.append(tokenizer.eos_token_id)
            labels = list(ids)
        else:
            ids, labels = _chat_ids(record, tokenizer, source)
        if len(ids) > max_len:
            raise DatasetError(
                f"{source} line {record['line']} is {len(ids)} tokens long, more than seq_len ({max_len}); "
                "shorten it or raise seq_len."
            )
        examples.append(Example(ids, labels, record["line"]))
    return examples


def _chat_ids(record: dict[str, Any], tokenizer: Any, source: str) -> tuple[list[int], list[int]]:
    # The ids come from the rendered text, as at chat time: llama.cpp renders the template, then tokenizes.
    messages = record["messages"]
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    ids = tokenizer.encode(full, add_special_tokens=False)
    if ids[: len(prompt_ids)] != prompt_ids:
        raise DatasetError(
            f"{source} line {record['line']}: the model's chat template does not put the answer after the prompt, "
            "so the answer tokens cannot be told apart."
        )
    return ids, [IGNORE] * len(prompt_ids) + ids[len(prompt_ids) :]


def pack(lengths: list[int], seq_len: int) -> list[list[int]]:
    """Example indices grouped into rows of at most `seq_len` tokens (first fit, longest first).

    Deterministic: the same lengths give the same rows.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[int] = []
    for index in order:
        for row, free in enumerate(room):
            if lengths[index] <= free:
                rows[row].append(index)
                room[row] -= lengths[index]
                break
        else:
            rows.append([index])
            room.append(seq_len - lengths[index])
    return rows


def packed(examples: list[Example], seq_len: int) -> list[list[Example]]:
    """The examples packed into rows of `seq_len` tokens (pack)."""
    return [[examples[i] for i in row] for row in pack([len(e.ids) for e in examples], seq_len)]


def predicted_tokens(row: list[Example]) -> int:
    """Tokens of a packed row that carry loss (batch_tensors: an example's first token is not predicted)."""
    return sum(sum(label != IGNORE for label in example.labels[1:]) for example in row)


def batch_tensors(rows: list[list[Example]], pad_id: int = 0) -> dict[str, Any]:
    """Packed rows side by side: input ids, labels and restarting position ids of shape (rows, longest row).

    A shorter row is filled with pad tokens that form a sequence of their own (positions from 0) and carry
    no loss, so they neither see nor are seen by the row's examples.
    """
    import torch

    width = max(sum(len(example.ids) for example in row) for row in rows)
    ids: list[list[int]] = []
    labels: list[list[int]] = []
    positions: list[list[int]] = []
    for row in rows:
        row_ids: list[int] = []
        row_labels: list[int] = []
        row_positions: list[int] = []
        for example in row:
            row_ids += example.ids
            # The first token of an example must not be predicted from the end of the one before.
            row_labels += [IGNORE, *example.labels[1:]]
            row_positions += range(len(example.ids))
        fill = width - len(row_ids)
        ids.append(row_ids + [pad_id] * fill)
        labels.append(row_labels + [IGNORE] * fill)
        positions.append(row_positions + list(range(fill)))
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "position_ids": torch.tensor(positions),
    }
