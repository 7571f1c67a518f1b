"""The engine's Python: an environment that imports torch, transformers and peft, here or on a remote host.

On this machine (`local`), it is the app's own interpreter when that has the engine's packages (a developer's
venv, `pip install 'tunedesk[engine]'`). Otherwise (the bundled app, or an app installed without the engine)
it is a venv under the data dir, made the first time the engine is needed, from the machine's Python 3.11+:
the CUDA build of torch where nvidia-smi sees a GPU, the CPU build where it does not. A remote host gets the
same requirements and the same choice (runners/ssh.py, `install_command`).

The venv is built under a temporary name and renamed when complete, so an interrupted set-up is started
again rather than half used. The engine's code is copied beside it (as it is uploaded to a remote host), and
the app lends it its llama.cpp (llama-cpp-python through a .pth file, and llama.cpp's GGUF converter), so
that export quantizes with the very llama.cpp that chat runs and nothing is compiled on the user's machine.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from core.errors import Cancelled, KnownError
from core.progress import QUIET, Work
from core.sizes import format_size

CODE = Path(__file__).resolve().parents[2]  # the core package: the engine's code
# Found, not imported: importing torch and transformers takes seconds, and a check should not.
ENGINE_IMPORTS = (
    "import importlib.util, sys; "
    "sys.exit(0 if all(importlib.util.find_spec(m) for m in "
    "('torch', 'transformers', 'peft', 'safetensors', 'sentencepiece')) else 1)"
)
TORCH = "torch>=2.6"
REQUIREMENTS = [
    "transformers>=5",
    "peft>=0.17",
    "accelerate>=1.10",
    "sentencepiece>=0.2",
    "protobuf>=5",
    "safetensors>=0.4",
    "gguf>=0.10",  # transformers reads a packaged GGUF base model (smollm2) through it
    # What the lent llama.cpp needs beside them: llama-cpp-python's own imports and gguf-py's.
    "diskcache>=5.6",
    "pyyaml>=5.1",
    "tqdm>=4.27",
    "requests>=2.25",
]
GPU_REQUIREMENTS = ["bitsandbytes>=0.45"]  # QLoRA's 4-bit base; CUDA only
# PyTorch's own indexes, one per CUDA build: the newest build the driver runs (nvidia-smi's "CUDA Version" is
# the newest CUDA the driver supports), or the CPU build without an NVIDIA GPU. PyPI's Linux torch is one CUDA
# build, multi-GB, which an older driver cannot run.
TORCH_INDEXES = "https://download.pytorch.org/whl/"
CUDA_BUILDS = [((13, 0), "cu130"), ((12, 8), "cu128"), ((12, 6), "cu126")]
MIN_PYTHON = (3, 11)
# Room the venv takes, with pip's unpacking on top: measured 1.2 GB for the CPU build; a CUDA build's wheels
# (torch with its CUDA libraries, bitsandbytes) come to about 5 GB installed.
ROOM_BYTES = {"cpu": 2 * 10**9, "cuda": 8 * 10**9}


@dataclass(frozen=True)
class Engine:
    """How to start an engine process: its interpreter and what to add to its environment."""

    python: str
    env: dict[str, str] = field(default_factory=dict)

    def environ(self) -> dict[str, str]:
        return dict(os.environ) | self.env


def driver_cuda(nvidia_smi: str) -> tuple[int, int] | None:
    """The newest CUDA version the NVIDIA driver supports, from `nvidia-smi`'s header; None: no GPU."""
    found = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", nvidia_smi)
    return (int(found[1]), int(found[2])) if found else None


def torch_build(cuda: tuple[int, int] | None) -> str:
    """Which of PyTorch's builds this machine runs: "cpu" or "cu…"."""
    if cuda is None:
        return "cpu"
    for least, build in CUDA_BUILDS:
        if cuda >= least:
            return build
    oldest = ".".join(map(str, CUDA_BUILDS[-1][0]))
    raise KnownError(
        f"The NVIDIA driver supports CUDA {cuda[0]}.{cuda[1]}; PyTorch needs {oldest} or newer: update the driver."
    )


def install_steps(base_python: str, venv: str, *, build: str) -> list[list[str]]:
    """The commands that make the engine's venv: torch first (`build`: torch_build's), then the rest."""
    python = str(Path(venv) / "bin" / "python")
    # macOS has one torch build (CPU and Apple GPUs), on PyPI.
    torch_index = [] if sys.platform == "darwin" else ["--index-url", TORCH_INDEXES + build]
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    return [
        [base_python, "-m", "venv", venv],
        [*pip, *torch_index, TORCH],
        [*pip, *REQUIREMENTS, *(GPU_REQUIREMENTS if build != "cpu" else [])],
    ]


def venv_name() -> str:
    """One venv per set of requirements: a new release that needs more gets a new one."""
    return hashlib.sha256(json.dumps([TORCH, *REQUIREMENTS, *GPU_REQUIREMENTS]).encode()).hexdigest()[:12]


