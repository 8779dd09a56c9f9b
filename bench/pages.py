"""Main pages and API lists on a small and a large history: median and p95 server time and queries,
SQLite and PostgreSQL.

Run from the repository root:

    .venv/bin/python bench/pages.py [--rounds 21] [--databases sqlite,postgres]

Each database is measured in its own Python process (Django is configured once per process), with the embedded
settings (`controlplane.settings.local`, DEBUG off) and a temporary var/ folder. The process migrates an empty
database, seeds the small history, measures every page, grows the same database to the large history, and measures
again, so both columns request the same URLs (the popular dataset version gains consumers, it is not replaced).

- The histories are written through bulk paths (`bulk_create`, 1,000 rows a batch), with rows shaped as the
  application writes them: training runs with five-fold metric series and the 200-line log tail the poller keeps,
  dataset versions with 31 columns, and the popular version profiled by the real profiler (`workers.datasets`).
  - small: 100 runs, 10 dataset versions, 10 model versions, 135 lineage edges, 120 audit events, 10 approval
    requests (a third open, each with three gate results and its decisions); the popular
    dataset version is read by 15 runs.
  - large: 20,000 runs, 2,000 dataset versions, 2,000 model versions, 27,000 lineage edges, 24,000 audit events,
    2,000 approval requests;
    the popular dataset version is read by 3,000 runs.
- Every request goes through Django's test client, signed in as an admin (every page is allowed). A page's time is
  from the client's request to the full response (middleware, view, template), after 2 untimed warm-up requests;
  its queries and size are counted on one further request.
- SQLite is a file in the temporary folder (WAL, as the embedded settings open it); no ANALYZE, as the application
  never runs one. PostgreSQL is the server at 127.0.0.1:5432 (user postgres): the script drops and creates the
  database cp_perf_bench, runs ANALYZE after each seeding (autovacuum would, on a live server), and drops it at
  the end.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _table import print_rows  # bench/_table.py: the shared table printer

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = "postgres://postgres@127.0.0.1:5432/"
BENCH_DATABASE = "cp_perf_bench"
# A history's size; the large one is what the issue measured.
SMALL = {
    "runs": 100,
    "dataset_versions": 10,
    "model_versions": 10,
    "edges": 135,
    "audit": 120,
    "popular_reads": 15,
    "approval_requests": 10,
}
LARGE = {
    "runs": 20000,
    "dataset_versions": 2000,
    "model_versions": 2000,
    "edges": 27000,
    "audit": 24000,
    "popular_reads": 3000,
    "approval_requests": 2000,
}
TARGET_MS, TARGET_QUERIES = 150.0, 15


# ---------------------------------------------------------------------------------------------------------------------
# Seeding (in the child process, with Django set up)


@dataclass
class Seeded:
    popular_version: Any
    popular_run: Any
    popular_model_version: Any
    open_request: Any


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _breast_cancer_profile(tmp: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    from sklearn.datasets import load_breast_cancer

    from workers.datasets import profile_files, profile_to_schema

    frame = load_breast_cancer(as_frame=True).frame
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    path = tmp / "cancer.csv"
    path.write_text(buffer.getvalue())
    profile = profile_files([path], format="csv")
    return profile, profile_to_schema(profile)


class Seeder:
    """Grows one history: each call to `grow_to` adds rows until the counts given are reached."""

    def __init__(self, tmp: Path) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group

        from controlplane import permissions
        from controlplane.models import Project

        def make_user(username: str, role: str) -> Any:
            user = get_user_model().objects.create_user(
                username=username, email=f"{username}@example.com", is_staff=role == permissions.ADMIN
            )
            user.groups.add(Group.objects.get_or_create(name=role)[0])
            return user

        self.rng = random.Random(7)
        self.admin = make_user("bench-admin", permissions.ADMIN)
        self.users = [make_user(f"scientist{i}", permissions.DATA_SCIENTIST) for i in range(5)]
        self.approvers = [make_user(f"approver{i}", permissions.APPROVER) for i in range(2)]
        from deployments import services as deployment_services

        self.environments = [
            deployment_services.environment_create(
                actor=self.admin,
                data={"name": name, "order": order, "approvals_required": needed, "gates": gates},
            )
            for name, order, needed, gates in (
                ("staging", 10, 1, ["accuracy >= 0.9"]),
                ("production", 20, 2, ["accuracy >= 0.9", "accuracy >= serving - 0.01", "schema matches serving"]),
            )
        ]
        self.projects = [
            Project.objects.create(name=f"Project {i}", slug=f"project-{i}", created_by=self.admin) for i in range(5)
        ]
        self.profile, self.schema = _breast_cancer_profile(tmp)
        self.counts = dict.fromkeys(LARGE, 0)
        self.versions: list[Any] = []
        self.seeded: Seeded | None = None
        self.model_number: dict[int, int] = {}
        self.models: list[Any] = []

    def grow_to(self, target: dict[str, int]) -> Seeded:
        from controlplane.models import AuditEvent
        from lineage.models import (
            Dataset,
            DatasetProfile,
            DatasetVersion,
            LineageEdge,
            ModelVersion,
            RegisteredModel,
            Run,
            RunInput,
        )

        batch = 1000
        new_versions = target["dataset_versions"] - self.counts["dataset_versions"]
        # Five versions a dataset; every fifth dataset's versions are derived by a transform run (edges below).
        datasets = Dataset.objects.bulk_create(
            [
                Dataset(
                    project=self.projects[i % 5],
                    name=f"Dataset {n}",
                    slug=f"dataset-{n}",
                    created_by=self.users[i % 5],
                    description="Seeded for bench/pages.py",
                )
                for i, n in enumerate(range(len(self.versions) // 5, (len(self.versions) + new_versions) // 5))
            ],
            batch_size=batch,
        )
        versions = DatasetVersion.objects.bulk_create(
            [
                DatasetVersion(
                    dataset=dataset,
                    number=number,
                    sha256=_sha(f"{dataset.slug}/{number}"),
                    uri=f"file:///data/{dataset.slug}/v{number}.csv",
                    storage_key=f"datasets/{dataset.slug}/{number}",
                    size=123_456,
                    format="csv",
                    content_format="csv",
                    columns=self.schema,
                    row_count=569,
                    source="upload",
                    original_filename=f"{dataset.slug}.csv",
                    created_by=self.users[number % 5],
                )
                for dataset in datasets
                for number in range(1, 6)
            ],
            batch_size=batch,
        )
        DatasetProfile.objects.bulk_create(
            [DatasetProfile(version=v, status="ready", progress=1.0, profile=self.profile) for v in versions],
            batch_size=batch,
        )
        self.versions += versions
        self.counts["dataset_versions"] += len(versions)
        popular = self.versions[0]

        run_count = target["runs"] - self.counts["runs"]
        popular_reads = target["popular_reads"] - self.counts["popular_reads"]
        metrics = {
            name: [{"value": round(0.9 + k / 100, 4), "fold": k, "time": 1_764_000_000 + k} for k in range(5)]
            for name in ("cv_accuracy", "cv_f1", "cv_roc_auc", "cv_precision", "cv_recall")
        }
        log_tail = [
            f"2026-12-01T08:{k // 60:02d}:{k % 60:02d}Z fold {k % 5}: fitting 30 features, 455 rows " + "." * 40
            for k in range(200)
        ]
        runs = Run.objects.bulk_create(
            [
                Run(
                    project=self.projects[i % 5],
                    kind="training",
                    recipe=("sklearn-logistic", "sklearn-random-forest")[i % 2],
                    recipe_version="1.2",
                    recipe_fingerprint=_sha(f"recipe/{i % 2}"),
                    parameters={"target": "target", "hyperparameters": {"C": 1.0, "max_iter": 200}},
                    seed=42,
                    status=("succeeded", "failed", "succeeded", "stopped")[i % 4],
                    metrics=metrics,
                    usage={"cpu_seconds": 12.5, "max_rss_mb": 310},
                    log_tail=log_tail,
                    created_by=self.users[i % 5],
                    instance_type="local",
                )
                for i in range(run_count)
            ],
            batch_size=batch,
        )
        self.counts["runs"] += len(runs)
        inputs, edges = [], []
        # The first `popular_reads` new runs read the popular version; the others a version at random.
        for i, run in enumerate(runs):
            source = popular if i < popular_reads else self.rng.choice(self.versions)
            inputs.append(RunInput(run=run, dataset_version=source, channel="train"))
            edges.append(LineageEdge(source=source.node_id, target=run.node_id))
        self.counts["popular_reads"] += min(popular_reads, len(runs))

        # Model versions: one per run for the first runs, ten versions a registered model.
        new_models = target["model_versions"] - self.counts["model_versions"]
        producing = runs[:new_models]
        registered = RegisteredModel.objects.bulk_create(
            [
                RegisteredModel(
                    project=self.projects[i % 5],
                    name=f"Model {len(self.models) + i}",
                    slug=f"model-{len(self.models) + i}",
                    created_by=self.admin,
                )
                for i in range((new_models + 9) // 10)
            ],
            batch_size=batch,
        )
        self.models += registered
        model_versions = ModelVersion.objects.bulk_create(
            [
                ModelVersion(
                    registered_model=registered[i // 10],
                    number=i % 10 + 1,
                    run=run,
                    artifact_uri=f"file:///models/{run.pk}/model.joblib",
                    artifact_key=f"models/{run.pk}/model.joblib",
                    sha256=_sha(f"model/{run.pk}"),
                    size=45_678,
                    task="classification",
                    target="target",
                    input_schema=self.schema[:-1],
                    classes=[0, 1],
                    metrics={"accuracy": 0.95, "roc_auc": 0.99},
                    metadata={"recipe": run.recipe, "features": [c["name"] for c in self.schema[:-1]]},
                    created_by=run.created_by,
                )
                for i, run in enumerate(producing)
            ],
            batch_size=batch,
        )
        self.counts["model_versions"] += len(model_versions)
        edges += [LineageEdge(source=mv.run.node_id, target=mv.node_id) for mv in model_versions]

        # Derived versions: every fifth dataset's versions come from a run; validation inputs fill the remainder.
        derived = [v for v in versions if int(v.dataset.slug.rsplit("-", 1)[1]) % 5 == 4]
        for version, run in zip(derived, runs[-len(derived) :] if derived else [], strict=False):
            edges.append(LineageEdge(source=run.node_id, target=version.node_id))
        missing = target["edges"] - self.counts["edges"] - len(edges)
        for run in runs[popular_reads : popular_reads + max(missing, 0)]:
            validation = self.rng.choice(self.versions)
            inputs.append(RunInput(run=run, dataset_version=validation, channel="validation"))
            edges.append(LineageEdge(source=validation.node_id, target=run.node_id))
        RunInput.objects.bulk_create(inputs, batch_size=batch, ignore_conflicts=True)
        LineageEdge.objects.bulk_create(edges, batch_size=batch, ignore_conflicts=True)
        self.counts["edges"] = LineageEdge.objects.count()

        actions = [
            "dataset.create",
            "dataset_version.create",
            "run.launch",
            "run.start",
            "run.succeed",
            "run.fail",
            "model_version.create",
            "project.update",
            "token.regenerate",
            "dataset_version.profile",
        ]
        start = self.counts["audit"]
        AuditEvent.objects.bulk_create(
            [
                AuditEvent(
                    actor=self.users[i % 5],
                    actor_name=self.users[i % 5].username,
                    action=actions[i % len(actions)],
                    object_type=actions[i % len(actions)].split(".")[0],
                    object_id=str(i),
                    object_repr=f"object {i}",
                    before={"status": "running"},
                    after={"status": "succeeded", "note": "seeded"},
                    reason="bench",
                )
                for i in range(start, target["audit"])
            ],
            batch_size=batch,
        )
        self.counts["audit"] = target["audit"]
        self._grow_approvals(model_versions, target["approval_requests"] - self.counts["approval_requests"])
        if self.seeded is None:
            first_model_version = (
                ModelVersion.objects.select_related("registered_model__project").order_by("pk").first()
            )
            from deployments.models import ApprovalRequest

            self.seeded = Seeded(
                popular_version=popular,
                popular_run=runs[0],
                popular_model_version=first_model_version,
                open_request=ApprovalRequest.objects.filter(status="open").order_by("pk").first(),
            )
        return self.seeded

    def _grow_approvals(self, model_versions: list[Any], count: int) -> None:
        """One request per new model version: a third open, the rest approved or rejected, each with its three gate
        results and its decisions; staging and production alternately."""
        from datetime import timedelta

        from django.utils import timezone

        from deployments.models import ApprovalDecision, ApprovalRequest, GateResult

        now = timezone.now()
        requests = ApprovalRequest.objects.bulk_create(
            [
                ApprovalRequest(
                    model_version=mv,
                    environment=self.environments[i % 2],
                    status=("open", "approved", "rejected")[i % 3],
                    status_reason="" if i % 3 == 0 else "seeded",
                    requested_by=mv.created_by,
                    justification="better recall on the holdout",
                    artifact_sha256=mv.sha256,
                    approvals_required=self.environments[i % 2].approvals_required,
                    expires_at=now + timedelta(days=14 - i % 20),
                    finished_at=None if i % 3 == 0 else now,
                )
                for i, mv in enumerate(model_versions[:count])
            ],
            batch_size=1000,
        )
        GateResult.objects.bulk_create(
            [
                GateResult(
                    request=request,
                    position=k,
                    expression=expression,
                    kind=kind,
                    passed=True,
                    summary="accuracy = 0.95 meets >= 0.9",
                    evidence={"metric": "accuracy", "value": 0.95, "op": ">=", "threshold": 0.9},
                )
                for request in requests
                for k, (expression, kind) in enumerate(
                    [("accuracy >= 0.9", "threshold"), ("schema matches serving", "schema"), ("f1 >= 0.5", "threshold")]
                )
            ],
            batch_size=1000,
        )
        ApprovalDecision.objects.bulk_create(
            [
                ApprovalDecision(
                    request=request,
                    approver=approver,
                    verdict="reject" if request.status == "rejected" else "approve",
                    comment="seeded",
                )
                for request in requests
                if request.status != "open"
                for approver in self.approvers[: request.approvals_required if request.status == "approved" else 1]
            ],
            batch_size=1000,
        )
        self.counts["approval_requests"] += len(requests)


# ---------------------------------------------------------------------------------------------------------------------
# Measuring


def pages(seeded: Seeded) -> list[tuple[str, str]]:
    from django.urls import reverse

    version = seeded.popular_version
    dataset = version.dataset
    model_version = seeded.popular_model_version
    model = model_version.registered_model
    return [
        ("home", reverse("home")),
        ("projects", reverse("project-list")),
        ("datasets", reverse("dataset-list")),
        ("datasets ?q=dataset-1", reverse("dataset-list") + "?q=dataset-1"),
        ("dataset (popular)", reverse("dataset-detail", args=[dataset.project.slug, dataset.slug])),
        (
            "dataset version (popular)",
            reverse("dataset-version-detail", args=[dataset.project.slug, dataset.slug, version.number]),
        ),
        ("runs", reverse("run-list")),
        ("runs ?status=failed", reverse("run-list") + "?status=failed"),
        ("run", reverse("run-detail", args=[seeded.popular_run.pk])),
        ("models", reverse("model-list")),
        ("model", reverse("model-detail", args=[model.project.slug, model.slug])),
        ("model version", reverse("model-version-detail", args=[model.project.slug, model.slug, model_version.number])),
        ("lineage (popular)", reverse("lineage", args=[version.node_id])),
        ("audit log", reverse("audit-list")),
        ("audit log ?action=run.", reverse("audit-list") + "?action=run."),
        ("API projects", reverse("api-project-list")),
        ("API datasets", reverse("api-dataset-list")),
        ("API dataset versions", reverse("api-dataset-version-list", args=[dataset.project.slug, dataset.slug])),
        ("API runs", reverse("api-run-list")),
        ("API runs ?page_size=500", reverse("api-run-list") + "?page_size=500"),
        ("API runs ?status=failed", reverse("api-run-list") + "?status=failed"),
        ("API models", reverse("api-model-list")),
        ("API model versions", reverse("api-model-version-list", args=[model.project.slug, model.slug])),
        ("API lineage (popular)", reverse("api-lineage", args=[version.node_id])),
        ("API audit events", reverse("api-audit-list")),
        ("environments", reverse("environment-list")),
        ("approvals (waiting for me)", reverse("approval-queue")),
        ("approvals (all)", reverse("approval-queue") + "?tab=all"),
        ("approvals ?older_than=7", reverse("approval-queue") + "?tab=all&older_than=7"),
        ("approval request (evidence)", reverse("approval-request-detail", args=[seeded.open_request.pk])),
        ("notifications", reverse("notification-list")),
        ("API environments", reverse("api-environment-list")),
        ("API approval requests", reverse("api-approval-request-list")),
        ("API approval requests ?mine=true", reverse("api-approval-request-list") + "?mine=true"),
    ]


def measure(client: Any, url: str, rounds: int) -> dict[str, float]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(2):
        response = client.get(url)
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}: {response.content[:300]!r}")
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        client.get(url)
        times.append((time.perf_counter() - started) * 1000)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    return {
        "median": statistics.median(times),
        "p95": statistics.quantiles(times, n=20, method="inclusive")[18],
        "queries": len(captured),
        "kb": len(response.content) / 1024,
    }


def analyze() -> None:
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


def child(rounds: int) -> dict[str, Any]:
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    call_command("migrate", verbosity=0)
    with tempfile.TemporaryDirectory() as tmp:
        seeder = Seeder(Path(tmp))
        results: dict[str, Any] = {"vendor": connection.vendor, "sizes": {}}
        for size, counts in (("small", SMALL), ("large", LARGE)):
            started = time.perf_counter()
            seeded = seeder.grow_to(counts)
            analyze()
            results["sizes"][size] = {"seconds": time.perf_counter() - started, "counts": dict(seeder.counts)}
            client = Client()
            client.force_login(seeder.admin)
            results["sizes"][size]["load_before"] = os.getloadavg()
            for name, url in pages(seeded):
                results.setdefault("pages", {}).setdefault(name, {})[size] = measure(client, url, rounds)
        results["load"] = os.getloadavg()
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SHOW server_version")
                results["server"] = "PostgreSQL " + cursor.fetchone()[0]
    return results


# ---------------------------------------------------------------------------------------------------------------------
# The parent: one child per database, then the tables


def postgres_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES + "postgres", autocommit=True) as conn:
        conn.execute(sql)


def run_child(database: str, rounds: int, tmp: Path) -> dict[str, Any]:
    var = tmp / database
    var.mkdir()
    url = f"sqlite:///{var / 'bench.sqlite3'}" if database == "sqlite" else POSTGRES + BENCH_DATABASE
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="controlplane.settings.local",
        DJANGO_DEBUG="false",
        CONTROLPLANE_VAR_DIR=str(var),
        DATABASE_URL=url,
        PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'bench'}",
    )
    env.pop("REDIS_URL", None)
    if database == "postgres":
        postgres_admin(f"DROP DATABASE IF EXISTS {BENCH_DATABASE}")
        postgres_admin(f"CREATE DATABASE {BENCH_DATABASE}")
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--rounds", str(rounds)],
            env=env,
            cwd=ROOT,
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
    finally:
        if database == "postgres":
            postgres_admin(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
    return json.loads(out.strip().splitlines()[-1])


def report(database: str, results: dict[str, Any]) -> list[str]:
    sizes = results["sizes"]
    print(
        f"\n{database} ({results.get('server', 'SQLite ' + __import__('sqlite3').sqlite_version)}); "
        f"seeded small in {sizes['small']['seconds']:.1f} s, grown to large in {sizes['large']['seconds']:.1f} s"
    )
    print("large:", ", ".join(f"{k} {v:,}" for k, v in sizes["large"]["counts"].items()))
    print(
        "load average (1, 5, 15 min) before small: {}, before large: {}, at the end: {}".format(
            *(
                " ".join(f"{x:.1f}" for x in load)
                for load in (sizes["small"]["load_before"], sizes["large"]["load_before"], results["load"])
            )
        )
    )
    rows = [("page", "small med ms", "p95", "queries", "large med ms", "p95", "queries", "KB")]
    misses = []
    for name, by_size in results["pages"].items():
        small, large = by_size["small"], by_size["large"]
        rows.append(
            (
                name,
                f"{small['median']:.1f}",
                f"{small['p95']:.1f}",
                str(small["queries"]),
                f"{large['median']:.1f}",
                f"{large['p95']:.1f}",
                str(large["queries"]),
                f"{large['kb']:.0f}",
            )
        )
        if large["p95"] >= TARGET_MS or large["queries"] > TARGET_QUERIES or large["queries"] != small["queries"]:
            misses.append(f"{database}: {name}")
    print_rows(rows)
    return misses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21, help="timed requests per page and size (default 21)")
    parser.add_argument("--databases", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.rounds)))
        return 0
    print(
        f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    print(
        f"Targets on the large history: p95 < {TARGET_MS:.0f} ms, at most {TARGET_QUERIES} queries, "
        "as many as on the small one."
    )
    misses: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for database in args.databases.split(","):
            misses += report(database, run_child(database, args.rounds, Path(tmp)))
    print("\nmissed targets: " + (", ".join(misses) if misses else "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
