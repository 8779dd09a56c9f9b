"""Drift statistics (workers/stats): the sketch, each method against SciPy on the same samples, the settings'
validation, and a window of real capture files (written by serving.capture) against a real profile."""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from serving.capture import Capture, Sample
from serving.metrics import Metrics
from serving.predictors import Batch, Prediction
from workers.datasets import profile_files
from workers.objectstore import LocalObjectStore
from workers.stats.capture import capture_keys, drift_from_capture
from workers.stats.drift import (
    JS_MAX,
    Categories,
    Distribution,
    DriftConfig,
    DriftConfigError,
    MethodChoice,
    categorical_feature_drift,
    chisquare,
    decile_edges,
    jensenshannon,
    ks_test,
    numeric_feature_drift,
    psi,
    shares_on_edges,
    validate_drift_config,
    wasserstein_normed,
    z_test,
)
from workers.stats.sketch import NumericSketch

RNG_SEED = 20261201


def sketch_of(values: np.ndarray, *, batches: int = 1, **options: Any) -> NumericSketch:
    sketch = NumericSketch(**options)
    for part in np.array_split(values, batches):
        sketch.add(part)
    return sketch


def distribution(values: np.ndarray, **options: Any) -> Distribution:
    return Distribution.from_sketch(sketch_of(values, **options))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


# ---------------------------------------------------------------------------------------------------------------------
# The sketch


def test_an_exact_sketch_gives_numpys_quantiles_and_the_rows_cdf(rng: np.random.Generator) -> None:
    values = np.round(rng.normal(size=5000), 1)  # about 80 distinct values
    sketch = sketch_of(values, batches=7)
    assert sketch.exact
    shares = np.linspace(0, 1, 41)
    assert np.array_equal(sketch.quantiles(shares), np.quantile(values, shares))
    points = np.linspace(-4, 4, 33)
    assert np.array_equal(sketch.cdf(points), np.searchsorted(np.sort(values), points, side="right") / values.size)
    assert sketch.std() == pytest.approx(float(np.std(values)), rel=1e-12)


def test_a_binned_sketch_is_the_same_however_it_was_batched_or_merged(rng: np.random.Generator) -> None:
    values = rng.lognormal(size=30_000)
    whole = sketch_of(values)
    assert not whole.exact and whole.counts.size <= whole.bins
    batched = sketch_of(values, batches=9)
    left, right = sketch_of(values[:500]), sketch_of(values[500:], batches=3)  # an exact one and a binned one
    for other in (batched, left.merge(right), right.merge(left)):
        assert (other.exponent, other.offset, other.n) == (whole.exponent, whole.offset, whole.n)
        assert np.array_equal(other.counts, whole.counts)
    # The CDF is off by less than one bin's share of the rows anywhere.
    points = np.quantile(values, np.linspace(0.001, 0.999, 50))
    truth = np.searchsorted(np.sort(values), points, side="right") / values.size
    worst_bin = whole.counts.max() / whole.n
    assert np.abs(whole.cdf(points) - truth).max() <= worst_bin
    assert np.abs(whole.quantiles([0.5]) - np.median(values)).max() <= whole.width


def test_a_sketch_round_trips_through_json_and_leaves_out_non_finite_values(rng: np.random.Generator) -> None:
    for values in (np.array([1.0, 2.0, 2.0, np.nan, np.inf]), rng.normal(size=5000)):
        sketch = sketch_of(values)
        restored = NumericSketch.from_json(json.loads(json.dumps(sketch.to_json(), allow_nan=False)))
        assert restored.exact == sketch.exact and restored.n == sketch.n
        assert np.array_equal(restored.counts, sketch.counts)
        assert np.array_equal(restored.cdf(values[:50]), sketch.cdf(values[:50]))
    assert sketch_of(np.array([1.0, 2.0, np.nan, -np.inf])).non_finite == 2
    with pytest.raises(ValueError, match="version"):
        NumericSketch.from_json({"version": 99})


