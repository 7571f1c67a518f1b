"""The SSH runner: a job's engine on a remote host, with the same job directory as on this machine.

    preflight  the host answers with a verified key; its Python, GPUs (nvidia-smi) and free disk
    bootstrap  a Python that can run the engine: the host's own if it imports torch, transformers and peft,
               else a venv with the engine's dependencies, made once and reused by later jobs
    upload     the engine's code (once per version, by hash), the base model (once, by hash) and the job
               directory: job.json, the dataset, and the checkpoints of a job being resumed
    start      the local runner's supervisor, started there in a session of its own, so the job survives a
               dropped connection (core/jobs/runners/local.py does the rest there as here)
    pull       new bytes of events.jsonl, appended to the local copy (the app reads that, as for a local
               job), and each finished checkpoint, downloaded once
    wipe       when the job has ended: the remote job directory (dataset, checkpoints, logs) deleted and
               checked gone; what could not be deleted is said, with its path

Everything goes through one paramiko connection per host, opened again after a drop; the remote side needs
only sshd, a Python 3.11+, and SFTP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import posixpath
import shlex
import stat
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from core import secret_prompt
from core.errors import KnownError
from core.jobdir import layout
from core.jobdir.base_folder import DEMO
from core.jobdir.events import EventLog
from core.jobdir.job_spec import JobSpec
from core.jobs import hosts
from core.jobs.runners import engine_env
from core.jobs.runners.engine_env import ENGINE_IMPORTS
from core.progress import QUIET, Work
from core.sizes import format_size

REMOTE_ENV = "HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1"


@dataclass(frozen=True)
class Preflight:
    python: str  # its version
    home: str
    workdir: str  # absolute
    free_bytes: int
    gpus: list[str]  # "NVIDIA A10G, 23028 MiB" each
    cuda: tuple[int, int] | None  # the newest CUDA its driver supports


class Remote:
    """One host's connection, opened on first use and again after a drop."""

    _open: ClassVar[dict[tuple[str, str], Remote]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, host: hosts.Host, data_dir: Path) -> None:
        self.host, self.data_dir = host, data_dir
        self.client: Any = None
        self.passphrase: str | None = None
        self.lock = threading.RLock()

    @classmethod
    def to(cls, host: hosts.Host, data_dir: Path) -> Remote:
        with cls._lock:
            key = (str(data_dir), host.name)
            if key not in cls._open or cls._open[key].host != host:
                cls._open[key] = Remote(host, data_dir)
            return cls._open[key]

    def run(self, command: str, *, timeout: float = 120.0) -> tuple[int, str, str]:
        """Run a shell command there: (exit status, stdout, stderr)."""
        import paramiko

        with self.lock:
            client = self._client()
            try:
                # A channel of our own, not SSHClient.exec_command: the stdin file that makes can be finalized
                # on paramiko's thread while it holds the channel's lock, which hangs the connection for good
                # (paramiko #2685).
                channel = client.get_transport().open_session(timeout=hosts.CONNECT_TIMEOUT_S)
                channel.settimeout(timeout)
                # What the engine and the shell write there is the user's only: documents, datasets, adapters.
                channel.exec_command(f"umask 077; {command}")
                channel.shutdown_write()
                # Both streams at once, as invoke reads them: they share the channel's window, and a command
                # that fills it with stderr while only stdout is read waits for ever.
                with ThreadPoolExecutor(1) as reader:
                    stderr = reader.submit(channel.makefile_stderr("rb").read)
                    out = channel.makefile("rb").read()
                    err = stderr.result()
                status = channel.recv_exit_status()
                channel.close()
                return status, out.decode(errors="replace"), err.decode(errors="replace")
            except TimeoutError:
                self.close()
                raise KnownError(
                    f"The host {self.host.name} ({self.host.where}) gave no answer for {timeout:.0f} s to a "
                    "command; Tunedesk closed the connection."
                ) from None
            except (OSError, EOFError, paramiko.SSHException) as error:
                raise self._lost(error) from None

    @contextlib.contextmanager
    def files(self) -> Iterator[Any]:
        """An SFTP session there; a transfer that fails (the connection drops, the disk there is full) is
        one sentence."""
        import paramiko

        with self.lock:
            try:
                sftp = self._client().open_sftp()
            except (OSError, EOFError, paramiko.SSHException) as error:
                raise self._lost(error) from None
        try:
            yield sftp
        except (OSError, EOFError, paramiko.SSHException) as error:
            self.close()
            raise KnownError(
                f"A transfer with {self.host.name} failed ({error or type(error).__name__}): the connection "
                "dropped, or its disk is full."
            ) from None
        finally:
            sftp.close()

    def _lost(self, error: Exception) -> KnownError:
        self.close()
        return hosts.unreachable(self.host, error if isinstance(error, OSError) else OSError(str(error) or "lost"))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def _client(self) -> Any:
        transport = self.client.get_transport() if self.client is not None else None
        if transport is None or not transport.is_active():
            self.close()
            try:
                self.client = hosts.connect(self.host, self.data_dir, passphrase=self.passphrase)
            except hosts.PassphraseNeeded as needed:
                if secret_prompt.ask_secret is None:
                    raise KnownError(f"{needed} Load it into your SSH agent (ssh-add) and try again.") from None
                # Asked once and kept in this process's memory only: never written anywhere.
                self.passphrase = secret_prompt.ask_secret(f"{needed} Passphrase: ")
                self.client = hosts.connect(self.host, self.data_dir, passphrase=self.passphrase)
        return self.client


