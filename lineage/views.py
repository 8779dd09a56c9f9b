"""Pages: datasets, dataset versions and their profiles, registrations, runs, the lineage graph."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Prefetch, Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from controlplane import access, permissions
from controlplane.charts import compare_chart, metric_series_chart, profile_chart
from controlplane.filters import filtered_list
from controlplane.uploads import upload_limit_message
from controlplane.views import PROGRESS, apply_service_errors, paginate
from lineage import selectors, services
from lineage.forms import DatasetRegisterForm, TrainingForm, TransformForm
from lineage.graph_layout import layout_graph
from lineage.models import Dataset, DatasetRegistration, DatasetVersion, ModelVersion, RegisteredModel, Run
from lineage.openlineage import lineage_run_events
from lineage.services import runs, uploads
from monitoring.costs import object_selectors as cost_objects
from monitoring.costs import selectors as cost_selectors


def _id_param(request: HttpRequest, name: str) -> int:
    value = request.GET.get(name) or request.POST.get(name) or ""
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise Http404(f"expected ?{name}=<dataset version id>")
    return int(value)


def _profile_charts(profile: dict[str, Any] | None, *, limit: int = 40) -> list[dict[str, Any]]:
    charts: list[dict[str, Any]] = []
    if not profile:
        return charts
    for index, (name, column) in enumerate(list(profile["columns"].items())[:limit]):
        chart = profile_chart(name, column, row_count=profile.get("row_count") or 0)
        if chart is not None:
            charts.append({"id": f"chart-{index}", "column": name, "figure": chart})
    return charts


def dataset_list(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "dataset.view")
    listed = filtered_list(
        request.GET,
        selectors.DatasetFilter,
        lambda filters: selectors.dataset_list(filters=filters, user=request.user),
    )
    return render(
        request,
        "lineage/dataset_list.html",
        {
            "page": paginate(request, listed.rows),
            "search": listed.values["q"],
            "project": listed.values["project"],
            "errors": listed.errors,
            "projects": access.visible_projects(request.user).only("slug", "name"),
            "query": listed.query,
            "can_register": permissions.has_permission(request.user, "dataset.register"),
        },
        status=400 if listed.errors else 200,
    )


@require_http_methods(["GET", "POST"])
def dataset_register(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "dataset.register")
    initial = {k: request.GET[k] for k in ("project", "dataset") if k in request.GET}
    form = DatasetRegisterForm(request.POST or None, request.FILES or None, initial=initial, user=request.user)
    too_large = upload_limit_message(request) if request.method == "POST" else None
    if too_large:
        form.is_valid()
        form.errors.pop("file", None)
        form.add_error("file", too_large)
    elif request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            if data.get("file"):
                version, created = services.dataset_version_upload(
                    actor=request.user,
                    project=data["project"],
                    dataset=data["dataset"],
                    upload=data["file"],
                    description=data.get("description", ""),
                    missing_values=data.get("missing_values", ""),
                )
                if created:
                    messages.success(request, f"Registered {version}. Profiling has started.", extra_tags=PROGRESS)
                else:
                    messages.info(request, f"These exact bytes are already {version}; nothing new was stored.")
                target = selectors.version_url(version)
            else:
                registration = services.dataset_registration_request(
                    actor=request.user,
                    project=data["project"],
                    dataset=data["dataset"],
                    uri=data["uri"],
                    description=data.get("description", ""),
                    missing_values=data.get("missing_values", ""),
                )
                target = reverse("dataset-registration-detail", args=[registration.pk])
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            if request.htmx:
                return HttpResponseClientRedirect(target)
            return redirect(target)
    template = "lineage/_register_form.html" if request.htmx else "lineage/dataset_register.html"
    # On S3 the page's script sends a chosen file straight to the bucket (services.uploads), not through this view.
    direct_upload = uploads.direct_uploads_enabled()
    context = {"form": form, "direct_upload": direct_upload}
    response = render(request, template, context, status=400 if request.method == "POST" else 200)
    if direct_upload:
        # The Content-Security-Policy lets this page's script reach the bucket, and only this page's.
        response._csp_update = {"connect-src": [uploads.direct_upload_origin()]}  # type: ignore[attr-defined]
    return response


def dataset_registration_detail(request: HttpRequest, pk: int) -> HttpResponse:
    permissions.require(request.user, "dataset.view")
    registration = get_object_or_404(
        access.scope(DatasetRegistration.objects.select_related("version__dataset__project"), request.user), pk=pk
    )
    context = {
        "registration": registration,
        "version_url": selectors.version_url(registration.version) if registration.version else "",
    }
    if request.htmx:
        return render(request, "lineage/_registration_status.html", context)
    return render(request, "lineage/registration_detail.html", context)


def dataset_detail(request: HttpRequest, project: str, slug: str) -> HttpResponse:
    permissions.require(request.user, "dataset.view")
    try:
        dataset = selectors.dataset_get(project=project, slug=slug, user=request.user)
    except Dataset.DoesNotExist:
        raise Http404(f"no dataset {project}/{slug}") from None
    versions = selectors.with_shown_producer(dataset.versions.select_related("profile", "created_by"), request.user)
    latest = versions.first()
    profile = getattr(latest, "profile", None) if latest else None
    return render(
        request,
        "lineage/dataset_detail.html",
        {
            "dataset": dataset,
            "page": paginate(request, versions),
            "latest": latest,
            "charts": _profile_charts(profile.profile if profile else None, limit=12),
            "can_register": permissions.has_permission(request.user, "dataset.register"),
            "can_launch": permissions.has_permission(request.user, "run.launch"),
        },
    )


def dataset_version_detail(request: HttpRequest, project: str, slug: str, number: int) -> HttpResponse:
    permissions.require(request.user, "dataset.view")
    try:
        version = selectors.dataset_version_get(project=project, dataset=slug, number=number, user=request.user)
    except DatasetVersion.DoesNotExist:
        raise Http404(f"no version {number} of {project}/{slug}") from None
    profile = version.profile
    if request.htmx and request.GET.get("part") == "profile":
        return render(
            request,
            "lineage/_profile.html",
            {"version": version, "profile": profile, "charts": _profile_charts(profile.profile)},
        )
    graph = selectors.lineage_graph(version.node_id, depth=2, user=request.user)
    return render(
        request,
        "lineage/dataset_version_detail.html",
        {
            "version": version,
            "profile": profile,
            "charts": _profile_charts(profile.profile),
            "download_url": selectors.dataset_version_download_url(version),
            "graph": layout_graph(graph),
            "consumed_by": selectors.dataset_version_consumers(version=version, limit=20, user=request.user),
            # The run that made it, unless that run is in a project the user may not see (lineage crossed projects);
            # then its source location, which names that run ("run:<id>/<output>"), is not shown either.
            "producer_hidden": selectors.producer_hidden(version),
            "can_launch": permissions.has_permission(request.user, "run.launch"),
        },
    )


# --- runs -----------------------------------------------------------------------------------


def _metric_charts(run: Run) -> list[dict[str, Any]]:
    charts = []
    for index, (name, points) in enumerate(sorted((run.metrics or {}).items())):
        if len(points) > 1:
            charts.append({"id": f"metric-{index}", "column": name, "figure": metric_series_chart(name, points)})
    return charts


def run_list(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "run.view")
    listed = filtered_list(
        request.GET,
        selectors.RunFilter,
        # The table draws none of the JSON fields; a run's metrics and log can be large.
        lambda filters: selectors.run_list(filters=filters, user=request.user).defer(
            "parameters", "metrics", "usage", "log_tail"
        ),
    )
    return render(
        request,
        "lineage/run_list.html",
        {
            "page": paginate(request, listed.rows),
            "filters": listed.values,
            "errors": listed.errors,
            "query": listed.query,
            "statuses": Run.Status.values,
            "projects": access.visible_projects(request.user).only("slug", "name"),
            "can_launch": permissions.has_permission(request.user, "run.launch"),
            "recent_versions": access.scope(DatasetVersion.objects.exclude(format="manifest"), request.user)
            .select_related("dataset__project")
            .only("number", "row_count", "dataset__slug", "dataset__project__slug")
            .order_by("-created_at", "-id")[:100],
        },
        status=400 if listed.errors else 200,
    )


def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    permissions.require(request.user, "run.view")
    run = get_object_or_404(access.scope(Run.objects.select_related("project", "created_by"), request.user), pk=pk)
    context = {
        "run": run,
        "events": run.events.select_related("actor"),
        "inputs": _visible_inputs(run, request.user),
        "outputs": access.scope(run.output_versions.select_related("dataset__project"), request.user),
        "log_lines": selectors.run_log_tail(run=run),
        "can_stop": permissions.has_permission(request.user, "run.stop") and not run.done,
        "parameters_json": json.dumps(run.parameters, indent=2, sort_keys=True),
        "metric_charts": _metric_charts(run),
        "final_metrics": selectors.final_metrics(run),
        "model_version": access.scope(ModelVersion.objects.filter(Q(run=run) | Q(reproduced_by=run)), request.user)
        .select_related("registered_model__project")
        .first(),
        "reproduction": selectors.reproduction_check(run),
        "can_launch": permissions.has_permission(request.user, "run.launch"),
        **_run_cost_context(run),
    }
    if request.htmx:
        return render(request, "lineage/_run_status.html", context)
    return render(request, "lineage/run_detail.html", context)


def _visible_inputs(run: Run, user: Any) -> Any:
    """The run's inputs the user may see: one in a project they may not see is not listed (lineage it crossed)."""
    visible = access.scope(DatasetVersion.objects.filter(consumed_by__run=run), user).values("pk")
    return run.inputs.filter(dataset_version__in=visible).select_related("dataset_version__dataset__project")


