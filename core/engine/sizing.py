"""The arithmetic of a training run's cost: FLOPs, model FLOPs utilization (MFU), and what a run measured on
one GPU would take on another (an A10G, the reference job's card). Standard library only.

LoRA and QLoRA train adapters on a frozen base: each token costs the forward pass (2 FLOPs per parameter)
and the backward pass through the activations (2 more); the frozen weights get no gradients (the 2 FLOPs a
full fine-tune spends on them), and the adapters' own FLOPs are about 1% at rank 16. Attention's quadratic
term is small at 512-1024 tokens and is left out, as is usual for MFU.
"""

from __future__ import annotations

from dataclasses import dataclass

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
