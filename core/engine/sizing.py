"""The arithmetic of a training run's cost and memory: FLOPs, model FLOPs utilization (MFU), what a run
measured on one GPU would take on another (an A10G, the reference job's card), and the micro-batch that fits
a GPU's free memory. Standard library only.

LoRA and QLoRA train adapters on a frozen base: each token costs the forward pass (2 FLOPs per parameter)
and the backward pass through the activations (2 more); the frozen weights get no gradients (the 2 FLOPs a
full fine-tune spends on them), and the adapters' own FLOPs are about 1% at rank 16. Attention's quadratic
term is small at 512-1024 tokens and is left out, as is usual for MFU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from core.errors import KnownError
from core.jobdir.config import TrainConfig

# Dense bf16 tensor throughput, FLOP/s, from the vendors' data sheets (no sparsity). The A10G figure is the
# one the reference job's issue gives (AWS does not publish one); a card missing here can be named with its
# peak in the benchmark's --peak-tflops.
PEAK_BF16 = {
    "NVIDIA A10G": 70e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA H100 80GB HBM3": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA L4": 121e12,
}
A10G = "NVIDIA A10G"
A10G_USD_PER_HOUR = 1.006  # AWS g5.xlarge on demand, us-east-1
# The reference job: a 181-page contract in 512-character chunks, about 136k tokens an epoch (its issue).
REFERENCE_TOKENS = 136_000
MISTRAL_7B_PARAMETERS = 7.24e9


def training_flops(parameters: float, tokens: float) -> float:
    """FLOPs to train (LoRA/QLoRA) on `tokens` tokens: 4 per parameter per token (module docstring)."""
    return 4 * parameters * tokens


def mfu(tokens_per_s: float, parameters: float, peak_flops: float) -> float:
    """The share of the card's peak that the run used."""
    return training_flops(parameters, tokens_per_s) / peak_flops


@dataclass(frozen=True)
class Projection:
    seconds: float
    usd: float
    mfu: float  # assumed on the target card: the one measured


def project(
    tokens_per_s: float,
    parameters: float,
    measured_peak: float,
    tokens: float = REFERENCE_TOKENS,
    target_peak: float = PEAK_BF16[A10G],
    usd_per_hour: float = A10G_USD_PER_HOUR,
) -> Projection:
    """Time and cost of training on `tokens` tokens on the target card, at the MFU measured on another."""
    utilization = mfu(tokens_per_s, parameters, measured_peak)
    seconds = training_flops(parameters, tokens) / (utilization * target_peak)
    return Projection(seconds, seconds / 3600 * usd_per_hour, utilization)


# -- memory: the micro-batch and gradient checkpointing chosen from free GPU memory ---------------------------
GiB = 2**30
HEADROOM = 0.9  # of the free memory: the CUDA allocator's fragmentation and the workspace of its kernels


