"""`python -m core.engine.plan BASE DATASET_DIR SETTINGS [--measure]` (SETTINGS: the TrainConfig as JSON): a
training job on this computer as it would be, before it exists (core/jobs/jobs.py, start_training and
estimate_training).

- The dataset's longest example in the base's tokens, counted as training counts them (the base's tokenizer
  and chat template, core/engine/data.py), so that a sequence length that cannot hold it is refused before
  launch, not a model load into the job. Where it does not fit, that is all the plan says.
- The optimizer steps and the tokens the job would train, from the same packing and schedule as train.py.
- The memory the training would hold, GPU memory on CUDA, RAM on a CPU: from the base's shape
  (core/engine/sizing.py); with --measure, the peak of one real optimizer step instead.
- With --measure, the rate here: one optimizer step over the first micro-batch, timed after a first one that
  warms up (allocations, kernels). The time is that rate over the job's tokens, plus its validation passes
  (forward only, about a third of a training token's cost); scoring checkpoints is not in it.

One JSON line on stdout (core/engine/tool.py):
    {"type": "done", "longest", "source", "line", "steps", "tokens", "device", "memory_bytes",
     "memory_measured", "tokens_per_s", "seconds"} | {"type": "error", "message"} | {"type": "cancelled"}
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from core.engine import tool
from core.engine.data import batch_tensors, packed, read_records, tokenize
from core.jobdir import layout
from core.jobdir.base_folder import check_base_folder
from core.jobdir.config import TrainConfig, config_from


def plan(base: Path, dataset: Path, config: TrainConfig, measure: bool) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    from core.engine import sizing, train

    check_base_folder(base)
    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=False)
    examples: dict[str, list[Any]] = {}
    found: dict[str, Any] = {"longest": 0, "source": "", "line": 0}
    for name in (layout.TRAIN, layout.VAL):
        path = dataset / name
        if not path.is_file() or not path.read_text(encoding="utf-8").strip():
            examples[name] = []
            continue
        examples[name] = tokenize(read_records(path), tokenizer, max_len=sys.maxsize, source=name)
        for example in examples[name]:
            if len(example.ids) > found["longest"]:
                found = {"longest": len(example.ids), "source": name, "line": example.line}
    if found["longest"] > config.seq_len:
        return found

    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = train.fitted(config, base, device)
    train_rows = packed(examples[layout.TRAIN], config.seq_len)
    steps = train.steps_total(config, len(train_rows))
    per_step = config.grad_accum * config.batch_rows
    tokens_a_row = sum(len(e.ids) for row in train_rows for e in row) / max(len(train_rows), 1)
    tokens = round(steps * per_step * tokens_a_row)
    val_rows = packed(examples[layout.VAL], config.seq_len)[: train.MAX_EVAL_ROWS]
    evaluations = sum(
        1 for s in range(1, steps + 1) if s % config.eval_every == 0 or s % config.save_every == 0 or s == steps
    )
    val_tokens = evaluations * sum(len(e.ids) for row in val_rows for e in row)
    found |= {"steps": steps, "tokens": tokens, "device": device, "memory_measured": measure}
    found |= {"memory_bytes": None, "tokens_per_s": None, "seconds": None}
    if measure:
        rate, peak = _measure(base, config, device, train_rows[: config.batch_rows])
        found |= {"memory_bytes": peak, "tokens_per_s": round(rate, 1), "seconds": (tokens + val_tokens / 3) / rate}
    else:
        shape = sizing.Shape.of(json.loads((base / "config.json").read_text()))
        full = 2 if device == "cuda" or config.dtype == "bfloat16" else 4
        if shape:
            found["memory_bytes"] = sizing.training_bytes(
                shape,
                config.batch_rows * config.seq_len,
                qlora=config.qlora,
                rank=config.lora_rank,
                checkpointing=config.gradient_checkpointing,
                dropout=config.lora_dropout > 0,
                weight_bytes=full,
                activation_bytes=2 if train.cpu_bfloat16(config, device) else full,
            )
    return found


def _measure(base: Path, config: TrainConfig, device: str, rows: list[list[Any]]) -> tuple[float, float]:
    """Tokens a second of one optimizer step over `rows`, and the most memory the process held (GPU memory
    on CUDA, its resident size on a CPU)."""
    import torch

    from core.engine import train

    _, model = train.load_model(base, config, device)
    model.train()
    optimizer = train.new_optimizer(model, config, device)
    batch = {k: v.to(device) for k, v in batch_tensors(rows).items()}

    def step() -> float:
        started = time.monotonic()
        with train.computing(config, device):
            train.token_loss(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.monotonic() - started

    step()
    seconds = step()
    tokens = sum(len(e.ids) for row in rows for e in row)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return tokens / seconds, float(peak)


if __name__ == "__main__":
    settings = config_from(json.loads(sys.argv[3]))
    sys.exit(tool.main(lambda: plan(Path(sys.argv[1]), Path(sys.argv[2]), settings, "--measure" in sys.argv[4:])))
