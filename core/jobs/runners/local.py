"""The local runner: the engine as a child process on this machine, in its own session so that closing
the app or the terminal does not stop the job.

`start` launches a small supervisor (`python -m core.jobs.runners.local JOB_DIR`) that runs the engine and waits
for it: if the engine dies without saying so in events.jsonl (SIGKILL, the out-of-memory killer, a crash
in native code), the supervisor writes the error event with the reason, so no job reads "running" forever.
The supervisor detaches by forking once more (the classic daemon's double fork): no process of the app is
its parent, so none has to reap it, and it outlives the app.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import Cancelled, KnownError
from core.jobdir import layout
from core.jobdir.config import TrainConfig
from core.jobdir.events import EventLog, outcome
from core.jobdir.job_spec import JobSpec
from core.jobs.runners import engine_env
from core.jobs.runners.engine_env import Engine
from core.progress import QUIET, Work

# The engine reads models from folders the app resolved: it never needs the network (docs/reliability.md, promise 2).
ENGINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


class Here:
    """This machine, as a Runner: the engine in the app's Python or in a venv under the data dir."""

    def __init__(
        self,
        data_dir: Path,
        work: Work = QUIET,
    ) -> None:
        self.data_dir, self.work = data_dir, work

    def ready(self, base: Path, dataset_dir: Path, *, demo: bool) -> None:
        engine_env.local(self.data_dir, self.work)

    def plan(self, base: Path, dataset_dir: Path, config: TrainConfig, *, measure: bool) -> dict[str, Any]:
        """A job of these settings as it would be here (core/engine/plan.py): the dataset's longest example
        in the base's tokens and, where it fits, the steps, tokens, memory and, with `measure`, the time."""
        # The log beside the engine's environment, not in the dataset's folder, which jobs copy and upload.
        log = self.data_dir / "engine" / "plan.log"
        log.parent.mkdir(exist_ok=True)
        return run_tool(
            "core.engine.plan",
            [str(base), str(dataset_dir), json.dumps(config.to_dict())] + (["--measure"] if measure else []),
            log,
            engine=engine_env.local(self.data_dir, self.work),
            on_event=lambda event: None,
            cancel=self.work.cancelled,
            what="Timing a training step" if measure else "Counting the dataset's tokens",
        )

    def start(self, job_dir: Path) -> None:
        start(job_dir, engine_env.local(self.data_dir, self.work))

    def cancel(self, job_dir: Path) -> None:
        cancel(job_dir)

    def is_alive(self, job_dir: Path) -> bool:
        return is_alive(job_dir)

    def bring_home(self, job_dir: Path) -> None:
        pass  # the engine writes into the job directory itself


