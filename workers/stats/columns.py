"""Record-batch readers: CSV, JSON Lines and Parquet files as typed columnar batches, never all rows at once.

Every reader yields `Batch`es of the same shape: per column, its non-missing values in one of five kinds ("text",
"datetime", "integer", "float", "boolean"). CSV is read with pyarrow's streaming reader in blocks of
`BLOCK_BYTES`; a column comes as text unless the caller names its type (the profiler's second pass reads the
numeric columns as float64, parsed in C++ rather than as Python text). JSON Lines are parsed line by line, Parquet
in its own record batches.

Missing: a null (JSON, Parquet), an absent key, or text equal to one of the caller's `missing` values.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

GZIP_MAGIC = b"\x1f\x8b"
READ_BLOCK_BYTES = 256 * 1024
MAX_LINE_BYTES = 32_000_000
# pyarrow parses a CSV file in blocks of this size at most (smaller files in smaller blocks, so progress moves).
# pyarrow parses CSV in blocks of this size; larger blocks cost memory (the reader holds several) and no speed.
BLOCK_BYTES = 1024 * 1024
# Blocks are gathered into batches of up to this many parsed bytes, so per-batch overheads stay small.
BATCH_BYTES = 8 * 1024 * 1024
HEADER_BLOCK_BYTES = 64 * 1024
# A JSON Lines batch holds at most this many cells, so wide files get fewer rows per batch and memory stays flat.
BATCH_CELLS = 2_000_000
BATCH_ROWS = 100_000

# pandas writes a non-default index into Parquet under this name; it is not a column of the data.
PANDAS_INDEX_COLUMN = re.compile(r"__index_level_\d+__")

KINDS = ("text", "datetime", "integer", "float", "boolean")


class DatasetFileError(ValueError):
    """The file cannot be used as a dataset version; the message says why in the user's terms."""

    def __init__(self, message: str, field: str = "file") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass
class Values:
    """One column's non-missing values in one batch.

    kind "text" and "datetime": a pyarrow string array; "integer" and "float": a float64 NumPy array; "boolean": a
    bool NumPy array.
    """

    kind: str
    data: Any

    def __len__(self) -> int:
        return len(self.data)


@dataclass
class Batch:
    rows: int
    columns: dict[str, Values]


# pyarrow.array() imports pandas (to check for pandas input) the first time it runs; the CSV path builds its few
# arrays from buffers instead, so profiling a CSV file never pays for that import.


def arrow_bools(mask: np.ndarray) -> pa.Array:
    bits = np.packbits(np.asarray(mask, dtype=bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), int(mask.size), [None, pa.py_buffer(bits)])


def arrow_int64s(values: np.ndarray) -> pa.Array:
    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), int(data.size), [None, pa.py_buffer(data)])


def numpy_of(array: pa.Array | pa.ChunkedArray, *, fill: Any = None) -> np.ndarray:
    """A primitive array as NumPy, nulls replaced by `fill` (Array.to_numpy imports pandas, like pyarrow.array)."""
    if isinstance(array, pa.ChunkedArray):
        if array.num_chunks == 1:
            return numpy_of(array.chunk(0), fill=fill)
        dtype = np.dtype(array.type.to_pandas_dtype())
        return np.concatenate([np.zeros(0, dtype=dtype), *(numpy_of(chunk, fill=fill) for chunk in array.chunks)])
    dtype = np.dtype(array.type.to_pandas_dtype())
    size = len(array)
    if size == 0:
        return np.zeros(0, dtype=dtype)
    data = np.frombuffer(array.buffers()[1], dtype=dtype, count=size, offset=array.offset * dtype.itemsize)
    if not array.null_count:
        return data
    if fill is None:
        raise ValueError("the array has nulls and no fill was given")
    bits = np.unpackbits(np.frombuffer(array.buffers()[0], dtype=np.uint8), bitorder="little")
    valid = bits[array.offset : array.offset + size].astype(bool)
    return np.where(valid, data, fill)


def arrow_strings(values: Sequence[str]) -> pa.Array:
    encoded = [value.encode() for value in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(item) for item in encoded], out=offsets[1:])
    return pa.Array.from_buffers(
        pa.string(), len(encoded), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    )


# ---------------------------------------------------------------------------------------------------------------------
# Byte and line streams, shared with validation


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


