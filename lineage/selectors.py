"""Reads for datasets, runs, models and the lineage graph."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import django_filters
from django.apps import apps
from django.conf import settings
from django.db import connection
from django.db.models import Case, CharField, Count, F, Max, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Cast, Coalesce, Concat
from django.urls import reverse

from controlplane import access, permissions
from controlplane.backends import object_store
from controlplane.filters import ChoiceFilter, DateRangeFilterSet, ListFilterForm, apply_filters, project_filter
from controlplane.models import Project
from lineage.models import Dataset, DatasetVersion, LineageEdge, ModelVersion, RegisteredModel, Run, RunInput

# Deployments will be lineage nodes too; until they have records, an id of that kind names nothing here.
NODE_KINDS = ("dataset_version", "run", "model_version", "deployment")

# The whole lineage in either direction, any depth (OpenLineage export). UNION (not UNION ALL) drops edges
# already seen, so diamonds are visited once and a malformed cycle still terminates.
# `hidden` holds the nodes the reader may not see (records in restricted projects they are not in): a walk does not
# enter them, so it stops there, and it does not go on past them to what they lead to.
_UPSTREAM_SQL = """
WITH RECURSIVE hidden(node) AS ({hidden}),
walk(source, target) AS (
    SELECT source, target FROM {table} WHERE target = %s AND source NOT IN (SELECT node FROM hidden)
    UNION
    SELECT e.source, e.target FROM {table} e JOIN walk w ON e.target = w.source
    WHERE e.source NOT IN (SELECT node FROM hidden)
)
SELECT source, target FROM walk
"""
_DOWNSTREAM_SQL = """
WITH RECURSIVE hidden(node) AS ({hidden}),
walk(source, target) AS (
    SELECT source, target FROM {table} WHERE source = %s AND target NOT IN (SELECT node FROM hidden)
    UNION
    SELECT e.source, e.target FROM {table} e JOIN walk w ON e.source = w.target
    WHERE e.target NOT IN (SELECT node FROM hidden)
)
SELECT source, target FROM walk
"""

# What a drawing needs, in one query. Both walks carry the edges they follow and stop one hop past the depth
# asked for (that hop is only counted). Each column keeps its `cap` most recently linked nodes; edges into the
# rest name the column's "more:<distance>" box. The rows returned follow depth × nodes drawn; the database still
# counts a popular node's fan-out, but nothing else about it leaves the query.
# Neither walk enters a node in `hidden` (see _UPSTREAM_SQL); those next to the nodes walked within the depth are
# only counted ("restricted").
# Parameters: hidden's, focus, reach (depth + 1), reach, depth, depth, depth, cap, cap, depth, depth.
_GRAPH_SQL = """
WITH RECURSIVE
hidden(node) AS ({hidden}),
focus(node) AS (SELECT CAST(%s AS VARCHAR(64))),
up(source, target, hops, link) AS (
    SELECT source, target, 1, id FROM {table}
    WHERE target = (SELECT node FROM focus) AND source NOT IN (SELECT node FROM hidden)
    UNION
    SELECT e.source, e.target, up.hops + 1, e.id FROM {table} e JOIN up ON e.target = up.source
    WHERE up.hops < %s AND e.source NOT IN (SELECT node FROM hidden)
),
down(source, target, hops, link) AS (
    SELECT source, target, 1, id FROM {table}
    WHERE source = (SELECT node FROM focus) AND target NOT IN (SELECT node FROM hidden)
    UNION
    SELECT e.source, e.target, down.hops + 1, e.id
    FROM {table} e JOIN down ON e.source = down.target
    WHERE down.hops < %s AND e.target NOT IN (SELECT node FROM hidden)
),
restricted(node) AS (
    SELECT e.source FROM {table} e
    JOIN (SELECT node FROM focus UNION SELECT source FROM up WHERE hops < %s) walked ON e.target = walked.node
    WHERE e.source IN (SELECT node FROM hidden)
    UNION
    SELECT e.target FROM {table} e
    JOIN (SELECT node FROM focus UNION SELECT target FROM down WHERE hops < %s) walked ON e.source = walked.node
    WHERE e.target IN (SELECT node FROM hidden)
),
placed(node, distance, link) AS (
    SELECT node, 0, 0 FROM focus
    UNION ALL
    SELECT source, -MIN(hops), MAX(link) FROM up WHERE source <> (SELECT node FROM focus) GROUP BY source
    UNION ALL
    SELECT target, MIN(hops), MAX(link) FROM down
    WHERE target <> (SELECT node FROM focus) AND target NOT IN (SELECT source FROM up) GROUP BY target
),
drawn(node, distance, column_size, shown) AS (
    SELECT node, distance, column_size,
           CASE WHEN ABS(distance) <= %s AND (position <= %s OR column_size <= %s + 1) THEN 1 ELSE 0 END
    FROM (
        SELECT node, distance,
               ROW_NUMBER() OVER (PARTITION BY distance ORDER BY link DESC) AS position,
               COUNT(*) OVER (PARTITION BY distance) AS column_size
        FROM placed
    ) ranked
)
SELECT 'node', node, '', distance, column_size FROM drawn WHERE shown = 1
UNION ALL
SELECT 'restricted', '', '', 0, COUNT(*) FROM restricted
UNION ALL
SELECT DISTINCT 'column', '', '', distance, column_size FROM drawn WHERE shown = 0
UNION ALL
SELECT DISTINCT 'edge',
       CASE WHEN s.shown = 1 THEN s.node ELSE 'more:' || CAST(s.distance AS VARCHAR(12)) END,
       CASE WHEN t.shown = 1 THEN t.node ELSE 'more:' || CAST(t.distance AS VARCHAR(12)) END, 0, 0
