#!/usr/bin/env bash
# Planning time against input size for JSONL: "ranges" (with input.id_field, cut into byte
# ranges without reading) against "scan" (without an id field, every row counted, the way
# every JSONL job was planned before). For each size it uploads one generated JSONL object,
# submits one job of each kind, waits until planning ends, reads
# timings.started_ms - timings.created_ms and cancels the job at once (no inference runs).
#   scripts/bench_planning.sh [--sizes "1 10"] [--json bench-planning.json] [--keep-data]
# Sizes are GiB. It runs its own S3 server (moto, on a free port, spooling to a work folder)
# so the shared one on 9000 never holds the large objects; RabbitMQ and Redis are the shared
# ones (its own key prefix). moto joins a multipart upload in memory and reads the whole
# object for any GET, even a ranged one (~4.2x the object at its peak): a size that would
# not fit the memory or disk free now, or is over 3 GiB (a 4 GiB upload got a 500), is
# replaced by the largest whole GiB that fits. The "s3 4B GET" column is what one 4-byte
# ranged GET costs on this server, which real S3 does not charge; planning with ranges makes
# two GETs (the compression sniff, the first row for the id's column type).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
sizes="1 10"
json_out=bench-planning.json
keep_data=0
while (($#)); do
  case $1 in
    --sizes) sizes=$2; shift 2 ;;
    --json) json_out=$2; shift 2 ;;
    --keep-data) keep_data=1; shift ;;
    -h | --help) sed -n 2,15p "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $json_out in /*) ;; *) json_out=$root/$json_out ;; esac
source scripts/env.sh
eval "$(scripts/assets.sh 2>/dev/null)"

step "build sluice (release profile: benches time the optimised build)"
cargo build --release --quiet --bin sluice
SLUICE_BIN=$SLUICE_RELEASE_BIN