def start(job_dir: Path, engine: Engine) -> None:
    """Start the supervisor with the engine's Python (engine_env.local); when this returns, runner.json
    names it, so `is_alive` can be trusted."""
    (job_dir / layout.CANCEL).unlink(missing_ok=True)
    (job_dir / layout.RUNNER).unlink(missing_ok=True)
    with open(job_dir / layout.ENGINE_LOG, "ab") as log:
        subprocess.run(
            [engine.python, "-m", "core.jobs.runners.local", str(job_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            check=True,
            env=ENGINE_ENV | engine.environ(),
        )


# How often a cancel is looked for while a tool is quiet.
CANCEL_POLL_S = 0.2


def run_tool(
    module: str,
    args: list[str],
    log: Path,
    *,
    engine: Engine,
    on_event: Callable[[dict[str, Any]], None],
    cancel: Callable[[], bool] | None,
    what: str,
) -> dict[str, Any]:
    """Run one of the engine's foreground tools (core/engine/tool.py) to its end: its JSON lines go to
    `on_event`, its stderr to `log`; returns its done event, raises Cancelled or one sentence."""
    with open(log, "ab") as log_file:
        process = subprocess.Popen(
            [engine.python, "-m", module, *args],
            stdout=subprocess.PIPE,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
            text=True,
            env=ENGINE_ENV | engine.environ(),
        )
    last: dict[str, Any] = {}
    assert process.stdout is not None
    # The lines are read in a thread so that a cancel is seen while the tool is quiet too: loading a model
    # or answering one question can take a minute on a CPU without a line.
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    asked_to_stop = False
    with process.stdout:
        try:
            while True:
                try:
                    line = lines.get(timeout=CANCEL_POLL_S)
                except queue.Empty:
                    line = ""
                if cancel and not asked_to_stop and cancel():
                    process.terminate()  # the tool stops, cleans up and says "cancelled": read on
                    asked_to_stop = True
                if line is None:
                    break
                # llama.cpp's tools log to the same stdout: only our JSON lines count.
                event = _json_event(line)
                if event is not None:
                    last = event
                    on_event(event)
        except BaseException:
            process.terminate()
            process.wait()
            reader.join(timeout=5)  # the pipe closes once the tool is gone; the file is closed after
            raise
        reader.join()
    process.wait()
    if last.get("type") == "done":
        return last
    if last.get("type") == "cancelled":
        raise Cancelled()
    raise KnownError(last.get("message") or f"{what} failed (exit status {process.returncode}; see {log.name}).")


def _read_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _json_event(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "type" in event else None


def is_alive(job_dir: Path) -> bool:
    """Whether the job's supervisor is still running (a pid reused by another program does not count)."""
    try:
        pids = json.loads((job_dir / layout.RUNNER).read_text())
    except (OSError, ValueError):
        return False
    return _running(pids.get("supervisor"), pids.get("supervisor_started"))


def cancel(job_dir: Path) -> None:
    """Ask the engine to stop: it saves a checkpoint and writes `cancelled`."""
    (job_dir / layout.CANCEL).touch()


def engine_pid(job_dir: Path) -> int | None:
    try:
        return json.loads((job_dir / layout.RUNNER).read_text()).get("engine")
    except (OSError, ValueError):
        return None


def supervise(job_dir: Path) -> int:
    try:
        count = processes(JobSpec.read(job_dir))
    except KnownError as error:  # the engine would fail the same way
        EventLog(job_dir).write("error", message=str(error))
        return 1
    one = ["-m", "core.engine", str(job_dir)]
    command = one if count == 1 else ["-m", "core.engine.launch", str(job_dir), str(count)]
    engine = subprocess.Popen([sys.executable, *command], stdin=subprocess.DEVNULL)
    _write_pids(job_dir, engine=engine.pid)
    # A SIGTERM for the supervisor (a logout, `kill`) reaches the engine as a request to stop cleanly.
    signal.signal(signal.SIGTERM, lambda *_: engine.send_signal(signal.SIGTERM))
    code = engine.wait()
    if outcome(job_dir) is None:
        EventLog(job_dir).write("error", message=_death(code), exit_code=code)
    return code


def processes(job: JobSpec) -> int:
    """The job's processes: as many as the user asked for, else one per GPU here (one on a machine
    without), but no more than a step has rows to share (the quick preset has one) and one for the demo
    base (check_processes refuses those counts when they are asked for)."""
    if job.processes:
        return job.processes
    if job.demo:
        return 1
    rows = job.config.grad_accum * job.config.batch_rows
    return max(min(_gpus_here(), rows), 1)


def _gpus_here() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([device for device in visible.split(",") if device.strip()])
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 1
    return sum(line.startswith("GPU ") for line in listed.splitlines())


def _death(code: int) -> str:
    if code == -signal.SIGKILL:
        return "The engine was killed (SIGKILL); if nobody stopped it, the computer ran out of memory."
    if code < 0:
        return f"The engine was stopped by signal {signal.Signals(-code).name}."
    return f"The engine exited with status {code} without finishing the job (details in {layout.ENGINE_LOG})."


def _write_pids(job_dir: Path, **pids: int) -> None:
    path = job_dir / layout.RUNNER
    try:  # only the supervisor writes this file, so read-modify-write is safe
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    for role, pid in pids.items():
        data[role] = pid
        data[f"{role}_started"] = _start_time(pid)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data))
    partial.replace(path)


def _start_time(pid: int) -> str | None:
    try:
        # Field 22 of /proc/PID/stat, after the parenthesised command name: start time since boot.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _running(pid: int | None, started: str | None) -> bool:
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        if Path("/proc/self/stat").exists():
            return False
        try:  # no /proc (macOS): the pid exists, which is the best we can tell
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return stat[0] != "Z" and (started is None or stat[19] == started)


def _detach(job_dir: Path) -> None:
    ready, written = os.pipe()
    if os.fork():
        # Return (and let `start` return) only once the supervisor has recorded itself in runner.json.
        os.close(written)
        os.read(ready, 1)
        os._exit(0)
    os.close(ready)
    _write_pids(job_dir, supervisor=os.getpid())
    os.write(written, b"1")
    os.close(written)
    sys.exit(supervise(job_dir))


if __name__ == "__main__":
    _detach(Path(sys.argv[1]))
