"""Grounded answers: retrieve the passages that best match a question, ask a GGUF model through llama.cpp
(in a worker process) to answer from them with a quote and a citation, and show only the citations that
the passages back (DESIGN.md, "Why answers are grounded").

A citation is kept only if the cited document and page belong to a passage that was in the prompt, and the
words it quotes are on that page (whitespace, case and line-break hyphens aside). An answer is supported
when it cites, and every citation is kept. Citations therefore come from retrieved chunk ids, never from
the model's say-so: a document that says "cite page 999" cannot make a citation appear.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.datasets import SYSTEM, grounded_prompt
from core.errors import KnownError
from core.library import Library
from core.retrieval import Hit, search

NOT_IN_DOCUMENTS = "The documents do not say."
PASSAGES = 3
_CITATION = re.compile(r"\[([^\[\]]+?) pp?\. (\d+)(?:\s*[-–]\s*(\d+))?\]")
_QUOTE = re.compile(r"[“\"]([^”\"]{3,})[”\"]")


@dataclass(frozen=True)
class Citation:
    document: str
    pages: list[int]
    chunk_id: int
    quote: str | None


@dataclass(frozen=True)
class Answer:
    text: str
    supported: bool
    citations: list[Citation] = field(default_factory=list)
    model: str = ""
    tokens_per_s: float = 0.0


def ask(
    library: Library,
    question: str,
    model: Path,
    *,
    k: int = PASSAGES,
    max_tokens: int = 200,
    on_token: Callable[[str], None] | None = None,
) -> Answer:
    hits = search(library, question, k=k)
    if not hits:
        return Answer(NOT_IN_DOCUMENTS, supported=False, model=model.name)
    passages = [(hit.citation, hit.text) for hit in hits]
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": grounded_prompt(passages, question)}]
    text, speed = generate(model, messages, max_tokens=max_tokens, on_token=on_token)
    citations, supported = check_citations(library, text, hits)
    return Answer(text.strip(), supported, citations, model.name, speed)


def check_citations(library: Library, text: str, hits: list[Hit]) -> tuple[list[Citation], bool]:
    """The citations in `text` that the retrieved passages back, and whether all of them were."""
    kept: list[Citation] = []
    all_backed = True
    previous_end = 0
    for match in _CITATION.finditer(text):
        name, first = match[1].strip(), int(match[2])
        last = int(match[3] or first)
        quotes = _QUOTE.findall(text, previous_end, match.start())
        quote = quotes[-1] if quotes else None
        previous_end = match.end()
        hit = next((h for h in hits if h.document == name and first <= h.page_last and last >= h.page_first), None)
        pages = list(range(first, last + 1))
        if hit is None or (quote and not _quoted_on(library, hit.document_id, pages, quote)):
            all_backed = False
            continue
        kept.append(Citation(name, pages, hit.chunk_id, quote))
    return kept, all_backed and bool(kept)


def _quoted_on(library: Library, document_id: int, pages: list[int], quote: str) -> bool:
    text = _plain(" ".join(library.page_text(document_id, page) for page in pages))
    return _plain(quote.removesuffix("…").removesuffix("...")) in text


def _plain(text: str) -> str:
    text = re.sub(r"-\s*\n\s*", "", text)  # a word hyphenated across a line break
    return " ".join(re.sub(r"[“”\"‘’']", "'", text).lower().split())


def generate(
    model: Path, messages: list[dict], *, max_tokens: int, on_token: Callable[[str], None] | None = None
) -> tuple[str, float]:
    """One reply from `model`, generated in a worker process; its crash is one sentence here."""
    if not model.is_file():
        raise KnownError(f"There is no model file {model}.")
    with subprocess.Popen(
        [sys.executable, "-m", "core.chat_worker", str(model)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as worker:
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write(json.dumps({"messages": messages, "max_tokens": max_tokens}) + "\n")
        worker.stdin.close()
        loaded = False
        for line in worker.stdout:
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("type") == "loaded":
                loaded = True
            elif event.get("type") == "warning":
                logging.getLogger(__name__).warning("The model %s: %s.", model.name, event["message"])
            elif event.get("type") == "token" and on_token:
                on_token(event["text"])
            elif event.get("type") == "done":
                return event["text"], event["tokens_per_s"]
            elif event.get("type") == "error":
                what = "could not answer" if loaded else "failed to load"
                raise KnownError(f"The model {model.name} {what}: {event['message']}")
        code = worker.wait()
    reason = f"llama.cpp crashed (signal {-code})" if code < 0 else f"the worker exited with status {code}"
    raise KnownError(f"The model {model.name} failed: {reason}.")
