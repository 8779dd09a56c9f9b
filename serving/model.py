"""Loading what a deployment serves: fetch the artifact, check its SHA-256, check the library it was trained with,
then load it (and its checked compiled copy and hooks, when there are any).

Every refusal is a `ModelError` whose message is one line; `python -m serving` prints it and exits without serving.

An artifact is either the bare `model.joblib` a local run stores (its model card then comes from `MODEL_CARD`), or
a model package: a `.tar.gz` (SageMaker's `model.tar.gz`) holding `model.joblib`, `model.json` (the card) and,
optionally, `hooks.py` with the package's own pre- and post-processing (see `Hooks`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from serving.config import ServingConfig
from serving.predictors import Feature, Predictor, SklearnPredictor

log = logging.getLogger("serving")

FEATURE_TYPES = ("numeric", "boolean", "categorical")


class ModelError(Exception):
    """The artifact cannot be served; the message says why in one line."""


@dataclass
class Hooks:
    """A package's own business logic around the model, from its `hooks.py`; both are optional.

    - `preprocess(frame: pandas.DataFrame) -> pandas.DataFrame`: gets the validated rows (the model's columns, in
      order) and returns the rows to predict, with the same columns. Raise ValueError to refuse the request: its
      message is the 400 answer's error.
    - `postprocess(response: dict, frame: pandas.DataFrame) -> dict`: gets the JSON answer about to be sent
      (`predictions`, and `probabilities` and `classes` for classifiers) and the rows, and returns the answer.
    """

    preprocess: Callable[[Any], Any] | None = None
    postprocess: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None

    @property
    def any(self) -> bool:
        return self.preprocess is not None or self.postprocess is not None


@dataclass
class LoadedModel:
    """The model as the server uses it: schema, classes, what predicts, and what it was checked against."""

    features: list[Feature]
    task: str
    classes: list[Any] | None
    predictor: Predictor
    original: Predictor
    card: dict[str, Any]
    sha256: str
    hooks: Hooks = field(default_factory=Hooks)
    compiled_sha256: str = ""

    @property
    def classifier(self) -> bool:
        return self.classes is not None

    @property
    def numeric_only(self) -> bool:
        return all(feature.type == "numeric" for feature in self.features)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def fetch(uri: str, work_dir: Path, *, region: str, name: str) -> Path:
    """The artifact at `uri` as a file of the server's own, in `work_dir`: a file:// path is copied, an s3://
    object downloaded through the project's one boto3 client factory. The copy is what gets hashed and loaded, so
    nobody can swap the bytes between the check and the load."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        import shutil

        path = Path(unquote(parts.path))
        if not path.is_file():
            raise ModelError(f"{name} {uri} does not exist or is not a file")
        target = work_dir / f"{name.lower()}-{path.name}"
        try:
            shutil.copyfile(path, target)
        except OSError as exc:
            raise ModelError(f"cannot read {name} {uri}: {first_line(exc)}") from None
        return target
    if parts.scheme == "s3":
        from botocore.exceptions import BotoCoreError, ClientError

        from workers.aws import aws_client

        bucket, key = parts.netloc, parts.path.lstrip("/")
        if not bucket or not key:
            raise ModelError(f"{name} {uri} is not an s3://bucket/key URI")
        if not region:
            raise ModelError(f"{name} {uri} is on S3, so AWS_REGION must be set")
        target = work_dir / (Path(key).name or "artifact")
        try:
            aws_client("s3", region=region).download_file(bucket, key, str(target))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise ModelError(f"cannot read {name} {uri}: {code or exc}") from None
        except BotoCoreError as exc:
            raise ModelError(f"cannot read {name} {uri}: {first_line(exc)}") from None
        return target
    raise ModelError(f"{name} {uri} must start with file:// or s3://")


def verify(path: Path, expected: str, *, name: str, uri: str) -> None:
    from workers.sources import sha256_file

    actual = sha256_file(path)
    if actual != expected:
        raise ModelError(
            f"refusing to serve {uri}: its SHA-256 is {actual}, but {name} says {expected} "
            "(the artifact changed since it was registered, or the deployment names the wrong one)"
        )


