"""Scale-out: training tokens per second of one job in N processes (torch.distributed, `tunedesk train --gpus
N`), each holding the whole base (DDP) or 1/N of it (FSDP, shard_weights), against the same job in one
process, same model, data, settings and global batch, in the same run.

    .venv/bin/python benchmarks/distributed.py              # CPU, gloo: 2 processes against 1
    python benchmarks/distributed.py --processes 8          # a host with 8 GPUs, NCCL

On a CPU the processes share its cores (the launcher gives each its share of threads), so the figure
shows the cost of the gradient all-reduce and of the split, not a speedup: the goal there is only that it
stays at least 0.5x. On GPUs each process has its own device and the goal is 0.8 x N. Sharing the weights
is reported beside it, without a goal: it is for a base that does not fit one device at all.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import save, verdict
from core import RESOURCES
from core.jobdir.events import read_events

TUNEDESK = [str(Path(sys.executable).parent / "tunedesk")]


def tokens_per_s(data: Path, base: Path, processes: int, steps: int, accumulate: int, shard: bool = False) -> float:
    """The engine's own figure at the last step: tokens of all processes over training time."""
    settings = ["--set", "seq_len=2048", "--set", f"grad_accum={accumulate}", "--set", "eval_every=1000"]
    settings += ["--set", f"shard_weights={str(shard).lower()}"]
    train = [*TUNEDESK, "train", "--base", str(base), "--max-steps", str(steps), *settings]
    trained = subprocess.run(
        [*train, "--gpus", str(processes), "--data-dir", str(data)], capture_output=True, text=True
    )
    if trained.returncode != 0:
        sys.exit(trained.stdout + trained.stderr)
    jobs = sorted((data / "jobs").iterdir(), key=lambda p: int(p.name))
    steps_seen = [e for e in read_events(jobs[-1] / "events.jsonl")[0] if e.type == "step"]
    return steps_seen[-1].tokens_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    import torch

    from core.engine.demo_model import build

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as scratch:
        data, base = Path(scratch) / "data", build(Path(scratch) / "tiny", size="tiny")
        sample = RESOURCES / "samples" / "license_agreement_50p.pdf"
        for command in (["add", str(sample)], ["dataset", "build", "--kinds", "raw,grounded"]):
            subprocess.run([*TUNEDESK, *command, "--data-dir", str(data)], check=True, capture_output=True)
        one = tokens_per_s(data, base, 1, args.steps, args.processes)
        many = tokens_per_s(data, base, args.processes, args.steps, args.processes)
        sharded = tokens_per_s(data, base, args.processes, args.steps, args.processes, shard=True)
    ratio, sharded_ratio = many / one, sharded / one
    goal = 0.8 * args.processes if cuda else 0.5
    line = verdict(
        "distributed",
        f"{args.processes} processes {ratio:.2f}x one ({many:,.0f} against {one:,.0f} tokens/s); sharing the "
        f"weights {sharded_ratio:.2f}x ({sharded:,.0f})",
        f"{goal:.1f}x",
        ratio >= goal,
    )
    save(
        "distributed" if not cuda else "distributed_cuda",
        {
            "processes": args.processes,
            "ratio": round(ratio, 3),
            "sharded_ratio": round(sharded_ratio, 3),
            "one": one,
            "many": many,
            "sharded": sharded,
            "verdict": line,
        },
    )
    print(json.dumps({"ratio": round(ratio, 3), "sharded_ratio": round(sharded_ratio, 3)}))


if __name__ == "__main__":
    main()
