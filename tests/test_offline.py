"""Nothing leaves the machine: the whole local workflow (add the sample contract, search, build a dataset,
train, score the checkpoints, export to GGUF, ask) runs with every Python process of it audited for
network use (tests/offline/sitecustomize.py), and, where the kernel lets an unprivileged user make one, in a
network namespace with no network at all."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.test_cli import TUNEDESK

OFFLINE = Path(__file__).with_name("offline")


def test_the_whole_local_workflow_makes_no_network_connection(tmp_path, tiny_base):
    log = tmp_path / "network.log"
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(OFFLINE), os.environ.get("PYTHONPATH")])),
        "TUNEDESK_NETWORK_LOG": str(log),
    }
    command = [str(TUNEDESK), "demo", "--base", str(tiny_base), "--max-steps", "4", "--set", "seq_len=2048"]
    isolated = (
        shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
    )
    if isolated:
        command = ["unshare", "-rn", *command]
    result = subprocess.run(
        [*command, "--data-dir", str(tmp_path / "home")], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "6. Asking it, offline through llama.cpp" in result.stdout
    assert (tmp_path / "home" / "demo" / "jobs" / "1" / "exports").is_dir()
    attempts = log.read_text() if log.exists() else ""
    assert attempts == "", f"network use:\n{attempts}"
