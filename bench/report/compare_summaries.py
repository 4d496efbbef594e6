#!/usr/bin/env python3
"""Side by side: two `ecomap simulate` summary.csv files of the same inputs
(e.g. a change and the commit before it), row by row.

    python3 bench/report/compare_summaries.py OLD/summary.csv NEW/summary.csv [--table]

Prints how many rows are identical cell for cell (over the columns both
files have), which columns moved and by how much at most, and with
`--table` a Markdown table of the all-tenant rows that differ:
carbon, CDP, miss % and accuracy, old → new, with the relative change of
carbon and CDP. Power (so energy, carbon, CDP) is MODELLED.
"""
import csv
import sys


def load(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {(r["trace"], r["policy"], r["tenant"]): r for r in rows}


old, new = load(sys.argv[1]), load(sys.argv[2])  # --table: also list the rows
keys = [k for k in new if k in old]
missing = [k for k in new if k not in old] + [k for k in old if k not in new]
shared_columns = [c for c in next(iter(new.values())) if c in next(iter(old.values()))]
same = [k for k in keys if all(old[k][c] == new[k][c] for c in shared_columns)]
print(f"{len(same)} of {len(keys)} rows identical over {len(shared_columns)} columns"
      + (f"; {len(missing)} rows in only one file" if missing else ""))

# Which columns moved, and by how much at most (relative, for numbers).
moved = {}
for k in keys:
    for c in shared_columns:
        a, b = old[k][c], new[k][c]
        if a == b:
            continue
        try:
            x, y = float(a), float(b)
            rel = abs(y - x) / abs(x) if x else float("inf")
        except ValueError:
            rel = float("inf")
        moved[c] = max(moved.get(c, 0.0), rel)
if moved:
    print("\ncolumns that moved (largest relative change over all rows):")
    for c, rel in sorted(moved.items(), key=lambda x: -x[1]):
        print(f"  {c}: {100 * rel:.2g}%")
unmoved = [c for c in shared_columns if c not in moved]
print(f"unchanged in every row: {', '.join(unmoved)}")

differ = [k for k in keys if k not in same and k[2] == "all"]
if differ and "--table" in sys.argv:
    print("\n| trace | policy | carbon g | CDP g·s | miss % | accuracy % |")
    print("|---|---|---:|---:|---:|---:|")
    for k in differ:
        o, n = old[k], new[k]
        f = lambda r, c: float(r[c])
        rel = lambda c: 100.0 * (f(n, c) / f(o, c) - 1.0) if f(o, c) else float("nan")
        print(
            f"| {k[0]} | {k[1]} "
            f"| {f(o,'carbon_g'):.1f} → {f(n,'carbon_g'):.1f} ({rel('carbon_g'):+.3f}%) "
            f"| {f(o,'cdp_g_s'):.1f} → {f(n,'cdp_g_s'):.1f} ({rel('cdp_g_s'):+.3f}%) "
            f"| {f(o,'miss_pct'):.3f} → {f(n,'miss_pct'):.3f} "
            f"| {f(o,'accuracy_pct'):.3f} → {f(n,'accuracy_pct'):.3f} |"
        )
tenant_differ = [k for k in keys if k not in same and k[2] != "all"]
print(f"\n{len(tenant_differ)} tenant rows differ")