FROM (SELECT source, target FROM up UNION SELECT source, target FROM down) walked
JOIN drawn s ON s.node = walked.source JOIN drawn t ON t.node = walked.target
WHERE ABS(s.distance) <= %s AND ABS(t.distance) <= %s
"""


def parse_node_id(node_id: str) -> tuple[str, int]:
    kind, _, pk = node_id.partition(":")
    if kind not in NODE_KINDS or not (pk.isascii() and pk.isdigit()) or len(pk) > 18:
        raise ValueError(f"expected a node id like dataset_version:12 or run:3 (kinds: {', '.join(NODE_KINDS)})")
    return kind, int(pk)


# Node kind → the model whose rows it names (its project is reached through controlplane.access.PROJECT_PATHS).
_NODE_MODELS = {
    "dataset_version": "lineage.DatasetVersion",
    "run": "lineage.Run",
    "model_version": "lineage.ModelVersion",
    "deployment": "deployments.Deployment",
}
_NOTHING_HIDDEN: tuple[str, list[Any]] = ("SELECT CAST(NULL AS VARCHAR(64)) WHERE 1 = 0", [])


def hidden_nodes_sql(user: Any) -> tuple[str, list[Any]]:
    """A SELECT of the node ids the user may not see (records of restricted projects they are not a member of), and
    its parameters: one subquery, however many records those projects hold. `user=None` is the system: it sees all."""
    if user is None:
        return _NOTHING_HIDDEN
    if not permissions.user_roles(user):
        hidden_projects = list(Project.objects.values_list("pk", flat=True))
    elif all(access.sees_across(user, label) for label in _NODE_MODELS.values()):
        return _NOTHING_HIDDEN
    else:
        hidden_projects = list(
            Project.objects.filter(restricted=True).exclude(members__user=user).values_list("pk", flat=True)
        )
    if not hidden_projects:
        return _NOTHING_HIDDEN
    selects = []
    for kind, label in _NODE_MODELS.items():
        field = access.PROJECT_PATHS[label].removeprefix("fk:")
        selects.append(
            apps.get_model(label)
            .objects.filter(**{f"{field}__in": hidden_projects})
            .annotate(node=Concat(Value(f"{kind}:"), Cast("pk", CharField()), output_field=CharField()))
            .values("node")
            .order_by()
        )
    sql, params = selects[0].union(*selects[1:], all=True).query.sql_with_params()
    return sql, list(params)


def _walk(sql: str, node_id: str, user: Any) -> list[tuple[str, str]]:
    hidden, params = hidden_nodes_sql(user)
    with connection.cursor() as cursor:
        cursor.execute(sql.format(table=LineageEdge._meta.db_table, hidden=hidden), [*params, node_id])
        return [(source, target) for source, target in cursor.fetchall()]


def lineage_upstream_edges(node_id: str, *, user: Any = None) -> list[tuple[str, str]]:
    """Every edge upstream of `node_id` (everything it came from), in one query regardless of depth; for a `user`,
    stopping at nodes they may not see."""
    return _walk(_UPSTREAM_SQL, node_id, user)


def lineage_downstream_edges(node_id: str, *, user: Any = None) -> list[tuple[str, str]]:
    """Every edge downstream of `node_id` (everything made from it), in one query regardless of depth; for a `user`,
    stopping at nodes they may not see."""
    return _walk(_DOWNSTREAM_SQL, node_id, user)


@dataclass
class LineageNode:
    id: str
    kind: str
    label: str
    detail: str
    url: str
    status: str = ""
    distance: int = 0  # negative upstream, positive downstream


@dataclass
class LineageGraph:
    focus: str
    # The nodes drawn, and per column cut by the cap one node of kind "more" ("+N more", id more:<distance>).
    nodes: dict[str, LineageNode] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    # How many nodes each capped column left out, by distance.
    more: dict[int, int] = field(default_factory=dict)
    # Nodes one hop beyond the depth limit, by side (a lower bound of what lies beyond: the walk stops there).
    hidden_upstream: int = 0
    hidden_downstream: int = 0
    # Nodes within the depth that belong to projects the reader may not see: not shown, and the walk stops at them.
    restricted: int = 0


# Nodes drawn per column before the rest become one "+N more" box (the page draws eight rows).
PER_COLUMN = 7


def lineage_graph(node_id: str, *, depth: int = 4, per_column: int = PER_COLUMN, user: Any = None) -> LineageGraph:
    """The focus node with what lies upstream and downstream of it, cut at `depth` hops each way and at
    `per_column` nodes a column; in one query for the shape plus one per node kind drawn. For a `user`, nodes in
    projects they may not see are left out and counted (`restricted`), and the walk does not go past them."""
    parse_node_id(node_id)
    hidden, hidden_params = hidden_nodes_sql(user)
    sql = _GRAPH_SQL.format(table=LineageEdge._meta.db_table, hidden=hidden)
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                *hidden_params,
                node_id,
                depth + 1,
                depth + 1,
                depth,
                depth,
                depth,
                per_column,
                per_column,
                depth,
                depth,
            ],
        )
        rows = cursor.fetchall()
    graph = LineageGraph(focus=node_id)
    keep: dict[str, int] = {}
    sizes: dict[int, int] = {}
    for row_kind, first, second, distance, column_size in rows:
        if row_kind == "restricted":
            graph.restricted = column_size
            continue
        if row_kind == "node":
            keep[first] = distance
        elif row_kind == "edge":
            graph.edges.append((first, second))
        sizes[distance] = column_size
    for distance, column_size in sizes.items():
        if distance < -depth:
            graph.hidden_upstream = column_size
        elif distance > depth:
            graph.hidden_downstream = column_size
        else:
            shown = sum(1 for d in keep.values() if d == distance)
            if column_size > shown:
                graph.more[distance] = column_size - shown
    keep.setdefault(node_id, 0)
    described = {node.id: node for node in describe_nodes(list(keep), user=user)}
    for node_id_kept, distance in keep.items():
        # An edge may name a record this database does not hold (e.g. imported lineage): still draw it.
        node = described.get(node_id_kept) or LineageNode(
            id=node_id_kept, kind=node_id_kept.partition(":")[0], label=node_id_kept, detail="(no record here)", url=""
        )
        node.distance = distance
        graph.nodes[node.id] = node
    for distance, count in sorted(graph.more.items()):
        box = f"more:{distance}"
        graph.nodes[box] = LineageNode(
            id=box,
            kind="more",
            label=f"+{count} more",
            detail="show all",
            url=f"?depth={depth}&expand=1",
            distance=distance,
        )
    graph.edges.sort()
    return graph


def _visible(queryset: QuerySet[Any], user: Any) -> QuerySet[Any]:
    return queryset if user is None else access.scope(queryset, user)


def describe_nodes(node_ids: list[str], *, user: Any = None) -> list[LineageNode]:
    """Labels and links for nodes, one query per kind present, loading only the fields drawn; for a `user`, only
    the nodes they may see (`user=None` is the system)."""
    by_kind: dict[str, list[int]] = {}
    for node_id in node_ids:
        kind, pk = parse_node_id(node_id)
        by_kind.setdefault(kind, []).append(pk)
    described: list[LineageNode] = []
    if "dataset_version" in by_kind:
        versions = (
            _visible(DatasetVersion.objects.filter(pk__in=by_kind["dataset_version"]), user)
            .select_related("dataset__project")
            .only("number", "source", "format", "row_count", "sha256", "dataset__slug", "dataset__project__slug")
            .order_by()
        )
        for version in versions:
            described.append(
                LineageNode(
                    id=version.node_id,
                    kind="dataset_version",
                    label=f"{version.dataset.slug} v{version.number}",
                    detail=(
                        f"{version.source} · {version.format} · {version.row_count or '?'} rows · {version.sha256[:12]}"
                    ),
                    url=version_url(version),
                )
            )
    if "run" in by_kind:
        runs = _visible(Run.objects.filter(pk__in=by_kind["run"]), user)
        for run in runs.only("recipe", "kind", "backend", "status").order_by():
            described.append(
                LineageNode(
                    id=run.node_id,
                    kind="run",
                    label=f"run {run.pk}: {run.recipe}",
                    detail=f"{run.kind} · {run.backend}",
                    url=reverse("run-detail", args=[run.pk]),
                    status=run.status,
                )
            )
    if "model_version" in by_kind:
        model_versions = (
            _visible(ModelVersion.objects.filter(pk__in=by_kind["model_version"]), user)
            .select_related("registered_model__project")
            .only("number", "metrics", "sha256", "registered_model__slug", "registered_model__project__slug")
            .order_by()
        )
        for model_version in model_versions:
            metrics = model_version.metrics or {}
            headline = next(
                (
                    f"{k} {metrics[k]:.3f}"
                    for k in ("accuracy", "roc_auc", "r2", "rmse")
                    if isinstance(metrics.get(k), (int, float))
                ),
                "",
            )
            described.append(
                LineageNode(
                    id=model_version.node_id,
                    kind="model_version",
                    label=f"{model_version.registered_model.slug} v{model_version.number}",
                    detail=" · ".join(x for x in ("model", headline, model_version.sha256[:12]) if x),
                    url=reverse(
                        "model-version-detail",
                        args=[
                            model_version.registered_model.project.slug,
                            model_version.registered_model.slug,
                            model_version.number,
                        ],
                    ),
                )
            )
    if "deployment" in by_kind:
        from deployments.models import Deployment

        deployments = _visible(Deployment.objects.filter(pk__in=by_kind["deployment"]), user).select_related(
            "service__environment", "model_version"
        )
        for deployment in deployments.order_by():
            described.append(
                LineageNode(
                    id=deployment.node_id,
                    kind="deployment",
                    label=f"{deployment.kind} {deployment.pk}: {deployment.service.name}",
                    detail=f"v{deployment.model_version.number} · {deployment.service.environment.name} · "
                    f"{deployment.get_strategy_display()}",
                    url=reverse("service-detail", args=[deployment.service_id]),
                    status=deployment.status,
                )
            )
    return described


def dataset_version_download_url(version: DatasetVersion) -> str:
    """A link that downloads the version's bytes: presigned on S3, signed by the portal for the local store."""
    from django.conf import settings

    from controlplane.backends import object_store

    suffix = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl", "manifest": ".manifest.json"}[version.format]
    filename = version.original_filename or f"{version.dataset.slug}-v{version.number}{suffix}" + (
        ".gz" if version.compressed and version.format != "manifest" else ""
    )
    return object_store().download_url(
        version.storage_key, filename=filename, expires_in=settings.OBJECT_DOWNLOAD_EXPIRES
    )


