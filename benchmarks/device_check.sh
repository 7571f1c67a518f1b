#!/usr/bin/env bash
# The GPU checks of issues 22 and 35, as one run on a lent CUDA machine (docs/benchmarks.md, "On a lent
# GPU"): the whole reference job (train, score, merge, convert, quantize) on a Mistral-7B-shaped model (random
# weights: nothing is downloaded), with the memory model's prediction beside the measured peak; `pytest -m
# gpu`; then the loss with logits only at predicted tokens against the loss over every token. What the machine
# lacks travels as .whl/site.tar.xz (`make device-site` makes it here: carry .whl); everything printed and
# written lands in $OUT.
#
#     OUT=/tmp/out benchmarks/device_check.sh               # on the GPU machine: all three parts
#     OUT=/tmp/out benchmarks/device_check.sh reference     # one part (reference, gpu-tests, loss) a call
#     MODEL=demo OUT=/tmp/out benchmarks/device_check.sh    # its rehearsal here, on the CPU with the demo model
set -uo pipefail
out=${OUT:?set OUT to the folder the results go to}
model=${MODEL:-7b}
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
if [ -f .whl/site.tar.xz ]; then  # `make device-site`
    mkdir -p /tmp/site && tar -xJf .whl/site.tar.xz -C /tmp/site || exit 1
    export PYTHONPATH=/tmp/site
    for converter in /tmp/site/llama.cpp-*/; do export TUNEDESK_CONVERTER=$converter; done
fi
qlora=$([ "$model" = 7b ] && echo --qlora)
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
for part in ${*:-reference gpu-tests loss}; do
    case $part in
    reference)
        $python benchmarks/gpu_reference.py --model "$model" $qlora --steps 10 2>&1 | tee "$out/gpu_reference.txt"
        cp benchmarks/results/gpu_reference*.json "$out/" 2>/dev/null ;;
    gpu-tests)
        $python -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/pytest-gpu.txt" ;;
    loss)
        $python benchmarks/loss.py --model "$model" $qlora --rows 4 --repeat 2 2>&1 | tee "$out/loss.txt"
        cp benchmarks/results/loss_*.json "$out/" 2>/dev/null ;;
    *)
        echo "device_check.sh: no part named $part (reference, gpu-tests, loss)" >&2
        exit 2 ;;
    esac
done
