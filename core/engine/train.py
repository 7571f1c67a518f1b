"""The training recipe, top to bottom: set up (job, model, data, optimizer), train (with validation loss,
checkpoints and cancel), finish. LoRA on CPU or GPU; QLoRA (4-bit NF4 base, bitsandbytes) with `qlora`.

Deterministic with a seed: the data order of optimizer step s is a function of (seed, s), and a checkpoint
holds the optimizer, scheduler and random state, so a resumed run takes the same steps, with the same
losses, as a run that was never interrupted.

Several processes (torchrun's environment: RANK, WORLD_SIZE, LOCAL_RANK) train one model under DDP. A
step's rows are the same whatever their number; each process takes its share of them, and the gradients are
summed weighted by predicted tokens, so N processes take the steps one would. Process 0 alone evaluates and
writes events and checkpoints (the others' state is the same); a stop seen by any process stops them all at
the same step.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import torch

from core.engine import checkpoint, sizing
from core.engine.data import IGNORE, Example, batch_tensors, pack, read_records, tokenize
from core.errors import Cancelled, KnownError
from core.jobdir import layout
from core.jobdir.config import TrainConfig, config_from
from core.jobdir.events import EventLog, read_events

MAX_EVAL_ROWS = 64  # validation loss over at most this many packed rows, so that eval stays cheap


def run(job_dir: Path) -> None:
    rank, processes = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if processes == 1:
        train(job_dir, rank, processes)
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    try:
        train(job_dir, rank, processes)
    finally:
        torch.distributed.destroy_process_group()


def train(job_dir: Path, rank: int, processes: int) -> None:
    job = layout.read_job(job_dir)
    config = config_from(job["config"])
    events: EventLog | Unwritten = EventLog(job_dir) if rank == 0 else Unwritten()
    stop = _stop_flag(job_dir)

    # -- set up -----------------------------------------------------------------------------------
    torch.manual_seed(config.seed)
    base = Path(job["base"])
    if job.get("base_name") == "demo":
        from core.engine.demo_model import build

        if processes > 1:
            raise KnownError("The built-in demo base trains in one process; give --gpus 1 or a real base.")

        try:
            build(
                base,
                on_progress=lambda m, done, total: events.write("progress", message=m, done=done, total=total),
                cancel=stop,
            )
        except Cancelled:
            events.write("cancelled", step=0)
            return
    # Bad data is refused before the model loads: a typo costs a second, not a model load.
    train_path, val_path = job_dir / layout.DATASET / layout.TRAIN, job_dir / layout.DATASET / layout.VAL
    train_records = read_records(train_path)
    val_records = read_records(val_path) if val_path.is_file() and val_path.read_text().strip() else []
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Before the load: gradient checkpointing is set up with the model.
    shape = sizing.Shape.of(json.loads((base / "config.json").read_text())) if device == "cuda" else None
    if shape and config.fit_memory:
        config = sizing.fit_memory(config, shape, torch.cuda.mem_get_info()[0], processes)
    tokenizer, model = load_model(base, config, device)
    if config.grad_accum * config.batch_rows < processes:
        raise KnownError(
            f"{processes} processes need at least {processes} rows a step; this job trains on "
            f"{config.grad_accum * config.batch_rows} (raise grad_accum)."
        )
    train_rows = _rows(train_records, tokenizer, config, train_path.name)
    val_rows = _rows(val_records, tokenizer, config, val_path.name)[:MAX_EVAL_ROWS] if val_records else []
    steps_per_epoch = math.ceil(len(train_rows) / (config.grad_accum * config.batch_rows))
    total_steps = config.max_steps or math.ceil(config.epochs * steps_per_epoch)
    optimizer = _optimizer(model, config, device)
    scheduler = _scheduler(optimizer, config, total_steps)
    done = 0
    if saved := checkpoint.complete(job_dir):
        done = checkpoint.restore(saved[-1], model, optimizer, scheduler)
    elif "start_adapter" in job:  # an update (train --update): the other job's weights, a fresh optimizer
        checkpoint.load_adapter(job_dir / job["start_adapter"], model)
    # DDP after the restore: it starts every process from process 0's weights.
    trained = torch.nn.parallel.DistributedDataParallel(model) if processes > 1 else model
    events.write(
        "start",
        config=config.to_dict(),
        base=job.get("base_name", str(base)),
        device=device,
        processes=processes,
        bfloat16_compute=cpu_bfloat16(config, device),
        resumed_from=done,
        update_of=job.get("update_of"),
        steps_total=total_steps,
        tokens_total=sum(len(e.ids) for row in train_rows for e in row),
        examples=sum(len(row) for row in train_rows),
    )

    # -- train ------------------------------------------------------------------------------------
    # from_pretrained returns the model in eval mode (peft's wrapper says training, its layers do not), where
    # gradient checkpointing and dropout are off: a 7B QLoRA step then keeps every layer's activations
    # (over 22 GiB at 2 x 768 tokens: more than an A10G has).
    model.train()
    val_loss = None
    scorer = _Scorer(job_dir, done, config) if rank == 0 and config.stop_after_unimproved else None
    started, tokens_seen, training_s = time.monotonic(), 0, 0.0
    for step in range(done + 1, total_steps + 1):
        if _anywhere(stop(), device):
            if step - 1 > done and rank == 0:
                _save(job_dir, step - 1, model, optimizer, scheduler, events, val_loss)
            events.write("cancelled", step=step - 1)
            return
        rows = [train_rows[i] for i in _rows_for_step(step, config, len(train_rows))]
        step_started = time.monotonic()
        loss, tokens = _train_step(trained, optimizer, scheduler, rows, config, device, rank, processes)
        training_s += time.monotonic() - step_started
        tokens_seen += tokens
        elapsed = time.monotonic() - started  # with evaluations and checkpoints: what the ETA must include
        events.write(
            "step",
            step=step,
            loss=loss,
            lr=scheduler.get_last_lr()[0],
            tokens_per_s=round(tokens_seen / training_s, 1),
            eta_s=round(elapsed / (step - done) * (total_steps - step), 1),
            **_gpu_memory(device),
        )
        val_loss = None
        if (
            rank == 0
            and val_rows
            and (step % config.eval_every == 0 or step % config.save_every == 0 or step == total_steps)
        ):
            val_loss = evaluate(model, val_rows, device, config)
            events.write("eval", step=step, val_loss=val_loss)
        if rank == 0 and (step % config.save_every == 0 or step == total_steps):
            _save(job_dir, step, model, optimizer, scheduler, events, val_loss)
            if scorer:
                scorer.score(step, model, tokenizer, device, events)
        if _anywhere(bool(scorer and scorer.past_best()), device) and step < total_steps:
            events.write("done", message=scorer.said(step, total_steps) if scorer else None)
            return
    events.write("done")


def load_model(base: Path, config: TrainConfig, device: str) -> tuple[Any, Any]:
    """Tokenizer and base model with fresh LoRA adapters; never runs code from the folder."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.models.base_models import check_base_folder

    check_base_folder(base)
    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=False)
    options: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False, "attn_implementation": "sdpa"}
    auto = "bfloat16" if device == "cuda" else "float32"
    dtype = getattr(torch, auto if config.dtype == "auto" else config.dtype)
    if config.qlora:
        from transformers import BitsAndBytesConfig

        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, device_map=device, **options)
    model.config.use_cache = False
    checkpointing = {"use_reentrant": False}  # the reentrant variant is deprecated and breaks with frozen inputs
    if config.qlora:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing, gradient_checkpointing_kwargs=checkpointing
        )
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,  # type: ignore[arg-type]  # peft types it int; it takes any number
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    return tokenizer, get_peft_model(model, lora)


