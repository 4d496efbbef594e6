#!/usr/bin/env python3
"""Print bench/fidelity/run.sh's comparison: each configuration's measured
run(s) against its simulation(s).

First, per tenant, the first measured run (OUT/<name>-run.csv) against the
simulation at the run's arrivals and service seed 0 (OUT/<name>-sim).

Then the goal check (on time within 2 points, mean e2e within 10%), with
the noise of both sides shown rather than hidden in one pair:
  - measured: every repeat of the run (OUT/<name>-run.csv, then
    OUT/<name>-r2-run.csv, ... when run.sh had REPEAT > 1), their mean and
    range; same arrivals each time, so the spread is the machine's;
  - simulated: the same arrivals under every service seed run.sh drew
    (OUT/<name>-sim and OUT/<name>-sim-seeds/<k>), their mean and range;
    the spread is the device model's own sampling noise over the window;
  - where run.sh calibrated 15 W before each run and after the last
    (BRACKET), each run against the simulation with the mean of the two
    calibrations around it (OUT/<run>-bracket-sim[-seeds]), and the mean
    of those errors; an older folder, with one calibration before all the
    runs and one after, has one such simulation (OUT/<name>-bracket-sim).
The error the goal is judged on is simulated mean − measured mean.
Beside each run and calibration, the share of CPU time the hypervisor gave
to other guests while it served (the `host:` line of its report,
OUT/<run>-run.txt or OUT/<calibration>.txt; from session 13 on).

    python3 bench/fidelity/compare.py OUT NAME...
"""
import csv
import glob
import os
import re
import statistics
import sys

from fidelity_files import e2e, on_time
from fidelity_files import summary_row as overall

COLS = ["submitted", "miss_pct", "mean_e2e_ms", "p99_e2e_ms", "energy_j", "accuracy_pct"]


def rows(path):
    return list(csv.DictReader(open(path)))


def per_tenant(out, name):
    run = rows(os.path.join(out, f"{name}-run.csv"))
    sim = rows(os.path.join(out, f"{name}-sim", "summary.csv"))
    print(f"\n{name}: measured (ecomap run) vs simulated (host device)")
    print(f"{'tenant':<12} " + " ".join(f"{c:>22}" for c in COLS))
    for r, s in zip(run, sim):
        cells = []
        for c in COLS:
            a, b = float(r[c] or "nan"), float(s[c] or "nan")
            if c == "energy_j":  # run: the whole run; sim: per hour extrapolated
                b = b * float(r["simulated_s"]) / 3600.0
            cells.append(f"{a:>10.2f} / {b:>9.2f}")
        print(f"{r['tenant']:<12} " + " ".join(f"{x:>22}" for x in cells))
        if r["variant_shares"].count("/"):
            print(f"{'':<12} variant shares (heaviest first): measured {r['variant_shares']}, "
                  f"simulated {s['variant_shares']}")


def repeat_index(path):
    m = re.search(r"-r([0-9]+)-run\.csv$", path)
    return int(m.group(1)) if m else 1


def spread(values, fmt):
    if len(values) == 1:
        return fmt.format(values[0])
    return (fmt.format(statistics.mean(values)) + " (" + ", ".join(fmt.format(v) for v in values) + ")"
            if len(values) <= 4 else
            fmt.format(statistics.mean(values)) + f" [{fmt.format(min(values))} – {fmt.format(max(values))}]")


# The runtime's report warns from this much stolen CPU time on
# (src/report.rs, STEAL_WORTH_A_WARNING).
DISTURBED_PCT = 2.0


def mark(steal):
    return "*" if steal >= DISTURBED_PCT else ""


def steal_pct(report):
    """The share (%) of CPU time the hypervisor gave to other guests while a
    run served, from its report (None for older folders, or without one)."""
    try:
        m = re.search(r"^host: ([0-9.]+)% of the CPU time stolen", open(report).read(), re.M)
    except FileNotFoundError:
        return None
    return float(m.group(1)) if m else None


def simulated(out, name, kind):
    first = os.path.join(out, f"{name}-{kind}", "summary.csv")
    if not os.path.exists(first):
        return []
    seeds = sorted(glob.glob(os.path.join(out, f"{name}-{kind}-seeds", "*", "summary.csv")),
                   key=lambda p: int(os.path.basename(os.path.dirname(p))))
    return [overall(p) for p in [first, *seeds]]


