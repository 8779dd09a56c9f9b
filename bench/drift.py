"""Drift: our drift job end to end from capture files against Evidently 0.7's DataDriftPreset on the same data.

Run from the repository root:

    .venv/bin/python bench/drift.py [--rows 1000000] [--timeout 900]

The script builds, with a fixed seed, `--rows` reference rows and as many current rows of 20 numeric features
(normal, log-normal, uniform, gamma and Student-t columns), 5 of them shifted by 0.2 of their standard deviation in
the current rows. Then, each step in a fresh Python subprocess:

- profile: the project's profiler (`workers.datasets.profile_files`) on the reference rows as one Parquet file,
  the dataset version's profile that is the drift baseline, used exactly as the profiler writes it (each numeric
  column with its "sketch", workers/stats/sketch.py). A copy without the sketches is the histograms-only fallback.
  Its time and memory are printed as their own line: informative, not part of the drift comparison.
- capture: the current rows as the serving runtime's capture files, 50,000 rows each, written by
  `serving.capture.Capture` itself into a local object store (its key layout, its Parquet columns).
- ours: `workers.stats.capture.capture_keys` + `drift_from_capture` from those files with default settings, end to
  end: listing, reading in record batches, the statistics and the verdicts. Also once with the profile's histograms
  only (no sketches), the coarser fallback, for its verdicts.
- evidently: in its own virtual environment, `.bench/evidently-venv` (created here on first use with pinned
  `evidently` and `pandas<3`), pandas reads the reference and current Parquet files and
  `Report([DataDriftPreset()]).run(...)` compares them.

Seconds are measured inside each child around the work (imports excluded); peak RSS is the child's own `ru_maxrss`
from `os.wait4` (imports included; the parent imports neither numpy nor pandas, so a fork carries little). It prints
both tools' per-feature verdicts side by side and fails when any differs. The temporary directory is removed at the
end; the virtual environment is kept for the next run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _children import Children  # bench/_children.py: one measured child at a time
from _table import print_rows  # bench/_table.py: the shared table printer
from profile_throughput import mib, peak_of_this_process

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".bench" / "evidently-venv"
EVIDENTLY_REQUIREMENTS = ("evidently==0.7.23", "pandas<3")
FEATURES = 20
SHIFTED = 5
SHIFT_STDS = 0.2
FILE_ROWS = 50_000
SEED = 20261201
SERVICE = "bench-drift"
WINDOW_START = datetime.datetime(2026, 12, 1, 0, 0, tzinfo=datetime.UTC)
WINDOW = datetime.timedelta(hours=1)


# ---------------------------------------------------------------------------------------------------------------------
# The data


def feature_names() -> list[str]:
    return [f"f{i:02d}" for i in range(FEATURES)]


def shifted_names() -> list[str]:
    # Spread over the kinds of distribution: every fourth feature, from the first.
    return [f"f{i:02d}" for i in range(0, FEATURES, FEATURES // SHIFTED)][:SHIFTED]


def make_rows(rows: int, seed: int, *, shift: bool) -> Any:
    """A float64 matrix (rows x FEATURES); when `shift`, the shifted features move by SHIFT_STDS of their std."""
    import numpy as np

    rng = np.random.default_rng(seed)
    matrix = np.empty((rows, FEATURES), dtype=np.float64)
    moved = set(shifted_names())
    for i, name in enumerate(feature_names()):
        kind = i % 5
        if kind == 0:
            values, std = rng.normal(10.0 * i, 1.0 + i, rows), 1.0 + i
        elif kind == 1:
            sigma = 0.6
            values = rng.lognormal(2.0, sigma, rows)
            std = float(np.sqrt((np.exp(sigma**2) - 1) * np.exp(4.0 + sigma**2)))
        elif kind == 2:
            values, std = rng.uniform(-1.0, 1.0, rows), 2.0 / np.sqrt(12.0)
        elif kind == 3:
            values, std = rng.gamma(2.0, 3.0, rows), 3.0 * np.sqrt(2.0)
        else:
            values, std = rng.standard_t(5.0, rows), float(np.sqrt(5.0 / 3.0))
        matrix[:, i] = values + (SHIFT_STDS * std if shift and name in moved else 0.0)
    return matrix


def write_parquet(path: Path, matrix: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({name: matrix[:, i] for i, name in enumerate(feature_names())})
    pq.write_table(table, path, compression="zstd")


def write_capture(store_root: Path, matrix: Any) -> int:
    """The current rows as the serving runtime stores them: one Capture file per FILE_ROWS rows, by Capture itself."""
    import numpy as np

    from serving.capture import Capture, Sample
    from serving.metrics import Metrics
    from serving.predictors import Batch, Prediction
    from workers.objectstore import LocalObjectStore

    store = LocalObjectStore(store_root)
    names = feature_names()
    metrics = Metrics(service=SERVICE, revision="r1", runtime="bench")
    capture = Capture(store, fraction=1.0, feature_names=names, service=SERVICE, revision="r1", metrics=metrics)
    rng = np.random.default_rng(SEED + 2)
    files = 0
    starts = range(0, matrix.shape[0], FILE_ROWS)
    for number, first in enumerate(starts):
        part = np.ascontiguousarray(matrix[first : first + FILE_ROWS])
        batch = Batch(matrix=part, names=names, rows=part.shape[0])
        labels = np.asarray(rng.integers(0, 2, part.shape[0]))
        probabilities = np.column_stack([np.full(part.shape[0], 0.4), np.full(part.shape[0], 0.6)])
        at = WINDOW_START + WINDOW * (number + 0.5) / len(starts)
        capture._write([Sample(at.timestamp(), batch, Prediction(labels, probabilities))])
        files += 1
    return files


def without_sketches(profile: dict[str, Any]) -> dict[str, Any]:
    """A copy of `profile` whose numeric columns have no "sketch": what a profile made before sketches looks like."""
    copy = json.loads(json.dumps(profile))
    for column in copy["columns"].values():
        column.pop("sketch", None)
    return copy


# ---------------------------------------------------------------------------------------------------------------------
# The children


def child(variant: str, work: Path, rows: int) -> dict[str, Any]:
    # The project before bench/, whose serving.py would hide the serving package.
    sys.path.insert(0, str(ROOT))
    report = _child(variant, work, rows)
    report["vmhwm_bytes"] = peak_of_this_process()
    return report


def _child(variant: str, work: Path, rows: int) -> dict[str, Any]:
    if variant == "generate":
        write_parquet(work / "reference.parquet", make_rows(rows, SEED, shift=False))
        current = make_rows(rows, SEED + 1, shift=True)
        write_parquet(work / "current.parquet", current)
        files = write_capture(work / "store", current)
        return {"files": files}
    if variant == "profile":
        from workers.datasets import profile_files

        start = time.perf_counter()
        profile = profile_files([work / "reference.parquet"], format="parquet")
        seconds = time.perf_counter() - start
        numeric = [name for name, column in profile["columns"].items() if column["kind"] == "numeric"]
        unsketched = [name for name in numeric if "sketch" not in profile["columns"][name]]
        if unsketched:
            raise SystemExit(f"profile_files wrote no sketch for {', '.join(unsketched)}")
        (work / "profile.json").write_text(json.dumps(profile))
        (work / "profile-histograms.json").write_text(json.dumps(without_sketches(profile)))
        return {"seconds": seconds, "rows": profile["row_count"], "numeric": len(numeric)}
    if variant in ("ours", "ours-histograms"):
        from workers.objectstore import LocalObjectStore
        from workers.stats.capture import capture_keys, drift_from_capture

        profile_name = "profile.json" if variant == "ours" else "profile-histograms.json"
        start = time.perf_counter()
        # The drift job loads the profile (JSON) from its dataset version's row, then reads the window's files.
        baseline = json.loads((work / profile_name).read_text())
        store = LocalObjectStore(work / "store")
        end = WINDOW_START + WINDOW
        keys = capture_keys(store, SERVICE, WINDOW_START, end)
        result = drift_from_capture(baseline, store, keys, start=WINDOW_START, end=end, config=None)
        seconds = time.perf_counter() - start
        return {
            "seconds": seconds,
            "rows": result.rows,
            "files": result.files_read,
            "unreadable": result.unreadable,
            "dataset_drifted": result.drifted,
            "share": result.share,
            "features": {
                f.feature: {"method": f.method, "score": f.score, "threshold": f.threshold, "drifted": f.drifted}
                for f in result.features
            },
        }
    if variant == "evidently":
        import evidently
        import pandas as pd
        from evidently import Report
        from evidently.presets import DataDriftPreset

        start = time.perf_counter()
        reference = pd.read_parquet(work / "reference.parquet")
        current = pd.read_parquet(work / "current.parquet")
        read = time.perf_counter()
        snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
        metrics = snapshot.dict()["metrics"]
        done = time.perf_counter()
        features: dict[str, Any] = {}
        dataset: dict[str, Any] = {}
        for metric in metrics:
            config = metric["config"]
            if config["type"].endswith("ValueDrift"):
                method, threshold, value = config["method"], config["threshold"], metric["value"]
                # Evidently: p-values drift below the threshold (K-S at or below), distances at or above it.
                if "p_value" in method:
                    drifted = value <= threshold if method.startswith("K-S") else value < threshold
                else:
                    drifted = value >= threshold
                features[config["column"]] = {
                    "method": method,
                    "score": value,
                    "threshold": threshold,
                    "drifted": bool(drifted),
                }
            elif config["type"].endswith("DriftedColumnsCount"):
                dataset = {"share": metric["value"]["share"], "drift_share": config["drift_share"]}
        return {
            "seconds": done - start,
            "steps": {"read": read - start, "report": done - read},
            "versions": f"evidently {evidently.__version__} · pandas {pd.__version__}",
            "features": features,
            "share": dataset.get("share"),
            "dataset_drifted": dataset.get("share", 0) >= dataset.get("drift_share", 0.5),
        }
    raise SystemExit(f"unknown variant {variant!r}")


class BenchChildren(Children):
    """The bench's children: this script again with `--child`, in the project's or Evidently's Python."""

    def __init__(self, work: Path) -> None:
        super().__init__(work, cwd=ROOT)

    def measure(self, variant: str, rows: int, timeout: float, python: str = sys.executable) -> dict[str, Any]:
        argv = [python, str(Path(__file__).resolve()), "--child", variant, "--work", str(self.work)]
        argv += ["--rows", str(rows)]
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        if python == sys.executable:
            env["PYTHONPATH"] = str(ROOT)  # the project; Evidently's environment does not need it
        report, peak = self.run(argv, env=env, timeout=timeout, what=variant)
        report["peak_bytes"] = peak
        return report


