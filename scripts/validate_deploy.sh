#!/usr/bin/env bash
# Offline validation of the deployment files (docker/, deploy/k8s/, .dockerignore): no Docker
# engine, no cluster, only the package registries. Installs its validators once, pinned, into
# ${SLUICE_CACHE:-~/.cache/sluice}/validators (a Python venv and an npm folder; Debian packages
# with apt-get when missing), prints every command it runs, and exits non-zero on any problem.
#
#   scripts/validate_deploy.sh                # validate, then prove each validator still
#                                             # catches a planted error (the self-test)
#   scripts/validate_deploy.sh --no-self-test # validate only
#   scripts/validate_deploy.sh --write-rules  # regenerate deploy/k8s/base/prometheus-rule.yaml
#                                             # from dashboards/prometheus/rules.yml
#
# What each check catches (the self-test at the end plants one such error per check, in a copy
# of the files, and fails if the check lets it through):
#   yamllint        YAML syntax, duplicate keys, indentation, truthy "yes/no" values
#   hadolint        Dockerfile mistakes: unknown instructions, `cd` in RUN, apt without cleanup,
#                   unpinned pip installs, bad shell in RUN (ShellCheck)
#   dockerfiles     COPY of a file that is missing or excluded by .dockerignore (the build
#                   would fail), a COPY --from of no stage, a context that lets target/ or .git
#                   in, an ENV SLUICE__… that is no setting; the helper scripts compile
#   settings        sluice.toml keys that are not fields of src/settings/ (sluice refuses to
#                   start on an unknown field)
#   compose         docker-compose 1.29 schema and interpolation (`config -q`); then policy on
#                   the rendered file: health checks, depends_on conditions, scalable workers
#                   (no container_name/ports), stop_grace_period > shutdown grace, SLUICE__ names,
#                   bind-mount sources and secret files exist, build targets exist, Prometheus
#                   jobs the alert rules need and targets that are compose services
#   promtool        the compose Prometheus config (with the rules file it loads)
#   kustomize       each overlay (and the base) renders: patches apply, files exist
#   k8s schemas     built-in kinds against the Kubernetes 1.30 and 1.37 OpenAPI schemas, strict
#                   (unknown fields fail); a kind with no schema fails unless it is a custom
#                   resource the next check covers
#   crds            KEDA and Prometheus-operator objects against their CRD schemas, unknown
#                   fields and unknown scaler parameters
#   k8s policy      cross-references: Service/PDB/ServiceMonitor selectors match pods, ports and
#                   volumes exist, probes on /readyz and /healthz, non-root and read-only root,
#                   termination grace > shutdown grace, ScaledObject queue and query match the
#                   worker's pool, metrics exist in src/metrics/, Secret keys exist, settings
#                   keys, the PrometheusRule equals dashboards/prometheus/rules.yml
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

self_test=1
case "${1:-}" in
  "") ;;
  --no-self-test) self_test=0 ;;
  --write-rules) write_rules=1 ;;
  *) echo "usage: $0 [--no-self-test | --write-rules]" >&2; exit 2 ;;
esac

validators=$SLUICE_CACHE/validators
venv=$validators/venv
node_dir=$validators/node
spec=deploy/k8s/validators
K8S_VERSIONS=(1.30.0 1.37.0)
RENDERS=(base overlays/dev overlays/production)
SETTINGS_FILES=(docker/sluice.toml deploy/k8s/base/sluice.toml deploy/k8s/overlays/dev/sluice.toml)

run() { printf '+ %s\n' "$*" >&2; "$@"; }
log() { printf '[validate_deploy] %s\n' "$*" >&2; }