# ---------------------------------------------------------------------------------------------------------------------
# Each statistic against SciPy's on the same samples


def test_ks_matches_scipy_exactly_for_small_and_large_samples(rng: np.random.Generator) -> None:
    small_a, small_b = np.round(rng.normal(size=700), 2), np.round(rng.normal(0.15, size=900), 2)
    # large: more than 10,000 values, so SciPy switches to its asymptotic p-value too
    large_a, large_b = np.round(rng.normal(size=900), 1), np.round(rng.normal(0.05, size=20_000), 1)
    for a, b in ((small_a, small_b), (large_a, large_b)):
        statistic, p_value = ks_test(distribution(a), distribution(b, cap=10_000))
        expected = stats.ks_2samp(a, b)
        assert statistic == pytest.approx(expected.statistic, abs=1e-12)
        assert p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


def test_wasserstein_matches_scipy_exactly_on_exact_sketches_and_within_a_bin_on_binned_ones(
    rng: np.random.Generator,
) -> None:
    a, b = np.round(rng.normal(size=5000), 2), np.round(rng.normal(0.3, 1.2, size=4000), 2)
    expected = stats.wasserstein_distance(a, b) / np.std(a)
    assert wasserstein_normed(distribution(a), distribution(b)) == pytest.approx(expected, rel=1e-9)

    a, b = rng.normal(size=40_000), rng.normal(0.2, size=30_000)
    sketch_a, sketch_b = sketch_of(a), sketch_of(b)
    expected = stats.wasserstein_distance(a, b) / np.std(a)
    bin_width = max(sketch_a.width, sketch_b.width) / np.std(a)
    assert (
        abs(wasserstein_normed(Distribution.from_sketch(sketch_a), Distribution.from_sketch(sketch_b)) - expected)
        <= bin_width
    )


