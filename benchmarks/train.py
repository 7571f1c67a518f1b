"""Training throughput: useful (non-padding) tokens per second of Tunedesk's engine (packed rows, no
padding) against a plain transformers Trainer + peft baseline that pads each batch to its longest example,
same model, same examples, same LoRA settings, same number of optimizer steps, measured in the same run.

    .venv/bin/python benchmarks/train.py                 # CPU: the demo model (goal: at least 1.5x)
    python benchmarks/train.py --model 7b --qlora         # CUDA: Mistral-7B-shaped, random weights (goal 2x)

The data is the demo's: the sample contract's chunks and grounded Q&A examples (short and long examples
mixed, as in a real dataset). Time counts training steps only: model loading, evaluation and checkpoints
are left out of both sides.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import save, verdict
from core import RESOURCES
from core.jobdir.config import load_config
from core.jobdir.events import read_events
from core.progress import Work

# Mistral 7B v0.1's shape; random weights are fine for speed, so nothing is downloaded.
MISTRAL_7B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["demo", "7b"], default="demo")
    parser.add_argument("--layers", type=int, default=None, help="7b only: fewer layers for a quick look")
    parser.add_argument("--qlora", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8, help="the baseline's examples per step")
    parser.add_argument(
        "--seq-len", type=int, default=None, help="our packed row length (default: the longest example)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dataset = build_dataset(work)
        base = model_folder(work, args.model, args.layers)
        records = [json.loads(line) for line in (dataset / "train.jsonl").read_text().splitlines()]
        validation = [json.loads(line) for line in (dataset / "val.jsonl").read_text().splitlines()]
        lengths = example_lengths(base, records)
        mean = sum(lengths) / len(lengths)
        # Rows as long as the longest example, as many side by side as hold the baseline's batch of tokens.
        seq_len = args.seq_len or -(-max(example_lengths(base, records + validation)) // 64) * 64
        rows = max(1, round(args.batch * mean / seq_len))
        settings = {
            "max_steps": args.steps,
            "seq_len": seq_len,
            "batch_rows": rows,
            "lora_rank": 16,
            "lora_alpha": 32.0,
            "lora_dropout": 0.0,
            "eval_every": 10**6,
            "save_every": 10**6,
            "warmup_steps": 2,
            "qlora": args.qlora,
            "gradient_checkpointing": args.qlora,
        }
        config = load_config("quick", settings)
        ours = run_engine(work / "job", base, dataset, config.to_dict())
        baseline = run_trainer(base, records, config, args.batch)

    ratio = ours["tokens_per_s"] / baseline["tokens_per_s"]
    device = ours["device"]
    goal = 2.0 if device == "cuda" else 1.5
    numbers = {
        "model": args.model if args.layers is None else f"{args.model} ({args.layers} layers)",
        "device": device,
        "steps": args.steps,
        "ours": ours,
        "baseline": baseline,
        "speedup": round(ratio, 2),
        "example_tokens_mean": round(mean, 1),
        "example_tokens_max": max(lengths),
    }
    print(json.dumps(numbers, indent=2))
    name = "train" if device == "cpu" else f"train_{device}_{args.model}"
    save(name, numbers)
    verdict(name, f"{ratio:.2f}x useful tokens/s vs Trainer + peft with padding", f"at least {goal}x", ratio >= goal)


def build_dataset(work: Path) -> Path:
    from core.dataset import qa_pairs
    from core.dataset.build import build_dataset as build
    from core.library.ingest import add_documents
    from core.library.store import Library

    with Library(work / "library") as library:
        list(add_documents(library, [RESOURCES / "samples" / "license_agreement_50p.pdf"]))
        qa_pairs.generate(library)
        return build(library).dir


def model_folder(work: Path, model: str, layers: int | None) -> Path:
    from core import default_data_dir
    from core.engine.demo_model import build
    from core.models.base_models import demo_dir

    demo = build(demo_dir(default_data_dir()), work=Work(lambda message, done, total: print(message)))
    if model == "demo":
        return demo
    import shutil

    import torch
    from transformers import MistralConfig, MistralForCausalLM

    folder = work / "mistral-7b-shaped"
    config = MistralConfig(**(MISTRAL_7B | ({"num_hidden_layers": layers} if layers else {})))
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        weights = MistralForCausalLM(config).to(torch.bfloat16)
    weights.save_pretrained(folder)
    for name in ("tokenizer.model", "tokenizer_config.json"):  # the demo tokenizer: ids < vocab_size
        shutil.copy(demo / name, folder / name)
    del weights
    torch.cuda.empty_cache()
    return folder


def example_lengths(base: Path, records: list[dict]) -> list[int]:
    from transformers import AutoTokenizer

    from core.engine.data import tokenize

    tokenizer = AutoTokenizer.from_pretrained(base)
    numbered = [r | {"line": n} for n, r in enumerate(records, 1)]
    return [len(e.ids) for e in tokenize(numbered, tokenizer, max_len=10**6, source="train.jsonl")]


def run_engine(job_dir: Path, base: Path, dataset: Path, config: dict) -> dict:
    import shutil

    shutil.copytree(dataset, job_dir / "dataset")
    (job_dir / "job.json").write_text(json.dumps({"base": str(base), "base_name": base.name, "config": config}))
    subprocess.run([sys.executable, "-m", "core.engine", str(job_dir)], stderr=subprocess.DEVNULL)
    events = read_events(job_dir / "events.jsonl")[0]
    if events[-1].type != "done":
        sys.exit(f"the engine failed: {getattr(events[-1], 'message', None)}")
    steps = [e for e in events if e.type == "step"]
    start = next(e for e in events if e.type == "start")
    return {
        "tokens_per_s": steps[-1].tokens_per_s,
        "gpu_peak_gib": steps[-1].gpu_peak_gib,
        "device": start.device,
        "seq_len": config["seq_len"],
        "batch_rows": config["batch_rows"],
        "config": start.config,  # as the engine ran it: on CUDA, fitted to the free memory
    }


def run_trainer(base: Path, records: list[dict], config, batch: int) -> dict:
    """The baseline: transformers' Trainer with peft, examples padded to the longest of their batch."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        BitsAndBytesConfig,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from core.engine.data import tokenize

    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.pad_token = tokenizer.unk_token
    numbered = [r | {"line": n} for n, r in enumerate(records, 1)]
    examples = [
        {"input_ids": e.ids, "labels": e.labels} for e in tokenize(numbered, tokenizer, max_len=10**6, source="x")
    ]
    options = {}
    if config.qlora:
        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    dtype = torch.bfloat16 if cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=dtype, device_map="cuda" if cuda else "cpu", attn_implementation="sdpa", **options
    )
    if config.qlora:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    useful, padded = [], []

    def collate(features):
        batch_ = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)(features)
        useful.append(int(batch_["attention_mask"].sum()))
        padded.append(int(batch_["attention_mask"].numel()))
        return batch_

    class Clock(TrainerCallback):
        seconds = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            Clock.seconds += time.perf_counter() - self.started

    arguments = TrainingArguments(
        output_dir=str(base.parent / "trainer"),
        per_device_train_batch_size=batch,
        max_steps=config.max_steps,
        learning_rate=config.lr,
        warmup_steps=2,
        lr_scheduler_type="cosine",
        logging_strategy="no",
        save_strategy="no",
        report_to=[],
        bf16=cuda,
        optim="paged_adamw_8bit" if config.qlora and cuda else "adamw_torch",
        seed=config.seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=examples, data_collator=collate, callbacks=[Clock()])
    trainer.train()
    # The data loader may have collated one batch ahead of the last step: count the steps' batches only.
    tokens = sum(useful[: config.max_steps])
    padding = 1 - tokens / sum(padded[: config.max_steps])
    return {"tokens_per_s": round(tokens / Clock.seconds, 1), "batch": batch, "padding_share": round(padding, 3)}


if __name__ == "__main__":
    main()
