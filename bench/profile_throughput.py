"""Dataset profiling: validate_file + profile_files against pandas read_csv + describe + histograms + value_counts.

Run from the repository root:

    .venv/bin/python bench/profile_throughput.py [--quick] [--rounds 3] [--shape issue|wide] [--sizes 1000000]

The script writes seeded CSV files to a temporary directory once, then times two ways to profile each file:

- ours: `workers.datasets.validate_file` then `profile_files` (both streaming, as the registration job runs them;
  the two are timed apart too);
- baseline: `pandas.read_csv` of the whole file, `DataFrame.describe()`, `numpy.histogram` (20 bins) of every
  numeric column and `value_counts()` of every text column.

Shapes: "issue" (the default), 16 numeric and 4 text columns, 1,000,000 rows (about 139 MB), the case the profiling
issue measured; "wide", 20 numeric and 3 text columns, at 100,000 and 1,000,000 rows, the earlier benchmark's.
The script checks that both variants found the same figures: rows, every column's missing count, every numeric
column's mean, min and max, the quartiles of the float columns, and each text column's most frequent value.

Both wall seconds and CPU seconds (`time.process_time`, every thread of the child) are reported: on a shared
machine the CPU seconds are the steadier comparison.

Every measurement runs in a fresh Python subprocess, so each has its own peak RSS: `ru_maxrss` from `os.wait4` on
that child alone (`getrusage(RUSAGE_CHILDREN)` would report the largest child so far, not this one). Linux carries
the parent's resident size at fork into the child's `ru_maxrss`, so this parent stays small: it imports neither
numpy nor pandas, and the files are written by a child too. Each child also reports its own `VmHWM`, and the script
warns when the two disagree. Time is measured inside the child around the work only; the interpreter start and
imports are not in it, but they are in the peak RSS, so the imports alone are measured once too. Variants
alternate, and so does which goes first in a round. The temporary directory is removed at the end. It does not
import the Django project.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _children import Children  # bench/_children.py: one measured child at a time
from _table import print_rows  # bench/_table.py: the shared table printer

ROOT = Path(__file__).resolve().parent.parent
BINS = 20
SEED = 20261129
# numeric and text columns per shape, and the default sizes
SHAPES = {"issue": (16, 4, [1_000_000]), "wide": (20, 3, [100_000, 1_000_000])}

VARIANTS = {
    "ours": "validate_file + profile_files",
    "baseline": "read_csv + describe + np.histogram + value_counts",
}


# ---------------------------------------------------------------------------------------------------------------------
# The data


def write_csv(path: Path, rows: int, seed: int, shape: str) -> None:
    """Numeric columns (normal, log-normal, counts, uniform); text with 5, up to 200, ~rows/10 (and 30) values."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    numeric, text, _ = SHAPES[shape]
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for i in range(numeric):
        kind = i % 4
        if kind == 0:
            values = np.round(rng.normal(loc=i * 10.0, scale=1.0 + i, size=rows), 4)
        elif kind == 1:
            values = np.round(rng.lognormal(mean=2.0, sigma=0.8, size=rows), 2)
        elif kind == 2:
            values = rng.poisson(lam=3 + i, size=rows).astype(np.int64)
        else:
            values = np.round(rng.uniform(-1.0, 1.0, size=rows), 6)
        array = pa.array(values)
        if i in (1, 6):
            # About 1% missing: profiles must count them, and a histogram must skip them.
            array = pa.array(values, mask=rng.random(rows) < 0.01)
        columns[f"num_{i:02d}"] = array
    segments = np.array(["retail", "wholesale", "online", "partner", "internal"])
    columns["segment"] = pa.array(segments[rng.choice(5, size=rows, p=[0.4, 0.25, 0.2, 0.1, 0.05])])
    city_index = np.minimum(rng.zipf(1.3, size=rows), 200) - 1
    columns["city"] = pa.array(np.char.add("city_", city_index.astype(str)), mask=rng.random(rows) < 0.02)
    columns["customer"] = pa.array(np.char.add("c", rng.integers(0, max(rows // 10, 1), size=rows).astype(str)))
    if text > 3:
        columns["plan"] = pa.array(np.char.add("plan-", rng.integers(0, 30, size=rows).astype(str)))
    pa_csv.write_csv(pa.table(columns), path)


# ---------------------------------------------------------------------------------------------------------------------
# What runs in the child processes


def child(variant: str, path: Path | None, rows: int | None, shape: str) -> dict[str, Any]:
    report = _child(variant, path, rows, shape)
    report["vmhwm_bytes"] = peak_of_this_process()
    return report


def peak_of_this_process() -> int | None:
    """VmHWM: this process's own high-water resident size, which (unlike ru_maxrss) starts afresh at exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _child(variant: str, path: Path | None, rows: int | None, shape: str) -> dict[str, Any]:
    if variant == "generate":
        assert path is not None and rows is not None
        write_csv(path, rows, SEED, shape)
        return {}
    if variant == "floor-ours":
        import workers.datasets  # noqa: F401 - the imports are the measurement

        return {}
    if variant == "floor-baseline":
        import numpy
        import pandas

        return {"versions": f"pandas {pandas.__version__} · numpy {numpy.__version__}"}
    assert path is not None
    if variant == "ours":
        from workers.datasets import profile_files, validate_file

        cpu = time.process_time()
        start = time.perf_counter()
        summary = validate_file(path, format="csv")
        validated = time.perf_counter()
        cpu_validated = time.process_time()
        profile = profile_files([path], format="csv", bins=BINS)
        done = time.perf_counter()
        cpu_done = time.process_time()
        if summary.row_count != profile["row_count"]:
            raise SystemExit(f"validate_file counted {summary.row_count} rows, profile_files {profile['row_count']}")
        figures = {}
        for name, column in profile["columns"].items():
            entry = {"missing": column["missing"], "numeric": column["kind"] == "numeric"}
            if entry["numeric"]:
                quartiles = column["quantiles"]
                entry.update(mean=column["mean"], min=column["min"], max=column["max"], type=column["type"])
                entry.update(q=[quartiles["p25"], quartiles["p50"], quartiles["p75"]], exact=column["quantiles_exact"])
            else:
                entry.update(top=column["top"][0] if column["top"] else None, capped=column["distinct_capped"])
            figures[name] = entry
        return {
            "seconds": done - start,
            "cpu": cpu_done - cpu,
            "steps": {
                "validate": validated - start,
                "profile": done - validated,
                "profile_cpu": cpu_done - cpu_validated,
            },
            "rows": profile["row_count"],
            "figures": figures,
        }
    if variant == "baseline":
        import numpy as np
        import pandas as pd

        cpu = time.process_time()
        start = time.perf_counter()
        frame = pd.read_csv(path)
        read = time.perf_counter()
        described = frame.describe()
        summarised = time.perf_counter()
        numeric = list(frame.select_dtypes("number").columns)
        histograms = {name: np.histogram(frame[name].dropna().to_numpy(), bins=BINS) for name in numeric}
        histogrammed = time.perf_counter()
        counts = {name: frame[name].value_counts() for name in frame.columns if name not in histograms}
        done = time.perf_counter()
        cpu_done = time.process_time()
        figures = {}
        for name in frame.columns:
            entry: dict[str, Any] = {"missing": int(frame[name].isna().sum()), "numeric": name in histograms}
            if entry["numeric"]:
                stats = described[name]
                entry.update(mean=float(stats["mean"]), min=float(stats["min"]), max=float(stats["max"]))
                entry.update(q=[float(stats["25%"]), float(stats["50%"]), float(stats["75%"])])
            else:
                top = counts[name]
                # value_counts orders ties arbitrarily: every value with the top count (up to 100 of them)
                tied = top[top == top.iloc[0]].index[:100]
                entry.update(top={"count": int(top.iloc[0]), "values": sorted(map(str, tied))})
            figures[name] = entry
        return {
            "seconds": done - start,
            "cpu": cpu_done - cpu,
            "steps": {
                "read_csv": read - start,
                "describe": summarised - read,
                "histogram": histogrammed - summarised,
                "value_counts": done - histogrammed,
            },
            "rows": len(frame),
            "figures": figures,
        }
    raise SystemExit(f"unknown variant {variant!r}")


# ---------------------------------------------------------------------------------------------------------------------
# Running the children


@dataclass
class Sample:
    seconds: float
    peak_bytes: int
    steps: dict[str, float]
    report: dict[str, Any]


class BenchChildren(Children):
    """The bench's children: this script again with `--child`."""

    def __init__(self, tmpdir: Path) -> None:
        super().__init__(tmpdir, cwd=ROOT)

    def measure(
        self, variant: str, path: Path | None, timeout: float, rows: int | None = None, shape: str = "issue"
    ) -> Sample:
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--shape", shape]
        if path is not None:
            argv += ["--file", str(path)]
        if rows is not None:
            argv += ["--rows", str(rows)]
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
        report, peak = self.run(argv, env=env, timeout=timeout, what=f"{variant} on {path}")
        return Sample(report.get("seconds", 0.0), peak, report.get("steps", {}), report)


# ---------------------------------------------------------------------------------------------------------------------
# Output


@dataclass
class Measured:
    rows: int
    size_bytes: int
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {name: [] for name in VARIANTS})

    def seconds(self, variant: str) -> float:
        return statistics.median(s.seconds for s in self.samples[variant])

    def cpu(self, variant: str) -> float:
        return statistics.median(s.report["cpu"] for s in self.samples[variant])

    def peak(self, variant: str) -> float:
        return statistics.median(s.peak_bytes for s in self.samples[variant])

    def step(self, variant: str, name: str) -> float:
        return statistics.median(s.steps[name] for s in self.samples[variant])


def mib(size: float) -> str:
    return f"{size / 2**20:,.0f} MiB"


def print_table(results: list[Measured]) -> None:
    rows: list[tuple[str, ...]] = [("rows", "file", "variant", "seconds", "CPU s", "rows/s", "peak RSS")]
    for m in results:
        for name, label in VARIANTS.items():
            seconds = m.seconds(name)
            rows.append(
                (
                    f"{m.rows:,}",
                    f"{m.size_bytes / 1e6:.0f} MB",
                    label,
                    f"{seconds:.2f}",
                    f"{m.cpu(name):.2f}",
                    f"{m.rows / seconds:,.0f}",
                    mib(m.peak(name)),
                )
            )
        profile, profile_cpu = m.step("ours", "profile"), m.step("ours", "profile_cpu")
        alone = ("profile_files alone", f"{profile:.2f}", f"{profile_cpu:.2f}", f"{m.rows / profile:,.0f}", "")
        rows.append((f"{m.rows:,}", "", *alone))
        rows.append(
            (
                f"{m.rows:,}",
                "",
                "ratio ours/baseline",
                f"{m.seconds('ours') / m.seconds('baseline'):.2f}",
                f"{m.cpu('ours') / m.cpu('baseline'):.2f}",
                f"{m.seconds('baseline') / m.seconds('ours'):.2f}",
                f"{m.peak('ours') / m.peak('baseline'):.2f}",
            )
        )
        rows.append(
            (
                f"{m.rows:,}",
                "",
                "ratio profile_files/baseline",
                f"{profile / m.seconds('baseline'):.2f}",
                f"{profile_cpu / m.cpu('baseline'):.2f}",
                f"{m.seconds('baseline') / profile:.2f}",
                "",
            )
        )
    print_rows(rows)
    print()
    print_rows(
        [("rows", "validate_file", "profile_files", "read_csv", "describe", "np.histogram", "value_counts")]
        + [
            (
                f"{m.rows:,}",
                f"{m.step('ours', 'validate'):.2f}",
                f"{m.step('ours', 'profile'):.2f}",
                f"{m.step('baseline', 'read_csv'):.2f}",
                f"{m.step('baseline', 'describe'):.2f}",
                f"{m.step('baseline', 'histogram'):.2f}",
                f"{m.step('baseline', 'value_counts'):.2f}",
            )
            for m in results
        ]
    )


def check_agreement(m: Measured) -> None:
    """Both variants must have found the same figures, or the timings compare different work."""
    ours, baseline = m.samples["ours"][0].report, m.samples["baseline"][0].report
    problems = []
    if not ours["rows"] == baseline["rows"] == m.rows:
        problems.append(f"rows {ours['rows']} / {baseline['rows']}")
    if list(ours["figures"]) != list(baseline["figures"]):
        problems.append("column names")
    for name, mine in ours["figures"].items():
        theirs = baseline["figures"].get(name)
        if theirs is None:
            continue
        if mine["missing"] != theirs["missing"] or mine["numeric"] != theirs["numeric"]:
            problems.append(f"{name}: missing or kind")
            continue
        if mine["numeric"]:
            for key in ("mean", "min", "max"):
                if not math.isclose(mine[key], theirs[key], rel_tol=1e-9, abs_tol=1e-12):
                    problems.append(f"{name}: {key} {mine[key]} / {theirs[key]}")
            # pandas interpolates linearly; our integer columns take inverted_cdf (a value that occurs), so only
            # the float columns' quartiles compare, exactly when ours are exact, else within a fine bin's width
            if mine["type"] == "float":
                bound = 1e-9 * max(1.0, abs(mine["max"])) if mine["exact"] else (mine["max"] - mine["min"]) / 2_000
                for q_mine, q_theirs in zip(mine["q"], theirs["q"], strict=True):
                    if abs(q_mine - q_theirs) > bound * (1 + 1e-9):
                        problems.append(f"{name}: quartile {q_mine} / {q_theirs}")
        elif mine["capped"]:
            # past the distinct cap our top counts are lower bounds
            if mine["top"]["count"] > theirs["top"]["count"]:
                problems.append(f"{name}: top value {mine['top']} / {theirs['top']}")
        elif mine["top"]["count"] != theirs["top"]["count"] or (
            mine["top"]["value"] not in theirs["top"]["values"] and len(theirs["top"]["values"]) < 100
        ):
            problems.append(f"{name}: top value {mine['top']} / {theirs['top']}")
    if problems:
        raise SystemExit(f"{m.rows:,} rows: the variants disagree: " + "; ".join(problems[:10]))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per file; medians (default 3)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="issue", help="the columns (default issue)")
    parser.add_argument("--sizes", help="rows per generated file, comma-separated (default: the shape's)")
    parser.add_argument("--quick", action="store_true", help="a 100,000-row file only")
    parser.add_argument("--timeout", type=float, default=300, help="seconds any one child may take (default 300)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.file, args.rows, args.shape)))
        return 0

    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    numeric, text, default_sizes = SHAPES[args.shape]
    try:
        sizes = (
            [int(size.replace("_", "")) for size in args.sizes.split(",") if size.strip()]
            if args.sizes
            else default_sizes
        )
    except ValueError:
        parser.error("--sizes: expected comma-separated whole numbers, e.g. 100000,1000000")
    if args.quick:
        sizes = [100_000]
    if not sizes or min(sizes) < 10:
        parser.error("--sizes: give at least one size of 10 rows or more")

    signal.signal(signal.SIGTERM, _interrupt)
    tmpdir = Path(tempfile.mkdtemp(prefix="cp-bench-profile-"))
    children = BenchChildren(tmpdir)
    began = time.monotonic()
    try:
        results = []
        generate_began = time.monotonic()
        for rows in sizes:
            path = tmpdir / f"rows-{rows}.csv"
            children.measure("generate", path, args.timeout, rows=rows, shape=args.shape)
            results.append(Measured(rows, path.stat().st_size))
        generated = time.monotonic() - generate_began

        floor_samples = {name: children.measure(f"floor-{name}", None, args.timeout) for name in VARIANTS}
        floors = {name: sample.peak_bytes for name, sample in floor_samples.items()}
        for m in results:
            path = tmpdir / f"rows-{m.rows}.csv"
            for i in range(args.rounds):
                order = list(VARIANTS) if i % 2 == 0 else list(reversed(VARIANTS))
                for name in order:
                    m.samples[name].append(children.measure(name, path, args.timeout, shape=args.shape))
            check_agreement(m)

        print(
            f"# {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} · python {platform.python_version()} · "
            f"{floor_samples['baseline'].report['versions']} · {os.cpu_count()} cores"
        )
        print(
            f"# CSV, {numeric} numeric + {text} text columns (shape {args.shape}), seed {SEED}; one fresh process "
            f"per measurement; median of {args.rounds} alternating rounds; the figures agree"
        )
        print(
            "# seconds: the work inside the child (imports excluded); peak RSS: the child's ru_maxrss (imports "
            f"included: {mib(floors['ours'])} for ours, {mib(floors['baseline'])} for the baseline, doing nothing)"
        )
        print()
        print_table(results)
        print()
        print(f"# {time.monotonic() - began:.0f} s wall, {generated:.0f} s of it writing the CSV files")
        for sample in [*floor_samples.values(), *(s for m in results for v in m.samples.values() for s in v)]:
            own = sample.report.get("vmhwm_bytes")
            if own and abs(sample.peak_bytes - own) > 0.05 * own:
                print(f"# warning: a child's ru_maxrss {mib(sample.peak_bytes)} differs from its VmHWM {mib(own)}")
                break
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children.stop()
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
