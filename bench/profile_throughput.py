"""Dataset profiling: validate_file + profile_files against pandas read_csv + describe + numpy.histogram.

Run from the repository root:

    .venv/bin/python bench/profile_throughput.py [--quick] [--rounds 3] [--sizes 100000,1000000]

The script writes seeded CSV files (20 numeric and 3 categorical columns, a few missing values) to a temporary
directory once, then times two ways to profile each file:

- ours: `workers.datasets.validate_file` then `profile_files` (both streaming, as the registration job runs them);
- baseline: `pandas.read_csv` of the whole file, `DataFrame.describe(include="all")`, and `numpy.histogram`
  (20 bins) of every numeric column.

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
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _table import print_rows  # bench/_table.py: the shared table printer

ROOT = Path(__file__).resolve().parent.parent
BINS = 20
NUMERIC_COLUMNS = 20
SEED = 20261129

VARIANTS = {
    "ours": "validate_file + profile_files",
    "baseline": "read_csv + describe(all) + np.histogram",
}


# ---------------------------------------------------------------------------------------------------------------------
# The data


def write_csv(path: Path, rows: int, seed: int) -> None:
    """20 numeric columns (normal, log-normal, counts, uniform) and 3 categorical (5, 200 and ~rows/10 values)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for i in range(NUMERIC_COLUMNS):
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
    pa_csv.write_csv(pa.table(columns), path)


# ---------------------------------------------------------------------------------------------------------------------
# What runs in the child processes


def child(variant: str, path: Path | None, rows: int | None) -> dict[str, Any]:
    report = _child(variant, path, rows)
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


