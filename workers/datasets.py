"""Dataset versions: tell the format, validate the file and profile it (the drift baseline), streaming throughout.

Formats are CSV, Parquet and JSON Lines; CSV and JSON Lines may be gzip-compressed (told by the magic bytes).
A profile covers one file or many (a manifest) as if their rows were concatenated.

Histogram convention, shared with the drift job: bins are half-open [edges[i], edges[i+1]) except the last, which is
closed, exactly as `numpy.histogram(values, bins=edges)` counts them.

Missing: a null (JSON, Parquet), an absent key, or text equal to one of the caller's `missing_values` (by default
only empty text; "NA" is Namibia). inf and NaN are values, counted in `non_finite`, outside every statistic.

Quantiles: integer columns use numpy's "inverted_cdf" (always a value that occurs), floats numpy's "linear"; both are
exact while the column has few enough distinct values (`quantiles_exact`), estimated from fine bins beyond that.
"""

from __future__ import annotations

import csv
import itertools
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from workers.stats import profile as stats_profile
from workers.stats.columns import (
    GZIP_MAGIC,
    PANDAS_INDEX_COLUMN,
    DatasetFileError,
    is_gzip,
    open_bytes,
    parse_json_line,
    text_lines,
)

FORMATS = ("csv", "parquet", "jsonl")
PROFILE_VERSION = 1

PARQUET_MAGIC = b"PAR1"
UTF8_BOM = b"\xef\xbb\xbf"
CSV_SUFFIXES = frozenset({".csv"})
JSONL_SUFFIXES = frozenset({".jsonl", ".json", ".ndjson"})
PARQUET_SUFFIXES = frozenset({".parquet", ".pq", ".parq"})

MAX_JSON_KEYS = 10_000
# A chunk holds at most this many cells, so wide files get fewer rows per chunk and memory stays flat.
CHUNK_CELLS = 2_000_000
CHUNK_ROWS = 100_000

# Only empty fields are missing unless the caller names more (R's "NA", say): "NA" is also Namibia's country code.
DEFAULT_MISSING_VALUES: tuple[str, ...] = ("",)

