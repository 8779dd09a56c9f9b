"""Dataset files: format detection, validation messages, and profiles (the drift baseline)."""

from __future__ import annotations

import gzip
import json
import math
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from workers.datasets import (
    DISTINCT_CAP,
    QUANTILE_BINS,
    DatasetFileError,
    FileSummary,
    detect_format,
    profile_files,
    profile_to_schema,
    schemas_compatible,
    validate_file,
)


def write(directory: Path, name: str, content: bytes | str) -> Path:
    path = directory / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def write_jsonl(path: Path, frame: pd.DataFrame) -> Path:
    """JSON Lines with exact float reprs and null for missing (pandas' writer rounds floats to 10 digits)."""
    with open(path, "w", encoding="utf-8") as handle:
        for record in frame.astype(object).to_dict(orient="records"):
            clean = {
                key: (
                    None
                    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
                    else value
                )
                for key, value in record.items()
            }
            handle.write(json.dumps(clean, default=_plain) + "\n")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(type(value))


def assert_same_profile(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal, except mean and std, which may differ in the last bits when rows are chunked differently."""
    assert {k: v for k, v in actual.items() if k != "columns"} == {k: v for k, v in expected.items() if k != "columns"}
    assert list(actual["columns"]) == list(expected["columns"])
    for name, column in actual["columns"].items():
        other = expected["columns"][name]
        assert column.keys() == other.keys(), name
        for key, value in column.items():
            if key in ("mean", "std") and value is not None:
                assert value == pytest.approx(other[key], rel=1e-9, abs=1e-12), (name, key)
            else:
                assert value == other[key], (name, key)


@pytest.fixture(scope="module")
def mixed_frame() -> pd.DataFrame:
    """Breast cancer features plus an integer column with gaps, a categorical with gaps, a boolean and a constant."""
    frame = load_breast_cancer(as_frame=True).frame
    rng = np.random.default_rng(7)
    frame["visits"] = pd.array(rng.integers(0, 40, len(frame)), dtype="Int64")
    frame.loc[frame.index % 11 == 0, "visits"] = pd.NA
    frame["grade"] = rng.choice(["low", "mid", "high"], len(frame), p=[0.5, 0.3, 0.2])
    frame.loc[frame.index % 7 == 0, "grade"] = None
    frame["large"] = frame["mean radius"] > 15
    frame["site"] = "lab-3"
    frame["dose"] = 2.5
    return frame


@pytest.fixture(scope="module")
def large_csv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    rng = np.random.default_rng(42)
    n = 200_000
    frame = pd.DataFrame(
        {
            "latency": rng.lognormal(3.0, 0.6, n),
            "score": rng.normal(50.0, 12.0, n),
            "count": rng.poisson(4.0, n),
            "segment": rng.choice(["retail", "enterprise", "public", "smb"], n, p=[0.55, 0.25, 0.15, 0.05]),
        }
    )
    frame.loc[rng.random(n) < 0.03, "score"] = np.nan
    path = tmp_path_factory.mktemp("large") / "events.csv"
    frame.to_csv(path, index=False)
    return path, frame


# ---------------------------------------------------------------------------------------------------------------------
# detect_format


@pytest.mark.parametrize(
    ("filename", "head", "expected"),
    [
        ("train.csv", b"a,b\n1,2\n", "csv"),
        ("TRAIN.CSV", b"a,b\n1,2\n", "csv"),
        ("train.parquet", b"PAR1\x15\x04", "parquet"),
        ("misnamed.csv", b"PAR1\x15\x04", "parquet"),
        ("events.jsonl", b'{"a": 1}\n', "jsonl"),
        ("events.json", b'{"a": 1}\n', "jsonl"),
        ("train.csv.gz", gzip.compress(b"a,b\n1,2\n"), "csv"),
        ("events.jsonl.gz", gzip.compress(b'{"a": 1}\n'), "jsonl"),
        ("s3-object", gzip.compress(b"a,b\n1,2\n"), "csv"),
        ("export.txt", b"name,age\nada,36\n", "csv"),
        ("export", b"\xef\xbb\xbfname,age\n", "csv"),
        ("events.log", b'{"a": 1}\n{"a": 2}\n', "jsonl"),
    ],
)
def test_detect_format(filename: str, head: bytes, expected: str) -> None:
    assert detect_format(filename, head) == expected


def test_detect_format_refuses_binary_and_gzipped_parquet() -> None:
    with pytest.raises(DatasetFileError, match="cannot tell the format"):
        detect_format("blob.bin", b"\x00\x01\x02\x03\xff\xfe")
    with pytest.raises(DatasetFileError, match="gzip-compressed Parquet"):
        detect_format("train.parquet.gz", gzip.compress(b"PAR1\x15\x04"))


# ---------------------------------------------------------------------------------------------------------------------
# validate_file: what a good file gives


def test_validate_csv_summary(tmp_path: Path) -> None:
    path = write(tmp_path, "people.csv", '\ufeffname,age,notes\nada,36,"likes\nengines"\n\ngrace,45,\n')
    assert validate_file(path, format="csv") == FileSummary(
        format="csv", columns=["name", "age", "notes"], row_count=2, size_bytes=path.stat().st_size, compressed=False
    )


def test_validate_gzip_csv_and_jsonl(tmp_path: Path) -> None:
    csv_path = write(tmp_path, "people.csv.gz", gzip.compress(b"name,age\nada,36\ngrace,45\nalan,41\n"))
    summary = validate_file(csv_path, format="csv")
    assert (summary.columns, summary.row_count, summary.compressed) == (["name", "age"], 3, True)

    jsonl_path = write(tmp_path, "events", gzip.compress(b'{"a": 1}\n\n{"a": 2, "b": "x"}\n'))
    summary = validate_file(jsonl_path, format="jsonl")
    assert (summary.columns, summary.row_count, summary.compressed) == (["a", "b"], 2, True)


def test_validate_parquet_summary(tmp_path: Path, mixed_frame: pd.DataFrame) -> None:
    path = tmp_path / "train.parquet"
    mixed_frame.to_parquet(path, index=False)
    summary = validate_file(path, format="parquet")
    assert summary.columns == list(mixed_frame.columns)
    assert summary.row_count == len(mixed_frame)
    assert summary.compressed is False


# ---------------------------------------------------------------------------------------------------------------------
# validate_file: every bad input has its message


def bad(path: Path, format: str, **kwargs: Any) -> DatasetFileError:
    with pytest.raises(DatasetFileError) as caught:
        validate_file(path, format=format, **kwargs)
    assert isinstance(caught.value, ValueError)
    assert caught.value.field == "file"
    return caught.value


@pytest.mark.parametrize("format", ["csv", "parquet", "jsonl"])
def test_empty_file(tmp_path: Path, format: str) -> None:
    assert bad(write(tmp_path, "empty", b""), format).message == "the file is empty"


def test_gzip_of_nothing_is_empty(tmp_path: Path) -> None:
    assert bad(write(tmp_path, "empty.csv.gz", gzip.compress(b"")), "csv").message == "the file is empty"


def test_header_without_rows(tmp_path: Path) -> None:
    error = bad(write(tmp_path, "header.csv", "name,age\n\n"), "csv")
    assert error.message == "the file has a header but no data rows"


def test_csv_not_utf8_names_the_line(tmp_path: Path) -> None:
    content = "city,population\nOslo,700000\nZürich,400000\n".encode("latin-1")
    error = bad(write(tmp_path, "cities.csv", content), "csv")
    assert error.message == "not valid UTF-8 text (first bad byte at line 3); save the file as UTF-8"


def test_bad_byte_far_into_a_gzip_file_is_found_at_its_line(tmp_path: Path) -> None:
    rows = "".join(f"{i},row {i}\n" for i in range(60_000))  # well past one read block
    content = b"id,name\n" + rows.encode() + "99,Málaga\n".encode("cp1252")
    error = bad(write(tmp_path, "rows.csv.gz", gzip.compress(content)), "csv")
    assert error.message == "not valid UTF-8 text (first bad byte at line 60002); save the file as UTF-8"


def test_ragged_row_counts_physical_lines_through_quoted_newlines(tmp_path: Path) -> None:
    lines = ["id,name,comment,score"]
    lines += [f'{i},n{i},"first line\nsecond line",{i}' for i in range(1, 8)]  # 7 records on lines 2-15
    lines += ["8,n8,plain,8", "9,n9,too,many,fields"]  # lines 16 and 17
    error = bad(write(tmp_path, "ragged.csv", "\n".join(lines) + "\n"), "csv")
    assert error.message == "line 17 has 5 fields but the header has 4"


def test_short_row_is_reported_too(tmp_path: Path) -> None:
    error = bad(write(tmp_path, "short.csv", "a,b,c\r\n1,2,3\r\n4,5\r\n"), "csv")
    assert error.message == "line 3 has 2 fields but the header has 3"


def test_quoting_mistakes(tmp_path: Path) -> None:
    error = bad(write(tmp_path, "open.csv", 'id,note\n1,"never closed\n2,x\n'), "csv")
    assert error.message == "line 2: a quoted field is never closed (the file ends inside the quote)"
    error = bad(write(tmp_path, "long.csv", 'id,note\n1,ok\n2,"never closed\n' + "3,x\n" * 40_000), "csv")
    assert error.message == 'line 3: a field is longer than 131,072 characters; is a quote (") left open?'
    error = bad(write(tmp_path, "stray.csv", 'id,note\n1,x\n2,"say "hi" there"\n'), "csv")
    assert error.message == 'line 3: text follows a closing quote; a quote inside a quoted field is written ""'


def test_unnamed_and_duplicate_columns_are_named(tmp_path: Path) -> None:
    error = bad(write(tmp_path, "unnamed.csv", "id,,score, \n1,2,3,4\n"), "csv")
    assert error.message == "columns 2, 4 in the header have no name"
    error = bad(write(tmp_path, "dup.csv", "id,score,name,score,id\n1,2,3,4,5\n"), "csv")
    assert (
        error.message == "column names appear more than once in the header: 'id' (columns 1, 5); 'score' (columns 2, 4)"
    )


def test_not_parquet(tmp_path: Path) -> None:
    error = bad(write(tmp_path, "train.parquet", "a,b\n1,2\n"), "parquet")
    assert error.message.startswith("not a Parquet file: ")
    error = bad(write(tmp_path, "broken.parquet", b"PAR1" + b"\x00" * 64 + b"PAR1"), "parquet")
    assert error.message.startswith("not a Parquet file: its footer cannot be read")


def test_truncated_parquet(tmp_path: Path, mixed_frame: pd.DataFrame) -> None:
    path = tmp_path / "whole.parquet"
    mixed_frame.to_parquet(path, index=False)
    cut = write(tmp_path, "cut.parquet", path.read_bytes()[:-100])
    assert bad(cut, "parquet").message.startswith("not a Parquet file: ")


def test_jsonl_line_not_an_object(tmp_path: Path) -> None:
    error = bad(write(tmp_path, "events.jsonl", '{"a": 1}\n\n[1, 2]\n{"a": 3}\n'), "jsonl")
    assert error.message.startswith("line 3 is not a JSON object")
    error = bad(write(tmp_path, "broken.jsonl", '{"a": 1}\n{"a": 2,}\n'), "jsonl")
    assert error.message.startswith("line 2 is not a JSON object")
    error = bad(write(tmp_path, "array.json", '[{"a": 1},\n{"a": 2}]\n'), "jsonl")
    assert error.message == "line 1 is not a JSON object; JSON Lines needs one object per line, not one array"


def test_jsonl_not_utf8(tmp_path: Path) -> None:
    error = bad(write(tmp_path, "events.jsonl", b'{"a": "x"}\n' + '{"a": "é"}\n'.encode("latin-1")), "jsonl")
    assert error.message == "not valid UTF-8 text (first bad byte at line 2); save the file as UTF-8"


def test_over_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with open(path, "wb") as handle:
        handle.truncate(12_300_000)
    assert bad(path, "csv", max_bytes=10_000_000).message == "the file is 12.3 MB, over the 10.0 MB limit"


def test_unknown_format_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetFileError) as caught:
        validate_file(write(tmp_path, "a.csv", "a\n1\n"), format="xlsx")
    assert caught.value.field == "format"


def test_validation_memory_stays_flat_on_a_50_mb_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 5_000
    block = (
        pd.DataFrame(
            {
                "id": np.arange(n),
                "value": rng.normal(size=n),
                "payload": ["x" * 200] * n,  # wide rows keep the row count (and tracemalloc's overhead) moderate
                "comment": ['said "hi",\nthen left'] * n,
            }
        )
        .to_csv(index=False, header=False)
        .encode()
    )
    path = tmp_path / "big.csv"
    with open(path, "wb") as handle:
        handle.write(b"id,value,payload,comment\n")
        while handle.tell() < 50_000_000:
            handle.write(block)
    size = path.stat().st_size

    tracemalloc.start()
    try:
        summary = validate_file(path, format="csv")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert summary.row_count == n * math.ceil(50_000_000 / len(block))
    assert peak < size / 10, f"peak {peak:,} bytes for a {size:,}-byte file"


# ---------------------------------------------------------------------------------------------------------------------
# profile_files


def test_profile_is_the_same_for_csv_parquet_and_jsonl(tmp_path: Path, mixed_frame: pd.DataFrame) -> None:
    csv_path = tmp_path / "train.csv"
    mixed_frame.to_csv(csv_path, index=False)
    parquet_path = tmp_path / "train.parquet"
    mixed_frame.to_parquet(parquet_path, index=False)
    jsonl_path = write_jsonl(tmp_path / "train.jsonl", mixed_frame)

    from_csv = profile_files([csv_path], format="csv")
    assert_same_profile(profile_files([parquet_path], format="parquet"), from_csv)
    assert_same_profile(profile_files([jsonl_path], format="jsonl"), from_csv)

    json.dumps(from_csv, allow_nan=False)
    assert from_csv["version"] == 1
    assert from_csv["row_count"] == len(mixed_frame)
    assert from_csv["column_count"] == len(mixed_frame.columns)
    types = {column["name"]: column["type"] for column in from_csv["schema"]}
    assert types["mean radius"] == "float"
    assert types["target"] == types["visits"] == "integer"
    assert types["grade"] == types["site"] == "string"
    assert types["large"] == "boolean"

    radius = from_csv["columns"]["mean radius"]
    values = mixed_frame["mean radius"].to_numpy()
    assert (radius["min"], radius["max"]) == (values.min(), values.max())
    assert radius["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert radius["std"] == pytest.approx(values.std(ddof=1), rel=1e-12)
    # Small columns get numpy's exact quantiles.
    expected = np.quantile(values, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
    assert list(radius["quantiles"].values()) == pytest.approx(list(expected), rel=1e-12)
    assert radius["histogram"]["counts"] == np.histogram(values, bins=radius["histogram"]["edges"])[0].tolist()


def test_gzip_csv_profiles_like_the_plain_file(tmp_path: Path, mixed_frame: pd.DataFrame) -> None:
    plain = tmp_path / "train.csv"
    mixed_frame.to_csv(plain, index=False)
    packed = write(tmp_path, "train.csv.gz", gzip.compress(plain.read_bytes()))
    assert_same_profile(profile_files([packed], format="csv"), profile_files([plain], format="csv"))


def test_large_profile_quantiles_within_the_documented_bound(large_csv: tuple[Path, pd.DataFrame]) -> None:
    path, frame = large_csv
    profile = profile_files([path], format="csv")
    assert profile["row_count"] == len(frame)

    for name in ("latency", "score", "count"):
        column = profile["columns"][name]
        values = frame[name].dropna().to_numpy(dtype=float)
        assert column["kind"] == "numeric"
        assert column["count"] == len(values)
        assert column["missing"] == len(frame) - len(values)
        assert sum(column["histogram"]["counts"]) == column["count"]
        assert column["histogram"]["counts"] == np.histogram(values, bins=column["histogram"]["edges"])[0].tolist()
        if name == "count" and values.max() - values.min() + 1 <= 20:
            # Few whole numbers: one bin per value, centred on it.
            assert column["histogram"]["edges"] == np.arange(values.min() - 0.5, values.max() + 1.0).tolist()
        else:
            assert len(column["histogram"]["edges"]) == 21
        assert (column["min"], column["max"]) == (values.min(), values.max())
        assert column["mean"] == pytest.approx(values.mean(), rel=1e-9)
        assert column["std"] == pytest.approx(values.std(ddof=1), rel=1e-9)
        bound = (values.max() - values.min()) / QUANTILE_BINS
        exact = np.quantile(values, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
        for estimate, truth in zip(column["quantiles"].values(), exact, strict=True):
            assert abs(estimate - truth) <= bound * (1 + 1e-9), (name, estimate, truth, bound)

    assert profile["columns"]["count"]["type"] == "integer"
    assert profile["columns"]["score"]["missing"] > 0


def test_missing_values_are_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "gaps.csv", "a,b,c\n1,x,\n,y,\n3,NA,\n,,\n5,x,\n")
    columns = profile_files([path], format="csv")["columns"]
    assert (columns["a"]["count"], columns["a"]["missing"], columns["a"]["missing_fraction"]) == (3, 2, 0.4)
    assert (columns["b"]["count"], columns["b"]["missing"]) == (4, 1)
    assert (columns["c"]["count"], columns["c"]["missing"], columns["c"]["type"]) == (0, 5, "string")
    assert columns["a"]["mean"] == 3.0


def test_categorical_top_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    colours = rng.choice(["red", "green", "blue", "amber"], 5_000, p=[0.4, 0.3, 0.2, 0.1])
    names = [f"user{i}" for i in range(25)] * 4  # 25 values tied at 4 each
    path = tmp_path / "colours.csv"
    pd.DataFrame({"colour": colours}).to_csv(path, index=False)
    names_path = tmp_path / "names.csv"
    pd.DataFrame({"name": names}).to_csv(names_path, index=False)

    colour = profile_files([path], format="csv")["columns"]["colour"]
    expected = pd.Series(colours).value_counts()
    assert colour["kind"] == "categorical"
    assert colour["distinct"] == 4 and colour["distinct_capped"] is False
    assert colour["top"] == [{"value": value, "count": int(count)} for value, count in expected.items()]

    name = profile_files([names_path], format="csv")["columns"]["name"]
    assert name["distinct"] == 25
    assert [entry["value"] for entry in name["top"]] == sorted(f"user{i}" for i in range(25))[:20]


def test_distinct_values_are_capped(tmp_path: Path) -> None:
    ids = [f"id-{i}" for i in range(25_000)] + ["popular"] * 500
    path = tmp_path / "ids.csv"
    pd.DataFrame({"id": ids}).to_csv(path, index=False)
    column = profile_files([path], format="csv")["columns"]["id"]
    assert column["distinct_capped"] is True
    assert column["distinct"] == DISTINCT_CAP
    assert column["top"][0] == {"value": "popular", "count": 500}


def test_constant_column_has_one_non_empty_bin(tmp_path: Path) -> None:
    path = write(tmp_path, "constant.csv", "k,z\n" + "7.5,0\n" * 300)
    columns = profile_files([path], format="csv", bins=10)["columns"]
    for name, value in (("k", 7.5), ("z", 0.0)):
        column = columns[name]
        edges, counts = column["histogram"]["edges"], column["histogram"]["counts"]
        assert column["min"] == column["max"] == value
        assert column["std"] == 0.0
        assert all(high > low for low, high in zip(edges, edges[1:], strict=False))
        assert edges[0] < value < edges[-1]
        if name == "z":  # a whole number: its one bin, centred on it
            assert (edges, counts) == ([-0.5, 0.5], [300])
        else:
            assert len(edges) == 11 and sorted(counts) == [0] * 9 + [300]
        assert set(column["quantiles"].values()) == {value}


def test_booleans_datetimes_and_infinities(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kinds.csv",
        "flag,when,ratio,code\nTrue,2024-01-01,1.5,007\nfalse,2024-01-02T10:00:00Z,inf,12\nFALSE,2024-02-01 "
        "08:30:00,2.5,-3\n",
    )
    profile = profile_files([path], format="csv")
    json.dumps(profile, allow_nan=False)
    columns = profile["columns"]
    assert columns["flag"]["type"] == "boolean" and columns["flag"]["kind"] == "categorical"
    assert columns["flag"]["top"] == [{"value": "false", "count": 2}, {"value": "true", "count": 1}]
    assert columns["when"]["type"] == "datetime" and columns["when"]["kind"] == "categorical"
    assert columns["ratio"]["type"] == "float"
    # inf is a value outside the statistics, not a missing one
    ratio = columns["ratio"]
    assert (ratio["count"], ratio["missing"], ratio["non_finite"], ratio["max"]) == (2, 0, 1, 2.5)
    assert columns["code"]["type"] == "integer"


def test_jsonl_mixed_and_absent_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "events.jsonl", '{"a": 1, "b": "x"}\n{"a": "two"}\n{"c": true, "b": null}\n')
    profile = profile_files([path], format="jsonl")
    assert [column["name"] for column in profile["schema"]] == ["a", "b", "c"]
    columns = profile["columns"]
    assert columns["a"]["type"] == "string"
    assert columns["a"]["top"] == [{"value": "1", "count": 1}, {"value": "two", "count": 1}]
    assert (columns["b"]["count"], columns["b"]["missing"]) == (1, 2)
    assert (columns["c"]["type"], columns["c"]["missing"]) == ("boolean", 2)


def test_progress_increases_to_one(large_csv: tuple[Path, pd.DataFrame]) -> None:
    path, _ = large_csv
    reported: list[float] = []
    profile_files([path], format="csv", progress=reported.append)
    assert len(reported) > 3
    assert all(earlier < later for earlier, later in zip(reported, reported[1:], strict=False))
    assert 0 < reported[0] and reported[-1] == 1.0


def test_manifest_profile_equals_the_concatenation(tmp_path: Path, mixed_frame: pd.DataFrame) -> None:
    whole = tmp_path / "whole.csv"
    mixed_frame.to_csv(whole, index=False)
    parts = []
    for index, part in enumerate(np.array_split(np.arange(len(mixed_frame)), 3)):
        parts.append(tmp_path / f"part-{index}.parquet")
        mixed_frame.iloc[part].to_parquet(parts[-1], index=False)
    reported: list[float] = []
    manifest = profile_files(parts, format="parquet", progress=reported.append)
    assert_same_profile(manifest, profile_files([whole], format="csv"))
    assert reported[-1] == 1.0


def test_manifest_of_large_csv_parts(tmp_path: Path, large_csv: tuple[Path, pd.DataFrame]) -> None:
    path, frame = large_csv
    parts = []
    for index, part in enumerate(np.array_split(np.arange(len(frame)), 2)):
        parts.append(tmp_path / f"part-{index}.csv.gz")
        frame.iloc[part].to_csv(parts[-1], index=False, compression="gzip")
    assert_same_profile(profile_files(parts, format="csv"), profile_files([path], format="csv"))


# ---------------------------------------------------------------------------------------------------------------------
# Schemas


def test_schema_and_compatibility(tmp_path: Path) -> None:
    train = write(tmp_path, "train.csv", "age,income,city,churn\n31,52000.5,Oslo,true\n44,61000,Bergen,false\n")
    valid = write(tmp_path, "valid.csv", "income,age,segment,city\n50000,n/a,a,Oslo\n1,unknown,b,Bergen\n")
    train_schema = profile_to_schema(profile_files([train], format="csv"))
    assert train_schema == [
        {"name": "age", "type": "integer"},
        {"name": "income", "type": "float"},
        {"name": "city", "type": "string"},
        {"name": "churn", "type": "boolean"},
    ]
    assert schemas_compatible(train_schema, train_schema) == []
    valid_schema = profile_to_schema(profile_files([valid], format="csv"))
    assert schemas_compatible(valid_schema, train_schema) == [
        "column 'churn' is missing",
        "column 'segment' is extra: it is not there",
        "column 'age' is string here but integer there",
        "the columns are in a different order here than there",
    ]


def test_profile_to_schema_rejects_other_versions() -> None:
    with pytest.raises(ValueError, match="unsupported profile version"):
        profile_to_schema({"version": 2, "schema": []})
