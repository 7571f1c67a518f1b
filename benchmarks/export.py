"""Export: peak resident memory of merge, convert and quantize against the size of the model's largest
shard, and the time of our convert + quantize against llama.cpp's converter and quantizer run directly on
the same merged folder, measured in the same run.

    .venv/bin/python benchmarks/export.py

The model is Mistral-shaped with random weights (hidden 1024, intermediate 2816, 8 layers: 97M parameters,
bf16, saved in 100 MB shards) with a random rank-16 LoRA adapter on every linear layer. Goals (issue 5):
the merge's peak memory above a bare Python + torch process at most 1.3x the largest shard (anonymous
memory, what the process holds; the resident figure, which also counts the input's mapped file pages that
the kernel can drop, is reported beside it); convert + quantize at most 1.1x the time of llama.cpp's own
tools.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import save, verdict

ROOT = Path(__file__).resolve().parent.parent
REPEAT = 3

# Each step runs in its own child, which reports its peak anonymous memory (sampled every 2 ms: what the
# process holds, without the mapped file pages that the kernel can drop) and its peak resident memory.
SAMPLER = """
import threading, resource
peak_anon = [0]
def sample():
    while True:
        for line in open('/proc/self/status'):
            if line.startswith('RssAnon:'):
                peak_anon[0] = max(peak_anon[0], int(line.split()[1]))
        time.sleep(0.002)
threading.Thread(target=sample, daemon=True).start()
time.sleep(0.05)
"""
REPORT = """
time.sleep(0.05)
r = resource
print(peak_anon[0], max(r.getrusage(r.RUSAGE_SELF).ru_maxrss, r.getrusage(r.RUSAGE_CHILDREN).ru_maxrss))
"""


def child(code: str) -> tuple[float, int, int]:
    """Seconds, peak anonymous KiB and peak resident KiB of `code` in a fresh Python (with torch)."""
    script = (
        f"import time, torch, safetensors.torch\n{SAMPLER}\nstarted = time.perf_counter()\n"
        f"{code}\nprint(time.perf_counter() - started)\n{REPORT}"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, capture_output=True, text=True)
    seconds, peaks = out.stdout.strip().splitlines()[-2:]
    anon, resident = peaks.split()
    return float(seconds), int(anon), int(resident)


def make_model(work: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import MistralConfig, MistralForCausalLM

    from core import default_data_dir
    from core.engine.demo_model import build
    from core.models.base_models import demo_dir
    from core.progress import Work

    demo = build(demo_dir(default_data_dir()), work=Work(lambda message, done, total: print(message)))
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=2000,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    )
    model = MistralForCausalLM(config).to(torch.bfloat16)
    base = work / "base"
    model.save_pretrained(base, max_shard_size="100MB")
    for name in ("tokenizer.model", "tokenizer_config.json"):
        (base / name).write_bytes((demo / name).read_bytes())
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    adapted = get_peft_model(model, lora)
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.01)
    adapted.save_pretrained(work / "adapter")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # The model is made in a child: Linux carries a process's peak memory over to the children it
        # starts, which would hide the peaks measured below.
        subprocess.run([sys.executable, __file__, "--make", str(work)], check=True)
        base, adapter = work / "base", work / "adapter"
        shards = sorted(base.glob("*.safetensors"))
        largest = max(s.stat().st_size for s in shards)
        merged = work / "merged"
        _, bare_anon, bare = child("pass")
        merge_s, merge_anon, merge_peak = child(
            f"from core.engine.merge import merge; merge(Path('{base}'), Path('{adapter}'), Path('{merged}'))".replace(
                "Path(", "__import__('pathlib').Path("
            )
        )

        converter = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "from core.llamacpp import converter_dir; import json; print(json.dumps(str(converter_dir())))",
                ],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        ours_code = (
            "from pathlib import Path; from core.engine import gguf\n"
            f"gguf.convert(Path('{merged}'), Path('{work}/ours-f16.gguf'))\n"
            f"gguf.quantize(Path('{work}/ours-f16.gguf'), Path('{work}/ours-q4.gguf'), 'q4_k_m')"
        )
        direct_code = (
            "import subprocess, sys, ctypes, os, llama_cpp\n"
            f"subprocess.run([sys.executable, 'convert_hf_to_gguf.py', '{merged}', '--outfile',"
            f" '{work}/direct-f16.gguf', '--outtype', 'f16'], cwd='{converter}', check=True, capture_output=True)\n"
            "p = llama_cpp.llama_model_quantize_default_params(); p.ftype = 15; p.nthread = os.cpu_count()\n"
            f"source, target = b'{work}/direct-f16.gguf', b'{work}/direct-q4.gguf'\n"
            "code = llama_cpp.llama_model_quantize(source, target, ctypes.byref(p))\n"
            "assert code == 0"
        )
        ours, direct = [], []
        for _ in range(REPEAT):  # alternated, so that a busy moment hurts both
            direct.append(child(direct_code))
            ours.append(child(ours_code))
    ours_s = statistics.median(s for s, _, _ in ours)
    direct_s = statistics.median(s for s, _, _ in direct)
    time_ratio = ours_s / direct_s
    memory_ratio = (merge_anon - bare_anon) * 1024 / largest
    resident_ratio = (merge_peak - bare) * 1024 / largest
    numbers = {
        "parameters": 97_000_000,
        "shards": len(shards),
        "largest_shard_bytes": largest,
        "bare_python_torch_peak_anon_kib": bare_anon,
        "bare_python_torch_peak_resident_kib": bare,
        "merge_peak_anon_kib": merge_anon,
        "merge_peak_resident_kib": merge_peak,
        "merge_seconds": round(merge_s, 2),
        "merge_anon_over_largest_shard": round(memory_ratio, 2),
        "merge_resident_over_largest_shard": round(resident_ratio, 2),
        "convert_quantize_peak_resident_kib": max(p for _, _, p in ours),
        "ours_convert_quantize_s": round(ours_s, 2),
        "direct_convert_quantize_s": round(direct_s, 2),
        "time_ratio": round(time_ratio, 3),
    }
    print(json.dumps(numbers, indent=2))
    save("export", numbers)
    figure = f"merge holds {memory_ratio:.2f}x the largest shard (resident with mapped pages {resident_ratio:.2f}x)"
    verdict("export_memory", figure, "at most 1.3x", memory_ratio <= 1.3)
    verdict(
        "export",
        f"convert + quantize {time_ratio:.2f}x llama.cpp's tools run directly",
        "at most 1.1x",
        time_ratio <= 1.1,
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--make"]:
        make_model(Path(sys.argv[2]))
    else:
        main()
