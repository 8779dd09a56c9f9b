"""Turning a request body into a `Batch`, checked against the model version's input schema.

Accepted bodies (`POST /invocations`):

- `application/json` `{"instances": [[v1, v2, ...], ...]}`: rows of values in the model's feature order;
- `application/json` `{"inputs": [{"column": v, ...}, ...]}`: rows of named values, every column exactly once;
- `text/csv`: rows of values in feature order, no header (SageMaker's contract); a first row that is exactly the
  feature names is taken as a header and skipped.

A missing value is `null` in JSON or an empty cell in CSV; numeric and categorical columns accept it (the model's
imputer fills it), boolean columns do not. Anything else that does not fit raises `BadRequest`, whose message names
the row and column.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from serving.predictors import Batch, Feature

MAX_LISTED = 10
JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv",)
# Numbers above float32's range are refused: tree ensembles (and the compiled copies) compute in float32.
LARGEST = float(np.finfo(np.float32).max)
# What a CSV number may look like (float() would also take "1_000", "١٢" or "infinity").
CSV_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
TRUE = frozenset({"true", "1", "yes"})
FALSE = frozenset({"false", "0", "no"})


class BadRequest(Exception):
    """The body does not fit the model's schema; `status` is the HTTP answer (400, 413 or 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    return "a list" if isinstance(value, list) else "an object"


class RequestSchema:
    """The model's input columns and how to read a body against them."""

    def __init__(self, features: Sequence[Feature]) -> None:
        self.features = list(features)
        self.names = [f.name for f in self.features]
        self.name_set = frozenset(self.names)
        self.width = len(self.features)
        self.numeric_only = all(f.type == "numeric" for f in self.features)
        self.header = ",".join(self.names)

    # -- entry point --------------------------------------------------------------------------------------------

    def parse(self, body: bytes, content_type: str) -> Batch:
        media = content_type.split(";", 1)[0].strip().lower()
        if not media or media in JSON_TYPES:
            return self.parse_json(body)
        if media in CSV_TYPES:
            return self.parse_csv(body)
        raise BadRequest(f"Content-Type {media!r} is not accepted: send application/json or text/csv", status=415)

    # -- JSON ---------------------------------------------------------------------------------------------------

    def parse_json(self, body: bytes) -> Batch:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
        if not isinstance(document, dict) or len(document.keys() & {"instances", "inputs"}) != 1:
            raise BadRequest('the body must be a JSON object with either "instances" (rows of values) or "inputs" '
                             "(rows of named values)")
        extra = sorted(document.keys() - {"instances", "inputs"})
        if extra:
            raise BadRequest(f"the body has unknown keys {_listed(extra)}; only one of instances or inputs is read")
        if "instances" in document:
            return self._instances(document["instances"], body)
        return self._inputs(document["inputs"])

    def _instances(self, rows: Any, body: bytes) -> Batch:
        if not isinstance(rows, list) or not rows:
            raise BadRequest('"instances" must be a non-empty list of rows')
        if self.numeric_only and b"true" not in body and b"false" not in body:
            # The quick way for the common case: numpy converts the whole list at C speed. It would also turn the
            # text "1.5" or true into numbers, so a body with any text (more quotes than the key's two) or a
            # boolean goes the slow way, as does anything numpy cannot take: the cell-by-cell check says what.
            try:
                matrix = np.array(rows, dtype=np.float64)
            except (ValueError, TypeError):
                pass
            else:
                if matrix.ndim == 2 and matrix.shape[1] == self.width and body.count(b'"') == 2:
                    too_large = np.abs(matrix) > LARGEST
                    if too_large.any():
                        row, column = (int(i) for i in np.argwhere(too_large)[0])
                        raise BadRequest(
                            f"row {row + 1}, column {self.names[column]!r}: {rows[row][column]!r} is too large "
                            f"(the model takes numbers up to {LARGEST:.4g})"
                        )
                    return self._from_matrix(matrix)
        columns: list[list[Any]] = [[] for _ in self.features]
        for number, row in enumerate(rows, start=1):
            if not isinstance(row, list):
                raise BadRequest(f"row {number} of instances is {_kind(row)}, not a list of {self.width} values")
            if len(row) != self.width:
                raise BadRequest(
                    f"row {number} has {len(row)} values; the model takes {self.width} columns, in this order: "
                    f"{_listed(self.names)}"
                )
            for values, value in zip(columns, row, strict=True):
                values.append(value)
        return self._from_values(columns, len(rows))

    def _inputs(self, rows: Any) -> Batch:
        if not isinstance(rows, list) or not rows:
            raise BadRequest('"inputs" must be a non-empty list of objects, one per row')
        names = self.name_set
        for number, row in enumerate(rows, start=1):
            if not isinstance(row, dict):
                raise BadRequest(f"row {number} of inputs is {_kind(row)}, not an object of column: value")
            if row.keys() != names:
                missing = [n for n in self.names if n not in row]
                extra = sorted(k for k in row if k not in names)
                problems = []
                if missing:
                    problems.append(f"lacks the column(s) {_listed(missing)}")
                if extra:
                    problems.append(f"has column(s) the model does not take: {_listed(extra)}")
                raise BadRequest(f"row {number} " + " and ".join(problems))
        columns = [[row[name] for row in rows] for name in self.names]
        return self._from_values(columns, len(rows))

    # -- CSV ----------------------------------------------------------------------------------------------------

    def parse_csv(self, body: bytes) -> Batch:
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"the CSV body is not UTF-8: {exc.reason} at byte {exc.start}") from None
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
        except csv.Error as exc:
            raise BadRequest(f"the CSV body is malformed: {exc}") from None
        while rows and not rows[-1]:
            rows.pop()  # blank lines at the end
        if rows and [cell.strip() for cell in rows[0]] == self.names:
            rows = rows[1:]
        if not rows:
            raise BadRequest("the CSV body has no rows")
        for number, row in enumerate(rows, start=1):
            if not row:
                if self.width != 1:
                    raise BadRequest(f"CSV row {number} is empty; every row needs {self.width} values")
                row.append("")  # one column: an empty line is a row whose one value is missing
        columns: list[list[Any]] = [[] for _ in self.features]
        for number, row in enumerate(rows, start=1):
            if len(row) != self.width:
                raise BadRequest(
                    f"CSV row {number} has {len(row)} values; the model takes {self.width} columns, in this order: "
                    f"{_listed(self.names)}"
                )
            for values, cell in zip(columns, row, strict=True):
                values.append(cell)
        return self._from_values(columns, len(rows), text=True)

    # -- building the batch -------------------------------------------------------------------------------------

    def _from_matrix(self, matrix: np.ndarray) -> Batch:
        return Batch(rows=matrix.shape[0], matrix=matrix, names=self.names)

    def _from_values(self, columns: list[list[Any]], rows: int, *, text: bool = False) -> Batch:
        built: dict[str, np.ndarray] = {}
        for feature, values in zip(self.features, columns, strict=True):
            if feature.type == "numeric":
                built[feature.name] = _numbers(feature.name, values, text=text)
            elif feature.type == "boolean":
                built[feature.name] = _booleans(feature.name, values, text=text)
            else:
                built[feature.name] = _categories(feature.name, values, text=text)
        matrix = np.column_stack([built[n] for n in self.names]) if self.numeric_only else None
        return Batch(columns=built, rows=rows, matrix=matrix)