DISTINCT_CAP = 10_000
TOP_VALUES = 20
QUANTILES = {"p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.50, "p75": 0.75, "p95": 0.95, "p99": 0.99}
# A numeric column keeps its distinct values and their counts (exact quantiles and distinct count) while it has at
# most this many per column, or its share of EXACT_VALUES_BUDGET if that is larger, so memory stays bounded.
EXACT_QUANTILE_LIMIT = 10_000
EXACT_VALUES_BUDGET = 2_000_000
# Beyond that, quantiles come from this many bins: each lies within (max - min) / 2,000 of the exact quantile
# (plus 0.5 for integer columns, whose estimates are rounded to whole numbers).
QUANTILE_BINS = 2_000
# Integers take the value at the inverse of the empirical CDF (always a value that occurs); floats interpolate linearly.
INTEGER_QUANTILE_METHOD = stats_profile.INTEGER_QUANTILE_METHOD
FLOAT_QUANTILE_METHOD = stats_profile.FLOAT_QUANTILE_METHOD

# Delimiters a spreadsheet in some locales writes instead of commas; a file using one is refused, not parsed.
OTHER_DELIMITERS = ((";", "semicolon", "';'"), ("\t", "tab", "a tab"), ("|", "pipe", "'|'"))
DELIMITER_SAMPLE_LINES = 20

GZIPPED_PARQUET = (
    "a gzip-compressed Parquet file is not supported; Parquet compresses its own pages, so upload the .parquet file"
)


@dataclass
class FileSummary:
    format: str
    columns: list[str]
    row_count: int
    size_bytes: int
    compressed: bool


# ---------------------------------------------------------------------------------------------------------------------
# Format detection


def detect_format(filename: str, head: bytes) -> str:
    """Return "csv", "parquet" or "jsonl" from the file's name and its first bytes (a few KB is plenty)."""
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    name = filename.lower().rsplit("/", 1)[-1]
    gzipped = head.startswith(GZIP_MAGIC)
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix in PARQUET_SUFFIXES:
        if gzipped:
            raise DatasetFileError(GZIPPED_PARQUET)
        return "parquet"
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    content = _gunzip_head(head) if gzipped else head
    if content.startswith(PARQUET_MAGIC):
        raise DatasetFileError(GZIPPED_PARQUET)
    if not _looks_like_text(content):
        raise DatasetFileError(
            f"cannot tell the format of {filename!r}: its content is "
            "neither text nor Parquet; use a .csv, .parquet or .jsonl file"
        )
    # A line that opens with "{" cannot be a sensible CSV header, so such text is JSON Lines.
    return "jsonl" if content.removeprefix(UTF8_BOM).lstrip().startswith(b"{") else "csv"


def _gunzip_head(head: bytes) -> bytes:
    try:
        return zlib.decompressobj(wbits=31).decompress(head, 64 * 1024)
    except zlib.error as exc:
        raise DatasetFileError(f"the file starts like gzip but is not valid gzip data ({exc})") from exc


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    controls = sum(1 for byte in head if byte < 0x20 and byte not in (0x09, 0x0A, 0x0C, 0x0D))
    return controls <= len(head) // 100


# ---------------------------------------------------------------------------------------------------------------------
# Validation


def validate_file(path: Path, *, format: str, max_bytes: int | None = None) -> FileSummary:
    """Check that the file is a well-formed dataset of `format`, reading it once in small blocks.

    Raises DatasetFileError naming the first problem (and its line or column); returns the file's shape otherwise.
    """
    _check_format(format)
    size = path.stat().st_size
    if size == 0:
        raise DatasetFileError("the file is empty")
    if max_bytes is not None and size > max_bytes:
        size_text, limit_text = _megabytes(size), _megabytes(max_bytes)
        if size_text == limit_text:
            size_text, limit_text = f"{size:,} bytes", f"{max_bytes:,} bytes"
        raise DatasetFileError(f"the file is {size_text}, over the {limit_text} limit")
    compressed = is_gzip(path)
    if format == "parquet":
        if compressed:
            raise DatasetFileError(
                "not a Parquet file: it is gzip-compressed; Parquet compresses its own pages, "
                "so upload the .parquet file"
            )
        columns, row_count = _validate_parquet(path, size)
    else:
        with open_bytes(path, compressed) as (_raw, stream):
            lines = text_lines(stream, compressed=compressed)
            columns, row_count = _validate_csv(lines) if format == "csv" else _validate_jsonl(lines)
    return FileSummary(format=format, columns=columns, row_count=row_count, size_bytes=size, compressed=compressed)


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise DatasetFileError(f"unknown format {format!r}; expected one of: {', '.join(FORMATS)}", field="format")


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def _validate_csv(lines: Iterable[str]) -> tuple[list[str], int]:
    remaining = iter(lines)
    sample = list(itertools.islice(remaining, DELIMITER_SAMPLE_LINES))
    _refuse_other_delimiters(sample, complete=len(sample) < DELIMITER_SAMPLE_LINES)
    # strict: a quote left open at the end, or text after a closing quote, is reported rather than silently misread
    reader = csv.reader(itertools.chain(sample, remaining), strict=True)
    header: list[str] | None = None
    row_count = 0
    start = 1  # physical line where the next record begins; a quoted field may span several lines
    try:
        for row in reader:
            if not row:
                start = reader.line_num + 1
                continue
            if header is None:
                header = row
                _check_header_is_not_data(header)
                _check_column_names(header)
            elif len(row) != len(header):
                raise DatasetFileError(f"line {start} has {len(row)} fields but the header has {len(header)}")
            else:
                row_count += 1
            start = reader.line_num + 1
    except csv.Error as exc:
        reason = str(exc)
        if "field larger than field limit" in reason:
            limit = csv.field_size_limit()
            raise DatasetFileError(
                f'line {start}: a field is longer than {limit:,} characters; is a quote (") left open?'
            ) from exc
        if "unexpected end of data" in reason:
            raise DatasetFileError(
                f"line {start}: a quoted field is never closed (the file ends inside the quote)"
            ) from exc
        if "expected after" in reason:
            raise DatasetFileError(
                f'line {reader.line_num}: text follows a closing quote; a quote inside a quoted field is written ""'
            ) from exc
        raise DatasetFileError(f"line {start} cannot be read as CSV ({reason})") from exc
    if header is None:
        raise DatasetFileError("the file is empty" if reader.line_num == 0 else "the file holds only blank lines")
    if row_count == 0:
        raise DatasetFileError("the file has a header but no data rows")
    return header, row_count


def _refuse_other_delimiters(sample: list[str], *, complete: bool) -> None:
    """Refuse a file whose first lines are one column with commas but split evenly on ';', a tab or '|'."""
    by_comma = _sample_records(sample, ",", complete=complete)
    if not by_comma or len(by_comma[0]) != 1:
        return
    for delimiter, name, shown in OTHER_DELIMITERS:
        records = _sample_records(sample, delimiter, complete=complete)
        widths = {len(record) for record in records}
        # Quote-aware, so a semicolon inside quoted text is no delimiter; the header and at least one row must agree.
        if len(records) >= 2 and len(widths) == 1 and widths.pop() >= 2:
            raise DatasetFileError(
                f"the file looks {name}-separated ({shown} splits each of the first {len(records)} rows into "
                f"{len(records[0])} fields); ControlPlane reads comma-separated CSV: save it with commas"
            )
    # Runs of spaces separate numbers in files such as numpy.savetxt's; text with spaces in it is one genuine column.
    lines = [line.split() for line in sample if line.strip()]
    widths = {len(fields) for fields in lines}
    if (
        len(lines) >= 2
        and len(widths) == 1
        and widths.pop() >= 2
        and all(_is_number(field) for fields in lines[1:] for field in fields)
    ):
        raise DatasetFileError(
            f"the file looks space-separated (spaces split each of the first {len(lines)} rows into {len(lines[0])} "
            "fields); ControlPlane reads comma-separated CSV: save it with commas"
        )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_header_is_not_data(header: list[str]) -> None:
    # A file saved without a header would lose its first row to it, and its columns would be named by values.
    if all(_is_number(name) for name in header):
        shown = ", ".join(repr(name) for name in header[:5]) + (", ..." if len(header) > 5 else "")
        raise DatasetFileError(
            f"the first line looks like data, not a header: every column name is a number ({shown}); "
            "add a first line naming the columns"
        )


def _sample_records(sample: list[str], delimiter: str, *, complete: bool) -> list[list[str]]:
    records: list[list[str]] = []
    try:
        for record in csv.reader(sample, delimiter=delimiter):
            if record:
                records.append(record)
    except csv.Error:
        return records[:-1]
    # The last record of a cut sample may be cut inside a quoted field, so it does not count.
    return records if complete else records[:-1]


def _check_column_names(names: list[str]) -> None:
    unnamed = [position for position, name in enumerate(names, 1) if not name.strip()]
    if unnamed:
        which = ", ".join(str(position) for position in unnamed)
        plural = "s" if len(unnamed) > 1 else ""
        raise DatasetFileError(f"column{plural} {which} in the header ha{'ve' if plural else 's'} no name")
    positions: dict[str, list[int]] = {}
    for position, name in enumerate(names, 1):
        positions.setdefault(name, []).append(position)
    repeated = [
        f"{name!r} (columns {', '.join(map(str, found))})" for name, found in positions.items() if len(found) > 1
    ]
    if repeated:
        # A handful is enough to fix the header; a message listing hundreds is unreadable in a form.
        more = f"; and {len(repeated) - 5} more" if len(repeated) > 5 else ""
        raise DatasetFileError(f"column names appear more than once in the header: {'; '.join(repeated[:5])}{more}")


def _validate_jsonl(lines: Iterable[str]) -> tuple[list[str], int]:
    keys: dict[str, None] = {}
    row_count = 0
    line_no = 0
    for line_no, line in enumerate(lines, 1):
        obj = parse_json_line(line, line_no)
        if obj is None:
            continue
        row_count += 1
        for key in obj:
            if key not in keys:
                if not key.strip():
                    raise DatasetFileError(f"line {line_no} has a key with no name")
                if len(keys) >= MAX_JSON_KEYS:
                    raise DatasetFileError(
                        f"line {line_no} brings the number of distinct keys over {MAX_JSON_KEYS:,}; "
                        "a dataset needs the same few fields on every line"
                    )
                keys[key] = None
    if row_count == 0:
        raise DatasetFileError("the file is empty" if line_no == 0 else "the file holds only blank lines")
    return list(keys), row_count


def _validate_parquet(path: Path, size: int) -> tuple[list[str], int]:
    with open(path, "rb") as handle:
        head = handle.read(4)
        handle.seek(max(size - 4, 0))
        tail = handle.read(4)
    if size < 12 or head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        raise DatasetFileError("not a Parquet file: it does not start and end with the PAR1 marker")
    try:
        with pq.ParquetFile(path) as parquet:
            names = list(parquet.schema_arrow.names)
            row_count = parquet.metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise DatasetFileError(f"not a Parquet file: its footer cannot be read ({exc})") from exc
    columns = [name for name in names if not PANDAS_INDEX_COLUMN.fullmatch(name)]
    if not columns:
        raise DatasetFileError("the Parquet file has no columns")
    _check_column_names(columns)
    if row_count == 0:
        raise DatasetFileError("the file has a schema but no data rows")
    return columns, row_count


# ---------------------------------------------------------------------------------------------------------------------
# Profiling (workers.stats does the work)


def profile_files(
    paths: list[Path],
    *,
    format: str,
    progress: Callable[[float], None] | None = None,
    bins: int = 20,
    missing_values: Sequence[str] = DEFAULT_MISSING_VALUES,
) -> dict[str, Any]:
    """Profile the rows of all `paths` together (a manifest's objects, or one file), streaming in record batches.

    Pass 1 finds each column's type, counts, min/max and moments, and counts what it can already; pass 2, for the
    columns that need it, fills histograms on edges fixed by pass 1 (workers.stats.profile). The result is
    JSON-serialisable (no NaN or infinity) and is the drift baseline.

    A value is missing when it is absent or null (JSON null, Parquet null), or when it is text equal to one of
    `missing_values` (a CSV field, a JSON or Parquet string); by default only empty text is.
    """
    _check_format(format)
    missing = _missing_set(missing_values)
    if not paths:
        raise DatasetFileError("there are no files to profile")
    if bins < 1:
        raise ValueError("bins must be at least 1")
    settings = stats_profile.Settings(
        bins=bins,
        levels=QUANTILES,
        distinct_cap=DISTINCT_CAP,
        top_values=TOP_VALUES,
        exact_limit=EXACT_QUANTILE_LIMIT,
        exact_budget=EXACT_VALUES_BUDGET,
        quantile_bins=QUANTILE_BINS,
        max_rows=CHUNK_ROWS,
    )
    tracker = stats_profile.Progress(progress, [path.stat().st_size for path in paths])
    profile = stats_profile.profile_batches(paths, format=format, missing=missing, settings=settings, progress=tracker)
    return {
        "version": PROFILE_VERSION,
        "missing_values": sorted(missing),
        "row_count": profile["row_count"],
        "column_count": len(profile["columns"]),
        "schema": profile["schema"],
        "columns": profile["columns"],
    }


def _missing_set(missing_values: Sequence[str]) -> frozenset[str]:
    if isinstance(missing_values, str) or not all(isinstance(value, str) for value in missing_values):
        raise DatasetFileError(
            f'missing_values must be a list of strings (such as ["", "NA"]), not {missing_values!r}',
            field="missing_values",
        )
    return frozenset(missing_values)


def profile_to_schema(profile: dict[str, Any]) -> list[dict[str, str]]:
    """The profile's schema: one {"name", "type"} per column, in column order."""
    if profile.get("version") != PROFILE_VERSION:
        raise ValueError(f"unsupported profile version {profile.get('version')!r}; expected {PROFILE_VERSION}")
    return [{"name": str(column["name"]), "type": str(column["type"])} for column in profile["schema"]]


# A column of whole numbers in one split and with fractions in another is the same feature, so they are compatible.
_COMPATIBLE_TYPES = {frozenset({"integer", "float"})}


def schemas_compatible(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[str]:
    """Differences between schema `a` ("here", e.g. a validation set) and `b` ("there", e.g. its training set).

    An empty list means compatible.
    """
    here = {str(column["name"]): str(column["type"]) for column in a}
    there = {str(column["name"]): str(column["type"]) for column in b}
    differences = [f"column {name!r} is missing" for name in there if name not in here]
    differences += [f"column {name!r} is extra: it is not there" for name in here if name not in there]
    for name, kind in here.items():
        other = there.get(name)
        if other is not None and other != kind and frozenset({kind, other}) not in _COMPATIBLE_TYPES:
            differences.append(f"column {name!r} is {kind} here but {other} there")
    if [name for name in here if name in there] != [name for name in there if name in here]:
        differences.append("the columns are in a different order here than there")
    return differences
