#!/usr/bin/env bash
# Set everything up and run the whole test suite: formatting, lints, the
# libtorch-free build, and every unit, integration and doc test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. ./env.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== build without libtorch (--no-default-features)"
cargo build --workspace --no-default-features
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
echo "== loom: every interleaving of the data plane's lock-free protocols"
# Its own target folder: --cfg loom rebuilds what it touches (a few crates).
RUSTFLAGS="--cfg loom -C debug-assertions" cargo clippy -p ecomap-sync --all-targets --target-dir target/loom -- -D warnings
RUSTFLAGS="--cfg loom -C debug-assertions" cargo test -p ecomap-sync --release --target-dir target/loom --test loom 2>&1 | tee -a "$log"
echo "== ecomap serve against real clients (tritonclient, prometheus_client)"
.venv/bin/python tests/python/test_serve.py target/debug/ecomap 2>&1 | tee -a "$log"
# One closing line over every test binary (cargo prints one per binary,
# the last of which is often an empty doc-test run).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
