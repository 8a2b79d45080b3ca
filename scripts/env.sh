# Sourced by the scripts: where builds and caches live, and the asset paths.
# CARGO_TARGET_DIR sits outside the checkout so fresh clones on the same machine reuse it.
export SLUICE_CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
SLUICE_BIN=$CARGO_TARGET_DIR/debug/sluice
S3_PY=$SLUICE_CACHE/venv-services/bin/python
