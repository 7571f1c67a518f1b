"""What every benchmark shares: the verdict line (docs/benchmarks.md) and the results file."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def timed(work: Callable[[], object], *, repeat: int) -> list[float]:
    """Seconds per call of `work`, `repeat` times."""
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return seconds


def median(values: list[float]) -> float:
    return statistics.median(values)


def verdict(name: str, figure: str, goal: str, met: bool) -> str:
    line = f"benchmark {name}: {figure} (goal {goal}): {'met' if met else 'not met'}"
    print(line)
    return line


def save(name: str, numbers: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    numbers = {**numbers, "machine": f"{platform.machine()}, {platform.python_version()}"}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        numbers["gpu"] = torch.cuda.get_device_name()
    (RESULTS / f"{name}.json").write_text(json.dumps(numbers, indent=2) + "\n")
