#!/usr/bin/env python3
"""Trace-driven check of the simulator's queueing: each measured run of
bench/fidelity/run.sh simulated again with the service times *that run*
measured, so only the simulator's arrivals, EDF dispatch, shedding,
expiry and accounting are compared — not the device model's prediction of
how fast the VM is that minute.

For each configuration whose tenants each serve one model (`edf`,
`capped-15w` on workloads/robot.ron; `quality-only` switches variants, and
the runtime records service per tenant, not per variant, so it is left
out), it writes OUT/<name>-trace.ron: the device description run.sh
simulated with (OUT/host-now.ron, or host.ron), with
  - each tenant's model cost set to the run's mean service of that tenant
    (HdrHistogram `Mean` of <name>-hgrm/<tenant>.service.hgrm) divided by
    the mode's slowdown (the simulator multiplies it back; its service
    draws have that mean),
  - contention 0 (the measured service already includes it),
  - each tenant's model given its own service_cv: the run's
    StdDeviation / Mean of that tenant's service (until session 14 the
    description had one figure per unit kind, and this check used the
    tenants' mean weighted by how many requests each served),
then runs `ecomap simulate` with it and prints on time % and mean e2e:
measured / predictive simulation (run.sh's) / trace-driven simulation.

Then, where run.sh kept each run's pass log (OUT/<name>-passes.csv,
`ecomap run --pass-log`), every configuration — `quality-only` too — is
simulated twice more replaying that run's passes (`ecomap simulate
--service-replay`): per tenant and variant in start order (`--replay-by
order`: the measured service with its slow stretches, its shape and its
pass-to-pass correlation, not just its mean and CV), and by the time each
pass ran (`--replay-by time`: a slow stretch then hits every tenant at
once, as it did in the run).

Last, it prints what each pass log says of the machine's speed over the
run (see `pass_log_stats`).

These are diagnostics, not the fidelity goal: the goal asks the simulator
to predict a run from the device description; here the service is taken
from the run itself.

    python3 bench/fidelity/trace_driven.py OUT DEVICE TRACE SECONDS
"""
import csv
import os
import re
import subprocess
import sys

from fidelity_files import cpu_slowdown, e2e, hgrm_stats, on_time, set_model
from fidelity_files import summary_row as row

out, device, trace, secs = sys.argv[1:]

# robot.ron's tenants and the model names the device description uses.
MODELS = {"detector": "MobileNetV2", "segmenter": "ResNet18", "classifier": "ResNet50"}
CONFIGS = [
    ("edf", "policies/edf.ron", "MAXN"),
    ("capped-15w", "bench/fidelity/capped-15w.ron", "MODE_15W"),
]


def mean_std_count(path):
    """A run's service (mean, std, count) from its .hgrm file; None if absent."""
    if not os.path.exists(path):
        return None
    mean, std, count = hgrm_stats(path)
    if not (mean > 0 and count > 0):
        sys.exit(f"{path}: no service recorded (mean {mean}, count {count})")
    return mean, std, count


def simulate(device_file, workload, policy, sim_dir, *extra):
    """`ecomap simulate` of one configuration over the runs' window."""
    subprocess.run(
        ["target/release/ecomap", "simulate", "--device", device_file, "--workload", workload,
         "--policies", policy, "--traces", trace, "--span", "1h", "--sample", f"{secs}s",
         "--seed", "0", "--out", sim_dir, *extra],
        check=True, stdout=subprocess.DEVNULL,
    )


def compared(name, width, r, p, t):
    """On time and mean e2e: measured / predictive / this check, and the gaps."""
    return (f"{name:<{width}} on time {on_time(r):6.2f} / {on_time(p):6.2f} / {on_time(t):6.2f} %"
            f" ({on_time(p) - on_time(r):+.2f} / {on_time(t) - on_time(r):+.2f} pts);"
            f" mean e2e {e2e(r):6.1f} / {e2e(p):6.1f} / {e2e(t):6.1f} ms"
            f" ({100 * (e2e(p) / e2e(r) - 1):+.1f} / {100 * (e2e(t) / e2e(r) - 1):+.1f}%)")


def accuracy(r):
    a = float(r["accuracy_pct"] or "nan")
    return "-" if a != a else f"{a:.2f}"


base = open(device).read()
print("\ntrace-driven (service from each run itself): on time % and mean e2e ms, "
      "measured / predictive sim / trace-driven sim")
for name, policy, mode in CONFIGS:
    hgrm = os.path.join(out, f"{name}-hgrm")
    run_csv = os.path.join(out, f"{name}-run.csv")
    if not (os.path.isdir(hgrm) and os.path.exists(run_csv)):
        print(f"{name}: no measured run in {out}; skipped")
        continue
    text = base
    cvs = {}
    stretch = cpu_slowdown(text, mode)
    stats = {t: mean_std_count(os.path.join(hgrm, f"{t}.service.hgrm")) for t in MODELS}
    if any(v is None for v in stats.values()):
        print(f"{name}: {hgrm} lacks a tenant's .service.hgrm; skipped")
        continue
    for tenant, model in MODELS.items():
        mean, std, _ = stats[tenant]
        cvs[tenant] = std / mean
        text = set_model(text, model, mean / stretch, cvs[tenant], where=device)
    text, n = re.subn(r"contention: [0-9.]+,", "contention: 0.0,", text)
    if n != 1:
        sys.exit(f"{device}: expected one contention line, found {n}")
    dst = os.path.join(out, f"{name}-trace.ron")
    open(dst, "w").write(f"// {device} with the service measured in {run_csv} (trace_driven.py)\n" + text)
    sim_dir = os.path.join(out, f"{name}-trace-sim")
    simulate(dst, "workloads/robot.ron", policy, sim_dir)
    r = row(run_csv)
    p = row(os.path.join(out, f"{name}-sim", "summary.csv"))
    t = row(os.path.join(sim_dir, "summary.csv"))
    print(compared(name, 11, r, p, t) + "; service cv "
          + ", ".join(f"{tenant} {c:.3f}" for tenant, c in cvs.items()))


