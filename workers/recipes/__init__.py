"""The recipe registry: every transform and training recipe, its parameters, channels, outputs and metric regexes.

Each recipe script declares itself in a literal `RECIPE = {...}` dict; the registry reads that literal with `ast`
instead of importing the script, so the portal never imports scikit-learn and there is one declaration per recipe.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.recipes._contract import (
    MISSING_VALUES_HYPERPARAMETER,
    PARAMETER_TYPES,
    Parameter,
    expected,
    parameters_from_spec,
)
from workers.recipes._contract import validate_parameters as _validate_parameters

__all__ = [
    "METRIC_VALUE_REGEX",
    "MISSING_VALUES_HYPERPARAMETER",
    "RECIPES",
    "SUPPORT_FILES",
    "Parameter",
    "Recipe",
    "UnknownRecipe",
    "expected",
    "get_recipe",
    "instance_count_problem",
    "load_recipe",
    "metric_definitions",
    "recipe_fingerprint",
    "recipe_task",
    "target_problem",
    "validate_parameters",
]

RECIPES_DIR = Path(__file__).resolve().parent
# The helper modules recipes import; every backend ships them next to the recipe script (SageMaker: same source_dir).
SUPPORT_FILES = (RECIPES_DIR / "_contract.py", RECIPES_DIR / "_training.py")
_SCRIPTS = (
    "split.py",
    "clean_missing.py",
    "select_columns.py",
    "logistic_regression.py",
    "linear_regression.py",
    "random_forest.py",
    "hist_gradient_boosting.py",
)
# A decimal number as Python prints it (`0.956`, `-3`, `1.2e-05`); SageMaker takes the first capture group.
METRIC_VALUE_REGEX = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
RECIPE_KINDS = ("transform", "training")
TASKS = ("classification", "regression")


class UnknownRecipe(ValueError):
    """No recipe has that name."""


@dataclass(frozen=True)
class Recipe:
    """A script following the SageMaker script-mode contract, and what it accepts and produces."""

    name: str
    kind: str
    version: str
    script: Path
    description: str
    parameters: tuple[Parameter, ...]
    channels: tuple[str, ...]
    outputs: tuple[str, ...] = ()
    metric_definitions: tuple[dict[str, str], ...] = ()
    optional_channels: tuple[str, ...] = ()
    # Most instances a job may run on; scikit-learn is not distributed, so more would each train the same model.
    max_instances: int = 1
    # A training recipe's task when the recipe fixes it; None: chosen by its `task` parameter.
    task: str | None = None

    def parameter(self, name: str) -> Parameter:
        """The parameter called `name` (KeyError if the recipe has none)."""
        for parameter in self.parameters:
            if parameter.name == name:
                return parameter
        raise KeyError(name)


def metric_definitions(names: Iterable[str]) -> tuple[dict[str, str], ...]:
    """SageMaker MetricDefinitions for lines printed as `metric: <name>=<value>[; step=k][; fold=k]`."""
    return tuple({"Name": name, "Regex": f"metric: {re.escape(name)}={METRIC_VALUE_REGEX}"} for name in names)


def _literal(script: Path, variable: str) -> dict[str, Any]:
    tree = ast.parse(script.read_bytes(), filename=str(script))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == variable for target in node.targets
        ):
            value = ast.literal_eval(node.value)
            if isinstance(value, dict):
                return value
    raise ValueError(f"{script} declares no literal {variable} dict")


def load_recipe(script: Path) -> Recipe:
    """The recipe declared by the `RECIPE` literal in `script`, read without running the script."""
    spec = _literal(script, "RECIPE")
    parameters = parameters_from_spec(spec.get("parameters", ()))
    for parameter in parameters:
        if parameter.type not in PARAMETER_TYPES:
            raise ValueError(f"{script}: parameter {parameter.name} has unknown type {parameter.type!r}")
    if spec["kind"] not in RECIPE_KINDS:
        raise ValueError(f"{script}: kind must be one of {', '.join(RECIPE_KINDS)}")
    max_instances = spec.get("max_instances", 1)
    if isinstance(max_instances, bool) or not isinstance(max_instances, int) or max_instances < 1:
        raise ValueError(f"{script}: max_instances must be a whole number >= 1")
    task = spec.get("task")
    if task is not None and task not in TASKS:
        raise ValueError(f"{script}: task must be one of {', '.join(TASKS)}")
    if spec["kind"] == "training" and task is None and "task" not in {parameter.name for parameter in parameters}:
        raise ValueError(f"{script}: a training recipe declares its task or a task parameter")
    return Recipe(
        name=spec["name"],
        kind=spec["kind"],
        version=str(spec["version"]),
        script=script,
        description=spec.get("description", ""),
        parameters=parameters,
        channels=tuple(spec["channels"]),
        outputs=tuple(spec.get("outputs", ())),
        metric_definitions=metric_definitions(spec.get("metrics", ())),
        optional_channels=tuple(spec.get("optional_channels", ())),
        max_instances=max_instances,
        task=task,
    )


RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in (load_recipe(RECIPES_DIR / s) for s in _SCRIPTS)}


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`, or UnknownRecipe naming the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UnknownRecipe(f"unknown recipe '{name}' (known: {', '.join(sorted(RECIPES))})") from None


def validate_parameters(
    recipe: Recipe, values: Mapping[str, Any], *, columns: Sequence[str] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """(cleaned values with defaults filled in, errors by parameter name); the recipe runs this same code."""
    return _validate_parameters(recipe.parameters, values, columns=columns)


def recipe_fingerprint(recipe: Recipe) -> str:
    """sha256 of the version, the script and the SUPPORT_FILES shipped with it: the exact code a run ran."""
    digest = hashlib.sha256()
    parts = [recipe.version.encode(), recipe.script.read_bytes(), *(path.read_bytes() for path in SUPPORT_FILES)]
    for part in parts:
        # Length-prefixed so moving bytes from one part to the next changes the hash.
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


# --- what the portal checks before it launches a run ------------------------------------------------------------------


def instance_count_problem(spec: Recipe, count: int) -> str | None:
    """Why `count` instances cannot run recipe `spec`, or None when they can."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        return f"expected a whole number of instances from 1 to {spec.max_instances}, got {count!r}"
    if count <= spec.max_instances:
        return None
    if spec.max_instances == 1:
        return (
            f"recipe {spec.name} runs on 1 instance only: scikit-learn trains on one machine, so {count} instances "
            f"would each train the same model and multiply the cost; expected 1"
        )
    return f"recipe {spec.name} runs on at most {spec.max_instances} instances; expected 1 to {spec.max_instances}"


