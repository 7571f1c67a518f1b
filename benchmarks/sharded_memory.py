"""Host memory of a job in two processes: each process's peak resident memory once the model is loaded,
when each holds the whole base (DDP) and when they share it (FSDP, `shard_weights`), in the same run, on
SmolLM2-135M (the real base; its folder holds float32 weights, 0.50 GiB).

    .venv/bin/python benchmarks/sharded_memory.py                    # trained in bfloat16, as on a GPU
    .venv/bin/python benchmarks/sharded_memory.py --dtype float32    # trained in the file's own type

Sharded, process 0 alone reads the base and the others receive their part from it, so process 1 holds less
than process 0 (when each process read the whole base, they were alike). The goal: process 1 at most 0.9x
process 0. It shows where the load converts the weights (float32 read as bfloat16): each process that
read them made its own copy. A file already in the training's type is mapped, not copied, and the
processes share its pages: there process 1 held little more when it read the base itself. Over the whole
job on a CPU, the training's own memory (activations, the head's logits) is most of the peak; on GPUs the
host holds little but the loading.
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

TUNEDESK = [str(Path(sys.executable).parent / "tunedesk")]


def peak_rss(pid: int) -> int:
    """The process's own high-water mark of resident memory (bytes); 0 once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:"))


def engine_ranks(job_dir: Path) -> dict[int, int]:
    """pid -> rank of the engine processes training the job."""
    import psutil

    found = {}
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if command[1:] == ["-m", "core.engine", str(job_dir)]:
            try:
                rank = process.environ().get("RANK")
            except psutil.Error:
                continue
            if rank is not None:
                found[process.pid] = int(rank)
    return found


def peaks(data: Path, shard: bool, dtype: str) -> tuple[dict[int, int], dict[int, int]]:
    """Each process's peak resident bytes once the model is loaded and distributed (read when the job's start
    event appears, before the first step has grown it much), and over the whole job."""
    settings = ["--set", "seq_len=512", "--set", "grad_accum=2", "--set", "eval_every=1000", "--set", "save_every=1000"]
    settings += ["--set", f"shard_weights={str(shard).lower()}", "--set", f"dtype={dtype}"]
    train = [*TUNEDESK, "train", "--base", "smollm2", "--max-steps", "2", *settings, "--gpus", "2"]
    job_dir = data / "jobs" / str(len(list((data / "jobs").glob("*"))) + 1)  # the job this run makes
    # To a file, not a pipe: nobody reads a pipe while the job runs, and a full one would stop it.
    output = data / f"train-{shard}.log"
    with output.open("w") as log:
        running = subprocess.Popen([*train, "--data-dir", str(data)], stdout=log, stderr=subprocess.STDOUT)
    loaded: dict[int, int] = {}
    seen: dict[int, int] = {}
    events, started = job_dir / "events.jsonl", False
    while running.poll() is None:
        started = started or (events.is_file() and '"type": "start"' in events.read_text())
        for pid, rank in engine_ranks(job_dir).items():
            seen[rank] = max(seen.get(rank, 0), peak_rss(pid))
            if started and rank not in loaded:
                loaded[rank] = seen[rank]
        time.sleep(0.02)
    if running.returncode != 0:
        sys.exit(output.read_text())
    return loaded, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16", help="the weights' type in training (the file's: float32)")
    args = parser.parse_args()
    from core.models.base_models import PACKAGED

    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        sample = RESOURCES / "samples" / "license_agreement_50p.pdf"
        for command in (["add", str(sample)], ["dataset", "build", "--kinds", "raw"]):
            subprocess.run([*TUNEDESK, *command, "--data-dir", str(data)], check=True, capture_output=True)
        (whole, whole_run), (shared, shared_run) = (peaks(data, shard, args.dtype) for shard in (False, True))
        base_bytes = sum(f.stat().st_size for f in (data / "models" / PACKAGED["smollm2"].name).glob("*.safetensors"))
    gib = 2**30
    saved = shared[0] - shared[1]
    line = verdict(
        "sharded_memory",
        f"loaded and sharing the weights, process 1 holds {shared[1] / gib:.2f} GiB, {shared[1] / shared[0]:.2f}x "
        f"process 0's {shared[0] / gib:.2f} GiB ({saved / gib:.2f} GiB less; the base is {base_bytes / gib:.2f} "
        f"GiB); each holding it whole, {whole[1] / gib:.2f} and {whole[0] / gib:.2f} GiB",
        "process 1 at most 0.9x process 0",
        shared[1] <= 0.9 * shared[0],
    )
    numbers = {"loaded": {"shared": shared, "whole": whole}, "whole_run": {"shared": shared_run, "whole": whole_run}}
    numbers |= {"dtype": args.dtype, "base_bytes": base_bytes, "verdict": line}
    save("sharded_memory", numbers)
    print(json.dumps(numbers))


if __name__ == "__main__":
    main()
