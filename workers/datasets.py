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
import gzip
import heapq
import io
import itertools
import json
import math
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FORMATS = ("csv", "parquet", "jsonl")
PROFILE_VERSION = 1

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
UTF8_BOM = b"\xef\xbb\xbf"
CSV_SUFFIXES = frozenset({".csv"})
JSONL_SUFFIXES = frozenset({".jsonl", ".json", ".ndjson"})
PARQUET_SUFFIXES = frozenset({".parquet", ".pq", ".parq"})

READ_BLOCK_BYTES = 256 * 1024
MAX_LINE_BYTES = 32_000_000
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
INTEGER_QUANTILE_METHOD = "inverted_cdf"
FLOAT_QUANTILE_METHOD = "linear"
NAN_TEXT = frozenset({"nan", "+nan", "-nan"})

# Delimiters a spreadsheet in some locales writes instead of commas; a file using one is refused, not parsed.
OTHER_DELIMITERS = ((";", "semicolon", "';'"), ("\t", "tab", "a tab"), ("|", "pipe", "'|'"))
DELIMITER_SAMPLE_LINES = 20

BOOLEAN_TEXT = ("true", "false")
INTEGER_TEXT = re.compile(r"\s*[+-]?\d+\s*")
DATETIME_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?")
GZIPPED_PARQUET = (
    "a gzip-compressed Parquet file is not supported; Parquet compresses its own pages, so upload the .parquet file"
)
# pandas writes a non-default index into Parquet under this name; it is not a column of the data.
PANDAS_INDEX_COLUMN = re.compile(r"__index_level_\d+__")


class DatasetFileError(ValueError):
    """The file cannot be used as a dataset version; the message says why in the user's terms."""

    def __init__(self, message: str, field: str = "file") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


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
    compressed = _is_gzip(path)
    if format == "parquet":
        if compressed:
            raise DatasetFileError(
                "not a Parquet file: it is gzip-compressed; Parquet compresses its own pages, "
                "so upload the .parquet file"
            )
        columns, row_count = _validate_parquet(path, size)
    else:
        with _open_bytes(path, compressed) as (_raw, stream):
            lines = _text_lines(stream, compressed=compressed)
            columns, row_count = _validate_csv(lines) if format == "csv" else _validate_jsonl(lines)
    return FileSummary(format=format, columns=columns, row_count=row_count, size_bytes=size, compressed=compressed)


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise DatasetFileError(f"unknown format {format!r}; expected one of: {', '.join(FORMATS)}", field="format")


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


@contextmanager
def _open_bytes(path: Path, compressed: bool) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    """Yield the raw handle (its position measures progress) and the handle to read data from."""
    with open(path, "rb") as raw:
        if compressed:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield raw, stream  # type: ignore[misc]
        else:
            yield raw, raw