work=$SLUICE_CACHE/bench-planning/$$
mkdir -p "$work/spool"
free_port() { "$S3_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
s3_port=$(free_port)
api_port=$(free_port)
metrics_port=$(free_port)
prefix=bench-planning-$$
bucket=sluice-bench-planning-$$
export S3_ENDPOINT=http://127.0.0.1:$s3_port
export SLUICE__S3__ENDPOINT=$S3_ENDPOINT
export SLUICE__PREFIX=$prefix
export SLUICE__API__LISTEN=127.0.0.1:$api_port SLUICE__API__URL=http://127.0.0.1:$api_port
export SLUICE__METRICS__LISTEN=127.0.0.1:$metrics_port
export SLUICE__ENGINE__ORT_DYLIB_PATH=$ORT_DYLIB_PATH SLUICE__ENGINE__INTRA_OP_THREADS=1
api=http://127.0.0.1:$api_port

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  purge_queues || true
  if ((keep_data)); then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# Our own queues on the shared RabbitMQ (management API): total messages, and a purge.
queues() {
  curl -fsS -u guest:guest "http://127.0.0.1:15672/api/queues?columns=name,messages" |
    "$S3_PY" -c 'import json,sys; [print(q["name"], q.get("messages") or 0) for q in json.load(sys.stdin) if q["name"].startswith(sys.argv[1] + ".")]' "$prefix"
}
purge_queues() {
  local name _
  queues | while read -r name _; do
    curl -fsS -u guest:guest -X DELETE "http://127.0.0.1:15672/api/queues/%2f/$name/contents" >/dev/null || true
  done
}
# The worker publishes a cancelled job's shards for seconds after planning ends (thousands
# of them) and is busy meanwhile: a plan task submitted then would wait, and that wait would
# count as planning. The management API's counts lag by up to 5 s (its statistics
# interval), so the queues must read empty (purged) for 7 s in a row.
wait_queues_empty() {
  local quiet=0
  for _ in $(seq 900); do
    if [ "$(queues | awk '{s += $2} END {print s + 0}')" = 0 ]; then
      quiet=$((quiet + 1))
      ((quiet >= 35)) && return 0
    else
      quiet=0
      purge_queues
    fi
    sleep 0.2
  done
  echo "our queues did not stay empty within 180 s: $(queues | tr '\n' ' ')" >&2
}

step "own S3 server (moto) on $s3_port, spooling to $work/spool"
TMPDIR=$work/spool "$(dirname "$S3_PY")/moto_server" -H 127.0.0.1 -p "$s3_port" > "$work/moto.log" 2>&1 &
moto=$!
pids+=($moto)
for _ in $(seq 150); do curl -fsS "$S3_ENDPOINT" >/dev/null 2>&1 && break; sleep 0.2; done
"$S3_PY" scripts/s3.py mb "$bucket"

# The largest whole GiB whose upload fits now: moto peaked at 4.2 GiB of memory for a 1 GiB
# object (it joins the parts in a bytearray, then copies it; a GET reads the whole object),
# so ~4.5x the object, and 2x on disk (the parts, then the joined object); 3 GiB of memory
# stay free for everything else on the machine. 3 GiB at most: moto answered 500 to the
# CompleteMultipartUpload of a 4 GiB object (at 12.5 GiB of memory, 8 GiB still free).
mem_avail_gib=$(awk '/MemAvailable/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)
disk_avail_gib=$(df -Pk "$work/spool" | awk 'NR == 2 {printf "%.1f", $4 / 1048576}')
max_gib=$(awk -v m="$mem_avail_gib" -v d="$disk_avail_gib" 'BEGIN {a = (m - 3) / 4.5; a = a > 3 ? 3 : a; b = (d - 4) / 2.2; x = a < b ? a : b; printf "%d", x < 0 ? 0 : x}')
echo "free now: ${mem_avail_gib} GiB memory, ${disk_avail_gib} GiB disk; moto fits objects up to ${max_gib} GiB" >&2
runs=()
for size in $sizes; do
  if awk -v s="$size" -v m="$max_gib" 'BEGIN {exit !(s > m)}'; then
    echo "size ${size} GiB does not fit (moto would need ~$(awk -v s="$size" 'BEGIN {print s * 4.5 + 3}') GiB memory and $(awk -v s="$size" 'BEGIN {print s * 2.2}') GiB disk; free: ${mem_avail_gib} GiB, ${disk_avail_gib} GiB); using ${max_gib} GiB" >&2
    size=$max_gib
  fi
  awk -v s="$size" 'BEGIN {exit !(s > 0)}' || { echo "no size fits; nothing to measure" >&2; exit 1; }
  [[ " ${runs[*]} " == *" $size "* ]] || runs+=("$size")
done

step "push the model package (planning checks it)"
"$SLUICE_BIN" model push "$MODEL_DIR" "s3://$bucket/model/" --precision int8 > "$work/model-push.log" 2>&1

step "start the API and one worker (prefix $prefix, API on $api_port)"
"$SLUICE_BIN" api > "$work/api.log" 2>&1 & pids+=($!)
"$SLUICE_BIN" worker > "$work/worker.log" 2>&1 & pids+=($!)
for _ in $(seq 150); do curl -fsS "$api/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "$api/readyz" >/dev/null || { echo "API did not become ready; see $work/api.log" >&2; exit 1; }

# Streams SIZE GiB of {"id": N, "text": "..."} rows into a multipart upload, 64 MiB parts,
# never more than one part in memory; then times one 4-byte ranged GET of the object.
upload() {
  "$S3_PY" - "$bucket" "$1" "$2" <<'PY'
import json, os, random, sys, time
import boto3
bucket, key, gib = sys.argv[1], sys.argv[2], float(sys.argv[3])
from botocore.config import Config
# moto joins the parts before it answers CompleteMultipartUpload: minutes for GiBs, and a
# retry would join them all again.
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name="us-east-1",
                  aws_access_key_id="sluice", aws_secret_access_key="sluice-secret",
                  config=Config(read_timeout=900, retries={"max_attempts": 1}))
rng = random.Random(19)
words = "the a film review plot actor scene story great dull long short funny sad music light".split()
texts = [" ".join(rng.choice(words) for _ in range(rng.randint(10, 60))) for _ in range(4096)]
target, part_bytes = int(gib * (1 << 30)), 64 << 20
upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
parts, buf, written, n, started = [], [], 0, 0, time.time()
try:
    while written < target:
        lines = [json.dumps({"id": n + i, "text": texts[(n + i) % 4096]}) + "\n" for i in range(10000)]
        n += len(lines)
        chunk = "".join(lines).encode()
        buf.append(chunk)
        written += len(chunk)
        size = sum(map(len, buf))
        if size >= part_bytes or written >= target:
            body = b"".join(buf)
            buf = []
            etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                  PartNumber=len(parts) + 1, Body=body)["ETag"]
            parts.append({"PartNumber": len(parts) + 1, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                 MultipartUpload={"Parts": parts})
except BaseException:
    s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    raise
t = time.time()
s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-3")["Body"].read()
get4 = time.time() - t
print(json.dumps({"bytes": written, "rows": n, "upload_s": round(t - started, 1), "get4_s": round(get4, 2)}))
PY
}

# Submits one job over KEY (with or without an id field), waits until it leaves planning,
# cancels it and prints {"status", "planning_s", "shards", "rows_total"}.
plan_once() {
  local key=$1 kind=$2 id_line="" toml id view status
  [ "$kind" = ranges ] && id_line='id_field = "id"'
  toml=$work/job-$kind.toml
  cat > "$toml" <<TOML
api_version = "sluice/v1"
kind = "inference"
name = "bench-planning-$kind"
model = "s3://$bucket/model/"
task = "embed"
[input]
uri = "s3://$bucket/$key"
format = "jsonl"
text_field = "text"
$id_line
[output]
uri = "s3://$bucket/out/$kind-$(date +%s%N)/"
TOML
  wait_queues_empty
  id=$("$SLUICE_BIN" submit "$toml" 2> "$work/submit.err") || { cat "$work/submit.err" >&2; return 1; }
  while :; do
    view=$(curl -fsS "$api/v1/jobs/$id")
    status=$("$S3_PY" -c 'import json,sys; print(json.loads(sys.argv[1])["status"])' "$view")
    case $status in queued | planning) sleep 0.05 ;; *) break ;; esac
  done
  curl -fsS -X POST "$api/v1/jobs/$id/cancel" >/dev/null || true
  purge_queues
  "$S3_PY" - "$view" <<'PY'
