"""GGUF: convert a merged Hugging Face folder with llama.cpp's own converter, quantize with llama.cpp's
quantizer (through the llama-cpp-python binding), and verify the result against the Hugging Face model.

The converter (convert_hf_to_gguf.py, conversion/, gguf-py/) comes from the sdist of the pinned
llama-cpp-python (the Makefile unpacks it into the venv), so that converter and runtime are one llama.cpp
version; the PyPI `gguf` package is not the gguf-py this converter needs (TOOLCHAIN.md).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import KnownError

QUANTS = {"q4_k_m": 15, "q5_k_m": 17, "q8_0": 7, "f16": 1}  # llama.cpp's LLAMA_FTYPE_MOSTLY_*
K_QUANTS = {"q4_k_m", "q5_k_m"}
PROBES = [
    "This Agreement shall be governed by the laws of the State of New York.",
    "Vyera shall pay CytoDyn a royalty of fifteen percent (15%) of Net Sales within thirty (30) days.",
    "“Licensed Product” means any pharmaceutical product; see Section 2.1 and Exhibit B.\n\nCafé 3.5",
]


def check_quant(quant: str) -> None:
    if quant not in QUANTS:
        raise KnownError(f"Unknown quantization {quant!r}; choose one of {', '.join(QUANTS)}.")


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


def convert(merged: Path, out: Path) -> Path:
    """The merged folder as an f16 GGUF file, written under a temporary name."""
    converter = converter_dir()
    partial = out.with_name(out.name + ".partial")
    # Run from its own folder so that its gguf-py, not any installed `gguf`, is the one imported.
    result = subprocess.run(
        [sys.executable, "convert_hf_to_gguf.py", str(merged), "--outfile", str(partial), "--outtype", "f16"],
        cwd=converter,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise KnownError(f"llama.cpp's converter could not convert {merged.name}: {last}")
    partial.replace(out)
    return out


def quantize(source: Path, out: Path, quant: str, *, threads: int | None = None) -> Path:
    import ctypes

    import llama_cpp

    check_quant(quant)
    partial = out.with_name(out.name + ".partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTS[quant]
    params.nthread = threads or os.cpu_count() or 1
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), ctypes.byref(params))
    if code != 0:
        partial.unlink(missing_ok=True)
        raise KnownError(f"llama.cpp's quantizer failed on {source.name} (code {code}).")
    partial.replace(out)
    return out


def tensor_types(path: Path) -> Counter[str]:
    """How many tensors of each type (Q4_K, Q6_K, F16, F32...) the GGUF file holds."""
    sys.path.insert(0, str(converter_dir() / "gguf-py"))
    try:
        from gguf import GGUFReader  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    return Counter(tensor.tensor_type.name for tensor in GGUFReader(path).tensors)


def fallbacks(quant: str, types: Counter[str]) -> str | None:
    """A sentence on the weights a k-quant could not take (rows not a multiple of 256), if any."""
    if quant not in K_QUANTS:
        return None
    kept = {name: count for name, count in types.items() if not name.endswith("_K") and name != "F32"}
    if not kept:
        return None
    listed = ", ".join(f"{count} {name}" for name, count in sorted(kept.items()))
    return f"{listed} tensors could not take {quant} (their rows are not a multiple of 256) and were stored so"


@dataclass(frozen=True)
class Verification:
    tokenizer_ok: bool
    agreement: float  # share of positions where llama.cpp's greedy next token equals the merged model's
    chat_template: bool

    def problems(self, *, need_agreement: float) -> list[str]:
        found = []
        if not self.tokenizer_ok:
            found.append("llama.cpp tokenizes the probe texts differently from the Hugging Face tokenizer")
        if self.agreement < need_agreement:
            found.append(f"greedy next tokens agree with the merged model on only {self.agreement:.0%} of positions")
        if not self.chat_template:
            found.append("the chat template is missing or does not render in the sandbox")
        return found


def verify(gguf_file: Path, merged: Path) -> Verification:
    """Load the GGUF in llama.cpp and compare it with the merged Hugging Face model on probe texts."""
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    try:
        llm = Llama(str(gguf_file), n_ctx=512, logits_all=True, verbose=False, seed=0, n_threads=os.cpu_count())
    except (ValueError, RuntimeError) as error:
        raise KnownError(f"llama.cpp could not load {gguf_file.name}: {error}") from None
    same_ids = all(
        tokenizer.encode(text, add_special_tokens=False) == llm.tokenize(text.encode(), add_bos=False, special=False)
        for text in PROBES
    )
    agree = total = 0
    for text in PROBES:
        ids = [tokenizer.bos_token_id, *tokenizer.encode(text, add_special_tokens=False)]
        with torch.no_grad():
            expected = model(torch.tensor([ids])).logits[0].argmax(-1).tolist()
        llm.reset()
        llm.eval(ids)
        got = [int(max(range(len(row)), key=row.__getitem__)) for row in llm.eval_logits]
        agree += sum(a == b for a, b in zip(expected, got, strict=True))
        total += len(ids)
    return Verification(same_ids, agree / total, template_renders(llm.metadata.get("tokenizer.chat_template")))


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
