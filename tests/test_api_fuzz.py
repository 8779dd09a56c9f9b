"""The REST API is fuzzed from its own OpenAPI schema: no input, valid or not, gets a 5xx, and every refusal (4xx) is
the one error body, `{"error": {"status", "code", "message", "fields"?}}`.

Every operation the schema at /api/v1/schema/ lists is called in-process through the WSGI app, as an admin with a
token, with inputs schemathesis derives from the schema (conforming and not). A few real objects are made first
and their ids and slugs offered to the fuzzer, so detail and action endpoints get past "not found" too.

Status codes are not checked against the schema: not every operation's schema declares its refusals (400, 403, 404,
409) yet, so checking conformance would flag correct refusals.

Then statefully: sequences of calls where one's answer feeds the next (the links schemathesis infers from the schema,
about a hundred: a created project's slug to its members, an uploaded version's id to its profile, …), each checked
the same way.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import got_request_exception, request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from schemathesis.config import SchemathesisConfig

# Random cases per operation, on top of the coverage phase's fixed cases (every field at its boundaries and of each
# wrong type, in every media type the operation takes: about 4,900 requests). Derandomized, so each run sends the
# same ones. 10 (570 requests) rather than 25 (1,700, a third of them repeats) take 15 s less of the suite's budget;
# FUZZ_MAX_EXAMPLES=200 digs deeper when you have the time.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "10"))
# How often a fuzzed id, slug or node id is one of the objects made below rather than an arbitrary value.
KNOWN_VALUE_PROBABILITY = 0.75
# NUL (PostgreSQL refuses it in text and JSON), a right-to-left override, astral characters, a path, a format string.
HOSTILE_STRINGS = ["\x00", "a\x00b", "\u202e", "\U0001d54b\U0001f600", "../../etc/passwd", "%s%n{0}", " ", "0" * 300]
HOSTILE_STRING_PROBABILITY = 0.1

CSV = b"a,b,c,label\n" + b"".join(f"{i},{i * 0.5},{i % 3},{i % 2}\n".encode() for i in range(40))


def _expect(response: Any, status: int) -> Any:
    assert response.status_code == status, f"setting up the fuzz run: {response.status_code} {response.content[:500]!r}"
    return response.json()


def _upload(client: APIClient, *, dataset: str, name: str, content: bytes) -> dict[str, Any]:
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = client.post(
        "/api/v1/dataset-versions/",
        {"project": "fuzz", "dataset": dataset, "file": SimpleUploadedFile(name, content)},
        format="multipart",
    )
    assert response.status_code in (200, 201), (
        f"setting up the fuzz run: {response.status_code} {response.content[:500]!r}"
    )
    return response.json()


@pytest.fixture
def admin_headers(users: Any) -> dict[str, str]:
    users.admin.is_superuser = True
    users.admin.save()
    return {"Authorization": f"Token {Token.objects.create(user=users.admin).key}"}


@pytest.fixture
def known_values(admin_headers: dict[str, str]) -> dict[str, list[str | int]]:
    """Real objects of every kind the API addresses, made through the API where it can make them."""
    from lineage import services as lineage_services
    from lineage.models import Run

    client = APIClient(HTTP_AUTHORIZATION=admin_headers["Authorization"])
    _expect(client.post("/api/v1/projects/", {"name": "Fuzz", "slug": "fuzz"}, format="json"), 201)
    train = _upload(client, dataset="numbers", name="numbers.csv", content=CSV)
    validation = _upload(client, dataset="numbers-holdout", name="holdout.csv", content=CSV.replace(b"0\n", b"1\n"))
    data_root = django_settings.DATASET_FILE_ROOTS[0]
    data_root.mkdir(parents=True, exist_ok=True)
    (data_root / "fuzz.csv").write_bytes(CSV)
    registration = _expect(
        client.post(
            "/api/v1/dataset-registrations/",
            {"project": "fuzz", "dataset": "registered", "uri": (data_root / "fuzz.csv").as_uri()},
            format="json",
        ),
        202,
    )
    training = _expect(
        client.post(
            "/api/v1/runs/training/",
            {"recipe": "logistic_regression", "train": train["id"], "validation": validation["id"], "target": "label"},
            format="json",
        ),
        201,
    )
    transform = _expect(
        client.post(
            "/api/v1/runs/transform/",
            {"recipe": "clean_missing", "inputs": [train["id"]], "parameters": {}},
            format="json",
        ),
        201,
    )
    check = _expect(client.post("/api/v1/system-checks/"), 202)
    recipes = _expect(client.get("/api/v1/recipes/"), 200)
    # No endpoint makes a model version (a finished training run does): register one for the run as its worker would.
    with transaction.atomic():
        model_version = lineage_services.model_version_register(
            run=Run.objects.get(pk=training["id"]),
            artifact_uri="file:///nonexistent/model.tar.gz",
            artifact_key="",
            sha256="0" * 64,
            size=1,
            metadata={
                "features": ["a", "b", "c"],
                "target": "label",
                "task": "classification",
                "metrics": {"accuracy": 0.9},
            },
        )
    return {
        "ids": sorted(
            {
                train["id"],
                validation["id"],
                registration["id"],
                training["id"],
                transform["id"],
                check["id"],
                model_version.pk,
            }
        ),
        "projects": ["fuzz"],
        "slugs": ["fuzz", "numbers", "numbers-holdout", "registered", model_version.registered_model.slug],
        "node_ids": [
            train["node_id"],
            validation["node_id"],
            f"run:{training['id']}",
            f"run:{transform['id']}",
            model_version.node_id,
        ],
        "dataset_version_ids": [train["id"], validation["id"]],
        "recipes": [recipe["name"] for recipe in recipes],
        "columns": ["a", "b", "c", "label"],
        "instance_types": ["local", *django_settings.TRAINING_INSTANCE_PRICES],
        "uris": [
            (data_root / "fuzz.csv").as_uri(),
            data_root.as_uri() + "/",
            "s3://bucket/key.csv",
            "file:///etc/passwd",
        ],
    }


@contextmanager
def _keeping_the_test_connection() -> Iterator[None]:
    """Call the WSGI app inside the test's transaction, as Django's own test client does."""
    # Closing "old" connections at request boundaries would close the one holding the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def app_tracebacks() -> Iterator[list[str]]:
    """The traceback of every exception the app turned into a 500, so a failure shows where it came from."""
    seen: list[str] = []

    def record(sender: Any, request: Any = None, **kwargs: Any) -> None:
        seen.append(traceback.format_exc())

    got_request_exception.connect(record, weak=False)
    try:
        yield seen
    finally:
        got_request_exception.disconnect(record)


@pytest.fixture
def api_schema(admin_headers: dict[str, str], known_values: dict[str, list[Any]]) -> Any:
    def binding(dictionary: str) -> dict[str, Any]:
        return {"dictionary": dictionary, "probability": KNOWN_VALUE_PROBABILITY}

    config = SchemathesisConfig.from_dict(
        {
            "generation": {
                "mode": "all",
                "deterministic": True,
                "database": "none",
                # Fuzz as the admin: a generated Authorization header or session cookie would replace the token.
                "with-security-parameters": False,
                # Now and then any string is one known to break code that passes it on unchecked.
                "dictionaries": {
                    "string": {"dictionary": "hostile_strings", "probability": HOSTILE_STRING_PROBABILITY}
                },
            },
            "dictionaries": {
                "hostile_strings": {"values": HOSTILE_STRINGS},
                **{name: {"values": values} for name, values in known_values.items()},
            },
            "parameters": {
                "path.id": binding("ids"),
                "path.project": binding("projects"),
                "path.slug": binding("slugs"),
                "path.node_id": binding("node_ids"),
                "query.project": binding("projects"),
                "body.project": binding("projects"),
                "body.train": binding("dataset_version_ids"),
                "body.validation": binding("dataset_version_ids"),
                "body.inputs[*]": binding("dataset_version_ids"),
                "body.recipe": binding("recipes"),
                "query.recipe": binding("recipes"),
                "body.target": binding("columns"),
                "body.instance_type": binding("instance_types"),
                "query.instance_type": binding("instance_types"),
                "body.uri": binding("uris"),
                "body.dataset": binding("slugs"),
            },
        }
    )
    with _keeping_the_test_connection():
        return schemathesis.openapi.from_wsgi(
            "/api/v1/schema/?format=json", WSGIHandler(), config=config, headers=admin_headers
        )


@pytest.fixture
def call_api(
    admin_headers: dict[str, str], app_tracebacks: list[str], caplog: pytest.LogCaptureFixture
) -> Callable[[Any], Any]:
    # Thousands of expected 4xx lines would bury the report; a 5xx's traceback is in the failure message instead.
    caplog.set_level(logging.CRITICAL, logger="django.request")

    def call(case: Any) -> Any:
        app_tracebacks.clear()
        # Each call in its own savepoint, like a request in its own transaction: a crash's half-done writes go away.
        with _keeping_the_test_connection(), transaction.atomic():
            response = case.call(headers=admin_headers)
            if response.status_code >= 500:
                transaction.set_rollback(True)
        if 400 <= response.status_code < 500:
            check_error_body(case, response)
        if response.status_code >= 500:
            raise AssertionError(
                f"{case.method} {case.formatted_path} answered {response.status_code}\n\n"
                f"Reproduce with:\n    {case.as_curl_command(headers=admin_headers)}\n\n"
                + (
                    "The app raised:\n" + "\n".join(app_tracebacks)
                    if app_tracebacks
                    else f"Body: {response.text[:2000]}"
                )
            )
        return response

    return call


def check_error_body(case: Any, response: Any) -> None:
    """Every refusal is the one error body (controlplane.api_support.exception_handler), whatever refused it."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    fine = (
        isinstance(error, dict)
        and error.get("status") == response.status_code
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
        and error["message"]
    )
    if not fine:
        raise AssertionError(
            f"{case.method} {case.formatted_path} answered {response.status_code} without the standard error body: "
            f"{response.text[:500]}\n\nReproduce with:\n    {case.as_curl_command()}"
        )


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # The fixtures are function-scoped on purpose (one transaction for the run); a slow example is not a bug here.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
def test_no_input_gets_a_server_error(case: Any, call_api: Callable[[Any], Any]) -> None:
    call_api(case)