def goal(out, name):
    runs = sorted(glob.glob(os.path.join(out, f"{name}-run.csv")) +
                  glob.glob(os.path.join(out, f"{name}-r[0-9]*-run.csv")), key=repeat_index)
    measured = [overall(p) for p in runs]
    m_on, m_e2e = [on_time(r) for r in measured], [e2e(r) for r in measured]
    print(f"{name}: measured, {len(measured)} run(s): on time {spread(m_on, '{:.2f}')}%, "
          f"mean e2e {spread(m_e2e, '{:.1f}')} ms")
    steal = [steal_pct(p[: -len(".csv")] + ".txt") for p in runs]
    if all(s is not None for s in steal):
        print(f"  CPU time stolen by the hypervisor during each run: "
              + ", ".join(f"{s:.2f}%{mark(s)}" for s in steal))
    sims = simulated(out, name, "sim")
    if sims:
        s_on, s_e2e = [on_time(r) for r in sims], [e2e(r) for r in sims]
        d_on = statistics.mean(s_on) - statistics.mean(m_on)
        d_e2e = 100 * (statistics.mean(s_e2e) / statistics.mean(m_e2e) - 1)
        print(f"  predictive, {len(sims)} service seed(s): on time {statistics.mean(s_on):.2f}% "
              f"[{min(s_on):.2f} – {max(s_on):.2f}], mean e2e {statistics.mean(s_e2e):.1f} ms "
              f"[{min(s_e2e):.1f} – {max(s_e2e):.1f}]; sim − run {d_on:+.2f} pts, {d_e2e:+.1f}%: "
              f"{verdict(d_on, d_e2e)}"
              + (f" (run by run: mean |error| {statistics.mean(abs(statistics.mean(s_on) - x) for x in m_on):.2f} pts)"
                 if len(m_on) > 1 else ""))
    # Each run against the simulation calibrated just before and just after
    # it (run.sh's BRACKET), or, in an older folder, before and after all.
    tags = [os.path.basename(p)[: -len("-run.csv")] for p in runs]
    bracketed = [simulated(out, t, "bracket-sim") for t in tags]
    if not any(bracketed[1:]):
        # An older folder: one bracket around all the runs, under the name.
        bracketed = [bracketed[0]] * len(tags)
    if all(bracketed):
        errors_on, errors_e2e = [], []
        for tag, run, b in zip(tags, measured, bracketed):
            b_on, b_e2e = statistics.mean(on_time(r) for r in b), statistics.mean(e2e(r) for r in b)
            errors_on.append(b_on - on_time(run))
            errors_e2e.append(100 * (b_e2e / e2e(run) - 1))
            print(f"  {tag}: measured {on_time(run):.2f}%, {e2e(run):.1f} ms; bracketed 15 W calibration, "
                  f"{len(b)} service seed(s): {b_on:.2f}% [{min(on_time(r) for r in b):.2f} – "
                  f"{max(on_time(r) for r in b):.2f}], {b_e2e:.1f} ms; sim − run {errors_on[-1]:+.2f} pts, "
                  f"{errors_e2e[-1]:+.1f}%")
        d_on, d_e2e = statistics.mean(errors_on), statistics.mean(errors_e2e)
        print(f"  bracketed, over the {len(tags)} run(s): sim − run {d_on:+.2f} pts, {d_e2e:+.1f}% "
              f"(mean |error| {statistics.mean(abs(e) for e in errors_on):.2f} pts, "
              f"{statistics.mean(abs(e) for e in errors_e2e):.1f}%): {verdict(d_on, d_e2e)}")


def verdict(d_on, d_e2e):
    return ("met" if abs(d_on) <= 2 and abs(d_e2e) <= 10 else
            "on-time missed" if abs(d_e2e) <= 10 else
            "mean e2e missed" if abs(d_on) <= 2 else "both missed")


def main():
    out, names = sys.argv[1], sys.argv[2:]
    for name in names:
        per_tenant(out, name)
    repeats = sorted(int(m.group(1)) for p in glob.glob(os.path.join(out, "calib-15w-r*.txt"))
                     if (m := re.search(r"calib-15w-r([0-9]+)\.txt$", p)))
    order = ["calib", "contention", "calib-15w", "contention-15w",
             *[f"calib-15w-r{i}" for i in repeats], "calib-15w-after"]
    calibrations = [(c, steal_pct(os.path.join(out, f"{c}.txt"))) for c in order]
    if any(s is not None for _, s in calibrations):
        print("\nCPU time stolen by the hypervisor during each calibration, in the order they ran: "
              + ", ".join(f"{c} {s:.2f}%{mark(s)}" for c, s in calibrations if s is not None)
              + f" (* at least {DISTURBED_PCT}%: the report says the passes were slower for it)")
    print("\nthe goal (on time within 2 points, mean e2e within 10%), means over repeats and service seeds:")
    for name in names:
        goal(out, name)


if __name__ == "__main__":
    main()