def _read_block(stream: IO[bytes], compressed: bool) -> bytes:
    if not compressed:
        return stream.read(READ_BLOCK_BYTES)
    try:
        return stream.read(READ_BLOCK_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetFileError(f"the gzip data is damaged or cut short ({exc})") from exc


def _text_lines(stream: IO[bytes], *, compressed: bool) -> Iterator[str]:
    """Yield the physical lines of UTF-8 text, each ending in "\\n" except perhaps the last; a leading BOM is dropped.

    Decoding happens per block cut at a newline, which never falls inside a UTF-8 sequence, so the first bad byte
    is reported at its true line.
    """
    pending: list[bytes] = []
    pending_bytes = 0
    lines_done = 0
    first = True
    while True:
        block = _read_block(stream, compressed)
        if not block:
            break
        cut = block.rfind(b"\n") + 1
        if cut == 0:
            pending.append(block)
            pending_bytes += len(block)
            if pending_bytes > MAX_LINE_BYTES:
                raise DatasetFileError(
                    f"line {lines_done + 1} is longer than {MAX_LINE_BYTES // 1_000_000} MB; "
                    "is this really a text data file?"
                )
            continue
        data = b"".join([*pending, block[:cut]])
        pending, pending_bytes = [block[cut:]], len(block) - cut
        text = _decode(data, lines_done, first)
        first = False
        lines_done += data.count(b"\n")
        # Split at "\n" only, so every item is one physical line (csv then copes with "\r\n" and quoted newlines).
        yield from io.StringIO(text, newline="\n")
    rest = b"".join(pending)
    if rest:
        yield _decode(rest, lines_done, first)


def _decode(data: bytes, lines_before: int, first: bool) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = lines_before + data.count(b"\n", 0, exc.start) + 1
        raise DatasetFileError(f"not valid UTF-8 text (first bad byte at line {line}); save the file as UTF-8") from exc
    return text[1:] if first and text.startswith("\ufeff") else text


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
        obj = _parse_json_line(line, line_no)
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


def _parse_json_line(line: str, line_no: int) -> dict[str, Any] | None:
    """The line's object, or None for a blank line."""
    text = line.strip()
    if not text:
        return None
    array_hint = "; JSON Lines needs one object per line, not one array" if text.startswith("[") else ""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        detail = array_hint or f" (invalid JSON at column {exc.colno}: {exc.msg}; each line must hold one whole object)"
        raise DatasetFileError(f"line {line_no} is not a JSON object{detail}") from exc
    if not isinstance(obj, dict):
        detail = array_hint or f" (it is {_json_kind(obj)})"
        raise DatasetFileError(f"line {line_no} is not a JSON object{detail}")
    return obj


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "null"


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
# Reading in chunks, the same shape whatever the format


@dataclass
class _Values:
    """One column's non-missing values in one chunk.

    kind "text" and "datetime" hold a pandas Series of str; "integer" and "float" a float64 array; "boolean" a bool
    array.
    """

    kind: str
    data: Any

    def numbers(self) -> np.ndarray:
        if self.kind == "text":
            return pd.to_numeric(self.data, errors="coerce").to_numpy(dtype=np.float64)
        return np.asarray(self.data, dtype=np.float64)

    def texts(self, *, boolean: bool) -> pd.Series:
        if self.kind == "text":
            return self.data.str.lower() if boolean else self.data
        if self.kind == "datetime":
            return self.data
        if self.kind == "boolean":
            return pd.Series(np.where(self.data, "true", "false"), dtype="str")
        if self.kind == "integer":
            return pd.Series(self.data.astype(np.int64), dtype="int64").astype("str")
        return pd.Series([repr(float(value)) for value in self.data], dtype="str")


@dataclass
class _Chunk:
    rows: int
    columns: dict[str, _Values]


class _Progress:
    """Turns bytes read across both passes over all files into increasing fractions, reported now and then."""

    def __init__(self, callback: Callable[[float], None] | None, sizes: list[int]) -> None:
        self.callback = callback
        self.sizes = [max(size, 1) for size in sizes]
        self.total = 2 * sum(self.sizes)
        self.last = 0.0

    def file_offset(self, pass_index: int, file_index: int) -> int:
        return pass_index * sum(self.sizes) + sum(self.sizes[:file_index])

    def report(self, done: float) -> None:
        fraction = done / self.total
        # 1.0 is only said once everything is done; steps below half a percent are not worth a callback.
        if self.callback is not None and self.last + 0.005 <= fraction < 1.0:
            self.last = fraction
            self.callback(fraction)

    def finish(self) -> None:
        if self.callback is not None:
            self.callback(1.0)


def _chunk_rows(column_count: int) -> int:
    return max(1_000, min(CHUNK_ROWS, CHUNK_CELLS // max(column_count, 1)))


def _chunks(
    paths: list[Path], format: str, progress: _Progress, pass_index: int, missing: frozenset[str]
) -> Iterator[_Chunk]:
    for file_index, path in enumerate(paths):
        offset = progress.file_offset(pass_index, file_index)
        size = progress.sizes[file_index]

        def report(fraction: float, offset: int = offset, size: int = size) -> None:
            progress.report(offset + size * min(fraction, 1.0))

        if format == "csv":
            yield from _csv_chunks(path, report, missing)
        elif format == "jsonl":
            yield from _jsonl_chunks(path, report, missing)
        else:
            yield from _parquet_chunks(path, report, missing)


def _csv_chunks(path: Path, report: Callable[[float], None], missing: frozenset[str]) -> Iterator[_Chunk]:
    compressed = _is_gzip(path)
    size = max(path.stat().st_size, 1)
    with _open_bytes(path, compressed) as (raw, stream):
        try:
            header = pd.read_csv(stream, nrows=0, encoding="utf-8-sig", compression=None)
            stream.seek(0)
            # pandas' own list ("NA", "None", "null", "n/a", ...) is off: only the caller's missing values count.
            reader = pd.read_csv(
                stream,
                dtype=str,
                chunksize=_chunk_rows(len(header.columns)),
                encoding="utf-8-sig",
                compression=None,
                keep_default_na=False,
                na_values=sorted(missing),
                na_filter=bool(missing),
            )
            with reader:
                for frame in reader:
                    columns = {str(name): _Values("text", frame[name].dropna()) for name in frame.columns}
                    yield _Chunk(len(frame), columns)
                    report(raw.tell() / size)
        except pd.errors.EmptyDataError as exc:
            raise DatasetFileError("the file is empty") from exc
        except (pd.errors.ParserError, UnicodeDecodeError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise DatasetFileError(f"the CSV file cannot be read; validate it first ({exc})") from exc


def _jsonl_chunks(path: Path, report: Callable[[float], None], missing: frozenset[str]) -> Iterator[_Chunk]:
    compressed = _is_gzip(path)
    size = max(path.stat().st_size, 1)
    with _open_bytes(path, compressed) as (raw, stream):
        rows: list[dict[str, Any]] = []
        cells = 0
        for line_no, line in enumerate(_text_lines(stream, compressed=compressed), 1):
            obj = _parse_json_line(line, line_no)
            if obj is None:
                continue
            rows.append(obj)
            cells += len(obj)
            if cells >= CHUNK_CELLS or len(rows) >= CHUNK_ROWS:
                yield _json_chunk(rows, missing)
                rows, cells = [], 0
                report(raw.tell() / size)
        if rows:
            yield _json_chunk(rows, missing)


def _json_chunk(rows: list[dict[str, Any]], missing: frozenset[str]) -> _Chunk:
    names = dict.fromkeys(itertools.chain.from_iterable(rows))
    return _Chunk(len(rows), {name: _values_from_python([row.get(name) for row in rows], missing) for name in names})


def _values_from_python(column: list[Any], missing: frozenset[str]) -> _Values:
    # JSON null (or an absent key) is missing; the string "null" is text unless the caller named it.
    present = [value for value in column if value is not None and not (isinstance(value, str) and value in missing)]
    types = set(map(type, present))
    if present and types == {bool}:
        return _Values("boolean", np.array(present, dtype=bool))
    if present and types <= {int, float}:
        try:
            numbers = np.array(present, dtype=np.float64)
        except OverflowError:
            numbers = None  # integers beyond float range stay text
        if numbers is not None:
            return _Values("float" if float in types else "integer", numbers)
    texts = [value if isinstance(value, str) else json.dumps(value, sort_keys=True) for value in present]
    return _Values("text", pd.Series(texts, dtype="str"))


def _parquet_chunks(path: Path, report: Callable[[float], None], missing: frozenset[str]) -> Iterator[_Chunk]:
    try:
        with pq.ParquetFile(path) as parquet:
            total = max(parquet.metadata.num_rows, 1)
            done = 0
            for batch in parquet.iter_batches(batch_size=_chunk_rows(len(parquet.schema_arrow.names))):
                columns = {
                    name: _values_from_arrow(batch.column(index), missing)
                    for index, name in enumerate(batch.schema.names)
                    if not PANDAS_INDEX_COLUMN.fullmatch(name)
                }
                yield _Chunk(batch.num_rows, columns)
                done += batch.num_rows
                report(done / total)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetFileError(f"the Parquet file cannot be read ({exc})") from exc


def _values_from_arrow(array: pa.Array, missing: frozenset[str]) -> _Values:
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    array = array.drop_null()
    kind = array.type
    if pa.types.is_boolean(kind):
        return _Values("boolean", array.to_numpy(zero_copy_only=False))
    if pa.types.is_integer(kind):
        return _Values("integer", array.to_numpy(zero_copy_only=False).astype(np.float64))
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        # A stored NaN is a value (not a number), not a null: it is counted as non-finite, as "nan" in a CSV is.
        return _Values("float", pc.cast(array, pa.float64(), safe=False).to_numpy(zero_copy_only=False))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        if missing:
            array = array.filter(pc.invert(pc.is_in(array, value_set=pa.array(sorted(missing), type=array.type))))
        return _Values("text", pd.Series(array.to_pandas(), dtype="str"))
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        texts = pc.replace_substring_regex(array.cast(pa.string()), pattern=r"\.0+(Z?)$", replacement=r"\1")
        return _Values("datetime", pd.Series(texts.to_pandas(), dtype="str"))
    texts_list = [_to_text(value) for value in array.to_pylist()]
    return _Values("text", pd.Series(texts_list, dtype="str"))


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.hex()
    return json.dumps(value, sort_keys=True, default=str)


# ---------------------------------------------------------------------------------------------------------------------
# Profiling


class _ColumnStats:
    """Pass 1 for one column: what type its values fit, and the numeric moments in case it is numeric."""

    def __init__(self) -> None:
        self.count = 0  # non-missing values
        self.numeric = True
        self.integral = True
        self.boolean = True
        self.datetime = True
        self.whole = True  # every finite number is a whole number ("3.0" too), whatever the column's type
        self.non_finite = 0  # inf, -inf and NaN: values, not missing, but outside every statistic
        self.n = 0  # finite numbers, combined with Chan's parallel update
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf

    def observe(self, values: _Values) -> None:
        size = len(values.data)
        if size == 0:
            return
        self.count += size
        if values.kind == "text":
            texts = values.data
            if self.numeric:
                numbers = pd.to_numeric(texts, errors="coerce")
                failed = numbers.isna()
                # "nan" parses to NaN too, so only text that is not a spelling of NaN makes the column non-numeric.
                if failed.any() and not texts[failed].str.strip().str.lower().isin(NAN_TEXT).all():
                    self.numeric = False
                else:
                    self.boolean = self.datetime = False
                    parsed = numbers.to_numpy(dtype=np.float64)
                    if self.integral:
                        finite = parsed[np.isfinite(parsed)]
                        # A fractional value settles it without looking at the text; only whole values
                        # need the text check (to tell "3" from "3.0").
                        self.integral = bool(np.all(finite == np.floor(finite))) and bool(
                            texts.str.fullmatch(INTEGER_TEXT).all()
                        )
                    self._add_numbers(parsed)
                    return
            if self.boolean:
                self.boolean = bool(texts.str.lower().isin(BOOLEAN_TEXT).all())
            if self.datetime:
                self.datetime = bool(texts.str.fullmatch(DATETIME_TEXT).all())
        elif values.kind in ("integer", "float"):
            self.boolean = self.datetime = False
            self.integral = self.integral and values.kind == "integer"
            if self.numeric:
                self._add_numbers(np.asarray(values.data, dtype=np.float64))
        elif values.kind == "boolean":
            self.numeric = self.datetime = False
        else:
            self.numeric = self.boolean = False

    def _add_numbers(self, numbers: np.ndarray) -> None:
        finite = np.isfinite(numbers)
        if not finite.all():
            self.non_finite += int((~finite).sum())
            numbers = numbers[finite]
        n_b = numbers.size
        if n_b == 0:
            return
        self.whole = self.whole and bool(np.all(numbers == np.floor(numbers)))
        mean_b = float(numbers.mean())
        m2_b = float(np.square(numbers - mean_b).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n
        self.min = min(self.min, float(numbers.min()))
        self.max = max(self.max, float(numbers.max()))

    def type(self) -> str:
        if self.count == 0:
            return "string"
        if self.boolean:
            return "boolean"
        if self.numeric:
            return "integer" if self.integral else "float"
        if self.datetime:
            return "datetime"
        return "string"


def _histogram_edges(low: float, high: float, bins: int) -> np.ndarray:
    edges = np.linspace(low, high, bins + 1)
    if high > low and bool(np.all(np.diff(edges) > 0)):
        return edges
    # A constant (or all but constant) column gets a window around its value, so no bin has zero width.
    centre = (low + high) / 2
    half = 0.5 * max(1.0, abs(centre))
    return np.linspace(centre - half, centre + half, bins + 1)


class _Distribution:
    """Pass 2 for one numeric column: the histogram on fixed edges, and what its quantiles and distinct count need.

    While the column has at most `exact_cap` distinct numbers it keeps each with its count, so its quantiles and
    distinct count are exact; past that it keeps only counts in QUANTILE_BINS fine bins (a sketch).
    """

    def __init__(self, stats: _ColumnStats, bins: int, *, integer: bool, exact_cap: int) -> None:
        self.stats = stats
        self.integer = integer
        self.exact_cap = exact_cap
        if integer and stats.max - stats.min + 1 <= bins:
            # Few whole numbers (a year, a count of children): one bin per value, centred on it, so no bin is empty
            # between two values and none is split across one.
            self.edges = np.arange(stats.min - 0.5, stats.max + 1.0, 1.0)
        else:
            self.edges = _histogram_edges(stats.min, stats.max, bins)
        self.counts = np.zeros(len(self.edges) - 1, dtype=np.int64)
        self.values: np.ndarray | None = np.zeros(0, dtype=np.float64)  # None once past exact_cap
        self.value_counts = np.zeros(0, dtype=np.int64)
        fine_edges = _histogram_edges(stats.min, stats.max, QUANTILE_BINS)
        self.fine_range = (float(fine_edges[0]), float(fine_edges[-1]))
        self.fine_counts = np.zeros(QUANTILE_BINS, dtype=np.int64)

    @property
    def exact(self) -> bool:
        return self.values is not None

    def add(self, numbers: np.ndarray) -> None:
        numbers = numbers[np.isfinite(numbers)]
        if numbers.size == 0:
            return
        self.counts += np.histogram(numbers, bins=self.edges)[0]
        self.fine_counts += np.histogram(numbers, bins=QUANTILE_BINS, range=self.fine_range)[0]
        if self.values is None:
            return
        found, counts = np.unique(numbers, return_counts=True)
        merged, where = np.unique(np.concatenate([self.values, found]), return_inverse=True)
        if merged.size > self.exact_cap:
            # Whether the cap is ever passed depends only on the final distinct count, not on how rows were chunked.
            self.values = None
            self.value_counts = np.zeros(0, dtype=np.int64)
            return
        totals = np.zeros(merged.size, dtype=np.int64)
        np.add.at(totals, where, np.concatenate([self.value_counts, counts]))
        self.values, self.value_counts = merged, totals

    def distinct(self) -> tuple[int, bool]:
        """The number of distinct finite values and whether it is capped (then there are more than that many)."""
        if self.values is None:
            return self.exact_cap, True
        return int(self.values.size), False

    def quantiles(self) -> dict[str, float | None]:
        if self.stats.n == 0:
            return dict.fromkeys(QUANTILES)
        order_statistic = self._exact_order_statistic if self.exact else self._estimated_order_statistic
        n = self.stats.n
        result: dict[str, float | None] = {}
        for key, q in QUANTILES.items():
            if self.integer:
                # numpy's inverted_cdf: the smallest value whose cumulative share reaches q, a value that occurs.
                result[key] = float(round(order_statistic(max(math.ceil(n * q) - 1, 0))))
                continue
            # numpy's linear method: interpolate between the order statistics around rank (n - 1) q.
            rank = (n - 1) * q
            below = math.floor(rank)
            fraction = rank - below
            low = order_statistic(below)
            if fraction == 0:
                result[key] = low
                continue
            high = order_statistic(below + 1)
            # numpy's lerp, so an exact quantile equals np.quantile's to the last bit
            diff = high - low
            result[key] = high - diff * (1 - fraction) if fraction >= 0.5 else low + diff * fraction
        return result

    def _exact_order_statistic(self, k: int) -> float:
        assert self.values is not None
        cumulative = np.cumsum(self.value_counts)
        return float(self.values[int(np.searchsorted(cumulative, k, side="right"))])

    def _estimated_order_statistic(self, k: int) -> float:
        """The k-th smallest number (from 0), placed evenly within its fine bin, so off by less than one bin width."""
        if k <= 0:
            return self.stats.min
        if k >= self.stats.n - 1:
            return self.stats.max
        cumulative = np.cumsum(self.fine_counts)
        index = int(np.searchsorted(cumulative, k, side="right"))
        before = int(cumulative[index - 1]) if index else 0
        low, high = self.fine_range
        width = (high - low) / QUANTILE_BINS
        estimate = low + (index + (k - before + 0.5) / int(self.fine_counts[index])) * width
        return min(max(estimate, self.stats.min), self.stats.max)


class _ValueCounter:
    """Pass 2 for one categorical column: exact counts up to DISTINCT_CAP distinct values, heavy hitters beyond."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.capped = False

    def add(self, texts: pd.Series) -> None:
        if len(texts) == 0:
            return
        found = texts.value_counts(sort=False)
        counts = self.counts
        for value, count in zip(found.index.tolist(), found.to_numpy().tolist(), strict=True):
            counts[value] = counts.get(value, 0) + count
        if len(counts) > DISTINCT_CAP:
            self.capped = True
        if len(counts) > 2 * DISTINCT_CAP:
            # Past the cap keep the heaviest values only; a dropped value that returns restarts at zero, so the
            # top counts become lower bounds (exact while distinct_capped is false).
            self.counts = dict(heapq.nlargest(DISTINCT_CAP, counts.items(), key=lambda item: item[1]))

    def summary(self) -> dict[str, Any]:
        top = heapq.nsmallest(TOP_VALUES, self.counts.items(), key=lambda item: (-item[1], item[0]))
        return {
            "distinct": DISTINCT_CAP if self.capped else len(self.counts),
            "distinct_capped": self.capped,
            "top": [{"value": value, "count": count} for value, count in top],
        }


def profile_files(
    paths: list[Path],
    *,
    format: str,
    progress: Callable[[float], None] | None = None,
    bins: int = 20,
    missing_values: Sequence[str] = DEFAULT_MISSING_VALUES,
) -> dict[str, Any]:
    """Profile the rows of all `paths` together (a manifest's objects, or one file) in two streaming passes.

    Pass 1 finds each column's type, counts, min/max and moments; pass 2 fills histograms on edges fixed by pass 1,
    and counts categorical values. The result is JSON-serialisable (no NaN or infinity) and is the drift baseline.

    A value is missing when it is absent or null (JSON null, Parquet null), or when it is text equal to one of
    `missing_values` (a CSV field, a JSON or Parquet string); by default only empty text is.
    """
    _check_format(format)
    missing = _missing_set(missing_values)
    if not paths:
        raise DatasetFileError("there are no files to profile")
    if bins < 1:
        raise ValueError("bins must be at least 1")
    tracker = _Progress(progress, [path.stat().st_size for path in paths])

    stats: dict[str, _ColumnStats] = {}
    row_count = 0
    for chunk in _chunks(paths, format, tracker, 0, missing):
        row_count += chunk.rows
        for name, values in chunk.columns.items():
            stats.setdefault(name, _ColumnStats()).observe(values)

    types = {name: column.type() for name, column in stats.items()}
    numeric_names = [name for name, column in stats.items() if types[name] in ("integer", "float") and column.n > 0]
    exact_cap = max(EXACT_QUANTILE_LIMIT, EXACT_VALUES_BUDGET // max(len(numeric_names), 1))
    distributions = {
        name: _Distribution(stats[name], bins, integer=types[name] == "integer", exact_cap=exact_cap)
        for name in numeric_names
    }
    counters = {name: _ValueCounter() for name, kind in types.items() if kind not in ("integer", "float")}
    for chunk in _chunks(paths, format, tracker, 1, missing):
        for name, values in chunk.columns.items():
            if name in distributions:
                distributions[name].add(values.numbers())
            elif name in counters:
                counters[name].add(values.texts(boolean=types[name] == "boolean"))
    tracker.finish()

    columns: dict[str, dict[str, Any]] = {}
    for name, column in stats.items():
        kind = types[name]
        numeric = kind in ("integer", "float")
        absent = row_count - column.count
        entry: dict[str, Any] = {
            "type": kind,
            "kind": "numeric" if numeric else "categorical",
            # numeric: the finite numbers the statistics cover; count + missing + non_finite == row_count
            "count": column.n if numeric else column.count,
            "missing": absent,
            "missing_fraction": absent / row_count if row_count else 0.0,
            "non_finite": column.non_finite if numeric else 0,
            # What a training target's check reads: numeric with only whole numbers (3 and 3.0 alike), or not numeric.
            "integer_valued": (column.whole if column.n else None) if numeric else None,
        }
        if numeric:
            entry.update(_numeric_summary(column, distributions.get(name), bins))
        else:
            entry.update(counters[name].summary())
        columns[name] = entry
    return {
        "version": PROFILE_VERSION,
        "missing_values": sorted(missing),
        "row_count": row_count,
        "column_count": len(columns),
        "schema": [{"name": name, "type": types[name]} for name in stats],
        "columns": columns,
    }


def _numeric_summary(column: _ColumnStats, distribution: _Distribution | None, bins: int) -> dict[str, Any]:
    if distribution is None:
        # Every value was missing or infinite: there is nothing to place on a number line.
        return {
            "min": None,
            "max": None,
            "mean": None,
            "std": None,
            "quantiles": dict.fromkeys(QUANTILES),
            "quantiles_exact": True,
            "quantile_method": INTEGER_QUANTILE_METHOD if column.integral else FLOAT_QUANTILE_METHOD,
            "histogram": {"edges": [], "counts": []},
            "distinct": 0,
            "distinct_capped": False,
        }
    distinct, capped = distribution.distinct()
    return {
        "min": _finite(column.min),
        "max": _finite(column.max),
        "mean": _finite(column.mean),
        "std": _finite(math.sqrt(column.m2 / (column.n - 1))) if column.n > 1 else None,
        "quantiles": {key: _finite(value) for key, value in distribution.quantiles().items()},
        # False: estimated from QUANTILE_BINS fine bins (the sketch), within (max - min) / QUANTILE_BINS
        "quantiles_exact": distribution.exact,
        "quantile_method": INTEGER_QUANTILE_METHOD if distribution.integer else FLOAT_QUANTILE_METHOD,
        # distinct finite numbers; when capped, there are more than `distinct`
        "distinct": distinct,
        "distinct_capped": capped,
        "histogram": {
            "edges": [float(edge) for edge in distribution.edges],
            "counts": [int(count) for count in distribution.counts],
        },
    }


def _missing_set(missing_values: Sequence[str]) -> frozenset[str]:
    if isinstance(missing_values, str) or not all(isinstance(value, str) for value in missing_values):
        raise DatasetFileError(
            f'missing_values must be a list of strings (such as ["", "NA"]), not {missing_values!r}',
            field="missing_values",
        )
    return frozenset(missing_values)


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


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