def node_exists(node_id: str, *, user: Any = None) -> bool:
    """Whether a node id is well formed and names a record here that `user` may see (ValueError for a malformed
    id): one in a project they may not see answers False, as a missing one does."""
    parse_node_id(node_id)
    return bool(describe_nodes([node_id], user=user))


def version_url(version: DatasetVersion) -> str:
    return reverse("dataset-version-detail", args=[version.dataset.project.slug, version.dataset.slug, version.number])


# --- filters shared by the pages and the API --------------------------------------------------


class DatasetFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(method="filter_search", label="Search", max_length=200)
    project = project_filter("project")

    class Meta:
        model = Dataset
        fields: list[str] = []

    def filter_search(self, queryset: QuerySet[Dataset], name: str, value: str) -> QuerySet[Dataset]:
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(Q(name__icontains=value) | Q(slug__icontains=value) | Q(description__icontains=value))


class RunFilter(DateRangeFilterSet):
    project = project_filter("project")
    status = ChoiceFilter(choices=Run.Status.choices)
    kind = ChoiceFilter(choices=Run.Kind.choices)
    recipe = django_filters.CharFilter(max_length=100)
    creator = django_filters.CharFilter(field_name="created_by__username", max_length=150)

    class Meta:
        model = Run
        fields: list[str] = []
        form = ListFilterForm


class ModelFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(method="filter_search", label="Search", max_length=200)
    project = project_filter("project")

    class Meta:
        model = RegisteredModel
        fields: list[str] = []

    def filter_search(self, queryset: QuerySet[RegisteredModel], name: str, value: str) -> QuerySet[RegisteredModel]:
        return queryset.filter(Q(name__icontains=value) | Q(slug__icontains=value) | Q(description__icontains=value))


# --- datasets, models and runs ----------------------------------------------------------------


# Each read below takes the reader (`user`) and returns only what they may see (controlplane.access.scope): an
# object in a restricted project they are not in is missing to them. `user=None` is the system (tasks, services).


def dataset_list(*, filters: Mapping[str, Any] | None = None, user: Any = None) -> QuerySet[Dataset]:
    """Datasets with their version counts, filtered by `q` (search) and `project`."""
    datasets = Dataset.objects.select_related("project", "created_by").annotate(version_count=Count("versions"))
    return apply_filters(DatasetFilter, filters, _visible(datasets, user), user=user).order_by("project__slug", "slug")


def dataset_get(*, project: str, slug: str, user: Any = None) -> Dataset:
    return _visible(Dataset.objects.select_related("project"), user).get(project__slug=project, slug=slug)


def dataset_version_get(*, project: str, dataset: str, number: int, user: Any = None) -> DatasetVersion:
    """One version, with `shown_producer` (with_shown_producer) for a user."""
    versions = DatasetVersion.objects.select_related("dataset__project", "created_by")
    if user is not None:
        versions = with_shown_producer(versions, user)
    return _visible(versions, user).get(dataset__project__slug=project, dataset__slug=dataset, number=number)


