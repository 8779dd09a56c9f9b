"""Access by project in lineage: a restricted project's datasets, runs and models are visible and actionable only to
its members and admins; to anyone else they answer 404 as missing ones do, are in no list, and the lineage walk
stops at them and says how many it left out."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from controlplane import permissions
from controlplane import services as controlplane_services
from controlplane.models import AuditEvent
from lineage import services
from lineage.models import Dataset, DatasetProfile, DatasetRegistration, DatasetVersion, LineageEdge, Run, RunInput
from tests.fixtures.history import make_history
from tests.fixtures.roles import make_user

pytestmark = pytest.mark.django_db


def _version(project: Any, slug: str, user: Any, produced_by: Run | None = None) -> DatasetVersion:
    dataset = Dataset.objects.create(project=project, name=slug, slug=slug, created_by=user)
    version = DatasetVersion.objects.create(
        dataset=dataset,
        number=1,
        sha256=hashlib.sha256(slug.encode()).hexdigest(),
        uri=f"file:///objects/{slug}.csv",
        storage_key=f"datasets/{slug}.csv",
        size=10,
        format="csv",
        content_format="csv",
        columns=["a", "target"],
        row_count=2,
        source="run" if produced_by else "upload",
        source_uri=f"run:{produced_by.pk}/out" if produced_by else "",
        produced_by=produced_by,
        created_by=user,
    )
    DatasetProfile.objects.create(version=version)
    return version


def _run(project: Any, user: Any, *inputs: DatasetVersion) -> Run:
    run = Run.objects.create(
        project=project,
        kind="transform",
        recipe="clean_missing",
        recipe_version="1",
        recipe_fingerprint="f" * 64,
        parameters={},
        status="succeeded",
        backend="local",
        created_by=user,
    )
    for index, version in enumerate(inputs):
        RunInput.objects.create(run=run, dataset_version=version, channel=f"input{index}")
        LineageEdge.objects.create(source=version.node_id, target=run.node_id)
    return run


@pytest.fixture
def world(users: Any, tmp_path: Path) -> dict[str, Any]:
    """The restricted project "penguins" (a dataset version, the run that trained on it, its model version), with
    dana a member; the open project "open", whose dataset version feeds a run there and, as imported lineage may, a
    run of penguins; the open run also read a penguins version."""
    history = make_history(users, tmp_path)
    penguins = history["run"].project
    controlplane_services.project_member_set(
        actor=users.admin, project=penguins, username=users.data_scientist.username, role="member"
    )
    penguins = controlplane_services.project_restrict(actor=users.admin, project=penguins, restricted=True)
    open_project = controlplane_services.project_create(actor=users.admin, name="Open", slug="open")
    raw = _version(open_project, "raw", users.data_scientist)
    open_run = _run(open_project, users.data_scientist, raw, history["version"])
    hidden_run = _run(penguins, users.data_scientist, raw)
    registration = DatasetRegistration.objects.create(
        project=penguins,
        dataset_slug="more-penguins",
        dataset_name="more-penguins",
        source_uri="file:///data/more.csv",
        created_by=users.data_scientist,
    )
    return {
        **history,
        "penguins": penguins,
        "raw": raw,
        "open_run": open_run,
        "hidden_run": hidden_run,
        "registration": registration,
        "nina": make_user("nina", permissions.DATA_SCIENTIST),
    }


def _pages(world: dict[str, Any]) -> list[str]:
    version, run, model_version = world["version"], world["run"], world["model_version"]
    model = model_version.registered_model
    return [
        reverse("dataset-detail", args=["penguins", "penguins"]),
        reverse("dataset-version-detail", args=["penguins", "penguins", 1]),
        reverse("dataset-registration-detail", args=[world["registration"].pk]),
        reverse("run-detail", args=[run.pk]),
        reverse("model-detail", args=["penguins", model.slug]),
        reverse("model-version-detail", args=["penguins", model.slug, 1]),
        reverse("lineage", args=[run.node_id]),
        reverse("lineage", args=[model_version.node_id]),
        reverse("lineage-openlineage", args=[version.node_id]),
    ]


def _launch_pages(world: dict[str, Any]) -> list[str]:
    version = world["version"]
    return [
        reverse("transform-create") + f"?input={version.pk}",
        reverse("training-create") + f"?train={version.pk}",
    ]


def _api(world: dict[str, Any]) -> list[str]:
    version, run, model_version = world["version"], world["run"], world["model_version"]
    model = model_version.registered_model
    return [
        reverse("api-dataset-detail", args=["penguins", "penguins"]),
        reverse("api-dataset-version-list", args=["penguins", "penguins"]),
        reverse("api-dataset-version-detail", args=[version.pk]),
        reverse("api-dataset-version-profile", args=[version.pk]),
        reverse("api-dataset-version-download", args=[version.pk]),
        reverse("api-dataset-registration-detail", args=[world["registration"].pk]),
        reverse("api-run-detail", args=[run.pk]),
        reverse("api-run-logs", args=[run.pk]),
        reverse("api-run-metrics", args=[run.pk]),
        reverse("api-model-version-list", args=["penguins", model.slug]),
        reverse("api-model-version-detail", args=[model_version.pk]),
        reverse("api-lineage", args=[run.node_id]),
        reverse("api-lineage-openlineage", args=[model_version.node_id]),
    ]


def test_a_non_member_and_finance_get_404_as_for_missing_objects(client, users, world, api_client_for) -> None:
    for outsider in (world["nina"], users.finance):
        client.force_login(outsider)
        api = api_client_for(outsider)
        for url in _pages(world):
            assert client.get(url).status_code == 404, url
        for url in _launch_pages(world):
            # Finance may not launch at all (403, the role); nina may, but not from data she cannot see.
            assert client.get(url).status_code == (404 if outsider == world["nina"] else 403), url
        for url in _api(world):
            response = api.get(url)
            assert response.status_code == 404, url
            assert "penguins" not in response.content.decode().replace(url, ""), url
    # Acting on an object they cannot see is the same 404, before anything happens.
    api = api_client_for(world["nina"])
    run = world["run"]
    assert api.post(reverse("api-run-stop", args=[run.pk])).status_code == 404
    assert api.post(reverse("api-run-reproduce", args=[run.pk])).status_code == 404
    assert api.patch(reverse("api-dataset-version-detail", args=[world["version"].pk]), {}).status_code == 404
    client.force_login(world["nina"])
    assert client.post(reverse("run-stop", args=[run.pk])).status_code == 404
    assert client.post(reverse("run-reproduce", args=[run.pk])).status_code == 404
    assert Run.objects.count() == 3 and not AuditEvent.objects.filter(action="dataset_version.change_refused")


def test_the_member_and_an_admin_see_everything(client, users, world, api_client_for) -> None:
    for insider in (users.data_scientist, users.admin):
        client.force_login(insider)
        for url in _pages(world) + _launch_pages(world):
            assert client.get(url).status_code == 200, url
        api = api_client_for(insider)
        for url in _api(world):
            assert api.get(url).status_code == 200, url
        assert {d["slug"] for d in api.get(reverse("api-dataset-list")).json()["results"]} == {"penguins", "raw"}


def test_lists_and_search_leave_the_restricted_project_out(client, users, world, api_client_for) -> None:
    api = api_client_for(world["nina"])
    datasets = api.get(reverse("api-dataset-list")).json()["results"]
    assert [d["slug"] for d in datasets] == ["raw"]
    assert api.get(reverse("api-dataset-list"), {"q": "penguins"}).json()["results"] == []
    # Filtering by the restricted project is refused as filtering by one that does not exist: a filter cannot tell
    # her it is there. Its members filter by it as by any other.
    for name in ("api-dataset-list", "api-run-list", "api-model-list", "api-service-list"):
        hidden, missing = (api.get(reverse(name), {"project": slug}) for slug in ("penguins", "no-such"))
        assert hidden.status_code == missing.status_code == 400, name
        assert hidden.json()["error"]["fields"] == {"project": ["there is no project 'penguins'"]}, name
        assert missing.json()["error"]["fields"] == {"project": ["there is no project 'no-such'"]}, name
    member = api_client_for(users.data_scientist).get(reverse("api-dataset-list"), {"project": "penguins"})
    assert member.status_code == 200 and [d["slug"] for d in member.json()["results"]] == ["penguins"]
    assert {r["id"] for r in api.get(reverse("api-run-list")).json()["results"]} == {world["open_run"].pk}
    assert api.get(reverse("api-model-list")).json()["results"] == []
    client.force_login(world["nina"])
    for url in (reverse("dataset-list") + "?q=penguin", reverse("run-list"), reverse("model-list")):
        page = client.get(url).content.decode()
        assert "penguins" not in page, url
    # What the register form offers: the projects she may register into.
    register = client.get(reverse("dataset-register")).content.decode()
    assert 'value="open"' in register and 'value="penguins"' not in register
    compare = client.get(reverse("run-compare"), {"run": [world["run"].pk, world["open_run"].pk]})
    assert compare.status_code == 302  # one run she may see is not two to compare
    # The open version's page lists the run of the open project that read it, not the restricted one.
    page = client.get(reverse("dataset-version-detail", args=["open", "raw", 1])).content.decode()
    assert f"run {world['open_run'].pk} (" in page and f"run {world['hidden_run'].pk} (" not in page


def test_a_non_member_may_not_register_or_launch_into_the_project(client, users, world, api_client_for) -> None:
    nina, version = world["nina"], world["version"]
    api = api_client_for(nina)
    upload = api.post(
        reverse("api-dataset-version-upload"),
        {"project": "penguins", "dataset": "sneaky", "file": SimpleUploadedFile("x.csv", b"a,b\n1,2\n")},
        format="multipart",
    )
    assert upload.status_code == 403
    assert upload.json()["error"]["message"] == "project 'penguins' is restricted to its members"
    registration = api.post(
        reverse("api-dataset-registration-create"),
        {"project": "penguins", "dataset": "sneaky", "uri": "file:///data/x.csv"},
        format="json",
    )
    assert registration.status_code == 403
    # The register page does not offer the project; posting it anyway is an invalid choice, nothing stored.
    client.force_login(nina)
    page = client.post(
        reverse("dataset-register"),
        {"project": "penguins", "dataset": "sneaky", "file": SimpleUploadedFile("x.csv", b"a,b\n1,2\n")},
    )
    assert page.status_code == 400 and not Dataset.objects.filter(slug="sneaky").exists()
    # Through the API a restricted input is a missing one; the services refuse outright.
    training = api.post(
        reverse("api-run-training-create"),
        {"recipe": "random_forest", "train": version.pk, "target": "species"},
        format="json",
    )
    assert training.status_code == 400 and training.json()["error"]["fields"]["train"] == [
        f"no dataset version with id {version.pk}"
    ]
    # As a page or the API would load them, with the project as it is now (restricted).
    version = DatasetVersion.objects.select_related("dataset__project", "profile").get(pk=version.pk)
    run = Run.objects.select_related("project").get(pk=world["run"].pk)
    with pytest.raises(PermissionDenied, match="restricted"):
        services.training_run_launch(actor=nina, recipe="random_forest", train=version, target="species")
    with pytest.raises(PermissionDenied, match="restricted"):
        services.transform_run_launch(actor=nina, inputs=[version], recipe="clean_missing", parameters={})
    with pytest.raises(PermissionDenied, match="restricted"):
        services.run_stop(actor=nina, run=run)
    with pytest.raises(PermissionDenied, match="restricted"):
        services.run_reproduce(actor=nina, run=run)
    assert Run.objects.count() == 3 and not DatasetRegistration.objects.filter(dataset_slug="sneaky").exists()


def test_the_lineage_walk_stops_at_the_restricted_project_and_says_so(client, users, world, api_client_for) -> None:
    raw, open_run, hidden_run = world["raw"], world["open_run"], world["hidden_run"]
    api = api_client_for(world["nina"])
    body = api.get(reverse("api-lineage", args=[raw.node_id])).json()
    assert {n["id"] for n in body["nodes"]} == {raw.node_id, open_run.node_id}
    assert body["edges"] == [{"source": raw.node_id, "target": open_run.node_id}]
    assert body["restricted"] == 1
    # Upstream too: the open run read a penguins version, not shown.
    upstream = api.get(reverse("api-lineage", args=[open_run.node_id])).json()
    assert {n["id"] for n in upstream["nodes"]} == {raw.node_id, open_run.node_id} and upstream["restricted"] == 1
    client.force_login(world["nina"])
    page = client.get(reverse("lineage", args=[raw.node_id])).content.decode()
    assert "1 node in projects you cannot see is not shown" in page
    assert hidden_run.node_id not in page and world["version"].node_id not in page
    # The member sees the whole graph, and no notice.
    member = api_client_for(users.data_scientist).get(reverse("api-lineage", args=[raw.node_id])).json()
    assert {n["id"] for n in member["nodes"]} == {
        raw.node_id,
        open_run.node_id,
        hidden_run.node_id,
    }
    assert member["restricted"] == 0
    client.force_login(users.data_scientist)
    assert "cannot see" not in client.get(reverse("lineage", args=[raw.node_id])).content.decode()


def test_a_run_s_links_and_a_version_s_producer_in_the_restricted_project_are_not_shown(
    client, users, world, api_client_for
) -> None:
    """Lineage that crossed projects: the open run read a penguins version and made one there, and an open version was
    made by a penguins run. An outsider's API answers leave those out (as the pages do); the member's show them."""
    raw, open_run, hidden_run, hidden_input = world["raw"], world["open_run"], world["hidden_run"], world["version"]
    made_here = _version(world["penguins"], "made-here", users.data_scientist, produced_by=open_run)
    made_there = _version(open_run.project, "made-there", users.data_scientist, produced_by=hidden_run)
    for who, sees in ((world["nina"], False), (users.data_scientist, True), (users.admin, True)):
        api = api_client_for(who)
        run = api.get(reverse("api-run-detail", args=[open_run.pk])).json()
        listed = next(r for r in api.get(reverse("api-run-list")).json()["results"] if r["id"] == open_run.pk)
        for answer in (run, listed):
            inputs = {i["dataset_version"] for i in answer["inputs"]}
            assert inputs == ({raw.pk, hidden_input.pk} if sees else {raw.pk}), (who, answer["inputs"])
            assert answer["outputs"] == ([made_here.pk] if sees else []), (who, answer["outputs"])
        version = api.get(reverse("api-dataset-version-detail", args=[made_there.pk])).json()
        listing = api.get(reverse("api-dataset-version-list", args=["open", "made-there"])).json()["results"]
        for answer in (version, *listing):
            assert answer["produced_by"] == (hidden_run.pk if sees else None), (who, answer)
            assert answer["source_uri"] == (f"run:{hidden_run.pk}/out" if sees else ""), (who, answer)
        client.force_login(who)
        for page in (
            reverse("dataset-detail", args=["open", "made-there"]),
            reverse("dataset-version-detail", args=["open", "made-there", 1]),
        ):
            html = client.get(page).content.decode()
            assert (f"run {hidden_run.pk}<" in html) == sees, (who, page)
        # The version page's source location names the run too.
        assert (f"run:{hidden_run.pk}/out" in html) == sees, who


def test_openlineage_export_leaves_out_runs_and_datasets_of_the_restricted_project(
    users, world, api_client_for
) -> None:
    raw = world["raw"]
    events = api_client_for(world["nina"]).get(reverse("api-lineage-openlineage", args=[raw.node_id])).json()
    assert [e["run"]["runId"] for e in events] == [str(world["open_run"].uuid)]
    (event,) = events
    assert [i["name"] for i in event["inputs"]] == ["/objects/raw.csv"]
    assert event["run"]["facets"]["controlplane_hidden"]["inputs"] == 1
    member = api_client_for(users.data_scientist).get(reverse("api-lineage-openlineage", args=[raw.node_id])).json()
    assert {e["run"]["runId"] for e in member} == {str(world["open_run"].uuid), str(world["hidden_run"].uuid)}
    assert all("controlplane_hidden" not in e["run"]["facets"] for e in member)


def test_audit_events_of_lineage_objects_carry_their_project(users, world, api_client_for) -> None:
    response = api_client_for(users.data_scientist).delete(
        reverse("api-dataset-version-detail", args=[world["version"].pk])
    )
    assert response.status_code == 409
    assert AuditEvent.objects.get(action="dataset_version.change_refused").project == "penguins"
    upload = api_client_for(users.data_scientist).post(
        reverse("api-dataset-version-upload"),
        {"project": "penguins", "dataset": "small", "file": SimpleUploadedFile("small.csv", b"a,b\n1,2\n3,4\n")},
        format="multipart",
    )
    assert upload.status_code == 201
    assert set(
        AuditEvent.objects.filter(action__in=["dataset.create", "dataset_version.create"]).values_list(
            "project", flat=True
        )
    ) == {"penguins"}


def test_someone_taken_off_the_project_loses_their_own_runs_and_its_notices(users, world) -> None:
    from lineage import selectors

    nina, penguins = world["nina"], world["penguins"]
    theirs = _run(penguins, nina, world["version"])  # launched while she was a member
    assert selectors.runs_of(user=nina, limit=10) == []
    assert nina not in selectors.project_data_scientists(penguins)
    assert users.data_scientist in selectors.project_data_scientists(penguins)
    controlplane_services.project_member_set(actor=users.admin, project=penguins, username="nina", role="member")
    assert [run.pk for run in selectors.runs_of(user=nina, limit=10)] == [theirs.pk]
    assert nina in selectors.project_data_scientists(penguins)