def _run_cost_context(run: Run) -> dict[str, Any]:
    """What the run cost as the cost records have it (the dashboard's figure), by day when it spans days."""
    cost = cost_selectors.run_cost(run)
    return {
        "cost": cost,
        "cost_days": cost_objects.run_cost_by_day(run) if cost.days > 1 else [],
        # A SageMaker run's estimate grows while it runs; a local run's CPU time is measured when it ends.
        "cost_so_far": not run.done,
    }


@require_POST
def run_stop(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(access.scope(Run.objects.all(), request.user), pk=pk)
    try:
        services.run_stop(actor=request.user, run=run, reason=request.POST.get("reason", ""))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, "Stop requested.", extra_tags=PROGRESS)
    return redirect("run-detail", pk=pk)


def _transform_field(name: str) -> str:
    return "hp_" + name.split(".", 1)[1] if name.startswith("parameters.") else name


@require_http_methods(["GET", "POST"])
def transform_create(request: HttpRequest) -> HttpResponse:
    from workers import recipes as recipe_registry

    permissions.require(request.user, "run.launch")
    version = get_object_or_404(
        access.scope(DatasetVersion.objects.select_related("dataset__project"), request.user),
        pk=_id_param(request, "input"),
    )
    transform_recipes = [r for r in recipe_registry.RECIPES.values() if r.kind == "transform"]
    data = request.POST or None
    chosen = (data or request.GET).get("recipe") or transform_recipes[0].name
    recipe = next((r for r in transform_recipes if r.name == chosen), transform_recipes[0])
    form = TransformForm(
        data,
        recipes=transform_recipes,
        recipe=recipe,
        columns=list(version.columns),
        initial=_kept_values(request, recipe, ["output_name"]),
    )
    if request.method == "POST" and form.is_valid():
        try:
            run = services.transform_run_launch(
                actor=request.user,
                inputs=[version],
                recipe=form.cleaned_data["recipe"],
                parameters=form.parameters(),
                output_name=form.cleaned_data["output_name"],
            )
        except ValidationError as exc:
            apply_service_errors(form, exc, field_for=_transform_field)
        else:
            messages.success(request, f"Run {run.pk} queued.", extra_tags=PROGRESS)
            return redirect("run-detail", pk=run.pk)
    template = "lineage/_transform_fields.html" if request.htmx else "lineage/transform_form.html"
    return render(
        request,
        template,
        {"form": form, "version": version, "recipe": recipe, "recipes": transform_recipes},
        status=400 if request.method == "POST" else 200,
    )


