"""Dataset files in shapes ControlPlane does not read: other delimiters, no header; each is refused with its reason.

Each refusal here was an acceptance (or a worse message) before issue 7's fixes; the acceptances here must stay.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest
import sklearn.datasets

from workers.datasets import DatasetFileError, validate_file

SKLEARN_DATA = Path(sklearn.datasets.__file__).parent / "data"


def write(directory: Path, name: str, content: bytes | str) -> Path:
    path = directory / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def refused(path: Path, format: str = "csv") -> str:
    with pytest.raises(DatasetFileError) as caught:
        validate_file(path, format=format)
    assert caught.value.field == "file"
    return caught.value.message


# ---------------------------------------------------------------------------------------------------------------------
# Files separated by something other than commas are refused, naming the delimiter


@pytest.mark.parametrize(
    ("delimiter", "expected"),
    [
        (";", "the file looks semicolon-separated (';' splits each of the first 4 rows into 3 fields)"),
        ("\t", "the file looks tab-separated (a tab splits each of the first 4 rows into 3 fields)"),
        ("|", "the file looks pipe-separated ('|' splits each of the first 4 rows into 3 fields)"),
    ],
)
def test_other_delimiters_are_refused(tmp_path: Path, delimiter: str, expected: str) -> None:
    rows = [["name", "score", "city"], ["ada", "1,5", "Oslo"], ["grace", "2", "Bergen"], ["alan", "3,25", "Rome"]]
    content = "".join(delimiter.join(row) + "\n" for row in rows)
    message = refused(write(tmp_path, "export.csv", content))
    assert message == expected + "; ControlPlane reads comma-separated CSV: save it with commas"
    assert refused(write(tmp_path, "export.csv.gz", gzip.compress(content.encode()))) == message


def test_long_semicolon_file_is_refused_on_its_first_rows(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": range(1_000), "b": ["x;y"] * 1_000, "c": [f'say "{i}"\n' for i in range(1_000)]})
    path = tmp_path / "euro.csv"
    frame.to_csv(path, index=False, sep=";")
    assert refused(path).startswith("the file looks semicolon-separated (';' splits each of the first ")


def test_commas_with_semicolons_in_quoted_text_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.csv", 'id,note\n1,"a; b; c"\n2,"d; e; f"\n')
    assert validate_file(path, format="csv").columns == ["id", "note"]
    one_column = write(tmp_path, "one.csv", 'note\n"a; b"\n"c; d"\n')
    assert validate_file(one_column, format="csv").row_count == 2


def test_genuine_one_column_files_are_accepted(tmp_path: Path) -> None:
    cases = {
        "plain.csv": "city\nOslo\nBergen\n",
        "some_semicolons.csv": "remark\nfine\nok; thanks\nnone\n",
        "uneven.csv": "remark\nno;good;here\nmaybe;not\n",
        "names.csv": "full name\nAda Lovelace\nGrace Hopper\n",  # spaces between words, not numbers
        "sentences.csv": "text\nthe cat sat\nit rained all day\n",
    }
    for name, content in cases.items():
        assert len(validate_file(write(tmp_path, name, content), format="csv").columns) == 1, name


# ---------------------------------------------------------------------------------------------------------------------
# Real data no one here wrote: scikit-learn's bundled files, as they are


def test_sklearn_space_separated_files_are_refused() -> None:
    # diabetes_data_raw is numpy.savetxt output; linnerud's files have a header and space-separated numbers.
    assert refused(SKLEARN_DATA / "diabetes_data_raw.csv.gz") == (
        "the file looks space-separated (spaces split each of the first 20 rows into 10 fields); "
        "ControlPlane reads comma-separated CSV: save it with commas"
    )
    assert refused(SKLEARN_DATA / "linnerud_exercise.csv").startswith("the file looks space-separated")


def test_sklearn_headerless_files_are_refused() -> None:
    # Taken as they were, the first row became the header: 441 rows for 442, columns named "0", "5", "13", ...
    assert refused(SKLEARN_DATA / "diabetes_target.csv.gz") == (
        "the first line looks like data, not a header: every column name is a number "
        "('1.510000000000000000e+02'); add a first line naming the columns"
    )
    assert refused(SKLEARN_DATA / "digits.csv.gz") == (
        "the first line looks like data, not a header: every column name is a number "
        "('0', '0', '5', '13', '9', ...); add a first line naming the columns"
    )


def test_repeated_column_names_are_listed_briefly(tmp_path: Path) -> None:
    header = ",".join(f"c{i % 8}" for i in range(40))
    message = refused(write(tmp_path, "wide.csv", header + "\n" + ",".join("1" * 40) + "\n"))
    assert message.startswith("column names appear more than once in the header: 'c0' (columns 1, 9, 17, 25, 33); ")
    assert message.endswith("; and 3 more")
