#!/usr/bin/env bash
# Issue 5's GPU figures in one call: bench/throughput.py with the actors' policy on the CPU, then
# on the GPU (data.actor_device), learner on the GPU in fp32 (the faster precision there).
#
#   bash bench/gpu_throughput.sh [SECONDS] [WORKERS]     # results in ${OUT:-runs/gpu_throughput}/
#
# WORKERS defaults to cores - 2 (one core for the learner, one for the rest). On a machine without
# internet, WHEELS=dir installs the dependencies from wheels next to the machine's own CUDA torch.
set -uo pipefail
cd "$(dirname "$0")/.."
S=${1:-10}
W=${2:-$(($(nproc) - 2))}
OUT=${OUT:-runs/gpu_throughput}
PY=${PY:-python3}
mkdir -p "$OUT"
if [ -n "${WHEELS:-}" ]; then
    $PY -m pip install -q --no-index --no-deps --no-cache-dir --target /tmp/site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L || exit 1
echo "cores $(nproc), workers $W, $S s per stage"
for actor_device in cpu cuda; do
    log="$OUT/actor_$actor_device.txt"
    timeout $((S * 6 + 200)) $PY bench/throughput.py --seconds "$S" --device cuda --precision 32-true \
        --num-workers "$W" --actor-device "$actor_device" >"$log" 2>&1
    echo "actor_device=$actor_device exit $?"
    grep "\[stage\]\|^{" "$log"
    grep -A20 Traceback "$log" | tail -25
done
