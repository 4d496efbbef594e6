#!/usr/bin/env bash
# Fidelity: the simulator with the host's device description
# (rt-config/devices/host.ron) against `ecomap run` on this host, same
# workload, policy and seed, 60 s each. Prints both summary rows side by
# side. Run on an otherwise idle machine, as root (SCHED_FIFO), after
# `scripts/setup.sh && . ./env.sh && cargo build --release`.
#
# The shared VM's speed drifts by ±25% over hours, so the script first
# re-measures the solo service means (bench/fidelity/calibrate-host.ron
# on one worker, 40 s) and simulates with host.ron's service times replaced
# by those (out/fidelity/host-now.ron; the simulator's cost is a mean — until
# session 11 the medians went in, 0-4% lower); CALIBRATE=0 uses host.ron as is.
# The contention between the two workers drifts too (the VM's neighbours
# share its memory bandwidth), so it is re-measured the same way: the same
# calibration workload at 5x its rates on both workers (40 s), the
# contention being the median over models of (both-busy service mean /
# solo mean − 1) / the workers' mean utilisation, the form host.ron's
# figure was fitted in at MAXN; CONTENTION=0 keeps host.ron's. And the
# throttle's real stretch at 15 W (capped-15w's mode) drifts from the
# 1.69x it asks for (1.54-1.82x measured in session 10), so it is
# re-measured and MODE_15W's cpu clock in host-now.ron set to give the
# median measured stretch; THROTTLE=0 keeps host.ron's. The measurement is
# the solo calibration again at 15 W (40 s, one worker). STRETCH=loaded
# measures it instead with both workers busy (the contention workload again
# at 15 W, 40 s) and takes (15 W both-busy mean / solo mean) less what the
# contention adds at that run's utilisation (the model's sleep-throttle
# form): session 12 tried it as the default, on the idea that a lone
# worker's throttle sleeps leave its vCPU idle and slow it; it measured
# 1.88x where the solo calibration measured 1.78x and the overloaded run
# served at 1.78x, so the solo stretch stays the default (docs/results.md §6).
# The other modes are not used by the compared runs and stay as they are.
# Last, the same measured runs are simulated with the service times each
# measured itself (bench/fidelity/trace_driven.py; TRACE_DRIVEN=0 skips it):
# with each run's mean and CV per tenant, and replaying each run's pass log
# (`ecomap run --pass-log`, `ecomap simulate --service-replay`) pass by pass.
#   bench/fidelity/run.sh [seconds]     (SIM_ONLY=1: re-simulate, keep the measured runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
out=out/fidelity
case "${STRETCH:-solo}" in
    solo) ;;
    loaded)
        if [ "${THROTTLE:-1}" = 0 ] || [ "${CONTENTION:-1}" = 0 ]; then
            echo "STRETCH=loaded measures the stretch with the contention workload at 15 W: drop THROTTLE=0 / CONTENTION=0" >&2
            exit 2
        fi ;;
    *) echo "STRETCH=$STRETCH: expected 'solo' (the default) or 'loaded'" >&2; exit 2 ;;
esac
mkdir -p "$out"
trace=../shared/data/carbon/electricitymaps_2023/US-CAL-CISO_2023_hourly.csv
device=rt-config/devices/host.ron
if [ "${CALIBRATE:-1}" != 0 ] && [ -z "${SIM_ONLY:-}" ]; then
    target/release/ecomap run --rt-config bench/fidelity/one-worker.ron --policy policies/fifo.ron \
        --workload bench/fidelity/calibrate-host.ron --duration 40s --out "$out/calib" >"$out/calib.txt"
    if [ "${THROTTLE:-1}" != 0 ]; then
        target/release/ecomap run --rt-config bench/fidelity/one-worker-15w.ron \
            --policy bench/fidelity/capped-15w.ron --workload bench/fidelity/calibrate-host.ron \
            --duration 40s --out "$out/calib-15w" >"$out/calib-15w.txt"
    fi
    if [ "${CONTENTION:-1}" != 0 ]; then
        target/release/ecomap run --rt-config rt-config/host.ron --policy policies/fifo.ron \
            --workload bench/fidelity/calibrate-host.ron --load-factor 5 --duration 40s \
            --out "$out/contention" >"$out/contention.txt"
    fi
    if [ "${THROTTLE:-1}" != 0 ] && [ "${CONTENTION:-1}" != 0 ] && [ "${STRETCH:-solo}" = loaded ]; then
        target/release/ecomap run --rt-config rt-config/host.ron --policy bench/fidelity/capped-15w.ron \
            --workload bench/fidelity/calibrate-host.ron --load-factor 5 --duration 40s \
            --out "$out/contention-15w" >"$out/contention-15w.txt"
    fi
fi
if [ "${CALIBRATE:-1}" != 0 ] && [ -d "$out/calib" ]; then
    # host.ron with every cpu_ms replaced by the solo mean just measured.
    contention_dir=""
    if [ "${CONTENTION:-1}" != 0 ] && [ -d "$out/contention" ]; then contention_dir="$out"; fi
    throttle_dir=""
    if [ "${THROTTLE:-1}" != 0 ] && [ -d "$out/calib-15w" ]; then throttle_dir="$out/calib-15w"; fi
    python3 - "$out/calib" rt-config/devices/host.ron "$out/host-now.ron" "$contention_dir" "$throttle_dir" "${STRETCH:-solo}" <<'PY'