def model_list(*, filters: Mapping[str, Any] | None = None, user: Any = None) -> QuerySet[RegisteredModel]:
    """Registered models with `version_count` and `latest_version_number`, filtered by `project` (pages and API)."""
    models = RegisteredModel.objects.select_related("project").annotate(
        version_count=Count("versions"), latest_version_number=Max("versions__number")
    )
    return apply_filters(ModelFilter, filters, _visible(models, user), user=user).order_by("project__slug", "slug")


def with_shown_producer(versions: QuerySet[DatasetVersion], user: Any) -> QuerySet[DatasetVersion]:
    """Each version with `shown_producer`: the run that made it, or None where that run is in a project the user may
    not see (lineage that crossed projects). Pages and API show that, never `produced_by` itself."""
    if access.sees_across(user, "lineage.Run"):
        return versions.annotate(shown_producer=F("produced_by_id"))
    hidden = When(produced_by__project__slug__in=access.hidden_project_slugs(user), then=Value(None))
    return versions.annotate(shown_producer=Case(hidden, default=F("produced_by_id")))


def producer_hidden(version: DatasetVersion) -> bool:
    """Whether the run that made the version is one the user may not see (from with_shown_producer)."""
    return version.produced_by_id is not None and getattr(version, "shown_producer", None) is None