# -- preflight and bootstrap ------------------------------------------------------------------------------
def preflight(remote: Remote, need_bytes: int = 0) -> Preflight:
    """What the host offers; refused with one sentence if it cannot run the job."""
    host = remote.host
    probe = (
        "import json, os, shutil, sys; w = os.path.expanduser(sys.argv[1]); os.makedirs(w, exist_ok=True); "
        "print(json.dumps({'python': list(sys.version_info[:3]), 'home': os.path.expanduser('~'), "
        "'workdir': os.path.abspath(w), 'free': shutil.disk_usage(w).free}))"
    )
    status, out, err = remote.run(f"{host.python} -c {shlex.quote(probe)} {shlex.quote(host.workdir)}")
    if status != 0:
        raise KnownError(f"The host {host.name} has no working Python at {host.python!r}: {_last_line(err)}.")
    found = json.loads(out)
    version = tuple(found["python"])
    if version[:2] < engine_env.MIN_PYTHON:
        raise KnownError(
            f"The host {host.name} has Python {'.'.join(map(str, version))}; the engine needs 3.11 or newer.",
            cli="Add the host again with `tunedesk hosts add ... --python PATH` to name another.",
        )
    _, gpus, _ = remote.run("nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null")
    _, header, _ = remote.run("nvidia-smi 2>/dev/null")
    checked = Preflight(
        ".".join(map(str, version)),
        found["home"],
        found["workdir"],
        found["free"],
        gpus.strip().splitlines(),
        engine_env.driver_cuda(header),
    )
    if checked.free_bytes < need_bytes:
        raise KnownError(
            f"The host {host.name} has {format_size(checked.free_bytes)} free in {checked.workdir}; the job "
            f"needs about {format_size(need_bytes)} there."
        )
    return checked


def engine_python(remote: Remote, checked: Preflight) -> str | None:
    """The Python that runs the engine there, if one does yet: the host's own, or the engine venv."""
    for python in (remote.host.python, posixpath.join(_engine_venv(checked), "bin", "python")):
        if remote.run(f"{python} -c {shlex.quote(ENGINE_IMPORTS)}")[0] == 0:
            return python
    return None


def engine_state(remote: Remote, checked: Preflight) -> str:
    """What `hosts check` says of the engine there, making nothing: set-up belongs to the first job."""
    python = engine_python(remote, checked)
    if python is not None:
        return python
    return "not set up yet: the first job there sets it up (a few minutes; PyTorch alone is about 1 GB)"


def _engine_venv(checked: Preflight) -> str:
    return posixpath.join(checked.workdir, "engine", engine_env.venv_name())