def recipe_task(spec: Recipe, parameters: Mapping[str, Any]) -> str | None:
    """ "classification" or "regression": fixed by the recipe, else its `task` parameter (None: not a training run)."""
    if spec.kind != "training":
        return None
    if spec.task is not None:
        return spec.task
    try:
        default = spec.parameter("task").default
    except KeyError:
        return None
    task = parameters.get("task")
    task = default if task is None or (isinstance(task, str) and not task.strip()) else task
    task = task.strip() if isinstance(task, str) else task
    return task if task in TASKS else None


_TEXT_KINDS = {"string": "text", "datetime": "dates", "boolean": "true/false values"}


def target_problem(spec: Recipe, parameters: Mapping[str, Any], column_profile: Mapping[str, Any] | None) -> str | None:
    """Why the dataset profile's entry for the target column cannot be this run's target, or None.

    A text (or date, or true/false) column cannot be a regression target; a column of numbers that are not all
    whole cannot be a classification target. `column_profile` is the entry under the profile's "columns" for the
    `target` parameter's column; without one (no profile yet) nothing is decided here and the recipe checks it.
    """
    task = recipe_task(spec, parameters)
    target = parameters.get("target")
    if task is None or not isinstance(target, str) or not target or column_profile is None:
        return None
    kind = column_profile.get("type")
    if column_profile.get("count") == 0:
        return (
            f"target column '{target}' has no values (every row is missing); expected a column holding what to predict"
        )
    switch = "task=" if spec.task is None else "a recipe for "
    if task == "regression" and kind in _TEXT_KINDS:
        return (
            f"target column '{target}' holds {_TEXT_KINDS[kind]}, so it cannot be a regression target: expected a "
            f"numeric column (or {switch}classification)"
        )
    if task == "classification" and kind == "float" and not _whole_numbers(column_profile):
        return (
            f"target column '{target}' holds continuous numbers{_range(column_profile)}, so it cannot be a "
            f"classification target: expected classes (text, true/false or whole numbers) (or {switch}regression)"
        )
    distinct, rows = column_profile.get("distinct"), column_profile.get("count")
    if (
        task == "classification"
        and kind in ("integer", "float")
        and isinstance(distinct, int)
        and isinstance(rows, int)
        and distinct > MAX_NUMERIC_CLASSES
        and distinct * MIN_ROWS_PER_CLASS > rows
    ):
        # Whole numbers can be classes (0/1, a year), but this many, this rarely each, are a quantity: splitting the
        # rows by class would leave classes of one row, and the run would fail a few seconds in.
        many = "more than " if column_profile.get("distinct_capped") else ""
        return (
            f"target column '{target}' holds {many}{distinct} different numbers in {rows} rows, which looks like a "
            f"quantity, not classes: expected at most {MAX_NUMERIC_CLASSES} classes, "
            f"or about {MIN_ROWS_PER_CLASS} rows per class (or {switch}regression)"
        )
    return None


# A numeric target with more distinct values than this, and fewer rows per value than that, is not a set of classes.
MAX_NUMERIC_CLASSES = 50
MIN_ROWS_PER_CLASS = 20


def _whole_numbers(column_profile: Mapping[str, Any]) -> bool:
    """Are all of a numeric column's values whole numbers (3 and 3.0 alike), as far as the profile tells?"""
    integer_valued = column_profile.get("integer_valued")
    if isinstance(integer_valued, bool):
        return integer_valued
    # Profiles written before integer_valued: a fractional minimum or maximum proves fractions; else assume whole, so a
    # run that the recipe would accept is never refused.
    bounds = [column_profile.get("min"), column_profile.get("max")]
    return all(not isinstance(value, (int, float)) or float(value).is_integer() for value in bounds)


def _range(column_profile: Mapping[str, Any]) -> str:
    low, high = column_profile.get("min"), column_profile.get("max")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        return f" (from {low:g} to {high:g})"
    return ""
