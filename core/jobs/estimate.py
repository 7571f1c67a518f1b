"""What a training job would cost before it starts: its steps, its time on this computer and its memory, as
the engine's plan tool found them (core/engine/plan.py), said in one sentence for the CLI and the Training
view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.sizes import format_size


@dataclass(frozen=True)
class Estimate:
    steps: int
    tokens: int  # trained, over all the steps
    device: str  # "cuda" or "cpu"
    memory_bytes: float | None  # None for a base of a shape the sizing does not know
    memory_measured: bool  # the peak of a real step, not the sizing's arithmetic
    tokens_per_s: float | None  # measured here; None where the plan was not timed
    seconds: float | None

    @classmethod
    def of(cls, planned: dict[str, Any]) -> Estimate:
        names = ("steps", "tokens", "device", "memory_bytes", "memory_measured", "tokens_per_s", "seconds")
        return cls(**{name: planned[name] for name in names})

    def sentence(self) -> str:
        """ "12 steps over 20,840 tokens; about 3 min on this computer's CPU (120 tokens a second, timed on
        one step); at most about 1.1 GB of memory, measured.\""""
        said = f"{self.steps} steps over {self.tokens:,} tokens"
        where = "this computer's GPU" if self.device == "cuda" else "this computer's CPU"
        if self.seconds is not None and self.tokens_per_s is not None:
            said += f"; {about(self.seconds)} on {where} ({self.tokens_per_s:,.0f} tokens a second, timed on one step)"
        if self.memory_bytes is not None:
            kind = "GPU memory" if self.device == "cuda" else "memory"
            how = "measured" if self.memory_measured else "estimated from the model's size"
            said += f"; at most about {format_size(self.memory_bytes)} of {kind}, {how}"
        return said + "."


def about(seconds: float) -> str:
    """ "about 2 h 10 min", "about 4 min", "under a minute"."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes} min" if hours else f"about {minutes} min"
