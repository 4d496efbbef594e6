#!/usr/bin/env python3
"""Issue 9's simulator targets from an `ecomap simulate` summary.csv:
per trace, the planner (`ecomap`) against the reactive-only policy, the
analytic-estimator ablation and the oracle.

    python3 bench/report/planner_table.py out/year2023/summary.csv
"""
import csv
import statistics
import sys


def main(path):
    rows = [r for r in csv.DictReader(open(path)) if r["tenant"] == "all"]
    by = {}
    for r in rows:
        by.setdefault(r["trace"], {})[r["policy"]] = r
    f = lambda r, k: float(r[k])
    print("| trace | reactive carbon g / acc lost | ecomap carbon g / acc lost | Δcarbon vs reactive | lost ratio ecomap/reactive | ecomap miss % | ecomap vs oracle carbon | ecomap-analytic carbon g / acc lost | CDP ecomap vs reactive |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    agg = {k: [] for k in ["dc", "ratio", "miss", "oracle", "cdp"]}
    for trace, p in sorted(by.items()):
        mp, re, ec = p["max-perf"], p["reactive"], p["ecomap"]
        lr = f(mp, "accuracy_pct") - f(re, "accuracy_pct")
        le = f(mp, "accuracy_pct") - f(ec, "accuracy_pct")
        dc = 100 * (f(ec, "carbon_g") / f(re, "carbon_g") - 1)
        ratio = le / lr if lr > 0 else float("nan")
        orc = 100 * (f(ec, "carbon_g") / f(p["oracle"], "carbon_g") - 1) if "oracle" in p else float("nan")
        cdp = 100 * (f(ec, "cdp_g_s") / f(re, "cdp_g_s") - 1)
        an = p.get("ecomap-analytic")
        an_s = f"{f(an, 'carbon_g'):.0f} / {f(mp, 'accuracy_pct') - f(an, 'accuracy_pct'):.2f}" if an else "–"
        print(f"| {trace.replace('_2023_hourly', '')} | {f(re, 'carbon_g'):.0f} / {lr:.2f} | {f(ec, 'carbon_g'):.0f} / {le:.2f} | {dc:+.1f}% | {ratio:.2f} | {f(ec, 'miss_pct'):.2f} | {orc:+.1f}% | {an_s} | {cdp:+.1f}% |")
        for k, v in zip(agg, [dc, ratio, f(ec, "miss_pct"), orc, cdp]):
            agg[k].append(v)
    print()
    print("medians: " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in agg.items()))
    print("ranges: " + ", ".join(f"{k} {min(v):.2f}…{max(v):.2f}" for k, v in agg.items()))


if __name__ == "__main__":
    main(sys.argv[1])
