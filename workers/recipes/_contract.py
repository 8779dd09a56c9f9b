"""The SageMaker script-mode contract, shared by every recipe script and by the registry.

This file ships next to the recipe: the local backend copies it into the job's code directory and the SageMaker
backend uploads it in the same source archive. So it uses the standard library only (pandas is imported lazily) and
stays Python 3.9 compatible, as older SageMaker scikit-learn images ship 3.9. Recipe scripts import it as the
top-level module `_contract`; the registry imports it as `workers.recipes._contract`, so the portal and the training
container validate hyperparameters with the same code.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

# The reserved hyperparameter that tells the recipe which strings mean "no value" in each input channel
# ({"train": ["", "NA"]}); the portal sets it from each dataset version's markers, never the user directly.
MISSING_VALUES_HYPERPARAMETER = "missing_values"

PARAMETER_TYPES = ("int", "float", "str", "bool", "choice", "column", "columns")
# SageMaker's own SDK and toolkit add these to the hyperparameters; they are not the recipe's.
RESERVED_PREFIX = "sagemaker_"
# SageMaker truncates FailureReason to 1024 characters.
MAX_FAILURE_CHARS = 1024
MAX_LISTED_COLUMNS = 20


@dataclass(frozen=True)
class Parameter:
    """One hyperparameter a recipe accepts; `type` is one of PARAMETER_TYPES."""

    name: str
    type: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    required: bool = False
    help: str = ""


class RecipeFailure(Exception):
    """A problem the user can fix (bad data, bad hyperparameter); its message becomes the run's failure reason."""


def parameters_from_spec(spec: Iterable[Mapping[str, Any]]) -> tuple[Parameter, ...]:
    """Parameters from the plain dicts a recipe script declares in its RECIPE literal."""
    parameters = []
    for item in spec:
        values = dict(item)
        if values.get("choices") is not None:
            values["choices"] = tuple(values["choices"])
        parameters.append(Parameter(**values))
    return tuple(parameters)


def _number(value: float) -> str:
    return format(value, "g")


def expected(parameter: Parameter) -> str:
    """What a valid value of `parameter` looks like, in words."""
    low, high = parameter.minimum, parameter.maximum
    if low is not None and high is not None:
        bounds = f" between {_number(low)} and {_number(high)}"
    elif low is not None:
        bounds = f" >= {_number(low)}"
    elif high is not None:
        bounds = f" <= {_number(high)}"
    else:
        bounds = ""
    if parameter.type == "int":
        return "a whole number" + bounds
    if parameter.type == "float":
        return "a number" + bounds
    if parameter.type == "bool":
        return "true or false"
    if parameter.type == "choice":
        return "one of: " + ", ".join(parameter.choices or ())
    if parameter.type == "column":
        return "the name of a column"
    if parameter.type == "columns":
        return "a list of column names (a JSON list or comma-separated text)"
    return "text"


def _unquote(value: str) -> Any:
    # A person may type a value as JSON text ("\"a\"", "[\"a\"]"); values from SageMaker were decoded once already.
    stripped = value.strip()
    if stripped[:1] in ('"', "["):
        try:
            return json.loads(stripped)
        except ValueError:
            return value
    return value