import json, sys
j = json.loads(sys.argv[1])
t, p = j["timings"], j["progress"]
planning = (t["started_ms"] - t["created_ms"]) / 1000 if t.get("started_ms") else None
print(json.dumps({"job": j["id"], "status": j["status"], "planning_s": planning,
                  "shards": p["shards_total"], "rows_total": p["rows_total"] if p["rows_total_known"] else None,
                  "error": j.get("error")}))
PY
}

results=$work/results.jsonl
: > "$results"
for size in "${runs[@]}"; do
  key=input-${size}gib.jsonl
  step "generate and upload ${size} GiB of JSONL to s3://$bucket/$key"
  if ! up=$(upload "$key" "$size" 2> "$work/upload.err"); then
    echo "upload of ${size} GiB failed; skipping that size. Client: $(tail -1 "$work/upload.err")" >&2
    echo "S3 server log (moto) tail:" >&2
    grep -v '" 200 -$' "$work/moto.log" | tail -15 >&2
    "$S3_PY" -c 'import boto3,os,sys; c=boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name="us-east-1", aws_access_key_id="sluice", aws_secret_access_key="sluice-secret"); [c.abort_multipart_upload(Bucket=sys.argv[1], Key=u["Key"], UploadId=u["UploadId"]) for u in c.list_multipart_uploads(Bucket=sys.argv[1]).get("Uploads", [])]' "$bucket" || true
    continue
  fi
  moto_peak=$(awk '/VmHWM/ {printf "%.1f", $2 / 1048576}' /proc/$moto/status)
  echo "$up; moto peak memory so far: $moto_peak GiB" >&2
  step "plan ${size} GiB with an id field (byte ranges)"
  ranges=$(plan_once "$key" ranges)
  echo "$ranges" >&2
  step "plan ${size} GiB without an id field (scan)"
  scan=$(plan_once "$key" scan)
  echo "$scan" >&2
  echo "{\"size_gib\": $size, \"moto_peak_gib\": $moto_peak, \"upload\": $up, \"ranges\": $ranges, \"scan\": $scan}" >> "$results"
  # Free moto's memory and disk for the next size.
  "$S3_PY" -c 'import boto3,os,sys; boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name="us-east-1", aws_access_key_id="sluice", aws_secret_access_key="sluice-secret").delete_object(Bucket=sys.argv[1], Key=sys.argv[2])' "$bucket" "$key"
done

step "results"
"$S3_PY" - "$results" "$json_out" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
out = []
for r in rows:
    a, b = r["ranges"], r["scan"]
    ratio = b["planning_s"] / a["planning_s"] if a["planning_s"] and b["planning_s"] else None
    out.append({"size_gib": r["size_gib"], "bytes": r["upload"]["bytes"], "rows": r["upload"]["rows"],
                "ranges_planning_s": a["planning_s"], "scan_planning_s": b["planning_s"],
                "ratio_scan_over_ranges": ratio, "ranges_shards": a["shards"], "scan_shards": b["shards"],
                "scan_rows_counted": b["rows_total"], "s3_get_4_bytes_s": r["upload"]["get4_s"],
                "upload_s": r["upload"]["upload_s"], "moto_peak_gib": r["moto_peak_gib"], "ranges_status": a["status"], "scan_status": b["status"],
                "errors": [e for e in (a["error"], b["error"]) if e]})
fmt = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"
head = f"{'size':>8} {'rows':>11} {'ranges s':>9} {'scan s':>9} {'scan/ranges':>11} {'shards':>7} {'s3 4B GET s':>11}"
print(head)
print("-" * len(head))
for o in out:
    shards = o["ranges_shards"] if o["ranges_shards"] == o["scan_shards"] else f"{o['ranges_shards']}/{o['scan_shards']}"
    print(f"{o['size_gib']:>5} GiB {o['rows']:>11} {fmt(o['ranges_planning_s'], 3):>9} {fmt(o['scan_planning_s']):>9} "
          f"{fmt(o['ratio_scan_over_ranges'], 1):>11} {shards!s:>7} {fmt(o['s3_get_4_bytes_s']):>11}")
    for e in o["errors"]:
        print(f"         error: {e}")
json.dump(out, open(sys.argv[2], "w"), indent=2)
print(f"written {sys.argv[2]}", file=sys.stderr)
PY
