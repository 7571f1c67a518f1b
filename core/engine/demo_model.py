"""The offline demo base model: a small Mistral-architecture model with a SentencePiece tokenizer, both
trained here on the sample contract's text, so that the whole workflow can be tried (and tested) on a CPU
without a download. It writes contract-like text, not sense; it exists to exercise the pipeline.

Built once, deterministically, into the data dir the first time `--base demo` is used (`python -m
core.engine.demo_model FOLDER` builds it alone). The tests build the `tiny` size in seconds.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from core import RESOURCES
from core.errors import Cancelled
from core.library.chunking import DEFAULT_SIZE, chunk_pages
from core.progress import QUIET, Work

CORPUS = RESOURCES / "samples" / "license_agreement_50p.txt"  # the sample PDF's text, pages split by \f

# Mistral's own template, with the system prompt folded into the first user turn as Mistral does.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='') -%}{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{%- set ns.system = message['content'] + '\n\n' -%}"
    "{%- elif message['role'] == 'user' -%}{{- '[INST] ' + ns.system + message['content'] + ' [/INST]' -}}"
    "{%- set ns.system = '' -%}"
    "{%- else -%}{{- ' ' + message['content'] + eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
)


@dataclass(frozen=True)
class Size:
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    pretrain_steps: int


SIZES = {
    # Hidden and intermediate sizes are multiples of 256 so that every k-quant applies in GGUF export.
    "demo": Size(vocab=2000, hidden=256, intermediate=512, layers=4, heads=4, kv_heads=2, pretrain_steps=1000),
    "tiny": Size(vocab=500, hidden=64, intermediate=128, layers=2, heads=2, kv_heads=1, pretrain_steps=40),
    # The tests' model for true k-quants (rows of 256 and 512).
    "tiny-k": Size(vocab=500, hidden=256, intermediate=512, layers=1, heads=4, kv_heads=2, pretrain_steps=10),
}
# Small steps, many of them: on a few dozen thousand tokens of text, more updates beat bigger batches.
TOKENS_PER_STEP = 512
PEAK_LR = 3e-3
WARMUP = 30


def build(
    folder: Path,
    *,
    size: str = "demo",
    work: Work = QUIET,
) -> Path:
    """Build the model into `folder` unless it is there; written beside it and renamed when complete.
    `work` hears a message and the pre-training steps done of all; its cancel stops the build (Cancelled),
    and nothing is left behind."""
    if (folder / "config.json").is_file():
        return folder
    import torch

    shape = SIZES[size]
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        torch.manual_seed(0)
        pages = CORPUS.read_text(encoding="utf-8").split("\f")
        work.progress("training the demo tokenizer on the sample contract", 0, shape.pretrain_steps)
        tokenizer = _train_tokenizer(partial, pages, shape.vocab)
        model = _new_model(shape, tokenizer)
        _pretrain(model, tokenizer, pages, shape.pretrain_steps, work)
        model.save_pretrained(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(folder)
    return folder


def _train_tokenizer(folder: Path, pages: list[str], vocab: int):
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    model = io.BytesIO()
    lines = [line for page in pages for line in page.splitlines() if line.strip()]
    # Llama/Mistral conventions, so that llama.cpp's converter and tokenizer treat it as theirs.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab,
        hard_vocab_limit=False,
        byte_fallback=True,
        split_digits=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        num_threads=1,
        minloglevel=2,
    )
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    # legacy=True: with legacy false, transformers 5 tokenizes `<s>[INST]` otherwise than SentencePiece and
    # llama.cpp do, and the ids trained on would differ from the ids chatted with.
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "legacy": True,
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 2048,
        "chat_template": CHAT_TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return LlamaTokenizer.from_pretrained(folder)


def _new_model(shape: Size, tokenizer):
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=2048,
        sliding_window=None,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    return MistralForCausalLM(config)


def _pretrain(model, tokenizer, pages: list[str], steps: int, work: Work) -> None:
    import torch

    from core.engine.data import Example, batch_tensors, pack

    text = [chunk.text for chunk in chunk_pages(pages, size=DEFAULT_SIZE)]  # the size the library cuts
    examples = []
    for line, chunk in enumerate(text):
        ids = [tokenizer.bos_token_id, *tokenizer.encode(chunk, add_special_tokens=False), tokenizer.eos_token_id]
        examples.append(Example(ids, ids, line))
    rows = pack([len(e.ids) for e in examples], TOKENS_PER_STEP)
    order = [i for _ in range(steps // len(rows) + 1) for i in torch.randperm(len(rows)).tolist()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=PEAK_LR, weight_decay=0.01)
    model.train()
    size = f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters"
    started = time.monotonic()
    for step in range(steps):
        if work.cancelled():
            raise Cancelled()
        row = batch_tensors([[examples[i] for i in rows[order[step]]]])
        for group in optimizer.param_groups:  # warm-up, then a cosine decay to a tenth
            group["lr"] = PEAK_LR * min(1, (step + 1) / WARMUP) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
        loss = model(**row, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if step % 10 == 0 or step == steps - 1:
            elapsed = time.monotonic() - started
            work.progress(f"building the demo model ({size}): loss {loss.item():.2f}, {elapsed:.0f} s", step + 1, steps)


if __name__ == "__main__":
    size = sys.argv[2] if len(sys.argv) > 2 else "demo"
    print(build(Path(sys.argv[1]), size=size, work=Work(lambda message, done, total: print(message, done, total))))
