"""The drift job's input: the serving runtime's capture files for a window, read in record batches, against a baseline.

Capture files (serving/capture.py) are Parquet, one row per predicted row: the feature columns as served,
`prediction`, `probability`, `captured_at` (UTC), `service`, `revision`, stored under
`capture/<service>/<revision>/<YYYY>/<MM>/<DD>/<HHMMSS>-<rows>-<random>.parquet` (the time of the file's first row).
Only the baseline's feature columns and `captured_at` are read, one record batch at a time, into one sketch (numeric)
or value counts (categorical) per feature, so memory does not grow with the rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from workers.errors import ObjectNotFound
from workers.stats.drift import (
    KS_EXACT_MAX,
    SMALL_REFERENCE,
    Categories,
    Distribution,
    DriftConfig,
    FeatureDrift,
    categorical_feature_drift,
    dataset_verdict,
    numeric_feature_drift,
)
from workers.stats.sketch import DISTINCT_CAP, NumericSketch

# Columns the serving runtime adds to every capture row; never features.
CAPTURE_COLUMNS = frozenset({"prediction", "probability", "captured_at", "service", "revision"})
BATCH_ROWS = 65_536
# A file holds rows from the time in its name until its writer flushed it (a minute by default; the queue is bounded,
# so rows never wait long): a file named this long before the window's start cannot hold rows of the window.
LATE_ROWS = timedelta(hours=1)
# A categorical feature whose baseline kept every value counts up to this many new values; the rest go to (other).
NEW_VALUES_CAP = 10_000
CAPTURE_KEY = re.compile(
    r"capture/(?P<service>[^/]+)/(?P<revision>[^/]+)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"
    r"(?P<hms>\d{6})-(?P<rows>\d+)-[^/]*\.parquet"
)


@dataclass
class DriftResult:
    """The drift of a window of capture rows against a baseline: per feature, and for the dataset."""

    features: list[FeatureDrift]
    share: float  # drifted features / features with a verdict
    drifted: bool  # share >= the configured share
    rows: int  # capture rows in the window, in the files read
    files_read: int
    unreadable: list[dict[str, str]] = field(default_factory=list)  # [{"key", "reason"}]

    @property
    def judged(self) -> int:
        return sum(1 for feature in self.features if feature.drifted is not None)

    @property
    def drifted_count(self) -> int:
        return sum(1 for feature in self.features if feature.drifted)

    def to_json(self) -> dict[str, Any]:
        return {
            "features": [feature.to_json() for feature in self.features],
            "share": self.share,
            "drifted": self.drifted,
            "judged": self.judged,
            "drifted_count": self.drifted_count,
            "rows": self.rows,
            "files_read": self.files_read,
            "unreadable": self.unreadable,
        }


class UnreadableFile(Exception):
    """A capture file that cannot be used; the message is the reason shown with its key."""


def capture_keys(store: Any, service: str, start: datetime, end: datetime, *, revision: str | None = None) -> list[str]:
    """The keys under `capture/<service>/` whose files can hold rows captured in [start, end), in key order; with
    `revision`, only that revision's, listed day folder by day folder (`capture/<service>/<revision>/<YYYY>/<MM>/<DD>/`
    for the days the files can be in), so the listing does not grow with the capture kept.

    A file is named after its first row's time, so it is listed when that time is before `end` and no more than
    LATE_ROWS before `start`.
    """
    start, end = _utc(start), _utc(end)
    if revision:
        prefixes = []
        day = (start - LATE_ROWS).date()
        while day <= (end - timedelta(microseconds=1)).date():
            prefixes.append(f"capture/{service}/{revision}/{day:%Y/%m/%d}/")
            day += timedelta(days=1)
    else:
        prefixes = [f"capture/{service}/"]
    keys = []
    for stored in (item for prefix in prefixes for item in store.list(prefix)):
        match = CAPTURE_KEY.fullmatch(stored.key)
        if match is None or match["service"] != service or (revision and match["revision"] != revision):
            continue
        hms = match["hms"]
        try:
            first = datetime(
                int(match["y"]), int(match["m"]), int(match["d"]), int(hms[:2]), int(hms[2:4]), int(hms[4:]), tzinfo=UTC
            )
        except ValueError:
            continue
        if start - LATE_ROWS <= first < end:
            keys.append(stored.key)
    return sorted(keys)


def drift_from_capture(
    baseline_profile: Mapping[str, Any],
    store: Any,
    keys: Sequence[str],
    *,
    start: datetime,
    end: datetime,
    config: DriftConfig | Mapping[str, Any] | None,
    progress: Callable[[float], None] | None = None,
    features: Sequence[str] | None = None,
) -> DriftResult:
    """Compare the capture rows captured in [start, end) in the files `keys` with `baseline_profile`.

    `baseline_profile` is a dataset version's profile (workers.datasets.profile_files): a numeric column's "sketch"
    is used when present, its histogram otherwise (coarser: statistics within a histogram bin). `config` is a
    DriftConfig or an environment's drift settings as JSON (validated; DriftConfigError when invalid); None means the
    defaults. `features` are the columns to compare; by default every baseline column but the capture's own
    (prediction, probability, captured_at, service, revision), and a feature absent from the files is reported with a
    note, not as drifted.

    A file that cannot be read (not found, not Parquet, corrupt) or whose schema does not fit (no captured_at
    timestamp, none of the features, a feature of an incompatible type, or, when `features` is given, a feature
    missing) is skipped and listed in `unreadable` with the reason; the rest are read. The rows read from a file
    count only once the whole file has been read. `progress` gets the share of files done, from 0 to 1.
    """
    drift_config = config if isinstance(config, DriftConfig) else DriftConfig.from_json(config)
    columns: Mapping[str, Mapping[str, Any]] = baseline_profile["columns"]
    strict = features is not None
    names = list(features) if features is not None else [name for name in columns if name not in CAPTURE_COLUMNS]
    missing_from_baseline = [name for name in names if name not in columns]
    names = [name for name in names if name in columns]
    window = _Window(_utc(start), _utc(end))
    current = _Current(columns, names)
    unreadable: list[dict[str, str]] = []
    files_read = 0
    rows = 0
    for done, key in enumerate(keys, start=1):
        try:
            part, part_rows = _read_file(store, key, columns, names, window, strict=strict)
        except UnreadableFile as exc:
            unreadable.append({"key": key, "reason": str(exc)})
        else:
            current.merge(part)
            files_read += 1
            rows += part_rows
        if progress is not None:
            progress(done / len(keys))
    if progress is not None and not keys:
        progress(1.0)

    results: list[FeatureDrift] = []
    for name in names:
        column = columns[name]
        choice = drift_config.choice_for(name, column.get("kind", "categorical"))
        if column.get("kind") == "numeric":
            result = numeric_feature_drift(
                name, Distribution.from_profile_column(column), Distribution.from_sketch(current.sketches[name]), choice
            )
        else:
            result = categorical_feature_drift(
                name, Categories.from_profile_column(column), current.categories(name), choice
            )
        if files_read and current.files_with[name] == 0:
            result.note = "not in the capture files read"
        elif not files_read:
            result.note = "no capture file in the window could be read" if keys else "no capture files in the window"
        results.append(result)
    for name in missing_from_baseline:
        results.append(
            FeatureDrift(name, "unknown", None, None, None, None, None, None, 0, 0, note="not in the baseline profile")
        )
    share, drifted = dataset_verdict(results, drift_config.share)
    return DriftResult(results, share, drifted, rows, files_read, unreadable)


# ---------------------------------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class _Window:
    start: datetime
    end: datetime

    def mask(self, stamps: pa.Array) -> pa.Array | None:
        """Which rows are in the window; None when all are (nothing to filter)."""
        stamps = stamps.cast(pa.timestamp("us", tz="UTC"))
        start = pa.scalar(self.start, type=stamps.type)
        end = pa.scalar(self.end, type=stamps.type)
        low_high = pc.min_max(stamps)
        low, high = low_high["min"].as_py(), low_high["max"].as_py()
        if stamps.null_count == 0 and low is not None and low >= self.start and high < self.end:
            return None
        return pc.and_(pc.greater_equal(stamps, start), pc.less(stamps, end))


class _Current:
    """The current side: one sketch per numeric feature, value counts per categorical one."""

    def __init__(self, columns: Mapping[str, Mapping[str, Any]], names: list[str]) -> None:
        self.columns = columns
        self.names = names
        self.sketches: dict[str, NumericSketch] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.rest: dict[str, int] = {}
        self.kept: dict[str, frozenset[str] | None] = {}  # None: the baseline kept every value, count any
        self.files_with = dict.fromkeys(names, 0)
        for name in names:
            column = columns[name]
            if column.get("kind") == "numeric":
                # A small baseline is compared with KS, exact (as SciPy's) while the current side is small too.
                small = int(column.get("count") or 0) <= SMALL_REFERENCE
                self.sketches[name] = NumericSketch(cap=KS_EXACT_MAX if small else DISTINCT_CAP)
            else:
                baseline = Categories.from_profile_column(column)
                self.counts[name], self.rest[name] = {}, 0
                self.kept[name] = None if baseline.complete else frozenset(baseline.counts)

    def categories(self, name: str) -> Categories:
        return Categories(self.counts[name], self.rest[name])

    def add_numbers(self, name: str, values: np.ndarray) -> None:
        self.sketches[name].add(values)

    def add_texts(self, name: str, texts: pa.Array) -> None:
        texts = texts.drop_null()
        if len(texts) == 0:
            return
        kept = self.kept[name]
        counts = self.counts[name]
        if kept is not None:
            inside = texts.filter(pc.is_in(texts, value_set=pa.array(sorted(kept), type=pa.string())))
            self.rest[name] += len(texts) - len(inside)
            texts = inside
        found = pc.value_counts(texts)
        for value, count in zip(found.field("values").to_pylist(), found.field("counts").to_pylist(), strict=True):
            if value in counts or len(counts) < NEW_VALUES_CAP:
                counts[value] = counts.get(value, 0) + count
            else:
                self.rest[name] += count

    def merge(self, other: _Current) -> None:
        for name, sketch in other.sketches.items():
            self.sketches[name] = self.sketches[name].merge(sketch)
        for name, counts in other.counts.items():
            mine = self.counts[name]
            for value, count in counts.items():
                if value in mine or len(mine) < NEW_VALUES_CAP:
                    mine[value] = mine.get(value, 0) + count
                else:
                    self.rest[name] += count
            self.rest[name] += other.rest[name]
        for name, files in other.files_with.items():
            self.files_with[name] += files


def _read_file(
    store: Any,
    key: str,
    columns: Mapping[str, Mapping[str, Any]],
    names: list[str],
    window: _Window,
    *,
    strict: bool,
) -> tuple[_Current, int]:
    """One file's rows in the window, accumulated apart, so a file that fails half-way adds nothing."""
    try:
        stream = store.open(key)
    except ObjectNotFound as exc:
        raise UnreadableFile("the file is no longer in the object store") from exc
    with stream:
        try:
            # S3 bodies cannot seek, and Parquet's footer is at the end: such a file (a few MB) is read whole.
            source: Any = stream if _seekable(stream) else pa.BufferReader(stream.read())
            with pq.ParquetFile(source) as parquet:
                present = _check_schema(parquet.schema_arrow, columns, names, strict=strict)
                part = _Current(columns, names)
                for name in present:
                    part.files_with[name] = 1
                rows = 0
                for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=[*present, "captured_at"]):
                    rows += _add_batch(part, batch, present, columns, window)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise UnreadableFile(f"not a readable Parquet file ({_one_line(exc)})") from exc
    return part, rows


