"""What the app and the engine share about llama.cpp: the quantizations Tunedesk exports to, where llama.cpp's
GGUF converter is installed, and whether a model's chat template renders safely. No torch: the app imports it.

The converter (convert_hf_to_gguf.py, conversion/, gguf-py/) comes from the sdist of the pinned llama-cpp-python
(the Makefile unpacks it into the venv), so that converter and runtime are one llama.cpp version; the PyPI
`gguf` package is not the gguf-py this converter needs (docs/export.md).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.errors import KnownError

QUANTS = {"q4_k_m": 15, "q5_k_m": 17, "q8_0": 7, "f16": 1}  # llama.cpp's LLAMA_FTYPE_MOSTLY_*
K_QUANTS = {"q4_k_m", "q5_k_m"}


def check_quant(quant: str) -> None:
    if quant not in QUANTS:
        raise KnownError(f"Unknown quantization {quant!r}; choose one of {', '.join(QUANTS)}.")


def gguf_py() -> Any:
    """llama.cpp's own gguf-py, the converter's (the PyPI `gguf` is another version)."""
    sys.path.insert(0, str(converter_dir() / "gguf-py"))
    try:
        import gguf  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    return gguf


def converter_dir() -> Path:
    """llama.cpp's converter for the llama.cpp that llama-cpp-python runs; refused if missing."""
    import llama_cpp

    version = llama_cpp.__version__
    folder = Path(
        os.environ.get("TUNEDESK_CONVERTER") or Path(sys.prefix) / "share" / "tunedesk" / f"llama.cpp-{version}"
    )
    if not (folder / "convert_hf_to_gguf.py").is_file() or not (folder / "gguf-py").is_dir():
        raise KnownError(
            f"llama.cpp's GGUF converter for llama-cpp-python {version} is not installed in {folder}; "
            "`make` installs it (from the llama-cpp-python sdist of the same version)."
        )
    return folder


# A chat template is code from the model file: it gets this long and this much repetition to render a
# short conversation, or it is not used (a loop over range(99999) twice hung `ask`; 'a'*3000000000 took 3 GB).
RENDER_SECONDS = 5
MOST_REPEATED = 1_000_000


def template_renders(template: str | None) -> bool:
    """Whether a chat template renders a conversation in Jinja's immutable sandbox (no attribute tricks),
    within RENDER_SECONDS and without building huge values."""
    if not template:
        return False
    from jinja2.exceptions import SecurityError, TemplateError

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who pays?"}]
    try:
        with _time_limit(RENDER_SECONDS):
            rendered = (
                _limited_environment()
                .from_string(template)
                .render(messages=messages, bos_token="<s>", eos_token="</s>", add_generation_prompt=True)
            )
    except (SecurityError, TemplateError, TimeoutError, OverflowError, MemoryError):
        return False
    return "Who pays?" in rendered


def _limited_environment() -> Any:
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Limited(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**" and isinstance(right, int) and right > 64:
                raise SecurityError("the template raises a number to too large a power")
            sizes = [len(value) for value in (left, right) if isinstance(value, str | list | tuple)]
            counts = [abs(value) for value in (left, right) if isinstance(value, int)]
            if operator == "*" and sizes and counts and sizes[0] * counts[0] > MOST_REPEATED:
                raise SecurityError("the template repeats a value too many times")
            return super().call_binop(context, operator, left, right)

    return Limited(trim_blocks=True, lstrip_blocks=True)


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """TimeoutError in the block after `seconds`; a timer needs the main thread, elsewhere no limit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(*_: Any) -> None:
        raise TimeoutError()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