# --- lineage --------------------------------------------------------------------------------


def _node_or_404(node_id: str, user: Any) -> str:
    try:
        exists = selectors.node_exists(node_id, user=user)
    except ValueError as exc:
        raise Http404(str(exc)) from None
    if not exists:
        raise Http404(f"no node {node_id}")
    return node_id


def lineage_page(request: HttpRequest, node_id: str) -> HttpResponse:
    permissions.require(request.user, "lineage.view")
    node_id = _node_or_404(node_id, request.user)
    try:
        depth = max(1, min(int(request.GET.get("depth", 4)), 50))
    except ValueError:
        depth = 4
    expand = request.GET.get("expand") == "1"
    # "Show all" still has a ceiling: a dataset read by thousands of runs must not draw thousands of boxes.
    graph = selectors.lineage_graph(
        node_id, depth=depth, per_column=500 if expand else selectors.PER_COLUMN, user=request.user
    )
    return render(
        request,
        "lineage/lineage.html",
        {
            "graph": layout_graph(graph, collapse_over=None if expand else 8),
            "depth": depth,
            "expand": expand,
            "depths": [1, 2, 3, 4, 6, 10, 20, 50],
        },
    )


def lineage_openlineage(request: HttpRequest, node_id: str) -> HttpResponse:
    permissions.require(request.user, "lineage.view")
    node_id = _node_or_404(node_id, request.user)
    events = lineage_run_events(node_id, user=request.user)
    response = JsonResponse(events, safe=False, json_dumps_params={"indent": 2})
    response["Content-Disposition"] = f'attachment; filename="openlineage-{node_id.replace(":", "-")}.json"'
    return response