def test_chisquare_jensenshannon_psi_and_z_match_scipy_on_the_same_counts(rng: np.random.Generator) -> None:
    reference = pd.Series(rng.choice(list("abcd"), p=[0.4, 0.3, 0.2, 0.1], size=900))
    current = pd.Series(rng.choice(list("abcde"), p=[0.3, 0.3, 0.2, 0.15, 0.05], size=700))
    keys = sorted(set(reference) | set(current))
    r = reference.value_counts().reindex(keys, fill_value=0).to_numpy(dtype=float)
    c = current.value_counts().reindex(keys, fill_value=0).to_numpy(dtype=float)
    statistic, p_value = chisquare(r, c)
    with np.errstate(divide="ignore"):
        expected = stats.chisquare(c, r * c.sum() / r.sum())
    assert (statistic, p_value) == (expected.statistic, expected.pvalue)  # "e" is new: expected 0, p-value 0
    assert jensenshannon(r / r.sum(), c / c.sum()) == distance.jensenshannon(r / r.sum(), c / c.sum())
    assert jensenshannon(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(JS_MAX)

    # The two-proportion z-test is Pearson's chi-square on the 2x2 table: z**2 and the same p-value.
    two_r, two_c = np.array([420.0, 380.0]), np.array([300.0, 360.0])
    z, p_z = z_test(two_r, two_c)
    table = stats.chi2_contingency(np.array([two_r, two_c]), correction=False)
    assert z * z == pytest.approx(table.statistic, rel=1e-12)
    assert p_z == pytest.approx(table.pvalue, rel=1e-9)

    # PSI on the baseline's deciles (numpy's inverted_cdf quantiles of the rows).
    a, b = np.round(rng.normal(size=3000), 2), np.round(rng.normal(0.2, size=2000), 2)
    edges = np.unique(np.quantile(a, np.arange(1, 10) / 10, method="inverted_cdf"))
    assert np.array_equal(decile_edges(distribution(a)), edges)
    ref_shares = np.diff(np.concatenate([[0], np.searchsorted(np.sort(a), edges, side="right"), [a.size]])) / a.size
    cur_shares = np.diff(np.concatenate([[0], np.searchsorted(np.sort(b), edges, side="right"), [b.size]])) / b.size
    assert np.allclose(shares_on_edges(distribution(b), edges), cur_shares, rtol=0, atol=1e-15)
    expected_psi = float(np.sum((ref_shares - cur_shares) * np.log(ref_shares / cur_shares)))
    assert psi(shares_on_edges(distribution(a), edges), shares_on_edges(distribution(b), edges)) == pytest.approx(
        expected_psi, rel=1e-12
    )


def test_defaults_detect_a_shifted_feature_and_not_an_unshifted_one(rng: np.random.Generator) -> None:
    auto = MethodChoice()
    baseline = distribution(rng.normal(size=20_000))
    same = numeric_feature_drift("x", baseline, distribution(rng.normal(size=10_000)), auto)
    moved = numeric_feature_drift("x", baseline, distribution(rng.normal(0.2, size=10_000)), auto)
    assert (same.method, same.threshold, same.drifted) == ("wasserstein", 0.1, False)
    assert moved.drifted and moved.score == moved.statistic and moved.p_value is None
    assert moved.histogram is not None and len(moved.histogram["edges"]) == 21
    assert sum(moved.histogram["baseline"]) == pytest.approx(1) == sum(moved.histogram["current"])

    small = distribution(rng.normal(size=400))
    textbook = stats.norm.ppf((np.arange(400) + 0.5) / 400)  # a sample as normal as 400 values can be
    assert numeric_feature_drift("x", small, distribution(textbook), auto).drifted is False
    shifted = numeric_feature_drift("x", small, distribution(rng.normal(0.5, size=400)), auto)
    assert (shifted.method, shifted.drifted) == ("ks", True) and shifted.score == shifted.p_value

    # Few distinct numbers are categories; few reference rows mean chi-square (z for two values).
    few = numeric_feature_drift("n", distribution(rng.integers(0, 4, 500)), distribution(rng.integers(0, 4, 300)), auto)
    assert (few.kind, few.method) == ("categorical", "chisquare")
    flag = categorical_feature_drift("f", Categories({"true": 300, "false": 200}), Categories({"true": 10}), auto)
    assert (flag.method, flag.drifted) == ("z", True)
    large = categorical_feature_drift("c", Categories({"a": 3000, "b": 2000}), Categories({"a": 600, "b": 400}), auto)
    assert (large.method, large.drifted) == ("jensenshannon", False)
    assert large.histogram == {"values": ["a", "b"], "baseline": [0.6, 0.4], "current": [0.6, 0.4]}


# ---------------------------------------------------------------------------------------------------------------------
# Settings


def test_drift_settings_are_validated_field_by_field() -> None:
    assert validate_drift_config(None) == {}
    assert validate_drift_config({"numeric": {"method": "psi", "threshold": 0.2}, "share": 1}) == {}
    errors = validate_drift_config(
        {
            "numeric": {"method": "chisquare"},
            "categorical": {"method": "jensenshannon", "threshold": 0.9},
            "features": {"age": {"method": "ks", "threshold": 1.5}, "city": {"threshold": 0.2}, "x": {"how": 1}},
            "share": 0,
            "colour": "blue",
        }
    )
    assert set(errors) == {
        "numeric.method",
        "categorical.threshold",
        "features.age.threshold",
        "features.city.threshold",
        "features.x.how",
        "share",
        "colour",
    }
    assert "expected auto or one of ks, wasserstein" in errors["numeric.method"]
    assert "strictly between 0 and 1" in errors["features.age.threshold"]
    assert "sqrt(ln 2)" in errors["categorical.threshold"]
    assert "needs a method" in errors["features.city.threshold"]
    assert validate_drift_config({"numeric": {"method": "wasserstein", "threshold": True}}) == {
        "numeric.threshold": "expected a number; got True"
    }
    assert (
        "above 0"
        in validate_drift_config({"features": {"x": {"method": "psi", "threshold": -1}}})["features.x.threshold"]
    )
    with pytest.raises(DriftConfigError) as caught:
        DriftConfig.from_json({"share": 2})
    assert set(caught.value.errors) == {"share"}
    config = DriftConfig.from_json({"features": {"age": {"method": "ks", "threshold": 0.01}}, "share": 0.25})
    assert config.choice_for("age", "numeric") == MethodChoice("ks", 0.01)
    assert config.choice_for("income", "numeric") == MethodChoice()


# ---------------------------------------------------------------------------------------------------------------------
# Capture files


FEATURES = ["age", "income", "score", "city", "member"]
WINDOW_START = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def capture_file(frame: pd.DataFrame, at: datetime) -> bytes:
    """A capture file exactly as the serving runtime writes it, every row captured at `at`."""
    columns = {name: frame[name].to_numpy(dtype=object if frame[name].dtype == object else None) for name in FEATURES}
    batch = Batch(columns=columns, rows=len(frame))
    prediction = Prediction(labels=np.zeros(len(frame), dtype=np.int64), probabilities=np.full((len(frame), 2), 0.5))
    capture = Capture(
        None,
        fraction=1.0,
        feature_names=FEATURES,
        service="churn",
        revision="r1",
        metrics=Metrics(service="churn", revision="r1", runtime="test"),
    )
    return capture.parquet([Sample(at.timestamp(), batch, prediction)])


def rows(rng: np.random.Generator, size: int, *, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, size).astype(np.float64),
            "income": rng.lognormal(10 + shift, 0.5, size),
            "score": rng.normal(shift, 1.0, size),
            "city": np.array(rng.choice(["paris", "lyon", "nice"], size=size, p=[0.5, 0.3, 0.2]), dtype=object),
            "member": rng.random(size) < 0.3,
        }
    )


