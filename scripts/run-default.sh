#!/usr/bin/env bash
# Set everything up, build, and run ecomap on the shipped defaults:
# rt-config/host.ron (virtual Xavier), policies/reactive.ron (carbon-driven
# power capping + mixed-quality models, replaying the Electricity Maps 2023
# US-CAL-CISO trace from ../shared), workloads/robot-mixed.ron, for 30 s.
# Extra arguments are passed to `ecomap run` (e.g. --duration 60s).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. ./env.sh
cargo build --release --bin ecomap
exec target/release/ecomap run \
    --rt-config rt-config/host.ron \
    --policy policies/reactive.ron \
    --workload workloads/robot-mixed.ron \
    --duration 30s --out out --timeline out/timeline.csv "$@"
