#!/usr/bin/env bash
# The worker pipeline against raw ONNX Runtime, on the release build (profile.release):
# for news sentences and for short review snippets, one `sluice bench` each (raw ORT first
# and last, the engine, whole jobs with the serial and the overlapped pipeline, two workers,
# Python, the row accounting, then the pipeline ceiling around a free model for JSONL and
# Parquet). Tables on stdout, JSON in bench-pipeline-news.json and bench-pipeline-reviews.json.
# Needs the services up (scripts/services.sh); run it on a quiet machine.
#   scripts/bench_pipeline.sh [--texts 4000] [--ceiling-rows 50000] [--debug]
# --debug times the dev-profile binary instead, to see what the release profile changes.
set -euo pipefail
cd "$(dirname "$0")/.."
texts=4000
ceiling_rows=50000
debug=0
while (($#)); do
  case $1 in
    --texts) texts=$2; shift 2 ;;
    --ceiling-rows) ceiling_rows=$2; shift 2 ;;
    --debug) debug=1; shift ;;
    -h | --help) sed -n 2,9p "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
source scripts/env.sh
eval "export $(scripts/assets.sh 2>/dev/null | tr '\n' ' ')"
export ORT_DYLIB_PATH
profile=release
suffix=
if ((debug)); then
  step "build sluice (dev profile)"
  cargo build --quiet --bin sluice
  bin=$SLUICE_BIN
  profile=debug
  suffix=-debug
else
  step "build sluice (release profile)"
  cargo build --release --quiet --bin sluice
  bin=$SLUICE_RELEASE_BIN
fi
for corpus in news reviews; do
  step "bench: $corpus ($profile build)"
  extra=()
  [[ $corpus == reviews ]] && extra=(--reviews-csv "$RT_CSV")
  SLUICE_LOG=warn "$bin" bench --model-dir "$MODEL_DIR" --news-csv "$NEWS_CSV" \
    --python "$REF_PYTHON" --texts "$texts" --ceiling-rows "$ceiling_rows" "${extra[@]}" \
    --out "bench-pipeline-$corpus$suffix.json"
done
