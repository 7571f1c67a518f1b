"""Loaded by every Python process of the offline test (through PYTHONPATH): records each attempt to reach
the network (an IP socket's connect, a host name lookup) to the file named by TUNEDESK_NETWORK_LOG, with the
program that made it. Python's audit hooks see them all, whichever library makes them."""

import os
import socket
import sys

_LOG = os.environ.get("TUNEDESK_NETWORK_LOG")


def _record(what: str) -> None:
    with open(_LOG, "a", encoding="utf-8") as log:  # type: ignore[arg-type]
        log.write(f"{' '.join(sys.argv)[:200]}: {what}\n")


def _hook(event: str, args: tuple) -> None:
    if event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6):
        _record(f"connect {args[1]!r}")
    elif event == "socket.getaddrinfo":
        _record(f"lookup {args[0]!r}")


if _LOG:
    sys.addaudithook(_hook)
