#!/usr/bin/env bash
# The GPU check, run on a machine with an NVIDIA GPU (driver >= 580 for CUDA 13): the engine
# and the benchmark with the CUDA execution provider, printing the same table as on the CPU.
# Everything it needs is carried in, nothing is downloaded:
#   SLUICE_BIN   a built sluice binary        (default: the cargo target folder's)
#   ORT_GPU_DIR  scripts/gpu_assets.sh output (onnxruntime-gpu + CUDA/cuDNN libraries)
#   MODEL_DIR, NEWS_CSV                        scripts/assets.sh output
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
: "${ORT_GPU_DIR:?set ORT_GPU_DIR to the folder scripts/gpu_assets.sh filled}"
: "${MODEL_DIR:?set MODEL_DIR}" "${NEWS_CSV:?set NEWS_CSV}"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
else
  echo "gpu_check: no nvidia-smi here; the run below will say whether CUDA starts" >&2
fi
export LD_LIBRARY_PATH=$ORT_GPU_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export SLUICE__ENGINE__ORT_DYLIB_PATH=$ORT_GPU_DIR/libonnxruntime.so.1.31.1
export SLUICE__ENGINE__EXECUTION_PROVIDER=cuda
# A GPU takes far bigger batches than two CPU cores.
export SLUICE__ENGINE__MAX_BATCH_ROWS=${MAX_BATCH_ROWS:-256}
export SLUICE__ENGINE__MAX_BATCH_TOKENS=${MAX_BATCH_TOKENS:-65536}
export SLUICE__WORKER__CHUNK_ROWS=${CHUNK_ROWS:-8192}
"$SLUICE_BIN" bench --engine-only --model-dir "$MODEL_DIR" --news-csv "$NEWS_CSV" \
  --texts "${TEXTS:-40000}" --out "${OUT:-gpu-bench.json}"
