"""`python -m core.engine.score JOB_DIR QUESTIONS`: score every checkpoint of a job by the answers it gives.

The app writes QUESTIONS (core/answers/evaluation.py: JOB_DIR/eval/questions.jsonl): each question with its
expected answer and pages, the prompt as chat will send it (the retrieved passages included) and the text
of the passages' pages, so that the engine never touches the library. For each checkpoint the adapter is
applied to the base model and every question answered by greedy decoding, in batches; the answers go to
step-NNNNNN.jsonl beside QUESTIONS and a `score` event to events.jsonl. Progress and the outcome go to
stdout as JSON lines:
    {"type": "loading"}  (the base model, before the first checkpoint's answers)
    {"type": "progress", "step", "done", "total"}
    {"type": "score", "step", "answer_score", "cited_right", "mean_words"}
    {"type": "done"} | {"type": "error", "message"} | {"type": "cancelled"}
SIGTERM or SIGINT cancels.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.answers.citations import Passage, check_citations
from core.answers.form import Choices, fitting
from core.answers.scoring import AnswerScore, answer_row, score_answer, summary
from core.engine import checkpoint, tool
from core.errors import KnownError
from core.jobdir.events import EventLog
from core.jobdir.job_spec import JobSpec

BATCH = 8
MAX_NEW_TOKENS = 96  # the answers asked for are a sentence or two


def score_job(job_dir: Path, questions: Path) -> dict[str, Any]:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from core.engine.train import load_model

    items = read_items(questions)
    saved = checkpoint.complete(job_dir)
    if not saved:
        raise KnownError(f"Job {job_dir.name} has no checkpoint to score yet.")
    job = JobSpec.read(job_dir)
    config = dataclasses.replace(job.config, gradient_checkpointing=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tool.say("loading")
    tokenizer, model = load_model(Path(job.base), config, device)
    model.eval()
    events = EventLog(job_dir)
    for path in saved:
        step = int(path.name.removeprefix("step-"))
        set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))

        def progress(done: int, total: int, step: int = step) -> None:
            tool.say("progress", step=step, done=done, total=total)

        progress(0, len(items))  # the bar counts from here, not from the first batch's answers

        answers = answer_all(model, tokenizer, items, config, device, progress)
        scored = score_answers(items, answers)
        write_answers(questions.with_name(f"{path.name}.jsonl"), items, answers, scored)
        figures = summary(scored)
        events.write("score", step=step, **figures)
        tool.say("score", step=step, **figures)
    return {}


def answer_all(
    model: Any,
    tokenizer: Any,
    items: list[dict[str, Any]],
    config: Any,
    device: str,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    synced: bool = False,
) -> list[str]:
    """The model's answer to every question, in the form chat answers in (core/answers/form.py: a sentence
    of a passage with its label), so that the checkpoint chosen is chosen on what chat
    will say (`synced`: see generate)."""
    from core.engine.train import computing

    answers: list[str] = []
    for start in range(0, len(items), BATCH):
        batch = items[start : start + BATCH]
        allowed = [item.get("choices") for item in batch]
        with computing(config, device):
            answers += generate(model, tokenizer, [item["messages"] for item in batch], device, synced, allowed)
        on_progress(len(answers), len(items))
    return answers


def score_answers(items: list[dict[str, Any]], answers: list[str]) -> list[AnswerScore]:
    return [_score(item, answer) for item, answer in zip(items, answers, strict=True)]


def generate(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict[str, str]]],
    device: str,
    synced: bool = False,
    allowed: list[list[str] | None] | None = None,
) -> list[str]:
    """Greedy answers to a batch of chat prompts, rendered and tokenized as in training (data.py); each one
    of its `allowed` answers where given (a conversation with none answers freely). `synced`: a model
    sharded between processes, which all generate until the last is done (each token's forward pass
    gathers the weights from all of them)."""
    import torch

    rendered = [
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        for messages in conversations
    ]
    prompts = [tokenizer.encode(text, add_special_tokens=False) for text in rendered]
    width = max(len(ids) for ids in prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Padded on the left, so that every prompt ends where its answer begins.
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=device)
    trees = [_tree(tokenizer, *row) for row in zip(rendered, prompts, allowed or [None] * len(prompts), strict=True)]
    anything = list(range(len(tokenizer)))

    def only_choices(row: int, ids: Any) -> list[int]:
        tree = trees[row]
        return tree.allowed(ids[width:].tolist()) if tree else anything

    with torch.no_grad():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
            synced_gpus=synced,
            prefix_allowed_tokens_fn=only_choices if any(trees) else None,
        )
    return [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in output]


def _tree(tokenizer: Any, prompt: str, prompt_ids: list[int], allowed: list[str] | None) -> Choices | None:
    if not allowed:
        return None
    tokenized = {answer: _in_context(tokenizer, prompt, prompt_ids, answer) for answer in allowed}
    fits = fitting(list(tokenized), [len(ids) for ids in tokenized.values()], MAX_NEW_TOKENS)
    return Choices([tokenized[answer] for answer in fits], tokenizer.eos_token_id)


def _in_context(tokenizer: Any, prompt: str, prompt_ids: list[int], answer: str) -> list[int]:
    """`answer`'s tokens as they follow the prompt, as training tokenized them (a SentencePiece tokenizer
    gives an answer alone a leading-space token that never follows "[/INST]"); alone where the prompt's own
    tokens change at the seam."""
    whole = tokenizer.encode(prompt + answer, add_special_tokens=False)
    if whole[: len(prompt_ids)] == prompt_ids:
        return whole[len(prompt_ids) :]
    return tokenizer.encode(answer, add_special_tokens=False)


def _score(item: dict[str, Any], answer: str) -> AnswerScore:
    passages = [Passage(**passage) for passage in item["passages"]]
    pages = {(document_id, page): text for document_id, page, text in item["page_texts"]}
    citations, _ = check_citations(answer, passages, lambda document_id, page: pages.get((document_id, page), ""))
    cited = [(c.document, c.pages) for c in citations]
    return score_answer(answer, cited, item["answer"], item["pages"], item.get("document"))


def read_items(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise KnownError(f"There are no questions to score with at {path}.")
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not items:
        raise KnownError(f"{path.name} holds no questions.")
    return items


def write_answers(path: Path, items: list[dict[str, Any]], answers: list[str], scored: list[AnswerScore]) -> None:
    rows = [
        answer_row(item["question"], item["answer"], answer, s)
        for item, answer, s in zip(items, answers, scored, strict=True)
    ]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(tool.main(lambda: score_job(Path(sys.argv[1]), Path(sys.argv[2]))))