def dataset_version_consumers(*, version: DatasetVersion, limit: int = 20, user: Any = None) -> QuerySet[Run]:
    """The newest runs that read `version`, with what a link to each shows (number, recipe, status).

    A subquery on the inputs rather than a DISTINCT over a join: DISTINCT compares whole rows, metrics and logs too.
    """
    readers = RunInput.objects.filter(dataset_version=version).values("run_id")
    return (
        _visible(Run.objects.filter(pk__in=readers), user)
        .only("recipe", "status", "created_at")
        .order_by("-created_at", "-id")[:limit]
    )


def run_list(*, filters: Mapping[str, Any] | None = None, user: Any = None) -> QuerySet[Run]:
    """Runs newest first, filtered by project, status, kind, recipe and creator; each with `model_version_pk`."""
    # A subquery, not a join: a page's count then reads the runs table alone.
    model_version = ModelVersion.objects.filter(run=OuterRef("pk")).values("pk")[:1]
    # A run whose model had the same bytes as an existing version is linked to that version (same_model_as).
    runs = Run.objects.select_related("project", "created_by").annotate(
        model_version_pk=Coalesce(Subquery(model_version), "same_model_as_id")
    )
    return apply_filters(RunFilter, filters, _visible(runs, user), user=user).order_by("-created_at", "-id")


# --- runs: what a run ended with, its log, what it may cost -------------------------------------


def final_metrics(run: Run) -> dict[str, float]:
    """The last value of each metric series (what a run ended with). Per-fold series (`*_fold`) are left out: their
    last point is one fold's score; the recipe reports their mean and standard deviation as `cv_<metric>[_std]`."""
    return {
        name: points[-1]["value"]
        for name, points in (run.metrics or {}).items()
        if points and not name.endswith("_fold")
    }


def reproduction_check(run: Run) -> dict[str, Any] | None:
    """For a finished reproduction: what happened, in a sentence, and whether its final metrics equal the original's.

    `outcome` is "match", "differ", "same_model" (the same bytes as the original's model version), or "not_finished"
    (the reproduction failed or was stopped: there are no metrics to compare, and `summary` says why).
    """
    if run.reproduced_from_id is None or not run.done:
        return None
    original_run = run.reproduced_from
    if run.status != Run.Status.SUCCEEDED:
        summary = f"the reproduction {run.status}" + (f": {run.status_reason}" if run.status_reason else "")
        return {"original": original_run, "rows": [], "match": False, "outcome": "not_finished", "summary": summary}
    original = final_metrics(original_run)
    mine = final_metrics(run)
    rows = [
        {
            "name": name,
            "original": original.get(name),
            "reproduction": mine.get(name),
            "match": original.get(name) == mine.get(name),
        }
        for name in sorted(set(original) | set(mine))
        if not name.startswith(("time", "wall"))
    ]
    match = bool(rows) and all(r["match"] for r in rows)
    if run.same_model_as_id is not None:
        outcome, summary = (
            "same_model",
            f"the model is byte for byte {run.same_model_as}, and the metrics match exactly.",
        )
    elif match:
        outcome, summary = "match", "the metrics match exactly."
    elif not rows:
        outcome, summary = "differ", "neither run recorded any metrics to compare."
    else:
        outcome, summary = "differ", "the metrics differ:"
    return {"original": original_run, "rows": rows, "match": match, "outcome": outcome, "summary": summary}