@contextmanager
def open_bytes(path: Path, compressed: bool) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    """Yield the raw handle (its position measures progress) and the handle to read data from."""
    with open(path, "rb") as raw:
        if compressed:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield raw, stream  # type: ignore[misc]
        else:
            yield raw, raw


def read_block(stream: IO[bytes], compressed: bool) -> bytes:
    if not compressed:
        return stream.read(READ_BLOCK_BYTES)
    try:
        return stream.read(READ_BLOCK_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetFileError(f"the gzip data is damaged or cut short ({exc})") from exc


def text_lines(stream: IO[bytes], *, compressed: bool) -> Iterator[str]:
    """Yield the physical lines of UTF-8 text, each ending in "\\n" except perhaps the last; a leading BOM is dropped.

    Decoding happens per block cut at a newline, which never falls inside a UTF-8 sequence, so the first bad byte
    is reported at its true line.
    """
    pending: list[bytes] = []
    pending_bytes = 0
    lines_done = 0
    first = True
    while True:
        block = read_block(stream, compressed)
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


def parse_json_line(line: str, line_no: int) -> dict[str, Any] | None:
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


# ---------------------------------------------------------------------------------------------------------------------
# The readers


def read_batches(
    path: Path,
    format: str,
    missing: frozenset[str],
    *,
    report: Callable[[float], None],
    max_rows: int = BATCH_ROWS,
    columns: Sequence[str] | None = None,
    csv_types: dict[str, pa.DataType] | None = None,
    rows: int | None = None,
) -> Iterator[Batch]:
    """The file's rows in batches of at most `max_rows`; `report` gets the fraction of the file read so far.

    `columns` limits the batches to those columns (all when None; a column the file lacks is left out). For CSV,
    `csv_types` names a column's type; every other column is read as text. `rows`, the file's row count when known
    (a second pass), makes CSV progress exact.
    """
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    if format == "csv":
        return _csv_batches(path, missing, report, max_rows, columns, csv_types or {}, rows)
    if format == "jsonl":
        return _jsonl_batches(path, missing, report, max_rows, columns)
    return _parquet_batches(path, missing, report, max_rows, columns)


def csv_header(path: Path) -> list[str]:
    """The CSV file's column names, as pyarrow reads them (a leading BOM and blank lines skipped)."""
    compressed = is_gzip(path)
    block = HEADER_BLOCK_BYTES
    while True:
        with open_bytes(path, compressed) as (_raw, stream):
            try:
                reader = pa_csv.open_csv(
                    stream,
                    read_options=pa_csv.ReadOptions(block_size=block, use_threads=False),
                    parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                )
            except (pa.ArrowException, OSError, EOFError, zlib.error) as exc:
                # a header (or first row) longer than the block is read again in a larger one
                reason = str(exc)
                short = "straddling" in reason or "cannot infer number of columns" in reason
                if isinstance(exc, pa.ArrowInvalid) and short and block < MAX_LINE_BYTES:
                    block *= 8
                    continue
                raise _csv_error(exc) from exc
            names = list(reader.schema.names)
            reader.close()
        return names


def _csv_error(exc: Exception) -> DatasetFileError:
    if "Empty CSV file" in str(exc):
        return DatasetFileError("the file is empty")
    return DatasetFileError(f"the CSV file cannot be read; validate it first ({exc})")


def _csv_batches(
    path: Path,
    missing: frozenset[str],
    report: Callable[[float], None],
    max_rows: int,
    columns: Sequence[str] | None,
    csv_types: dict[str, pa.DataType],
    rows: int | None,
) -> Iterator[Batch]:
    names = csv_header(path)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        # validate_file refuses such a header; a batch could not tell the columns apart
        shown = ", ".join(repr(name) for name in repeated[:5])
        raise DatasetFileError(f"the CSV file cannot be read; validate it first (column names repeated: {shown})")
    wanted = names if columns is None else [name for name in names if name in set(columns)]
    if not wanted:
        return
    compressed = is_gzip(path)
    size = max(path.stat().st_size, 1)
    # Only the caller's missing values are null (pyarrow's own list, "NA", "null" and more, is off); "" quoted or
    # not is the same empty text, as it was for pandas.
    convert = pa_csv.ConvertOptions(
        column_types={name: csv_types.get(name, pa.string()) for name in wanted},
        include_columns=wanted,
        null_values=csv_missing_spellings(missing),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    done = 0
    with open_bytes(path, compressed) as (raw, stream):
        try:
            reader = pa_csv.open_csv(
                stream,
                read_options=pa_csv.ReadOptions(block_size=BLOCK_BYTES, use_threads=True),
                parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                convert_options=convert,
            )
            with reader:
                gathered: list[pa.RecordBatch] = []
                gathered_rows = gathered_bytes = 0
                for record_batch in reader:
                    gathered.append(record_batch)
                    gathered_rows += record_batch.num_rows
                    gathered_bytes += record_batch.nbytes
                    if gathered_rows >= max_rows or gathered_bytes >= BATCH_BYTES:
                        yield from _csv_gathered(gathered, max_rows)
                        gathered, gathered_rows, gathered_bytes = [], 0, 0
                    # pyarrow reads ahead of the batches it yields, so the position alone runs early; the parsed
                    # bytes (text a little larger than the file) or, when known, the rows are the better measure.
                    done += record_batch.num_rows if rows else record_batch.nbytes
                    report(done / rows if rows else min(done, raw.tell()) / size)
                if not done:
                    # a header and no rows: the columns, with no values
                    empty = {name: Values("text", pa.chunked_array([], type=pa.string())) for name in wanted}
                    yield Batch(0, empty)
                yield from _csv_gathered(gathered, max_rows)
        except (pa.ArrowException, OSError, EOFError, zlib.error) as exc:
            raise _csv_error(exc) from exc


def _csv_gathered(gathered: list[pa.RecordBatch], max_rows: int) -> Iterator[Batch]:
    # The gathered blocks stay apart (a chunked array per column): joining them would copy every string.
    if not gathered:
        return
    table = pa.Table.from_batches(gathered)
    for start in range(0, table.num_rows, max_rows):
        part = table.slice(start, max_rows)
        yield Batch(part.num_rows, {name: _csv_values(part.column(name)) for name in part.column_names})


def csv_missing_spellings(missing: frozenset[str]) -> list[str]:
    """The texts a CSV field equals to be missing: the caller's, and (as pandas.read_csv took them, so CSV profiles
    keep their meaning) the plain spellings of a whole number given as one: "-999" also means "-999.0".
    """
    spellings = set(missing)
    for text in missing:
        try:
            number = float(text)
            if number == int(number):
                spellings.update({str(int(number)), f"{int(number)}.0"})
        except (ValueError, OverflowError):
            pass
    return sorted(spellings)


def _csv_values(column: pa.ChunkedArray) -> Values:
    present = column.drop_null() if column.null_count else column
    if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
        numbers = numpy_of(present).astype(np.float64, copy=False)
        return Values("float" if pa.types.is_floating(column.type) else "integer", numbers)
    return Values("text", present)


def _jsonl_batches(
    path: Path,
    missing: frozenset[str],
    report: Callable[[float], None],
    max_rows: int,
    columns: Sequence[str] | None,
) -> Iterator[Batch]:
    compressed = is_gzip(path)
    size = max(path.stat().st_size, 1)
    wanted = None if columns is None else set(columns)
    with open_bytes(path, compressed) as (raw, stream):
        rows: list[dict[str, Any]] = []
        cells = 0
        for line_no, line in enumerate(text_lines(stream, compressed=compressed), 1):
            obj = parse_json_line(line, line_no)
            if obj is None:
                continue
            rows.append(obj)
            cells += len(obj)
            if cells >= BATCH_CELLS or len(rows) >= max_rows:
                yield _json_batch(rows, missing, wanted)
                rows, cells = [], 0
                report(raw.tell() / size)
        if rows:
            yield _json_batch(rows, missing, wanted)


def _json_batch(rows: list[dict[str, Any]], missing: frozenset[str], wanted: set[str] | None) -> Batch:
    names: Iterable[str] = dict.fromkeys(itertools.chain.from_iterable(rows))
    if wanted is not None:
        names = [name for name in names if name in wanted]
    return Batch(len(rows), {name: _values_from_python([row.get(name) for row in rows], missing) for name in names})


def _values_from_python(column: list[Any], missing: frozenset[str]) -> Values:
    # JSON null (or an absent key) is missing; the string "null" is text unless the caller named it.
    present = [value for value in column if value is not None and not (isinstance(value, str) and value in missing)]
    types = set(map(type, present))
    if present and types == {bool}:
        return Values("boolean", np.array(present, dtype=bool))
    if present and types <= {int, float}:
        try:
            numbers = np.array(present, dtype=np.float64)
        except OverflowError:
            numbers = None  # integers beyond float range stay text
        if numbers is not None:
            return Values("float" if float in types else "integer", numbers)
    texts = [value if isinstance(value, str) else json.dumps(value, sort_keys=True) for value in present]
    return Values("text", pa.array(texts, type=pa.string()))


def _parquet_batches(
    path: Path,
    missing: frozenset[str],
    report: Callable[[float], None],
    max_rows: int,
    columns: Sequence[str] | None,
) -> Iterator[Batch]:
    try:
        with pq.ParquetFile(path) as parquet:
            names = [name for name in parquet.schema_arrow.names if not PANDAS_INDEX_COLUMN.fullmatch(name)]
            if columns is not None:
                names = [name for name in names if name in set(columns)]
            if not names:
                return
            total = max(parquet.metadata.num_rows, 1)
            done = 0
            rows = min(max_rows, max(1_000, BATCH_CELLS // len(names)))
            for record_batch in parquet.iter_batches(batch_size=rows, columns=names):
                yield Batch(
                    record_batch.num_rows,
                    {
                        name: _values_from_arrow(record_batch.column(index), missing)
                        for index, name in enumerate(record_batch.schema.names)
                    },
                )
                done += record_batch.num_rows
                report(done / total)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetFileError(f"the Parquet file cannot be read ({exc})") from exc


def _values_from_arrow(array: pa.Array, missing: frozenset[str]) -> Values:
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    array = array.drop_null()
    kind = array.type
    if pa.types.is_boolean(kind):
        return Values("boolean", array.to_numpy(zero_copy_only=False))
    if pa.types.is_integer(kind):
        return Values("integer", array.to_numpy(zero_copy_only=False).astype(np.float64))
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        # A stored NaN is a value (not a number), not a null: it is counted as non-finite, as "nan" in a CSV is.
        return Values("float", pc.cast(array, pa.float64(), safe=False).to_numpy(zero_copy_only=False))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        if missing:
            array = array.filter(pc.invert(pc.is_in(array, value_set=pa.array(sorted(missing), type=array.type))))
        return Values("text", array.cast(pa.string()))
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        texts = pc.replace_substring_regex(array.cast(pa.string()), pattern=r"\.0+(Z?)$", replacement=r"\1")
        return Values("datetime", texts)
    return Values("text", pa.array([_to_text(value) for value in array.to_pylist()], type=pa.string()))


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.hex()
    return json.dumps(value, sort_keys=True, default=str)


# ---------------------------------------------------------------------------------------------------------------------
# What text spells: numbers, whole numbers, booleans, datetimes. pyarrow's parsers (C++, vectorized) answer first;
# where they refuse a batch, pandas and Python's re decide it exactly as before, so the answer never depends on
# which one ran.

NAN_TEXT = ("nan", "+nan", "-nan")
BOOLEAN_TEXT = ("true", "false")
INTEGER_TEXT = re.compile(r"\s*[+-]?\d+\s*")
DATETIME_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?")
# RE2 (pyarrow's regex engine) reads this pattern as Python does on ASCII text; "\d" differs only beyond ASCII.
_DATETIME_RE2 = "^" + DATETIME_TEXT.pattern + "$"
# Characters outside every spelling pandas.to_numeric takes: digits, sign, point, exponent, inf, infinity, nan, space.
_NOT_IN_NUMBERS = r"[^0-9.+\-eEiInNfFtTyYaA \t\n\r\f\v]"


def text_numbers(texts: pa.Array) -> tuple[np.ndarray | None, bool]:
    """The float64 numbers the texts spell (NaN for a spelling of NaN), or None when one is not a number.

    The flag says whether pyarrow parsed them all; False when pandas had to (" 12", say, which pyarrow's parser
    refuses and `pandas.to_numeric` takes), so the caller knows the column cannot be re-read as float64 by pyarrow.
    """
    if _plainly_text(texts):
        return None, True
    try:
        parsed = pc.cast(texts, pa.float64())
    except pa.ArrowInvalid:
        return _pandas_numbers(texts), False
    numbers = numpy_of(parsed)
    nan = np.isnan(numbers)
    if nan.any():
        spelled = pc.utf8_lower(pc.utf8_trim_whitespace(texts.filter(arrow_bools(nan))))
        if not pc.all(pc.is_in(spelled, value_set=arrow_strings(NAN_TEXT))).as_py():
            return _pandas_numbers(texts), False
    return numbers, True


def _plainly_text(texts: pa.Array) -> bool:
    """A letter no number's spelling has ("retail", "c123") among the first values: not numbers, whatever follows."""
    return bool(pc.any(pc.match_substring_regex(texts.slice(0, 64), _NOT_IN_NUMBERS)).as_py())


def _pandas_numbers(texts: pa.Array) -> np.ndarray | None:
    if _plainly_text(texts):
        return None
    import pandas as pd

    series = pd.Series(texts.to_pandas(), dtype="str")
    numbers = pd.to_numeric(series, errors="coerce")
    failed = numbers.isna()
    # "nan" parses to NaN too, so only text that is not a spelling of NaN makes the column non-numeric.
    if failed.any() and not series[failed].str.strip().str.lower().isin(NAN_TEXT).all():
        return None
    return numbers.to_numpy(dtype=np.float64)


def text_integers(texts: pa.Array) -> np.ndarray | None:
    """The numbers, as float64, when every text is a whole number in digits with an optional "-"; else None.

    One parse for a column of integers instead of two (as a float, then to check it is written as an integer).
    """
    # Digits after any "-" first: a failing cast costs far more than this check, and it keeps out hex ("0x1F"),
    # which pyarrow's integer parser takes and pandas does not.
    if not pc.all(pc.ascii_is_decimal(pc.ascii_ltrim(texts, characters="-"))).as_py():
        return None
    try:
        parsed = pc.cast(texts, pa.int64())
    except pa.ArrowInvalid:
        return None  # "--3", or beyond 64 bits
    return numpy_of(parsed).astype(np.float64)


def texts_are_integers(texts: pa.Array, numbers: np.ndarray) -> bool:
    """Whether every text is written as a whole number ("3", not "3.0" or "nan"); `numbers` are what they spell."""
    if not bool(np.all(np.isfinite(numbers))) or not bool(np.all(numbers == np.floor(numbers))):
        return False  # a fraction or non-finite value settles it without looking at the text
    try:
        # pyarrow's integer parser takes digits with an optional "-" (and hex, which is no number to its float
        # parser, so none is here); what it refuses ("+3", " 3", more than 64 bits) goes to the pattern.
        pc.cast(texts, pa.int64())
        return True
    except pa.ArrowInvalid:
        return all(INTEGER_TEXT.fullmatch(text) for text in texts.to_pylist())


def texts_are_booleans(texts: pa.Array) -> bool:
    return bool(pc.all(pc.is_in(pc.utf8_lower(texts), value_set=arrow_strings(BOOLEAN_TEXT))).as_py())


def texts_are_datetimes(texts: pa.Array) -> bool:
    if pc.all(pc.string_is_ascii(texts)).as_py():
        return bool(pc.all(pc.match_substring_regex(texts, _DATETIME_RE2)).as_py())
    return all(DATETIME_TEXT.fullmatch(text) for text in texts.to_pylist())


def as_texts(values: Values) -> pa.Array:
    """The values as the text a categorical column counts: CSV text as written, JSON and Parquet values spelled."""
    if values.kind in ("text", "datetime"):
        return values.data
    if values.kind == "boolean":
        return arrow_strings(["true" if value else "false" for value in values.data.tolist()])
    if values.kind == "integer":
        return pa.array(values.data.astype(np.int64)).cast(pa.string())
    return pa.array([repr(float(value)) for value in values.data], type=pa.string())


def as_numbers(values: Values) -> np.ndarray:
    """A numeric column's values as float64 (NaN for a spelling of NaN)."""
    if values.kind == "text":
        numbers, _ = text_numbers(values.data)
        if numbers is None:
            raise ValueError("the column holds text that is not a number")
        return numbers
    return np.asarray(values.data, dtype=np.float64)