# --- training -------------------------------------------------------------------------------


def _training_form(request: HttpRequest, train: DatasetVersion, data: Any = None) -> tuple[TrainingForm, Any]:
    from workers import recipes as recipe_registry

    training_recipes = [r for r in recipe_registry.RECIPES.values() if r.kind == "training"]
    chosen = (data or request.GET).get("recipe") or training_recipes[0].name
    recipe = recipe_registry.RECIPES.get(chosen) or training_recipes[0]
    others = (
        access.scope(DatasetVersion.objects.filter(dataset__project=train.dataset.project), request.user)
        .exclude(pk=train.pk)
        .select_related("dataset")[:200]
    )
    form = TrainingForm(
        data,
        recipes=training_recipes,
        recipe=recipe,
        columns=list(train.columns),
        validations=[(str(v.pk), str(v)) for v in others],
        initial=_kept_values(
            request,
            recipe,
            [
                "validation",
                "target",
                "seed",
                "backend",
                "instance_type",
                "instance_count",
                "max_runtime_minutes",
                "model_name",
            ],
        ),
    )
    return form, recipe


def _kept_values(request: HttpRequest, recipe: Any, names: list[str]) -> dict[str, Any]:
    """When the recipe changes, the form is drawn again with what the user had typed (the page sends the whole
    form): nothing they chose is silently reset; the parameters the new recipe shares by name are kept too."""
    kept: dict[str, Any] = {"recipe": recipe.name}
    if request.method != "GET":
        return kept
    for name in names:
        if request.GET.get(name) not in (None, ""):
            kept[name] = request.GET[name]
    for parameter in recipe.parameters:
        value = request.GET.get(f"hp_{parameter.name}")
        if value not in (None, ""):
            kept[f"hp_{parameter.name}"] = value
    return kept


def _training_field(name: str) -> str:
    if name.startswith("hyperparameters."):
        return "hp_" + name.split(".", 1)[1]
    return {"max_runtime_seconds": "max_runtime_minutes"}.get(name, name)


