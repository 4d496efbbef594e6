"""Readers shared by bench/fidelity's scripts: the files `ecomap run` and
`ecomap simulate` write (summary CSVs, .hgrm percentile files, reports)
and the numbers of a device description they adjust (RON text)."""
import csv
import re
import sys


def summary_row(path, tenant="all"):
    """One tenant's row (default: the total) of a summary CSV (`ecomap run
    --summary` or `ecomap simulate`'s summary.csv)."""
    return next(r for r in csv.DictReader(open(path)) if r["tenant"] == tenant)


def on_time(r):
    """Percent of a summary row's submitted requests served on time."""
    submitted = float(r["submitted"])
    return 100.0 * float(r["on_time"]) / submitted if submitted > 0 else float("nan")


def e2e(r):
    """A summary row's mean end-to-end latency, ms (nan when empty)."""
    return float(r["mean_e2e_ms"] or "nan")


def hgrm_stats(path):
    """(mean, standard deviation, count) of an .hgrm file (ms); exits with
    a message naming the file when it is not one."""
    try:
        text = open(path).read()
    except OSError as e:
        sys.exit(f"{path}: {e.strerror}; is it in an `ecomap run --out` folder?")
    m = re.search(r"#\[Mean\s*=\s*([0-9.]+), StdDeviation\s*=\s*([0-9.]+)\]", text)
    n = re.search(r"Total count\s*=\s*([0-9]+)\]", text)
    if not (m and n):
        sys.exit(f"{path}: no '#[Mean = …, StdDeviation = …]' or 'Total count' line; "
                 "is it an .hgrm file from ecomap run?")
    return float(m.group(1)), float(m.group(2)), int(n.group(1))


def worker_utilisations(report_path):
    """Each worker's utilisation (0-1), as `ecomap run`'s report prints it."""
    report = open(report_path).read()
    return [float(u) / 100 for u in re.findall(r"^worker \S+ .* utilisation +([0-9.]+)%", report, re.M)]


def cpu_exponent(device_text):
    """The cpu kind's clock exponent of a device description."""
    return float(re.search(r"clock_exponent: \(.*?cpu: ([0-9.]+)\)", device_text).group(1))


def reference_mode(device_text):
    return re.search(r'reference_mode: "([^"]+)"', device_text).group(1)


def cpu_clock_span(device_text, mode):
    """Where a mode's cpu clock sits in the text: a match whose group 2 is
    the clock (MHz)."""
    return re.search(r'(name: "%s".*?clocks_mhz: \(.*?cpu: )([0-9.]+)(\))' % re.escape(mode),
                     device_text, re.S)


def cpu_slowdown(device_text, mode):
    """The simulator's slowdown of a description's CPU workers at `mode`
    (src/device: (f_reference / f_mode)^exponent, the cpu kind's)."""
    clock = lambda name: float(cpu_clock_span(device_text, name).group(2))
    return (clock(reference_mode(device_text)) / clock(mode)) ** cpu_exponent(device_text)


def model_entry(model):
    """A pattern for one CPU-only model entry of a device description, with
    or without its own service_cv."""
    return r'\(name: "%s", cpu_ms: Some\([0-9.]+\)(?:, service_cv: Some\([0-9.]+\))?\)' % re.escape(model)


def set_model(device_text, model, cpu_ms, cv=None, where="device description", digits=2):
    """The text with `model`'s entry set to `cpu_ms` (`digits` decimals)
    and, given `cv`, its own service CV (else none: the kind's figure);
    exits unless exactly one entry names it."""
    entry = '(name: "%s", cpu_ms: Some(%.*f)' % (model, digits, cpu_ms)
    if cv is not None:
        entry += ", service_cv: Some(%.3f)" % cv
    text, n = re.subn(model_entry(model), lambda _: entry + ")", device_text)
    if n != 1:
        sys.exit(f"{where}: expected one cost entry for {model}, found {n}")
    return text