@dataclass(frozen=True)
class Shape:
    """A decoder's sizes, from its config.json."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int

    @classmethod
    def of(cls, config: dict) -> Shape | None:
        """The sizes of a Llama-like decoder (Llama, Mistral, Qwen, SmolLM...); None for another kind."""
        names = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
        if not all(isinstance(config.get(name), int) for name in names):
            return None
        heads = config["num_attention_heads"]
        return cls(
            config["hidden_size"],
            config["intermediate_size"],
            config["num_hidden_layers"],
            heads,
            config.get("num_key_value_heads") or heads,
            config["vocab_size"],
        )

    @property
    def parameters(self) -> float:
        h, kv = self.hidden, self.hidden * self.kv_heads / self.heads
        per_layer = 2 * h * h + 2 * h * kv + 3 * h * self.intermediate
        return self.layers * per_layer + 2 * self.vocab * h  # embeddings and an untied head


def training_bytes(
    shape: Shape,
    tokens: int,
    *,
    qlora: bool,
    rank: int,
    checkpointing: bool,
    dropout: bool = True,
    shards: int = 1,
    weight_bytes: int = 2,
    activation_bytes: int = 2,
    predicted: int | None = None,
) -> float:
    """Peak GPU memory of a LoRA/QLoRA step over `tokens` tokens in one micro-batch (bf16 compute, adapters
    on every linear layer, with dropout where lora_dropout is above 0): the weights, the adapters with their
    gradients and optimizer state, the activations kept for the backward pass, and the logits, made only at
    the `predicted` tokens (train.token_loss; all of them where not given, as in a row of raw text).

    What autograd keeps per token and layer is fitted, not derived: 2 bytes x (19 h + 4 kv + 11 i), plus the
    adapters' dropout copies of their inputs (5 h + 2 i); with checkpointing, each layer's input and 1.25
    layers' worth while one is recomputed. Those constants come from the two peaks measured on an H100
    (Mistral-7B shape, QLoRA, 2 x 768 tokens: 6.1 GiB with checkpointing, 26.5 GiB without it and without
    dropout, logits then made at every token; docs/benchmarks.md), so these two figures are in-sample; no
    other GPU or model has checked it.

    `shards`: the base and adapters shared between that many processes (FSDP, shard_weights): each holds 1/N
    of every layer, and two layers whole (the one computing, the next being gathered), and the embeddings
    and head whole through the step. Derived from how FSDP gathers, never measured.

    `weight_bytes` and `activation_bytes`: 2 for bfloat16 (a GPU's), 4 for float32 (a CPU's weights, and its
    activations where it has no bf16 units); the fitted constants scale with the activations' size."""
    h, i, kv = shape.hidden, shape.intermediate, shape.hidden * shape.kv_heads / shape.heads
    embeddings = 2 * shape.vocab * h
    body = shape.parameters - embeddings
    # NF4 with double quantization: 4 bits and about an eighth of a bit of constants a weight.
    body_bytes = body * (0.516 if qlora else weight_bytes)
    weights = body_bytes * min(1, 1 / shards + 2 / shape.layers) + embeddings * weight_bytes
    adapter = rank * shape.layers * (h * 9 + 2 * kv + 3 * i)
    # fp32 weights and gradients; paged 8-bit AdamW (QLoRA) or fp32 AdamW moments.
    adapters = adapter * (4 + 4 + (2 if qlora else 8)) / shards
    a = activation_bytes
    layer = a * (19 * h + 4 * kv + 11 * i) + (a * (5 * h + 2 * i) if dropout else 0)
    kept = shape.layers * a * h + 1.25 * layer if checkpointing else shape.layers * layer
    logits = shape.vocab * (a + 4 + 4)  # as computed, their fp32 copy for the loss, its gradient
    return weights + adapters + tokens * kept + (tokens if predicted is None else predicted) * logits


def fit_memory(config: TrainConfig, shape: Shape, free_bytes: float, processes: int = 1) -> TrainConfig:
    """The settings with the step's rows split into micro-batches as large as fit in the free memory (the
    global batch, batch_rows x grad_accum, kept): without gradient checkpointing where one row fits, since
    it costs a third more compute; with it otherwise. Each of `processes` takes its share of a step's rows;
    where no micro-batch fits with the whole base in each, the base is shared between them (shard_weights,
    not with qlora), as it is where the settings ask for it. Raises KnownError with one sentence where not
    even one row fits."""
    rows = config.batch_rows * config.grad_accum
    share = -(-rows // processes)
    budget = free_bytes * HEADROOM
    sizes = sorted((d for d in range(1, share + 1) if rows % d == 0), reverse=True)
    if processes > 1 and config.shard_weights:
        sharding = [True]
    elif processes > 1 and not config.qlora:  # the config refuses qlora with shard_weights
        sharding = [False, True]
    else:
        sharding = [False]
    for shard in sharding:
        for checkpointing in (False, True):
            for size in sizes:
                peak = _peak(config, shape, size * config.seq_len, checkpointing, processes if shard else 1)
                if peak <= budget:
                    return dataclasses.replace(
                        config,
                        batch_rows=size,
                        grad_accum=rows // size,
                        gradient_checkpointing=checkpointing,
                        shard_weights=shard,
                    )
    needed = _peak(config, shape, config.seq_len, True, processes if sharding[-1] else 1)
    each = f" in each of {processes} processes sharing the weights" if sharding[-1] else ""
    raise KnownError(
        f"One row of {config.seq_len} tokens needs about {needed / GiB:.1f} GiB of GPU memory{each} and "
        f"{free_bytes / GiB:.1f} GiB is free; lower seq_len{'' if config.qlora else ', train with qlora'} "
        "or use a larger GPU."
    )


def _peak(config: TrainConfig, shape: Shape, tokens: int, checkpointing: bool, shards: int) -> float:
    return training_bytes(
        shape,
        tokens,
        qlora=config.qlora,
        rank=config.lora_rank,
        checkpointing=checkpointing,
        dropout=config.lora_dropout > 0,
        shards=shards,
    )
