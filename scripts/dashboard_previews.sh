#!/usr/bin/env bash
# Regenerates dashboards/previews/*.png: starts the services, runs the monitoring test's real
# workload against a Prometheus of its own, and keeps the previews it draws of every
# dashboard.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/services.sh up
eval "$(scripts/assets.sh)"
export SLUICE_TEST_ORT_DYLIB=$ORT_DYLIB_PATH SLUICE_TEST_MODEL_DIR=$MODEL_DIR SLUICE_TEST_L3_DIR=$L3_DIR \
  SLUICE_TEST_RT_CSV=$RT_CSV SLUICE_TEST_NEWS_CSV=$NEWS_CSV SLUICE_TEST_REF_PYTHON=$REF_PYTHON \
  SLUICE_TEST_SERVICES_PYTHON=$S3_PY
mkdir -p dashboards/previews
SLUICE_PREVIEW_DIR="$PWD/dashboards/previews" cargo test --test monitoring -- --nocapture
ls -l dashboards/previews
