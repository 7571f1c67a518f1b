#!/usr/bin/env bash
# The GPU checks of issue 22, as one run on a lent CUDA machine (docs/benchmarks.md, "On a lent GPU"): the
# reference job's benchmark on a Mistral-7B-shaped model (random weights: nothing is downloaded), with the
# memory model's prediction beside the measured peak, then `pytest -m gpu`. What the machine lacks travels
# as wheels in .whl/ (the docs say which); everything printed and written lands in $OUT.
#
#     OUT=/tmp/out benchmarks/device_check.sh
#
# Not yet run: no device was lent to the session that wrote it.
set -uo pipefail
out=${OUT:?set OUT to the folder the results go to}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
python3 benchmarks/gpu_reference.py --model 7b --qlora --steps 10 2>&1 | tee "$out/gpu_reference.txt"
cp benchmarks/results/gpu_reference_cuda.json "$out/" 2>/dev/null
python3 -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tee "$out/pytest-gpu.txt"
