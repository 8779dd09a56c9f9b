"""A compiled copy of a recipe's pipeline (ONNX, run by onnxruntime), made and checked at registration.

`compile_model` converts the fitted pipeline with skl2onnx, runs the copy on held-out rows and compares it with the
original; the copy is kept only when every label is identical and the probabilities (or regression predictions)
agree within the tolerance. Anything that cannot be converted is a refused outcome, never an exception: the original
pipeline then serves.

How the graph is laid out, for single-row speed: two inputs instead of one per column — `numbers` (numeric and
boolean features, in the ColumnTransformer's order) and `categories` (categorical features as strings, missing ones
as MISSING_CATEGORY). Boolean and categorical columns are one-hot encoded by a lookup of our own (LabelEncoder to a
code, then OneHotEncoder) rather than skl2onnx's encoder, which raises on unseen categories for
handle_unknown="infrequent_if_exist" and does not send them to the infrequent column as scikit-learn does.

Tree ensembles read float32 (scikit-learn's forests cast their input so; see _FLOAT32_ESTIMATORS); everything else
reads float64, so imputation, scaling and linear models compute as in scikit-learn.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from serving.predictors import Batch, Feature, Prediction

# A missing categorical value, as the graph receives it (onnxruntime strings end at NUL, so no "\0"); it is mapped to
# the imputed category, as SimpleImputer does for NaN/None.
MISSING_CATEGORY = "\u2400missing\u2400"
# Probabilities are in [0, 1]; float32 carries about 7 digits and a forest sums 100s of leaf fractions, so honest
# rounding stays below 1e-6, while a wrong conversion (a split, a category, a scale) moves them by 1e-3 and more.
PROBABILITY_TOLERANCE = 1e-5
# Regression predictions have the target's units: the same 1e-5, relative to the prediction's size (at least 1).
REGRESSION_RELATIVE_TOLERANCE = 1e-5
SAMPLE_ROWS = 500
# Tree ensembles read float32: scikit-learn's forests cast X to float32 (so splits match bit for bit), and
# onnxruntime's tree kernels give float64 input float output, which skl2onnx's boosting graphs do not expect.
_FLOAT32_ESTIMATORS = (
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
)


def onnxruntime_runtime() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


class CompileRefused(Exception):
    """The pipeline has a step or setting the compiled copy cannot reproduce."""


@dataclass
class CompileOutcome:
    """`onnx` holds the model bytes when the copy was accepted; `check` is the JSON-able record either way."""

    onnx: bytes | None
    check: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.onnx is not None


# --- the one-hot lookup the graph uses for boolean and categorical columns --------------------------------------


class CodedOneHot(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """Stands in, in a copy of the ColumnTransformer, for a fitted OneHotEncoder (after SimpleImputer, for categorical
    columns): per column a table value → output position, and where unseen values go (-1: no column)."""

    def __init__(self, tables: list[dict[Any, int]], unknown: list[int], width: int, strings: bool) -> None:
        self.tables = tables
        self.unknown = unknown
        self.width = width
        self.strings = strings

    def transform(self, x: Any) -> Any:  # never called: the class exists only to be converted
        raise NotImplementedError


def _coded_one_hot(encoder: Any, imputer: Any | None, *, strings: bool, offset: int = 0) -> CodedOneHot:
    """The lookup equal to `encoder` (drop=None, handle_unknown ignore or infrequent_if_exist), with `imputer`'s fill
    value for missing entries."""
    if getattr(encoder, "drop", None) is not None:
        raise CompileRefused("a OneHotEncoder with drop= is not supported")
    if encoder.handle_unknown not in ("ignore", "infrequent_if_exist"):
        raise CompileRefused(f"a OneHotEncoder with handle_unknown={encoder.handle_unknown!r} is not supported")
    infrequent_all = getattr(encoder, "infrequent_categories_", None)
    tables: list[dict[Any, int]] = []
    unknown: list[int] = []
    position = offset
    for index, categories in enumerate(encoder.categories_):
        infrequent = infrequent_all[index] if infrequent_all is not None else None
        rare = {_key(value, strings) for value in infrequent} if infrequent is not None else set()
        table: dict[Any, int] = {}
        for value in categories:
            key = _key(value, strings)
            if key not in rare:
                table[key] = position
                position += 1
        if rare:
            for key in rare:
                table[key] = position
            unknown.append(position)  # infrequent_if_exist: unseen values count as infrequent
            position += 1
        else:
            unknown.append(-1)
        if imputer is not None:
            fill = _key(imputer.statistics_[index], strings)
            if fill not in table:
                raise CompileRefused(f"the imputed value {fill!r} is not one of the encoder's categories")
            table[MISSING_CATEGORY] = table[fill]
        tables.append(table)
    return CodedOneHot(tables, unknown, position - offset, strings)


def _key(value: Any, strings: bool) -> Any:
    return str(value) if strings else int(bool(value))


def _coded_one_hot_shape(operator: Any) -> None:
    rows = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = operator.inputs[0].type.__class__([rows, operator.raw_operator.width])
    if operator.raw_operator.strings:  # the string input's output is numbers: float, cast later by Concat
        from skl2onnx.common.data_types import FloatTensorType

        operator.outputs[0].type = FloatTensorType([rows, operator.raw_operator.width])


def _coded_one_hot_convert(scope: Any, operator: Any, container: Any) -> None:
    from onnx import TensorProto

    encoder: CodedOneHot = operator.raw_operator
    source = operator.inputs[0].full_name
    if not encoder.strings:  # booleans arrive as 0.0/1.0 in the numbers input
        cast = scope.get_unique_variable_name("bool_codes")
        container.add_node("Cast", [source], [cast], to=TensorProto.INT64, name=scope.get_unique_operator_name("Cast"))
        source = cast
    codes = []
    for index, table in enumerate(encoder.tables):
        column = scope.get_unique_variable_name("column")
        at = scope.get_unique_variable_name("at")
        container.add_initializer(at, TensorProto.INT64, [1], [index])
        container.add_node("Gather", [source, at], [column], axis=1, name=scope.get_unique_operator_name("Gather"))
        code = scope.get_unique_variable_name("code")
        keys = list(table)
        attributes: dict[str, Any] = {
            "values_int64s": [table[key] for key in keys],
            "default_int64": encoder.unknown[index],
        }
        if encoder.strings:
            attributes["keys_strings"] = keys
        else:
            attributes["keys_int64s"] = keys
        container.add_node(
            "LabelEncoder",
            [column],
            [code],
            op_domain="ai.onnx.ml",
            op_version=2,
            name=scope.get_unique_operator_name("LabelEncoder"),
            **attributes,
        )
        codes.append(code)
    joined = codes[0]
    if len(codes) > 1:
        joined = scope.get_unique_variable_name("codes")
        container.add_node("Concat", codes, [joined], axis=1, name=scope.get_unique_operator_name("Concat"))
    hot = scope.get_unique_variable_name("one_hot")
    container.add_node(
        "OneHotEncoder",
        [joined],
        [hot],
        op_domain="ai.onnx.ml",
        cats_int64s=list(range(encoder.width)),
        zeros=1,  # -1 (an unseen value without an infrequent column) is all zeros, as scikit-learn's "ignore"
        name=scope.get_unique_operator_name("OneHotEncoder"),
    )
    axes = scope.get_unique_variable_name("axes")
    container.add_initializer(axes, TensorProto.INT64, [1], [1])
    summed = scope.get_unique_variable_name("summed")
    container.add_node("ReduceSum", [hot, axes], [summed], keepdims=0, name=scope.get_unique_operator_name("Sum"))
    output_type = operator.outputs[0].type.to_onnx_type().tensor_type.elem_type
    container.add_node(
        "Cast", [summed], [operator.outputs[0].full_name], to=output_type, name=scope.get_unique_operator_name("Cast")
    )


class NanFill(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """Stands in for a fitted numeric SimpleImputer: NaN becomes the column's statistic. skl2onnx's Imputer node has
    no float64 kernel in onnxruntime; IsNaN and Where have both."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def transform(self, x: Any) -> Any:
        raise NotImplementedError