def _coerce_number(parameter: Parameter, value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if parameter.type == "int":
        if isinstance(value, float):
            if not value.is_integer():
                return None
            value = int(value)
    else:
        value = float(value)
    if parameter.minimum is not None and value < parameter.minimum:
        return None
    if parameter.maximum is not None and value > parameter.maximum:
        return None
    return value


def _coerce_columns(value: Any) -> list[str] | None:
    if isinstance(value, str):
        value = _unquote(value)
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        return None
    return [item.strip() for item in value if item.strip()]


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def list_columns(columns: Sequence[str]) -> str:
    """Column names for an error message, cut short when there are many."""
    names = [str(name) for name in columns]
    if len(names) <= MAX_LISTED_COLUMNS:
        return ", ".join(names)
    return ", ".join(names[:MAX_LISTED_COLUMNS]) + f", … ({len(names) - MAX_LISTED_COLUMNS} more)"


def _coerce(parameter: Parameter, value: Any) -> tuple[Any, str | None]:
    """The typed value, or (None, error message)."""
    wrong = f"expected {expected(parameter)}"
    kind = parameter.type
    if kind in ("int", "float"):
        number = _coerce_number(parameter, value)
        return (number, None) if number is not None else (None, wrong)
    if kind == "bool":
        if isinstance(value, bool):
            return value, None
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true", None
        return None, wrong
    if kind == "columns":
        names = _coerce_columns(value)
        if names is None:
            return None, wrong
        seen: set[str] = set()
        for name in names:
            if name in seen:
                return None, f"column '{name}' is listed more than once"
            seen.add(name)
        return names, None
    if isinstance(value, str):
        value = _unquote(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        # SageMaker's toolkit JSON-decodes every value, so a column named "2024" arrives as the number 2024.
        value = str(value)
    if not isinstance(value, str):
        return None, wrong
    value = value.strip() if kind == "choice" else value
    if kind == "choice" and value not in (parameter.choices or ()):
        return None, wrong
    return value, None


def validate_parameters(
    parameters: Sequence[Parameter],
    values: Mapping[str, Any],
    *,
    columns: Sequence[str] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """(cleaned values with defaults filled in, errors by parameter name); `columns` also checks column names."""
    by_name = {parameter.name: parameter for parameter in parameters}
    cleaned: dict[str, Any] = {}
    errors: dict[str, str] = {}
    if MISSING_VALUES_HYPERPARAMETER in values:
        markers = values[MISSING_VALUES_HYPERPARAMETER]
        if isinstance(markers, dict) and all(
            isinstance(channel, str) and isinstance(items, list) and all(isinstance(item, str) for item in items)
            for channel, items in markers.items()
        ):
            cleaned[MISSING_VALUES_HYPERPARAMETER] = {channel: list(items) for channel, items in markers.items()}
        else:
            errors[MISSING_VALUES_HYPERPARAMETER] = 'expected {"<channel>": ["", "NA", ...]}'
    for name in values:
        if name not in by_name and name != MISSING_VALUES_HYPERPARAMETER:
            known = ", ".join(sorted(by_name)) or "none"
            errors[name] = f"unknown parameter (known: {known})"
    for parameter in parameters:
        raw = values.get(parameter.name)
        if _is_missing(raw) or (parameter.type == "columns" and raw == []):
            if parameter.required:
                errors[parameter.name] = f"a value is required: expected {expected(parameter)}"
            cleaned[parameter.name] = parameter.default
            continue
        value, error = _coerce(parameter, raw)
        if error is None and parameter.type == "columns" and not value:
            if parameter.required:
                error = f"a value is required: expected {expected(parameter)}"
            else:
                value = parameter.default
        if error is None and columns is not None and parameter.type in ("column", "columns"):
            for name in [value] if parameter.type == "column" else value or []:
                if name not in columns:
                    error = f"column '{name}' is not in the dataset (columns: {list_columns(columns)})"
                    break
        if error is not None:
            errors[parameter.name] = error
        else:
            cleaned[parameter.name] = value
    return cleaned, errors


# --- the container side: where SageMaker puts things ---------------------------------------------------------------


def _env_path(variable: str, default: str) -> Path:
    return Path(os.environ.get(variable) or default)


def model_dir() -> Path:
    """SM_MODEL_DIR: everything written here becomes the model artifact."""
    return _env_path("SM_MODEL_DIR", "/opt/ml/model")


def output_data_dir() -> Path:
    """SM_OUTPUT_DATA_DIR: other outputs (a transform's datasets)."""
    return _env_path("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data")


def failure_path() -> Path:
    """Where SageMaker looks for the failure reason."""
    return _env_path("SM_OUTPUT_DIR", "/opt/ml/output") / "failure"


def channel_dir(name: str) -> Path | None:
    """The directory holding channel `name`'s files, or None when the job has no such channel."""
    configured = os.environ.get(f"SM_CHANNEL_{name.upper()}")
    path = Path(configured) if configured else _env_path("SM_INPUT_DIR", "/opt/ml/input") / "data" / name
    return path if path.is_dir() else None


def read_raw_hyperparameters() -> dict[str, Any]:
    """The hyperparameters as the SageMaker training toolkit hands them to a script; `sagemaker_*` entries dropped.

    SM_HPS (set by the toolkit, and by the local backend) already holds the decoded values. Without it, each value
    of hyperparameters.json is decoded exactly as sagemaker_training.environment.read_hyperparameters does:
    json.loads, and the value itself when that fails.
    """
    text = os.environ.get("SM_HPS")
    from_file = text is None
    if text is None:
        path = _env_path("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config") / "hyperparameters.json"
        text = path.read_text(encoding="utf-8") if path.is_file() else "{}"
    try:
        values = json.loads(text)
    except ValueError as exc:
        raise RecipeFailure(f"the hyperparameters are not valid JSON: {exc}") from exc
    if not isinstance(values, dict):
        raise RecipeFailure("the hyperparameters must be a JSON object")
    decoded: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith(RESERVED_PREFIX):
            continue
        if from_file:
            try:
                value = json.loads(value)
            except (ValueError, TypeError):
                pass
        decoded[key] = value
    return decoded


# Which strings mean "no value" in each channel, as the portal passed them (empty fields only, by default).
_CHANNEL_MISSING_VALUES: dict[str, tuple[str, ...]] = {}


def load_hyperparameters(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe's hyperparameters, typed and with defaults; a bad value fails the run naming the parameter.
    The channels' missing-value markers are kept for read_channel and left out of what the recipe sees."""
    cleaned, errors = validate_parameters(parameters_from_spec(recipe["parameters"]), read_raw_hyperparameters())
    if errors:
        raise RecipeFailure("; ".join(f"hyperparameter {name}: {message}" for name, message in errors.items()))
    markers = cleaned.pop(MISSING_VALUES_HYPERPARAMETER, {})
    _CHANNEL_MISSING_VALUES.clear()
    _CHANNEL_MISSING_VALUES.update({channel: tuple(items) or ("",) for channel, items in markers.items()})
    return cleaned


def check_columns(recipe: Mapping[str, Any], values: Mapping[str, Any], columns: Sequence[str]) -> None:
    """Fail naming the parameter when a column-valued hyperparameter names a column the data lacks."""
    _, errors = validate_parameters(parameters_from_spec(recipe["parameters"]), values, columns=list(columns))
    if errors:
        raise RecipeFailure("; ".join(f"hyperparameter {name}: {message}" for name, message in errors.items()))


def channel_files(name: str) -> list[Path]:
    """The channel's files in file-name order (paths relative to the channel, so sub-directories sort too)."""
    directory = channel_dir(name)
    if directory is None:
        return []
    files = [path for path in directory.rglob("*") if path.is_file() and not path.name.startswith(".")]
    return sorted(files, key=lambda path: path.relative_to(directory).as_posix())


_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
# The suffixes the upload accepts (workers/datasets.py), after any ".gz".
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
_CSV_SUFFIXES = (".csv",)
# JSON Lines rows are turned into a frame this many at a time, so a large file never holds all its dicts at once.
_JSONL_BATCH_ROWS = 50_000


def file_format(path: Path) -> tuple[str, bool]:
    """("csv" | "parquet" | "jsonl", gzip-compressed?) by the rules the upload uses: suffix, else the first bytes."""
    import gzip

    with path.open("rb") as handle:
        head = handle.read(4)
    compressed = head.startswith(_GZIP_MAGIC)
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if head == _PARQUET_MAGIC or suffix in _PARQUET_SUFFIXES:
        return "parquet", False
    if suffix in _JSONL_SUFFIXES:
        return "jsonl", compressed
    if suffix in _CSV_SUFFIXES:
        return "csv", compressed
    # Content-addressed objects may have no suffix: a text that opens with "{" is JSON Lines, as on upload.
    opener: Any = gzip.open if compressed else open
    with opener(path, "rb") as handle:
        start = handle.read(64 * 1024)
    if start.startswith(b"\xef\xbb\xbf"):
        start = start[3:]
    return ("jsonl" if start.lstrip().startswith(b"{") else "csv"), compressed


def _read_jsonl(path: Path, compressed: bool) -> pd.DataFrame:
    import gzip

    import pandas as pd

    frames: list[pd.DataFrame] = []
    rows: list[dict[str, Any]] = []
    opener: Any = gzip.open if compressed else open
    # utf-8-sig: a byte-order mark on the first line is not part of its first key.
    with opener(path, "rt", encoding="utf-8-sig") as handle:
        for line_no, line in enumerate(handle, 1):
            text = line.strip()
            if not text:
                continue
            try:
                row = json.loads(text)
            except ValueError as exc:
                raise RecipeFailure(f"line {line_no} is not valid JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise RecipeFailure(f"line {line_no} is not a JSON object; JSON Lines needs one object per line")
            rows.append(row)
            if len(rows) >= _JSONL_BATCH_ROWS:
                frames.append(pd.DataFrame(rows))
                rows = []
    if rows or not frames:
        frames.append(pd.DataFrame(rows))
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = _uniform_texts(frame[column])
    return frame


def _uniform_texts(values: pd.Series) -> pd.Series:
    """A JSON column mixing kinds (text and numbers, arrays, objects) as text, the way the profile counts it."""
    import pandas as pd

    present = values[values.notna()]
    kinds = {type(value) for value in present}
    if kinds <= {str} or kinds == {bool}:
        return values
    if kinds <= {int, float}:
        # Numbers that pandas left as objects (a batch of nulls, then numbers) become a numeric column again.
        try:
            return pd.to_numeric(values)
        except (ValueError, OverflowError):
            return values.map(lambda value: value if value is None or value != value else str(value))
    return values.map(
        lambda value: value if value is None or isinstance(value, str) else json.dumps(value, sort_keys=True)
    )


def read_data_file(path: Path, *, missing_values: Sequence[str] = ("",)) -> pd.DataFrame:
    """One CSV, Parquet or JSON Lines file (CSV and JSON Lines optionally gzip-compressed) as a frame.

    As in the dataset profile, only the strings in `missing_values` are missing (by default the empty field): text
    such as NA or None is a value unless the dataset version names it.
    """
    import pandas as pd

    markers = list(missing_values) or [""]
    kind, compressed = file_format(path)
    if kind in ("parquet", "jsonl"):
        frame = pd.read_parquet(path) if kind == "parquet" else _read_jsonl(path, compressed)
        for column in frame.columns:
            values = frame[column]
            if pd.api.types.is_string_dtype(values) or values.dtype == object:
                marked = values.isin(markers)
                if marked.any():
                    # Text markers are missing as in CSV; what is left may be numbers after all (e.g. NA among them).
                    cleared = values.mask(marked)
                    try:
                        frame[column] = pd.to_numeric(cleared)
                    except (ValueError, TypeError):
                        frame[column] = cleared
        return frame
    frame = pd.read_csv(path, compression="gzip" if compressed else None, keep_default_na=False, na_values=markers)
    for column in frame.columns:
        values = frame[column]
        # infer_dtype, not is_string_dtype: older pandas (SageMaker's images) calls any object column a string one.
        if pd.api.types.infer_dtype(values, skipna=True) != "string":
            continue
        not_a_number = values.str.strip().str.lower() == "nan"
        if not_a_number.any():
            # Numbers with the text "nan" among them are a numeric column whose "nan" is no number, as in the profile.
            with contextlib.suppress(ValueError, TypeError):
                frame[column] = pd.to_numeric(values.mask(not_a_number))
    return frame


def read_channel(name: str, *, required: bool = True) -> pd.DataFrame | None:
    """All of a channel's data files, concatenated in file-name order; None if absent and not required."""
    import pandas as pd

    files = channel_files(name)
    if not files:
        if required:
            raise RecipeFailure(f"channel '{name}' holds no CSV, Parquet or JSON Lines files")
        return None
    frames: list[pd.DataFrame] = []
    markers = _CHANNEL_MISSING_VALUES.get(name, ("",))
    for path in files:
        try:
            frame = read_data_file(path, missing_values=markers)
        except Exception as exc:
            raise RecipeFailure(f"cannot read '{path.name}' in channel '{name}': {exc}") from exc
        if frames and list(frame.columns) != list(frames[0].columns):
            raise RecipeFailure(
                f"'{path.name}' in channel '{name}' has columns ({list_columns(list(frame.columns))}) "
                f"but '{files[0].name}' has ({list_columns(list(frames[0].columns))})"
            )
        frames.append(frame)
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def format_metric(name: str, value: float, *, step: int | None = None, fold: int | None = None) -> str:
    """One metric log line; the registry's MetricDefinitions regexes capture the value after `name=`."""
    text = f"metric: {name}={value:.6g}" if isinstance(value, float) else f"metric: {name}={value}"
    if step is not None:
        text += f"; step={step}"
    if fold is not None:
        text += f"; fold={fold}"
    return text + f"; time={time.time():.3f}"


def emit_metric(name: str, value: float, *, step: int | None = None, fold: int | None = None) -> None:
    """Print a metric line; values that are not finite numbers are reported as a note instead."""
    if isinstance(value, float) and not math.isfinite(value):
        print(f"note: metric {name} is undefined ({value}) and was not reported", flush=True)
        return
    print(format_metric(name, value, step=step, fold=fold), flush=True)


def emit_progress(done: int, total: int, unit: str) -> None:
    """Print how far the run has got (`progress: 3/5 folds`), the line the backends read into the run's progress."""
    print(f"progress: {done}/{total} {unit}", flush=True)


def write_failure(message: str) -> None:
    """Record why the run failed where SageMaker (and the local backend) look for it."""
    path = failure_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(message[:MAX_FAILURE_CHARS], encoding="utf-8")


def run(main: Callable[[], None]) -> None:
    """Run a recipe's main(); any failure is written to the failure file and the process exits with code 1."""
    try:
        main()
    except RecipeFailure as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        write_failure(str(exc))
        sys.exit(1)
    except Exception as exc:
        traceback.print_exc()
        write_failure(f"{type(exc).__name__}: {exc}")
        sys.exit(1)
