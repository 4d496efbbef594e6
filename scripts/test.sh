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
cargo test --workspace
