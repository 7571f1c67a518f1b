"""The answer commands of the CLI: ask (one question), chat (a conversation in the terminal) and eval
(answer quality of a job's checkpoints, or of models side by side)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from core.answers.chat import NOT_IN_DOCUMENTS
from core.cli.common import open_library, progress_bar, row_id_argument, say_if_meaning_loads
from core.errors import KnownError
from core.library.store import Library
from core.progress import Work

NO_MODEL = "There is no model yet; `tunedesk export JOB` makes one, `tunedesk models --add FILE.gguf` adds one."


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    model_help = "a model id (see `tunedesk models`) or a GGUF file (default: the newest)"
    free_help = "let the model write freely (checked as written) instead of choosing a quoted sentence"
    ask = commands.add_parser("ask", parents=[common], help="one answer from the documents, with cited pages")
    ask.add_argument("question", metavar="QUESTION")
    ask.add_argument("--model", default=None, help=model_help)
    ask.add_argument("--json", action="store_true")
    ask.add_argument("--free-text", action="store_true", help=free_help)
    ask.set_defaults(run=_ask)

    chat = commands.add_parser("chat", parents=[common], help="a conversation about the documents")
    chat.add_argument("--model", default=None, help=model_help)
    chat.add_argument("--resume", type=row_id_argument, metavar="ID", help="go on with a kept conversation")
    chat.add_argument("--list", action="store_true", help="list the kept conversations")
    chat.add_argument("--free-text", action="store_true", help=free_help)
    chat.set_defaults(run=_chat)

    evaluate = commands.add_parser("eval", parents=[common], help="answer quality of a job's checkpoints or of models")
    evaluate.add_argument("job", nargs="?", metavar="JOB", help="score every checkpoint of this job; mark the best")
    evaluate.add_argument("--models", nargs="+", metavar="M", help="compare these models (ids or GGUF files)")
    evaluate.add_argument(
        "--questions", type=Path, metavar="FILE", help="JSONL or CSV (default: the job's held-out Q&A pairs)"
    )
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--free-text", action="store_true", help=free_help)
    evaluate.set_defaults(run=_eval)


def model_path(library: Library, ref: str | None) -> Path:
    """A model id, a GGUF file, or (None) the newest model in the library."""
    from core.models.gguf_models import models

    if ref and not ref.isdigit():
        return Path(ref)
    chosen = [m for m in models(library) if ref is None or m.id == int(ref)]
    if not chosen:
        raise KnownError(f"No model {ref} (see `tunedesk models`)." if ref else NO_MODEL)
    return chosen[-1].path


def _ask(args: argparse.Namespace) -> int:
    from core.answers.chat import ask

    with open_library(args) as library:
        stream = None if args.json else (lambda text: print(text, end="", flush=True))
        model = model_path(library, args.model)
        say_if_meaning_loads()
        answer = ask(library, args.question, model, on_token=stream, free_text=args.free_text)
    if args.json:
        citations = [
            {"document": c.document, "pages": c.pages, "chunk_id": c.chunk_id, "quote": c.quote}
            for c in answer.citations
        ]
        result = {"answer": answer.text, "supported": answer.supported, "citations": citations} | {
            "model": answer.model,
            "tokens_per_s": answer.tokens_per_s,
        }
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    _show_citations(answer)
    return 0


def _show_citations(answer: Any) -> None:
    print()
    for citation in answer.citations:
        print(f"  cited: {citation.document} p. {', '.join(map(str, citation.pages))} (chunk {citation.chunk_id})")
    if not answer.supported and answer.text != NOT_IN_DOCUMENTS:
        print("  unsupported: the answer cites no page of the passages it was given", file=sys.stderr)


def _chat(args: argparse.Namespace) -> int:
    from core.answers.chat import Chat, conversations, messages

    with open_library(args) as library:
        if args.list:
            for row in conversations(library):
                print(f"{row['id']:>4}  {row['created'][:16]}  {row['model']}  {row['title']}")
            return 0
        if args.resume is not None:
            for row in messages(library, args.resume):
                print(("> " if row["role"] == "user" else "") + row["content"])
        model = model_path(library, args.model)
        with Chat(library, model, conversation_id=args.resume, free_text=args.free_text) as chat:
            print(f"Chatting with {chat.model.name}: Ctrl-C stops an answer, Ctrl-D ends the conversation.")
            while True:
                try:
                    question = input("> ").strip()
                except (EOFError, KeyboardInterrupt):
                    print()
                    return 0
                if not question:
                    continue
                say_if_meaning_loads()
                # Ctrl-C while the model writes stops the answer, not the conversation.
                previous = signal.signal(signal.SIGINT, lambda *_: chat.stop())
                try:
                    answer = chat.ask(question, on_token=lambda text: print(text, end="", flush=True))
                finally:
                    signal.signal(signal.SIGINT, previous)
                _show_citations(answer)


def _eval(args: argparse.Namespace) -> int:
    from core.answers import evaluation
    from core.jobs import jobs
    from core.jobs.checkpoint_scores import evaluate_job

    if bool(args.job) == bool(args.models):
        raise KnownError("Name a job to score its checkpoints, or --models to compare models (not both).")
    with open_library(args) as library:
        questions = evaluation.load_questions(args.questions) if args.questions else None
        progress = progress_bar()
        try:
            if args.job:
                job_id = jobs.job(library, args.job).id
                rows = evaluate_job(library, job_id, questions, work=Work(progress), free_text=args.free_text)
                best = jobs.best_checkpoint(jobs.checkpoints(library, job_id))
                best_step = best.step if best else None
            else:
                if questions is None:
                    raise KnownError("Comparing models needs a question set: give one with --questions FILE.")
                paths = [model_path(library, ref) for ref in args.models]
                rows = evaluation.compare_models(
                    library, paths, questions, work=Work(progress), free_text=args.free_text
                )
                best_step = None
        finally:
            progress(None, 0, 0)
    if args.json:
        print(json.dumps({"rows": rows, "best_step": best_step}, indent=2, ensure_ascii=False))
        return 0
    names = [
        row["model"] + (" + retrieval" if row.get("retrieval") and row["model"] != evaluation.RETRIEVAL_ALONE else "")
        for row in rows
    ]
    width = max(map(len, ["model", *names]))  # whole names: an exported model's says its base, job and step
    print(f"{'model':<{width}} {'step':>6} {'answer score':>13} {'citation hit':>13} {'mean words':>11}")
    for name, row in zip(names, rows, strict=True):
        step = "" if row["step"] is None else str(row["step"])
        print(
            f"{name:<{width}} {step:>6} {row['answer_score']:>13.3f} {row['citation_hit']:>13.0%} "
            f"{row['mean_words']:>11.1f}"
        )
    if best_step is not None:
        print(f"best: step {best_step} (highest answer score; `tunedesk export {args.job}` exports it)")
    return 0
