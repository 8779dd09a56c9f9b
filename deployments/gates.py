"""Gate expressions: what an environment checks before a model version may be approved for it. No Django here.

One expression per gate:

    accuracy >= 0.90              a metric threshold (>=, >, <=, <), any metric the recipe reports
    accuracy >= serving - 0.01    no regression beyond a tolerance against the version serving (or last approved)
    rmse <= serving + 0.5           in the environment; passes when there is none yet
    schema matches serving        the input columns and their types equal the serving version's
    approved in staging           the same model version was approved for that environment first
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}

_METRIC = r"(?P<metric>[A-Za-z_][A-Za-z0-9_]*)"
_OP = r"(?P<op>>=|<=|>|<)"
THRESHOLD_RE = re.compile(rf"\A{_METRIC}\s*{_OP}\s*(?P<value>\S+)\Z")
REGRESSION_RE = re.compile(rf"\A{_METRIC}\s*{_OP}\s*serving(?:\s*(?P<sign>[+-])\s*(?P<value>\S+))?\Z")
SCHEMA_RE = re.compile(r"\Aschema\s+matches\s+serving\Z")
PREVIOUS_RE = re.compile(r"\Aapproved\s+in\s+(?P<environment>[a-z0-9][a-z0-9_-]*)\Z")

EXAMPLES = "accuracy >= 0.90, accuracy >= serving - 0.01, schema matches serving, approved in staging"
MAX_GATES = 20


class GateSyntaxError(ValueError):
    """An expression that is not a gate; the message says what was expected."""


@dataclass(frozen=True)
class Gate:
    expression: str
    kind: str  # threshold | no_regression | schema | previous_environment
    metric: str = ""
    op: str = ""
    value: float = 0.0  # the threshold, or the tolerance (signed: "serving - 0.01" is -0.01)
    environment: str = ""

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.metric,) if self.metric else ()


def _number(text: str, expression: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise GateSyntaxError(f"{expression!r}: the threshold {text!r} is not a number (e.g. 0.90)") from None
    if not math.isfinite(value):
        raise GateSyntaxError(f"{expression!r}: the threshold must be a finite number, not {text!r}")
    return value


def parse_gate(text: str) -> Gate:
    expression = " ".join(str(text).split())
    if not expression:
        raise GateSyntaxError(f"an empty gate: expected an expression such as {EXAMPLES}")
    if len(expression) > 200:
        raise GateSyntaxError(f"{expression[:40]!r}…: a gate is at most 200 characters")
    if SCHEMA_RE.match(expression):
        return Gate(expression, "schema")
    if match := PREVIOUS_RE.match(expression):
        return Gate(expression, "previous_environment", environment=match["environment"])
    if match := REGRESSION_RE.match(expression):
        tolerance = _number(match["value"], expression) if match["value"] is not None else 0.0
        if tolerance < 0:
            raise GateSyntaxError(f"{expression!r}: write the tolerance as a positive number after + or -")
        signed = -tolerance if match["sign"] == "-" else tolerance
        return Gate(expression, "no_regression", metric=match["metric"], op=match["op"], value=signed)
    if match := THRESHOLD_RE.match(expression):
        return Gate(
            expression, "threshold", metric=match["metric"], op=match["op"], value=_number(match["value"], expression)
        )
    raise GateSyntaxError(f"{expression!r} is not a gate: expected one of {EXAMPLES}")


def parse_gates(texts: Iterable[Any]) -> tuple[list[Gate], list[str]]:
    """Every gate parsed, and a message per line that is not one (numbered from 1, as the form shows them)."""
    gates, errors = [], []
    items = list(texts)
    if len(items) > MAX_GATES:
        return [], [f"at most {MAX_GATES} gates (got {len(items)})"]
    for number, text in enumerate(items, start=1):
        if not isinstance(text, str):
            errors.append(f"gate {number}: expected text such as 'accuracy >= 0.90', got {type(text).__name__}")
            continue
        try:
            gates.append(parse_gate(text))
        except GateSyntaxError as exc:
            errors.append(f"gate {number}: {exc}")
    return gates, errors


@dataclass(frozen=True)
class Baseline:
    """The version a candidate is compared against: serving in the environment, or else last approved there."""

    label: str
    metrics: Mapping[str, float]
    input_schema: list[Mapping[str, Any]]


@dataclass(frozen=True)
class Candidate:
    label: str
    metrics: Mapping[str, float]
    input_schema: list[Mapping[str, Any]]
    approved_in: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Outcome:
    passed: bool
    summary: str
    evidence: dict[str, Any]


def as_number(value: Any) -> float | None:
    """A metric's value as a finite float, or None when it is not one (text, NaN, a flag, missing)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def missing_metrics(gates: Iterable[Gate], metrics: Mapping[str, Any]) -> list[Gate]:
    """The gates that name a metric the version does not report."""
    return [gate for gate in gates if gate.metric and gate.metric not in metrics]


