"""`tunedesk demo`: the whole workflow on the sample contract, in a fresh library beside the user's own: add,
search, Q&A pairs and a dataset, fine-tuning on this computer's CPU, scoring the checkpoints, export to GGUF
and two questions answered offline with their citations checked."""

from __future__ import annotations

import argparse
import shutil
import textwrap
from typing import Any

from core import RESOURCES, default_data_dir
from core.answers.form import ABSTAIN
from core.cli.common import PRINTED, progress_bar
from core.cli.models import export_with_bars
from core.cli.train import follow
from core.errors import KnownError
from core.library.store import Library
from core.progress import Work


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    demo = commands.add_parser("demo", parents=[common], help="try Tunedesk on the sample contract")
    demo.add_argument(
        "--base", default="smollm2", help="the model to fine-tune (%(default)s: a real 135M instruct model)"
    )
    demo.add_argument(
        "--max-steps", type=int, default=DEMO_STEPS, help="train for this many steps (%(default)s: minutes on a CPU)"
    )
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any training setting")
    demo.set_defaults(run=_demo)


DEMO_QUESTIONS = ("Which state's law governs the agreement?", "When can Vyera terminate the agreement?")
# The sample's 124 grounded examples, in 40 rows of about four (1.3 passes): 3 minutes of a 2-core CPU for
# SmolLM2-135M (docs/benchmarks.md), and enough for it to learn to quote a passage and cite its label.
DEMO_STEPS = 40


def _demo(args: argparse.Namespace) -> int:
    from core.answers.chat import ask
    from core.answers.evaluation import load_questions
    from core.dataset import qa_pairs
    from core.dataset.build import DatasetSettings, build_dataset
    from core.jobdir.base_folder import DEMO
    from core.jobdir.config import parse_override
    from core.jobs import jobs
    from core.jobs.checkpoint_scores import evaluate_job
    from core.library.ingest import add_documents
    from core.library.search import search
    from core.models import gguf_models

    home = args.data_dir or default_data_dir()
    data_dir = home / "demo"
    # The demo starts from a fresh library; its base model stays in the main data dir, made once.
    shutil.rmtree(data_dir, ignore_errors=True)
    contract = RESOURCES / "samples" / "license_agreement_50p.pdf"
    print(f"1. Adding the sample contract to a fresh library in {data_dir}")
    with Library(data_dir) as library:
        (outcome,) = add_documents(library, [contract])
        if outcome.document is None:
            raise KnownError(outcome.reason or "The sample contract could not be added.")
        print(f"   {outcome.document.name}: {outcome.document.pages} pages, {outcome.document.chunks} chunks")
        for question in DEMO_QUESTIONS:
            print(f"\n   {question}")
            for hit in search(library, question, k=2):
                print(f"   [{hit.citation}] " + textwrap.shorten(" ".join(hit.text.split()), 200))

        print("\n2. Building a dataset: Q&A pairs drawn from the text, each asked over the passages search finds")
        pairs = qa_pairs.generate(library)
        # Grounded examples only: what the demo's minutes teach is the answer's form (a quote and the label of
        # its passage); in the one comparison made so far, raw text added to them did not teach it
        # (docs/benchmarks.md).
        dataset = build_dataset(library, DatasetSettings(kinds=("grounded",)))
        print(f"   {pairs} Q&A pairs; {dataset.train_examples} training, {dataset.val_examples} validation examples")

        # Two checkpoints, so that choosing by answer score has something to choose from.
        every = max(args.max_steps // 2, 1)
        overrides = {"max_steps": args.max_steps, "save_every": every, "eval_every": every}
        overrides |= dict(parse_override(text) for text in args.set)
        print(f"\n3. Fine-tuning the {args.base} model on it, on this computer's CPU (Ctrl-C leaves it running)")
        asked = jobs.TrainingRequest(args.base, overrides=overrides, dataset_id=dataset.id)
        job, _ = jobs.start_training(library, asked, models_home=home, work=PRINTED)
        if follow(library, job.id) != 0:
            return 1

        questions = load_questions(RESOURCES / "questions" / "license_agreement_50p.jsonl")
        print(f"\n4. Scoring every checkpoint on {len(questions)} questions about the contract (CUAD's annotations)")
        progress = progress_bar()
        try:
            rows = evaluate_job(library, job.id, questions, work=Work(progress))
        finally:
            progress(None, 0, 0)
        for row in rows:
            score, cited = row["answer_score"], row["citation_hit"]
            print(f"   step {row['step']:>5}  answer score {score:.3f}  cited right {cited:.0%}")
        saved = jobs.checkpoints(library, job.id)
        best = jobs.best_checkpoint(saved)
        assert best is not None
        print(f"   best: step {best.step}, by answer score (ties: the lower validation loss); {_other_choices(saved)}")

        print("\n5. Exporting the best checkpoint to GGUF (merge, llama.cpp's converter and quantizer, verify)")
        export_with_bars(library, job.id, step=None, quant="q8_0")
        exported = gguf_models.models(library, job_id=job.id)[-1]
        print("\n6. Asking it, offline through llama.cpp, with the best passages in the prompt")
        for question in DEMO_QUESTIONS:
            answer = ask(library, question, exported.path, max_tokens=120)
            print(f"   {question}")
            print(
                textwrap.fill(
                    answer.text or "(the model gave an empty answer)",
                    100,
                    initial_indent="     ",
                    subsequent_indent="     ",
                )
            )
            cited = "; ".join(f"{c.document} p. {c.pages[0]}" for c in answer.citations)
            if answer.supported:
                print(f"     cited: {cited}")
            else:
                print(
                    "     not answered: search found no passage for it"
                    if answer.text == ABSTAIN
                    else "     unsupported: no citation backed by a passage"
                )
        if args.base == DEMO:
            print("   (the demo model is 3.4M parameters: it has learned the contract's words, not yet sense)")
    return 0


def _other_choices(saved: list) -> str:
    """What choosing by the last step, or by the lowest validation loss, would have taken instead."""
    rated = [c for c in saved if c.val_loss is not None]
    by_loss = f"by validation loss, step {min(rated, key=lambda c: c.val_loss).step}" if rated else "no validation loss"
    return f"by the last step it would be step {saved[-1].step}, {by_loss}"
