#!/usr/bin/env bash
# The fleet, run for real on one Debian 12 machine with podman (no Docker engine, no registry):
# builds the images from a local Debian base, brings docker/compose.yaml up under
# podman-compose, runs jobs through it (and kills a worker mid-job), then runs the rendered
# Kubernetes base with `podman kube play` against the same services; prints a table at the end.
#
#   scripts/fleet_check.sh            # everything (as root: installs podman & co. with apt)
#   FLEET_KEEP=1 scripts/fleet_check.sh   # leave the stack and pods running afterwards
#   FLEET_CUDA=0 scripts/fleet_check.sh   # skip the CUDA image (~2 GB of NVIDIA wheels)
#   FLEET_NOCACHE=1 scripts/fleet_check.sh  # also time a rebuild of every layer (cargo cache warm)
#   FLEET_ROWS=8000                       # rows of the generated job input
#
# Not part of .ci/run: a cold run compiles sluice in release inside a container (tens of
# minutes on two cores) and downloads the Debian base; warm runs take a few minutes.
# Everything runs beside services already on the host: its own podman network
# (sluice-fleet_default), host ports offset by FLEET_PORT_BASE (default 30000: API 38080,
# S3 39000, AMQP 35672, Prometheus 39090), nothing on the host's 5672/6379/9000/9090.
# Caches: the Debian base tarball and logs under $SLUICE_CACHE/fleet; cargo's registry and
# target as build cache mounts in podman's storage.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
repo=$PWD

export CONTAINERS_CONF=$repo/docker/local/containers.conf
fleet=$SLUICE_CACHE/fleet
work=$fleet/run
logs=$fleet/logs
mkdir -p "$fleet" "$logs"
rm -rf "$work" && mkdir -p "$work" && chmod 755 "$work"
PY=/usr/bin/python3
project=sluice-fleet
net=${project}_default
base=${FLEET_PORT_BASE:-30000}
export SLUICE_API_PORT=$((base + 8080)) SLUICE_S3_PORT=$((base + 9000)) \
  SLUICE_S3_CONSOLE_PORT=$((base + 9001)) SLUICE_AMQP_PORT=$((base + 5672)) \
  SLUICE_RABBITMQ_UI_PORT=$((base + 5673)) SLUICE_PROMETHEUS_PORT=$((base + 9090)) \
  SLUICE_GRAFANA_PORT=$((base + 3000))
export SLUICE_IMAGE=localhost/sluice:local SLUICE_MODEL_INIT_IMAGE=localhost/sluice-model-init:local \
  SLUICE_CUDA_IMAGE=localhost/sluice:local-cuda
S3_USER=sluice S3_SECRET=sluice-dev-secret
BASE_IMAGE=localhost/debian:bookworm-slim
RUST_IMAGE=localhost/sluice-rust:1.95
PYTHON_IMAGE=localhost/sluice-python:bookworm
BUILD_ARGS=(--build-arg "RUST_IMAGE=$RUST_IMAGE" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE"
  --build-arg "DEBIAN_IMAGE=$BASE_IMAGE")
compose_files=(-f docker/compose.yaml -f docker/compose.local.yaml -f docker/compose.moto.yaml)

table=$work/table.tsv
: > "$table"
row() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$table"; printf '[fleet] %-28s %-5s %s\n' "$1" "$2" "$3" >&2; }
log() { printf '[fleet] %s\n' "$*" >&2; }
die() { log "FAILED: $*"; print_table; exit 1; }
print_table() {
  printf '\n%-30s %-5s %s\n' CHECK RESULT DETAIL
  printf '%-30s %-5s %s\n' ------------------------------ ----- ------------------------------
  awk -F'\t' '{printf "%-30s %-5s %s\n", $1, $2, $3}' "$table"
}
secs_since() { echo $(( $(date +%s) - $1 )); }
size_of() { podman image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}'; }

