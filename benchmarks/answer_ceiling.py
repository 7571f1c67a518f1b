"""Where an answer in the form can gain (issue 30): for each question, every answer the form allows over the
passages chat shows (core/answers/form.py: a sentence of a passage with its own label) is scored, and the
best a perfect chooser could reach is set beside retrieval alone (no model: the top passage's sentence that
shares the most words with the question). With `--model GGUF`, that model's choice by each answer's whole
likelihood is measured too, in the same run.

    .venv/bin/python benchmarks/answer_ceiling.py                          # held-back half, no model
    .venv/bin/python benchmarks/answer_ceiling.py --half tune --contracts 4 --model M.gguf

Setups, over the questions of the N shortest contracts of the chosen half of ../shared/cuad-dev (the first
20 files in name order are the tune half, the last 20 the held-back one), each contract in a library of
its own, scored by core/answers/scoring.py:
- retrieval alone;
- the best sentence of the top passage, and the best of all the passages shown: ceilings, not setups a
  user could have;
- with `--model`: the allowed answer the model finds likeliest after the prompt chat sends (log-likelihood
  per token, the end of the turn included), and the one whose likelihood the question raises most over a
  question that asks nothing (its pointwise mutual information with the question).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.answers import questions_of
from benchmarks.common import save, verdict
from core.answers.chat import PASSAGES, grounded_messages
from core.answers.citations import Passage, check_citations
from core.answers.form import choices, quote_top_hit
from core.answers.scoring import AnswerScore, answer_score, score_answer, summary
from core.library.ingest import add_documents
from core.library.search import search
from core.library.store import Library

ROOT = Path(__file__).resolve().parent.parent
NO_QUESTION = "What does the contract say?"


class Likelihoods:
    """Each allowed answer's log-likelihood after a prompt, under a GGUF model run by llama.cpp: the prompt is
    evaluated once and its state restored before each answer."""

    def __init__(self, model: Path) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.llm = Llama(str(model), n_ctx=4096, logits_all=True, verbose=False, seed=0)
        end = self.llm.token_eos()
        self.end = end
        self.render = Jinja2ChatFormatter(
            self.llm.metadata["tokenizer.chat_template"],
            eos_token=self.llm.detokenize([end]).decode(),
            bos_token=self.llm.detokenize([self.llm.token_bos()]).decode(),
            add_generation_prompt=True,
        )

    def of(self, messages: list[dict[str, str]], answers: list[str]) -> list[tuple[float, int]]:
        """(log-likelihood, tokens) of each answer, the end of the turn counted as one of its tokens."""
        import numpy as np

        prompt = self.llm.tokenize(self.render(messages=messages).prompt.encode(), add_bos=False, special=True)
        self.llm.reset()
        self.llm.eval(prompt)
        state = self.llm.save_state()
        found = []
        for answer in answers:
            ids = [*self.llm.tokenize(answer.encode(), add_bos=False), self.end]
            self.llm.load_state(state)
            self.llm.eval(ids)
            logits = np.asarray(self.llm.scores[len(prompt) - 1 : len(prompt) - 1 + len(ids)], dtype=np.float64)
            peak = logits.max(axis=1, keepdims=True)
            log_softmax = logits - peak - np.log(np.exp(logits - peak).sum(axis=1, keepdims=True))
            found.append((float(log_softmax[np.arange(len(ids)), ids].sum()), len(ids)))
        return found


def contract(pdf: Path, annotations: dict[str, Any], model: Likelihoods | None) -> dict[str, list[AnswerScore]]:
    scored: dict[str, list[AnswerScore]] = {}
    with tempfile.TemporaryDirectory() as tmp, Library(Path(tmp) / "library") as library:
        list(add_documents(library, [pdf]))
        for item in questions_of(annotations):
            hits = search(library, item["question"], k=PASSAGES)
            passages = [Passage(**{f.name: getattr(h, f.name) for f in dataclasses.fields(Passage)}) for h in hits]
            shown = [(h.citation, h.text) for h in hits]
            allowed = choices(shown)

            def score(answer: str, item: dict[str, Any] = item, passages: list[Passage] = passages) -> AnswerScore:
                cited, _ = check_citations(answer, passages, library.page_text)
                return score_answer(answer, [(c.document, c.pages) for c in cited], item["answer"], item["pages"], None)

            each = [score(answer) for answer in allowed]
            top = [s for answer, s in zip(allowed, each, strict=True) if shown and answer.endswith(f"[{shown[0][0]}]")]
            picks = {
                "retrieval alone": score(quote_top_hit(item["question"], shown)),
                "best sentence of the top passage (ceiling)": max(top or each, key=lambda s: s.value),
                "best sentence of the passages shown (ceiling)": max(each, key=lambda s: s.value),
            }
            if model is not None:
                asked = model.of(grounded_messages(item["question"], hits), allowed)
                blank = model.of(grounded_messages(NO_QUESTION, hits), allowed)
                per_token = [total / tokens for total, tokens in asked]
                lift = [a[0] - b[0] for a, b in zip(asked, blank, strict=True)]
                picks["model: likeliest answer"] = each[per_token.index(max(per_token))]
                picks["model: answer the question makes likelier"] = each[lift.index(max(lift))]
            for setup, picked in picks.items():
                scored.setdefault(setup, []).append(picked)
    return scored


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuad", type=Path, default=ROOT.parent / "shared" / "cuad-dev")
    parser.add_argument("--half", choices=["tune", "held-back"], default="held-back")
    parser.add_argument("--contracts", type=int, default=20)
    parser.add_argument("--model", type=Path, help="a GGUF model whose choice is measured too")
    args = parser.parse_args()
    files = sorted(args.cuad.glob("*.annotations.json"))
    half = files[:20] if args.half == "tune" else files[20:]
    chosen = sorted(half, key=lambda f: json.loads(f.read_text())["pages"])[: args.contracts]
    model = Likelihoods(args.model) if args.model else None
    pooled: dict[str, list[AnswerScore]] = {}
    for file in chosen:
        annotations = json.loads(file.read_text())
        for setup, scores in contract(args.cuad / annotations["contract_file"], annotations, model).items():
            pooled.setdefault(setup, []).extend(scores)
        print(f"{annotations['contract_file'][:60]} ({annotations['pages']} pages)", flush=True)
    figures = {setup: summary(scores) | {"questions": len(scores)} for setup, scores in pooled.items()}
    for setup, numbers in figures.items():
        print(f"  {setup:<48} {json.dumps(numbers)}")
    name = f"answer_ceiling_{args.half}" + (f"_{args.model.stem}" if args.model else "")
    save(name, {"contracts": [f.name for f in chosen], "model": str(args.model)} | figures)
    alone, top, shown = (
        answer_score(pooled[setup])
        for setup in (
            "retrieval alone",
            "best sentence of the top passage (ceiling)",
            "best sentence of the passages shown (ceiling)",
        )
    )
    verdict(
        "answer_ceiling",
        f"retrieval alone {alone:.3f}; a perfect choice within the top passage {top:.3f}, among the "
        f"{PASSAGES} passages shown {shown:.3f}",
        "a report: where a model's choice can add",
        True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