def put(store: LocalObjectStore, key: str, content: bytes) -> str:
    store.put(key, io.BytesIO(content))
    return key


def key_at(at: datetime, rows_in_file: int, tag: str) -> str:
    return f"capture/churn/r1/{at:%Y/%m/%d}/{at:%H%M%S}-{rows_in_file}-{tag}.parquet"


@pytest.fixture
def baseline(tmp_path: Path, rng: np.random.Generator) -> dict[str, Any]:
    frame = rows(rng, 5000)
    frame["churned"] = rng.random(5000) < 0.2  # the target: in the baseline, never in capture files
    path = tmp_path / "train.parquet"
    frame.to_parquet(path, index=False)
    return profile_files([path], format="parquet")


def test_a_window_of_capture_files_against_a_profile(
    tmp_path: Path, rng: np.random.Generator, baseline: dict[str, Any]
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    inside = [WINDOW_START + timedelta(minutes=m) for m in (5, 30, 55)]
    keys = [
        put(store, key_at(at, 1500, f"a{i}"), capture_file(rows(rng, 1500, shift=0.5), at))
        for i, at in enumerate(inside)
    ]
    late = WINDOW_START + timedelta(hours=1, minutes=1)
    before = WINDOW_START - timedelta(minutes=30)  # listed (it could hold rows of the window), but its rows are not
    put(store, key_at(late, 100, "late"), capture_file(rows(rng, 100), late))
    keys.append(put(store, key_at(before, 100, "early"), capture_file(rows(rng, 100, shift=-3), before)))
    corrupt = put(store, key_at(inside[0], 10, "bad"), b"PAR1 not really a parquet file PAR1")
    other = rows(rng, 50)
    other["score"] = other["score"].astype(str)  # another model's schema: text where a number was
    odd_schema = put(store, key_at(inside[1], 50, "odd"), capture_file_with(other, inside[1]))
    put(store, "capture/churn-2/r1/2026/11/30/100500-1-x.parquet", b"another service")

    listed = capture_keys(store, "churn", WINDOW_START, WINDOW_START + timedelta(hours=1))
    assert sorted(listed) == sorted([*keys, corrupt, odd_schema])
    fractions: list[float] = []
    result = drift_from_capture(
        baseline,
        store,
        listed,
        start=WINDOW_START,
        end=WINDOW_START + timedelta(hours=1),
        config=None,
        progress=fractions.append,
    )
    assert fractions[-1] == 1.0 and len(fractions) == len(listed)
    assert result.rows == 4500 and result.files_read == 4
    reasons = {entry["key"]: entry["reason"] for entry in result.unreadable}
    assert set(reasons) == {corrupt, odd_schema}
    assert "not a readable Parquet file" in reasons[corrupt]
    assert "score is string here but float in the baseline" in reasons[odd_schema]

    by_name = {feature.feature: feature for feature in result.features}
    assert set(by_name) == {*FEATURES, "churned"}
    assert by_name["churned"].drifted is None and by_name["churned"].note == "not in the capture files read"
    assert by_name["income"].method == "wasserstein" and by_name["income"].drifted
    assert by_name["score"].drifted and not by_name["age"].drifted
    assert by_name["city"].method == "jensenshannon" and not by_name["city"].drifted
    assert by_name["member"].kind == "categorical" and not by_name["member"].drifted
    assert all(feature.current_rows == 4500 for feature in result.features if feature.feature != "churned")
    assert result.share == pytest.approx(2 / 5) and not result.drifted  # 2 of the 5 judged features
    json.dumps(result.to_json(), allow_nan=False)

    # With the profile's sketches (as the profiler will add them), the same verdicts from finer statistics.
    sketched = json.loads(json.dumps(baseline))
    source = pd.read_parquet(tmp_path / "train.parquet")
    for name in ("age", "income", "score"):
        sketched["columns"][name]["sketch"] = sketch_of(source[name].to_numpy()).to_json()
    exact = drift_from_capture(
        sketched,
        store,
        keys,
        start=WINDOW_START,
        end=WINDOW_START + timedelta(hours=1),
        config={"features": {"age": {"method": "psi", "threshold": 0.2}}, "share": 0.4},
        features=FEATURES,
    )
    exact_by_name = {feature.feature: feature for feature in exact.features}
    captured = pd.concat([pd.read_parquet(store.open(key)) for key in keys[:3]])
    expected = stats.wasserstein_distance(source["score"], captured["score"]) / np.std(source["score"])
    assert exact_by_name["score"].statistic == pytest.approx(expected, rel=0.01)
    assert exact_by_name["age"].method == "psi" and exact_by_name["age"].threshold == 0.2
    assert exact.drifted and exact.share == pytest.approx(2 / 5)


def capture_file_with(frame: pd.DataFrame, at: datetime) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({name: frame[name] for name in FEATURES}).append_column(
        "captured_at", pa.array([at] * len(frame), type=pa.timestamp("ms", tz="UTC"))
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def test_strict_features_refuse_a_file_lacking_one_and_no_files_give_no_verdict(
    tmp_path: Path, rng: np.random.Generator, baseline: dict[str, Any]
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    at = WINDOW_START + timedelta(minutes=1)
    lacking = rows(rng, 20).drop(columns=["member"])
    table_bytes = capture_file_with(lacking.assign(member=False), at)  # written, then overwritten below
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(table_bytes)).drop_columns(["member"])
    sink = io.BytesIO()
    pq.write_table(table, sink)
    key = put(store, key_at(at, 20, "lack"), sink.getvalue())
    end = WINDOW_START + timedelta(hours=1)
    result = drift_from_capture(baseline, store, [key], start=WINDOW_START, end=end, config=None, features=FEATURES)
    assert result.unreadable == [{"key": key, "reason": "it lacks the feature(s) member"}]
    assert result.files_read == 0 and result.share == 0 and not result.drifted
    assert all(feature.drifted is None for feature in result.features)
    assert result.features[0].note == "no capture file in the window could be read"
    empty = drift_from_capture(baseline, store, [], start=WINDOW_START, end=end, config=None)
    assert empty.features[0].note == "no capture files in the window"
    assert math.isclose(empty.share, 0.0)
