"""Environments: where models are promoted to, with their approvals, gates and objectives. Admins only."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from controlplane import permissions
from controlplane.services import audit_record
from deployments import gates as gate_rules
from deployments.models import Environment

ENVIRONMENT_FIELDS = (
    "name",
    "order",
    "description",
    "approvals_required",
    "gates",
    "allow_override",
    "request_ttl_days",
    "bake_minutes",
    "deploy_on_approval",
    "strategy",
    "canary_percent",
    "linear_step_percent",
    "linear_interval_minutes",
    "autoscaling_metric",
    "autoscaling_target",
    "objective_p99_latency_ms",
    "objective_error_rate",
    "objective_drift_share",
    "min_desired_count",
    "max_desired_count",
    "backend_settings",
    "capture_fraction",
    "drift_window_minutes",
    "drift_share",
    "drift_methods",
)
MAX_APPROVALS = 10
STRATEGIES = ("rolling", "all_at_once", "canary", "linear")
AUTOSCALING_METRICS = ("requests", "cpu")
# The settings that take a number (fractions of a minute allowed: a short bake on the local backend), and the range.
NUMBER_RANGES: dict[str, tuple[float, float, str]] = {
    "bake_minutes": (0.0, 1440.0, "minutes from 0 to 1440"),
    "canary_percent": (1.0, 99.0, "a percentage of traffic from 1 to 99"),
    "linear_step_percent": (1.0, 99.0, "a percentage of traffic from 1 to 99"),
    "linear_interval_minutes": (0.0, 1440.0, "minutes from 0 to 1440"),
    "capture_fraction": (0.0, 1.0, "a fraction of requests from 0 (capture none) to 1 (all)"),
}
# The whole-number settings and what each accepts: the one table the checks below and the API's schema read.
WHOLE_NUMBER_RANGES: dict[str, tuple[int, int]] = {
    "order": (0, 1000),
    "approvals_required": (1, MAX_APPROVALS),
    "request_ttl_days": (1, 365),
    "min_desired_count": (1, 100),
    "max_desired_count": (1, 100),
    "drift_window_minutes": (1, 10080),
}


def _environment_snapshot(environment: Environment) -> dict[str, Any]:
    return {name: getattr(environment, name) for name in ENVIRONMENT_FIELDS}


def _whole(errors: dict[str, list[str]], data: dict[str, Any], name: str, low: int, high: int) -> None:
    if name not in data:
        return
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except ValueError:
            errors.setdefault(name, []).append(f"expected a whole number from {low} to {high}, got {data[name]!r}")
            return
    if not low <= value <= high:
        errors.setdefault(name, []).append(f"expected a whole number from {low} to {high}, got {value}")
        return
    data[name] = value


def _number_in_range(errors: dict[str, list[str]], data: dict[str, Any], name: str) -> None:
    if name not in data:
        return
    low, high, what = NUMBER_RANGES[name]
    value = data[name]
    try:
        number = float(str(value).strip()) if not isinstance(value, bool) else float("nan")
    except ValueError:
        number = float("nan")
    if number != number or not low <= number <= high:
        errors.setdefault(name, []).append(f"expected {what}, got {value!r}")
        return
    data[name] = number


def _fraction_or_number(
    errors: dict[str, list[str]], data: dict[str, Any], name: str, *, high: float | None, what: str
) -> None:
    if name not in data:
        return
    value = data[name]
    if value in (None, ""):
        data[name] = None
        return
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if number != number or number <= 0 or (high is not None and number > high):
        errors.setdefault(name, []).append(f"expected {what}, or empty for none; got {value!r}")
        return
    data[name] = number


def _clean_drift(errors: dict[str, list[str]], data: dict[str, Any]) -> None:
    """The drift job's share and methods, checked by the statistics core itself (the job runs the same check)."""
    if "drift_share" in data:
        value = data["drift_share"]
        try:
            share = float(value) if not isinstance(value, bool) else float("nan")
        except (TypeError, ValueError):
            share = float("nan")
        if share != share or not 0 < share <= 1:
            errors.setdefault("drift_share", []).append(
                f"expected the share of features that makes the inputs drifted, above 0 and at most 1; got {value!r}"
            )
        else:
            data["drift_share"] = share
    if "drift_methods" in data:
        methods = data["drift_methods"]
        if methods in (None, ""):
            methods = data["drift_methods"] = {}
        if not isinstance(methods, dict):
            errors.setdefault("drift_methods", []).append(
                'expected an object, e.g. {"numeric": {"method": "psi", "threshold": 0.2}}, or empty for the defaults'
            )
            return
        from workers.stats.drift import validate_drift_config

        problems = validate_drift_config(dict(methods))
        if "share" in methods:
            problems["share"] = "set by drift_share, not among the methods"
        for name, message in sorted(problems.items()):
            errors.setdefault("drift_methods", []).append(f"{name}: {message}")


