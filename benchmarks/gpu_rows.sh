#!/usr/bin/env bash
# The GPU rows of the benchmarks, for a GPU machine whose Python has torch (with CUDA) but
# neither ase nor mace-torch, and no internet: what it lacks travels as wheels in .whl/
# (benchmarks/README.md, "On a GPU", says how to download them). Run from the repository root:
#
#   bash benchmarks/gpu_rows.sh ours OUT   # GPU-vs-CPU agreement; batched evaluate, relax,
#                                          # Hessian on the GPU (issue rows of batching)
#   bash benchmarks/gpu_rows.sh mace OUT   # one MD step vs mace-torch and mace-torch +
#                                          # cuEquivariance at 1k-50k atoms; largest cell
#
# Wheels: .whl/ours (ase, e3nn 0.6.0, matscipy) → $work/site-ours, on PYTHONPATH with the
# repository; .whl/mace (mace-torch 0.3.16 and its needs, e3nn 0.4.4) and .whl/cueq*
# (cuequivariance-torch, its ops) → $work/site-mace, seen only by the mace side through a
# stand-in virtual environment $work/venv-mace whose python sets PYTHONPATH. A part installs
# the wheel folders present (each once per machine), so the two parts can run in two calls.
# $work is $GPU_ROWS_WORK, by default a folder in the machine's temporary directory.
set -u
part=${1:?ours or mace}
out=${2:?output folder}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
work=${GPU_ROWS_WORK:-${TMPDIR:-/tmp}/ase_equi_gpu_rows}
mkdir -p "$work"

install() {  # install <target> <wheel folder>: once per machine
    local target=$1 folder=$2 marker="$1/.installed-$(basename "$2")"
    [ -d "$folder" ] && [ ! -e "$marker" ] || return 0
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$target" "$folder"/*.whl && touch "$marker"
}
install "$work/site-ours" .whl/ours
for folder in .whl/mace .whl/cueq1 .whl/cueq2; do install "$work/site-mace" "$folder"; done
export PYTHONPATH="$PWD:$work/site-ours"
mkdir -p "$work/venv-mace/bin"
printf '#!/bin/sh\nPYTHONPATH=%s exec python3 "$@"\n' "$work/site-mace" > "$work/venv-mace/bin/python"
chmod +x "$work/venv-mace/bin/python"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
    | tee "$out/gpu-$part.txt"
python3 -c "import torch, e3nn, ase, ase_equi; print('ours: torch', torch.__version__,
'e3nn', e3nn.__version__, 'ase', ase.__version__)" | tee -a "$out/gpu-$part.txt"

case $part in
ours)
    timeout 70 python3 benchmarks/gpu_agreement.py --out "$out/gpu-agreement.json" \
        2>&1 | tee "$out/gpu-agreement.log"
    timeout 110 python3 benchmarks/evaluate_batched.py --device cuda --count 1000 \
        --batch-sizes auto,1000 --largest-batch --json "$out/evaluate-batched-cuda.json" \
        2>&1 | tee "$out/evaluate-batched-cuda.log"
    timeout 80 python3 benchmarks/relax_batched.py --device cuda --n 30 --out "$out" \
        2>&1 | tail -40
    timeout 80 python3 benchmarks/hessian.py --device cuda --out "$out/hessian-cuda.json" \
        2>&1 | cut -c1-400
    ;;
mace)
    "$work/venv-mace/bin/python" -c "import mace, e3nn; print('mace side: mace', mace.__version__,
'e3nn', e3nn.__version__)"
    "$work/venv-mace/bin/python" -c "import cuequivariance_torch as c; print('cueq', c.__version__)"
    timeout 250 python3 benchmarks/mace_comparison.py --device cuda --models medium \
        --dtypes float32 --modes forces --sizes 7,14,23 --repeats 5 --warmup 2 --mace-cueq \
        --row-timeout 80 --mace-venv "$work/venv-mace" --cache "$work/cache" --out "$out" \
        2>&1 | tail -60
    model=$(ls "$work"/cache/cu_medium_*.model | head -1)
    for n in 30 40; do  # 108,000 and 256,000 atoms: the largest Cu cell that fits
        request="{\"action\": \"time\", \"model\": \"$model\", \"dtype\": \"float32\",
            \"n_cells\": $n, \"mode\": \"forces\", \"repeats\": 2, \"warmup\": 1,
            \"threads\": 2, \"device\": \"cuda\", \"seed\": 0, \"gpu_busy\": 1}"
        (cd benchmarks && timeout 60 python3 _ase_equi_worker.py "$request") 2>&1 \
            | tail -3 | cut -c1-2000 | tee -a "$out/largest-cell.log"
    done
    ;;
esac