# Sequences of calls chained by their answers (schemathesis' stateful phase): scenarios, and steps in each.
STATEFUL_SCENARIOS = int(os.environ.get("FUZZ_STATEFUL_SCENARIOS", "30"))
STATEFUL_STEPS = 6


@pytest.mark.django_db
def test_calls_chained_by_their_answers_get_no_server_error(api_schema: Any, call_api: Callable[[Any], Any]) -> None:
    """Stateful fuzzing: schemathesis links the operations whose answers feed others (inferred from the schema: a
    created run's `id` to GET/POST `/runs/{id}/…`, a project's `slug` to its members, …) and runs random sequences of
    them, each call checked as above (no 5xx, every refusal the one error body)."""
    machine = api_schema.as_state_machine()
    links = sorted(
        f"{link.source.label} -> {link.target.label}"
        for transitions in machine._transitions.operations.values()
        for link in transitions.outgoing
    )
    # The chains the deeper checks need, inferred without links declared in the schema.
    for chain in (
        "POST /api/v1/projects/ -> POST /api/v1/projects/{slug}/members/",
        "POST /api/v1/dataset-versions/ -> GET /api/v1/dataset-versions/{id}/profile/",
        "GET /api/v1/runs/ -> POST /api/v1/runs/{id}/stop/",
        "GET /api/v1/approval-requests/ -> POST /api/v1/approval-requests/{id}/decisions/",
    ):
        assert chain in links, (chain, links)

    class Workflow(machine):  # type: ignore[misc, valid-type]
        """Each scenario starts from the same database: what it wrote is rolled back at its end (Hypothesis replays
        scenarios, and one that found what an earlier one left behind would draw differently)."""

        def setup(self) -> None:
            self.scenario = transaction.atomic()
            self.scenario.__enter__()

        def teardown(self) -> None:
            transaction.set_rollback(True)
            self.scenario.__exit__(None, None, None)

        def call(self, case: Any, **kwargs: Any) -> Any:
            return call_api(case)

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            """Checked in call_api: the schema's status codes are not, as in the test above."""

    Workflow.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
