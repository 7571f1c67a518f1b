"""The training recipe, top to bottom: set up (job, model, data, optimizer), train (with validation loss,
checkpoints and cancel), finish. LoRA on CPU or GPU; QLoRA (4-bit NF4 base, bitsandbytes) with `qlora`.

Deterministic with a seed: the data order of optimizer step s is a function of (seed, s), and a checkpoint
holds the optimizer, scheduler and random state, so a resumed run takes the same steps, with the same
losses, as a run that was never interrupted.
"""

from __future__ import annotations

import math
import random
import signal
import time
from pathlib import Path
from typing import Any

import torch

from core.engine import checkpoint
from core.engine.data import Example, batch_tensors, pack, read_records, tokenize
from core.errors import Cancelled
from core.jobdir import layout
from core.jobdir.config import TrainConfig, config_from
from core.jobdir.events import EventLog

MAX_EVAL_ROWS = 64  # validation loss over at most this many packed rows, so that eval stays cheap


def run(job_dir: Path) -> None:
    job = layout.read_job(job_dir)
    config = config_from(job["config"])
    events = EventLog(job_dir)
    stop = _stop_flag(job_dir)

    # -- set up -----------------------------------------------------------------------------------
    torch.manual_seed(config.seed)
    base = Path(job["base"])
    if job.get("base_name") == "demo":
        from core.engine.demo_model import build

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
    tokenizer, model = load_model(base, config, device)
    train_rows = _rows(train_records, tokenizer, config, train_path.name)
    val_rows = _rows(val_records, tokenizer, config, val_path.name)[:MAX_EVAL_ROWS] if val_records else []
    steps_per_epoch = math.ceil(len(train_rows) / (config.grad_accum * config.batch_rows))
    total_steps = config.max_steps or math.ceil(config.epochs * steps_per_epoch)
    optimizer = _optimizer(model, config, device)
    scheduler = _scheduler(optimizer, config, total_steps)
    done = 0
    if saved := checkpoint.complete(job_dir):
        done = checkpoint.restore(saved[-1], model, optimizer, scheduler)
    events.write(
        "start",
        config=config.to_dict(),
        base=job.get("base_name", str(base)),
        device=device,
        bfloat16_compute=cpu_bfloat16(config, device),
        resumed_from=done,
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
    started, tokens_seen, training_s = time.monotonic(), 0, 0.0
    for step in range(done + 1, total_steps + 1):
        if stop():
            if step - 1 > done:
                _save(job_dir, step - 1, model, optimizer, scheduler, events, val_loss)
            events.write("cancelled", step=step - 1)
            return
        rows = [train_rows[i] for i in _rows_for_step(step, config, len(train_rows))]
        step_started = time.monotonic()
        loss, tokens = _train_step(model, optimizer, scheduler, rows, config, device)
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
        if val_rows and (step % config.eval_every == 0 or step % config.save_every == 0 or step == total_steps):
            val_loss = evaluate(model, val_rows, device, config)
            events.write("eval", step=step, val_loss=val_loss)
        if step % config.save_every == 0 or step == total_steps:
            _save(job_dir, step, model, optimizer, scheduler, events, val_loss)
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
    model: Any, optimizer: Any, scheduler: Any, rows: list[list[Example]], config: TrainConfig, device: str
):
    groups = [rows[i : i + config.batch_rows] for i in range(0, len(rows), config.batch_rows)]
    # Fill tokens are id 0 in every vocabulary; they form their own sequence and carry no loss.
    batches = [{k: v.to(device) for k, v in batch_tensors(group).items()} for group in groups]
    counts = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
    total = max(sum(counts), 1)
    loss_sum = 0.0
    for batch, count in zip(batches, counts, strict=True):
        # Weighted by predicted tokens, so that the step's loss is the mean over all its tokens.
        with computing(config, device):
            loss = model(**batch, use_cache=False).loss * (count / total)
        loss.backward()
        loss_sum += loss.item()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, sum(len(e.ids) for row in rows for e in row)


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


def _save(job_dir, step, model, optimizer, scheduler, events: EventLog, val_loss: float | None) -> None:
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