def evidently_python() -> str:
    """The Evidently virtual environment's interpreter, created with the pinned requirements when absent."""
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import evidently, pandas; print(evidently.__version__)"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(python)
    print(f"# creating {VENV.relative_to(ROOT)} with {' '.join(EVIDENTLY_REQUIREMENTS)}", flush=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *EVIDENTLY_REQUIREMENTS], check=True)
    subprocess.run(check, check=True, capture_output=True)
    return str(python)


# ---------------------------------------------------------------------------------------------------------------------
# Output


def print_results(rows: int, profiled: dict[str, Any], measured: dict[str, dict[str, Any]]) -> bool:
    ours, evidently = measured["ours"], measured["evidently"]
    table: list[tuple[str, ...]] = [("variant", "seconds", "rows/s", "peak RSS", "drifted features", "dataset")]
    labels = {
        "ours": "ours: drift_from_capture (capture files, profile with sketches)",
        "ours-histograms": "ours: same, profile histograms only",
        "evidently": "Evidently DataDriftPreset (read Parquet + report)",
    }
    for name, label in labels.items():
        m = measured[name]
        drifted = sum(1 for f in m["features"].values() if f["drifted"])
        table.append(
            (
                label,
                f"{m['seconds']:.2f}",
                f"{rows / m['seconds']:,.0f}",
                mib(m["peak_bytes"]),
                f"{drifted} of {len(m['features'])}",
                "drifted" if m["dataset_drifted"] else "not drifted",
            )
        )
    table.append(
        (
            "ratio Evidently / ours",
            f"{evidently['seconds'] / ours['seconds']:.0f}x",
            "",
            f"{evidently['peak_bytes'] / ours['peak_bytes']:.1f}x",
            "",
            "",
        )
    )
    # The baseline's cost, once per dataset version: shown for information, not part of the comparison above.
    table.append(
        (
            "ours: profile_files (reference Parquet -> baseline; not compared)",
            f"{profiled['seconds']:.2f}",
            f"{profiled['rows'] / profiled['seconds']:,.0f}",
            mib(profiled["peak_bytes"]),
            "",
            "",
        )
    )
    print_rows(table)
    print()
    agree = True
    side: list[tuple[str, ...]] = [
        (
            "feature",
            "shifted",
            "ours: method",
            "score",
            "drift",
            "histograms only",
            "Evidently: method",
            "score",
            "drift",
        )
    ]
    moved = set(shifted_names())
    for name in feature_names():
        a, h, b = ours["features"][name], measured["ours-histograms"]["features"][name], evidently["features"][name]
        same = a["drifted"] == b["drifted"]
        agree = agree and same  # the histogram-only fallback is shown, not required to agree
        side.append(
            (
                name,
                "yes" if name in moved else "",
                str(a["method"]),
                f"{a['score']:.4f}",
                ("yes" if a["drifted"] else "no") + ("" if same else " (differs)"),
                f"{h['score']:.4f} {'yes' if h['drifted'] else 'no'}",
                b["method"],
                f"{b['score']:.4f}",
                "yes" if b["drifted"] else "no",
            )
        )
    print_rows(side)
    return agree


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="reference rows, and current rows (1,000,000)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds any one child may take (default 900)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.work, args.rows)))
        return 0
    if args.rows < 2000:
        parser.error("--rows: at least 2,000, so the reference is large (Evidently's methods for > 1,000 rows)")

    signal.signal(signal.SIGTERM, _interrupt)
    python = evidently_python()
    work = Path(tempfile.mkdtemp(prefix="cp-bench-drift-"))
    children = BenchChildren(work)
    began = time.monotonic()
    try:
        generated = children.measure("generate", args.rows, args.timeout)
        profiled = children.measure("profile", args.rows, args.timeout)
        measured = {
            "ours": children.measure("ours", args.rows, args.timeout),
            "ours-histograms": children.measure("ours-histograms", args.rows, args.timeout),
            "evidently": children.measure("evidently", args.rows, args.timeout, python=python),
        }
        if measured["ours"]["rows"] != args.rows or measured["ours"]["unreadable"]:
            raise SystemExit(f"our job read {measured['ours']['rows']:,} rows of {args.rows:,}: {measured['ours']}")
        print(
            f"# {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} · python {platform.python_version()} · "
            f"{measured['evidently']['versions']} · {os.cpu_count()} cores"
        )
        print(
            f"# {args.rows:,} reference rows and {args.rows:,} current rows x {FEATURES} numeric features, "
            f"{SHIFTED} shifted by {SHIFT_STDS} std ({', '.join(shifted_names())}); seed {SEED}"
        )
        print(
            f"# current rows in {generated['files']} capture files of {FILE_ROWS:,} rows (serving.capture); "
            f"baseline: profile_files's profile as written ({profiled['numeric']} numeric columns with sketches)"
        )
        steps = measured["evidently"]["steps"]
        print(
            f"# seconds: inside the child, imports excluded (Evidently: {steps['read']:.1f} s reading Parquet, "
            f"{steps['report']:.1f} s the report); peak RSS: the child's ru_maxrss, imports included"
        )
        print()
        agree = print_results(args.rows, profiled, measured)
        print()
        print(f"# {time.monotonic() - began:.0f} s wall in all")
        for name, m in {"profile": profiled, **measured}.items():
            own = m.get("vmhwm_bytes")
            if own and abs(m["peak_bytes"] - own) > 0.05 * own:
                print(f"# warning: {name}'s ru_maxrss {mib(m['peak_bytes'])} differs from its VmHWM {mib(own)}")
        if not agree:
            print("# the verdicts differ on at least one feature")
            return 1
        print("# every feature has the same verdict from both tools")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