# ------------------------------------------------------------------------------ installs
apt_install() { # apt_install PACKAGE...: with daemons kept from starting (as scripts/services.sh)
  [ "$(id -u)" = 0 ] || { log "needs: apt-get install $* (run as root, or install them)"; exit 1; }
  local guard=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    guard=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  log "apt-get install $*"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  if [ "$guard" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}

install() {
  local need=()
  command -v docker-compose >/dev/null || need+=(docker-compose)
  # promtool comes with Debian's prometheus package (the tests install it too).
  command -v promtool >/dev/null || need+=(prometheus)
  command -v node >/dev/null || need+=(nodejs)
  command -v npm >/dev/null || need+=(npm)
  python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
  if ((${#need[@]})); then apt_install "${need[@]}"; fi

  # Reinstalled only when the pinned lists change (their hash is kept beside the install).
  local py_stamp node_stamp
  py_stamp=$(sha256sum "$spec/requirements.txt" | cut -d' ' -f1)
  if [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$py_stamp" ]; then
    log "python validators into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    run "$venv/bin/pip" install -q --disable-pip-version-check -r "$spec/requirements.txt"
    echo "$py_stamp" > "$venv/.stamp"
  fi
  node_stamp=$(cat "$spec/package.json" "$spec/package-lock.json" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$node_dir/.stamp" 2>/dev/null)" != "$node_stamp" ]; then
    log "node validators into $node_dir"
    rm -rf "$node_dir"
    mkdir -p "$node_dir"
    cp "$spec/package.json" "$spec/package-lock.json" "$node_dir/"
    (cd "$node_dir" && run npm ci --no-audit --no-fund --loglevel=error)
    echo "$node_stamp" > "$node_dir/.stamp"
  fi
}

install
export PATH=$venv/bin:$PATH
PY=$venv/bin/python

if [ "${write_rules:-0}" = 1 ]; then
  run "$PY" "$spec/validate-policy.py" write-rules
  exit 0
fi

# ------------------------------------------------------------------------------ checks
# Each check runs in the current directory (the repository, or a copy in the self-test) and
# writes scratch files under $scratch only.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

check_yamllint() {
  run yamllint --strict -c .yamllint.yaml docker deploy .yamllint.yaml
}

check_hadolint() {
  # Every level counts, style included.
  run hadolint --no-color --failure-threshold style docker/Dockerfile docker/Dockerfile.cuda
}

check_dockerfiles() {
  # Syntax of the helper scripts the image stages run (parsed, no __pycache__ left behind).
  run "$PY" -c 'import ast, sys; [ast.parse(open(f).read(), f) for f in sys.argv[1:]]' \
    docker/extract-libs.py docker/extract-model.py
  run "$PY" "$spec/validate-policy.py" dockerfiles
}

check_settings() {
  run "$PY" "$spec/validate-policy.py" settings "${SETTINGS_FILES[@]}"
}

check_compose() {
  # --env-file: the documented example, not whatever docker/.env a developer has.
  run docker-compose -f docker/compose.yaml --env-file "$PWD/docker/.env.example" config -q
  run docker-compose -f docker/compose.yaml --env-file "$PWD/docker/.env.example" config > "$scratch/compose.yaml"
  run "$PY" "$spec/validate-policy.py" compose "$scratch/compose.yaml"
}

check_promtool() {
  # The config names the rules file by its path inside the container; point it at the
  # repository's copy, so promtool loads and checks the rules with the config.
  sed "s#/etc/prometheus/rules/sluice.yml#$PWD/dashboards/prometheus/rules.yml#" \
    docker/prometheus/prometheus.yml > "$scratch/prometheus.yml"
  run promtool check config "$scratch/prometheus.yml"
}

check_k8s() {
  local crd_kinds
  cp "$spec/validate-crds.mjs" "$node_dir/validate-crds.mjs"
  crd_kinds=$(node "$node_dir/validate-crds.mjs" --kinds | awk '{print $2}' | paste -sd'|')
  local r out
  for r in "${RENDERS[@]}"; do
    out=$scratch/$(echo "$r" | tr / -).yaml
    run kubectl kustomize "deploy/k8s/$r" > "$out"
    local args=() v
    for v in "${K8S_VERSIONS[@]}"; do args+=(-k "$v"); done
    # kubernetes-validate only warns (exit 0) on kinds it has no schema for: a misspelt
    # apiVersion would pass. Every such kind must be one validate-crds.mjs checks.
    run kubernetes-validate --strict --quiet "${args[@]}" "$out" > "$scratch/kv.log" || {
      cat "$scratch/kv.log"; return 1; }
    if grep -v -E "^WARN .* Couldn't find schema for kind ($crd_kinds) with api version" "$scratch/kv.log" | grep -q .; then
      cat "$scratch/kv.log"; log "a kind without any schema (see above)"; return 1
    fi
    echo "ok    $out: built-in kinds valid for Kubernetes ${K8S_VERSIONS[*]}"
    run node "$node_dir/validate-crds.mjs" "$out"
    run "$PY" "$spec/validate-policy.py" k8s "$out"
  done
}

# Runs a check with `set -e` in force and leaves its status in $rc. (A function called as an
# `if` condition would run with `set -e` off, and a failed first command could go unnoticed.)
in_dir() { cd "$1" && shift && "$@"; }
attempt() {
  set +e
  ( set -e; "$@" )
  rc=$?
  set -e
}

CHECKS=(yamllint hadolint dockerfiles settings compose promtool k8s)
passed=0
failed=0
for c in "${CHECKS[@]}"; do
  step "check: $c"
  attempt "check_$c"
  if [ "$rc" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); log "FAILED: $c"; fi
done

# ------------------------------------------------------------------------------ self-test
# One planted error per check, each in a fresh copy of the files: the check must fail on it.
# Proves the validators are still strict after an upgrade (and that this script reads their
# verdicts correctly). Each line: check | file | sed expression | what is broken.
MUTATIONS=$(cat <<'EOF'
yamllint|docker/compose.yaml|s/^  minio:/  minio:\n  minio:/|a duplicate service key
hadolint|docker/Dockerfile|s/^WORKDIR \/opt\/sluice/RUN cd \/opt\/sluice/|`cd` inside RUN instead of WORKDIR
dockerfiles|.dockerignore|/^!docker\/extract-model.py/d|a COPY source excluded from the build context
dockerfiles|docker/Dockerfile.cuda|s/SLUICE__WORKER__POOL=gpu/SLUICE__WORKER__POOLS=gpu/|an ENV that is no setting
settings|deploy/k8s/base/sluice.toml|s/^shutdown_grace_secs = 30/shutdown_grace_sec = 30/|a misspelt setting
compose|docker/compose.yaml|s/condition: service_completed_successfully/condition: service_finished/|an invalid depends_on condition
compose|docker/compose.yaml|s/^    stop_grace_period: 60s/    stop_grace_period: 20s/|a stop grace period shorter than the worker's drain
compose|docker/compose.yaml|s/SLUICE__S3__FORCE_PATH_STYLE:/SLUICE__S3__FORCE_PATHSTYLE:/|a SLUICE__ variable that is no setting
compose|docker/compose.yaml|s#\.\./dashboards/prometheus/rules.yml#../dashboards/prometheus/rule.yml#|a bind mount of a file that does not exist
promtool|docker/prometheus/prometheus.yml|s/scrape_interval: 5s/scrape_interval: 5 seconds/|an unparsable duration
k8s|deploy/k8s/overlays/dev/kustomization.yaml|s/name: sluice-worker-gpu/name: sluice-worker-tpu/|a patch that targets nothing
k8s|deploy/k8s/base/worker-cpu.yaml|s/readinessProbe:/readinesProbe:/|an unknown field in a Deployment
k8s|deploy/k8s/base/namespace.yaml|s/^apiVersion: v1/apiVersion: v2/|a kind with no schema (misspelt apiVersion)
k8s|deploy/k8s/base/keda.yaml|s/minReplicaCount: 0/minReplicaCont: 0/|an unknown field in a ScaledObject
k8s|deploy/k8s/base/keda.yaml|s/periodSeconds: 120/periodSeconds: "2m"/|a string where the CRD wants an integer
k8s|deploy/k8s/base/keda.yaml|s/queueName: sluice.inference.gpu/queueName: sluice.inference.cpu/|the GPU pool scaling on the CPU queue
k8s|deploy/k8s/base/keda.yaml|s/max(sluice_backlog_rows{pool="cpu"})/sum(sluice_backlog_rows{pool="cpu"})/|a backlog summed over API replicas
k8s|deploy/k8s/base/worker-gpu.yaml|s/terminationGracePeriodSeconds: 90/terminationGracePeriodSeconds: 30/|a termination grace shorter than the drain
k8s|deploy/k8s/base/monitoring.yaml|s/- port: metrics/- port: metric/|a ServiceMonitor port no Service has
k8s|deploy/k8s/base/secret.yaml|s/  SLUICE__S3__SECRET_ACCESS_KEY:/  SLUICE__S3__SECRET_KEY:/|a Secret key (an env variable by envFrom) that is no setting
k8s|deploy/k8s/base/prometheus-rule.yaml|s/for: 10m/for: 11m/|a PrometheusRule that drifted from rules.yml
k8s|deploy/k8s/base/sluice.toml|s/^serve_metrics = false/serve_metrics = true/|API probes on a port that serves no /readyz
EOF
)

if [ "$self_test" = 1 ] && [ "$failed" = 0 ]; then
  step "self-test: each check must catch a planted error"
  copy=$scratch/copy
  while IFS='|' read -r check file expr what; do
    rm -rf "$copy" && mkdir -p "$copy"
    # What the checks read: the deployment files, the dashboards and the Rust sources they
    # cross-check against.
    cp -r docker deploy dashboards src jobs .dockerignore .yamllint.yaml Cargo.toml Cargo.lock "$copy/"
    before=$(sha256sum "$copy/$file")
    sed -i "$expr" "$copy/$file"
    if [ "$(sha256sum "$copy/$file")" = "$before" ]; then
      log "self-test: '$expr' changed nothing in $file: fix the mutation"; failed=$((failed + 1)); continue
    fi
    attempt in_dir "$copy" "check_$check" > "$scratch/mutant.log" 2>&1
    if [ "$rc" = 0 ]; then
      log "self-test: $check MISSED $what ($file)"; failed=$((failed + 1))
    else
      echo "caught  $check: $what ($file): $(grep -v '^+ ' "$scratch/mutant.log" | grep -m1 -iE 'error|invalid|fail|DL[0-9]|unexpected|without|not ' | cut -c1-150)"
      passed=$((passed + 1))
    fi
  done <<< "$MUTATIONS"
fi

step "done"
echo "validate_deploy: ${passed} passed, ${failed} failed"
[ "$failed" = 0 ]
