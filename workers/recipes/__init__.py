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
    "load_recipe",
    "metric_definitions",
    "recipe_fingerprint",
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