def same_minor_release(a: str, b: str) -> bool:
    """Whether two scikit-learn versions are the same minor release (serving/images.py parses them)."""
    from serving.images import ImageError, sklearn_minor

    try:
        return sklearn_minor(a) == sklearn_minor(b)
    except ImageError:
        return False


def check_framework(card: dict[str, Any]) -> None:
    """The model must be served by the scikit-learn minor release it was trained with: pickles are not portable
    across minor releases, and a model that unpickles may still predict differently. Within a minor release (a
    model of 1.9.0 on the 1.9.1 image) it is served, with a warning in the log: scikit-learn's patch releases fix
    bugs without changing what a fitted estimator holds. Each image pins the patch release its training
    environment uses (1.9.1 as the project, 1.2.1 as SageMaker's 1.2-1 container), so that case is rare."""
    import sklearn

    from serving.images import ImageError, image_tag

    framework = str(card.get("framework") or "scikit-learn")
    if framework != "scikit-learn":
        raise ModelError(f"this image serves scikit-learn models; the model was trained with {framework}")
    trained = str(card.get("sklearn_version") or "")
    if not trained:
        raise ModelError("the model card does not say which scikit-learn trained the model (sklearn_version)")
    if not same_minor_release(trained, sklearn.__version__):
        try:
            advice = f"serve it with the serving image tagged {image_tag(trained)} (docker/serving/README.md)"
        except ImageError as exc:
            advice = str(exc)
        raise ModelError(
            f"the model was trained with scikit-learn {trained}, but this server has scikit-learn "
            f"{sklearn.__version__}: {advice}"
        )
    if trained != sklearn.__version__:
        log.warning("the model was trained with scikit-learn %s; serving it with %s (same minor release)",
                    trained, sklearn.__version__)


def features_of(card: dict[str, Any]) -> list[Feature]:
    names = card.get("features")
    types = card.get("feature_types") or {}
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelError("the model card has no list of feature names (features)")
    if len(set(names)) != len(names):
        raise ModelError("the model card names a feature twice")
    features = []
    for name in names:
        kind = types.get(name, "numeric") if isinstance(types, dict) else "numeric"
        if kind not in FEATURE_TYPES:
            raise ModelError(f"the model card gives feature {name!r} the type {kind!r}; expected {FEATURE_TYPES}")
        features.append(Feature(name=name, type=kind))
    return features


def _unpack(package: Path, into: Path) -> Path:
    from workers.archives import extract_model_tar
    from workers.errors import BackendError

    try:
        return extract_model_tar(package, into)
    except BackendError as exc:
        raise ModelError(str(exc)) from None


def _load_hooks(path: Path) -> Hooks:
    spec = importlib.util.spec_from_file_location("serving_package_hooks", path)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot load the package's hooks from {path.name}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ModelError(f"the package's hooks.py failed to load: {type(exc).__name__}: {first_line(exc)}") from None
    hooks = Hooks(preprocess=getattr(module, "preprocess", None), postprocess=getattr(module, "postprocess", None))
    for name in ("preprocess", "postprocess"):
        if getattr(hooks, name) is not None and not callable(getattr(hooks, name)):
            raise ModelError(f"hooks.py defines {name}, but it is not a function")
    return hooks


