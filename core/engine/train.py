"""The training recipe, top to bottom: set up (job, model, data, optimizer), train (with validation loss,
checkpoints and cancel), finish. LoRA on CPU or GPU; QLoRA (4-bit NF4 base, bitsandbytes) with `qlora`.

Deterministic with a seed: the data order of optimizer step s is a function of (seed, s), and a checkpoint
holds the optimizer, scheduler and random state, so a resumed run takes the same steps, with the same
losses, as a run that was never interrupted.

Several processes (torchrun's environment: RANK, WORLD_SIZE, LOCAL_RANK) train one model, each holding the
whole base (DDP) or 1/N of it (FSDP, `shard_weights`, for a base too large for one GPU). A step's rows are the
same whatever their number; each process takes its share of them, and the gradients are summed weighted by
predicted tokens, so N processes take the steps one would. Validation and scoring are shared out too. Process
0 alone writes events and checkpoints; a stop seen by any process stops them all at the same step. Sharded,
every forward pass gathers weights from all the processes, so each runs as many as the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.engine import checkpoint, sizing
from core.engine.data import IGNORE, Example, batch_tensors, packed, predicted_tokens, read_records, tokenize
from core.errors import Cancelled, KnownError
from core.jobdir import layout
from core.jobdir.base_folder import DEMO_ONE_PROCESS, check_base_folder
from core.jobdir.config import TrainConfig
from core.jobdir.events import EventLog, Score, read_events
from core.jobdir.job_spec import JobSpec
from core.progress import Work

MAX_EVAL_ROWS = 64  # validation loss over at most this many packed rows, so that eval stays cheap


def run(job_dir: Path) -> None:
    rank, processes = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if processes == 1:
        Recipe(job_dir, rank, processes).run()
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    try:
        Recipe(job_dir, rank, processes).run()
    finally:
        torch.distributed.destroy_process_group()


@dataclass(frozen=True)
class Place:
    """Where one process trains: its rank of `processes`, its device, and whether the base is shared between
    the processes (FSDP) rather than whole in each (DDP)."""

    rank: int = 0
    processes: int = 1
    device: str = "cpu"
    sharded: bool = False


class Recipe:
    """One run of a job in one process, as torchtune's recipes are: `setup` (the job, the model, the data,
    the optimizer), `train` (the steps, with validation, checkpoints, scoring and cancel), `save` between."""

    def __init__(self, job_dir: Path, rank: int, processes: int) -> None:
        self.job_dir = job_dir
        self.job = JobSpec.read(job_dir)
        self.config = self.job.config
        self.place = Place(rank, processes, "cuda" if torch.cuda.is_available() else "cpu")
        self.events: EventLog | Unwritten = EventLog(job_dir) if rank == 0 else Unwritten()
        self.stop = _stop_flag(job_dir)

    def run(self) -> None:
        if self.setup():
            self.train()

    # -- set up -----------------------------------------------------------------------------------------
    def setup(self) -> bool:
        """Everything before the first step; False where a cancel came while the demo base was built."""
        job, rank, processes, device = self.job, self.place.rank, self.place.processes, self.place.device
        torch.manual_seed(self.config.seed)
        base = Path(job.base)
        if job.demo:
            from core.engine.demo_model import build

            base = layout.demo_base(self.job_dir)
            if processes > 1:
                raise KnownError(DEMO_ONE_PROCESS)
            said = lambda m, done, total: self.events.write("progress", message=m, done=done, total=total)  # noqa: E731
            try:
                build(base, work=Work(said, self.stop))
            except Cancelled:
                self.events.write("cancelled", step=0)
                return False
        # Bad data is refused before the model loads: a typo costs a second, not a model load.
        dataset = self.job_dir / layout.DATASET
        train_path, val_path = dataset / layout.TRAIN, dataset / layout.VAL
        train_records = read_records(train_path)
        val_records = read_records(val_path) if val_path.is_file() and val_path.read_text().strip() else []
        # Before the load: gradient checkpointing is set up with the model.
        config = self.config = fitted(self.config, base, device, processes)
        sharded = processes > 1 and config.shard_weights
        self.place = dataclasses.replace(self.place, sharded=sharded)
        # Sharded, process 0 alone reads the base, into CPU memory; the others make it empty and receive their
        # part of each weight from process 0 (_distributed), so that a load that converts the weights' type
        # makes one copy of the base, not one a process.
        reads_weights = rank == 0 or not sharded
        self.tokenizer, self.model = load_model(base, config, "cpu" if sharded else device, weights=reads_weights)
        if config.grad_accum * config.batch_rows < processes:
            raise KnownError(
                f"{processes} processes need at least {processes} rows a step; this job trains on "
                f"{config.grad_accum * config.batch_rows} (raise grad_accum)."
            )
        self.train_rows = _rows(train_records, self.tokenizer, config, train_path.name)
        val_rows = _rows(val_records, self.tokenizer, config, val_path.name) if val_records else []
        self.val_rows = val_rows[:MAX_EVAL_ROWS]
        self.total_steps = steps_total(config, len(self.train_rows))
        # The adapter goes in whole, before the model is split between the processes; the optimizer after.
        saved = checkpoint.complete(self.job_dir)
        # A resume's last checkpoint, or an update's (train --update) other job's adapter with a fresh optimizer.
        adapter = saved[-1] if saved else self.job_dir / job.start_adapter if job.start_adapter else None
        if adapter and reads_weights:
            checkpoint.load_adapter(adapter, self.model)
        self.trained = _distributed(self.model, self.place)
        self.optimizer = new_optimizer(self.model, config, device)
        self.scheduler = _scheduler(self.optimizer, config, self.total_steps)
        self.done = checkpoint.restore(saved[-1], self.model, self.optimizer, self.scheduler) if saved else 0
        self.events.write(
            "start",
            config=config.to_dict(),
            base=job.label,
            device=device,
            processes=processes,
            shard_weights=sharded,
            bfloat16_compute=cpu_bfloat16(config, device),
            resumed_from=self.done,
            update_of=dataclasses.asdict(job.update_of) if job.update_of else None,
            steps_total=self.total_steps,
            tokens_total=sum(len(e.ids) for row in self.train_rows for e in row),
            examples=sum(len(row) for row in self.train_rows),
        )
        return True

    # -- train ------------------------------------------------------------------------------------------
    def train(self) -> None:
        config, place, total = self.config, self.place, self.total_steps
        # from_pretrained returns the model in eval mode (peft's wrapper says training, its layers do not),
        # where gradient checkpointing and dropout are off: a 7B QLoRA step then keeps every layer's
        # activations (over 22 GiB at 2 x 768 tokens: more than an A10G has).
        self.model.train()
        val_loss = None
        scorer = _Scorer(self.job_dir, self.done, config, place) if config.stop_after_unimproved else None
        started, tokens_seen, training_s = time.monotonic(), 0, 0.0
        for step in range(self.done + 1, total + 1):
            stepped = None
            if not _anywhere(self.stop(), place.device):
                rows = [self.train_rows[i] for i in _rows_for_step(step, config, len(self.train_rows))]
                step_started = time.monotonic()
                # One process looks for a stop between the step's micro-batches too: a step on a CPU can take
                # a minute, and a cancel must answer in seconds. Several would have to agree first (a
                # collective per micro-batch), and their steps are GPU steps, short already.
                within = self.stop if place.processes == 1 else None
                stepped = _train_step(self.trained, self.optimizer, self.scheduler, rows, config, place, within)
            if stepped is None:  # stopped: the step under way is dropped, the steps before it are kept
                if step - 1 > self.done:
                    self.save(step - 1, val_loss)
                self.events.write("cancelled", step=step - 1)
                return
            loss, tokens = stepped
            training_s += time.monotonic() - step_started
            tokens_seen += tokens
            elapsed = time.monotonic() - started  # with evaluations and checkpoints: what the ETA must include
            self.events.write(
                "step",
                step=step,
                loss=loss,
                lr=self.scheduler.get_last_lr()[0],
                tokens_per_s=round(tokens_seen / training_s, 1),
                eta_s=round(elapsed / (step - self.done) * (total - step), 1),
                **_gpu_memory(place.device),
            )
            val_loss = None
            if self.val_rows and (step % config.eval_every == 0 or step % config.save_every == 0 or step == total):
                progress = self.events.progress_of("computing the validation loss", "rows")
                val_loss = evaluate(self.model, self.val_rows, config, place, progress)
                self.events.write("eval", step=step, val_loss=val_loss)
            if step % config.save_every == 0 or step == total:
                self.save(step, val_loss)
                if scorer:
                    scorer.score(step, self.model, self.tokenizer, self.events)
            if _anywhere(bool(scorer and scorer.past_best()), place.device) and step < total:
                self.events.write("done", message=scorer.said(step, total) if scorer else None)
                return
        self.events.write("done")

    def save(self, step: int, val_loss: float | None) -> None:
        path = checkpoint.save(self.job_dir, step, self.model, self.optimizer, self.scheduler, self.place.rank)
        self.events.write("checkpoint", step=step, path=str(path.relative_to(self.job_dir)), val_loss=val_loss)


def fitted(config: TrainConfig, base: Path, device: str, processes: int = 1) -> TrainConfig:
    """The settings with the micro-batch and gradient checkpointing fitted to the GPU's free memory
    (fit_memory); as they are on a CPU or for a base of another shape than sizing knows."""
    shape = sizing.Shape.of(json.loads((base / "config.json").read_text())) if device == "cuda" else None
    if shape and config.fit_memory:
        return sizing.fit_memory(config, shape, torch.cuda.mem_get_info()[0], processes)
    return config


def steps_total(config: TrainConfig, rows: int) -> int:
    """The optimizer steps of a run over `rows` packed rows: max_steps, or as many as `epochs` take."""
    return config.max_steps or math.ceil(config.epochs * math.ceil(rows / (config.grad_accum * config.batch_rows)))


def load_model(base: Path, config: TrainConfig, device: str, weights: bool = True) -> tuple[Any, Any]:
    """Tokenizer and base model with fresh LoRA adapters; never runs code from the folder. Without `weights`
    the parameters are empty (on the meta device), for process 0 to fill (_distributed)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

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
    if weights:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, device_map=device, **options)
    else:
        from accelerate import init_empty_weights

        shape = AutoConfig.from_pretrained(base, trust_remote_code=False)
        with init_empty_weights():  # buffers (rotary frequencies) are computed, not read: they are made whole
            model = AutoModelForCausalLM.from_config(shape, dtype=dtype, attn_implementation="sdpa")
        # Made in that context, every parameter set is a new one, so a head tied to the embeddings came apart:
        # process 0's are tied, and FSDP would gather other sizes in each process.
        model.tie_weights()
    model.config.use_cache = False
    if config.qlora:  # checkpointing is turned on below, as without qlora: peft 0.22 renamed its argument
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if config.gradient_checkpointing:
        # The reentrant variant is deprecated and breaks with frozen inputs. transformers 5.23 renamed the call.
        checkpointing = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing)
        else:
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


