"""What the portal checks at launch from the recipe's declarations: instance count and the target column's kind.

The target checks read profiles that workers.datasets computes from real files, as the portal stores them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.datasets import load_diabetes, load_iris

from tests.workers.test_recipe_inputs import penguins
from workers.datasets import profile_files
from workers.recipes import RECIPES, get_recipe, instance_count_problem, recipe_task, target_problem


def column_profiles(frame: pd.DataFrame, path: Path) -> dict[str, Any]:
    frame.to_csv(path, index=False)
    return profile_files([path], format="csv")["columns"]


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    base = tmp_path_factory.mktemp("profiles")
    iris = load_iris(as_frame=True)
    named = iris.frame.assign(species=iris.target_names[iris.target])
    flags = pd.DataFrame({"x": [1, 2, 3, 4], "verified": ["true", "false", "true", "true"], "empty": [None] * 4})
    return {
        "penguins": column_profiles(penguins(), base / "penguins.csv"),
        "iris": column_profiles(named, base / "iris.csv"),
        "diabetes": column_profiles(load_diabetes(as_frame=True).frame, base / "diabetes.csv"),
        "flags": column_profiles(flags, base / "flags.csv"),
    }


def problem(recipe: str, profile: dict[str, Any], target: str, **parameters: Any) -> str | None:
    return target_problem(get_recipe(recipe), {"target": target, **parameters}, profile.get(target))


def test_every_scikit_learn_recipe_runs_on_one_instance() -> None:
    for recipe in RECIPES.values():
        assert recipe.max_instances == 1, recipe.name
        assert instance_count_problem(recipe, 1) is None
    assert instance_count_problem(get_recipe("random_forest"), 3) == (
        "recipe random_forest runs on 1 instance only: scikit-learn trains on one machine, so 3 instances would "
        "each train the same model and multiply the cost; expected 1"
    )
    for count in (0, -1, True, "2", 1.5):
        assert instance_count_problem(get_recipe("split"), count) == (  # type: ignore[arg-type]
            f"expected a whole number of instances from 1 to 1, got {count!r}"
        )


def test_the_task_comes_from_the_recipe_or_its_task_parameter() -> None:
    assert recipe_task(get_recipe("logistic_regression"), {"task": "regression"}) == "classification"
    assert recipe_task(get_recipe("linear_regression"), {}) == "regression"
    assert recipe_task(get_recipe("random_forest"), {}) == "classification"  # the parameter's default
    assert recipe_task(get_recipe("random_forest"), {"task": "regression"}) == "regression"
    assert recipe_task(get_recipe("hist_gradient_boosting"), {"task": " regression "}) == "regression"
    assert recipe_task(get_recipe("random_forest"), {"task": "clustering"}) is None  # validation reports that
    assert recipe_task(get_recipe("split"), {}) is None


def test_a_text_target_cannot_be_a_regression_target(profiles: dict[str, dict[str, Any]]) -> None:
    assert profiles["penguins"]["species"]["type"] == "string"
    assert problem("linear_regression", profiles["penguins"], "species") == (
        "target column 'species' holds text, so it cannot be a regression target: expected a numeric column "
        "(or a recipe for classification)"
    )
    assert problem("random_forest", profiles["iris"], "species", task="regression") == (
        "target column 'species' holds text, so it cannot be a regression target: expected a numeric column "
        "(or task=classification)"
    )
    assert problem("hist_gradient_boosting", profiles["flags"], "verified", task="regression") == (
        "target column 'verified' holds true/false values, so it cannot be a regression target: expected a numeric "
        "column (or task=classification)"
    )
    # The same columns are fine classification targets, and numbers are fine regression targets.
    assert problem("logistic_regression", profiles["penguins"], "species") is None
    assert problem("random_forest", profiles["flags"], "verified") is None
    assert problem("linear_regression", profiles["penguins"], "body_mass_g") is None
    assert problem("linear_regression", profiles["diabetes"], "target") is None


def test_a_continuous_target_cannot_be_a_classification_target(profiles: dict[str, dict[str, Any]]) -> None:
    bmi = profiles["diabetes"]["bmi"]
    assert bmi["type"] == "float"
    assert problem("logistic_regression", profiles["diabetes"], "bmi") == (
        f"target column 'bmi' holds continuous numbers (from {bmi['min']:g} to {bmi['max']:g}), so it cannot be a "
        "classification target: expected classes (text, true/false or whole numbers) (or a recipe for regression)"
    )
    message = problem("random_forest", profiles["penguins"], "bill_length_mm")
    assert message is not None and message.startswith("target column 'bill_length_mm' holds continuous numbers")
    assert message.endswith("(or task=regression)")
    assert problem("random_forest", profiles["penguins"], "bill_length_mm", task="regression") is None


def test_whole_number_targets_are_fine_for_classification(profiles: dict[str, dict[str, Any]]) -> None:
    assert profiles["iris"]["target"]["type"] == "integer"
    assert problem("logistic_regression", profiles["iris"], "target") is None
    assert problem("random_forest", profiles["penguins"], "year") is None
    # diabetes' target is written as 151.0, 75.0, …: a float column of whole numbers. As classes they are too many
    # (214 in 442 rows: a quantity, refused), as a regression target they are fine.
    assert profiles["diabetes"]["target"]["type"] == "float"
    assert "looks like a quantity" in problem("hist_gradient_boosting", profiles["diabetes"], "target")
    assert (
        target_problem(
            get_recipe("hist_gradient_boosting"),
            {"target": "target", "task": "regression"},
            profiles["diabetes"]["target"],
        )
        is None
    )


def test_an_empty_target_and_unknown_cases(profiles: dict[str, dict[str, Any]]) -> None:
    assert problem("random_forest", profiles["flags"], "empty") == (
        "target column 'empty' has no values (every row is missing); expected a column holding what to predict"
    )
    assert problem("logistic_regression", profiles["flags"], "nope") is None  # no profile entry: the recipe checks
    assert target_problem(get_recipe("split"), {"target": "x"}, profiles["flags"]["x"]) is None
    assert target_problem(get_recipe("random_forest"), {}, profiles["flags"]["x"]) is None


def test_many_whole_numbers_are_a_quantity_not_classes(tmp_path) -> None:
    """palmerpenguins' body_mass_g: whole grams, 95 values in 344 rows; a classifier on it failed a few seconds in."""
    import palmerpenguins

    path = tmp_path / "penguins.csv"
    palmerpenguins.load_penguins().to_csv(path, index=False)
    profile = profile_files([path], format="csv", missing_values=("", "NA"))
    spec = get_recipe("random_forest")
    mass = target_problem(spec, {"target": "body_mass_g", "task": "classification"}, profile["columns"]["body_mass_g"])
    assert mass is not None and "body_mass_g" in mass and "regression" in mass
    year = profile["columns"]["year"]  # three whole numbers: fine as classes
    assert target_problem(spec, {"target": "year", "task": "classification"}, year) is None
