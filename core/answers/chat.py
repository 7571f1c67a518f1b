"""Grounded chat: retrieve the passages that best match a question, ask a GGUF model through llama.cpp (in a
worker process) to answer from them with a quote and a citation, show only the citations that the passages
back (core/answers/citations.py), and keep the conversation in the library (docs/architecture.md, "Why
answers are grounded").

A conversation keeps one worker, so the model loads once, and llama.cpp reuses the evaluated prompt prefix
(the system prompt and the earlier turns) from one question to the next. Earlier turns carry only their
question and answer; the passages are given with the newest question alone. The prompt is fitted to the
model's context with room for the answer: the oldest turns go first, then the weakest passages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.answers.citations import Citation, check_citations
from core.answers.form import ABSTAIN, choices
from core.answers.prompt import SYSTEM, grounded_prompt, question_turn
from core.db import now
from core.errors import KnownError
from core.library.search import Hit, search
from core.library.store import Library
from core.lifetime import start_helper

NOT_IN_DOCUMENTS = ABSTAIN
PASSAGES = 3
MAX_TOKENS = 200
# What a chat template adds around each message ([INST], role names, BOS/EOS): an upper bound, so that a
# fitted prompt never overflows the context by a few tokens.
TEMPLATE_TOKENS_PER_MESSAGE = 16

TokenFn = Callable[[str], None]


@dataclass(frozen=True)
class Answer:
    text: str
    supported: bool
    citations: list[Citation] = field(default_factory=list)
    model: str = ""
    tokens_per_s: float = 0.0
    reused_tokens: int = 0  # prompt tokens llama.cpp did not evaluate again
    passages: list[Hit] = field(default_factory=list)  # what the answer was given: the user's sources to check
    stopped: bool = False  # stopped by the user (or the app's exit) before the model finished


class Worker:
    """llama.cpp in a process of its own (core/answers/chat_worker.py): a model file that crashes llama.cpp takes
    down only the worker, and the caller gets one sentence."""

    def __init__(self, model: Path) -> None:
        if not model.is_file():
            raise KnownError(f"There is no model file {model}.")
        self.model = model
        # A Ctrl-C in the terminal is the app's to handle (chat: stop the answer).
        self.process = start_helper("core.answers.chat_worker", str(model), stderr=subprocess.PIPE)
        try:
            self.n_ctx = self._next("loaded", "failed to load")["n_ctx"]
        except BaseException:
            self.close()
            raise

    def count_tokens(self, texts: list[str]) -> list[int]:
        self._send({"count": texts})
        return self._next("counts", "could not count tokens")["counts"]

    def reply(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        on_token: TokenFn | None = None,
        allowed: list[str] | None = None,
    ) -> dict[str, Any]:
        """The model's reply: {"text", "tokens_per_s", "reused_tokens", "stopped"}; one of `allowed` where
        given (core/answers/form.py)."""
        self._send({"messages": messages, "max_tokens": max_tokens} | ({"choices": allowed} if allowed else {}))
        return self._next("done", "could not answer", on_token)

    def stop(self) -> None:
        """Stop the reply being generated; what was generated so far is the reply."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def close(self) -> None:
        if self.process.stdin and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):  # the worker is gone already
                self.process.stdin.close()
        if self.process.poll() is None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, request: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # the worker is gone: _next says why

    def _next(self, wanted: str, failure: str, on_token: TokenFn | None = None) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event = json.loads(line) if line.startswith("{") else {}
            kind = event.get("type")
            if kind == wanted:
                return event
            if kind == "token" and on_token:
                on_token(event["text"])
            elif kind == "warning":
                logging.getLogger(__name__).warning("The model %s: %s.", self.model.name, event["message"])
            elif kind == "error":
                raise KnownError(f"The model {self.model.name} {failure}: {event['message']}")
        code = self.process.wait()
        reason = f"llama.cpp crashed (signal {-code})" if code < 0 else f"the worker exited with status {code}"
        raise KnownError(f"The model {self.model.name} failed: {reason}.")


