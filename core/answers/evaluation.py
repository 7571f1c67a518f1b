"""Answer quality: question sets, the questions written for the engine to score a job's checkpoints with
(core/jobs/checkpoint_scores.py), and GGUF models compared side by side through llama.cpp, all with the rules
of core/answers/scoring.py and the prompts chat sends (the same retrieval, the same system prompt).

A question set is JSONL or CSV with `question`, `answer` and `pages` (or `page`), and optionally `document`.
Without one, a job is scored on the Q&A pairs its dataset held out (held_out.jsonl).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.answers.chat import PASSAGES, Worker, grounded_messages
from core.answers.citations import Passage, check_citations
from core.answers.form import choices, quote_top_hit
from core.answers.scoring import answer_row, score_answer, summary
from core.dataset.question_files import read_records
from core.errors import KnownError
from core.jobdir import layout
from core.library.search import search
from core.library.store import Library
from core.progress import QUIET, Work

QUESTIONS = Path(layout.QUESTIONS)  # in the job directory; the answers go beside it


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    pages: tuple[int, ...]
    document: str | None = None


def load_questions(path: Path) -> list[Question]:
    """A question set from a JSONL or CSV file; a bad record is refused, naming the file and the line."""
    records = read_records(path, "question set")
    questions = [_question(record, f"{path.name} line {number}") for number, record in records]
    if not questions:
        raise KnownError(f"The question set {path.name} holds no questions.")
    return questions


def _question(row: Any, where: str) -> Question:
    if not isinstance(row, dict) or not str(row.get("question") or "").strip():
        raise KnownError(f"{where} has no question.")
    pages: Any = row.get("pages", row.get("page"))
    if isinstance(pages, str):  # CSV: "12" or "12;13"
        pages = [p for p in pages.replace(",", ";").split(";") if p.strip()]
    try:
        numbers = tuple(int(p) for p in (pages if isinstance(pages, list) else [pages]))
    except (TypeError, ValueError):
        raise KnownError(f"{where}: pages must be page numbers, not {pages!r}.") from None
    return Question(row["question"].strip(), str(row.get("answer") or ""), numbers, row.get("document") or None)


def held_out_questions(job_dir: Path) -> list[Question]:
    path = job_dir / layout.DATASET / layout.HELD_OUT
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Question(r["question"], r["answer"], (r["page"],), r["document"]) for r in rows]


def write_items(library: Library, path: Path, questions: list[Question], *, free_text: bool = False) -> None:
    """The questions with the prompts chat would send, the answers chat would allow (core/answers/form.py;
    none with `free_text`) and the pages their citations may be checked on."""
    items = []
    for q in questions:
        hits = search(library, q.question, k=PASSAGES)
        pages = {(h.document_id, page) for h in hits for page in h.pages}
        allowed = None if free_text else choices([(h.citation, h.text) for h in hits])
        items.append(
            {"question": q.question, "answer": q.answer, "pages": list(q.pages), "document": q.document}
            | {"messages": grounded_messages(q.question, hits), "choices": allowed}
            | {"passages": [{f.name: getattr(h, f.name) for f in dataclasses.fields(Passage)} for h in hits]}
            | {"page_texts": [[d, p, library.page_text(d, p)] for d, p in sorted(pages)]}
        )
    path.parent.mkdir(exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8")
    os.replace(partial, path)


def compare_models(
    library: Library,
    models: list[Path],
    questions: list[Question],
    *,
    work: Work = QUIET,
    max_tokens: int = 96,
    free_text: bool = False,
) -> list[dict[str, Any]]:
    """First the baseline with no model (RETRIEVAL_ALONE: the top passage's sentence nearest the question,
    quoted), then each model answering every question twice, alone and with the retrieved passages (as chat
    asks, in the answer form unless `free_text`): one row per (model, retrieval), with every answer and its
    scores."""
    prompts = [(q, search(library, q.question, k=PASSAGES)) for q in questions]
    baseline = [(q, quote_top_hit(q.question, [(h.citation, h.text) for h in hits])) for q, hits in prompts]
    rows = [_compared(library, RETRIEVAL_ALONE, True, prompts, [text for _, text in baseline])]
    for model in models:
        with Worker(model) as worker:
            for retrieval in (False, True):
                texts = []
                for number, (q, hits) in enumerate(prompts, 1):
                    shown = hits if retrieval else []
                    allowed = choices([(h.citation, h.text) for h in shown]) if shown and not free_text else None
                    reply = worker.reply(grounded_messages(q.question, shown), max_tokens=max_tokens, allowed=allowed)
                    texts.append(reply["text"].strip())
                    work.progress(f"{model.name}{' + retrieval' if retrieval else ''}", number, len(prompts))
                rows.append(_compared(library, model.name, retrieval, prompts if retrieval else _alone(prompts), texts))
    return rows


RETRIEVAL_ALONE = "retrieval alone (no model)"


def _alone(prompts: list[tuple[Question, list[Any]]]) -> list[tuple[Question, list[Any]]]:
    return [(q, []) for q, _ in prompts]


def _compared(
    library: Library, name: str, retrieval: bool, prompts: list[tuple[Question, list[Any]]], texts: list[str]
) -> dict[str, Any]:
    answers = []
    for (q, shown), text in zip(prompts, texts, strict=True):
        citations, _ = check_citations(text, shown, library.page_text)
        cited = [(c.document, c.pages) for c in citations]
        answers.append((q, text, score_answer(text, cited, q.answer, q.pages, q.document)))
    row = result_row(name, None, summary([score for _, _, score in answers])) | {"retrieval": retrieval}
    return row | {"answers": [answer_row(q.question, q.answer, t, s) for q, t, s in answers]}


def result_row(model: str, step: int | None, figures: dict[str, Any]) -> dict[str, Any]:
    """A row of `tunedesk eval --json` (docs/architecture.md): the engine's and scoring's `cited_right` is shown as
    `citation_hit`."""
    return {"model": model, "step": step, "answer_score": figures["answer_score"]} | {
        "citation_hit": figures["cited_right"],
        "citation_precision": figures.get("citation_precision"),
        "mean_words": figures["mean_words"],
    }
