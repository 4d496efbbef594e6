#!/usr/bin/env bash
# Set everything up, build, and run ecomap on the shipped defaults:
# rt-config/host.ron, policies/edf.ron, workloads/robot.ron for 20 s.
# Extra arguments are passed to `ecomap run` (e.g. --duration 60s).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. ./env.sh
cargo build --release --bin ecomap
exec target/release/ecomap run \
    --rt-config rt-config/host.ron \
    --policy policies/edf.ron \
    --workload workloads/robot.ron \
    --duration 20s --out out "$@"
