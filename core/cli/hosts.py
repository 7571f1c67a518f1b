"""The hosts commands of the CLI: add, list, trust, check and remove remote GPU hosts (core/jobs/hosts.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from core.cli.common import open_library
from core.sizes import format_size


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("hosts", help="remote GPU hosts reached over SSH").add_subparsers(
        dest="hosts_command", metavar="COMMAND", required=True
    )
    add = group.add_parser("add", parents=[common], help="record a host (nothing is sent to it)")
    add.add_argument("name", metavar="NAME")
    add.add_argument("target", metavar="USER@HOST[:PORT]")
    add.add_argument("--key", type=Path, help="a private key file (default: the SSH agent and ~/.ssh)")
    add.add_argument("--python", default="python3", help="the Python there (default %(default)s)")
    add.add_argument("--dir", default="~/.tunedesk", help="where jobs run there (default %(default)s)")
    add.add_argument("--price", type=float, metavar="USD", help="the host's price per hour, for job costs")
    add.set_defaults(run=_add)

    listing = group.add_parser("list", parents=[common], help="the hosts")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_list)

    trust = group.add_parser("trust", parents=[common], help="compare a host's key fingerprint and trust it")
    trust.add_argument("name", metavar="NAME")
    trust.add_argument("--fingerprint", help="the SHA256:... fingerprint your provider shows (else asked)")
    trust.set_defaults(run=_trust)

    check = group.add_parser("check", parents=[common], help="connect; show the host's Python, GPUs, free disk")
    check.add_argument("name", metavar="NAME")
    check.set_defaults(run=_check)

    remove = group.add_parser("rm", parents=[common], help="forget a host and its trusted key")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(run=_rm)


def _add(args: argparse.Namespace) -> int:
    from core.jobs.hosts import add_host

    with open_library(args) as library:
        added = add_host(
            library,
            args.name,
            args.target,
            key=args.key,
            python=args.python,
            workdir=args.dir,
            price_per_hour=args.price,
        )
    print(f"host {added.name}: {added.where}; next: `tunedesk hosts trust {added.name}`")
    return 0


def _list(args: argparse.Namespace) -> int:
    from core.jobs.hosts import hosts

    with open_library(args) as library:
        listed = hosts(library)
    if args.json:
        keys = ("name", "user", "address", "port", "key", "python", "workdir", "price_per_hour", "added")
        print(json.dumps({"hosts": [{k: getattr(h, k) for k in keys} for h in listed]}, indent=2))
        return 0
    if not listed:
        print("No hosts yet; `tunedesk hosts add NAME user@host[:port]` adds one.")
    for h in listed:
        price = f"  {h.price_per_hour:.2f} USD/h" if h.price_per_hour is not None else ""
        print(f"{h.name}  {h.where}  python {h.python}  dir {h.workdir}{price}")
    return 0


def _trust(args: argparse.Namespace) -> int:
    from core.jobs.hosts import fingerprint, host, offered_key, trust_host

    with open_library(args) as library:
        confirmed = args.fingerprint
        if confirmed is None:
            offered = fingerprint(offered_key(host(library, args.name)))
            print(f"The host {args.name} offers a key with the fingerprint\n  {offered}")
            print("Compare it with the one your provider shows for this machine.")
            try:
                answer = input("Trust this key? [yes/no] ")
            except EOFError:  # no terminal to answer from: nothing is trusted
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                print("Not trusted.")
                return 1
            confirmed = offered
        trusted = trust_host(library, args.name, confirmed)
    print(f"host {args.name}: trusted ({trusted})")
    return 0


def _check(args: argparse.Namespace) -> int:
    from core.jobs.hosts import host
    from core.jobs.runners import ssh

    with open_library(args) as library:
        remote = ssh.Remote.to(host(library, args.name), library.data_dir)
        checked = ssh.preflight(remote)
        engine = ssh.engine_state(remote, checked)
        remote.close()
    print(f"host {args.name}: Python {checked.python}; {format_size(checked.free_bytes)} free in {checked.workdir}")
    gpus = f"{len(checked.gpus)} ({'; '.join(checked.gpus)}): a job trains on all of them unless --gpus says"
    print("  GPUs: " + (gpus if checked.gpus else "none (no nvidia-smi): it would train on CPU"))
    print(f"  engine: {engine}")
    return 0


def _rm(args: argparse.Namespace) -> int:
    from core.jobs.hosts import remove_host

    with open_library(args) as library:
        gone = remove_host(library, args.name)
    print(f"host {gone.name} removed")
    return 0