def _seekable(stream: Any) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _add_batch(
    part: _Current, batch: pa.RecordBatch, present: list[str], columns: Mapping[str, Mapping[str, Any]], window: _Window
) -> int:
    mask = window.mask(batch.column("captured_at"))
    if mask is not None:
        batch = batch.filter(mask)
    if batch.num_rows == 0:
        return 0
    for name in present:
        array = batch.column(name)
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        if columns[name].get("kind") == "numeric":
            # Nulls become NaN, which the sketch leaves out as it leaves out infinities (Evidently drops both).
            part.add_numbers(name, pc.cast(array, pa.float64(), safe=False).to_numpy(zero_copy_only=False))
        else:
            part.add_texts(name, _texts(array, boolean=columns[name].get("type") == "boolean"))
    return batch.num_rows


def _texts(array: pa.Array, *, boolean: bool) -> pa.Array:
    """Values as the profiler spells them: true/false for booleans, whole numbers without a decimal point."""
    if pa.types.is_boolean(array.type):
        return pc.if_else(array, "true", "false")
    if pa.types.is_integer(array.type):
        return array.cast(pa.string())
    texts = array.cast(pa.string())
    return pc.utf8_lower(texts) if boolean else texts


def _check_schema(
    schema: pa.Schema, columns: Mapping[str, Mapping[str, Any]], names: list[str], *, strict: bool
) -> list[str]:
    """The features this file has; UnreadableFile when its schema does not fit the baseline's."""
    fields = {schema_field.name: schema_field.type for schema_field in schema}
    stamp = fields.get("captured_at")
    if stamp is None or not pa.types.is_timestamp(stamp):
        raise UnreadableFile("it has no captured_at timestamp column: not a capture file")
    present = [name for name in names if name in fields]
    absent = [name for name in names if name not in fields]
    if not present:
        raise UnreadableFile(f"it has none of the baseline's features ({_listed(names)})")
    if strict and absent:
        raise UnreadableFile(f"it lacks the feature(s) {_listed(absent)}")
    wrong = []
    for name in present:
        kind = fields[name]
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        numeric_type = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
        text_type = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        if columns[name].get("kind") == "numeric":
            fits = numeric_type or pa.types.is_null(kind)
        else:
            fits = text_type or pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_null(kind)
        if not fits:
            wrong.append(f"{name} is {_type_name(kind)} here but {columns[name].get('type')} in the baseline")
    if wrong:
        raise UnreadableFile("its schema differs from the baseline's: " + "; ".join(wrong))
    return present


def _type_name(kind: pa.DataType) -> str:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    if pa.types.is_integer(kind):
        return "integer"
    if pa.types.is_floating(kind):
        return "float"
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return "datetime"
    return str(kind)


def _listed(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:10])
    return shown + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("start and end must be timezone-aware (UTC)")
    return moment.astimezone(UTC)
