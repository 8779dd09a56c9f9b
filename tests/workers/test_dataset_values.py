"""Dataset profiles on values no one here chose: what is missing, exact quantiles, what a target's check reads.

Each test here failed on the profiler and validator before issue 7's fixes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_diabetes, load_iris

from workers import datasets
from workers.datasets import QUANTILE_BINS, QUANTILES, DatasetFileError, profile_files, validate_file

LEVELS = list(QUANTILES.values())


def write(directory: Path, name: str, content: bytes | str) -> Path:
    path = directory / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Only empty fields are missing unless the caller says otherwise


def test_na_none_null_are_values_in_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "countries.csv", "country,code\nNA,1\nNO,2\nNA,3\nNone,4\nnull,5\nn/a,6\n,7\n")
    profile = profile_files([path], format="csv")
    country = profile["columns"]["country"]
    assert (country["count"], country["missing"]) == (6, 1)
    assert country["distinct"] == 5
    assert country["top"][0] == {"value": "NA", "count": 2}
    assert {entry["value"] for entry in country["top"]} == {"NA", "NO", "None", "null", "n/a"}
    assert profile["missing_values"] == [""]


def test_the_caller_can_name_more_missing_values(tmp_path: Path) -> None:
    path = write(tmp_path, "survey.csv", "answer,age\nyes,31\nNA,NA\nno,\nn/a,40\n")
    columns = profile_files([path], format="csv", missing_values=("", "NA", "n/a"))["columns"]
    assert (columns["answer"]["count"], columns["answer"]["missing"]) == (2, 2)
    # With "NA" missing the age column is numeric again.
    assert (columns["age"]["type"], columns["age"]["count"], columns["age"]["missing"]) == ("integer", 2, 2)
    # Nothing at all missing: the empty field is a value too, so age is text.
    columns = profile_files([path], format="csv", missing_values=())["columns"]
    assert (columns["age"]["type"], columns["age"]["missing"]) == ("string", 0)


def test_missing_values_must_be_a_list_of_strings(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "a\n1\n")
    for wrong in ("NA", [None]):
        with pytest.raises(DatasetFileError) as caught:
            profile_files([path], format="csv", missing_values=wrong)  # type: ignore[arg-type]
        assert caught.value.field == "missing_values"
        assert "list of strings" in caught.value.message


def test_jsonl_null_is_missing_and_the_string_null_is_not(tmp_path: Path) -> None:
    lines = ['{"code": "NA"}', '{"code": "null"}', '{"code": null}', "{}", '{"code": "None"}', '{"code": ""}']
    path = write(tmp_path, "codes.jsonl", "\n".join(lines) + "\n")
    code = profile_files([path], format="jsonl")["columns"]["code"]
    assert (code["count"], code["missing"]) == (3, 3)  # null, an absent key and the empty string
    assert {entry["value"] for entry in code["top"]} == {"NA", "null", "None"}
    code = profile_files([path], format="jsonl", missing_values=("", "null"))["columns"]["code"]
    assert (code["count"], code["missing"]) == (2, 4)


def test_parquet_nulls_are_missing_and_strings_are_values(tmp_path: Path) -> None:
    path = tmp_path / "codes.parquet"
    table = pa.table(
        {
            "code": pa.array(["NA", "NO", None, "None", ""], type=pa.large_string()),
            "cat": pa.array(["NA", "NA", None, "x", "x"]).dictionary_encode(),
            "ratio": pa.array([1.5, float("nan"), None, 2.5, float("inf")]),
        }
    )
    pq.write_table(table, path)
    columns = profile_files([path], format="parquet")["columns"]
    assert (columns["code"]["count"], columns["code"]["missing"]) == (3, 2)
    assert (columns["cat"]["count"], columns["cat"]["missing"]) == (4, 1)
    # A stored NaN or inf is a value outside the statistics; only the null is missing.
    ratio = columns["ratio"]
    assert (ratio["count"], ratio["missing"], ratio["non_finite"], ratio["mean"]) == (2, 1, 2, 2.0)
    columns = profile_files([path], format="parquet", missing_values=("", "NA"))["columns"]
    assert (columns["code"]["count"], columns["cat"]["count"]) == (2, 2)


def test_nan_text_keeps_a_column_numeric(tmp_path: Path) -> None:
    path = write(tmp_path, "nan.csv", 'x\n1.5\nnan\nNaN\n2.5\n""\n-inf\n')
    x = profile_files([path], format="csv")["columns"]["x"]
    assert x["type"] == "float"
    assert (x["count"], x["missing"], x["non_finite"]) == (2, 1, 3)
    assert x["count"] + x["missing"] + x["non_finite"] == 6


# ---------------------------------------------------------------------------------------------------------------------
# Quantiles: exact for integers (a value that occurs), exact or marked for floats


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 101, 999, 50_000])
def test_integer_quantiles_are_values_that_occur(tmp_path: Path, n: int) -> None:
    values = np.random.default_rng(n).integers(0, 100, n)
    path = tmp_path / "ints.csv"
    pd.DataFrame({"age": values}).to_csv(path, index=False)
    age = profile_files([path], format="csv")["columns"]["age"]
    assert age["type"] == "integer"
    assert (age["quantiles_exact"], age["quantile_method"]) == (True, "inverted_cdf")
    expected = np.quantile(values, LEVELS, method="inverted_cdf")
    assert list(age["quantiles"].values()) == [float(value) for value in expected]
    assert set(age["quantiles"].values()) <= set(values.astype(float).tolist())


def test_exact_49_is_49(tmp_path: Path) -> None:
    # The case: a large integer column whose median is exactly 49 came out as 49.0024.
    values = np.concatenate([np.arange(0, 49).repeat(300), [49] * 301, np.arange(50, 99).repeat(300)])
    path = tmp_path / "ints.csv"
    pd.DataFrame({"n": np.random.default_rng(1).permutation(values)}).to_csv(path, index=False)
    assert profile_files([path], format="csv")["columns"]["n"]["quantiles"]["p50"] == 49.0


def test_floats_say_their_quantiles_are_exact(tmp_path: Path) -> None:
    values = np.random.default_rng(2).normal(size=30_000)
    path = tmp_path / "floats.csv"
    pd.DataFrame({"score": values}).to_csv(path, index=False)
    score = profile_files([path], format="csv")["columns"]["score"]
    assert (score["quantiles_exact"], score["quantile_method"]) == (True, "linear")
    assert list(score["quantiles"].values()) == pytest.approx(list(np.quantile(values, LEVELS)), rel=1e-12)
    assert (score["distinct"], score["distinct_capped"]) == (30_000, False)


def test_past_the_budget_quantiles_are_marked_approximate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A budget of nothing leaves each column the 10,000-value minimum, so 30,000 distinct values pass it.
    monkeypatch.setattr(datasets, "EXACT_VALUES_BUDGET", 0)
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"id": rng.permutation(30_000) * 3 + 7, "score": rng.normal(size=30_000)})
    path = tmp_path / "wide.csv"
    frame.to_csv(path, index=False)
    columns = profile_files([path], format="csv")["columns"]
    for name, method in (("id", "inverted_cdf"), ("score", "linear")):
        column, values = columns[name], frame[name].to_numpy(dtype=float)
        assert (column["quantiles_exact"], column["quantile_method"]) == (False, method), name
        assert (column["distinct"], column["distinct_capped"]) == (datasets.EXACT_QUANTILE_LIMIT, True), name
        bound = (values.max() - values.min()) / QUANTILE_BINS + (0.5 if name == "id" else 0)
        for estimate, truth in zip(
            column["quantiles"].values(), np.quantile(values, LEVELS, method=method), strict=True
        ):
            assert abs(estimate - truth) <= bound * (1 + 1e-9), (name, estimate, truth)
    assert all(value == round(value) for value in columns["id"]["quantiles"].values())


def test_exact_quantiles_do_not_depend_on_chunking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.random.default_rng(4).integers(0, 5_000, 40_000)
    path = tmp_path / "ints.csv"
    pd.DataFrame({"v": values}).to_csv(path, index=False)
    whole = profile_files([path], format="csv")
    monkeypatch.setattr(datasets, "CHUNK_ROWS", 1_000)
    chunked = profile_files([path], format="csv")
    # mean and std may differ in the last bits when rows are chunked differently; the rest may not
    for profile in (whole, chunked):
        column = profile["columns"]["v"]
        assert column.pop("mean") == pytest.approx(values.mean(), rel=1e-12)
        assert column.pop("std") == pytest.approx(values.std(ddof=1), rel=1e-12)
    assert chunked == whole
    assert whole["columns"]["v"]["distinct"] == len(np.unique(values))


# ---------------------------------------------------------------------------------------------------------------------
# What a training target's check reads: type, integer_valued, distinct, distinct_capped


def test_target_kind_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "targets.csv",
        "label,grade,price,species,empty\n1.0,3,9.99,Adelie,\n0.0,1,12.5,Gentoo,\n1.0,2,3.25,Adelie,\n",
    )
    columns = profile_files([path], format="csv")["columns"]
    summary = {
        name: (c["type"], c["integer_valued"], c["distinct"], c["distinct_capped"]) for name, c in columns.items()
    }
    assert summary == {
        "label": ("float", True, 2, False),  # 0.0/1.0 labels: whole numbers written as floats
        "grade": ("integer", True, 3, False),
        "price": ("float", False, 3, False),
        "species": ("string", None, 2, False),
        "empty": ("string", None, 0, False),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Real data no one here wrote: scikit-learn's frames, and a 300,000-row mixed file


@pytest.mark.parametrize("loader", [load_iris, load_diabetes])
def test_sklearn_frames_profile_alike_in_every_format(tmp_path: Path, loader: Any) -> None:
    frame = loader(as_frame=True).frame
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet", index=False)
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True, double_precision=15)
    profiles = {fmt: profile_files([tmp_path / f"d.{fmt}"], format=fmt) for fmt in ("csv", "parquet", "jsonl")}
    json.dumps(profiles["csv"], allow_nan=False)
    for fmt in ("parquet", "jsonl"):
        assert profiles[fmt]["schema"] == profiles["csv"]["schema"], fmt
    columns = profiles["csv"]["columns"]
    for name in frame.columns:
        column, values = columns[name], frame[name].to_numpy(dtype=float)
        method = "inverted_cdf" if column["type"] == "integer" else "linear"
        assert column["quantiles_exact"] is True
        assert list(column["quantiles"].values()) == pytest.approx(
            list(np.quantile(values, LEVELS, method=method)), rel=1e-12
        ), name
        assert column["distinct"] == frame[name].nunique(), name
    target = columns["target"]
    if loader is load_iris:
        assert (target["type"], target["integer_valued"], target["distinct"]) == ("integer", True, 3)
    else:
        # 214 distinct whole numbers stored as floats: a regression target, not 214 classes
        assert (target["type"], target["integer_valued"], target["distinct"]) == ("float", True, 214)


def mixed_rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    visits = rng.poisson(3, n).astype(object)
    visits[rng.random(n) < 0.05] = ""
    return pd.DataFrame(
        {
            "id": np.arange(n) * 7 + 10**9,
            "age": rng.integers(18, 90, n),
            "visits": visits,
            "amount": np.round(rng.lognormal(4, 1, n), 2),
            "score": rng.normal(0, 1, n),
            "country": rng.choice(["NA", "NO", "SE", "None", "null", "n/a", "DE"], n),
            "note": rng.choice(["plain", "with, comma", 'say "hi", then', "multi\nline", "a;b", ""], n),
            "flag": rng.choice(["true", "false"], n),
        }
    )


def test_300k_mixed_rows(tmp_path: Path) -> None:
    frame = mixed_rows(300_000, seed=11)
    path = tmp_path / "mixed.csv"
    frame.to_csv(path, index=False, quoting=csv.QUOTE_MINIMAL)
    summary = validate_file(path, format="csv")
    assert (summary.row_count, summary.columns) == (len(frame), list(frame.columns))

    profile = profile_files([path], format="csv")
    json.dumps(profile, allow_nan=False)
    columns = profile["columns"]
    expected_types = {
        "id": "integer", "age": "integer", "visits": "integer", "amount": "float", "score": "float",
        "country": "string", "note": "string", "flag": "boolean",
    }  # fmt: skip
    assert {name: column["type"] for name, column in columns.items()} == expected_types
    for name in ("id", "age", "visits", "amount", "score"):
        column = columns[name]
        values = pd.to_numeric(frame[name].replace("", np.nan)).dropna().to_numpy(dtype=float)
        method = "inverted_cdf" if expected_types[name] == "integer" else "linear"
        assert column["count"] == len(values) and column["missing"] == len(frame) - len(values), name
        assert column["quantiles_exact"] is True, name
        assert list(column["quantiles"].values()) == pytest.approx(
            list(np.quantile(values, LEVELS, method=method)), rel=1e-12
        ), name
        assert column["distinct"] == len(np.unique(values)), name
    # Every country code is a value, Namibia's included; only the empty notes are missing.
    assert columns["country"]["missing"] == 0
    assert {entry["value"]: entry["count"] for entry in columns["country"]["top"]} == (
        frame["country"].value_counts().to_dict()
    )
    notes = frame["note"][frame["note"] != ""].value_counts().to_dict()
    assert {entry["value"]: entry["count"] for entry in columns["note"]["top"]} == notes
    assert columns["note"]["missing"] == int((frame["note"] == "").sum())


def test_few_whole_numbers_get_one_bin_each_centred_on_the_value(tmp_path) -> None:
    path = tmp_path / "years.csv"
    path.write_text("year\n" + "\n".join(["2007"] * 5 + ["2008"] * 3 + ["2009"] * 4) + "\n")
    histogram = profile_files([path], format="csv")["columns"]["year"]["histogram"]
    assert histogram["edges"] == [2006.5, 2007.5, 2008.5, 2009.5]
    assert histogram["counts"] == [5, 3, 4]