def bootstrap(remote: Remote, checked: Preflight, work: Work = QUIET) -> str:
    """The Python that runs the engine there: the host's own if it can, else the engine venv (made once)."""
    host = remote.host
    found = engine_python(remote, checked)
    if found is not None:
        return found
    venv = _engine_venv(checked)
    python = posixpath.join(venv, "bin", "python")
    work.say(f"Setting up the engine on {host.name} (once; a few minutes)…")
    steps = engine_env.install_steps(host.python, venv, build=engine_env.torch_build(checked.cuda))
    status, _, err = remote.run(" && ".join(shlex.join(step) for step in steps), timeout=3600)
    if status != 0:
        remote.run(f"rm -rf -- {shlex.quote(venv)}")
        raise KnownError(f"Setting up the engine on {host.name} failed: {_last_line(err)}.")
    return python


# -- upload and start -------------------------------------------------------------------------------------
def code_dir(remote: Remote, checked: Preflight) -> str:
    """The engine's code there, uploaded once per version of it."""
    archive = engine_env.code_archive()
    folder = posixpath.join(checked.workdir, "code", hashlib.sha256(archive).hexdigest()[:16])
    if remote.run(f"test -d {shlex.quote(folder)}/core")[0] != 0:
        _put_archive(remote, archive, folder)
    return folder


