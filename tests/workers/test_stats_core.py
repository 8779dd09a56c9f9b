"""The statistics core (workers/stats): accumulators fed in batches equal NumPy on the whole array; text rules.

Profiles built on the core are tested through workers.datasets.profile_files in test_datasets.py and
test_dataset_values.py; here are the parts, and the two ways pass 2 can read (spilled numbers or the file again).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workers import datasets
from workers.stats import profile as stats_profile
from workers.stats.accumulators import (
    ExactCounts,
    Histogram,
    Moments,
    ValueCounts,
    histogram_edges,
    order_statistic_binned,
    order_statistic_exact,
    quantiles,
)
from workers.stats.columns import (
    DATETIME_TEXT,
    INTEGER_TEXT,
    arrow_strings,
    numpy_of,
    read_batches,
    text_integers,
    text_numbers,
    texts_are_booleans,
    texts_are_datetimes,
    texts_are_integers,
)
from workers.stats.sketch import NumericSketch

LEVELS = {"p01": 0.01, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p99": 0.99}
ROOT = Path(__file__).resolve().parents[2]


def batches_of(values: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    cuts = np.cumsum(sizes)[:-1]
    return np.split(values, cuts)


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(20261201)


# ---------------------------------------------------------------------------------------------------------------------
# Accumulators against NumPy on the whole array


def test_moments_merged_across_batches_equal_numpy(rng: np.random.Generator) -> None:
    values = rng.lognormal(3, 1, 50_001)
    values[[5, 700, 40_000]] = [np.inf, np.nan, -np.inf]
    whole = Moments()
    whole.add(values)
    left, right = Moments(), Moments()
    for i, part in enumerate(batches_of(values, [1, 17, 9_000, 983, 40_000])):
        (left if i % 2 else right).add(part)
    left.merge(right)
    finite = values[np.isfinite(values)]
    for moments in (whole, left):
        assert (moments.n, moments.non_finite) == (finite.size, 3)
        assert (moments.min, moments.max) == (finite.min(), finite.max())
        assert moments.mean == pytest.approx(finite.mean(), rel=1e-12)
        assert moments.std == pytest.approx(finite.std(ddof=1), rel=1e-12)
        assert moments.whole is False
    counts = Moments()
    counts.add(np.array([3.0, -2.0, 0.0]))
    assert counts.whole is True


@pytest.mark.parametrize("kind", ["uniform", "integers", "uneven"])
def test_histogram_counts_equal_numpy_histogram(rng: np.random.Generator, kind: str) -> None:
    if kind == "uniform":
        values = np.round(rng.normal(0, 3, 30_000), 1)  # many values exactly on an edge
        edges = histogram_edges(float(values.min()), float(values.max()), 20)
    elif kind == "integers":
        values = rng.poisson(4, 30_000).astype(float)
        edges = np.arange(values.min() - 0.5, values.max() + 1.0, 1.0)
    else:
        values = rng.uniform(0, 10, 30_000)
        edges = np.array([0.0, 0.5, 2.0, 2.5, 7.0, 10.0])
    histogram = Histogram(edges)
    for part in batches_of(values, [10_000, 1, 19_999]):
        histogram.add(part)
    assert histogram.counts.tolist() == np.histogram(values, bins=edges)[0].tolist()
    weighted = Histogram(edges)
    distinct, counts = np.unique(values, return_counts=True)
    weighted.add(distinct, counts)
    assert weighted.counts.tolist() == histogram.counts.tolist()


def test_constant_columns_get_a_window_of_non_empty_width() -> None:
    edges = histogram_edges(7.5, 7.5, 10)
    assert edges[0] < 7.5 < edges[-1] and bool(np.all(np.diff(edges) > 0))


def test_exact_counts_equal_numpy_unique_until_the_cap(rng: np.random.Generator) -> None:
    values = np.concatenate([rng.poisson(30, 20_000).astype(float), np.round(rng.normal(size=5_000), 2), [-0.0, 0.0]])
    exact = ExactCounts(cap=2_000)
    for part in batches_of(values, [7, 12_000, 3_000, 9_995]):
        exact.add(part)
    table = exact.table()
    assert table is not None
    distinct, counts = np.unique(values, return_counts=True)
    assert table[0].tolist() == distinct.tolist() and table[1].tolist() == counts.tolist()

    # Batches are merged (and the cap checked) once the pending counts outgrow it; table() has them all till then.
    values = np.round(rng.normal(size=20_000), 3)
    capped = ExactCounts(cap=50)
    seen, handed_over = 0, []
    for part in batches_of(values, [5_000] * 4):
        capped.add(part)
        seen += part.size
        released = capped.take_released()
        if released is not None:
            handed_over.append((seen, released))
    # passing the cap hands over everything seen so far, once, so a caller loses nothing
    ((when, pieces),) = handed_over
    handed = np.concatenate([np.repeat(found, counts) for found, counts in pieces])
    assert np.sort(handed).tolist() == np.sort(values[:when]).tolist()
    assert capped.over and capped.at_least > 50 and capped.table() is None


@pytest.mark.parametrize("integer", [True, False])
def test_quantiles_from_exact_counts_equal_numpy(rng: np.random.Generator, integer: bool) -> None:
    values = rng.integers(0, 60, 9_999).astype(float) if integer else rng.normal(size=9_999)
    distinct, counts = np.unique(values, return_counts=True)
    found = quantiles(LEVELS, order_statistic_exact(distinct, counts), n=values.size, integer=integer)
    method = "inverted_cdf" if integer else "linear"
    assert list(found.values()) == np.quantile(values, list(LEVELS.values()), method=method).tolist()


def test_quantiles_from_fine_bins_are_within_a_bin(rng: np.random.Generator) -> None:
    values = rng.normal(size=40_000)
    fine = Histogram(histogram_edges(float(values.min()), float(values.max()), 2_000))
    fine.add(values)
    statistic = order_statistic_binned(fine, n=values.size, low=float(values.min()), high=float(values.max()))
    bound = (values.max() - values.min()) / 2_000
    found = quantiles(LEVELS, statistic, n=values.size, integer=False)
    for estimate, truth in zip(found.values(), np.quantile(values, list(LEVELS.values())), strict=True):
        assert abs(estimate - truth) <= bound


def test_value_counts_across_batches_equal_a_counter(rng: np.random.Generator) -> None:
    words = [f"w{int(i)}" for i in rng.zipf(1.5, 60_000) % 3_000]
    counter = ValueCounts(cap=5_000)
    for start in range(0, len(words), 7_000):
        counter.add(arrow_strings(words[start : start + 7_000]))
    expected = collections.Counter(words)
    assert counter.counts() == dict(expected)
    summary = counter.summary(5)
    top = sorted(expected.items(), key=lambda item: (-item[1], item[0]))[:5]
    assert summary["top"] == [{"value": value, "count": count} for value, count in top]
    assert (summary["distinct"], summary["distinct_capped"]) == (len(expected), False)


def test_value_counts_past_the_cap_keep_the_heaviest() -> None:
    counter = ValueCounts(cap=100)
    counter.add(arrow_strings([f"id-{i}" for i in range(1_000)] + ["popular"] * 50))
    summary = counter.summary(1)
    assert (summary["distinct"], summary["distinct_capped"]) == (100, True)
    assert summary["top"] == [{"value": "popular", "count": 50}]


# ---------------------------------------------------------------------------------------------------------------------
# What text spells: pyarrow decides where it can, and agrees with the pandas and Python rules it replaces


TRICKY = ["1", "-2", "+3", " 4", "5 ", "007", "1.5", ".5", "5.", "1e5", "1E-3", "nan", "NaN", "-nan", "inf",
          "-Infinity", "nan(1)", "0x10", "1_000", "1,5", "", "-", "--3", "\u0663", "9" * 20, "x"]  # fmt: skip


def old_number(text: str) -> float | None:
    """The rule before the core: pandas.to_numeric, and only spellings of NaN may come out as NaN."""
    number = pd.to_numeric(pd.Series([text], dtype="str"), errors="coerce").iloc[0]
    if pd.isna(number) and text.strip().lower() not in ("nan", "+nan", "-nan"):
        return None
    return float(number)


@pytest.mark.parametrize("text", TRICKY)
def test_text_numbers_follow_pandas(text: str) -> None:
    numbers, _ = text_numbers(arrow_strings([text]))
    expected = old_number(text)
    if expected is None:
        assert numbers is None
    else:
        assert numbers is not None and (numbers[0] == expected or (np.isnan(numbers[0]) and np.isnan(expected)))
        integer = texts_are_integers(arrow_strings([text]), numbers)
        assert integer == bool(INTEGER_TEXT.fullmatch(text)) if np.isfinite(expected) else not integer
    shortcut = text_integers(arrow_strings([text]))
    if shortcut is not None:  # only ever for plain digits: the long way agrees
        assert expected is not None and INTEGER_TEXT.fullmatch(text) and shortcut[0] == expected


def test_booleans_and_datetimes_follow_the_patterns() -> None:
    assert texts_are_booleans(arrow_strings(["True", "false", "FALSE"]))
    assert not texts_are_booleans(arrow_strings(["true", "yes"]))
    assert texts_are_datetimes(arrow_strings(["2024-01-01", "2024-01-02T10:00:00Z", "2024-02-01 08:30:00+01:00"]))
    assert not texts_are_datetimes(arrow_strings(["2024-01-01", "01/02/2024"]))
    # beyond ASCII, Python's \d (any decimal digit) decides, as before
    arabic = "\u0662\u0660\u0662\u0664-\u0660\u0661-\u0660\u0661"
    assert texts_are_datetimes(arrow_strings([arabic])) == bool(DATETIME_TEXT.fullmatch(arabic))


def test_numpy_of_fills_nulls() -> None:
    array = pa.chunked_array([pa.array([1, None, 3]), pa.array([4])])
    assert numpy_of(array, fill=-1).tolist() == [1, -1, 3, 4]


# ---------------------------------------------------------------------------------------------------------------------
# Readers and the profile


def test_csv_and_parquet_batches_hold_the_same_values(tmp_path: Path) -> None:
    frame = pd.DataFrame({"n": [1.5, None, 3.0, 4.25], "t": ["a", "NA", "", "b"]})
    frame.to_csv(tmp_path / "f.csv", index=False)
    pq.write_table(pa.table({"n": frame["n"], "t": ["a", "NA", None, "b"]}), tmp_path / "f.parquet")
    missing = frozenset({""})
    for fmt in ("csv", "parquet"):
        batches = list(read_batches(tmp_path / f"f.{fmt}", fmt, missing, report=lambda _: None, max_rows=3))
        assert [batch.rows for batch in batches] == [3, 1], fmt
        texts = [value for batch in batches for value in batch.columns["t"].data.to_pylist()]
        assert texts == ["a", "NA", "b"], fmt
    typed = read_batches(tmp_path / "f.csv", "csv", missing, report=lambda _: None, csv_types={"n": pa.float64()})
    (batch,) = list(typed)
    assert (batch.columns["n"].kind, batch.columns["n"].data.tolist()) == ("float", [1.5, 3.0, 4.25])


def profile(path: Path, **changes: int) -> dict:
    settings = stats_profile.Settings(
        bins=20,
        levels=datasets.QUANTILES,
        distinct_cap=1_000,
        top_values=5,
        exact_limit=500,
        exact_budget=0,
        quantile_bins=2_000,
        max_rows=7_000,
    )
    settings = dataclasses.replace(settings, **changes)
    progress = stats_profile.Progress(None, [path.stat().st_size])
    return stats_profile.profile_batches(
        [path], format="csv", missing=frozenset({""}), settings=settings, progress=progress
    )


def test_pass_two_from_spilled_numbers_equals_reading_the_file_again(tmp_path: Path, rng: np.random.Generator) -> None:
    n = 30_000
    frame = pd.DataFrame(
        {
            "score": np.round(rng.normal(0, 1, n), 3),  # past the 500-value cap: spilled
            "code": rng.integers(0, 300, n),  # within it: no second pass
            "late": ["1"] * (n - 1) + ["word"],  # text only at the end: counted again in pass 2
        }
    )
    path = tmp_path / "f.csv"
    frame.to_csv(path, index=False)
    spilled = profile(path)
    reread = profile(path, spill_bytes=0)
    for result in (spilled, reread):
        score = result["columns"]["score"]
        assert (
            score["histogram"]["counts"] == np.histogram(frame["score"], bins=score["histogram"]["edges"])[0].tolist()
        )
        assert score["quantiles_exact"] is False
        assert result["columns"]["late"]["top"][0] == {"value": "1", "count": n - 1}
    for name in ("code", "late"):
        assert spilled["columns"][name] == reread["columns"][name], name
    for key in ("histogram", "quantiles", "distinct", "min", "max"):
        assert spilled["columns"]["score"][key] == reread["columns"]["score"][key], key
    json.dumps(spilled, allow_nan=False)


def test_the_sketch_is_the_one_fed_the_rows(tmp_path: Path, rng: np.random.Generator) -> None:
    n = 20_000
    frame = pd.DataFrame({"few": rng.poisson(5, n), "many": np.round(rng.lognormal(1, 1, n), 2)})
    path = tmp_path / "f.csv"
    frame.to_csv(path, index=False)
    for spill in (2**30, 0):
        columns = profile(path, spill_bytes=spill)["columns"]
        for name in frame.columns:
            ours = columns[name]["sketch"]
            assert len(json.dumps(ours)) < 30_000
            rows = NumericSketch()
            rows.add(frame[name].to_numpy(dtype=float))
            expected = rows.to_json()
            for key in ("mean", "m2"):  # summed in another order
                assert ours.pop(key) == pytest.approx(expected.pop(key), rel=1e-9)
            assert ours == expected, name


def test_profiling_a_csv_file_does_not_import_pandas(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("a,b,c\n1,x,2.5\n2,y,\n3,,nan\n")
    code = (
        "import sys; from pathlib import Path; from workers.datasets import profile_files; "
        f"profile_files([Path({str(path)!r})], format='csv'); assert 'pandas' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_a_whole_number_marker_also_means_its_plain_spellings_in_csv(tmp_path: Path) -> None:
    # pandas.read_csv took "-999" to mean "-999.0" too; CSV profiles keep that reading.
    path = tmp_path / "f.csv"
    path.write_text("a\n-999\n-999.0\n-999.00\n3\n")
    column = datasets.profile_files([path], format="csv", missing_values=("", "-999"))["columns"]["a"]
    assert (column["missing"], column["count"], column["min"]) == (2, 2, -999.0)