def cpu_bfloat16(config: TrainConfig, device: str) -> bool:
    """Whether to compute in bfloat16 over float32 weights: on a CPU with bf16 matrix units (AMX or
    AVX512-BF16), where it doubles LoRA's tokens a second on a 135M model, with `dtype` left on auto."""
    return device == "cpu" and config.dtype == "auto" and torch.cpu._is_avx512_bf16_supported()


def computing(config: TrainConfig, device: str) -> Any:
    """The forward pass's precision (cpu_bfloat16); the weights, gradients and optimizer stay as loaded."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bfloat16(config, device))


def evaluate(model: Any, rows: list[list[Example]], device: str, config: TrainConfig) -> float:
    """Mean loss per predicted token over the validation rows."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), computing(config, device):
        for row in rows:
            batch = {k: v.to(device) for k, v in batch_tensors([row]).items()}
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += model(**batch, use_cache=False).loss.item() * n
            count += n
    model.train()
    return total / max(count, 1)


def _rows(records: list[dict[str, Any]], tokenizer: Any, config: TrainConfig, source: str) -> list[list[Example]]:
    examples = tokenize(records, tokenizer, max_len=config.seq_len, source=source)
    return [[examples[i] for i in row] for row in pack([len(e.ids) for e in examples], config.seq_len)]


def _rows_for_step(step: int, config: TrainConfig, n_rows: int) -> list[int]:
    """The rows of optimizer step `step` (1-based): each epoch visits every row once, in an order fixed by
    the seed and the epoch, so that a resumed run sees exactly the rows an uninterrupted one would."""
    picked = []
    per_step = config.grad_accum * config.batch_rows
    for micro in range((step - 1) * per_step, step * per_step):
        epoch, index = divmod(micro, n_rows)
        order = list(range(n_rows))
        random.Random(config.seed * 1_000_003 + epoch).shuffle(order)
        picked.append(order[index])
    return picked