def model_dir(remote: Remote, checked: Preflight, base: Path) -> str:
    """The base model there, uploaded once (by the hash of its files' names, sizes and times)."""
    files = sorted(p for p in base.iterdir() if p.is_file())
    stamp = json.dumps([(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in files]).encode()
    folder = posixpath.join(checked.workdir, "models", hashlib.sha256(stamp).hexdigest()[:16])
    if remote.run(f"test -f {shlex.quote(folder)}/.complete")[0] != 0:
        with remote.files() as sftp:
            _mkdirs(sftp, folder)
            for path in files:
                sftp.put(str(path), posixpath.join(folder, path.name))
            sftp.open(posixpath.join(folder, ".complete"), "w").close()
    return folder


def need_bytes(base: Path, dataset_dir: Path, *, demo: bool) -> int:
    """Room a job needs there: the base model (unless built there), the dataset, and 256 MB for
    checkpoints and logs (a LoRA adapter is a few MB to a few hundred)."""
    model = 0 if demo else sum(p.stat().st_size for p in base.glob("*") if p.is_file())
    return model + sum(p.stat().st_size for p in dataset_dir.glob("*")) + (1 << 28)


def remote_job_dir(checked: Preflight, job_dir: Path) -> str:
    # The local data dir's job folder name is unique on this machine; the host may serve several machines.
    tag = hashlib.sha256(str(job_dir.resolve()).encode()).hexdigest()[:8]
    return posixpath.join(checked.workdir, "jobs", f"{job_dir.name}-{tag}")


def start(remote: Remote, job_dir: Path, work: Work = QUIET) -> str:
    """Upload what the job needs and start it there; returns the remote job directory."""
    job = JobSpec.read(job_dir)
    base = Path(job.base)
    demo = job.demo
    work.say(f"Checking {remote.host.name}…")
    checked = preflight(remote, need_bytes(base, job_dir / layout.DATASET, demo=demo))
    python = bootstrap(remote, checked, work)
    work.say(f"Uploading the job to {remote.host.name}…")
    code = code_dir(remote, checked)
    remote_base = posixpath.join(checked.workdir, "models", DEMO) if demo else model_dir(remote, checked, base)
    folder = remote_job_dir(checked, job_dir)
    archive = _job_archive(job_dir, dataclasses.replace(job, base=remote_base))
    remote.run(f"rm -rf -- {shlex.quote(folder)}")
    _put_archive(remote, archive, folder)
    command = (
        f"cd {shlex.quote(code)} && {REMOTE_ENV} PYTHONPATH={shlex.quote(code)} setsid {python} "
        f"-m core.jobs.runners.local {shlex.quote(folder)} < /dev/null >> {shlex.quote(folder)}/engine.log 2>&1"
    )
    status, _, err = remote.run(command)
    if status != 0:
        raise KnownError(f"The job could not be started on {remote.host.name}: {_last_line(err)}.")
    _record(job_dir, {"host": remote.host.name, "dir": folder, "python": python, "code": code, "wiped": False})
    return folder


class There:
    """A remote host, as a Runner (core/jobs/runners/__init__.py)."""

    def __init__(self, host: hosts.Host, data_dir: Path, work: Work = QUIET) -> None:
        self.host, self.data_dir, self.work = host, data_dir, work

    def _remote(self) -> Remote:
        return Remote.to(self.host, self.data_dir)

    def ready(self, base: Path, dataset_dir: Path, *, demo: bool) -> None:
        preflight(self._remote(), need_bytes(base, dataset_dir, demo=demo))

    def start(self, job_dir: Path) -> None:
        start(self._remote(), job_dir, self.work)

    def cancel(self, job_dir: Path) -> None:
        cancel(self._remote(), job_dir)

    def is_alive(self, job_dir: Path) -> bool:
        if not (job_dir / layout.REMOTE).exists():
            return False
        return not ended(job_dir) and is_alive(self._remote(), job_dir)

    def bring_home(self, job_dir: Path) -> None:
        if not (job_dir / layout.REMOTE).exists() or wiped(job_dir):
            return
        remote = self._remote()
        if pull(remote, job_dir) or not is_alive(remote, job_dir):
            pull(remote, job_dir)  # what it wrote last
            left = wipe(remote, job_dir)
            if left:
                EventLog(job_dir).write("warning", message=f"Not everything was deleted on the host: {left}.")
            else:
                EventLog(job_dir).write("wiped", host=self.host.name)


# -- following, cancelling, fetching, wiping ----------------------------------------------------------------
def where(job_dir: Path) -> dict[str, Any]:
    """Where the job runs: {"host", "dir", "python", "code", "wiped"}; in the local job directory."""
    return json.loads((job_dir / layout.REMOTE).read_text())


def wiped(job_dir: Path) -> bool:
    return bool(where(job_dir).get("wiped"))


def pull(remote: Remote, job_dir: Path) -> bool:
    """Bring the remote job's new events and finished checkpoints home; True if it has ended there."""
    folder = where(job_dir)["dir"]
    with remote.files() as sftp:
        local_events = job_dir / layout.EVENTS
        offset = local_events.stat().st_size if local_events.exists() else 0
        try:
            with sftp.open(posixpath.join(folder, layout.EVENTS), "rb") as remote_events:
                remote_events.seek(offset)
                new = remote_events.read()
        except FileNotFoundError:
            new = b""
        complete = new[: new.rfind(b"\n") + 1]  # a line still being written comes next time
        if complete:
            with open(local_events, "ab") as file:
                file.write(complete)
        _fetch_checkpoints(sftp, folder, job_dir)
    return ended(job_dir)


def is_alive(remote: Remote, job_dir: Path) -> bool:
    there = where(job_dir)
    check = (
        "import sys; from pathlib import Path; from core.jobs.runners.local import is_alive; "
        "sys.exit(0 if is_alive(Path(sys.argv[1])) else 1)"
    )
    q = shlex.quote
    return remote.run(f"cd {q(there['code'])} && {there['python']} -c {q(check)} {q(there['dir'])}")[0] == 0


def cancel(remote: Remote, job_dir: Path) -> None:
    folder = where(job_dir)["dir"]
    remote.run(f"touch {shlex.quote(posixpath.join(folder, layout.CANCEL))}")


SUPERVISOR_EXIT_S = 15  # how long a wipe waits for the supervisor there to exit after the engine's last event


def wipe(remote: Remote, job_dir: Path) -> str | None:
    """Delete the remote job directory and check that it is gone; None, or what is left where. The
    supervisor there writes a moment after the engine's last event: deleting before it exits once left
    its newest file behind."""
    folder = where(job_dir)["dir"]
    deadline = time.monotonic() + SUPERVISOR_EXIT_S
    while is_alive(remote, job_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    # The engine log is the one thing worth keeping from there: it may explain a failure.
    with remote.files() as sftp, contextlib.suppress(FileNotFoundError):
        sftp.get(posixpath.join(folder, layout.ENGINE_LOG), str(job_dir / layout.ENGINE_LOG))
    remote.run(f"rm -rf -- {shlex.quote(folder)}")
    status, out, _ = remote.run(f"test -e {shlex.quote(folder)} && du -sh -- {shlex.quote(folder)}")
    _record(job_dir, where(job_dir) | {"wiped": True})
    if status == 0:
        return f"{remote.host.name}:{folder} could not be deleted ({out.split()[0] if out else 'some files'} left)"
    return None


def _record(job_dir: Path, there: dict[str, Any]) -> None:
    partial = job_dir / (layout.REMOTE + ".partial")
    partial.write_text(json.dumps(there))
    partial.replace(job_dir / layout.REMOTE)


def ended(job_dir: Path) -> bool:
    from core.jobdir.events import outcome

    return outcome(job_dir) is not None


def _fetch_checkpoints(sftp: Any, folder: str, job_dir: Path) -> None:
    remote_checkpoints = posixpath.join(folder, layout.CHECKPOINTS)
    try:
        names = sftp.listdir(remote_checkpoints)
    except FileNotFoundError:
        return
    for name in sorted(names):
        if name.endswith(".partial") or (job_dir / layout.CHECKPOINTS / name).exists():
            continue
        partial = job_dir / layout.CHECKPOINTS / f"{name}.download"
        partial.mkdir(parents=True, exist_ok=True)
        for entry in sftp.listdir_attr(posixpath.join(remote_checkpoints, name)):
            if stat.S_ISREG(entry.st_mode or 0):
                sftp.get(posixpath.join(remote_checkpoints, name, entry.filename), str(partial / entry.filename))
        partial.rename(job_dir / layout.CHECKPOINTS / name)


def _job_archive(job_dir: Path, job: JobSpec) -> bytes:
    """job.json (with the remote base), the dataset and the finished checkpoints: what the engine reads."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        spec = json.dumps(job.to_dict(), indent=2).encode()
        info = tarfile.TarInfo(layout.JOB)
        info.size = len(spec)
        archive.addfile(info, io.BytesIO(spec))
        for sub in (layout.DATASET, layout.CHECKPOINTS, layout.START_ADAPTER):
            if (job_dir / sub).is_dir():
                archive.add(job_dir / sub, arcname=sub, filter=lambda i: None if i.name.endswith(".download") else i)
        if (job_dir / layout.EVENTS).exists():  # a resumed job goes on with its events
            archive.add(job_dir / layout.EVENTS, arcname=layout.EVENTS)
    return buffer.getvalue()


def _put_archive(remote: Remote, archive: bytes, folder: str) -> None:
    """Unpack a tar archive into `folder` there (written under a temporary name, then renamed)."""
    partial = folder + ".partial"
    with remote.files() as sftp:
        _mkdirs(sftp, posixpath.dirname(folder))
        with sftp.open(partial + ".tar", "wb") as file:
            file.chmod(0o600)
            file.write(archive)
    q = shlex.quote
    status, _, err = remote.run(
        f"rm -rf -- {q(partial)} && mkdir -p {q(partial)} && "
        f"tar --no-same-permissions -xf {q(partial + '.tar')} -C {q(partial)} && "
        f"rm -f {q(partial + '.tar')} && rm -rf -- {q(folder)} && mv {q(partial)} {q(folder)}"
    )
    if status != 0:
        raise KnownError(f"Unpacking on {remote.host.name} failed: {_last_line(err)}.")


def _mkdirs(sftp: Any, folder: str) -> None:
    parts = folder.split("/")
    for end in range(2, len(parts) + 1):
        path = "/".join(parts[:end])
        try:
            sftp.stat(path)
        except FileNotFoundError:
            sftp.mkdir(path, mode=0o700)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip().rstrip(".") if lines else "no message"
