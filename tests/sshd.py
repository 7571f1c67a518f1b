"""A real OpenSSH server on 127.0.0.1 for the remote-host tests (docs/reliability.md, promise 1): its own host key, a
client key in its authorized_keys, SFTP; started, stopped and restarted (with another host key) by tests."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def fingerprint(public_key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key)], capture_output=True, text=True)
    return out.stdout.split()[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Sshd:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = keygen(folder / "host_key")
        self.other_host_key = keygen(folder / "other_host_key")
        self.client_key = keygen(folder / "client_key")
        (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
        self.process: subprocess.Popen | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.host_key.with_suffix(".pub"))

    def start(self, host_key: Path | None = None) -> None:
        config = self.folder / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key or self.host_key}\n"
            f"PidFile {self.folder / 'sshd.pid'}\nAuthorizedKeysFile {self.folder / 'authorized_keys'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nSubsystem sftp internal-sftp\n"
        )
        if os.geteuid() == 0:  # as root, sshd wants its privilege separation directory
            Path("/run/sshd").mkdir(exist_ok=True)
        with open(self.folder / "sshd.log", "ab") as log:  # sshd keeps its own copy of the descriptor
            self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {(self.folder / 'sshd.log').read_text()[-2000:]}")

    def stop(self) -> None:
        """Kill sshd and its per-connection children, so that open connections drop too (what a crashed
        or rebooted server does); what the sessions started in sessions of their own lives on."""
        if self.process is not None:
            for child in _children(self.process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self, host_key: Path | None = None) -> None:
        self.stop()
        self.start(host_key)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def available() -> bool:
    return Path(SSHD).is_file() and shutil.which("ssh-keygen") is not None
