#!/usr/bin/env bash
# Fidelity: the simulator with the host's device description
# (rt-config/devices/host.ron) against `ecomap run` on this host, same
# workload, policy and seed, 60 s each. Prints both summary rows side by
# side. Run on an otherwise idle machine, as root (SCHED_FIFO), after
# `scripts/setup.sh && . ./env.sh && cargo build --release`.
#
# The shared VM's speed drifts by ±25% over hours, so the script first
# re-measures the solo service medians (bench/fidelity/calibrate-host.ron
# on one worker, 40 s) and simulates with host.ron's service times replaced
# by those (out/fidelity/host-now.ron); CALIBRATE=0 uses host.ron as is.
#   bench/fidelity/run.sh [seconds]     (SIM_ONLY=1: re-simulate, keep the measured runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
out=out/fidelity
mkdir -p "$out"
trace=../shared/data/carbon/electricitymaps_2023/US-CAL-CISO_2023_hourly.csv
device=rt-config/devices/host.ron
if [ "${CALIBRATE:-1}" != 0 ] && [ -z "${SIM_ONLY:-}" ]; then
    target/release/ecomap run --rt-config bench/fidelity/one-worker.ron --policy policies/fifo.ron \
        --workload bench/fidelity/calibrate-host.ron --duration 40s --out "$out/calib" >"$out/calib.txt"
fi
if [ "${CALIBRATE:-1}" != 0 ] && [ -d "$out/calib" ]; then
    # host.ron with every cpu_ms replaced by the solo median just measured.
    python3 - "$out/calib" rt-config/devices/host.ron "$out/host-now.ron" <<'PY'
import re, sys, os
calib, src, dst = sys.argv[1:]
def p50(name):
    for line in open(os.path.join(calib, f"{name}.service.hgrm")):
        f = line.split()
        if len(f) == 4 and f[1].startswith("0.5"):
            return float(f[0])
names = {"resnet50": "resnet50", "resnet34": "resnet34", "resnet18": "resnet18",
         "mobilenet_v2": "mobilenet_v2", "mobilenet_v2@160": "mobilenet_v2_160",
         "mobilenet_v2@128": "mobilenet_v2_128", "squeezenet1_1": "squeezenet1_1",
         "MobileNetV2": "mobilenet_v2", "ResNet18": "resnet18", "ResNet34": "resnet34",
         "ResNet50": "resnet50"}
text = open(src).read()
for model, tenant in names.items():
    text = re.sub(r'\(name: "%s", cpu_ms: Some\([0-9.]+\)\)' % re.escape(model),
                  '(name: "%s", cpu_ms: Some(%.1f))' % (model, p50(tenant)), text)
open(dst, "w").write("// host.ron with solo service re-measured just now (bench/fidelity/run.sh)\n" + text)
PY
    device="$out/host-now.ron"
fi
pairs=(
    "policies/edf.ron workloads/robot.ron"
    "policies/quality-only.ron workloads/robot-mixed.ron"
    "bench/fidelity/capped-15w.ron workloads/robot.ron"
)
for pair in "${pairs[@]}"; do
    read -r policy workload <<<"$pair"
    name=$(basename "$policy" .ron)
    if [ -z "${SIM_ONLY:-}" ]; then
    target/release/ecomap run --rt-config rt-config/host.ron --policy "$policy" \
        --workload "$workload" --duration "${secs}s" --out "$out/$name-hgrm" \
        --summary "$out/$name-run.csv" >"$out/$name-run.txt"
    fi
    target/release/ecomap simulate --device "$device" --workload "$workload" \
        --policies "$policy" --traces "$trace" --span 1h --sample "${secs}s" --seed 0 \
        --out "$out/$name-sim" >/dev/null
done
python3 - "$out" <<'PY'
import csv, sys, os
out = sys.argv[1]
cols = ["submitted", "miss_pct", "mean_e2e_ms", "p99_e2e_ms", "energy_j", "accuracy_pct"]
for name in ["edf", "quality-only", "capped-15w"]:
    run = list(csv.DictReader(open(os.path.join(out, f"{name}-run.csv"))))
    sim = list(csv.DictReader(open(os.path.join(out, f"{name}-sim", "summary.csv"))))
    print(f"\n{name}: measured (ecomap run) vs simulated (host device)")
    print(f"{'tenant':<12} " + " ".join(f"{c:>22}" for c in cols))
    for r, s in zip(run, sim):
        cells = []
        for c in cols:
            a, b = float(r[c] or "nan"), float(s[c] or "nan")
            if c == "energy_j":  # run: the whole run; sim: per hour extrapolated
                b = b * float(r["simulated_s"]) / 3600.0
            cells.append(f"{a:>10.2f} / {b:>9.2f}")
        print(f"{r['tenant']:<12} " + " ".join(f"{x:>22}" for x in cells))
        if r["variant_shares"].count("/"):
            print(f"{'':<12} variant shares (heaviest first): measured {r['variant_shares']}, simulated {s['variant_shares']}")
PY
