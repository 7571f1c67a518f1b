"""The Linux bundle (`make package`), as a new user gets it: unpacked, installed with its install.sh, started
from its desktop entry; then trained with, on an engine environment it sets up itself.

`make test` and `make package-test` build the bundle and the engine's wheels first and name them in
TUNEDESK_BUNDLE and TUNEDESK_ENGINE_WHEELS; the engine's venv is made from those wheels with pip's
--no-index, so nothing is downloaded."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from core import RESOURCES
from core.jobs.runners import engine_env

SAMPLE = RESOURCES / "samples" / "license_agreement_50p.pdf"
FAST = ["--set", "seq_len=2048", "--set", "lora_rank=4", "--set", "eval_every=5", "--set", "save_every=5"]
# The bundled app's own work (the window, adding, asking) runs in a network namespace with no network where
# the kernel allows one (tests/test_offline.py audits each connection of the same workflow from source).
NO_NETWORK = (
    ["unshare", "-rn"]
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
    else []
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """HOME of a user who unpacked the bundle's archive and ran its install.sh."""
    archive = os.environ.get("TUNEDESK_BUNDLE")
    if not archive:
        pytest.skip("no bundle named: run `make package-test` (or `make test`), which builds it")
    root = tmp_path_factory.mktemp("bundle")
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="tar")
    home = root / "home"
    home.mkdir()
    installing = subprocess.run(
        ["sh", str(root / "tunedesk" / "install.sh")], env=_env(home), capture_output=True, text=True
    )
    assert installing.returncode == 0, installing.stderr
    return home


def _env(home: Path, **more: str) -> dict[str, str]:
    # A user's environment: none of the test venv's Python leaks into the bundle or its engine venv.
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "TUNEDESK"))}
    keep["PATH"] = os.pathsep.join(p for p in keep["PATH"].split(os.pathsep) if "/.venv/" not in p + "/")
    return keep | {"HOME": str(home), "QT_QPA_PLATFORM": "offscreen"} | more


def _tunedesk(home: Path, data: Path, *args: str, offline: bool = False, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*(NO_NETWORK if offline else []), str(home / ".local" / "bin" / "tunedesk"), *args],
        env=_env(home, TUNEDESK_HOME=str(data), **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _documents(data: Path) -> int:
    try:
        with sqlite3.connect(f"file:{data / 'library.db'}?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM documents").fetchone()[0]
    except sqlite3.OperationalError:  # not made yet
        return 0


def test_the_desktop_entry_starts_the_app_which_adds_a_file_and_quits_cleanly(installed, tmp_path):
    entry = configparser.ConfigParser(interpolation=None)
    entry.read(installed / ".local" / "share" / "applications" / "tunedesk.desktop")
    desktop = entry["Desktop Entry"]
    assert (desktop["Type"], desktop["Name"], desktop["Icon"]) == ("Application", "Tunedesk", "tunedesk")
    assert (installed / ".local" / "share" / "icons" / "hicolor" / "scalable" / "apps" / "tunedesk.svg").is_file()
    # What a file manager runs for "Open with Tunedesk": Exec with %F replaced by the file.
    command = NO_NETWORK + [str(SAMPLE) if word == "%F" else word for word in shlex.split(desktop["Exec"])]
    data = tmp_path / "library"
    with open(tmp_path / "stderr", "w") as stderr:
        app = subprocess.Popen(command, env=_env(installed, TUNEDESK_HOME=str(data)), stderr=stderr)
        try:
            deadline = time.monotonic() + 120
            while _documents(data) == 0 and app.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            assert _documents(data) == 1, f"the app did not add the file (exit status {app.poll()})"
            app.send_signal(signal.SIGTERM)  # a logout: the window closes as its close button closes it
            assert app.wait(timeout=60) == 0
        finally:
            app.kill()
            app.wait()
    log = (data / "tunedesk.log").read_text() + (tmp_path / "stderr").read_text()
    assert "ERROR" not in log and "Traceback" not in log, log


def test_the_bundle_reads_a_scanned_page_with_its_own_tesseract(installed, tmp_path):
    from tests.scans import page_images

    page_images(SAMPLE, range(1, 2))[0].save(tmp_path / "page.png")
    data = tmp_path / "library"
    # No PATH but the bundle's: the system's tesseract cannot be the one that reads the page.
    added = _tunedesk(installed, data, "add", str(tmp_path / "page.png"), PATH=str(installed / ".local" / "bin"))
    assert added.returncode == 0, added.stdout + added.stderr
    assert "(1 pages, " in added.stdout and "read by OCR" in added.stdout
    with sqlite3.connect(data / "library.db") as db:
        (text,) = db.execute("SELECT text FROM pages").fetchone()
    assert "“Applicable Law” means all applicable statutes" in text


def test_the_bundle_sets_up_its_engine_then_trains_exports_and_answers(installed, tmp_path, tiny_base):
    data = tmp_path / "library"
    assert _tunedesk(installed, data, "add", str(SAMPLE), offline=True).returncode == 0

    # No wheels to install from: the set-up fails with one sentence, and leaves no job and no venv.
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    failed = _tunedesk(
        installed, data, "train", "--base", str(tiny_base), *FAST, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(empty)
    )
    assert failed.returncode != 0
    assert "Setting up the engine's environment failed" in failed.stderr, failed.stderr
    assert json.loads(_tunedesk(installed, data, "jobs", "--json").stdout) == {"jobs": []}
    assert [p.name for p in (data / "engine").iterdir() if p.is_dir()] == []  # only its log and lock file

    wheels = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": os.environ["TUNEDESK_ENGINE_WHEELS"]}
    trained = _tunedesk(installed, data, "train", "--base", str(tiny_base), "--max-steps", "5", *FAST, **wheels)
    assert trained.returncode == 0, trained.stderr
    assert "[0/3] Setting up training on this computer" in trained.stderr
    assert "installing PyTorch (cpu build)" in trained.stderr  # no nvidia-smi here
    assert "finished at step 5" in trained.stdout
    engine = data / "engine" / engine_env.venv_name() / "bin" / "python"
    torch = subprocess.run([engine, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    assert "+cpu" in torch.stdout

    exported = _tunedesk(installed, data, "export", "1", "--quant", "q8_0")
    assert exported.returncode == 0, exported.stderr  # through the bundle's llama.cpp, lent to the engine
    assert "verified" in exported.stdout

    asked = _tunedesk(installed, data, "ask", "What is the royalty rate?", "--json", offline=True)
    assert asked.returncode == 0, asked.stderr
    answer = json.loads(asked.stdout)
    assert answer["answer"] and answer["model"].endswith("q8_0.gguf")