REPLAYED = [
    ("edf", "policies/edf.ron", "workloads/robot.ron"),
    ("quality-only", "policies/quality-only.ron", "workloads/robot-mixed.ron"),
    ("capped-15w", "bench/fidelity/capped-15w.ron", "workloads/robot.ron"),
]
for by in ["order", "time"]:
    printed = False
    for name, policy, workload in REPLAYED:
        passes = os.path.join(out, f"{name}-passes.csv")
        run_csv = os.path.join(out, f"{name}-run.csv")
        if not (os.path.exists(passes) and os.path.exists(run_csv)):
            continue
        if not printed:
            print(f"\nreplayed (each run's own passes, --replay-by {by}): on time % and mean e2e ms, "
                  "measured / predictive sim / replayed sim")
            printed = True
        sim_dir = os.path.join(out, f"{name}-replay-{by}-sim")
        simulate(device, workload, policy, sim_dir, "--service-replay", passes, "--replay-by", by)
        r = row(run_csv)
        p = row(os.path.join(out, f"{name}-sim", "summary.csv"))
        t = row(os.path.join(sim_dir, "summary.csv"))
        print(compared(name, 12, r, p, t) + f"; accuracy {' / '.join(accuracy(x) for x in (r, p, t))} %")
        # Variant shares per tenant (the `all` row has none).
        for tenant in [x["tenant"] for x in csv.DictReader(open(run_csv)) if x["tenant"] != "all"]:
            shares = [row(f, tenant)["variant_shares"] for f in
                      (run_csv, os.path.join(out, f"{name}-sim", "summary.csv"), os.path.join(sim_dir, "summary.csv"))]
            if shares[0].count("/"):
                print(f"{'':<12} {tenant} variant shares (heaviest first) {' / '.join(shares)}")


def pass_log_stats(path):
    """What a pass log says of the machine's speed (docs/results.md §6):
    the time a worker with work waiting took to start its next pass, and
    each pass's service over its tenant's variant's mean in the run,
    averaged per second of the run — its CV (against the same passes
    shuffled in time, seeded), its autocorrelation at 1 s, and how the two
    workers' per-second speeds correlate."""
    import random
    import statistics as st
    passes = [x for x in csv.DictReader(open(path)) if x["outcome"] != "failed"]
    by_worker = {}
    for x in passes:
        by_worker.setdefault(x["worker"], []).append(x)
    gaps = []
    for rows in by_worker.values():
        rows.sort(key=lambda x: int(x["started_us"]))
        gaps += [int(b["started_us"]) - int(a["finished_us"]) for a, b in zip(rows, rows[1:])
                 if int(b["release_us"]) <= int(a["finished_us"])]
    by_variant = {}
    for x in passes:
        by_variant.setdefault((x["tenant"], x["variant"]), []).append(int(x["service_us"]))
    mean = {k: st.mean(v) for k, v in by_variant.items()}
    t0 = min(int(x["started_us"]) for x in passes)
    second = [(int(x["started_us"]) - t0) // 1_000_000 for x in passes]
    ratio = [int(x["service_us"]) / mean[(x["tenant"], x["variant"])] for x in passes]

    def per_second(ratios, key=lambda i: second[i]):
        bins = {}
        for i, q in enumerate(ratios):
            bins.setdefault(key(i), []).append(q)
        return {k: st.mean(v) for k, v in bins.items()}

    def cv(series):
        return st.pstdev(series) / st.mean(series)

    def corr(a, b):
        return st.correlation(a, b) if len(a) > 2 and st.pstdev(a) and st.pstdev(b) else float("nan")

    speed = per_second(ratio)
    seconds = sorted(speed)
    series = [speed[k] for k in seconds]
    shuffled = ratio[:]
    random.Random(0).shuffle(shuffled)
    workers = sorted(by_worker)
    per_worker = [per_second(ratio, key=lambda i, w=w: (second[i], passes[i]["worker"] == w)) for w in workers]
    both = [s for s in seconds if all((s, True) in pw for pw in per_worker)]
    worker_corr = corr([per_worker[0][(s, True)] for s in both], [per_worker[-1][(s, True)] for s in both]) \
        if len(workers) > 1 else float("nan")
    gaps.sort()
    gap = (f"gap before a waiting pass {st.mean(gaps):.0f} µs mean, {gaps[int(0.99 * (len(gaps) - 1))]} µs p99; "
           if gaps else "")
    return (f"{gap}per-second speed cv {cv(series):.3f} (shuffled {cv(list(per_second(shuffled).values())):.3f}), "
            f"autocorrelation at 1 s {corr(series[:-1], series[1:]):.2f}, workers' correlation {worker_corr:.2f}")


printed = False
for name, _, _ in REPLAYED:
    passes = os.path.join(out, f"{name}-passes.csv")
    if os.path.exists(passes):
        if not printed:
            print("\nthe pass logs: the machine's speed over each run")
            printed = True
        print(f"{name:<12} {pass_log_stats(passes)}")
