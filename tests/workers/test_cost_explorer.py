"""The Cost Explorer source: GetCostAndUsage through moto's server over real HTTP, GetCostForecast (which moto lacks)
and the error answers through botocore's Stubber. Every request the source makes is also walked against botocore's
service model, since moto takes anything.

What moto 5.2 does with GetCostAndUsage: it validates nothing and tracks no cost; each request body takes the next
result queued by POST /moto-api/static/ce/cost-and-usage-results ({"results": [...]}) and keeps it (the same body
asked again gets the same answer, another body the next result, or an empty answer once the queue is empty). So the
results are queued in the order the source asks: project, model, object, each breakdown's pages in turn.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient
from botocore.model import Shape
from botocore.stub import Stubber

from tests.fixtures.costs import queue_cost_and_usage as queue
from workers import aws
from workers.costs.base import CostLine, CostPull, CostSource, Forecast, ForecastPoint
from workers.costs.cost_explorer import (
    CostExplorerSource,
    cost_explorer_region,
    earliest_day,
)
from workers.errors import BackendError

TODAY = date(2026, 11, 20)
NOV_1, NOV_2, NOV_3 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)


# --- helpers ---------------------------------------------------------------------------------------------------------


def group(first: str, second: str, amount: str) -> dict[str, Any]:
    return {"Keys": [first, second], "Metrics": {"UnblendedCost": {"Amount": amount, "Unit": "USD"}}}


def day(start: date, end: date, groups: list[dict[str, Any]], *, estimated: bool = False) -> dict[str, Any]:
    return {
        "TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()},
        "Total": {},
        "Groups": groups,
        "Estimated": estimated,
    }


def page(*days: dict[str, Any], token: str = "") -> dict[str, Any]:
    result: dict[str, Any] = {"ResultsByTime": list(days), "DimensionValueAttributes": []}
    if token:
        result["NextPageToken"] = token
    return result


def model_problems(shape: Shape, value: Any, path: str) -> list[str]:
    """What in a request the service model does not take: unknown or missing members, values outside an enum, a
    range, a length or a pattern (botocore's own validation checks neither enums, maxima nor patterns)."""
    problems: list[str] = []
    meta = shape.metadata
    if shape.type_name == "structure":
        problems += [f"{path}.{key} is not in the model" for key in value if key not in shape.members]  # type: ignore[attr-defined]
        problems += [f"{path}.{key} is required" for key in shape.required_members if key not in value]  # type: ignore[attr-defined]
        for key, item in value.items():
            if key in shape.members:  # type: ignore[attr-defined]
                problems += model_problems(shape.members[key], item, f"{path}.{key}")  # type: ignore[attr-defined]
        return problems
    if shape.type_name == "list":
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{path} has {len(value)} items, more than {meta['max']}")
        return problems + [
            p
            for i, item in enumerate(value)
            for p in model_problems(shape.member, item, f"{path}[{i}]")  # type: ignore[attr-defined]
        ]
    if shape.type_name == "map":
        return [p for key, item in value.items() for p in model_problems(shape.value, item, f"{path}[{key}]")]  # type: ignore[attr-defined]
    if shape.type_name == "string":
        if shape.enum and value not in shape.enum:  # type: ignore[attr-defined]
            problems.append(f"{path}={value!r} is not one of {shape.enum}")  # type: ignore[attr-defined]
        if not meta.get("min", 0) <= len(value) <= meta.get("max", len(value)):
            problems.append(f"{path}={value!r} is not {meta.get('min', 0)}..{meta.get('max')} characters")
        if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
            problems.append(f"{path}={value!r} does not match {meta['pattern']}")
    if shape.type_name == "integer" and not meta.get("min", value) <= value <= meta.get("max", value):
        problems.append(f"{path}={value!r} is outside {meta.get('min')}..{meta.get('max')}")
    return problems


def request_problems(client: BaseClient, operation: str, params: dict[str, Any]) -> list[str]:
    shape = client.meta.service_model.operation_model(operation).input_shape
    problems = model_problems(shape, params, operation)
    if operation == "GetCostAndUsage" and len(params.get("GroupBy", [])) > 2:
        problems.append("GetCostAndUsage groups by at most two keys")  # the documented limit, not in the model
    return problems


_RECORDER = "test-cost-explorer-record"


def record(client: BaseClient) -> list[tuple[str, dict[str, Any]]]:
    """Every (operation, parameters) the client is asked for from now on, before anything is sent."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def keep(params: dict[str, Any], model: Any, **_: Any) -> None:
        seen.append((model.name, json.loads(json.dumps(params))))

    client.meta.events.register("provide-client-params.ce", keep, unique_id=_RECORDER)
    return seen


@pytest.fixture
def source(aws_env: str) -> Iterator[CostExplorerSource]:
    """The source as production builds it (its client from workers.aws, pointed at moto by the environment), in a
    region that is not Cost Explorer's, on a fixed day."""
    built = CostExplorerSource(region="eu-west-1", today=lambda: TODAY)
    yield built
    # The client is shared (workers.aws caches it): the next test records afresh.
    built.client.meta.events.unregister("provide-client-params.ce", unique_id=_RECORDER)


@pytest.fixture(scope="module")
def ce_client() -> BaseClient:
    """A Cost Explorer client of its own for the Stubber (building one parses the service model)."""
    return boto3.session.Session(
        region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    ).client("ce", endpoint_url="http://127.0.0.1:9", config=aws.CLIENT_CONFIG)


@pytest.fixture
def stubbed(ce_client: BaseClient) -> Iterator[tuple[CostExplorerSource, Stubber]]:
    with Stubber(ce_client) as stubber:
        yield CostExplorerSource(region="eu-west-1", client=ce_client, today=lambda: TODAY), stubber
        stubber.assert_no_pending_responses()


def error(stubber: Stubber, operation: str, code: str, message: str, status: int = 400) -> None:
    stubber.add_client_error(operation, service_error_code=code, service_message=message, http_status_code=status)


# --- the client -----------------------------------------------------------------------------------------------------


def test_the_source_is_a_cost_source(source: CostExplorerSource) -> None:
    assert isinstance(source, CostSource)
    assert source.name == "cost_explorer"


class _Sent(Exception):
    """Raised instead of sending: the request never leaves the process."""


def test_the_client_is_signed_for_us_east_1_whatever_the_region(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    built = CostExplorerSource(region="ap-southeast-2", today=lambda: TODAY)
    sent: list[tuple[str, str]] = []

    def stop(request: Any, **_: Any) -> None:
        sent.append((request.url, request.headers["Authorization"].decode()))
        raise _Sent

    built.client.meta.events.register("before-send.ce", stop, unique_id="test-stop")
    try:
        with pytest.raises(_Sent):
            built.daily_costs(NOV_1, NOV_2)
    finally:
        built.client.meta.events.unregister("before-send.ce", unique_id="test-stop")

    ((url, authorization),) = sent
    assert url == "https://ce.us-east-1.amazonaws.com/"
    assert "/us-east-1/ce/aws4_request" in authorization
    # botocore's endpoint data: one Cost Explorer endpoint per partition, regional only in GovCloud.
    assert [cost_explorer_region(r) for r in ("eu-west-1", "us-east-1", "cn-north-1", "us-gov-west-1")] == [
        "us-east-1",
        "us-east-1",
        "cn-northwest-1",
        "us-gov-west-1",
    ]


def test_an_endpoint_url_is_used_as_given(moto_server: str) -> None:
    built = CostExplorerSource(region="eu-central-1", endpoint_url=moto_server)
    assert (built.client.meta.endpoint_url, built.client.meta.region_name) == (moto_server, "us-east-1")


def test_tag_keys_other_than_five_names_are_refused() -> None:
    with pytest.raises(ValueError, match="tag_keys"):
        CostExplorerSource(region="us-east-1", tag_keys=("project", "model"), client=object())  # type: ignore[arg-type]


# --- daily costs through moto ------------------------------------------------------------------------------------


def test_daily_costs_pull_each_breakdown_once_and_parse_tags_services_and_untagged_costs(
    source: CostExplorerSource, aws_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    queue(
        aws_env,
        page(
            day(
                NOV_1,
                NOV_2,
                [
                    group("project$churn", "Amazon SageMaker", "1.2500000000"),
                    group("project$churn", "Amazon Elastic Container Service", "0.3"),
                    group("project$", "Amazon Simple Storage Service", "0.0101516483"),
                ],
            ),
            day(NOV_2, NOV_3, [group("project$churn", "Amazon SageMaker", "2")], estimated=True),
        ),
        page(
            day(NOV_1, NOV_2, [group("model$churn-classifier", "environment$production", "0.3")]),
            day(NOV_2, NOV_3, [group("model$churn-classifier", "environment$", "2")], estimated=True),
        ),
        page(
            day(NOV_1, NOV_2, [group("run$41", "deployment$", "1.25"), group("run$", "deployment$7", "0.3")]),
            day(NOV_2, NOV_3, [], estimated=True),
        ),
    )
    asked = record(source.client)

    with caplog.at_level(logging.INFO, logger="workers.costs"):
        pull = source.daily_costs(NOV_1, NOV_3)

    assert pull == CostPull(
        start=NOV_1,
        end=NOV_3,
        lines=[
            CostLine(NOV_1, "project", Decimal("1.2500000000"), project="churn", aws_service="Amazon SageMaker"),
            CostLine(NOV_1, "project", Decimal("0.3"), project="churn", aws_service="Amazon Elastic Container Service"),
            CostLine(NOV_1, "project", Decimal("0.0101516483"), aws_service="Amazon Simple Storage Service"),
            CostLine(NOV_2, "project", Decimal("2"), project="churn", aws_service="Amazon SageMaker", estimated=True),
            CostLine(NOV_1, "model", Decimal("0.3"), model="churn-classifier", environment="production"),
            CostLine(NOV_2, "model", Decimal("2"), model="churn-classifier", estimated=True),
            CostLine(NOV_1, "object", Decimal("1.25"), run="41"),
            CostLine(NOV_1, "object", Decimal("0.3"), deployment="7"),
        ],
        days=[NOV_1, NOV_2],
        calls=3,
    )
    period = {"Start": "2026-11-01", "End": "2026-11-03"}
    common = {"TimePeriod": period, "Granularity": "DAILY", "Metrics": ["UnblendedCost"]}
    assert asked == [
        (
            "GetCostAndUsage",
            {**common, "GroupBy": [{"Type": "TAG", "Key": "project"}, {"Type": "DIMENSION", "Key": "SERVICE"}]},
        ),
        (
            "GetCostAndUsage",
            {**common, "GroupBy": [{"Type": "TAG", "Key": "model"}, {"Type": "TAG", "Key": "environment"}]},
        ),
        (
            "GetCostAndUsage",
            {**common, "GroupBy": [{"Type": "TAG", "Key": "run"}, {"Type": "TAG", "Key": "deployment"}]},
        ),
    ]
    assert [r.getMessage() for r in caplog.records if r.name == "workers.costs"] == [
        "Cost Explorer: 3 GetCostAndUsage calls for 2026-11-01..2026-11-03 gave 8 lines over 2 days"
    ]


def test_each_breakdown_follows_next_page_token_until_there_is_none(
    source: CostExplorerSource, aws_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    queue(
        aws_env,
        page(day(NOV_1, NOV_2, [group("project$churn", "Amazon SageMaker", "1")]), token="p2"),
        page(day(NOV_1, NOV_2, [group("project$fraud", "Amazon SageMaker", "2")]), token="p3"),
        page(day(NOV_2, NOV_3, [group("project$churn", "Amazon SageMaker", "3")])),
        page(day(NOV_1, NOV_2, []), day(NOV_2, NOV_3, [])),
        page(day(NOV_1, NOV_2, [group("run$41", "deployment$", "1")]), token="o2"),
        page(day(NOV_2, NOV_3, [group("run$42", "deployment$", "3")])),
    )
    asked = record(source.client)

    with caplog.at_level(logging.INFO, logger="workers.costs"):
        pull = source.daily_costs(NOV_1, NOV_3)

    tokens = [(params["GroupBy"][0]["Key"], params.get("NextPageToken")) for _, params in asked]
    assert tokens == [
        ("project", None),
        ("project", "p2"),
        ("project", "p3"),
        ("model", None),
        ("run", None),
        ("run", "o2"),
    ]
    assert pull.calls == 6
    assert [(line.breakdown, line.day, line.project or line.run, line.amount) for line in pull.lines] == [
        ("project", NOV_1, "churn", Decimal("1")),
        ("project", NOV_1, "fraud", Decimal("2")),
        ("project", NOV_2, "churn", Decimal("3")),
        ("object", NOV_1, "41", Decimal("1")),
        ("object", NOV_2, "42", Decimal("3")),
    ]
    assert pull.days == [NOV_1, NOV_2]
    assert "6 GetCostAndUsage calls" in caplog.text and "5 lines over 2 days" in caplog.text


def test_the_estimated_flag_is_each_days_own(source: CostExplorerSource, aws_env: str) -> None:
    days = [
        day(NOV_1, NOV_2, [group("project$churn", "Amazon SageMaker", "1")], estimated=False),
        day(NOV_2, NOV_3, [group("project$churn", "Amazon SageMaker", "1")], estimated=True),
    ]
    queue(aws_env, page(*days), page(), page())

    pull = source.daily_costs(NOV_1, NOV_3)

    assert [(line.day, line.estimated) for line in pull.lines] == [(NOV_1, False), (NOV_2, True)]


def test_days_without_spend_are_still_days_the_bill_answered(source: CostExplorerSource, aws_env: str) -> None:
    queue(aws_env, page(day(NOV_1, NOV_2, [])), page(day(NOV_1, NOV_2, [])), page(day(NOV_1, NOV_2, [])))

    pull = source.daily_costs(NOV_1, NOV_2)

    assert (pull.lines, pull.days, pull.calls) == ([], [NOV_1], 3)


def test_an_empty_range_makes_no_call(source: CostExplorerSource, caplog: pytest.LogCaptureFixture) -> None:
    asked = record(source.client)

    with caplog.at_level(logging.INFO, logger="workers.costs"):
        pull = source.daily_costs(NOV_2, NOV_2)
        future = source.daily_costs(date(2026, 11, 25), date(2026, 12, 1))  # nothing billed after today yet

    assert pull == CostPull(start=NOV_2, end=NOV_2, lines=[], days=[], calls=0)
    assert (future.lines, future.calls, future.start, future.end) == ([], 0, date(2026, 11, 25), date(2026, 11, 25))
    assert asked == []
    assert "0 GetCostAndUsage calls for 2026-11-02..2026-11-02 gave 0 lines over 0 days" in caplog.text


def test_an_end_before_the_start_is_refused_naming_both(source: CostExplorerSource) -> None:
    asked = record(source.client)
    with pytest.raises(ValueError, match=r"end \(2026-11-01\) is before start \(2026-11-02\)"):
        source.daily_costs(NOV_2, NOV_1)
    assert asked == []


def test_the_range_is_clamped_to_the_fourteen_months_cost_explorer_keeps_and_to_today(
    source: CostExplorerSource, aws_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert earliest_day(TODAY) == date(2025, 10, 1)  # November 2026 and the 13 months before it
    assert earliest_day(date(2026, 1, 31)) == date(2024, 12, 1)
    asked = record(source.client)

    with caplog.at_level(logging.WARNING, logger="workers.costs"):
        pull = source.daily_costs(date(2024, 1, 1), date(2027, 1, 1))
        older = source.daily_costs(date(2024, 1, 1), date(2025, 1, 1))

    assert (pull.start, pull.end) == (date(2025, 10, 1), date(2026, 11, 21))
    assert {params["TimePeriod"]["Start"] for _, params in asked} == {"2025-10-01"}
    assert {params["TimePeriod"]["End"] for _, params in asked} == {"2026-11-21"}
    assert len(asked) == 3
    assert (older.calls, older.lines, older.start, older.end) == (0, [], date(2025, 10, 1), date(2025, 10, 1))
    assert "Cost Explorer keeps 14 months: costs before 2025-10-01 are not asked for" in caplog.text


def test_every_request_the_source_makes_is_one_the_service_model_takes(
    source: CostExplorerSource, aws_env: str, ce_client: BaseClient
) -> None:
    queue(aws_env, page(day(NOV_1, NOV_2, []), token="next"), page(day(NOV_2, NOV_3, [])))
    asked = record(source.client)
    source.daily_costs(NOV_1, NOV_3)
    forecasts = [
        source.forecast_request(TODAY, date(2026, 12, 1), level=80),
        source.forecast_request(TODAY, date(2026, 12, 1), level=99, project="churn"),
        source.forecast_request(TODAY, date(2026, 12, 1), level=51),
    ]

    assert len(asked) == 4
    problems = [p for operation, params in asked for p in request_problems(ce_client, operation, params)]
    problems += [p for params in forecasts for p in request_problems(ce_client, "GetCostForecast", params)]
    assert problems == []
    # The walk finds what is wrong: the check can fail.
    bad = {**forecasts[0], "PredictionIntervalLevel": 50, "Granularity": "WEEKLY", "TimePeriod": {"Start": "Nov 1"}}
    assert len(request_problems(ce_client, "GetCostForecast", bad)) == 4


# --- errors and the forecast through the Stubber -----------------------------------------------------------------


def usage_request(source: CostExplorerSource, breakdown: str, start: date, end: date) -> dict[str, Any]:
    return source.usage_request(breakdown, start, end)


def test_throttling_is_retryable_and_an_expired_bill_is_not(stubbed: tuple[CostExplorerSource, Stubber]) -> None:
    source, stubber = stubbed
    error(stubber, "get_cost_and_usage", "LimitExceededException", "You made too many calls in a short period")
    with pytest.raises(BackendError) as throttled:
        source.daily_costs(NOV_1, NOV_3)
    assert throttled.value.permanent is False
    assert "project costs for 2026-11-01..2026-11-03" in throttled.value.message
    assert "LimitExceededException" in throttled.value.message

    stubber.add_response(
        "get_cost_and_usage", page(day(NOV_1, NOV_2, [])), usage_request(source, "project", NOV_1, NOV_3)
    )
    error(stubber, "get_cost_and_usage", "BillExpirationException", "The requested report expired")
    with pytest.raises(BackendError) as expired:
        source.daily_costs(NOV_1, NOV_3)
    assert expired.value.permanent is True and "model costs" in expired.value.message


def test_a_refused_start_is_a_permanent_error(stubbed: tuple[CostExplorerSource, Stubber]) -> None:
    source, stubber = stubbed
    error(stubber, "get_cost_and_usage", "ValidationException", "start date is too old")
    with pytest.raises(BackendError) as refused:
        source.daily_costs(NOV_1, NOV_3)
    assert refused.value.permanent is True and "start date is too old" in refused.value.message


def forecast_answer() -> dict[str, Any]:
    return {
        "Total": {"Amount": "61.5", "Unit": "USD"},
        "ForecastResultsByTime": [
            {
                "TimePeriod": {"Start": f"2026-11-{d}", "End": f"2026-11-{d + 1}"},
                "MeanValue": f"{d - 10}.5",
                "PredictionIntervalLowerBound": f"{d - 12}.0",
                "PredictionIntervalUpperBound": f"{d - 8}.25",
            }
            for d in (20, 21, 22)
        ],
    }


def test_a_forecast_has_its_total_and_each_days_band(
    stubbed: tuple[CostExplorerSource, Stubber], caplog: pytest.LogCaptureFixture
) -> None:
    source, stubber = stubbed
    stubber.add_response(
        "get_cost_forecast",
        forecast_answer(),
        {
            "TimePeriod": {"Start": "2026-11-20", "End": "2026-11-23"},
            "Metric": "UNBLENDED_COST",
            "Granularity": "DAILY",
            "PredictionIntervalLevel": 90,
        },
    )

    with caplog.at_level(logging.INFO, logger="workers.costs"):
        found = source.forecast(date(2026, 11, 1), date(2026, 11, 23), level=90)  # starts today, not before

    assert found == Forecast(
        start=TODAY,
        end=date(2026, 11, 23),
        available=True,
        level=90,
        mean=Decimal("61.5"),
        low=Decimal("27.0"),
        high=Decimal("39.75"),
        points=[
            ForecastPoint(date(2026, 11, 20), Decimal("10.5"), Decimal("8.0"), Decimal("12.25")),
            ForecastPoint(date(2026, 11, 21), Decimal("11.5"), Decimal("9.0"), Decimal("13.25")),
            ForecastPoint(date(2026, 11, 22), Decimal("12.5"), Decimal("10.0"), Decimal("14.25")),
        ],
        calls=1,
    )
    assert "1 GetCostForecast call for all costs, 2026-11-20..2026-11-23" in caplog.text


def test_a_project_forecast_filters_on_the_project_tag(stubbed: tuple[CostExplorerSource, Stubber]) -> None:
    source, stubber = stubbed
    stubber.add_response(
        "get_cost_forecast",
        forecast_answer(),
        {
            "TimePeriod": {"Start": "2026-11-20", "End": "2026-12-01"},
            "Metric": "UNBLENDED_COST",
            "Granularity": "DAILY",
            "PredictionIntervalLevel": 80,
            "Filter": {"Tags": {"Key": "project", "Values": ["churn"], "MatchOptions": ["EQUALS"]}},
        },
    )

    found = source.forecast(TODAY, date(2026, 12, 1), project="churn")

    assert found.available and found.mean == Decimal("61.5") and found.calls == 1


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("DataUnavailableException", "Insufficient amount of historical data."),
        ("ValidationException", "Insufficient amount of historical data to generate forecast"),
    ],
)
def test_too_little_history_is_a_forecast_that_is_not_available_with_the_reason(
    stubbed: tuple[CostExplorerSource, Stubber], code: str, message: str
) -> None:
    source, stubber = stubbed
    error(stubber, "get_cost_forecast", code, message)

    found = source.forecast(TODAY, date(2026, 12, 1), level=80, project="churn")

    assert (found.available, found.mean, found.points, found.calls) == (False, None, [], 1)
    assert found.reason == f"Cost Explorer has too little cost history to forecast yet ({message})"


def test_other_forecast_errors_are_backend_errors(stubbed: tuple[CostExplorerSource, Stubber]) -> None:
    source, stubber = stubbed
    error(stubber, "get_cost_forecast", "ValidationException", "End date must be after start date")
    with pytest.raises(BackendError) as refused:
        source.forecast(TODAY, date(2026, 12, 1))
    assert refused.value.permanent is True and "forecast of all costs" in refused.value.message

    error(stubber, "get_cost_forecast", "LimitExceededException", "You made too many calls")
    with pytest.raises(BackendError) as throttled:
        source.forecast(TODAY, date(2026, 12, 1), project="churn")
    assert throttled.value.permanent is False and "forecast of the churn project" in throttled.value.message


def test_a_forecast_of_a_period_already_over_or_at_a_level_outside_51_to_99_makes_no_call(
    stubbed: tuple[CostExplorerSource, Stubber],
) -> None:
    source, _ = stubbed
    over = source.forecast(NOV_1, NOV_3)
    assert (over.available, over.reason, over.calls) == (False, "no days left to forecast", 0)
    for level in (50, 100, True):
        with pytest.raises(ValueError, match="level must be a whole percentage from 51 to 99"):
            source.forecast(TODAY, date(2026, 12, 1), level=level)
    with pytest.raises(ValueError, match="end"):
        source.forecast(date(2026, 12, 1), TODAY)
