"""The scoring of a job's checkpoints: the engine answers the questions with each checkpoint's adapter applied
(core/engine/score.py), and the scores go to the library, where they choose the best checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.answers import evaluation
from core.errors import KnownError
from core.jobdir.events import JobState
from core.jobs import jobs
from core.jobs.runners import engine_env
from core.jobs.runners.local import run_tool
from core.library.store import Library
from core.progress import QUIET, Work


def evaluate_job(
    library: Library,
    job_id: int,
    questions: list[evaluation.Question] | None = None,
    *,
    work: Work = QUIET,
    on_score: Callable[[dict[str, Any]], None] | None = None,
    free_text: bool = False,
) -> list[dict[str, Any]]:
    """Score every checkpoint of a job; the scores go to the library (and so choose the best checkpoint).
    `work` counts the questions answered over all the checkpoints; `on_score` gets each checkpoint's
    row as soon as it is scored. Answers take chat's form unless `free_text`. Returns one row per
    checkpoint: step, answer_score, citation_hit, mean_words."""
    job, _ = jobs.sync(library, job_id)
    if job.state == JobState.RUNNING:
        raise KnownError(f"Job {job_id} is still training; score it when it ends.")
    if not jobs.checkpoints(library, job_id):
        raise KnownError(f"Job {job_id} has no checkpoint to score.")
    questions = questions or evaluation.held_out_questions(job.dir)
    if not questions:
        raise KnownError(
            f"Job {job_id}'s dataset held out no Q&A pairs to score with.",
            cli="Give a question set with --questions FILE.",
        )
    items = job.dir / evaluation.QUESTIONS
    evaluation.write_items(library, items, questions, free_text=free_text)
    steps = [c.step for c in jobs.checkpoints(library, job_id)]
    rows: list[dict[str, Any]] = []

    def event(event: dict[str, Any]) -> None:
        if event["type"] == "loading":
            work.say("loading the base model")
        elif event["type"] == "progress":
            which = steps.index(event["step"]) if event["step"] in steps else 0
            what = f"step {event['step']} ({which + 1} of {len(steps)})"
            work.progress(what, which * event["total"] + event["done"], len(steps) * event["total"])
        elif event["type"] == "score":
            rows.append(evaluation.result_row(f"job {job_id}", event["step"], event))
            if on_score:
                on_score(rows[-1])

    args = [str(job.dir), str(items)]
    engine = engine_env.local(library.data_dir, work)
    run_tool(
        "core.engine.score",
        args,
        job.dir / "score.log",
        engine=engine,
        on_event=event,
        cancel=work.cancelled,
        what="Scoring",
    )
    jobs.sync(library, job_id)
    return rows