def _nan_fill(imputer: Any) -> NanFill:
    values = np.asarray(imputer.statistics_, dtype=np.float64)
    if not _is_nan(imputer.missing_values):
        raise CompileRefused(f"a numeric SimpleImputer with missing_values={imputer.missing_values!r}")
    if np.isnan(values).any():  # scikit-learn drops such a column; the copy would keep it
        raise CompileRefused("a numeric column had no value at all in training")
    return NanFill(values)


def _same_shape(operator: Any) -> None:
    operator.outputs[0].type = operator.inputs[0].type.__class__(operator.inputs[0].type.shape)


def _nan_fill_convert(scope: Any, operator: Any, container: Any) -> None:
    source = operator.inputs[0].full_name
    element = operator.inputs[0].type.to_onnx_type().tensor_type.elem_type
    values = operator.raw_operator.values
    fill = scope.get_unique_variable_name("fill")
    container.add_initializer(fill, element, [len(values)], values.astype(_numpy_type(element)).tolist())
    mask = scope.get_unique_variable_name("missing")
    container.add_node("IsNaN", [source], [mask], name=scope.get_unique_operator_name("IsNaN"))
    container.add_node(
        "Where", [mask, fill, source], [operator.outputs[0].full_name], name=scope.get_unique_operator_name("Where")
    )


