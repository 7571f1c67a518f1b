"""`python -m core.engine.convert GGUF FOLDER`: a GGUF base model as the Hugging Face safetensors folder the
engine trains from (core/models/base_models.py's packaged bases).

transformers reads the GGUF (dequantizing its weights to float32, rebuilding the tokenizer and the chat
template from its metadata); the folder is written as FOLDER.partial and renamed when complete, so a
cancel or a crash leaves no half a model under its name.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from core.engine import tool


def convert(gguf: Path, folder: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    tool.say("progress", message=f"reading {gguf.name}", done=0, total=2)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # Its weights are plain float32 tensors now. The GGUF quantizer left attached only refuses to save, and
    # its config entry, saved, would make llama.cpp's converter refuse the merged model ("quant method gguf").
    model.hf_quantizer = None  # type: ignore[assignment]
    del model.config.quantization_config
    tool.say("progress", message=f"writing {folder.name}", done=1, total=2)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    tool.say("progress", message=f"{gguf.name} converted", done=2, total=2)
    return {"path": str(folder)}


if __name__ == "__main__":
    sys.exit(tool.main(lambda: convert(Path(sys.argv[1]), Path(sys.argv[2]))))
