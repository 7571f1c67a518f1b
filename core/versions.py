"""The oldest versions of the libraries that read untrusted input or reach other machines that Tunedesk
accepts (the same minimums as pyproject.toml): an older one in the environment is refused at start-up with
one sentence, rather than found out by an attacker's file (CHANGELOG.md, Security)."""

from __future__ import annotations

import re
from importlib import metadata

from core.errors import KnownError

# Why each: pypdf parses the user's PDFs (CVE fixes through 6.1.3); llama-cpp-python loads GGUF files and
# renders their chat templates; paramiko speaks SSH to remote hosts; torch loads model weights (the engine).
APP = {"pypdf": "6.1.3", "llama-cpp-python": "0.3.36", "paramiko": "3.5"}
ENGINE = {"torch": "2.6"}


def check(minimums: dict[str, str]) -> None:
    for package, oldest in minimums.items():
        try:
            found = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue  # a missing package is reported where it is imported, with what to install
        if _key(found) < _key(oldest):
            raise KnownError(
                f"Tunedesk needs {package} {oldest} or newer (security fixes); this environment has {found}: "
                f"pip install --upgrade '{package}>={oldest}'."
            )


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])
