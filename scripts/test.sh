#!/usr/bin/env bash
# Set everything up and run the whole test suite: formatting, lints, the
# libtorch-free build and its tests, and every unit, integration and doc
# test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. ./env.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo clippy -D warnings, without libtorch (--no-default-features)"
cargo clippy --workspace --all-targets --no-default-features -- -D warnings
log=$(mktemp)
notch_log=$(mktemp)
trap 'rm -f "$log" "$notch_log"' EXIT
echo "== cargo test without libtorch (--no-default-features)"
# The libtorch-free build must work, and its refusals (a real model, a
# trained estimator: exit 2, named) are tested where they happen.
cargo test --workspace --no-default-features 2>&1 | tee "$notch_log"
echo "== cargo test"
# Runs after the libtorch-free tests on purpose: it links target/debug/ecomap
# last, with libtorch, which the real-client test below needs.
cargo test --workspace 2>&1 | tee "$log"
echo "== loom: every interleaving of the data plane's lock-free protocols"
# Its own target folder: --cfg loom rebuilds what it touches (a few crates).
RUSTFLAGS="--cfg loom -C debug-assertions" cargo clippy -p ecomap-sync --all-targets --target-dir target/loom -- -D warnings
RUSTFLAGS="--cfg loom -C debug-assertions" cargo test -p ecomap-sync --release --target-dir target/loom --test loom 2>&1 | tee -a "$log"
echo "== ecomap serve against real clients (tritonclient, prometheus_client)"
.venv/bin/python tests/python/test_serve.py target/debug/ecomap 2>&1 | tee -a "$log"
# Closing lines over every test binary (cargo prints one per binary, the
# last of which is often an empty doc-test run): the full suite, then the
# libtorch-free pass (mostly the same tests again, counted apart).
tally() {
    awk -v what="$1" '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
         END { printf "%s: %d passed, %d failed\n", what, p, f }' "$2"
}
tally "tests without libtorch" "$notch_log"
tally "tests" "$log"
