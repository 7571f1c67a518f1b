"""The training loss with the head's logits only at predicted tokens (core/engine/train.py's token_loss)
against transformers' own loss over every token, in the same run: seconds a forward + backward pass over
the same packed rows of the demo dataset, and on CUDA the peak memory of each.

    .venv/bin/python benchmarks/loss.py --model smollm2     # CPU: the packaged SmolLM2-135M
    .venv/bin/python benchmarks/loss.py                     # CPU: the demo model
    python benchmarks/loss.py --model 7b --qlora            # CUDA: Mistral-7B-shaped, random weights

The dataset is the demo's (the sample contract's chunks and grounded Q&A examples): a chat example's prompt
carries no loss, so most of a row's tokens need no logits. Both losses run on the same model, each pass
alternating between them so that the machine's drift falls on both; the figures are the whole passes'
seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import save, verdict
from benchmarks.train import build_dataset, model_folder

GOAL = 1.1  # the same passes at least this much faster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["demo", "smollm2", "7b"], default="demo")
    parser.add_argument("--qlora", action="store_true")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--rows", type=int, default=8, help="micro-batches of one row each, timed by both losses")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import torch

    from core import default_data_dir
    from core.engine.data import IGNORE, batch_tensors, packed, read_records, tokenize
    from core.engine.train import computing, load_model, token_loss
    from core.jobdir.config import load_config
    from core.models.base_models import convert_packaged

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dataset = build_dataset(work)
        if args.model == "smollm2":
            base = convert_packaged("smollm2", default_data_dir())
        else:
            base = model_folder(work, args.model, None)
        settings = {"seq_len": args.seq_len, "qlora": args.qlora, "gradient_checkpointing": args.qlora}
        config = load_config("quick", settings)
        tokenizer, model = load_model(base, config, device)
        records = read_records(dataset / "train.jsonl")
        rows = packed(tokenize(records, tokenizer, max_len=config.seq_len, source="train.jsonl"), config.seq_len)
        batches = [{k: v.to(device) for k, v in batch_tensors([row]).items()} for row in rows[: args.rows]]
        model.train()

        def every_token(batch: dict) -> object:
            return model(**batch, use_cache=False).loss

        def predicted_only(batch: dict) -> object:
            return token_loss(model, batch)

        def pass_over(loss_of, batch: dict) -> dict:
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            with computing(config, device):
                loss = loss_of(batch)
            loss.backward()
            model.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
            return {"loss": loss.item(), "peak_gib": peak}

        pass_over(every_token, batches[0])  # warm-up: the first pass allocates and picks kernels
        seconds: dict[str, list[float]] = {"every_token": [], "predicted_only": []}
        peaks: dict[str, list[float]] = {"every_token": [], "predicted_only": []}
        losses: dict[str, list[float]] = {"every_token": [], "predicted_only": []}
        for _ in range(args.repeat):
            for batch in batches:
                for name, loss_of in (("every_token", every_token), ("predicted_only", predicted_only)):
                    started = time.perf_counter()
                    result = pass_over(loss_of, batch)
                    seconds[name].append(time.perf_counter() - started)
                    losses[name].append(result["loss"])
                    if result["peak_gib"] is not None:
                        peaks[name].append(result["peak_gib"])
        tokens = sum(int(b["input_ids"].numel()) for b in batches)
        predicted = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)

    ratio = sum(seconds["every_token"]) / sum(seconds["predicted_only"])
    numbers = {
        "model": args.model,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "seq_len": config.seq_len,
        "rows": len(batches),
        "predicted_share": round(predicted / tokens, 3),
        "every_token_s": round(sum(seconds["every_token"]), 2),
        "predicted_only_s": round(sum(seconds["predicted_only"]), 2),
        "speedup": round(ratio, 2),
        "largest_loss_difference": max(
            abs(a - b) for a, b in zip(losses["every_token"], losses["predicted_only"], strict=True)
        ),
    }
    if peaks["every_token"]:
        numbers |= {"every_token_peak_gib": round(max(peaks["every_token"]), 2)}
        numbers |= {"predicted_only_peak_gib": round(max(peaks["predicted_only"]), 2)}
    print(json.dumps(numbers, indent=2))
    save(f"loss_{args.model}_{device}", numbers)
    verdict(
        f"loss_{args.model}",
        f"{ratio:.2f}x faster forward + backward with logits only at predicted tokens"
        f" ({numbers['predicted_share']:.0%} of tokens) on {numbers['device']}",
        f"at least {GOAL}x",
        ratio >= GOAL,
    )


if __name__ == "__main__":
    main()
