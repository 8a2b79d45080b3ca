#!/usr/bin/env bash
# Gathers the CUDA build of ONNX Runtime and the CUDA 13 / cuDNN 9 libraries it loads into one
# folder (from the onnxruntime-gpu wheel and the nvidia-* wheels its [cuda,cudnn] extras name),
# so a GPU worker can point engine.ort_dylib_path at it. Needs the package registries: run it
# where they are reachable and carry the folder to the GPU machine. Prints the folder.
set -euo pipefail
cache=${SLUICE_CACHE:-$HOME/.cache/sluice}
dir=$cache/assets/onnxruntime-gpu
wheels=$cache/assets/wheels-gpu
if [ ! -f "$dir/libonnxruntime_providers_cuda.so" ]; then
  mkdir -p "$dir" "$wheels"
  pip download -q --only-binary=:all: -d "$wheels" 'onnxruntime-gpu[cuda,cudnn]==1.31.1' >&2
  for whl in "$wheels"/*.whl; do
    # Every shared library, flattened into one folder (the runtime looks beside itself and
    # on LD_LIBRARY_PATH).
    unzip -q -o -j "$whl" '*.so*' -d "$dir" 2>/dev/null || true
  done
fi
echo "$dir"