def _schema_columns(schema: list[Mapping[str, Any]]) -> list[tuple[str, str]]:
    return [(str(column.get("name", "")), str(column.get("type", ""))) for column in schema]


def evaluate(gate: Gate, candidate: Candidate, baseline: Baseline | None) -> Outcome:
    """Decide one gate. A metric the candidate lacks fails the gate (services refuse such requests earlier)."""
    if gate.kind == "threshold":
        value = as_number(candidate.metrics.get(gate.metric))
        if value is None:
            return Outcome(False, f"{candidate.label} does not report {gate.metric}", {"metric": gate.metric})
        passed = OPERATORS[gate.op](float(value), gate.value)
        return Outcome(
            passed,
            f"{gate.metric} = {float(value):.4g} {'meets' if passed else 'misses'} {gate.op} {gate.value:g}",
            {"metric": gate.metric, "value": float(value), "op": gate.op, "threshold": gate.value},
        )
    if gate.kind == "no_regression":
        value = as_number(candidate.metrics.get(gate.metric))
        if value is None:
            return Outcome(False, f"{candidate.label} does not report {gate.metric}", {"metric": gate.metric})
        if baseline is None:
            return Outcome(
                True,
                "nothing serving or approved in this environment yet: nothing to regress against",
                {"metric": gate.metric, "value": float(value)},
            )
        served = as_number(baseline.metrics.get(gate.metric))
        if served is None:
            return Outcome(
                True,
                f"{baseline.label} does not report {gate.metric}: nothing to regress against",
                {"metric": gate.metric, "value": float(value), "baseline": baseline.label},
            )
        bound = float(served) + gate.value
        passed = OPERATORS[gate.op](float(value), bound)
        return Outcome(
            passed,
            f"{gate.metric} = {float(value):.4g} against {baseline.label}'s {float(served):.4g}: "
            f"{'within' if passed else 'beyond'} the tolerance ({gate.op} {bound:.4g})",
            {
                "metric": gate.metric,
                "value": float(value),
                "baseline": baseline.label,
                "baseline_value": float(served),
                "op": gate.op,
                "bound": bound,
            },
        )
    if gate.kind == "schema":
        mine = _schema_columns(candidate.input_schema)
        if baseline is None:
            return Outcome(
                True, "nothing serving or approved in this environment yet: any schema is accepted", {"columns": mine}
            )
        theirs = _schema_columns(baseline.input_schema)
        if mine == theirs:
            return Outcome(True, f"the {len(mine)} input columns match {baseline.label}'s", {"columns": mine})
        added = sorted({name for name, _ in mine} - {name for name, _ in theirs})
        removed = sorted({name for name, _ in theirs} - {name for name, _ in mine})
        retyped = sorted(name for name, kind in mine if name in dict(theirs) and dict(theirs)[name] != kind)
        parts = [
            f"{label}: {', '.join(names)}"
            for label, names in (("added", added), ("missing", removed), ("type changed", retyped))
            if names
        ] or ["the columns are in a different order"]
        return Outcome(
            False,
            f"the input schema differs from {baseline.label}'s ({'; '.join(parts)})",
            {"columns": mine, "baseline_columns": theirs, "added": added, "missing": removed, "retyped": retyped},
        )
    if gate.kind == "previous_environment":
        passed = gate.environment in candidate.approved_in
        return Outcome(
            passed,
            f"{candidate.label} {'was' if passed else 'was not'} approved for {gate.environment} first",
            {"environment": gate.environment, "approved_in": sorted(candidate.approved_in)},
        )
    raise ValueError(f"unknown gate kind {gate.kind!r}")
