"""`python -m core.engine.launch JOB_DIR N`: the job in N processes on this machine, started by torchrun's
own launcher (torch.distributed.launcher, what the `torchrun` command runs; no spawning of our own). One
process that fails stops the others (torchrun's doing) and ends the job with one sentence naming it: the
first killed by a signal other than torchrun's own SIGTERM, else the first to fail (a process whose peer died
fails too, later)."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

from core.jobdir.events import EventLog, outcome


def main(job_dir: Path, processes: int) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # torchrun --standalone: a rendezvous on this machine, on a free port; no restarts (a resume is the
    # user's choice, from the last checkpoint).
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.5,
    )
    # Each its share of the cores (torchrun's own default is 1 thread each), not all of them each.
    os.environ.setdefault("OMP_NUM_THREADS", str(max((os.cpu_count() or 1) // processes, 1)))
    try:
        elastic_launch(config, sys.executable)("-m", "core.engine", str(job_dir))
    except ChildFailedError as error:
        # A SIGTERM is torchrun stopping the others once one failed: never the cause while another is known.
        rank, failure = min(
            error.failures.items(),
            key=lambda item: (item[1].exitcode >= 0, item[1].exitcode == -signal.SIGTERM, item[1].timestamp),
        )
        message = failed(rank, processes, failure.exitcode, failure.message)
        if outcome(job_dir) in ("done", "cancelled"):
            # Process 0 recorded the job's outcome; a process that then dies on its way out (an abort in
            # torch's teardown, "terminate called without an active exception") does not change it.
            print(f"After the job ended: {message}", file=sys.stderr)
        else:
            EventLog(job_dir).write("error", message=message)
        return 1
    return 0


def failed(rank: int, processes: int, exitcode: int, message: str) -> str:
    """One sentence for the first process of the job that failed."""
    who = f"Process {rank} of {processes}"
    if exitcode == -signal.SIGKILL:
        return f"{who} was killed (SIGKILL); if nobody stopped it, the computer ran out of memory."
    if exitcode < 0:
        return f"{who} was stopped by signal {signal.Signals(-exitcode).name}."
    if message.startswith("To enable traceback"):  # torchrun's text when the process left no error file
        return f"{who} exited with status {exitcode} (details in engine.log)."
    return f"{who} failed: {message}"


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2])))
