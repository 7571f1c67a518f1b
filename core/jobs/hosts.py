"""Remote GPU hosts: the machines a user rents, reached over SSH (paramiko) with verified host keys.

A host is trusted only when the user has compared its key's SHA-256 fingerprint with the one the provider
shows and said yes (`tunedesk hosts trust`); its key then goes to Tunedesk's own known_hosts file in the
data dir. The user's ~/.ssh/known_hosts counts too. An unknown host is refused before anything is sent, and a
host whose key changed is refused loudly: Tunedesk never accepts a key on its own.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.db import now
from core.errors import KnownError
from core.library.store import Library

KNOWN_HOSTS = "known_hosts"  # in the data dir: the keys of the hosts the user trusted in Tunedesk
CONNECT_TIMEOUT_S = 10.0
_TARGET = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<address>\[[^\]]+\]|[^:\s@]+)(?::(?P<port>\d+))?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


LOCAL = "local"  # what `--host` names for this computer; no remote host may take the name


@dataclass(frozen=True)
class Host:
    name: str
    user: str
    address: str
    port: int
    key: str | None  # a private key file; None: the SSH agent and ~/.ssh's default keys
    python: str  # the Python the engine runs with on the host
    workdir: str  # where jobs run on the host ("~" is the remote home)
    price_per_hour: float | None  # USD, for the cost of a job
    added: str

    @property
    def where(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """How known_hosts files name the host: `address`, or `[address]:port` off port 22."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


def add_host(
    library: Library,
    name: str,
    target: str,
    *,
    key: Path | None = None,
    python: str = "python3",
    workdir: str = "~/.tunedesk",
    price_per_hour: float | None = None,
) -> Host:
    """Record a host (nothing is sent to it): `target` is user@host[:port]."""
    if not _NAME.match(name):
        raise KnownError(f"{name!r} is not a usable host name: use letters, digits, dots, dashes and underscores.")
    if name == LOCAL:
        raise KnownError(f"A host cannot be named {LOCAL}, the name of this computer; choose another name.")
    match = _TARGET.match(target.strip())
    if not match or not match["user"]:
        raise KnownError(f"{target!r} is not user@host or user@host:port.")
    port = int(match["port"] or 22)
    if not 0 < port < 65536:
        raise KnownError(f"{port} is not a TCP port.")
    if key is not None and not key.expanduser().is_file():
        raise KnownError(f"There is no key file {key}.")
    if price_per_hour is not None and not price_per_hour >= 0:
        raise KnownError("The hourly price must be a number of USD, zero or more.")
    row = {
        "name": name,
        "user": match["user"],
        "address": match["address"].strip("[]"),
        "port": port,
        "key": str(key.expanduser().resolve()) if key else None,
        "python": python,
        "workdir": workdir,
        "price_per_hour": price_per_hour,
        "added": now(),
    }
    with library.write() as db:
        if db.execute("SELECT 1 FROM hosts WHERE name = ?", [name]).fetchone():
            raise KnownError(f"There is a host {name} already; remove it first.", **_remove(name))
        db.table("hosts").insert(row)
    return host(library, name)


def hosts(library: Library) -> list[Host]:
    return [Host(**row) for row in library.db.query("SELECT * FROM hosts ORDER BY name")]


def host(library: Library, name: str) -> Host:
    rows = list(library.db.query("SELECT * FROM hosts WHERE name = ?", [name]))
    if not rows:
        raise KnownError(f"No host {name}.", cli="`tunedesk hosts list` lists them.")
    return Host(**rows[0])


def _remove(name: str) -> dict[str, str]:
    """How each front end removes a host, as KnownError's remedies."""
    return {"cli": f"`tunedesk hosts rm {name}` removes it.", "app": "Select it in Settings and press Remove."}


def remove_host(library: Library, name: str) -> Host:
    """Forget a host and the key Tunedesk trusted for it."""
    gone = host(library, name)
    with library.write() as db:
        db.execute("DELETE FROM hosts WHERE name = ?", [name])
    keys = _known_hosts(library.data_dir)
    if gone.known_hosts_name in keys:
        del keys[gone.known_hosts_name]
        _save_known_hosts(library.data_dir, keys)
    return gone


def fingerprint(key: Any) -> str:
    """OpenSSH's SHA256:... form of a public key's fingerprint, as `ssh-keygen -l` and providers show it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def offered_key(target: Host) -> Any:
    """The key the host offers now (the SSH handshake only: no authentication, nothing of the user's sent)."""
    import paramiko

    sock = _open_socket(target)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=CONNECT_TIMEOUT_S)
        return transport.get_remote_server_key()
    except paramiko.SSHException as error:
        raise KnownError(
            f"The host {target.name} ({target.where}) did not complete an SSH handshake: {error}."
        ) from None
    finally:
        transport.close()