cleanup() { # by name and label, so a stack left by an earlier run (FLEET_KEEP=1) goes too
  if [ "${FLEET_KEEP:-0}" = 1 ]; then log "FLEET_KEEP=1: stack and pods left running"; return; fi
  podman pod rm -f -t 70 sluice-api-pod-0 sluice-ingest-pod-0 sluice-worker-cpu-pod-0 >/dev/null 2>&1 || true
  podman secret rm sluice-secrets sluice-api-tokens >/dev/null 2>&1 || true
  podman rm -f fleet-smoke >/dev/null 2>&1 || true
  local ids
  ids=$(podman ps -aq --filter "label=io.podman.compose.project=$project")
  if [ -n "$ids" ]; then podman rm -f -t 10 $ids >/dev/null 2>&1 || true; fi
  podman volume ls -q | grep "^${project}_" | xargs -r podman volume rm -f >/dev/null 2>&1 || true
}
trap cleanup EXIT

# ------------------------------------------------------------------------------ installs
step "install podman, debootstrap, runc, podman-compose"
need=()
for c in podman:podman debootstrap:debootstrap runc:runc podman-compose:podman-compose \
  docker-compose:docker-compose kubectl:kubernetes-client curl:curl; do
  command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
done
$PY -c 'import yaml' 2>/dev/null || need+=(python3-yaml)
if ((${#need[@]})); then
  [ "$(id -u)" = 0 ] || { log "needs root for: apt-get install ${need[*]}"; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
row install ok "podman $(podman --version | awk '{print $3}'), podman-compose $(dpkg-query -W -f='${Version}' podman-compose 2>/dev/null)"

# ------------------------------------------------------------------------------ local bases
step "local bases: Debian (debootstrap), Python, Rust builder"
t0=$(date +%s)
if ! podman image exists "$BASE_IMAGE"; then
  tarball=$fleet/debian-bookworm.tar
  if [ ! -s "$tarball" ]; then
    rootfs=$(mktemp -d)
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian > "$logs/debootstrap.log" 2>&1
    cat > "$rootfs/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
    # This machine reaches registries through a TLS-inspecting proxy: its CAs must be trusted
    # inside the builds (update-ca-certificates runs when a stage installs ca-certificates).
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  podman import -q "$tarball" "$BASE_IMAGE" >/dev/null
fi
if ! podman image exists "$PYTHON_IMAGE"; then
  podman build -q --network=host -f docker/local/Containerfile.python \
    --build-arg "DEBIAN_IMAGE=$BASE_IMAGE" -t "$PYTHON_IMAGE" docker/local > "$logs/python-image.log" 2>&1
fi
if ! podman image exists "$RUST_IMAGE"; then
  toolchain=$(rustc +1.95 --print sysroot 2>/dev/null || true)
  [ -d "$toolchain" ] || die "the Rust builder is made from the host's 1.95 toolchain: rustup toolchain install 1.95"
  ctx=$(mktemp -d)
  tar -C "$toolchain" -cf "$ctx/rust.tar" bin lib libexec
  cp docker/local/Containerfile.rust "$ctx/"
  podman build -q --network=host -f "$ctx/Containerfile.rust" --build-arg "DEBIAN_IMAGE=$BASE_IMAGE" \
    -t "$RUST_IMAGE" "$ctx" > "$logs/rust-image.log" 2>&1
  rm -rf "$ctx"
fi
row "local bases" ok "debian $(size_of "$BASE_IMAGE"), python $(size_of "$PYTHON_IMAGE"), rust $(size_of "$RUST_IMAGE") ($(secs_since "$t0") s)"

# ------------------------------------------------------------------------------ images
step "sluice CPU image (runtime and model-init targets)"
build() { # build LOG ARGS...: podman build with the local bases, at low priority
  nice -n 10 podman build --network=host "${BUILD_ARGS[@]}" "${@:2}" . > "$logs/$1" 2>&1
}
cold=$(podman image exists "$SLUICE_IMAGE" && echo warm || echo cold)
t0=$(date +%s)
build cpu-build.log -f docker/Dockerfile --target runtime -t "$SLUICE_IMAGE" || die "CPU image build: $logs/cpu-build.log"
t_first=$(secs_since "$t0")
t0=$(date +%s)
build cpu-build-nochange.log -f docker/Dockerfile --target runtime -t "$SLUICE_IMAGE" || die "CPU image rebuild"
t_nochange=$(secs_since "$t0")
# FLEET_NOCACHE=1: every layer again (apt, pip, COPY), cargo with its cache mounts warm.
t_nocache=skipped
if [ "${FLEET_NOCACHE:-0}" = 1 ]; then
  t0=$(date +%s)
  build cpu-build-nocache.log --no-cache -f docker/Dockerfile --target runtime -t "$SLUICE_IMAGE" \
    || die "CPU image rebuild without layer cache: $logs/cpu-build-nocache.log"
  t_nocache=$(secs_since "$t0")s
fi
build model-init-build.log -f docker/Dockerfile --target model-init -t "$SLUICE_MODEL_INIT_IMAGE" \
  || die "model-init image: $logs/model-init-build.log"
row "image sluice (CPU)" ok "$(size_of "$SLUICE_IMAGE"); model-init $(size_of "$SLUICE_MODEL_INIT_IMAGE")"
row "build times" ok "this run ($cold) ${t_first}s; again, no change ${t_nochange}s; all layers, cargo cache warm: ${t_nocache}"
version=$(podman run --rm "$SLUICE_IMAGE" --version)
row "sluice --version" ok "$version"

# The CLI on the host talks to the stack through its published ports, as a user would.
mkdir -p "$work/bin"
cid=$(podman create "$SLUICE_IMAGE")
podman cp "$cid:/usr/local/bin/sluice" "$work/bin/sluice" && podman rm "$cid" >/dev/null
SLUICE=$work/bin/sluice

if [ "${FLEET_CUDA:-1}" = 1 ]; then
  step "sluice CUDA image"
  t0=$(date +%s)
  if build cuda-build.log -f docker/Dockerfile.cuda -t "$SLUICE_CUDA_IMAGE"; then
    row "image sluice-cuda" ok "$(size_of "$SLUICE_CUDA_IMAGE") in $(secs_since "$t0") s (built, not run: no GPU here)"
  else
    row "image sluice-cuda" FAIL "$(grep -m1 -iE 'error' "$logs/cuda-build.log" | cut -c1-120) ($logs/cuda-build.log)"
  fi
fi

step "backing-service images from Debian packages"
t0=$(date +%s)
for t in rabbitmq redis redis-exporter prometheus moto; do
  podman build -q --network=host -f docker/local/Containerfile.services --target "$t" \
    --build-arg "DEBIAN_IMAGE=$BASE_IMAGE" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
    -t "localhost/sluice-$t:local" docker/local > "$logs/svc-$t.log" 2>&1 || die "service image $t: $logs/svc-$t.log"
done
row "service images" ok "rabbitmq $(size_of localhost/sluice-rabbitmq:local), redis $(size_of localhost/sluice-redis:local), prometheus $(size_of localhost/sluice-prometheus:local), moto $(size_of localhost/sluice-moto:local) ($(secs_since "$t0") s)"

# ------------------------------------------------------------------------------ compose
step "compose stack under podman-compose"
cleanup
: > "$work/empty.env"
# --env-file: the variables set here, not whatever docker/.env a developer has.
docker-compose "${compose_files[@]}" --env-file "$work/empty.env" config > "$work/merged.yaml"
# podman-compose 1.0.3 fails on a service's `networks:` written as a mapping (with aliases,
# which it ignores anyway): give it the list of network names. And it pops "CMD" off a
# health check's list in place, so a service's second replica gets a broken one: give it
# the same command as one shell line.
$PY - "$work/merged.yaml" "$work/compose.yaml" <<'PY'
import shlex, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
for svc in doc["services"].values():
    if isinstance(svc.get("networks"), dict):
        svc["networks"] = list(svc["networks"])
    test = (svc.get("healthcheck") or {}).get("test")
    if isinstance(test, list) and test[0] == "CMD":
        svc["healthcheck"]["test"] = shlex.join(test[1:])
yaml.safe_dump(doc, open(sys.argv[2], "w"), sort_keys=False)
PY
compose() { podman-compose -p "$project" -f "$work/compose.yaml" "$@" >> "$logs/compose.log" 2>&1; }
: > "$logs/compose.log"
healthy() { # healthy CONTAINER TIMEOUT_S: runs the compose health check until it passes
  local end=$(( $(date +%s) + $2 ))
  until podman healthcheck run "$1" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 2
  done
}
exited_ok() { [ "$(podman wait "$1")" = 0 ]; }
t0=$(date +%s)
compose up -d minio rabbitmq redis redis-exporter prometheus || die "compose up: $logs/compose.log"
for s in minio rabbitmq redis redis-exporter prometheus; do
  healthy "${project}_${s}_1" 120 || die "$s not healthy: podman logs ${project}_${s}_1"
done
compose up -d --no-deps init && exited_ok "${project}_init_1" || die "init (buckets): podman logs ${project}_init_1"
compose up -d --no-deps model-init && exited_ok "${project}_model-init_1" \
  || die "model-init: podman logs ${project}_model-init_1"
row "compose: services" ok "minio=moto, rabbitmq, redis, redis-exporter, prometheus healthy; buckets made; model pushed ($(secs_since "$t0") s)"

# Smoke: a worker starts, loads ONNX Runtime from the image, and stops cleanly on SIGTERM.
podman run -d --name fleet-smoke --network "$net" \
  -e SLUICE__AMQP__URL=amqp://sluice:sluice-dev-password@rabbitmq:5672/%2f \
  -e SLUICE__REDIS__URL=redis://redis:6379/ -e SLUICE__S3__ENDPOINT=http://minio:9000 \
  -e SLUICE__S3__FORCE_PATH_STYLE=true -e SLUICE__S3__ACCESS_KEY_ID=$S3_USER \
  -e SLUICE__S3__SECRET_ACCESS_KEY=$S3_SECRET "$SLUICE_IMAGE" worker --pool cpu > /dev/null
for _ in $(seq 60); do
  podman exec fleet-smoke curl -fsS -o /dev/null http://localhost:9464/readyz 2>/dev/null && break
  sleep 1
done
ort=$(podman logs fleet-smoke 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | grep -m1 'ONNX Runtime loaded' \
  | grep -o 'library=[^ ]*' || true)
t0=$(date +%s)
podman stop -t 60 fleet-smoke >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' fleet-smoke)
stop_s=$(secs_since "$t0")
podman logs fleet-smoke > "$logs/smoke-worker.log" 2>&1
podman rm fleet-smoke >/dev/null
if [ -n "$ort" ] && [ "$code" = 0 ]; then
  row "worker smoke" ok "ORT loaded ($ort), ready, SIGTERM -> exit 0 in ${stop_s}s"
else
  row "worker smoke" FAIL "ort='$ort' exit=$code ($logs/smoke-worker.log)"
fi

t0=$(date +%s)
compose up -d --no-deps api worker ingest || die "compose up roles: $logs/compose.log"
healthy "${project}_api_1" 120 || die "api not healthy"
for c in worker_1 worker_2 ingest_1; do healthy "${project}_$c" 120 || die "$c not healthy"; done
row "compose: roles" ok "api, 2 workers, ingest healthy ($(secs_since "$t0") s)"

# ------------------------------------------------------------------------------ jobs
export SLUICE__API__URL=http://127.0.0.1:$SLUICE_API_PORT
s3() { # s3 ARGS...: scripts/s3.py against the stack's published S3 port
  podman run --rm --network host -e "S3_ENDPOINT=http://127.0.0.1:$SLUICE_S3_PORT" \
    -e "AWS_ACCESS_KEY_ID=$S3_USER" -e "AWS_SECRET_ACCESS_KEY=$S3_SECRET" \
    -v "$repo/scripts/s3.py:/opt/s3.py:ro" -v "$work:/work" --entrypoint python \
    localhost/sluice-moto:local /opt/s3.py "$@"
}
rows=${FLEET_ROWS:-8000}
$PY - "$work/input.jsonl" "$rows" <<'PY'
import json, random, sys
random.seed(18)
words = "the a river sluice gate batch model queue worker fast slow bright dark film review plot actor".split()
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        text = " ".join(random.choice(words) for _ in range(random.randint(5, 40)))
        f.write(json.dumps({"id": f"r{i:06d}", "text": text}) + "\n")
PY
chmod 644 "$work/input.jsonl"
s3 put /work/input.jsonl s3://sluice-demo/fleet/input.jsonl

job_spec() { # job_spec NAME: a job over the fleet input, output under fleet/NAME/
  cat > "$work/$1.toml" <<EOF
api_version = "sluice/v1"
kind = "inference"
name = "fleet-$1"
model = "s3://sluice-models/all-minilm-l6-v2/"
task = "embed"
pool = "cpu"

[input]
uri = "s3://sluice-demo/fleet/input.jsonl"
format = "jsonl"
text_field = "text"
id_field = "id"

[output]
uri = "s3://sluice-demo/fleet/$1/"
format = "jsonl"
EOF
  echo "$work/$1.toml"
}
submit() { # submit SPEC: prints the job id
  "$SLUICE" submit "$1" 2>&1 | tee -a "$logs/submit.log" | sed -n 's/.* as job \([^ ]*\).*/\1/p'
}
wait_job() { # wait_job ID TIMEOUT_S: the final JobView in $work/ID.json; 0 on success
  local end=$(( $(date +%s) + $2 ))
  while :; do
    "$SLUICE" status "$1" --json > "$work/$1.json" 2>/dev/null || true
    case $($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$work/$1.json" 2>/dev/null) in
      succeeded) return 0 ;;
      failed|cancelled) return 1 ;;
    esac
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 2
  done
}
rows_done() { "$SLUICE" status "$1" --json 2>/dev/null | $PY -c 'import json,sys; print(json.load(sys.stdin)["progress"]["rows_done"])' 2>/dev/null || echo 0; }
fetch_output() { # fetch_output NAME: the parts the job's manifest lists, concatenated
  s3 cat "s3://sluice-demo/fleet/$1/_manifest.json" > "$work/$1.manifest.json"
  : > "$work/$1.out.jsonl"
  local part
  for part in $($PY -c 'import json, sys; print(*(p["uri"] for p in json.load(open(sys.argv[1]))["parts"]))' \
    "$work/$1.manifest.json"); do
    case $part in s3://*) ;; *) part=s3://sluice-demo/fleet/$1/$part ;; esac
    s3 cat "$part" >> "$work/$1.out.jsonl"
  done
}
exactly_once() { # exactly_once NAME: every input id once in the output
  $PY - "$work/input.jsonl" "$work/$1.out.jsonl" <<'PY'
import json, sys
want = [json.loads(l)["id"] for l in open(sys.argv[1])]
got = [json.loads(l)["id"] for l in open(sys.argv[2])]
dup = len(got) - len(set(got))
missing = len(set(want) - set(got))
print(f"{len(got)} rows for {len(want)} inputs, {dup} duplicates, {missing} missing")
sys.exit(0 if dup == 0 and missing == 0 and len(got) == len(want) else 1)
PY
}
same_output() { # same_output A B: the same row for every id (byte for byte, else the largest difference)
  $PY - "$work/$1.out.jsonl" "$work/$2.out.jsonl" <<'PY'
import json, sys
def load(p):
    return {json.loads(l)["id"]: l.strip() for l in open(p)}
a, b = load(sys.argv[1]), load(sys.argv[2])
if a.keys() != b.keys():
    print(f"different ids: {len(a.keys() ^ b.keys())}"); sys.exit(1)
diff = [k for k in a if a[k] != b[k]]
if not diff:
    print(f"all {len(a)} rows identical"); sys.exit(0)
def vec(line):
    return next(v for v in json.loads(line).values() if isinstance(v, list))
worst = max(max(abs(x - y) for x, y in zip(vec(a[k]), vec(b[k]))) for k in diff)
print(f"{len(diff)} of {len(a)} rows differ, largest difference {worst:.2e}")
sys.exit(0 if worst < 1e-5 else 1)
PY
}

step "compose: a job from the host"
t0=$(date +%s)
id=$(submit "$(job_spec clean)")
[ -n "$id" ] || die "submit: $logs/submit.log"
if wait_job "$id" 900 && fetch_output clean && once=$(exactly_once clean); then
  row "compose: job" ok "$id succeeded in $(secs_since "$t0") s; $once"
else
  row "compose: job" FAIL "$id: $(cat "$work/$id.json" 2>/dev/null | head -c 300)"
fi
jobs_named=$("$SLUICE" jobs --limit 50 2>/dev/null | grep -c 'fleet-clean' || true)
row "compose: exactly one job" "$([ "$jobs_named" = 1 ] && echo ok || echo FAIL)" "sluice jobs lists fleet-clean ${jobs_named} time(s)"

step "compose: Prometheus scrapes every sluice role"
sleep 12
curl -fsS "http://127.0.0.1:$SLUICE_PROMETHEUS_PORT/api/v1/targets" > "$work/targets.json"
scraped=$($PY - "$work/targets.json" <<'PY'
import json, sys, collections
up = collections.Counter()
down = collections.Counter()
for t in json.load(open(sys.argv[1]))["data"]["activeTargets"]:
    (up if t["health"] == "up" else down)[t["labels"]["job"]] += 1
print(" ".join(f"{j}={up[j]}/{up[j] + down[j]}" for j in sorted(set(up) | set(down))))
ok = up["sluice-api"] >= 1 and up["sluice-worker"] >= 2 and up["sluice-ingest"] >= 1 and not any(
    down[j] for j in ("sluice-api", "sluice-worker", "sluice-ingest"))
sys.exit(0 if ok else 1)
PY
) && row "compose: prometheus" ok "targets up: $scraped" || row "compose: prometheus" FAIL "targets: $scraped"

step "compose: a worker killed and restarted mid-job"
t0=$(date +%s)
id=$(submit "$(job_spec killed)")
for _ in $(seq 300); do [ "$(rows_done "$id")" -gt 0 ] && break; sleep 0.5; done
before=$(rows_done "$id")
podman kill -s KILL "${project}_worker_1" >/dev/null
sleep 3
podman start "${project}_worker_1" >/dev/null
if wait_job "$id" 900 && fetch_output killed && once=$(exactly_once killed) && same=$(same_output clean killed); then
  row "compose: kill -9 + restart" ok "killed at ${before} rows done; $once; vs clean run: $same"
else
  row "compose: kill -9 + restart" FAIL "$id: ${once:-} ${same:-} $(head -c 300 "$work/$id.json" 2>/dev/null)"
fi

# ------------------------------------------------------------------------------ kube play
step "kube play: the rendered base against the same services"
compose stop api worker ingest
token=$("$SLUICE" token new --name fleet --scopes submit,read --allow '*' 2> "$work/token.txt")
sed -n '/^\[\[api.tokens\]\]/,$p' "$work/token.txt" | sed 's/^\[\[api.tokens\]\]/[[tokens]]/' > "$work/tokens.toml"
[ -n "$token" ] && grep -q sha256 "$work/tokens.toml" || die "sluice token new: $(cat "$work/token.txt")"
kubectl kustomize deploy/k8s/base > "$work/rendered.yaml"
$PY scripts/fleet_kube.py play "$work/rendered.yaml" "$work/kube.yaml" --image "$SLUICE_IMAGE" \
  --tokens "$work/tokens.toml" --amqp amqp://sluice:sluice-dev-password@rabbitmq:5672/%2f \
  --redis redis://redis:6379/ --s3-endpoint http://minio:9000 --s3-key "$S3_USER" \
  --s3-secret "$S3_SECRET" --host-port-base $((base + 8100)) > "$work/kube-transform.txt"
for f in "$work"/kube.yaml.secret-*.json; do
  name=${f##*.secret-}; name=${name%.json}
  podman secret rm "$name" >/dev/null 2>&1 || true
  podman secret create "$name" "$f" >/dev/null
done
t0=$(date +%s)
podman kube play --network "$net" "$work/kube.yaml" > "$logs/kube-play.log" 2>&1 || die "kube play: $logs/kube-play.log"
# kube play names a Deployment's pod DEPLOYMENT-pod-0 and its containers POD-CONTAINER; the
# address is the pod's (its infra container's) on the stack's network.
pod_ip() {
  local infra
  infra=$(podman pod inspect --format '{{.InfraContainerID}}' "$1-pod-0") &&
    podman inspect --format "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$infra"
}
probes_ok=0 probes_all=0 probe_fail=""
for _ in $(seq 60); do
  probes_ok=0 probes_all=0 probe_fail=""
  while read -r pod container kind port path; do
    probes_all=$((probes_all + 1))
    ip=$(pod_ip "$pod" 2>/dev/null || true)
    if [ -n "$ip" ] && curl -fsS -o /dev/null -m 3 "http://$ip:$port$path"; then
      probes_ok=$((probes_ok + 1))
    else
      probe_fail+=" $pod/$kind:$port$path"
    fi
  done < <($PY scripts/fleet_kube.py probes "$work/kube.yaml")
  [ "$probes_ok" = "$probes_all" ] && break
  sleep 2
done
row "kube play: pods" "$([ "$probes_ok" = "$probes_all" ] && echo ok || echo FAIL)" \
  "api, worker-cpu, ingest; $probes_ok/$probes_all httpGet probes answer on the manifests' ports ($(secs_since "$t0") s)${probe_fail:+; failing:$probe_fail}"

api_ip=$(pod_ip sluice-api)
t0=$(date +%s)
id=$(SLUICE__API__URL=http://$api_ip:8080 SLUICE__API__CLIENT_TOKEN=$token submit "$(job_spec kube)")
if [ -n "$id" ] && SLUICE__API__URL=http://$api_ip:8080 SLUICE__API__CLIENT_TOKEN=$token wait_job "$id" 900 \
  && fetch_output kube && once=$(exactly_once kube) && same=$(same_output clean kube); then
  row "kube play: job via API pod" ok "$id in $(secs_since "$t0") s; $once; vs compose run: $same"
else
  row "kube play: job via API pod" FAIL "id=$id: $(head -c 300 "$work/$id.json" 2>/dev/null) $(tail -3 "$logs/submit.log")"
fi

step "kube down drains the worker within its grace period"
grace=$($PY scripts/fleet_kube.py grace "$work/kube.yaml" | awk '$1 == "sluice-worker-cpu" {print $2}')
stop_timeout=$(podman inspect --format '{{.Config.StopTimeout}}' sluice-worker-cpu-pod-0-worker)
id=$(SLUICE__API__URL=http://$api_ip:8080 SLUICE__API__CLIENT_TOKEN=$token submit "$(job_spec drained)")
# Mid-shard: the worker has leased a shard of this job (a one-shard job shows no rows done
# until it ends, so rows_done cannot say it).
for _ in $(seq 300); do
  podman logs sluice-worker-cpu-pod-0-worker 2>&1 | grep 'shard leased' | grep -q "$id" && break
  sleep 0.5
done
podman logs -f sluice-worker-cpu-pod-0-worker > "$logs/kube-worker.log" 2>&1 &
logs_pid=$!
t0=$(date +%s)
podman kube down "$work/kube.yaml" > "$logs/kube-down.log" 2>&1 || true
down_s=$(secs_since "$t0")
wait "$logs_pid" 2>/dev/null || true
drained=$(grep -cE 'draining|handing the shard back' "$logs/kube-worker.log" || true)
# The job finishes on the compose workers: the handed-back shards must not be lost or doubled.
compose start worker api
healthy "${project}_api_1" 120 || true
if [ "$drained" -gt 0 ] && [ "$down_s" -le "$grace" ] && wait_job "$id" 900 && fetch_output drained \
  && once=$(exactly_once drained); then
  row "kube down: drain" ok "down in ${down_s}s <= grace ${grace}s (podman stop timeout ${stop_timeout}s); worker drained; job finished elsewhere: $once"
else
  row "kube down: drain" FAIL "down ${down_s}s, grace ${grace}s, stop timeout ${stop_timeout}, drain lines ${drained}, job $id ($logs/kube-worker.log)"
fi
rm -f "$work/kube.yaml.down"
row "left to validators" note "$(sed -n 's/^left to the offline validators: //p' "$work/kube-transform.txt" | tr ',' '\n' | sed 's/^ //' | cut -d/ -f1 | sort -u | paste -sd, -): KEDA scaling, Services/DNS, PDB, GPU request; scripts/validate_deploy.sh"

step "done"
print_table
! grep -qP '\tFAIL\t' "$table"