def _numbers(name: str, values: list[Any], *, text: bool) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for row, value in enumerate(values, start=1):
        if value is None or (text and value.strip() == ""):
            out[row - 1] = math.nan
            continue
        if text:
            if CSV_NUMBER.fullmatch(value.strip()) is None:
                raise BadRequest(f"row {row}, column {name!r}: {value[:40]!r} is not a number")
            number = float(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer with hundreds of digits
                number = math.inf
        else:
            raise BadRequest(f"row {row}, column {name!r}: expected a number or null, got {_kind(value)}")
        if not math.isfinite(number) or abs(number) > LARGEST:
            shown = value if text else repr(value)
            raise BadRequest(
                f"row {row}, column {name!r}: {str(shown)[:40]} is too large (the model takes numbers up to "
                f"{LARGEST:.4g})"
            )
        out[row - 1] = number
    return out


def _booleans(name: str, values: list[Any], *, text: bool) -> np.ndarray:
    out = np.empty(len(values), dtype=bool)
    for row, value in enumerate(values, start=1):
        if text:
            word = value.strip().lower()
            if word in TRUE:
                out[row - 1] = True
                continue
            if word in FALSE:
                out[row - 1] = False
                continue
            raise BadRequest(f"row {row}, column {name!r}: {value[:40]!r} is not true or false")
        if not isinstance(value, bool):
            raise BadRequest(f"row {row}, column {name!r}: expected true or false, got {_kind(value)}")
        out[row - 1] = value
    return out


def _categories(name: str, values: list[Any], *, text: bool) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for row, value in enumerate(values, start=1):
        if value is None or (text and value == ""):
            out[row - 1] = math.nan  # what the pipeline's imputer takes for missing
        elif isinstance(value, str):
            out[row - 1] = value
        else:
            raise BadRequest(f"row {row}, column {name!r}: expected text or null, got {_kind(value)}")
    return out
