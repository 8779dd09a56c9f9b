"""The `make run` demo, made by the system itself: the demo users register the breast-cancer data scikit-learn ships,
split it, train three models on the local backend, request and approve promotions (production needs two approvers),
deploy staging and production (the second production version as a canary) and send a trickle of traffic through each
service's stable address, the staging traffic with tumour-size features that drift, so the latency, drift and cost
pages fill within minutes and a drift alert opens.

Every step is the same call a user's click makes (the services layer, as that demo user), and every step first looks
for what it would make: a second `make run`, or one stopped half way, makes nothing twice. What is left to the system
(profiles, runs, approvals finishing, rollouts and bakes) is waited for, as a user would watch it. One request, the
random forest's to staging, is left open so an approver has something to decide.
"""

from __future__ import annotations

import functools
import http.client
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.db import close_old_connections

PROJECT = "demo"
DATASET = "breast-cancer"
MODEL = "breast-cancer-classifier"
# Each demo model is found again by its recipe and its hyperparameters.
VERSIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "v1": ("logistic_regression", {"C": 1.0, "max_iter": 1000}),
    "v2": ("logistic_regression", {"C": 0.3, "max_iter": 1000}),
    "forest": ("random_forest", {"n_estimators": 60}),
}
# The staging traffic's tumour-size features grow by this share over DRIFT_RAMP_SECONDS: a scanner recalibrated.
DRIFT_FEATURES = ("mean radius", "mean perimeter", "mean area", "worst radius", "worst perimeter", "worst area")
DRIFT_GROWTH = 0.5
DRIFT_RAMP_SECONDS = 150.0
# Requests per second per service, each with 1-4 rows: production's canary takes a fifth of its traffic and needs
# 20 requests in its 1-minute bake to be judged.
TRAFFIC_RATE = {"staging": 2.0, "production": 4.0}
WAIT_SECONDS = 900.0


class DemoStopped(Exception):
    """Ctrl-C while a step waited."""


class DemoFailed(Exception):
    """Something the demo waited for ended badly; the message says what and where to look."""


@dataclass
class Traffic:
    """Requests sent through one service's stable address until stopped, each answer counted."""

    name: str
    address: str
    features: list[str]
    rows: list[list[float]]
    drift: bool
    rate: float
    stop: threading.Event
    sent: int = 0
    failed: int = 0
    last_error: str = ""
    # When the drift began (epoch seconds): the staging service's creation, so a later `make run` goes on drifted.
    since: float = field(default_factory=time.time)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name=f"demo-traffic-{self.name}", daemon=True)
        self.thread.start()

    def body(self, rng: random.Random) -> bytes:
        factor = 1.0
        if self.drift:
            factor += DRIFT_GROWTH * min(max(time.time() - self.since, 0.0) / DRIFT_RAMP_SECONDS, 1.0)
        drifting = {i for i, name in enumerate(self.features) if name in DRIFT_FEATURES}
        rows = []
        for _ in range(rng.randint(1, 4)):
            row = rng.choice(self.rows)
            rows.append(
                [
                    round(value * rng.uniform(0.97, 1.03) * (factor if i in drifting else 1.0), 6)
                    for i, value in enumerate(row)
                ]
            )
        return json.dumps({"instances": rows}).encode()

    def _loop(self) -> None:
        rng = random.Random(self.name)
        where = urlsplit(self.address)
        while not self.stop.is_set():
            # A connection per request, as from many clients: the router splits traffic by connection, so one
            # kept-alive connection would stay on one revision and a canary would never see it.
            connection = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=10)
            try:
                connection.request(
                    "POST", "/invocations", body=self.body(rng), headers={"Content-Type": "application/json"}
                )
                answer = connection.getresponse()
                answer.read()
                self.sent += 1
                if answer.status != 200:
                    self.failed += 1
                    self.last_error = f"HTTP {answer.status}"
            except (OSError, http.client.HTTPException) as exc:
                self.sent += 1
                self.failed += 1
                self.last_error = str(exc) or type(exc).__name__
                self.stop.wait(1.0)
            finally:
                connection.close()
            self.stop.wait(rng.expovariate(self.rate))