import re, sys, os, statistics
calib, src, dst, contention_dir, throttle_dir, stretch_from = sys.argv[1:]
def mean(name, folder=calib):
    # The simulator draws each service from a log-normal with the device
    # description's cost as its *mean* (and scales that mean by the mode's
    # slowdown and the contention), so every figure here is a mean; the
    # solo medians sit 0-4% below (the MobileNets; ResNets about 0%).
    path = os.path.join(folder, f"{name}.service.hgrm")
    for line in open(path):
        if line.startswith("#[Mean"):
            return float(line.split("=")[1].split(",")[0])
    sys.exit(f"{path}: no '#[Mean = ...' line; is it an .hgrm file from ecomap run?")
names = {"resnet50": "resnet50", "resnet34": "resnet34", "resnet18": "resnet18",
         "mobilenet_v2": "mobilenet_v2", "mobilenet_v2@160": "mobilenet_v2_160",
         "mobilenet_v2@128": "mobilenet_v2_128", "squeezenet1_1": "squeezenet1_1",
         "MobileNetV2": "mobilenet_v2", "ResNet18": "resnet18", "ResNet34": "resnet34",
         "ResNet50": "resnet50"}
text = open(src).read()
for model, tenant in names.items():
    text = re.sub(r'\(name: "%s", cpu_ms: Some\([0-9.]+\)\)' % re.escape(model),
                  '(name: "%s", cpu_ms: Some(%.1f))' % (model, mean(tenant)), text)
header = "// host.ron with solo mean service re-measured just now (bench/fidelity/run.sh)\n"
def utilisations(report_path):
    """Each worker's utilisation, as `ecomap run`'s report prints it."""
    report = open(report_path).read()
    return [float(u) / 100 for u in re.findall(r"^worker \S+ .* utilisation +([0-9.]+)%", report, re.M)]
if contention_dir:
    util = utilisations(os.path.join(contention_dir, "contention.txt"))
    tenants = sorted(set(names.values()))
    ratios = {t: mean(t, os.path.join(contention_dir, "contention")) / mean(t) for t in tenants}
    u = statistics.mean(util)
    contention = max(0.0, statistics.median((r - 1) / u for r in ratios.values()))
    print(f"contention re-measured: {contention:.3f} (workers {', '.join(f'{x:.0%}' for x in util)} busy; "
          f"both-busy / solo means {', '.join(f'{t} {r:.2f}' for t, r in ratios.items())})")
    text, n = re.subn(r"contention: [0-9.]+,", f"contention: {contention:.3f},", text)
    assert n == 1, "host.ron names one contention"
    header += f"// contention re-measured just now: {contention:.3f}\n"
else:
    contention = float(re.search(r"contention: ([0-9.]+),", text).group(1))
if throttle_dir:
    tenants = sorted(set(names.values()))
    ratios = {t: mean(t, throttle_dir) / mean(t) for t in tenants}
    solo_stretch = statistics.median(ratios.values())
    print(f"15 W stretch, solo: {solo_stretch:.2f}x "
          f"(solo at 15 W / solo {', '.join(f'{t} {r:.2f}' for t, r in ratios.items())})")
    stretch, source = solo_stretch, "solo"
    loaded_dir = os.path.join(os.path.dirname(throttle_dir), "contention-15w")
    if contention_dir and os.path.isdir(loaded_dir):
        # Both workers busy at 15 W: service = cost x (slowdown + contention
        # x the other worker's utilisation) under the sleeping throttle.
        u15 = statistics.mean(utilisations(loaded_dir + ".txt"))
        loaded = {t: mean(t, loaded_dir) / mean(t) - contention * u15 for t in tenants}
        loaded_stretch = statistics.median(loaded.values())
        print(f"15 W stretch, both workers busy: {loaded_stretch:.2f}x (workers {u15:.0%} busy; "
              f"{', '.join(f'{t} {r:.2f}' for t, r in loaded.items())})")
        if stretch_from == "loaded":
            stretch, source = loaded_stretch, "both workers busy"
    elif stretch_from == "loaded":
        sys.exit("STRETCH=loaded: no both-busy 15 W calibration (it is measured unless CONTENTION=0 or SIM_ONLY=1 without one)")
    # The cpu kind's exponent and the reference mode's clock (host.ron's
    # workers are CPUs; the simulator's slowdown is (f_ref / f_mode)^exp).
    exponent = float(re.search(r"clock_exponent: \(.*?cpu: ([0-9.]+)\)", text).group(1))
    reference = re.search(r'reference_mode: "([^"]+)"', text).group(1)
    maxn = float(re.search(r'name: "%s".*?clocks_mhz: \(.*?cpu: ([0-9.]+)\)' % re.escape(reference), text, re.S).group(1))
    m = re.search(r'(name: "MODE_15W".*?clocks_mhz: \(.*?cpu: )([0-9.]+)(\))', text, re.S)
    asked = (maxn / float(m.group(2))) ** exponent
    clock = maxn / stretch ** (1 / exponent)
    text = text[:m.start(2)] + f"{clock:.1f}" + text[m.end(2):]
    print(f"15 W stretch used: {stretch:.2f}x, {source} (the throttle asks {asked:.2f}x); "
          f"MODE_15W cpu clock {clock:.1f} MHz")
    header += f"// MODE_15W's stretch re-measured just now ({source}): {stretch:.2f}x\n"
open(dst, "w").write(header + text)
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
        --summary "$out/$name-run.csv" --pass-log "$out/$name-passes.csv" >"$out/$name-run.txt"
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
# The same measured runs simulated with the service each measured itself
# (bench/fidelity/trace_driven.py): the simulator's queueing, dispatch and
# accounting checked apart from its prediction of the VM's speed.
# TRACE_DRIVEN=0 skips it.
if [ "${TRACE_DRIVEN:-1}" != 0 ]; then
    python3 bench/fidelity/trace_driven.py "$out" "$device" "$trace" "$secs"
fi
