"""Answer quality of a real small model on real contracts: SmolLM2-135M-Instruct (`--base smollm2`) answering
CUAD's questions about a contract, through Tunedesk's own commands (`models --add`, `train`, `export`,
`eval --models`), each contract in a library of its own.

    .venv/bin/python benchmarks/answers.py [--cuad DIR] [--contracts N] [--tune STEPS] [--long N]

Setups, for each contract, all in the same run:
- retrieval alone: no model; search's top passage, its sentence sharing the most words with the question,
  quoted with that passage's label (the baseline tuning must beat);
- base: the base model without retrieval;
- base + retrieval, free text, and base + retrieval in the answer form (core/answers/form.py: a sentence of
  a passage with its own label, or the abstention, under llama.cpp's grammar);
- with `--tune`, the path a user takes with no options: `train --base smollm2 --max-steps STEPS` (the
  default dataset), `export 1` (the default quantization), then tuned + retrieval, free and in the form.
Figures per setup: the answer score (core/answers/scoring.py), the share of questions whose answer cites an
expected page, citation precision (the share of cited pages that are expected) and mean words. The expected
answer is CUAD's normalised answer where it has one, else the first annotated clause text.

The contracts are the N shortest of the held-back half of ../shared/cuad-dev (the last 20 files in name
order; retrieval was tuned on the first 20, and nothing here was tuned on either), and with `--long M`
the M shortest of its contracts over 20 pages too. Goals (issue 30): tuned + retrieval in the form cites an
expected page on at least 60% of questions with citation precision at least 0.90, and beats retrieval alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import save, verdict

ROOT = Path(__file__).resolve().parent.parent
TUNEDESK = Path(sys.executable).parent / "tunedesk"
SETUPS = (
    "retrieval alone",
    "base",
    "base + retrieval, free text",
    "base + retrieval",
    "tuned + retrieval, free text",
    "tuned + retrieval",
)


def tunedesk(*args: str, data: Path, timeout: float = 3600) -> str:
    result = subprocess.run(
        [str(TUNEDESK), *args, "--data-dir", str(data)], capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise SystemExit(f"tunedesk {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def questions_of(annotations: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for item in annotations["questions"]:
        expected = item["cuad_answer"] or (item["evidence"][0]["text"] if item["evidence"] else "")
        if item["pages"] and expected:
            rows.append({"question": item["question"], "answer": expected, "pages": item["pages"]})
    return rows


def contract(pdf: Path, annotations: dict[str, Any], tune_steps: int | None) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        data, questions = Path(tmp) / "data", Path(tmp) / "questions.jsonl"
        questions.write_text("".join(json.dumps(q) + "\n" for q in questions_of(annotations)))
        tunedesk("add", str(pdf), data=data)
        tunedesk("models", "--add", "smollm2", data=data)
        models = ["1"]
        if tune_steps:
            tunedesk("train", "--base", "smollm2", "--max-steps", str(tune_steps), data=data)  # as a user would
            tunedesk("export", "1", data=data)
            models.append("2")
        compare = ["eval", "--models", *models, "--questions", str(questions), "--json"]
        formed = json.loads(tunedesk(*compare, data=data))["rows"]
        free = json.loads(tunedesk(*compare, "--free-text", data=data))["rows"]
    figures = {}
    for rows, form in ((formed, ""), (free, ", free text")):
        for number, row in enumerate(rows):
            if number == 0:  # the no-model baseline leads both lists; it is the same in each
                setup = "retrieval alone"
            elif not row["retrieval"]:
                setup = "base" if number == 1 else ""
            else:
                setup = ("base" if number == 2 else "tuned") + " + retrieval" + form
            if setup:
                figures[setup] = {key: row[key] for key in ("answer_score", "citation_hit", "citation_precision")}
                figures[setup] |= {"mean_words": row["mean_words"], "questions": len(row["answers"])}
    return figures


def pooled(per_contract: list[dict[str, dict[str, Any]]], setup: str) -> dict[str, Any] | None:
    """Figures over all the questions of all the contracts (each contract weighted by its questions)."""
    rows = [figures[setup] for figures in per_contract if setup in figures]
    if not rows:
        return None
    count = sum(r["questions"] for r in rows)
    mean = {
        key: sum(r[key] * r["questions"] for r in rows) / count
        for key in ("answer_score", "citation_hit", "mean_words")
    }
    precisions = [r for r in rows if r["citation_precision"] is not None]
    mean["citation_precision"] = (
        sum(r["citation_precision"] * r["questions"] for r in precisions) / sum(r["questions"] for r in precisions)
        if precisions
        else None
    )
    return {key: round(value, 3) if value is not None else None for key, value in mean.items()} | {"questions": count}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuad", type=Path, default=ROOT.parent / "shared" / "cuad-dev")
    parser.add_argument("--contracts", type=int, default=3)
    parser.add_argument(
        "--long", type=int, default=0, help="also this many of the held-back contracts over 20 pages, shortest first"
    )
    parser.add_argument("--tune", type=int, metavar="STEPS", default=None)
    args = parser.parse_args()
    held = sorted(sorted(args.cuad.glob("*.annotations.json"))[20:], key=lambda f: json.loads(f.read_text())["pages"])
    long = [f for f in held if json.loads(f.read_text())["pages"] > 20]
    chosen = held[: args.contracts] + [f for f in long[: args.long] if f not in held[: args.contracts]]
    per_contract = []
    for file in chosen:
        annotations = json.loads(file.read_text())
        figures = contract(args.cuad / annotations["contract_file"], annotations, args.tune)
        per_contract.append(figures)
        print(f"{annotations['contract_file'][:60]} ({annotations['pages']} pages): {json.dumps(figures)}", flush=True)
    totals = {setup: pooled(per_contract, setup) for setup in SETUPS}
    beats = sum(
        f["tuned + retrieval"]["answer_score"] > f["retrieval alone"]["answer_score"]
        for f in per_contract
        if "tuned + retrieval" in f
    )
    save(
        "answers",
        {"contracts": [f.name for f in chosen], "tune_steps": args.tune, "setups": totals}
        | {"per_contract": per_contract, "tuned_beats_retrieval_alone_on": beats},
    )
    for setup, figures in totals.items():
        if figures:
            print(f"  {setup:<30} {json.dumps(figures)}")
    tuned, alone = totals["tuned + retrieval"], totals["retrieval alone"]
    if tuned is None or alone is None:
        verdict("answers", "no tuned model measured (--tune STEPS)", "tuned cites right on 60%", False)
        return 1
    met = (
        tuned["citation_hit"] >= 0.6
        and (tuned["citation_precision"] or 0) >= 0.9
        and tuned["answer_score"] > alone["answer_score"]
    )
    line = verdict(
        "answers",
        f"tuned + retrieval in the answer form cites right {tuned['citation_hit']:.0%}, precision "
        f"{tuned['citation_precision']}, score {tuned['answer_score']:.3f} against retrieval alone's "
        f"{alone['answer_score']:.3f} (beats it on {beats} of {len(per_contract)} contracts)",
        "cites right on >= 60%, precision >= 0.90, above retrieval alone",
        met,
    )
    return 0 if line.endswith(": met") else 1


if __name__ == "__main__":
    sys.exit(main())
