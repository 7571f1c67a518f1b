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
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from core.errors import KnownError

QUANTS = {"q4_k_m": 15, "q5_k_m": 17, "q8_0": 7, "f16": 1}  # llama.cpp's LLAMA_FTYPE_MOSTLY_*
# The export's default: the quantization every answer benchmark so far measured (issue 30 found users on the
# q4_k_m default answering far worse than the benchmark's q8_0 figures); q4_k_m halves a 7B file for a
# machine short of memory.
DEFAULT_QUANT = "q8_0"
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


# A chat template is code from the model file: it gets this long and this much memory to render a
# conversation, or it is not used (a loop over range(99999) twice hung `ask`; 'a'*3000000000 took 3 GB; a
# macro calling itself recursed without end).
RENDER_SECONDS = 5
CHECK_SECONDS = RENDER_SECONDS + 5  # the check's child process, a cold interpreter's start-up included
RENDER_MEMORY = 256 << 20
MOST_REPEATED = 1_000_000
_PROBE = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who pays?"}]


class TemplateRefused(ValueError):
    """A chat template that broke the sandbox's rules or limits; the message says which."""


def template_renders(template: str | None) -> bool:
    """Whether a chat template renders a short conversation in the limited sandbox. Checked in a child
    process of its own, under an address-space limit and a timeout: from any thread, a template that hangs
    or swells is ended from outside."""
    if not template:
        return False
    command = [sys.executable, "-m", "core.llamacpp", "--check-template"]
    try:
        checked = subprocess.run(
            command,
            input=template,
            capture_output=True,
            text=True,
            timeout=CHECK_SECONDS,
            preexec_fn=_limit_address_space,
            cwd=Path(__file__).resolve().parent.parent,
        )
    except subprocess.TimeoutExpired:
        return False
    return checked.returncode == 0 and checked.stdout.strip() == "renders"


def _limit_address_space() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def compile_template(template: str, filters: dict[str, Any] | None = None, **environment: Any) -> Any:
    """The template compiled in the limited sandbox (constants are not folded, so 'a' * 3000000000 is
    refused when it runs rather than built here); TemplateRefused when it does not compile."""
    from jinja2.exceptions import TemplateError

    try:
        with render_limits():  # turns a recursion or a limit broken while compiling into TemplateRefused
            limited = _limited_environment(**environment)
            limited.filters.update(filters or {})
            return limited.from_string(template)
    except TemplateError as error:
        raise TemplateRefused(f"its chat template does not compile ({error})") from None


@contextlib.contextmanager
def render_limits() -> Iterator[None]:
    """RENDER_SECONDS and about RENDER_MEMORY more for what the block runs, in the process's main thread;
    a template that breaks the sandbox's rules or runs past them raises TemplateRefused."""
    from jinja2.exceptions import SecurityError

    try:
        with _time_limit(RENDER_SECONDS), _memory_limit(RENDER_MEMORY):
            yield
    except SecurityError as error:
        raise TemplateRefused(f"its chat template {error}") from None
    except TimeoutError:
        raise TemplateRefused(f"its chat template ran past {RENDER_SECONDS} s") from None
    except (MemoryError, OverflowError):
        raise TemplateRefused("its chat template builds values too large to hold") from None
    except RecursionError:
        raise TemplateRefused("its chat template recurses without end") from None