def trust_host(library: Library, name: str, confirmed: str) -> str:
    """Trust the key the host offers if its fingerprint is the one the user `confirmed`; returns it."""
    target = host(library, name)
    key = offered_key(target)
    offered = fingerprint(key)
    if offered != confirmed.strip():
        raise KnownError(
            f"The host {name} offers the key {offered}, not {confirmed.strip()}: it is not trusted. If your "
            "provider shows another fingerprint, you may not be talking to your machine."
        )
    keys = _known_hosts(library.data_dir)
    recorded = keys.lookup(target.known_hosts_name) or {}
    if recorded and all(fingerprint(k) != offered for k in recorded.values()):
        raise KnownError(
            f"The host key of {name} has changed since it was trusted; if the provider rebuilt the machine, "
            "remove the host and add it again.",
            **_remove(name),
        )
    keys.add(target.known_hosts_name, key.get_name(), key)
    _save_known_hosts(library.data_dir, keys)
    return offered


def connect(target: Host, data_dir: Path, *, passphrase: str | None = None) -> Any:
    """A paramiko SSHClient to the host, its key verified against the user's and Tunedesk's known hosts."""
    import paramiko

    client = paramiko.SSHClient()
    client.load_system_host_keys()
    trusted = data_dir / KNOWN_HOSTS
    if trusted.is_file():
        for hostname, keys in paramiko.HostKeys(str(trusted)).items():
            for kind, key in keys.items():
                client.get_host_keys().add(hostname, kind, key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            target.address,
            port=target.port,
            username=target.user,
            key_filename=target.key,
            passphrase=passphrase,
            look_for_keys=target.key is None,
            allow_agent=target.key is None,
            timeout=CONNECT_TIMEOUT_S,
            banner_timeout=CONNECT_TIMEOUT_S,
            auth_timeout=CONNECT_TIMEOUT_S,
        )
    except paramiko.BadHostKeyException as error:
        client.close()
        raise KnownError(
            f"The host key of {target.name} ({target.where}) has CHANGED since you trusted it (it now offers "
            f"{fingerprint(error.key)}); Tunedesk refuses to connect. If the provider rebuilt the machine, "
            "remove it, and add and trust it again.",
            **_remove(target.name),
        ) from None
    except paramiko.PasswordRequiredException:
        client.close()
        raise PassphraseNeeded(f"The key {target.key} is protected by a passphrase.") from None
    except paramiko.AuthenticationException:
        client.close()
        what = f"the key {target.key}" if target.key else "the SSH agent's and ~/.ssh's keys"
        raise KnownError(f"The host {target.name} ({target.where}) refused {what}.") from None
    except paramiko.SSHException as error:
        client.close()
        if "not found in known_hosts" in str(error):
            raise KnownError(
                f"The host {target.name} ({target.where}) is not trusted yet: compare its key's fingerprint "
                "with the one your provider shows, then trust it.",
                cli=f"`tunedesk hosts trust {target.name}` shows it.",
                app="Select it in Settings and press Trust… to see it.",
            ) from None
        raise KnownError(f"The host {target.name} ({target.where}) broke off the SSH connection: {error}.") from None
    except OSError as error:
        client.close()
        raise unreachable(target, error) from None
    return client


class PassphraseNeeded(KnownError):
    """The host's key file is encrypted: ask the user for its passphrase and connect again."""


def unreachable(target: Host, error: OSError) -> KnownError:
    tried = list(getattr(error, "errors", {}).values())  # paramiko's NoValidConnectionsError: one per address
    if tried:
        error = tried[0]
    if isinstance(error, socket.timeout | TimeoutError):
        reason = f"no answer within {CONNECT_TIMEOUT_S:.0f} s"
    elif isinstance(error, socket.gaierror):
        reason = f"{target.address} is not a known host name"
    elif isinstance(error, ConnectionRefusedError):
        reason = f"nothing listens on port {target.port}"
    else:
        reason = error.strerror or str(error)
    return KnownError(f"The host {target.name} ({target.where}) cannot be reached: {reason}.")


def _open_socket(target: Host) -> socket.socket:
    try:
        return socket.create_connection((target.address, target.port), timeout=CONNECT_TIMEOUT_S)
    except OSError as error:
        raise unreachable(target, error) from None


def _known_hosts(data_dir: Path) -> Any:
    import paramiko

    path = data_dir / KNOWN_HOSTS
    return paramiko.HostKeys(str(path)) if path.is_file() else paramiko.HostKeys()


def _save_known_hosts(data_dir: Path, keys: Any) -> None:
    path = data_dir / KNOWN_HOSTS
    partial = path.with_name(path.name + ".partial")
    keys.save(str(partial))
    partial.replace(path)
