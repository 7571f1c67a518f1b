"""GGUF: convert a merged Hugging Face folder with llama.cpp's own converter, quantize with llama.cpp's
quantizer (through the llama-cpp-python binding), and verify the result against the Hugging Face model.
Where the converter comes from, and the quantizations offered: core/llamacpp.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from core.errors import KnownError
from core.llamacpp import (
    K_QUANTS,
    QUANTS,
    check_quant,
    converter_dir,
    gguf_py,
    guard_chat_templates,
    template_renders,
)

PROBES = [
    "This Agreement shall be governed by the laws of the State of New York.",
    "Vyera shall pay CytoDyn a royalty of fifteen percent (15%) of Net Sales within thirty (30) days.",
    "“Licensed Product” means any pharmaceutical product; see Section 2.1 and Exhibit B.\n\nCafé 3.5",
]


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
    return Counter(tensor.tensor_type.name for tensor in gguf_py().GGUFReader(path).tensors)


def add_metadata(path: Path, values: dict[str, str]) -> None:
    """Give the GGUF file these string keys (a copy made with gguf-py, then renamed over it)."""
    gguf = gguf_py()
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata  # type: ignore[import-not-found]

    copy = path.with_name(path.name + ".metadata")
    reader = gguf.GGUFReader(path, "r")
    writer = gguf.GGUFWriter(
        copy, arch=reader.fields[gguf.Keys.General.ARCHITECTURE].contents(), endianess=reader.endianess
    )
    added = {key: MetadataDetails(gguf.GGUFValueType.STRING, value) for key, value in values.items()}
    copy_with_new_metadata(reader, writer, added, [])
    copy.replace(path)


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

    guard_chat_templates()
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