def _limited_environment(**options: Any) -> Any:
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Limited(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "+"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**" and isinstance(right, int) and right > 64:
                raise SecurityError("raises a number to too large a power")
            sizes = [len(value) for value in (left, right) if isinstance(value, str | list | tuple)]
            counts = [abs(value) for value in (left, right) if isinstance(value, int)]
            if operator == "*" and sizes and counts and sizes[0] * counts[0] > MOST_REPEATED:
                raise SecurityError("repeats a value too many times")
            if operator == "+" and sum(sizes) > MOST_REPEATED:
                raise SecurityError("joins values into one too long")
            return super().call_binop(context, operator, left, right)

    return Limited(**({"trim_blocks": True, "lstrip_blocks": True} | options))


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """TimeoutError in the block after `seconds`; a timer needs the main thread, elsewhere no limit (hence
    template_renders' child process). Within a block already limited, the outer limit stands: the timer is
    one per process, and an inner block ending would stop it."""
    if threading.current_thread() is not threading.main_thread() or signal.getitimer(signal.ITIMER_REAL)[0]:
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


@contextlib.contextmanager
def _memory_limit(extra: int) -> Iterator[None]:
    """MemoryError in the block once the process's data has grown by `extra` bytes. RLIMIT_DATA counts the
    heap and anonymous memory, not the model file llama.cpp maps, so a loaded model does not count against it;
    only the main thread may use it (the limit is the whole process's)."""
    import resource

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = resource.getrlimit(resource.RLIMIT_DATA)
    used = _data_bytes()
    limit = used + extra if previous[1] == resource.RLIM_INFINITY else min(used + extra, previous[1])
    resource.setrlimit(resource.RLIMIT_DATA, (limit, previous[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, previous)


def _data_bytes() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmData:"))
    return int(line.split()[1]) * 1024


def _check_template_from_stdin() -> int:
    try:
        compiled = compile_template(sys.stdin.read())
        with render_limits():
            rendered = compiled.render(messages=_PROBE, bos_token="<s>", eos_token="</s>", add_generation_prompt=True)
    except Exception:  # refused, or a template error at render: either way, not a template to use
        return 1
    print("renders" if "Who pays?" in rendered else "leaves out the question")
    return 0


def guard_chat_templates() -> None:
    """Make llama-cpp-python compile and render a model's chat templates in the limited sandbox, under the
    limits, in this process: its own formatter compiles every template in the GGUF when the model loads,
    folding 'a' * 3000000000 into 3 GB there, and renders each conversation without limits. Called before
    any Llama is made; a template that breaks the limits fails the request with TemplateRefused."""
    from llama_cpp import llama_chat_format

    original = llama_chat_format.Jinja2ChatFormatter
    if getattr(original, "limited", False):
        return

    class LimitedChatFormatter(original):  # type: ignore[misc, valid-type]
        limited = True

        def __init__(self, template: str, eos_token: str, bos_token: str, **options: Any) -> None:
            self.template, self.eos_token, self.bos_token = template, eos_token, bos_token
            self.add_generation_prompt = options.get("add_generation_prompt", True)
            stop = options.get("stop_token_ids")
            self.stop_token_ids = set(stop) if stop is not None else None
            self._compiled: Any = None

        @property
        def _environment(self) -> Any:  # compiled when first used: a model that is never asked costs nothing
            if self._compiled is None:
                import jinja2.ext

                extensions = [original.IgnoreGenerationTags, jinja2.ext.loopcontrols]
                filters = {"tojson": original.tojson}
                self._compiled = compile_template(self.template, filters, extensions=extensions)
            return self._compiled

        def __call__(self, **request: Any) -> Any:
            with render_limits():
                return super().__call__(**request)

    llama_chat_format.Jinja2ChatFormatter = LimitedChatFormatter  # type: ignore[misc, assignment]


# GGUF metadata value types (gguf-py's GGUFValueType): the fixed sizes; 8 is a string, 9 an array.
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
# No model writes arrays of arrays deeper than this; gguf-py reads each level by recursion, so a file nesting
# them thousands deep failed every later listing with RecursionError.
MAX_NESTING = 2
MAX_DIMENSIONS = 8  # llama.cpp's GGML_MAX_DIMS is 4
MAX_KEY = 1 << 16
MAX_TEMPLATE = 1 << 20  # Llama 3's template is 7 kB


class _Damaged(Exception):
    pass


def check_gguf(path: Path) -> str | None:
    """Refuse a file that is not GGUF, or whose header (metadata and tensor list) cannot be what it says:
    a string, array or count past the end of the file, arrays nested deeper than any model writes. One pass
    in bounded steps, without gguf-py: a tampered file gets one sentence here rather than failing every later
    listing, or `ask`. Returns its chat template, if it has one."""
    if not path.exists():
        raise KnownError(f"There is no file {path}.")
    if not path.is_file():
        raise KnownError(f"{path.name} is not a regular file (a folder, pipe or device is no GGUF model).")
    try:
        with open(path, "rb") as file:
            if file.read(4) != b"GGUF":
                raise KnownError(f"{path.name} is not a GGUF file.")
            return _check_header(_Reader(file, path.stat().st_size))
    except OSError as error:
        raise KnownError(f"{path.name} cannot be read: {error.strerror}.") from None
    except _Damaged as reason:
        raise KnownError(f"{path.name} is not a usable GGUF file: {reason}.") from None


def _check_header(reader: _Reader) -> str | None:
    version, tensors, keys = reader.unpack("<IQQ")
    if version not in (2, 3) or tensors > 1 << 20 or keys > 1 << 20:
        raise _Damaged("its header is damaged")
    template = None
    for _ in range(keys):
        key = reader.string(MAX_KEY)
        (kind,) = reader.unpack("<I")
        if key == "tokenizer.chat_template" and kind == _STRING:
            template = reader.string(MAX_TEMPLATE)
        else:
            _skip_value(reader, kind, depth=0)
    for _ in range(tensors):
        reader.skip(reader.unpack("<Q")[0])  # the name
        (dimensions,) = reader.unpack("<I")
        if dimensions > MAX_DIMENSIONS:
            raise _Damaged(f"a tensor has {dimensions} dimensions")
        reader.skip(8 * dimensions + 4 + 8)  # the shape, the type and the offset
    return template


def _skip_value(reader: _Reader, kind: int, depth: int) -> None:
    if kind in _FIXED:
        reader.skip(_FIXED[kind])
    elif kind == _STRING:
        reader.skip(reader.unpack("<Q")[0])
    elif kind == _ARRAY:
        if depth >= MAX_NESTING:
            raise _Damaged(f"its metadata nests arrays more than {MAX_NESTING} deep")
        item, count = reader.unpack("<IQ")
        if item in _FIXED:
            reader.skip(count * _FIXED[item])
        else:
            for _ in range(count):
                _skip_value(reader, item, depth + 1)
    else:
        raise _Damaged(f"its metadata has a value of unknown type {kind}")


class _Reader:
    """A file read forward, never past its end: a length that would go there is damage, found before any
    memory is spent on it."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self.file, self.left = file, size - file.tell()

    def unpack(self, layout: str) -> tuple[int, ...]:
        size = struct.calcsize(layout)
        self._use(size)
        return struct.unpack(layout, self.file.read(size))

    def string(self, longest: int) -> str:
        (size,) = self.unpack("<Q")
        if size > longest:
            raise _Damaged(f"a metadata string is {size:,} bytes long")
        self._use(size)
        return self.file.read(size).decode("utf-8", "replace")

    def skip(self, size: int) -> None:
        self._use(size)
        self.file.seek(size, os.SEEK_CUR)

    def _use(self, size: int) -> None:
        if size > self.left:
            raise _Damaged("its header says it holds more than the file does")
        self.left -= size


if __name__ == "__main__" and sys.argv[1:] == ["--check-template"]:
    sys.exit(_check_template_from_stdin())