def _numpy_type(element: int) -> Any:
    from onnx import TensorProto

    return np.float32 if element == TensorProto.FLOAT else np.float64


_registered = False
_conversion = threading.Lock()


def _register() -> None:
    global _registered
    if not _registered:
        from skl2onnx import update_registered_converter

        update_registered_converter(
            CodedOneHot, "ControlPlaneCodedOneHot", _coded_one_hot_shape, _coded_one_hot_convert
        )
        update_registered_converter(NanFill, "ControlPlaneNanFill", _same_shape, _nan_fill_convert)
        _registered = True


@contextlib.contextmanager
def _leaf_flags_as_ints() -> Iterator[None]:
    """skl2onnx 1.20 records a boosted tree's leaves with missing-value flag False, a bool, which onnx's protobuf
    refuses as an int attribute; pass it as 0/1 for the length of one conversion (under _conversion)."""
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node

    def add_node(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        return original(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    tree_ensemble.add_node = add_node
    try:
        yield
    finally:
        tree_ensemble.add_node = original


# --- conversion ------------------------------------------------------------------------------------------------


@dataclass
class _Layout:
    """Which features go to which graph input, in the order the graph reads them."""

    numbers: list[str]
    categories: list[str]
    float32: bool


def _layout_and_twin(model: Any) -> tuple[_Layout, Any]:
    """A copy of the pipeline the converter accepts: columns by position in the two inputs, and our one-hot lookup."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    steps = getattr(model, "steps", None)
    if not steps or len(steps) != 2 or not isinstance(steps[0][1], ColumnTransformer):
        raise CompileRefused("not a recipe pipeline (a ColumnTransformer, then the estimator)")
    twin = copy.deepcopy(model)
    preprocess = twin.steps[0][1]
    estimator = twin.steps[1][1]
    float32 = type(estimator).__name__ in _FLOAT32_ESTIMATORS
    number_columns: list[tuple[str, Any, list[str]]] = []
    category_columns: list[tuple[str, Any, list[str]]] = []
    for name, transformer, columns in preprocess.transformers_:
        if isinstance(transformer, str):
            if transformer == "drop":
                continue
            raise CompileRefused(f"the ColumnTransformer step {name!r} is {transformer!r}")
        columns = [columns] if isinstance(columns, str) else list(columns)
        if not all(isinstance(column, str) for column in columns):
            raise CompileRefused(f"the ColumnTransformer step {name!r} selects columns by position")
        if isinstance(transformer, OneHotEncoder):  # booleans
            number_columns.append((name, _coded_one_hot(transformer, None, strings=False), columns))
            continue
        inner = transformer.steps if isinstance(transformer, Pipeline) else []
        if (
            len(inner) == 2
            and isinstance(inner[0][1], SimpleImputer)
            and isinstance(inner[1][1], OneHotEncoder)
            and inner[0][1].strategy in ("most_frequent", "constant")
            and _is_nan(inner[0][1].missing_values)
        ):
            category_columns.append((name, _coded_one_hot(inner[1][1], inner[0][1], strings=True), columns))
        else:
            number_columns.append((name, _numeric_twin(transformer), columns))
    layout = _Layout(
        numbers=[c for _, _, columns in number_columns for c in columns],
        categories=[c for _, _, columns in category_columns for c in columns],
        float32=float32,
    )
    # Columns by global position: numbers first, then categories (skl2onnx counts positions across inputs in order).
    by_name = {name: (transformer, columns) for name, transformer, columns in number_columns + category_columns}
    position = {column: index for index, column in enumerate(layout.numbers + layout.categories)}
    rebuilt = []
    for name, _, _ in preprocess.transformers_:
        if name in by_name:
            transformer, columns = by_name[name]
            rebuilt.append((name, transformer, [position[c] for c in columns]))
    preprocess.transformers_ = rebuilt
    return layout, twin


def _numeric_twin(transformer: Any) -> Any:
    """The numeric steps, with each SimpleImputer replaced by the NaN fill (StandardScaler converts as it is)."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    if isinstance(transformer, SimpleImputer):
        return _nan_fill(transformer)
    if isinstance(transformer, Pipeline):
        transformer.steps = [
            (name, _nan_fill(step) if isinstance(step, SimpleImputer) else step) for name, step in transformer.steps
        ]
    return transformer


def _is_nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _convert(model: Any, classifier: bool) -> tuple[bytes, _Layout]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    _register()
    layout, twin = _layout_and_twin(model)
    number_type = FloatTensorType if layout.float32 else DoubleTensorType
    initial_types: list[tuple[str, Any]] = []
    if layout.numbers:
        initial_types.append(("numbers", number_type([None, len(layout.numbers)])))
    if layout.categories:
        initial_types.append(("categories", StringTensorType([None, len(layout.categories)])))
    options = {id(twin.steps[1][1]): {"zipmap": False}} if classifier else None
    with _conversion, _leaf_flags_as_ints():
        onnx_model = convert_sklearn(twin, initial_types=initial_types, options=options)
    return onnx_model.SerializeToString(), layout


# --- prediction ------------------------------------------------------------------------------------------------


_not_text = np.frompyfunc(lambda value: not isinstance(value, str), 1, 1)


def _class_array(classes: Sequence[Any]) -> np.ndarray:
    """The classes as scikit-learn holds them: object for text (as its classes_), else the numbers' own dtype."""
    if any(isinstance(value, str) for value in classes):
        return np.array(list(classes), dtype=object)
    return np.asarray(list(classes))


class OnnxPredictor:
    """The compiled copy: one session with one thread, fed the two inputs straight from the batch's arrays."""

    def __init__(
        self,
        source: bytes | str | Path,
        *,
        features: Sequence[Feature],
        classes: Sequence[Any] | None,
    ) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One request is a few microseconds of work: threads and their hand-offs cost more than they give.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        model = source if isinstance(source, bytes) else Path(source).read_bytes()
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.runtime = onnxruntime_runtime()
        inputs = {node.name: node for node in self.session.get_inputs()}
        kinds = {feature.name: feature.type for feature in features}
        meta = self.session.get_modelmeta().custom_metadata_map
        self._numbers = [name for name in meta.get("numbers", "").split("\x1f") if name] if "numbers" in inputs else []
        self._categories = (
            [name for name in meta.get("categories", "").split("\x1f") if name] if "categories" in inputs else []
        )
        unknown = [name for name in self._numbers + self._categories if name not in kinds]
        if unknown:
            raise ValueError(f"the compiled model reads columns the schema lacks: {unknown}")
        self._number_dtype = (
            np.float32 if "numbers" in inputs and inputs["numbers"].type == "tensor(float)" else np.float64
        )
        self._whole_matrix = not self._categories and self._numbers == [feature.name for feature in features]
        self.classifier = classes is not None
        self.classes = _class_array(classes) if classes is not None else None
        outputs = [node.name for node in self.session.get_outputs()]
        # Classifiers: the probabilities (labels are the classes at their argmax, as scikit-learn's predict);
        # regressors: the one prediction column.
        self._output = [outputs[1]] if self.classifier else [outputs[0]]

    def inputs(self, batch: Batch) -> dict[str, np.ndarray]:
        feeds: dict[str, np.ndarray] = {}
        columns = batch.columns
        if self._whole_matrix and batch.matrix is not None:
            # Every feature is a number, in the order the graph reads them: the parser's matrix as it is.
            feeds["numbers"] = np.ascontiguousarray(batch.matrix, dtype=self._number_dtype)
        elif self._numbers:
            arrays = [columns[name] for name in self._numbers]
            if batch.rows == 1:  # the common request: one flat copy is the cheapest way to a (1, n) array
                feeds["numbers"] = np.concatenate(arrays).astype(self._number_dtype).reshape(1, -1)
            else:
                feeds["numbers"] = np.array(arrays, dtype=self._number_dtype).T.copy()
        if self._categories:
            values = np.array([columns[name] for name in self._categories], dtype=object).T.copy()
            # Missing is NaN from the request parser, None from batch_from_frame: anything that is not text.
            missing = _not_text(values).astype(bool)
            if missing.any():
                values[missing] = MISSING_CATEGORY
            feeds["categories"] = values
        return feeds

    def predict(self, batch: Batch) -> Prediction:
        result = self.session.run(self._output, self.inputs(batch))[0]
        if self.classes is not None:
            return Prediction(labels=self.classes.take(result.argmax(axis=1)), probabilities=result)
        return Prediction(labels=result.reshape(-1))


def _with_layout(model_bytes: bytes, layout: _Layout) -> bytes:
    """The ONNX bytes with the column order of each input in the model's metadata, so the file is self-describing,
    and the same bytes each time the same pipeline is converted."""
    import onnx

    proto = onnx.load_from_string(model_bytes)
    # skl2onnx names the graph with a fresh UUID; a fixed name makes the same model compile to the same bytes.
    proto.graph.name = "pipeline"
    # skl2onnx lists the opsets from a set, in an order that changes with the process's hash seed.
    opsets = sorted((o.domain, o.version) for o in proto.opset_import)
    del proto.opset_import[:]
    for domain, version in opsets:
        proto.opset_import.add(domain=domain, version=version)
    for key, names in (("numbers", layout.numbers), ("categories", layout.categories)):
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = "\x1f".join(names)
    return proto.SerializeToString()


# --- the check -------------------------------------------------------------------------------------------------


def batch_from_frame(frame: Any, features: Sequence[Feature]) -> Batch:
    """A Batch as the request parser makes one, from a DataFrame of those features (e.g. read from CSV)."""
    import pandas as pd

    columns: dict[str, np.ndarray] = {}
    for feature in features:
        values = frame[feature.name]
        if feature.type == "numeric":
            columns[feature.name] = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        elif feature.type == "boolean":
            if not pd.api.types.is_bool_dtype(values):
                values = values.astype(str).str.strip().str.lower().isin(["true", "1", "yes"])
            columns[feature.name] = values.to_numpy(dtype=bool)
        else:
            text = values.astype(object).where(values.notna(), None)
            columns[feature.name] = np.array([None if v is None else str(v) for v in text], dtype=object)
    return Batch(columns=columns, rows=len(frame))


def version_refusal(card: Mapping[str, Any]) -> str:
    """Why the check cannot run here ('' if it can): the original must be loaded with the version it was trained
    with, since that is the version that serves it (and unpickling across versions is not reliable)."""
    import sklearn

    trained_with = card.get("sklearn_version")
    if trained_with and trained_with != sklearn.__version__:
        return (
            f"trained with scikit-learn {trained_with}, and the registration check runs scikit-learn "
            f"{sklearn.__version__}: the original must be compared in the version that serves it"
        )
    return ""


def refused_check(reason: str, *, sample_rows: int = 0, sample_source: str = "") -> dict[str, Any]:
    """The record of a check that did not get as far as comparing predictions."""
    return {
        "runtime": "",
        "sample_rows": sample_rows,
        "sample_source": sample_source,
        "max_abs_diff": None,
        "labels_identical": None,
        "accepted": False,
        "reason": reason,
    }


def compile_model(
    model: Any,
    card: Mapping[str, Any],
    sample: Any,
    *,
    sample_source: str = "",
    tolerance: float | None = None,
) -> CompileOutcome:
    """Convert the pipeline to ONNX and keep the copy only if it predicts as the original on `sample` (a DataFrame
    of the card's features). Never raises for a model it cannot convert or check: the outcome says why."""
    import onnx
    import onnxruntime
    import skl2onnx
    import sklearn

    features = [Feature(name, (card.get("feature_types") or {}).get(name, "")) for name in card.get("features") or []]
    classifier = card.get("task") == "classification"
    check: dict[str, Any] = {
        "runtime": onnxruntime_runtime(),
        "versions": {
            "onnxruntime": onnxruntime.__version__,
            "skl2onnx": skl2onnx.__version__,
            "onnx": onnx.__version__,
            "scikit-learn": sklearn.__version__,
        },
        "sample_rows": 0 if sample is None else len(sample),
        "sample_source": sample_source,
        "max_abs_diff": None,
        "labels_identical": None,
        "accepted": False,
        "reason": "",
    }

    def refused(reason: str) -> CompileOutcome:
        check["reason"] = reason
        return CompileOutcome(onnx=None, check=check)

    if not features:
        return refused("the model card lists no features")
    if sample is None or len(sample) == 0:
        return refused("no rows to check the compiled copy on")
    if classifier and not hasattr(model, "predict_proba"):
        return refused("the classifier has no predict_proba to compare")
    version = version_refusal(card)
    if version:
        return refused(version)
    try:
        model_bytes, layout = _convert(model, classifier)
        model_bytes = _with_layout(model_bytes, layout)
        check["input_dtype"] = "float32" if layout.float32 else "float64"
        predictor = OnnxPredictor(model_bytes, features=features, classes=card.get("classes") if classifier else None)
    except CompileRefused as exc:
        return refused(f"cannot convert: {exc}")
    except Exception as exc:  # skl2onnx raises many kinds for what it does not support
        return refused(f"cannot convert: {type(exc).__name__}: {_first_line(exc)}")
    try:
        batch = batch_from_frame(sample, features)
        frame = batch.frame()
        compiled = predictor.predict(batch)
        if classifier:
            expected = np.asarray(model.predict_proba(frame), dtype=np.float64)
            labels = model.predict(frame)
            identical = bool(np.array_equal(np.asarray(labels, dtype=object), compiled.labels.astype(object)))
            check["labels_identical"] = identical
            got = np.asarray(compiled.probabilities, dtype=np.float64)
            limit = PROBABILITY_TOLERANCE if tolerance is None else tolerance
            allowed = np.full(expected.shape, limit)
        else:
            expected = np.asarray(model.predict(frame), dtype=np.float64).reshape(-1)
            got = np.asarray(compiled.labels, dtype=np.float64).reshape(-1)
            limit = REGRESSION_RELATIVE_TOLERANCE if tolerance is None else tolerance
            allowed = limit * np.maximum(1.0, np.abs(expected))
    except Exception as exc:
        return refused(f"the compiled copy failed on the sample: {type(exc).__name__}: {_first_line(exc)}")
    if got.shape != expected.shape:
        return refused(f"the compiled copy returned shape {got.shape}, the original {expected.shape}")
    difference = np.abs(got - expected)
    check["max_abs_diff"] = float(difference.max()) if difference.size else 0.0
    check["tolerance"] = {"kind": "absolute" if classifier else "relative to max(1, |prediction|)", "value": limit}
    if not np.isfinite(difference).all():
        return refused("the compiled copy's predictions are not finite where the original's are")
    if classifier and not check["labels_identical"]:
        return refused("the compiled copy predicts a different class on some rows")
    worst = float((difference / allowed).max())
    if worst > 1.0:
        return refused(f"the compiled copy differs by {check['max_abs_diff']:.3g}, more than the tolerance {limit:g}")
    check["accepted"] = True
    return CompileOutcome(onnx=model_bytes, check=check)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""