def _clean_environment(data: dict[str, Any], *, instance: Environment | None) -> dict[str, Any]:
    """Validate every field given; a ValidationError names each bad field and what was expected."""
    from controlplane.services import SLUG_RE

    data = {key: value for key, value in data.items() if key in ENVIRONMENT_FIELDS}
    errors: dict[str, list[str]] = {}
    if "name" in data or instance is None:
        name = str(data.get("name") or "").strip()
        if not name:
            errors["name"] = ["required: a short lowercase name such as staging or production"]
        elif len(name) > 40 or not SLUG_RE.fullmatch(name):
            errors["name"] = ["expected lowercase letters, digits and hyphens (at most 40), e.g. production"]
        elif Environment.objects.filter(name=name).exclude(pk=getattr(instance, "pk", None)).exists():
            errors["name"] = [f"an environment named {name!r} exists already"]
        elif instance is not None and name != instance.name:
            gated = [
                other.name
                for other in Environment.objects.exclude(pk=instance.pk)
                if f"approved in {instance.name}" in other.gates
            ]
            if gated:
                errors["name"] = [
                    f"{', '.join(gated)} gate on 'approved in {instance.name}': change those gates before renaming"
                ]
        data["name"] = name
    for name, (low, high) in WHOLE_NUMBER_RANGES.items():
        _whole(errors, data, name, low, high)
    for name in NUMBER_RANGES:
        _number_in_range(errors, data, name)
    if "strategy" in data:
        data["strategy"] = str(data["strategy"] or "").strip()
        if data["strategy"] not in STRATEGIES:
            errors["strategy"] = [f"expected one of {', '.join(STRATEGIES)}, got {data['strategy']!r}"]
    if "autoscaling_metric" in data:
        data["autoscaling_metric"] = str(data["autoscaling_metric"] or "").strip()
        if data["autoscaling_metric"] not in ("", *AUTOSCALING_METRICS):
            errors["autoscaling_metric"] = [
                f"expected {' or '.join(AUTOSCALING_METRICS)}, or empty for none; got {data['autoscaling_metric']!r}"
            ]
    _fraction_or_number(
        errors, data, "autoscaling_target", high=None, what="requests per task per minute or a CPU % above 0"
    )
    _fraction_or_number(errors, data, "objective_p99_latency_ms", high=None, what="a latency in milliseconds above 0")
    _fraction_or_number(errors, data, "objective_error_rate", high=1.0, what="a fraction above 0 and at most 1")
    _fraction_or_number(errors, data, "objective_drift_share", high=1.0, what="a fraction above 0 and at most 1")
    low = data.get("min_desired_count", getattr(instance, "min_desired_count", 1))
    high = data.get("max_desired_count", getattr(instance, "max_desired_count", 4))
    if "min_desired_count" not in errors and "max_desired_count" not in errors and low > high:
        errors["max_desired_count"] = [f"must be at least the minimum desired count ({low}), got {high}"]
    elif instance is not None and "min_desired_count" not in errors and "max_desired_count" not in errors:
        from deployments.models import Service

        running = list(Service.objects.filter(environment=instance).order_by("name"))
        above = [f"{service.name} ({service.desired_count})" for service in running if service.desired_count > high]
        below = [f"{service.name} ({service.desired_count})" for service in running if service.desired_count < low]
        if above:
            errors["max_desired_count"] = [f"{', '.join(above)} run more than {high}: scale them down first"]
        if below:
            errors["min_desired_count"] = [f"{', '.join(below)} run fewer than {low}: scale them up first"]
    for name in ("allow_override", "deploy_on_approval"):
        if name in data and not isinstance(data[name], bool):
            errors[name] = [f"expected true or false, got {data[name]!r}"]
    _clean_drift(errors, data)
    if "description" in data:
        data["description"] = str(data["description"] or "")
    if "backend_settings" in data and not isinstance(data["backend_settings"], dict):
        errors["backend_settings"] = ['expected an object, e.g. {"cluster": "ml-prod"}']
    if "gates" in data:
        texts = data["gates"]
        if isinstance(texts, str):
            texts = [line for line in texts.splitlines() if line.strip()]
        if not isinstance(texts, list):
            errors["gates"] = ['expected a list of gate expressions, e.g. ["accuracy >= 0.90"]']
        else:
            parsed, problems = gate_rules.parse_gates(texts)
            own_name = data.get("name") or getattr(instance, "name", "")
            for gate in parsed:
                if gate.kind != "previous_environment":
                    continue
                if gate.environment == own_name:
                    problems.append(f"{gate.expression!r}: an environment cannot require approval in itself first")
                elif not Environment.objects.filter(name=gate.environment).exists():
                    known = ", ".join(Environment.objects.values_list("name", flat=True)) or "none yet"
                    problems.append(f"{gate.expression!r}: there is no environment {gate.environment!r} ({known})")
            if problems:
                errors["gates"] = problems
            else:
                data["gates"] = [gate.expression for gate in parsed]
    if errors:
        raise ValidationError(errors)
    return data