def _train_step(
    model: Any,
    optimizer: Any,
    scheduler: Any,
    rows: list[list[Example]],
    config: TrainConfig,
    device: str,
    rank: int = 0,
    processes: int = 1,
):
    """One optimizer step over the step's rows, of which this process takes every `processes`-th."""
    # Every process counts every row's predicted tokens: the step's loss is the mean over all of them.
    total = max(sum(_predicted(row) for row in rows), 1)
    mine = rows[rank::processes]
    groups = [mine[i : i + config.batch_rows] for i in range(0, len(mine), config.batch_rows)]
    loss_sum = 0.0
    for n, group in enumerate(groups):
        # Fill tokens are id 0 in every vocabulary; they form their own sequence and carry no loss.
        batch = {k: v.to(device) for k, v in batch_tensors(group).items()}
        # DDP sums the gradients at a process's last backward and divides by the processes: times
        # `processes` undoes that division, so that the sum is the one a single process would make.
        share = sum(_predicted(row) for row in group) / total * processes
        last = n == len(groups) - 1
        with model.no_sync() if processes > 1 and not last else contextlib.nullcontext(), computing(config, device):
            loss = model(**batch, use_cache=False).loss * share
        loss.backward()
        loss_sum += loss.item() / processes
    if processes > 1:
        summed = torch.tensor([loss_sum], device=device)
        torch.distributed.all_reduce(summed)
        loss_sum = summed.item()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, sum(len(e.ids) for row in rows for e in row)


class _Scorer:
    """Early stopping by answer score: each checkpoint, as it is saved, answers the held-out questions the
    app wrote (layout.QUESTIONS); the run stops once `stop_after_unimproved` of them in a row have not
    beaten the best. A resumed run counts the scores its events already hold."""

    def __init__(self, job_dir: Path, done: int, config: TrainConfig) -> None:
        from core.engine.score import read_items

        path = job_dir / layout.QUESTIONS
        self.items = read_items(path) if path.is_file() else []
        self.config = config
        self.best: tuple[float, int] | None = None  # (answer score, step)
        self.unimproved = 0
        # A step's last score counts (`tunedesk eval` may have scored it again), in the order of the steps.
        scored = {e["step"]: e["answer_score"] for e in read_events(job_dir / layout.EVENTS)[0] if e["type"] == "score"}
        for step in sorted(s for s in scored if s <= done):
            self._count(scored[step] or 0.0, step)

    def score(self, step: int, model: Any, tokenizer: Any, device: str, events: EventLog | Unwritten) -> None:
        if not self.items:
            return
        from core.answers.scoring import summary
        from core.engine.score import score_model

        model.eval()
        _, scored = score_model(model, tokenizer, self.items, self.config, device)
        model.train()
        figures = summary(scored)
        events.write("score", step=step, **figures)
        self._count(figures["answer_score"] or 0.0, step)

    def past_best(self) -> bool:
        return self.unimproved >= self.config.stop_after_unimproved

    def said(self, step: int, total: int) -> str:
        assert self.best is not None
        return (
            f"Stopped early at step {step} of {total}: {self.unimproved} checkpoints in a row answered no better "
            f"than step {self.best[1]}'s (answer score {self.best[0]:.3f})."
        )

    def _count(self, answer_score: float, step: int) -> None:
        if self.best is None or answer_score > self.best[0]:
            self.best, self.unimproved = (answer_score, step), 0
        else:
            self.unimproved += 1


def _predicted(row: list[Example]) -> int:
    """Tokens of a packed row that carry loss (batch_tensors: an example's first token is not predicted)."""
    return sum(sum(label != IGNORE for label in example.labels[1:]) for example in row)


def _anywhere(flag: bool, device: str) -> bool:
    """Whether `flag` holds in any of the processes (all of them ask at the same step)."""
    if not torch.distributed.is_initialized():
        return flag
    raised = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(raised, op=torch.distributed.ReduceOp.MAX)
    return bool(raised.item())


class Unwritten:
    """The event log of a process other than process 0: what it would write, process 0 writes."""

    def write(self, kind: str, **fields: Any) -> None:
        pass


def _optimizer(model: Any, config: TrainConfig, device: str) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.qlora and device == "cuda":
        import bitsandbytes as bnb

        # Paged: optimizer state moves to CPU memory under pressure instead of failing the run.
        return bnb.optim.PagedAdamW8bit(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, min(config.warmup_steps, total_steps // 2), total_steps)


def _save(job_dir, step, model, optimizer, scheduler, events: EventLog | Unwritten, val_loss: float | None) -> None:
    path = checkpoint.save(job_dir, step, model, optimizer, scheduler)
    events.write("checkpoint", step=step, path=str(path.relative_to(job_dir)), val_loss=val_loss)


def _gpu_memory(device: str) -> dict[str, float]:
    """The most GPU memory the run has held, for the chart's status line and the benchmarks."""
    if device != "cuda":
        return {}
    return {"gpu_peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def _stop_flag(job_dir: Path):
    """A check for "stop now": the cancel file (the runners' way), or SIGTERM/SIGINT."""
    signalled = []
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: signalled.append(True))
    return lambda: bool(signalled) or (job_dir / layout.CANCEL).exists()
