"""Runs: the transition table, and launching, stopping and reproducing transform and training runs."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from controlplane import permissions
from controlplane.backends import training_backend
from controlplane.services import SLUG_RE, audit_record
from controlplane.transitions import IllegalTransition, StateMachine, transitions
from lineage import tasks
from lineage.models import (
    DatasetVersion,
    ModelVersion,
    Run,
    RunEvent,
    RunInput,
)
from lineage.selectors import run_cost_estimate
from lineage.services.datasets import (
    to_slug,
)
from lineage.services.edges import lineage_link
from workers import datasets as dataset_files
from workers import recipes as recipe_registry

log = logging.getLogger(__name__)


def _write_run_event(
    run: Run, action: str, previous: str, target: str, actor: Any, reason: str, attempt: int | None
) -> None:
    RunEvent.objects.create(run=run, from_status=previous, to_status=target, reason=reason, actor=actor)
    if settings.OPENLINEAGE_URL and previous != target:
        transaction.on_commit(lambda: tasks.openlineage_emit_task.delay(run.pk, target), robust=True)


# The only way a run's status changes (controlplane.transitions): action -> (from, to[, permission]).
RUN_MACHINE = StateMachine(
    model=Run,
    table=transitions(
        {
            "start": ({"queued"}, "starting"),
            "running": ({"starting"}, "running"),
            "succeed": ({"running", "stopping"}, "succeeded"),
            "fail": ({"queued", "starting", "running", "stopping"}, "failed"),
            "stop": ({"starting", "running"}, "stopping", "run.stop"),
            "cancel": ({"queued"}, "stopped", "run.stop"),
            "stopped": ({"stopping"}, "stopped"),
        }
    ),
    terminal=frozenset({"succeeded", "failed", "stopped"}),
    write_event=_write_run_event,
    timestamps={"starting": "started_at"},
)


def run_transition(
    *,
    run_id: int,
    action: str,
    reason: str = "",
    actor: Any = None,
    attempt: int | None = None,
    quiet: bool = False,
    **fields: Any,
) -> Run:
    """Move a run along RUN_MACHINE under its row lock, writing a RunEvent. An illegal move raises IllegalTransition;
    with `quiet` the run is returned unchanged instead (a worker that lost a race returns quietly)."""
    if reason:
        fields["status_reason"] = reason
    run = RUN_MACHINE.apply(run_id, action, actor=actor, reason=reason, attempt=attempt, quiet=quiet, **fields)
    return run if run is not None else Run.objects.get(pk=run_id)


# --- the limits of a training run: one rule each, owned here; the form, the API and the estimate use these ---------

DEFAULT_SEED = 42
MIN_RUNTIME_SECONDS = 60


def max_runtime_seconds_limit() -> int:
    return int(settings.TRAINING_MAX_RUNTIME_SECONDS)


@dataclass(frozen=True)
class BackendChoice:
    name: str
    label: str
    available: bool
    reason: str  # why it is not available here, when it is not

    @property
    def unavailable_message(self) -> str:
        return f"{self.label} is not configured here: {self.reason}"


def training_backends() -> list[BackendChoice]:
    """The training backends, each with whether this installation can use it and, if not, why."""
    sagemaker_reason = ""
    if not settings.SAGEMAKER_ROLE_ARN:
        sagemaker_reason = "SAGEMAKER_ROLE_ARN is not set"
    elif not settings.SAGEMAKER_S3_URL:
        sagemaker_reason = "it needs an s3:// OBJECT_STORE_URL or SAGEMAKER_S3_URL"
    return [
        BackendChoice("local", "local (this machine)", True, ""),
        BackendChoice("sagemaker", "SageMaker", not sagemaker_reason, sagemaker_reason),
    ]


def backend_names() -> list[str]:
    return [choice.name for choice in training_backends()]


def sagemaker_instance_types() -> list[str]:
    return sorted(k for k in settings.TRAINING_INSTANCE_PRICES if k != "local")


def training_resource_errors(
    *, backend: str, instance_type: str, instance_count: int, max_runtime_seconds: int, spec: Any = None
) -> dict[str, list[str]]:
    """What is wrong with where and how long a run would run, by field: the one check behind the launch, the form,
    the API and the estimate (an estimate is never given for a run that would be refused)."""
    errors: dict[str, list[str]] = {}
    choice = next((c for c in training_backends() if c.name == backend), None)
    if choice is None:
        errors["backend"] = [f"expected one of: {', '.join(backend_names())}"]
    elif not choice.available:
        errors["backend"] = [choice.unavailable_message]
    if backend == "local":
        if instance_type != "local":
            errors["instance_type"] = ["the local backend runs on this machine: expected 'local'"]
        if instance_count != 1:
            errors["instance_count"] = ["the local backend runs one process: expected 1"]
    elif backend == "sagemaker":
        if instance_type not in sagemaker_instance_types():
            errors["instance_type"] = [f"expected one of: {', '.join(sagemaker_instance_types())}"]
        if not 1 <= instance_count <= settings.TRAINING_MAX_INSTANCES:
            errors["instance_count"] = [f"expected a whole number between 1 and {settings.TRAINING_MAX_INSTANCES}"]
    if spec is not None and "instance_count" not in errors:
        problem = recipe_registry.instance_count_problem(spec, instance_count)
        if problem:
            errors["instance_count"] = [problem]
    if not MIN_RUNTIME_SECONDS <= max_runtime_seconds <= max_runtime_seconds_limit():
        errors["max_runtime_seconds"] = [
            f"expected between {MIN_RUNTIME_SECONDS} and {max_runtime_seconds_limit()} seconds "
            f"(1 minute to {max_runtime_seconds_limit() // 60} minutes)"
        ]
    return errors


def run_lease_seconds() -> float:
    return float(settings.RUN_LEASE_SECONDS)


def transform_run_launch(
    *,
    actor: Any,
    inputs: list[DatasetVersion],
    recipe: str,
    parameters: dict[str, Any],
    output_name: str = "",
    reproduced_from: Run | None = None,
) -> Run:
    """Queue a transform run that derives new dataset versions from `inputs` with a recipe."""

    permissions.require(actor, "run.launch")
    for project in {version.dataset.project for version in inputs}:
        permissions.require(actor, "run.launch", project=project)
    errors: dict[str, list[str]] = {}
    spec = _recipe_of_kind(recipe, "transform")
    if not inputs:
        errors["inputs"] = ["expected at least one dataset version"]
    projects = {version.dataset.project_id for version in inputs}
    if len(projects) > 1:
        errors["inputs"] = ["all inputs must belong to one project"]
    columns = list(inputs[0].columns) if inputs else []
    for version in inputs[1:]:
        if list(version.columns) != columns:
            errors.setdefault("inputs", []).append(
                f"{version} has columns {', '.join(version.columns)}; expected the same columns as {inputs[0]}"
            )
    cleaned, parameter_errors = recipe_registry.validate_parameters(spec, parameters or {}, columns=columns)
    for name, message in parameter_errors.items():
        errors[f"parameters.{name}"] = [message]
    base = to_slug(output_name or (f"{inputs[0].dataset.slug}-{spec.name}" if inputs else ""), max_length=50)
    if inputs and not SLUG_RE.match(base):
        errors["output_name"] = ["expected a name with letters, digits or hyphens"]
    if errors:
        raise ValidationError(errors)
    return _run_queue(
        actor=actor,
        spec=spec,
        parameters=cleaned,
        channels=[("input", version) for version in inputs],
        kind=Run.Kind.TRANSFORM,
        backend="local",
        output_name=base,
        reproduced_from=reproduced_from,
    )


def _run_queue(
    *,
    actor: Any,
    spec: Any,
    parameters: dict[str, Any],
    channels: list[tuple[str, DatasetVersion]],
    kind: str,
    backend: str,
    output_name: str,
    reproduced_from: Run | None = None,
    **fields: Any,
) -> Run:
    """Create a validated run with its inputs, lineage edges, first event and audit record; queue it after commit."""

    with transaction.atomic():
        run = Run.objects.create(
            project=channels[0][1].dataset.project,
            kind=kind,
            recipe=spec.name,
            recipe_version=spec.version,
            recipe_fingerprint=recipe_registry.recipe_fingerprint(spec),
            parameters=parameters,
            seed=parameters.get("seed"),
            backend=backend,
            output_name=output_name,
            created_by=actor,
            reproduced_from=reproduced_from,
            enqueued_at=timezone.now(),
            **fields,
        )
        for channel, version in channels:
            RunInput.objects.create(run=run, dataset_version=version, channel=channel)
            lineage_link(source=version.node_id, target=run.node_id)
        reason = f"reproduction of run {reproduced_from.pk}" if reproduced_from else "launched"
        RunEvent.objects.create(run=run, from_status="", to_status=Run.Status.QUEUED, actor=actor, reason=reason)
        audit_record(
            actor=actor,
            action="run.launch",
            object_type="run",
            object_id=run.pk,
            object_repr=str(run),
            after={
                "recipe": spec.name,
                "parameters": parameters,
                "backend": backend,
                "inputs": [version.node_id for _, version in channels],
                **{key: str(value) for key, value in fields.items()},
            },
            project=run.project,
        )
        transaction.on_commit(lambda: enqueue_run(run.pk), robust=True)
    return run


def _recipe_of_kind(name: str, kind: str) -> Any:
    try:
        spec = recipe_registry.get_recipe(name)
    except recipe_registry.UnknownRecipe as exc:
        raise ValidationError({"recipe": [str(exc)]}) from None
    if spec.kind != kind:
        raise ValidationError({"recipe": [f"{name} is a {spec.kind} recipe; expected a {kind} recipe"]})
    return spec


def enqueue_run(run_id: int) -> None:
    Run.objects.filter(pk=run_id).update(enqueued_at=timezone.now())
    tasks.training_run_start_task.delay(run_id)


def run_stop(*, actor: Any, run: Run, reason: str = "") -> Run:
    permissions.require(actor, "run.stop", project=run.project)
    with transaction.atomic():
        try:
            # Still queued: nothing started, and the locked transition makes sure nothing will.
            updated = run_transition(
                run_id=run.pk, action="cancel", actor=actor, reason=reason or "stopped before it started"
            )
        except IllegalTransition:
            updated = run_transition(
                run_id=run.pk, action="stop", actor=actor, reason=reason or f"stop requested by {actor}"
            )
            transaction.on_commit(lambda: _enqueue_stop(run.pk), robust=True)
        audit_record(
            actor=actor,
            action="run.stop",
            object_type="run",
            object_id=run.pk,
            object_repr=str(run),
            reason=reason,
            project=run.project,
        )
    return updated


def _enqueue_stop(run_id: int) -> None:
    tasks.training_run_stop_task.delay(run_id)


def training_run_launch(
    *,
    actor: Any,
    recipe: str,
    train: DatasetVersion,
    validation: DatasetVersion | None = None,
    target: str = "",
    hyperparameters: dict[str, Any] | None = None,
    seed: int | None = DEFAULT_SEED,
    backend: str = "local",
    instance_type: str = "",
    instance_count: int = 1,
    max_runtime_seconds: int = 3600,
    model_name: str = "",
    reproduced_from: Run | None = None,
) -> Run:
    """Queue a training run; every input is checked first and a bad one creates nothing."""

    permissions.require(actor, "run.launch")
    for project in {train.dataset.project, *([validation.dataset.project] if validation is not None else [])}:
        permissions.require(actor, "run.launch", project=project)
    errors: dict[str, list[str]] = {}
    spec = _recipe_of_kind(recipe, "training")
    values = dict(hyperparameters or {})
    if recipe_registry.MISSING_VALUES_HYPERPARAMETER in values:
        errors[f"hyperparameters.{recipe_registry.MISSING_VALUES_HYPERPARAMETER}"] = [
            "reserved: which strings mean no value is set on the dataset version when it is registered"
        ]
        values.pop(recipe_registry.MISSING_VALUES_HYPERPARAMETER)
    if target:
        values["target"] = target
    if seed is not None:
        values["seed"] = seed
    cleaned, parameter_errors = recipe_registry.validate_parameters(spec, values, columns=list(train.columns))
    for name, message in parameter_errors.items():
        errors["target" if name == "target" else f"hyperparameters.{name}"] = [message]
    if "target" not in errors:
        # The profile knows each column's kind: a text target for a regression (or continuous numbers for a
        # classifier) is refused here, not two seconds into the run.
        problem = recipe_registry.target_problem(spec, cleaned, _column_profile(train, cleaned.get("target")))
        if problem:
            errors["target"] = [problem]
    if validation is not None:
        if validation.dataset.project_id != train.dataset.project_id:
            errors["validation"] = ["expected a dataset version of the same project as the training data"]
        elif validation.pk == train.pk:
            errors["validation"] = ["expected different data from the training set (or none)"]
        else:
            differences = _schema_differences(validation, train)
            if differences:
                errors["validation"] = [
                    "the validation set's schema differs from the training set's: " + "; ".join(differences)
                ]
    instance_type = instance_type or ("local" if backend == "local" else "")
    errors.update(
        training_resource_errors(
            backend=backend,
            instance_type=instance_type,
            instance_count=instance_count,
            max_runtime_seconds=max_runtime_seconds,
            spec=spec,
        )
    )
    name = to_slug(model_name or f"{train.dataset.slug}-{spec.name}")
    predicts = _model_target(train.dataset.project_id, name)
    chosen_target = cleaned.get("target")
    if predicts is not None and chosen_target and predicts != chosen_target:
        if model_name:
            # The versions of one model predict one thing: approvals compare a version with the one serving.
            errors["model_name"] = [
                f"model {name} predicts '{predicts}'; this run predicts '{chosen_target}': choose another model name"
            ]
        else:
            name = to_slug(f"{train.dataset.slug}-{chosen_target}-{spec.name}")
    if not SLUG_RE.match(name):
        errors["model_name"] = ["expected a name with letters, digits or hyphens"]
    if errors:
        raise ValidationError(errors)
    estimate, _ = run_cost_estimate(
        backend=backend,
        instance_type=instance_type,
        instance_count=instance_count,
        max_runtime_seconds=max_runtime_seconds,
    )
    channels = [("train", train)] + ([("validation", validation)] if validation is not None else [])
    return _run_queue(
        actor=actor,
        spec=spec,
        parameters=cleaned,
        channels=channels,
        kind=Run.Kind.TRAINING,
        backend=backend,
        output_name=name,
        reproduced_from=reproduced_from,
        instance_type=instance_type,
        instance_count=instance_count,
        max_runtime_seconds=max_runtime_seconds,
        estimated_cost=estimate,
    )


def _model_target(project_id: int, slug: str) -> str | None:
    """What the registered model's versions predict (its latest version's target), if it has any."""
    return (
        ModelVersion.objects.filter(registered_model__project_id=project_id, registered_model__slug=slug)
        .order_by("-number")
        .values_list("target", flat=True)
        .first()
    )


def _column_profile(version: DatasetVersion, column: Any) -> dict[str, Any] | None:
    profile = getattr(version, "profile", None)
    if not isinstance(column, str) or profile is None or not profile.profile:
        return None
    return (profile.profile.get("columns") or {}).get(column)


def _schema_differences(validation: DatasetVersion, train: DatasetVersion) -> list[str]:
    """Column names first; with both profiles ready, column types too."""
    train_profile = getattr(train, "profile", None)
    validation_profile = getattr(validation, "profile", None)
    if train_profile and validation_profile and train_profile.profile and validation_profile.profile:
        return dataset_files.schemas_compatible(
            dataset_files.profile_to_schema(validation_profile.profile),
            dataset_files.profile_to_schema(train_profile.profile),
        )
    missing = [c for c in train.columns if c not in validation.columns]
    extra = [c for c in validation.columns if c not in train.columns]
    return [f"column '{c}' is missing" for c in missing] + [f"column '{c}' is extra" for c in extra]


def run_reproduce(*, actor: Any, run: Run) -> Run:
    """A new run with identical inputs, recipe code, parameters, seed and backend settings."""

    permissions.require(actor, "run.launch", project=run.project)
    try:
        spec = recipe_registry.get_recipe(run.recipe)
    except recipe_registry.UnknownRecipe as exc:
        raise ValidationError({"recipe": [str(exc)]}) from None
    fingerprint = recipe_registry.recipe_fingerprint(spec)
    if fingerprint != run.recipe_fingerprint:
        raise ValidationError(
            {
                "recipe": [
                    f"the {run.recipe} recipe's code changed since run {run.pk} "
                    f"(code {run.recipe_fingerprint[:12]} then, "
                    f"{fingerprint[:12]} now), so it cannot be reproduced exactly"
                ]
            }
        )
    if run.backend == "local" and run.image:
        current = run_image(run, None)
        if current != run.image:
            raise ValidationError(
                {
                    "recipe": [
                        f"run {run.pk} ran on {run.image}; this machine "
                        f"has {current}, so it cannot be reproduced exactly"
                    ]
                }
            )
    run_inputs = list(
        run.inputs.select_related("dataset_version__dataset__project", "dataset_version__profile").order_by("pk")
    )
    inputs = {i.channel: i.dataset_version for i in run_inputs}
    if run.kind == Run.Kind.TRANSFORM:
        return transform_run_launch(
            actor=actor,
            inputs=[i.dataset_version for i in run_inputs if i.channel == "input"],
            recipe=run.recipe,
            parameters=run.parameters,
            output_name=run.output_name,
            reproduced_from=run,
        )
    parameters = dict(run.parameters)
    target = parameters.pop("target", "")
    seed = parameters.pop("seed", None)
    return training_run_launch(
        actor=actor,
        recipe=run.recipe,
        train=inputs["train"],
        validation=inputs.get("validation"),
        target=target,
        hyperparameters=parameters,
        seed=seed,
        backend=run.backend,
        instance_type=run.instance_type,
        instance_count=run.instance_count,
        max_runtime_seconds=run.max_runtime_seconds,
        model_name=run.output_name,
        reproduced_from=run,
    )


def work_dir_for(run: Run) -> Path:
    return Path(settings.RUNS_WORK_DIR) / f"run-{run.pk}-{run.uuid.hex[:8]}"


def cleanup_work_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def run_tags(run: Run) -> dict[str, str]:
    """The cost-allocation tags every AWS resource made for this run carries."""
    own = {"run": str(run.pk)}
    if run.kind == Run.Kind.TRAINING:
        own["model"] = run.output_name
    return run.project.resource_tags(**own)


DONE_STATUSES = (Run.Status.SUCCEEDED, Run.Status.FAILED, Run.Status.STOPPED)


def training_backend_for(run: Run) -> Any:
    return training_backend(run.backend)


def poll_interval(run: Run) -> float:
    return settings.RUN_POLL_SECONDS.get(run.backend, 30.0)


def run_image(run: Run, backend: Any) -> str:
    if run.backend == "sagemaker":
        return str(getattr(backend, "image_uri", "") or "")
    import platform

    import sklearn

    return f"python {platform.python_version()}, scikit-learn {sklearn.__version__}"