def environment_create(*, actor: Any, data: dict[str, Any]) -> Environment:
    permissions.require(actor, "environment.manage")
    cleaned = _clean_environment(dict(data), instance=None)
    try:
        with transaction.atomic():
            environment = Environment.objects.create(created_by=actor, **cleaned)
            audit_record(
                actor=actor,
                action="environment.create",
                object_type="environment",
                object_id=environment.pk,
                object_repr=environment.name,
                after=_environment_snapshot(environment),
            )
    except IntegrityError:
        raise ValidationError({"name": [f"an environment named {cleaned['name']!r} exists already"]}) from None
    return environment


def environment_update(*, actor: Any, environment_id: int, data: dict[str, Any]) -> Environment:
    """Change the fields given; audited with before and after. Open requests keep the rules they were made under."""
    permissions.require(actor, "environment.manage")
    try:
        with transaction.atomic():
            environment = Environment.objects.select_for_update().get(pk=environment_id)
            cleaned = _clean_environment(dict(data), instance=environment)
            before = _environment_snapshot(environment)
            for name, value in cleaned.items():
                setattr(environment, name, value)
            after = _environment_snapshot(environment)
            changed = [name for name in ENVIRONMENT_FIELDS if before[name] != after[name]]
            if not changed:
                return environment
            environment.save(update_fields=[*changed, "updated_at"])
            audit_record(
                actor=actor,
                action="environment.change",
                object_type="environment",
                object_id=environment.pk,
                object_repr=environment.name,
                before={name: before[name] for name in changed},
                after={name: after[name] for name in changed},
            )
    except IntegrityError:
        raise ValidationError({"name": ["an environment with that name exists already"]}) from None
    return environment