def token_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean cross-entropy per predicted token, the head's logits computed only at the positions that predict
    one (any row's, where several rows go side by side). A chat example's prompt, most of its tokens, then
    never goes through the head: its (tokens x vocabulary) logits, their fp32 copy and their gradient are
    not made, which saves memory and the head's compute; the loss is the one transformers computes."""
    targets = batch["labels"][:, 1:]
    kept = (targets != IGNORE).any(dim=0).nonzero().squeeze(1)
    logits = model(
        input_ids=batch["input_ids"], position_ids=batch["position_ids"], logits_to_keep=kept, use_cache=False
    ).logits
    return torch.nn.functional.cross_entropy(
        logits.float().flatten(0, 1), targets[:, kept].flatten(), ignore_index=IGNORE
    )


def evaluate(
    model: Any,
    rows: list[list[Example]],
    config: TrainConfig,
    place: Place,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> float:
    """Mean loss per predicted token over the validation rows, each process taking its share of them
    (`on_progress`: the rows of this process's share done, of all of them)."""
    rank, processes, device = place.rank, place.processes, place.device
    counted = len(rows[rank::processes])  # not the extra row of a share
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss x tokens, tokens
    with torch.no_grad(), computing(config, device):
        mine = share(rows, rank, processes)
        for i, row in enumerate(mine):
            batch = {k: v.to(device) for k, v in batch_tensors([row]).items()}
            loss = token_loss(model, batch)
            if i < counted:
                n = int((batch["labels"][:, 1:] != IGNORE).sum())
                sums += torch.tensor([loss.item() * n, n], dtype=torch.float64, device=device)
            on_progress(i + 1, len(mine))
    model.train()
    if processes > 1:
        torch.distributed.all_reduce(sums)
    loss_sum, tokens = sums.tolist()
    return loss_sum / max(tokens, 1)


def _rows(records: list[dict[str, Any]], tokenizer: Any, config: TrainConfig, source: str) -> list[list[Example]]:
    return packed(tokenize(records, tokenizer, max_len=config.seq_len, source=source), config.seq_len)


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
    place: Place,
    stop: Callable[[], bool] | None = None,
) -> tuple[float, int] | None:
    """One optimizer step over the step's rows, of which this process takes every `processes`-th; None,
    with the model and optimizer as they were, when `stop` says so between two micro-batches."""
    rank, processes, device, sharded = place.rank, place.processes, place.device, place.sharded
    # Every process counts every row's predicted tokens: the step's loss is the mean over all of them.
    total = max(sum(predicted_tokens(row) for row in rows), 1)
    mine = rows[rank::processes]
    groups = [mine[i : i + config.batch_rows] for i in range(0, len(mine), config.batch_rows)]
    # DDP and FSDP average the gradients over the processes: times `processes` undoes that division, so
    # that the sum is the one a single process would make.
    shares = [sum(predicted_tokens(row) for row in group) / total * processes for group in groups]
    if sharded:  # as many forward passes as process 0, the extra one weighted 0
        extra = math.ceil(math.ceil(len(rows) / processes) / config.batch_rows) - len(groups)
        groups, shares = groups + groups[:1] * extra, shares + [0.0] * extra
    loss_sum = 0.0
    for n, (group, share) in enumerate(zip(groups, shares, strict=True)):
        if stop is not None and n and stop():
            optimizer.zero_grad(set_to_none=True)
            return None
        # Fill tokens are id 0 in every vocabulary; they form their own sequence and carry no loss.
        batch = {k: v.to(device) for k, v in batch_tensors(group).items()}
        # DDP sums the gradients at a process's last backward; FSDP at each (the adapters' are small).
        accumulating = processes > 1 and not sharded and n < len(groups) - 1
        with model.no_sync() if accumulating else contextlib.nullcontext(), computing(config, device):
            loss = token_loss(model, batch) * share
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
    app wrote (layout.QUESTIONS), each process a share of them; the run stops once `stop_after_unimproved`
    of them in a row have not beaten the best. A resumed run counts the scores its events already hold."""

    def __init__(self, job_dir: Path, done: int, config: TrainConfig, place: Place = Place()) -> None:
        from core.engine.score import read_items

        self.questions = job_dir / layout.QUESTIONS
        self.items = read_items(self.questions) if self.questions.is_file() else []
        self.config = config
        self.place = place
        self.best: tuple[float, int] | None = None  # (answer score, step)
        self.unimproved = 0
        # A step's last score counts (`tunedesk eval` may have scored it again), in the order of the steps.
        scored = {e.step: e.answer_score for e in read_events(job_dir / layout.EVENTS)[0] if isinstance(e, Score)}
        for step in sorted(s for s in scored if s <= done):
            self._count(scored[step] or 0.0, step)

    def score(self, step: int, model: Any, tokenizer: Any, events: EventLog | Unwritten) -> None:
        if not self.items:
            return
        from core.answers.scoring import summary
        from core.engine.score import answer_all, score_answers, write_answers

        progress = events.progress_of(f"answering the held-out questions with step {step}", "questions")

        def answer(items: list[dict[str, Any]]) -> list[str]:
            return answer_all(
                model, tokenizer, items, self.config, self.place.device, progress, synced=self.place.sharded
            )

        model.eval()
        answers = _shared_out(self.items, self.place, answer)
        model.train()
        scored = score_answers(self.items, answers)
        if self.place.rank == 0:  # beside the questions, where `tunedesk eval` puts its answers
            write_answers(self.questions.with_name(f"{checkpoint.name(step)}.jsonl"), self.items, answers, scored)
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


def _shared_out(items: list[Any], place: Place, work: Any) -> list[Any]:
    """work(items), each process doing its share of them, with every process's results gathered back in the
    items' order."""
    rank, processes = place.rank, place.processes
    if processes == 1:
        return work(items)
    done: list[list[Any]] = [[] for _ in range(processes)]
    torch.distributed.all_gather_object(done, work(share(items, rank, processes)))
    return interleaved(done, len(items))


def share(items: list[Any], rank: int, processes: int) -> list[Any]:
    """Process `rank`'s items: every N-th, then item 0 again where the others have one more (sharded,
    every process runs as many forward passes as the others; that extra result is never used)."""
    mine = items[rank::processes]
    return mine + items[:1] * (math.ceil(len(items) / processes) - len(mine))


def interleaved(done: list[list[Any]], count: int) -> list[Any]:
    """The results of each process's share, back in the order of the `count` items."""
    return [done[i % len(done)][i // len(done)] for i in range(count)]


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

    def progress_of(self, message: str, unit: str) -> Callable[[int, int], None]:
        return lambda done, total: None


def new_optimizer(model: Any, config: TrainConfig, device: str) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.qlora and device == "cuda":
        import bitsandbytes as bnb

        # Paged: optimizer state moves to CPU memory under pressure instead of failing the run.
        return bnb.optim.PagedAdamW8bit(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, min(config.warmup_steps, total_steps // 2), total_steps)


def _distributed(model: Any, place: Place) -> Any:
    """The module a step runs: the model itself in one process, wrapped by DDP (which starts every process
    from process 0's weights), or sharded in place by FSDP2, by decoder layer and then the rest, each process
    then receiving its part of process 0's weights."""
    processes, sharded, device, rank = place.processes, place.sharded, place.device, place.rank
    if processes == 1:
        return model
    if not sharded:
        return torch.nn.parallel.DistributedDataParallel(model)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    whole = model.state_dict() if rank == 0 else {}
    mesh = init_device_mesh(device, (processes,))
    causal_lm = model.get_base_model()
    layers = [m for m in causal_lm.modules() if type(m).__name__ in (causal_lm._no_split_modules or ())]
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    # The causal LM is the root, not peft's wrapper: generate() calls it, and the root's hooks gather the
    # embeddings and the head.
    fully_shard(causal_lm, mesh=mesh)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, whole, options=options)  # one weight at a time, each process keeping its part
    return model


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