def load(config: ServingConfig) -> LoadedModel:
    """Fetch, verify and load what `config` names; raises ModelError (one line) on anything that is not right."""
    import warnings

    if config.work_dir:
        work = Path(config.work_dir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        import atexit
        import shutil

        work = Path(tempfile.mkdtemp(prefix="serving-"))
        atexit.register(shutil.rmtree, work, ignore_errors=True)  # the artifact's copy goes with the process
    artifact = fetch(config.model_uri, work, region=config.aws_region, name="MODEL_URI")
    verify(artifact, config.model_sha256, name="MODEL_SHA256", uri=config.model_uri)
    card = dict(config.model_card or {})
    hooks = Hooks()
    model_path = artifact
    if tarfile.is_tarfile(artifact):
        folder = _unpack(artifact, work / "package")
        model_path = folder / "model.joblib"
        if not model_path.is_file():
            nested = sorted(str(p.relative_to(folder)) for p in folder.rglob("model.joblib"))
            where = f" at its top (found {nested[0]}: make the archive from inside the folder)" if nested else ""
            raise ModelError(f"the model package {config.model_uri} has no model.joblib{where}")
        if (folder / "model.json").is_file():
            try:
                packaged = json.loads((folder / "model.json").read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ModelError(f"the package's model.json is not valid JSON: {exc}") from None
            card = {**packaged, **card}
        if (folder / "hooks.py").is_file():
            hooks = _load_hooks(folder / "hooks.py")
    if not card:
        said = "MODEL_CARD is empty" if config.model_card is not None else "MODEL_CARD is not set"
        raise ModelError(f"{said} and the artifact has no model.json: the server needs the model's card (its schema)")
    check_framework(card)
    features = features_of(card)
    task = str(card.get("task") or ("classification" if card.get("classes") else "regression"))
    classes = card.get("classes") if task == "classification" else None
    import joblib
    import sklearn.exceptions

    # scikit-learn 1.3 and later warn with their own class; 1.2 (the sklearn-1.2 image) with a UserWarning. A
    # pickle from another minor release than the card says is refused; a patch difference was allowed above.
    inconsistent: type[Warning] = getattr(sklearn.exceptions, "InconsistentVersionWarning", UserWarning)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", inconsistent)
            model = joblib.load(model_path)
    except Exception as exc:
        hint = " (is it a model.joblib? a compiled .onnx copy goes in COMPILED_URI)"
        if isinstance(exc, ImportError):
            hint = ""
        raise ModelError(f"cannot load {config.model_uri}: {type(exc).__name__}: {first_line(exc)}{hint}") from None
    for warning in caught:
        pickled = getattr(warning.message, "original_sklearn_version", None)
        if pickled is None and "version" in str(warning.message):
            match = re.search(r"from version (\S+) when using version", str(warning.message))
            pickled = match.group(1) if match else None
        if pickled is not None and not same_minor_release(str(pickled), sklearn.__version__):
            raise ModelError(
                f"the artifact was pickled by scikit-learn {pickled}, but its card says "
                f"{card.get('sklearn_version')}: the card does not describe this artifact"
            )
    if not hasattr(model, "predict"):
        raise ModelError(f"{config.model_uri} holds a {type(model).__name__}, which has no predict()")
    if classes is not None and hasattr(model, "classes_"):
        model_classes = [c.item() if hasattr(c, "item") else c for c in model.classes_]
        if [str(c) for c in model_classes] != [str(c) for c in classes]:
            raise ModelError(f"the model's classes {model_classes} are not the card's {classes}")
        classes = model_classes
    fitted_on = getattr(model, "feature_names_in_", None)
    if fitted_on is not None and [str(n) for n in fitted_on] != [f.name for f in features]:
        raise ModelError(
            f"the card's features ({len(features)}: {', '.join(f.name for f in features[:5])}…) are not the columns "
            f"the model was fitted on ({len(fitted_on)}: {', '.join(str(n) for n in list(fitted_on)[:5])}…): the card "
            "belongs to another model"
        )
    original = SklearnPredictor(model, classifier=classes is not None)
    predictor: Predictor = original
    if config.compiled_uri:
        compiled = fetch(config.compiled_uri, work, region=config.aws_region, name="COMPILED_URI")
        verify(compiled, config.compiled_sha256, name="COMPILED_SHA256", uri=config.compiled_uri)
        from serving.compiled import OnnxPredictor

        try:
            predictor = OnnxPredictor(compiled, features=features, classes=classes)
        except Exception as exc:
            raise ModelError(f"cannot load the compiled model {config.compiled_uri}: {first_line(exc)}") from None
    return LoadedModel(
        features=features,
        task=task,
        classes=classes,
        predictor=predictor,
        original=original,
        card=card,
        sha256=config.model_sha256,
        hooks=hooks,
        compiled_sha256=config.compiled_sha256 if predictor is not original else "",
    )