class Demo:
    """The demo's steps, in order; `say` prints one line to the terminal."""

    def __init__(self, say: Callable[[str], None], stop: threading.Event) -> None:
        self.say = say
        self.stop = stop
        self.traffic: dict[str, Traffic] = {}
        User = get_user_model()
        self.dana, self.alex, self.blair = (User.objects.get(username=name) for name in ("dana", "alex", "blair"))

    # --- waiting ---------------------------------------------------------------------------------------------------

    def wait(self, what: str, check: Callable[[], Any], *, seconds: float = WAIT_SECONDS) -> Any:
        """Poll `check` (a fresh database read each time) until it returns something true; DemoFailed after
        `seconds`, DemoStopped on Ctrl-C."""
        deadline = time.monotonic() + seconds
        while True:
            close_old_connections()
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise DemoFailed(f"gave up waiting for {what} after {seconds:.0f} s")
            if self.stop.wait(0.5):
                raise DemoStopped()

    # --- the steps -------------------------------------------------------------------------------------------------

    def run(self) -> None:
        version = self.dataset()
        train, test = self.split(version)
        runs = {key: self.training_run(key, train, test) for key in ("v1", "v2")}
        # The two logistic runs train side by side and are numbered as they finish: the lower number goes first.
        # The forest starts once both are registered, so it is v3.
        v1, v2 = sorted((self.model(runs["v1"]), self.model(runs["v2"])), key=lambda version: version.number)
        runs["forest"] = self.training_run("forest", train, test)
        staging_v1 = self.deployed(self.promote(v1, "staging", [self.alex]), by=None)
        self.start_traffic("staging", v1)
        production_v1 = self.deployed(self.promote(v1, "production", [self.alex, self.blair]), by=self.alex)
        self.start_traffic("production", v1)
        forest = self.model(runs["forest"])
        self.costs()
        self.settled(staging_v1)
        self.settled(self.deployed(self.promote(v2, "staging", [self.blair]), by=None))
        request = self.promote(v2, "production", [self.alex, self.blair])
        self.settled(production_v1)
        canary = self.deployed(request, by=self.alex)
        self.requested(forest, "staging")
        self.costs()
        self.settled(canary)

    def waiting(self) -> int:
        """Requests for the demo model that wait for an approver."""
        from deployments.models import ApprovalRequest

        return ApprovalRequest.objects.filter(
            status="open", model_version__registered_model__slug=MODEL, model_version__run__project__slug=PROJECT
        ).count()

    def in_place(self) -> bool:
        """Whether an earlier run made the demo's last step (the random forest's request for staging)."""
        from deployments.models import ApprovalRequest

        recipe, hyperparameters = VERSIONS["forest"]
        requests = ApprovalRequest.objects.filter(
            environment__name="staging",
            model_version__run__recipe=recipe,
            model_version__run__project__slug=PROJECT,
            model_version__registered_model__slug=MODEL,
        ).select_related("model_version__run")
        return any(
            all(r.model_version.run.parameters.get(k) == v for k, v in hyperparameters.items()) for r in requests
        )

    def dataset(self) -> Any:
        import io

        from django.core.files.uploadedfile import SimpleUploadedFile
        from sklearn.datasets import load_breast_cancer

        from lineage import services as lineage_services
        from lineage.models import DatasetVersion

        version = (
            DatasetVersion.objects.filter(
                dataset__project__slug=PROJECT, dataset__slug=DATASET, produced_by__isnull=True
            )
            .order_by("number")
            .first()
        )
        if version is None:
            buffer = io.StringIO()
            load_breast_cancer(as_frame=True).frame.to_csv(buffer, index=False)
            upload = SimpleUploadedFile("breast-cancer.csv", buffer.getvalue().encode(), content_type="text/csv")
            version, _ = lineage_services.dataset_version_upload(
                actor=self.dana,
                project=PROJECT,
                dataset=DATASET,
                upload=upload,
                description="Wisconsin diagnostic breast cancer data (569 rows, 30 features, binary target).",
            )
            self.say(f"dana registered the dataset {DATASET} v{version.number} (/datasets/{PROJECT}/{DATASET}/)")
        self._profiled(version)
        return version

    def _profiled(self, version: Any) -> None:
        from lineage.models import DatasetProfile

        def ready() -> bool:
            profile = DatasetProfile.objects.filter(version=version).first()
            if profile is not None and profile.status == "failed":
                raise DemoFailed(f"the profile of {version} failed: {profile.error}")
            return profile is not None and profile.status == "ready"

        self.wait(f"the profile of {version}", ready)

    def split(self, version: Any) -> tuple[Any, Any]:
        from lineage import services as lineage_services
        from lineage.models import Run

        runs = Run.objects.filter(kind="transform", recipe="split", inputs__dataset_version=version)
        run = runs.order_by("id").first()
        if run is None:
            run = lineage_services.transform_run_launch(
                actor=self.dana,
                inputs=[version],
                recipe="split",
                parameters={"test_fraction": 0.2, "seed": 42, "stratify_column": "target"},
            )
            self.say(f"dana launched run {run.pk}: split {DATASET} into train and test (/runs/{run.pk}/)")
        self._succeeded(run)
        outputs = {v.dataset.slug.rsplit("-", 1)[-1]: v for v in run.output_versions.select_related("dataset")}
        for output in outputs.values():
            self._profiled(output)
        return outputs["train"], outputs["test"]

    def _succeeded(self, run: Any) -> None:
        from lineage.models import Run

        def done() -> bool:
            current = Run.objects.get(pk=run.pk)
            if current.status in ("failed", "stopped"):
                raise DemoFailed(f"run {run.pk} {current.status}: see /runs/{run.pk}/")
            return current.status == "succeeded"

        self.wait(f"run {run.pk} to succeed", done)

    def training_run(self, key: str, train: Any, test: Any) -> Any:
        from lineage import services as lineage_services
        from lineage.models import Run

        recipe, hyperparameters = VERSIONS[key]
        candidates = Run.objects.filter(kind="training", recipe=recipe, project__slug=PROJECT).order_by("id")
        run = next(
            (r for r in candidates if all(r.parameters.get(k) == v for k, v in hyperparameters.items())),
            None,
        )
        if run is None:
            run = lineage_services.training_run_launch(
                actor=self.dana,
                recipe=recipe,
                train=train,
                validation=test,
                target="target",
                hyperparameters=hyperparameters,
                seed=42,
                model_name=MODEL,
            )
            shown = ", ".join(f"{k}={v}" for k, v in hyperparameters.items())
            self.say(f"dana launched training run {run.pk}: {recipe} ({shown}) (/runs/{run.pk}/)")
        return run

    def model(self, run: Any) -> Any:
        from lineage.models import ModelVersion

        self._succeeded(run)
        version = self.wait(f"run {run.pk}'s model version", lambda: ModelVersion.objects.filter(run=run).first())
        accuracy = (version.metrics or {}).get("accuracy")
        shown_accuracy = f", accuracy {accuracy:.3f}" if isinstance(accuracy, int | float) else ""
        self.say(f"run {run.pk} registered {version}{shown_accuracy}")
        return version

    def _request(self, version: Any, environment: str) -> Any:
        """The version's live or approved request for `environment`, else a new one as dana."""
        from django.core.exceptions import ValidationError

        from deployments import services as deployment_services
        from deployments.models import ApprovalRequest

        existing = (
            ApprovalRequest.objects.filter(model_version=version, environment__name=environment)
            .exclude(status__in=["rejected", "withdrawn", "expired"])
            .order_by("-id")
            .first()
        )
        if existing is not None:
            return existing
        justification = f"{version} passes the {environment} gates; the demo promotes it."
        try:
            request = deployment_services.approval_request_create(
                actor=self.dana, model_version_id=version.pk, environment=environment, justification=justification
            )
        except ValidationError as exc:
            # The second logistic model may score a little under the first: production allows an override, and
            # the request then shows the failed gate and this reason to its approvers.
            if "override_reason" not in str(exc):
                raise
            request = deployment_services.approval_request_create(
                actor=self.dana,
                model_version_id=version.pk,
                environment=environment,
                justification=justification,
                override_reason="The demo's second version, promoted to show a canary, whatever its score.",
            )
        self.say(f"dana requested {version} for {environment} (request {request.pk}, /approvals/{request.pk}/)")
        return request

    def requested(self, version: Any, environment: str) -> Any:
        request = self._request(version, environment)
        if request.status == "open":
            self.say(f"request {request.pk} ({version} for {environment}) waits for an approver: sign in as alex")
        return request

    def promote(self, version: Any, environment: str, approvers: list[Any]) -> Any:
        """Requested by dana and approved by `approvers` (each once), then approved by the worker."""
        from deployments import services as deployment_services
        from deployments.models import ApprovalDecision, ApprovalRequest

        request = self._request(version, environment)
        if request.status == "open" and request.environment.deploy_on_approval:
            # Approval deploys at once, which a deployment still in progress would refuse: approve after it.
            target = request.environment
            self.wait(f"{environment}'s deployment in progress to end", lambda: self._free(version, target))
        for approver in approvers:
            request.refresh_from_db()
            if request.status != "open":
                break
            if ApprovalDecision.objects.filter(request=request, approver=approver).exists():
                continue
            deployment_services.approval_decide(
                actor=approver,
                request_id=request.pk,
                verdict="approve",
                comment=f"Evidence read: gates pass, lineage traced to {DATASET}; approved for the demo.",
            )
            self.say(f"{approver.get_username()} approved request {request.pk} ({version} for {environment})")

        def approved() -> bool:
            current = ApprovalRequest.objects.get(pk=request.pk)
            if current.status in ("rejected", "withdrawn", "expired"):
                raise DemoFailed(f"request {request.pk} ended {current.status}: see /approvals/{request.pk}/")
            return current.status == "approved"

        self.wait(f"request {request.pk} to be approved", approved)
        return ApprovalRequest.objects.get(pk=request.pk)

    def _free(self, version: Any, environment: Any) -> bool:
        from deployments import selectors as deployment_selectors
        from deployments.models import Service

        service = Service.objects.filter(registered_model=version.registered_model, environment=environment).first()
        return service is None or deployment_selectors.active_deployment(service=service) is None

    def deployed(self, request: Any, *, by: Any) -> Any:
        """The request's deployment, made on approval (`by` None: staging deploys by itself) or by `by` with Deploy
        once the service has no deployment in progress; returned once it takes traffic (baking, or done)."""
        from deployments import services as deployment_services
        from deployments.models import ACTIVE_DEPLOYMENT_STATUSES, Deployment

        version, environment = request.model_version, request.environment

        def mine() -> Deployment | None:
            return (
                Deployment.objects.filter(model_version=version, service__environment=environment, kind="deploy")
                .order_by("-id")
                .first()
            )

        deployment = mine()
        if by is None:
            deployment = deployment or self.wait(
                f"{environment}'s deployment on approval of {version}", mine, seconds=60
            )
            if deployment.status in ACTIVE_DEPLOYMENT_STATUSES:
                self.say(f"{environment.name} deploys {version} on approval (/services/{deployment.service_id}/)")
        if deployment is None:
            self.wait(f"{environment}'s deployment in progress to end", lambda: self._free(version, environment))
            deployment = mine() or deployment_services.deployment_create(
                actor=by,
                model_version_id=version.pk,
                environment=environment.name,
                reason=f"request {request.pk} approved; deployed by the demo's approver",
            )
            how = deployment.get_strategy_display() if deployment.replaces_id else "its first revision"
            self.say(
                f"{by.get_username()} deployed {version} to {environment.name} "
                f"({how}, /services/{deployment.service_id}/)"
            )

        def taking_traffic() -> Deployment | None:
            current = Deployment.objects.select_related("service").get(pk=deployment.pk)
            ended = current.status in ("failed", "rolled_back")
            return current if ended or (current.status in ("baking", "succeeded") and current.service.address) else None

        current = self.wait(f"deployment {deployment.pk} of {version} to take traffic", taking_traffic)
        if current.status == "baking":
            if current.replaces_id is not None and current.strategy == "canary":
                share = f"as a canary with {current.canary_percent:g} % of the traffic"
            else:
                share = "with all the traffic"
            self.say(f"{version} bakes {share} for {current.bake_minutes:g} min in {environment.name}")
        else:
            self._said_end(current)
        return current

    def settled(self, deployment: Any) -> Any:
        """Wait for a deployment's bake to end (it succeeded, or the system rolled it back)."""
        from deployments.models import ACTIVE_DEPLOYMENT_STATUSES, Deployment

        def ended() -> Deployment | None:
            current = Deployment.objects.select_related("service").get(pk=deployment.pk)
            return current if current.status not in ACTIVE_DEPLOYMENT_STATUSES else None

        current = self.wait(f"deployment {deployment.pk} to finish baking", ended)
        if current.status != deployment.status:
            self._said_end(current)
        return current

    def _said_end(self, deployment: Any) -> None:
        where = f"{deployment.service.environment.name} at {deployment.service.address}"
        if deployment.status == "succeeded":
            self.say(f"{deployment.model_version} serves in {where}")
        else:
            self.say(f"deployment {deployment.pk} {deployment.status}: see /services/{deployment.service_id}/")

    def costs(self) -> None:
        """What the runs and services cost so far, now rather than at the beat's next estimate sync."""
        from monitoring.costs.services import cost_sync_request

        cost_sync_request(source="estimate")

    # --- traffic ---------------------------------------------------------------------------------------------------

    def start_traffic(self, environment: str, version: Any) -> None:
        """A trickle of requests through the service's stable address (drifting in staging), from now on."""
        from sklearn.datasets import load_breast_cancer

        from deployments.models import Service

        if environment in self.traffic:
            return
        service = Service.objects.get(registered_model=version.registered_model, environment__name=environment)
        features = [column["name"] for column in version.input_schema]
        frame = load_breast_cancer(as_frame=True).frame
        rows = frame[features].astype(float).values.tolist()
        drift = environment == "staging"
        rate = TRAFFIC_RATE.get(environment, 2.0)
        traffic = Traffic(
            environment, service.address, features, rows, drift, rate, self.stop, since=service.created_at.timestamp()
        )
        traffic.start()
        self.traffic[environment] = traffic
        change = f"; its {', '.join(DRIFT_FEATURES[:3])}… drift upward" if drift else ""
        self.say(f"sending about {rate:g} requests/s to {service.name} at {service.address}{change}")

    def resume_traffic(self) -> None:
        """On a later `make run`: traffic again to the services the demo set up."""
        from deployments.models import Service

        for service in Service.objects.filter(
            registered_model__slug=MODEL, registered_model__project__slug=PROJECT, current_deployment__isnull=False
        ).select_related("environment", "current_deployment__model_version"):
            self.wait(f"{service.name}'s address", functools.partial(self._address, service.pk), seconds=120)
            service.refresh_from_db()
            self.start_traffic(service.environment.name, service.current_deployment.model_version)

    @staticmethod
    def _address(service_id: int) -> str:
        from deployments.models import Service

        return Service.objects.get(pk=service_id).address

    def report(self) -> str:
        return "; ".join(
            f"{name}: {t.sent} requests, {t.failed} failed" + (f" (last: {t.last_error})" if t.failed else "")
            for name, t in self.traffic.items()
        )
