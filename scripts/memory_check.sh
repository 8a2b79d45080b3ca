#!/usr/bin/env bash
# Shows that a worker's memory does not grow with input size: plans and starts a job over a
# 1 GiB JSONL object (Rotten Tomatoes reviews repeated with fresh ids), samples the worker's
# resident memory while it plans and runs shards, then cancels the job.
#   scripts/memory_check.sh [SIZE_MIB] [SECONDS]     (defaults: 1024, 120)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
size_mib=${1:-1024}
seconds=${2:-120}
scripts/services.sh up >/dev/null
eval "$(scripts/assets.sh)"
cargo build --quiet
work=$SLUICE_CACHE/memory-check
mkdir -p "$work"
big=$work/input-${size_mib}mib.jsonl
if [ ! -f "$big" ]; then
  python3 - "$RT_CSV" "$big" "$size_mib" <<'PY'
import csv, json, sys
source, target, size = sys.argv[1], sys.argv[2], int(sys.argv[3]) << 20
texts = [r["text"] for r in csv.DictReader(open(source, encoding="utf-8")) if r["category"] != "plot"]
written, n = 0, 0
with open(target, "w", encoding="utf-8") as out:
    while written < size:
        line = json.dumps({"id": f"m{n}", "text": texts[n % len(texts)]}) + "\n"
        out.write(line)
        written += len(line.encode())
        n += 1
print(f"{n} rows, {written >> 20} MiB -> {target}", file=sys.stderr)
PY
fi
export SLUICE__PREFIX=memcheck SLUICE__API__LISTEN=127.0.0.1:8089 SLUICE__API__URL=http://127.0.0.1:8089
export SLUICE__ENGINE__ORT_DYLIB_PATH=$ORT_DYLIB_PATH
"$S3_PY" scripts/s3.py mb sluice-memcheck
"$S3_PY" scripts/s3.py put "$big" s3://sluice-memcheck/big.jsonl
"$SLUICE_BIN" model push "$MODEL_DIR" s3://sluice-memcheck/model/ --precision int8 >/dev/null 2>&1
"$SLUICE_BIN" api > "$work/api.log" 2>&1 & api=$!
"$SLUICE_BIN" worker > "$work/worker.log" 2>&1 & worker=$!
trap 'kill $api $worker 2>/dev/null || true' EXIT
sleep 3
cat > "$work/job.toml" <<TOML
api_version = "sluice/v1"
kind = "inference"
name = "memory-check"
model = "s3://sluice-memcheck/model/"
task = "embed"
[input]
uri = "s3://sluice-memcheck/big.jsonl"
format = "jsonl"
id_field = "id"
[output]
uri = "s3://sluice-memcheck/out-$(date +%s)/"
TOML
id=$("$SLUICE_BIN" submit "$work/job.toml" 2>/dev/null)
echo "job $id over $(du -m "$big" | cut -f1) MiB; sampling the worker's RSS for ${seconds}s"
peak=0
for ((t = 0; t < seconds; t += 5)); do
  rss=$(awk '/VmRSS/ {print int($2 / 1024)}' /proc/$worker/status)
  hwm=$(awk '/VmHWM/ {print int($2 / 1024)}' /proc/$worker/status)
  progress=$(curl -fsS "http://127.0.0.1:8089/v1/jobs/$id" | python3 -c 'import json,sys; j=json.load(sys.stdin); p=j["progress"]; print(j["status"], "shards", p["shards_done"], "/", p["shards_total"], "rows", p["rows_done"] + p["rows_in_flight"])')
  echo "t=${t}s rss=${rss}MiB peak=${hwm}MiB $progress"
  sleep 5
done
"$SLUICE_BIN" cancel "$id" 2>&1 || true
echo "worker peak RSS: $(awk '/VmHWM/ {print int($2 / 1024)}' /proc/$worker/status) MiB"
