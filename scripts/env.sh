# Sourced by the scripts: where builds and caches live, and a step heading.
# CARGO_TARGET_DIR sits outside the checkout so fresh clones on the same machine reuse it.
export SLUICE_CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
SLUICE_BIN=$CARGO_TARGET_DIR/debug/sluice
# Benches run the optimised build (`cargo build --release`, profile.release).
SLUICE_RELEASE_BIN=$CARGO_TARGET_DIR/release/sluice
S3_PY=$SLUICE_CACHE/venv-services/bin/python

# `step NAME` prints a heading with the seconds since the script started.
started=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))" >&2; }
