#!/usr/bin/env python3
"""Write the host's device description as calibrated just now
(bench/fidelity/run.sh): rt-config/devices/host.ron with

  - every model's cpu_ms replaced by its solo mean service in the
    calibration run at MAXN (--solo DIR, the .service.hgrm files of
    `ecomap run` on bench/fidelity/calibrate-host.ron, one worker);
  - every model's own service_cv set to the same run's StdDeviation /
    Mean of it (--cv variant, the default), or every model's own figure
    dropped, so the description's per-kind service_cv applies to all
    (--cv kind: the host model before session 14);
  - the contention re-measured (--contention DIR: the same workload at 5x
    its rates on both workers; the median over models of (both-busy mean /
    solo mean - 1) / the workers' mean utilisation, the form host.ron's
    figure was fitted in);
  - MODE_15W's cpu clock set to give the measured 15 W stretch (--at-15w
    DIR[,DIR...]: the solo calibration at 15 W; with several folders, e.g.
    one measured before the compared run and one after, each model's mean
    is the mean of theirs), or with --stretch loaded the stretch measured
    with both workers busy (--loaded-15w DIR).

Every figure is a mean: the simulator draws each service from a log-normal
whose *mean* is the description's cost (scaled by the mode's slowdown and
the contention); the solo medians sit 0-4% below (the MobileNets; ResNets
about 0%).

    python3 bench/fidelity/calibrated_device.py --device host.ron --solo DIR --out FILE
        [--cv variant|kind] [--contention DIR] [--at-15w DIR[,DIR...]] [--loaded-15w DIR]
        [--stretch solo|loaded]
"""
import argparse
import os
import re
import statistics
import sys

from fidelity_files import cpu_clock_span, cpu_exponent, cpu_slowdown, hgrm_stats, reference_mode, set_model
from fidelity_files import worker_utilisations as utilisations

# Calibration tenant per model name in the device description.
TENANT_OF_MODEL = {
    "resnet50": "resnet50", "resnet34": "resnet34", "resnet18": "resnet18",
    "mobilenet_v2": "mobilenet_v2", "mobilenet_v2@160": "mobilenet_v2_160",
    "mobilenet_v2@128": "mobilenet_v2_128", "squeezenet1_1": "squeezenet1_1",
    "MobileNetV2": "mobilenet_v2", "ResNet18": "resnet18", "ResNet34": "resnet34",
    "ResNet50": "resnet50",
}
TENANTS = sorted(set(TENANT_OF_MODEL.values()))


def mean(tenant, folder):
    """The HdrHistogram mean of a tenant's service in a calibration run."""
    return hgrm_stats(os.path.join(folder, f"{tenant}.service.hgrm"))[0]


def cv(tenant, folder):
    """StdDeviation / Mean of a tenant's service in a calibration run."""
    m, sd, _ = hgrm_stats(os.path.join(folder, f"{tenant}.service.hgrm"))
    return sd / m


def mean_over(tenant, folders):
    return statistics.mean(mean(tenant, f) for f in folders)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", required=True)
    ap.add_argument("--solo", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--contention")
    ap.add_argument("--at-15w", dest="at_15w")
    ap.add_argument("--loaded-15w", dest="loaded_15w")
    ap.add_argument("--stretch", choices=["solo", "loaded"], default="solo")
    ap.add_argument("--cv", choices=["variant", "kind"], default="variant")
    a = ap.parse_args()

    text = open(a.device).read()
    for model, tenant in TENANT_OF_MODEL.items():
        own_cv = cv(tenant, a.solo) if a.cv == "variant" else None
        text = set_model(text, model, mean(tenant, a.solo), own_cv, where=a.device, digits=1)
    header = "// host.ron with solo mean service re-measured just now (bench/fidelity/run.sh)\n"
    if a.cv == "variant":
        print("service cv per model, solo at the reference mode: "
              + ", ".join(f"{t} {cv(t, a.solo):.3f}" for t in TENANTS))
        header += "// each model's service_cv re-measured just now (solo StdDeviation / Mean)\n"

    if a.contention:
        util = utilisations(a.contention + ".txt")
        ratios = {t: mean(t, a.contention) / mean(t, a.solo) for t in TENANTS}
        u = statistics.mean(util)
        contention = max(0.0, statistics.median((r - 1) / u for r in ratios.values()))
        print(f"contention re-measured: {contention:.3f} (workers {', '.join(f'{x:.0%}' for x in util)} busy; "
              f"both-busy / solo means {', '.join(f'{t} {r:.2f}' for t, r in ratios.items())})")
        text, n = re.subn(r"contention: [0-9.]+,", f"contention: {contention:.3f},", text)
        assert n == 1, "host.ron names one contention"
        header += f"// contention re-measured just now: {contention:.3f}\n"
    else:
        contention = float(re.search(r"contention: ([0-9.]+),", text).group(1))

    if a.at_15w:
        folders = a.at_15w.split(",")
        ratios = {t: mean_over(t, folders) / mean(t, a.solo) for t in TENANTS}
        stretch = statistics.median(ratios.values())
        source = "solo" if len(folders) == 1 else f"solo, mean of {len(folders)} calibrations"
        print(f"15 W stretch, {source}: {stretch:.2f}x "
              f"(solo at 15 W / solo {', '.join(f'{t} {r:.2f}' for t, r in ratios.items())})")
        if len(folders) > 1:
            drift = {t: mean(t, folders[-1]) / mean(t, folders[0]) for t in TENANTS}
            print(f"15 W calibrations, last / first: median {statistics.median(drift.values()):.3f} "
                  f"({', '.join(f'{t} {r:.3f}' for t, r in drift.items())})")
        if a.loaded_15w:
            # Both workers busy at 15 W: service = cost x (slowdown +
            # contention x the other worker's utilisation) under the
            # sleeping throttle.
            u15 = statistics.mean(utilisations(a.loaded_15w + ".txt"))
            loaded = {t: mean(t, a.loaded_15w) / mean(t, a.solo) - contention * u15 for t in TENANTS}
            loaded_stretch = statistics.median(loaded.values())
            print(f"15 W stretch, both workers busy: {loaded_stretch:.2f}x (workers {u15:.0%} busy; "
                  f"{', '.join(f'{t} {r:.2f}' for t, r in loaded.items())})")
            if a.stretch == "loaded":
                stretch, source = loaded_stretch, "both workers busy"
        elif a.stretch == "loaded":
            sys.exit("--stretch loaded: no both-busy 15 W calibration (--loaded-15w)")
        # The cpu kind's exponent and the reference mode's clock (host.ron's
        # workers are CPUs; the simulator's slowdown is (f_ref / f_mode)^exp).
        exponent = cpu_exponent(text)
        maxn = float(cpu_clock_span(text, reference_mode(text)).group(2))
        m = cpu_clock_span(text, "MODE_15W")
        asked = cpu_slowdown(text, "MODE_15W")
        clock = maxn / stretch ** (1 / exponent)
        text = text[:m.start(2)] + f"{clock:.1f}" + text[m.end(2):]
        print(f"15 W stretch used: {stretch:.2f}x, {source} (the throttle asks {asked:.2f}x); "
              f"MODE_15W cpu clock {clock:.1f} MHz")
        header += f"// MODE_15W's stretch re-measured just now ({source}): {stretch:.2f}x\n"
    open(a.out, "w").write(header + text)


if __name__ == "__main__":
    main()