class Chat:
    """A conversation about the library's documents with one GGUF model, kept in the library. Answers take
    the form of core/answers/form.py (a sentence of a passage with its own label) unless
    `free_text`: then the model writes what it will, and its citations are checked as written."""

    def __init__(
        self,
        library: Library,
        model: Path,
        *,
        conversation_id: int | None = None,
        k: int = PASSAGES,
        free_text: bool = False,
    ):
        self.library, self.model, self.k, self.free_text = library, model, k, free_text
        self.conversation_id = conversation_id
        self.turns: list[tuple[str, str]] = []  # (question, answer), oldest first
        if conversation_id is not None:
            rows = messages(library, conversation_id)
            questions = [row["content"] for row in rows if row["role"] == "user"]
            answers = [row["content"] for row in rows if row["role"] == "assistant"]
            self.turns = list(zip(questions, answers, strict=False))
        self.worker = Worker(model)

    def ask(self, question: str, *, on_token: TokenFn | None = None, max_tokens: int = MAX_TOKENS) -> Answer:
        # A follow-up ("and when does it end?") is searched with the question before it.
        query = f"{question} {self.turns[-1][0]}" if self.turns else question
        hits = search(self.library, query, k=self.k)
        if not hits:
            answer = Answer(NOT_IN_DOCUMENTS, supported=False, model=self.model.name)
            if on_token:
                on_token(answer.text)
        else:
            prompt, shown = self._fitted(question, hits, max_tokens)
            allowed = None if self.free_text else choices([(h.citation, h.text) for h in shown])
            reply = self.worker.reply(prompt, max_tokens=max_tokens, on_token=on_token, allowed=allowed)
            citations, supported = check_citations(reply["text"], shown, self.library.page_text)
            answer = Answer(
                reply["text"].strip(),
                supported,
                citations,
                self.model.name,
                reply["tokens_per_s"],
                reply["reused_tokens"],
                shown,
                reply["stopped"],
            )
        self._keep(question, answer)
        self.turns.append((question, answer.text))
        return answer

    def stop(self) -> None:
        self.worker.stop()

    def close(self) -> None:
        self.worker.close()

    def __enter__(self) -> Chat:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _fitted(self, question: str, hits: list[Hit], max_tokens: int) -> tuple[list[dict[str, str]], list[Hit]]:
        """The prompt that fits the model's context with `max_tokens` to spare, and the passages in it."""
        history = [text for turn in self.turns for text in turn]
        asking = question_turn(question, hits[0].citation)
        counts = self.worker.count_tokens([SYSTEM, *history, *(f"[{h.citation}]\n{h.text}" for h in hits), asking])
        system, turns, passages, asked = (
            counts[0],
            counts[1 : 1 + len(history)],
            counts[1 + len(history) : -1],
            counts[-1],
        )
        budget = self.worker.n_ctx - max_tokens - TEMPLATE_TOKENS_PER_MESSAGE * (len(history) + 2) - 8

        def used() -> int:
            return system + sum(turns) + sum(passages) + asked

        while used() > budget and turns:
            turns, history = turns[2:], history[2:]
        while used() > budget and len(passages) > 1:
            passages, hits = passages[:-1], hits[:-1]
        if used() > budget:  # one passage longer than the room left: keep its beginning
            room = budget - (used() - passages[0])
            if room < 32:
                raise KnownError(
                    f"The question is too long for the model {self.model.name} ({self.worker.n_ctx} tokens of "
                    "context); ask it in fewer words."
                )
            hits = [replace(hits[0], text=hits[0].text[: len(hits[0].text) * room // passages[0]])]
        return grounded_messages(question, hits, history), hits

    def _keep(self, question: str, answer: Answer) -> None:
        written = now()
        with self.library.write() as db:
            if self.conversation_id is None:
                row = {"model": self.model.name, "title": question[:200], "created": written}
                self.conversation_id = int(db.table("conversations").insert(row).last_pk)  # type: ignore[arg-type]
            message = {"conversation_id": self.conversation_id, "created": written}
            db.table("messages").insert(message | {"role": "user", "content": question})
            reply = message | {"role": "assistant", "content": answer.text, "supported": answer.supported}
            message_id = db.table("messages").insert(reply | {"stopped": answer.stopped}).last_pk
            db.table("citations").insert_all(
                {"message_id": message_id, "document": c.document, "page_first": c.pages[0]}
                | {"page_last": c.pages[-1], "chunk_id": c.chunk_id, "quote": c.quote}
                for c in answer.citations
            )
            db.table("message_passages").insert_all(
                {"message_id": message_id, "rank": rank, "document": h.document, "page_first": h.page_first}
                | {"page_last": h.page_last, "chunk_id": h.chunk_id}
                for rank, h in enumerate(answer.passages, 1)
            )


def grounded_messages(question: str, hits: list[Hit], history: Sequence[str] = ()) -> list[dict[str, str]]:
    """The system prompt, earlier turns (question, answer, ...) and the question with its passages (the
    question alone without them)."""
    turns = [{"role": "user" if n % 2 == 0 else "assistant", "content": text} for n, text in enumerate(history)]
    passages = [(h.citation, h.text) for h in hits]
    return [
        {"role": "system", "content": SYSTEM},
        *turns,
        {"role": "user", "content": grounded_prompt(passages, question) if passages else question},
    ]


def ask(
    library: Library,
    question: str,
    model: Path,
    *,
    k: int = PASSAGES,
    max_tokens: int = MAX_TOKENS,
    on_token=None,
    free_text: bool = False,
) -> Answer:
    """One question, a conversation of its own."""
    with Chat(library, model, k=k, free_text=free_text) as chat:
        return chat.ask(question, on_token=on_token, max_tokens=max_tokens)


def generate(model: Path, messages: list[dict[str, str]], *, max_tokens: int, on_token: TokenFn | None = None):
    """One reply from `model` to `messages` as given: (text, tokens per second)."""
    with Worker(model) as worker:
        reply = worker.reply(messages, max_tokens=max_tokens, on_token=on_token)
    return reply["text"], reply["tokens_per_s"]


def conversations(library: Library) -> list[dict[str, Any]]:
    return list(library.db.query("SELECT id, model, title, created FROM conversations ORDER BY id"))


def messages(library: Library, conversation_id: int) -> list[dict[str, Any]]:
    rows = list(
        library.db.query(
            "SELECT id, role, content, supported, stopped, created FROM messages WHERE conversation_id = ? ORDER BY id",
            [conversation_id],
        )
    )
    if not rows and not library.db.execute("SELECT 1 FROM conversations WHERE id = ?", [conversation_id]).fetchone():
        raise KnownError(f"No conversation {conversation_id}.", cli="`tunedesk chat --list` lists them.")
    for row in rows:
        # document_id and chunk_text are None once the cited document has been removed.
        row["citations"] = list(
            library.db.query(
                """SELECT c.document, c.page_first, c.page_last, c.chunk_id, c.quote, k.document_id,
                    k.text AS chunk_text
                FROM citations c LEFT JOIN chunks k ON k.id = c.chunk_id WHERE c.message_id = ?""",
                [row["id"]],
            )
        )
        row["passages"] = list(
            library.db.query(
                """SELECT p.document, p.page_first, p.page_last, p.chunk_id, k.document_id, k.text AS chunk_text
                FROM message_passages p LEFT JOIN chunks k ON k.id = p.chunk_id WHERE p.message_id = ?
                ORDER BY p.rank""",
                [row["id"]],
            )
        )
    return rows