def _child(variant: str, path: Path | None, rows: int | None) -> dict[str, Any]:
    if variant == "generate":
        assert path is not None and rows is not None
        write_csv(path, rows, SEED)
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

        start = time.perf_counter()
        summary = validate_file(path, format="csv")
        validated = time.perf_counter()
        profile = profile_files([path], format="csv", bins=BINS)
        done = time.perf_counter()
        if summary.row_count != profile["row_count"]:
            raise SystemExit(f"validate_file counted {summary.row_count} rows, profile_files {profile['row_count']}")
        return {
            "seconds": done - start,
            "steps": {"validate": validated - start, "profile": done - validated},
            "rows": profile["row_count"],
            "numeric": sum(1 for c in profile["columns"].values() if c["kind"] == "numeric"),
            "mean_num_00": profile["columns"]["num_00"]["mean"],
            "missing_num_01": profile["columns"]["num_01"]["missing"],
        }
    if variant == "baseline":
        import numpy as np
        import pandas as pd

        start = time.perf_counter()
        frame = pd.read_csv(path)
        read = time.perf_counter()
        described = frame.describe(include="all")
        summarised = time.perf_counter()
        histograms = {
            name: np.histogram(frame[name].dropna().to_numpy(), bins=BINS)
            for name in frame.select_dtypes("number").columns
        }
        done = time.perf_counter()
        return {
            "seconds": done - start,
            "steps": {"read_csv": read - start, "describe": summarised - read, "histogram": done - summarised},
            "rows": len(frame),
            "numeric": len(histograms),
            "mean_num_00": float(described.loc["mean", "num_00"]),
            "missing_num_01": int(frame["num_01"].isna().sum()),
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


class Children:
    """Runs one child at a time in its own session, so an interrupt can stop it and its output stays apart."""

    def __init__(self, tmpdir: Path) -> None:
        self.tmpdir = tmpdir
        self.current: subprocess.Popen | None = None

    def run(self, variant: str, path: Path | None, timeout: float, rows: int | None = None) -> Sample:
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", variant]
        if path is not None:
            argv += ["--file", str(path)]
        if rows is not None:
            argv += ["--rows", str(rows)]
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
        out, err = self.tmpdir / "child.out", self.tmpdir / "child.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, cwd=ROOT, env=env, start_new_session=True)
        self.current = proc
        deadline = time.monotonic() + timeout
        # wait4 reports the resources of this child alone, peak RSS included.
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{variant} on {path} took longer than {timeout:.0f} s")
            time.sleep(0.02)
        self.current = None
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{variant} on {path} failed ({proc.returncode}):\n{err.read_text()[-3000:]}")
        report = json.loads(out.read_text())
        # Linux reports ru_maxrss in KiB.
        return Sample(report.get("seconds", 0.0), usage.ru_maxrss * 1024, report.get("steps", {}), report)

    def stop(self) -> None:
        proc = self.current
        if proc is None or proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            os.waitpid(proc.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        proc.returncode = -signal.SIGKILL


# ---------------------------------------------------------------------------------------------------------------------
# Output


@dataclass
class Measured:
    rows: int
    size_bytes: int
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {name: [] for name in VARIANTS})

    def seconds(self, variant: str) -> float:
        return statistics.median(s.seconds for s in self.samples[variant])

    def peak(self, variant: str) -> float:
        return statistics.median(s.peak_bytes for s in self.samples[variant])

    def step(self, variant: str, name: str) -> float:
        return statistics.median(s.steps[name] for s in self.samples[variant])


def mib(size: float) -> str:
    return f"{size / 2**20:,.0f} MiB"


def print_table(results: list[Measured]) -> None:
    rows: list[tuple[str, ...]] = [("rows", "file", "variant", "seconds", "rows/s", "peak RSS")]
    for m in results:
        for name, label in VARIANTS.items():
            seconds = m.seconds(name)
            rows.append(
                (
                    f"{m.rows:,}",
                    f"{m.size_bytes / 1e6:.0f} MB",
                    label,
                    f"{seconds:.2f}",
                    f"{m.rows / seconds:,.0f}",
                    mib(m.peak(name)),
                )
            )
        rows.append(
            (
                f"{m.rows:,}",
                "",
                "ratio ours/baseline",
                f"{m.seconds('ours') / m.seconds('baseline'):.2f}",
                f"{m.seconds('baseline') / m.seconds('ours'):.2f}",
                f"{m.peak('ours') / m.peak('baseline'):.2f}",
            )
        )
    print_rows(rows)
    print()
    print_rows(
        [("rows", "validate_file", "profile_files", "read_csv", "describe", "np.histogram")]
        + [
            (
                f"{m.rows:,}",
                f"{m.step('ours', 'validate'):.2f}",
                f"{m.step('ours', 'profile'):.2f}",
                f"{m.step('baseline', 'read_csv'):.2f}",
                f"{m.step('baseline', 'describe'):.2f}",
                f"{m.step('baseline', 'histogram'):.2f}",
            )
            for m in results
        ]
    )


def check_agreement(m: Measured) -> None:
    """Both variants must have read the same rows and values, or the timings compare different work."""
    ours, baseline = m.samples["ours"][0].report, m.samples["baseline"][0].report
    problems = [key for key in ("rows", "numeric", "missing_num_01") if ours[key] != baseline[key]]
    if abs(ours["mean_num_00"] - baseline["mean_num_00"]) > 1e-9 * max(1.0, abs(baseline["mean_num_00"])):
        problems.append("mean_num_00")
    if problems or ours["rows"] != m.rows:
        raise SystemExit(
            f"{m.rows:,} rows: the variants disagree on {', '.join(problems) or 'rows'}: {ours} / {baseline}"
        )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per file; medians (default 3)")
    parser.add_argument(
        "--sizes", default="100000,1000000", help="rows per generated file, comma-separated (default 100000,1000000)"
    )
    parser.add_argument("--quick", action="store_true", help="the 100,000-row file only")
    parser.add_argument("--timeout", type=float, default=300, help="seconds any one child may take (default 300)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.file, args.rows)))
        return 0

    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        sizes = [int(size.replace("_", "")) for size in args.sizes.split(",") if size.strip()]
    except ValueError:
        parser.error("--sizes: expected comma-separated whole numbers, e.g. 100000,1000000")
    if args.quick:
        sizes = [100_000]
    if not sizes or min(sizes) < 10:
        parser.error("--sizes: give at least one size of 10 rows or more")

    signal.signal(signal.SIGTERM, _interrupt)
    tmpdir = Path(tempfile.mkdtemp(prefix="cp-bench-profile-"))
    children = Children(tmpdir)
    began = time.monotonic()
    try:
        results = []
        generate_began = time.monotonic()
        for rows in sizes:
            path = tmpdir / f"rows-{rows}.csv"
            children.run("generate", path, args.timeout, rows=rows)
            results.append(Measured(rows, path.stat().st_size))
        generated = time.monotonic() - generate_began

        floor_samples = {name: children.run(f"floor-{name}", None, args.timeout) for name in VARIANTS}
        floors = {name: sample.peak_bytes for name, sample in floor_samples.items()}
        for m in results:
            path = tmpdir / f"rows-{m.rows}.csv"
            for i in range(args.rounds):
                order = list(VARIANTS) if i % 2 == 0 else list(reversed(VARIANTS))
                for name in order:
                    m.samples[name].append(children.run(name, path, args.timeout))
            check_agreement(m)

        print(
            f"# {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} · python {platform.python_version()} · "
            f"{floor_samples['baseline'].report['versions']} · {os.cpu_count()} cores"
        )
        print(
            f"# CSV, {NUMERIC_COLUMNS} numeric + 3 categorical columns, seed {SEED}; one fresh process per "
            f"measurement; median of {args.rounds} alternating rounds"
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