def run_cost_estimate(
    *, backend: str, instance_type: str, instance_count: int, max_runtime_seconds: int
) -> tuple[Decimal, str]:
    """The most a run can cost: price per hour × instances × the maximum runtime, with the arithmetic spelled out."""
    from decimal import ROUND_CEILING

    hours = Decimal(max_runtime_seconds) / 3600
    cent = Decimal("0.01")
    if backend == "local":
        # A recipe may use every core (random forests, gradient boosting), so the most it can cost counts them all.
        cpus = settings.LOCAL_TRAINING_CPUS
        price = Decimal(str(settings.LOCAL_CPU_HOUR_PRICE))
        cost = (price * cpus * hours).quantize(cent, rounding=ROUND_CEILING)
        return cost, f"{cpus} CPU × {hours:.2f} h × ${price}/CPU-hour (local; actual cost is measured CPU time)"
    price = Decimal(str(settings.TRAINING_INSTANCE_PRICES[instance_type]))
    cost = (price * instance_count * hours).quantize(cent, rounding=ROUND_CEILING)
    return (
        cost,
        f"{instance_count} × {instance_type} × {hours:.2f} h × ${price}/h (at most; SageMaker bills actual seconds)",
    )


def run_log_tail(*, run: Run, lines: int = 200) -> list[str]:
    """The last lines of a run's log: live from the backend while it runs, from the object store after."""
    if run.log_key:
        with object_store().open(run.log_key) as handle:
            return handle.read().decode(errors="replace").splitlines()[-lines:]
    # While it runs, the poller keeps the tail here: pages never call the backend (or AWS) themselves.
    return list(run.log_tail or [])[-lines:]


def model_version_by_id(pk: Any) -> ModelVersion | None:
    """The version with its model, project and run (what approvals read), or None."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        return None
    return (
        ModelVersion.objects.select_related("registered_model__project", "run__created_by", "created_by")
        .filter(pk=pk)
        .first()
    )


def model_version_run_authors(version: ModelVersion) -> set[int]:
    """Who launched the runs that made these bytes: the version's run and any reproduction that made the same."""
    ids = {version.run.created_by_id}
    ids |= set(Run.objects.filter(same_model_as=version).values_list("created_by", flat=True))
    return ids


def project_data_scientists(project: Any) -> list[Any]:
    """The data scientists who work on a project: its creator and whoever launched its runs or registered its
    data, while they still hold the data scientist role (and, for a restricted project, are still its members)."""
    from django.contrib.auth import get_user_model

    ids = set(Run.objects.filter(project=project).values_list("created_by", flat=True).distinct())
    ids |= set(Dataset.objects.filter(project=project).values_list("created_by", flat=True).distinct())
    ids.add(project.created_by_id)
    people = get_user_model().objects.filter(pk__in=ids, is_active=True).filter(groups__name=permissions.DATA_SCIENTIST)
    if project.restricted:
        people = people.filter(pk__in=project.members.values("user"))
    return list(people.distinct())