def code_archive() -> bytes:
    """The core package's Python files and presets, as a tar archive (the same bytes for the same code)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(CODE.rglob("*")):
            if path.is_file() and path.suffix in (".py", ".toml") and "__pycache__" not in path.parts:
                info = tarfile.TarInfo(str(Path("core") / path.relative_to(CODE)))
                data = path.read_bytes()
                info.size, info.mode = len(data), 0o644
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# -- this machine -------------------------------------------------------------------------------------------
def local(data_dir: Path, work: Work = QUIET) -> Engine:
    """The engine on this machine: the app's interpreter if it can, else the venv under the data dir (made
    now if missing, with progress; a cancel stops the set-up and removes what it made)."""
    if not getattr(sys, "frozen", False) and _has_engine(sys.executable):
        return Engine(sys.executable)
    folder = data_dir / "engine"
    folder.mkdir(parents=True, exist_ok=True)
    venv = folder / venv_name()
    python = venv / "bin" / "python"
    # One set-up at a time: the app's threads and a CLI beside them may all start a job.
    with open(folder / "setup.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _has_engine(str(python)):
            _make_venv(venv, work)
        code = _code_dir(folder)
        _lend_llama_cpp(venv)
    env = {"PYTHONPATH": str(code)}
    if converter := _app_converter():
        env["TUNEDESK_CONVERTER"] = str(converter)
    return Engine(str(python), env)


def local_state(data_dir: Path) -> str:
    """One sentence on the engine here, for Settings: what `local` would use, without making anything."""
    if not getattr(sys, "frozen", False) and _has_engine(sys.executable):
        return f"ready: the app's own Python ({sys.executable})."
    venv = data_dir / "engine" / venv_name()
    if _has_engine(str(venv / "bin" / "python")):
        return f"ready: {venv}."
    return (
        "not set up yet: the first training here installs PyTorch and transformers into the library folder "
        "(from PyPI and download.pytorch.org; 2 GB for the CPU build, about 5 GB for a CUDA one)."
    )


def local_cuda() -> tuple[int, int] | None:
    try:
        shown = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return driver_cuda(shown.stdout) if shown.returncode == 0 else None


def base_python() -> str:
    """A Python 3.11+ with venv to build the engine's venv from: the app's own unless the app is a bundle."""
    if not getattr(sys, "frozen", False):
        return getattr(sys, "_base_executable", sys.executable)
    for name in ("python3", "python3.13", "python3.12", "python3.11"):
        found = shutil.which(name)
        # Debian and Ubuntu ship venv's ensurepip apart (python3-venv); without it `-m venv` fails.
        if found and _runs(found, f"import sys, venv, ensurepip; sys.exit(sys.version_info < {MIN_PYTHON!r})"):
            return found
    raise KnownError(
        "Training on this computer needs Python 3.11 or newer with its venv module (python3 -m venv), which "
        "is not installed; install it (Debian or Ubuntu: sudo apt install python3-venv) and start again."
    )


def _make_venv(venv: Path, work: Work) -> None:
    build = torch_build(local_cuda())
    need, free = ROOM_BYTES["cpu" if build == "cpu" else "cuda"], shutil.disk_usage(venv.parent).free
    if free < need:
        raise KnownError(
            f"Setting up training on this computer needs about {format_size(need)} free in {venv.parent}, but "
            f"only {format_size(free)} is free."
        )
    partial = venv.with_name(venv.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    steps = install_steps(base_python(), str(partial), build=build)
    labels = [
        "making the engine's environment",
        f"installing PyTorch ({build} build)",
        "installing transformers and peft",
    ]
    log = venv.with_name(venv.name + ".log")
    try:
        with open(log, "w") as log_file:
            for done, (label, command) in enumerate(zip(labels, steps, strict=True)):
                work.progress(f"Setting up training on this computer (once; a few minutes): {label}…", done, len(steps))
                _run_step(command, log_file, work.cancelled)
        work.progress("The engine's environment is ready.", len(steps), len(steps))
        shutil.rmtree(venv, ignore_errors=True)
        partial.rename(venv)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _run_step(command: list[str], log_file: TextIO, cancelled: Callable[[], bool]) -> None:
    log_file.write("$ " + " ".join(command) + "\n")
    log_file.flush()
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    while True:
        try:
            code = process.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            if cancelled():
                process.terminate()
                process.wait()
                raise Cancelled() from None
    if code != 0:
        raise KnownError(
            f"Setting up the engine's environment failed at `{' '.join(command[2:5])}` (exit status {code}); "
            f"the details are in {log_file.name}."
        )


def _code_dir(folder: Path) -> Path:
    """The engine's code under the data dir, once per version of it (a bundle's code is not importable by
    another Python, and a developer's checkout may change while a job runs)."""
    archive = code_archive()
    code = folder / "code" / hashlib.sha256(archive).hexdigest()[:16]
    if not (code / "core").is_dir():
        partial = code.with_name(code.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(partial, filter="data")
        shutil.rmtree(code, ignore_errors=True)
        partial.rename(code)
    return code


def _lend_llama_cpp(venv: Path) -> None:
    """Put the app's llama_cpp package on the venv's path (again each time: the app may have moved)."""
    found = importlib.util.find_spec("llama_cpp")  # found, not loaded: loading maps libllama
    assert found is not None and found.origin is not None, "llama-cpp-python is one of the app's dependencies"
    lent = venv / "lent"
    lent.mkdir(exist_ok=True)
    link = lent / "llama_cpp"
    link.unlink(missing_ok=True)
    link.symlink_to(Path(found.origin).resolve().parent, target_is_directory=True)
    for site in (venv / "lib").glob("python3*/site-packages"):
        (site / "tunedesk-lent.pth").write_text(str(lent) + "\n")


def _app_converter() -> Path | None:
    from core.llamacpp import converter_dir

    try:
        return converter_dir()
    except KnownError:
        return None  # export says so, with where it looked


def _has_engine(python: str) -> bool:
    return Path(python).exists() and _runs(python, ENGINE_IMPORTS)


def _runs(python: str, code: str) -> bool:
    try:
        return subprocess.run([python, "-c", code], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