@require_http_methods(["GET", "POST"])
def training_create(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "run.launch")
    train = get_object_or_404(
        access.scope(DatasetVersion.objects.select_related("dataset__project", "profile"), request.user),
        pk=_id_param(request, "train"),
    )
    form, recipe = _training_form(request, train, request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        validation = (
            access.scope(DatasetVersion.objects.select_related("dataset", "profile"), request.user)
            .filter(pk=data["validation"])
            .first()
            if data.get("validation")
            else None
        )
        try:
            run = services.training_run_launch(
                actor=request.user,
                recipe=data["recipe"],
                train=train,
                validation=validation,
                target=data["target"],
                hyperparameters=form.hyperparameters(),
                seed=data["seed"],
                backend=data["backend"],
                instance_type=data["instance_type"],
                instance_count=data["instance_count"],
                max_runtime_seconds=data["max_runtime_minutes"] * 60,
                model_name=data.get("model_name") or "",
            )
        except ValidationError as exc:
            apply_service_errors(form, exc, field_for=_training_field)
        else:
            messages.success(
                request, f"Run {run.pk} queued (estimated cost at most ${run.estimated_cost}).", extra_tags=PROGRESS
            )
            for warning in _launch_warnings(run, request.user):
                messages.warning(request, warning)
            return redirect("run-detail", pk=run.pk)
    template = "lineage/_training_fields.html" if request.htmx else "lineage/training_form.html"
    return render(
        request,
        template,
        {"form": form, "train": train, "recipe": recipe},
        status=400 if request.method == "POST" else 200,
    )


def _launch_warnings(run: Run, user: Any) -> list[str]:
    if run.estimated_cost is None:
        return []
    return cost_objects.launch_budget_warnings(project=run.project, estimate=run.estimated_cost, user=user)


def run_estimate(request: HttpRequest) -> HttpResponse:
    """The cost estimate shown next to the launch form, recomputed as the user changes it, under the launch's rules
    (so a run the launch would refuse gets the reason, in the form's units, instead of a price)."""
    permissions.require(request.user, "run.view")
    backend = request.GET.get("backend", "local")
    instance_type = request.GET.get("instance_type", "local")
    count_text, minutes_text = request.GET.get("instance_count", "1"), request.GET.get("max_runtime_minutes", "60")
    if not all(t.isascii() and t.isdigit() and 0 < len(t) <= 6 for t in (count_text, minutes_text)):
        return HttpResponse('<span class="error">Enter whole numbers to see the estimate.</span>')
    minutes = int(minutes_text)
    errors = runs.training_resource_errors(
        backend=backend, instance_type=instance_type, instance_count=int(count_text), max_runtime_seconds=minutes * 60
    )
    if "max_runtime_seconds" in errors:
        errors["max_runtime_seconds"] = [f"expected 1 to {runs.max_runtime_seconds_limit() // 60} minutes"]
    if errors:
        return render(
            request, "lineage/_estimate.html", {"errors": [m for messages in errors.values() for m in messages]}
        )
    cost, explanation = selectors.run_cost_estimate(
        backend=backend, instance_type=instance_type, instance_count=int(count_text), max_runtime_seconds=minutes * 60
    )
    # The form sends its training data's id: its project is the budget the run would count against.
    train_text = request.GET.get("train", "")
    train = (
        access.scope(DatasetVersion.objects.select_related("dataset__project"), request.user)
        .filter(pk=int(train_text))
        .first()
        if train_text.isascii() and train_text.isdigit() and len(train_text) <= 18
        else None
    )
    warnings = (
        cost_objects.launch_budget_warnings(project=train.dataset.project, estimate=cost, user=request.user)
        if train
        else []
    )
    return render(
        request, "lineage/_estimate.html", {"cost": cost, "explanation": explanation, "budget_warnings": warnings}
    )


@require_POST
def run_reproduce(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(access.scope(Run.objects.all(), request.user), pk=pk)
    try:
        new = services.run_reproduce(actor=request.user, run=run)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("run-detail", pk=pk)
    messages.success(request, f"Run {new.pk} queued to reproduce run {run.pk}.", extra_tags=PROGRESS)
    return redirect("run-detail", pk=new.pk)


def run_compare(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "run.view")
    ids = [int(i) for i in request.GET.getlist("run") if i.isascii() and i.isdigit() and len(i) <= 18][:10]
    runs = list(access.scope(Run.objects.filter(pk__in=ids), request.user).select_related("project"))
    if len(runs) < 2:
        messages.error(request, "Pick two or more runs to compare.")
        return redirect("run-list")
    runs.sort(key=lambda r: ids.index(r.pk))
    finals = {r.pk: selectors.final_metrics(r) for r in runs}
    metric_names = sorted({name for values in finals.values() for name in values})
    parameter_names = sorted({name for r in runs for name in r.parameters})
    chart = compare_chart(
        {f"run {r.pk}": finals[r.pk] for r in runs}, [m for m in metric_names if not m.endswith("_rows")]
    )
    return render(
        request,
        "lineage/run_compare.html",
        {
            "runs": runs,
            "parameter_rows": [
                (n, [r.parameters.get(n) for r in runs], len({str(r.parameters.get(n)) for r in runs}) > 1)
                for n in parameter_names
            ],
            "metric_rows": [(n, [finals[r.pk].get(n) for r in runs]) for n in metric_names],
            "chart": {"id": "compare-chart", "figure": chart},
        },
    )


def _models_with_version_ids(filters: dict[str, str], user: Any) -> Any:
    # The table reads `versions.count`: one prefetch of the page's version ids, not a count per row.
    return selectors.model_list(filters=filters, user=user).prefetch_related(
        Prefetch("versions", queryset=ModelVersion.objects.only("registered_model").order_by())
    )


def model_list(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "model.view")
    listed = filtered_list(
        request.GET, selectors.ModelFilter, lambda filters: _models_with_version_ids(filters, request.user)
    )
    return render(
        request,
        "lineage/model_list.html",
        {
            "page": paginate(request, listed.rows),
            "filters": listed.values,
            "errors": listed.errors,
            "query": listed.query,
            "projects": access.visible_projects(request.user).only("slug", "name"),
        },
        status=400 if listed.errors else 200,
    )


def model_detail(request: HttpRequest, project: str, slug: str) -> HttpResponse:
    permissions.require(request.user, "model.view")
    model = get_object_or_404(
        access.scope(RegisteredModel.objects.select_related("project"), request.user),
        project__slug=project,
        slug=slug,
    )
    versions = model.versions.select_related("run", "created_by")
    page = paginate(request, versions)
    # Where each version on this page stands per environment (deployments owns the requests).
    from deployments import selectors as deployment_selectors

    environments = list(deployment_selectors.environment_list())
    matrix = deployment_selectors.approval_matrix(versions=list(page))
    rows = [(v, [matrix.get(v.pk, {}).get(e.pk) for e in environments]) for v in page]
    return render(
        request,
        "lineage/model_detail.html",
        {"model": model, "page": page, "environments": environments, "matrix_rows": rows},
    )


def model_version_detail(request: HttpRequest, project: str, slug: str, number: int) -> HttpResponse:
    permissions.require(request.user, "model.view")
    version = get_object_or_404(
        access.scope(
            ModelVersion.objects.select_related("registered_model__project", "run", "created_by"), request.user
        ),
        registered_model__project__slug=project,
        registered_model__slug=slug,
        number=number,
    )
    return render(
        request,
        "lineage/model_version_detail.html",
        {
            "version": version,
            "serving_runtime": selectors.model_version_runtime(version),
            "serving_image": selectors.model_version_serving_image(version),
            # Versions registered before the release was recorded have it in their card, or nowhere.
            "trained_with": version.framework_version or (version.metadata or {}).get("sklearn_version", ""),
            "serve_command": _serve_command(selectors.model_version_serving_settings(version)),
            "graph": layout_graph(selectors.lineage_graph(version.node_id, depth=3, user=request.user)),
            "inputs": _visible_inputs(version.run, request.user),
            "can_launch": permissions.has_permission(request.user, "run.launch"),
            "standing": _standing(version),
            "can_request": permissions.has_permission(request.user, "approval.request"),
            "can_deploy": permissions.has_permission(request.user, "deployment.deploy"),
            "cost": cost_selectors.model_version_cost(version),
        },
    )


def _serve_command(values: dict[str, str]) -> str:
    """A shell command that serves the version on this machine (README, "Serving a model")."""
    import shlex

    lines = [f"{name}={shlex.quote(value)} \\" for name, value in values.items()]
    return "\n".join([*lines, "PORT=8080 .venv/bin/python -m serving"])


def _standing(version: ModelVersion) -> list[tuple[Any, Any, Any]]:
    """Per environment, the version's latest approval request there (or None) and the model's service there with
    whether this version serves it and may be deployed to it: deployments owns requests and services."""
    from deployments import selectors as deployment_selectors

    latest: dict[int, Any] = {}
    for approval in deployment_selectors.model_version_approvals(model_version=version):
        latest.setdefault(approval.environment_id, approval)
    services = {
        service.environment_id: service
        for service in deployment_selectors.service_list().filter(registered_model_id=version.registered_model_id)
    }
    deployable = {environment.pk for environment in deployment_selectors.deployable_environments(model_version=version)}
    rows = []
    for environment in deployment_selectors.environment_list():
        service = services.get(environment.pk)
        current = service.current_deployment if service is not None else None
        rows.append(
            (
                environment,
                latest.get(environment.pk),
                {
                    "service": service,
                    "serving": current is not None and current.model_version_id == version.pk,
                    "deployable": environment.pk in deployable,
                    "busy": service is not None and bool(service.active_status),
                },
            )
        )
    return rows