def model_version_runtime(version: ModelVersion) -> str:
    """One line for people: what serves the model version (its compiled copy or the original), and the check."""
    original = " ".join(part for part in (version.framework, version.framework_version) if part)
    check = version.compiled_check or {}
    if not check:
        return f"{original} — registered before compiled copies were checked"
    if version.compiled_runtime and check.get("accepted"):
        source = str(check.get("sample_source") or "")
        rows = "held-out rows" if source.startswith("held-out") else f"rows ({source})" if source else "rows"
        parts = [f"checked on {check.get('sample_rows')} {rows}"]
        if check.get("max_abs_diff") is not None:
            parts.append(f"max |difference| {check['max_abs_diff']:.2g}")
        if check.get("labels_identical"):
            parts.append("classes identical")
        return f"{version.compiled_runtime} — " + ", ".join(parts)
    return f"{original} — compiled copy refused: {check.get('reason') or 'no reason recorded'}"


def model_version_serving_image(version: ModelVersion) -> str:
    """The serving image that can serve the version (one per scikit-learn release, chosen by the recorded one), or
    why none can: versions registered before the release was recorded fall back to the model card's."""
    from django.conf import settings

    from serving.images import ImageError, image_tag, serving_image

    release = version.framework_version or str((version.metadata or {}).get("sklearn_version") or "")
    if not release:
        return "unknown: the model version does not record its scikit-learn release"
    try:
        if settings.SERVING_IMAGE:
            return serving_image(settings.SERVING_IMAGE, release)
        return image_tag(release)
    except ImageError as exc:
        return f"none: {exc}"


def model_version_serving_settings(version: ModelVersion) -> dict[str, str]:
    """The environment `python -m serving` needs to serve the version: the artifact, its hash, its card, and the
    checked compiled copy when there is one. Deployments pass these to every revision; the page shows them."""
    import json

    values = {
        "MODEL_URI": version.artifact_uri,
        "MODEL_SHA256": version.sha256,
        "MODEL_CARD": json.dumps(version.metadata or {}, sort_keys=True, separators=(",", ":")),
    }
    if version.compiled_uri and version.compiled_sha256:
        values["COMPILED_URI"] = version.compiled_uri
        values["COMPILED_SHA256"] = version.compiled_sha256
    return values


# --- a person's own work (their home page) ----------------------------------------------------------------------


def runs_of(*, user: Any, limit: int) -> list[Run]:
    """The newest runs a person launched, with only what a row shows (no metrics, logs or usage)."""
    # Scoped too: someone taken off a restricted project no longer sees the runs they launched there.
    return list(
        access.scope(Run.objects.filter(created_by=user), user)
        .select_related("project")
        .only("project", "project__slug", "kind", "recipe", "status", "progress", "created_at")
        .order_by("-created_at", "-id")[:limit]
    )


def models_of(*, user: Any, limit: int, versions_each: int) -> tuple[list[RegisteredModel], int]:
    """The registered models a person made or added a version to, the one with the newest version first, each with
    `latest_versions` (its newest `versions_each`); and how many such models there are. Three queries however many
    models and versions there are."""
    from django.db.models import F, Window
    from django.db.models.functions import RowNumber

    theirs = access.scope(
        RegisteredModel.objects.filter(
            Q(created_by=user) | Q(pk__in=ModelVersion.objects.filter(created_by=user).values("registered_model_id"))
        ),
        user,
    )
    models = list(
        theirs.select_related("project")
        .annotate(version_count=Count("versions"), newest=Max("versions__created_at"))
        .order_by(F("newest").desc(nulls_last=True), "-id")[:limit]
    )
    ranked = (
        ModelVersion.objects.filter(registered_model__in=[m.pk for m in models])
        .annotate(rank=Window(RowNumber(), partition_by=F("registered_model_id"), order_by=F("number").desc()))
        .filter(rank__lte=versions_each)
        .only("registered_model", "number")
        .order_by("registered_model_id", "-number")
    )
    by_model: dict[int, list[ModelVersion]] = {}
    for version in ranked:
        by_model.setdefault(version.registered_model_id, []).append(version)
    for model in models:
        model.latest_versions = by_model.get(model.pk, [])  # type: ignore[attr-defined]
        for version in model.latest_versions:  # type: ignore[attr-defined]
            version.registered_model = model
    return models, theirs.count()
