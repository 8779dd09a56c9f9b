"""The Fargate serving backend against moto's server over real HTTP (EC2, ELBv2, ECS services and task definitions,
Application Auto Scaling), and botocore's Stubber where moto does not model ECS (service deployments and their
lifecycle hooks).

What moto 5.2 does with these calls: RegisterTaskDefinition, DescribeTaskDefinition (with tags) and TagResource are
modelled; CreateService checks the subnets and security groups against EC2 but keeps neither deploymentConfiguration,
healthCheckGracePeriodSeconds nor enableECSManagedTags (so the tests read those from the request sent), and answers
without `currentServiceDeployment`; UpdateService keeps any field it is given, deploymentConfiguration with
lifecycleHooks, canaryConfiguration and linearConfiguration included, but leaves `deployments[]` at the first
revision; it rejects none of the new fields. ListServiceDeployments, DescribeServiceDeployments,
DescribeServiceRevisions, ContinueServiceDeployment and StopServiceDeployment are not implemented (HTTP 500), so
those go to a Stubber, which checks every request and every response against botocore's service model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import boto3
import pytest
from botocore.client import BaseClient
from botocore.stub import ANY, Stubber

from workers import aws
from workers.deploy.base import (
    Autoscaling,
    DeploymentNotFound,
    Handle,
    RevisionSpec,
    Rollout,
    ServiceSpec,
    ServingBackend,
    ServingSpan,
)
from workers.deploy.fargate import (
    VERDICT_MINUTES,
    FargateServingBackend,
    InvalidSpec,
    deployment_configuration,
    revision_problems,
    rollout_problems,
    rollout_status,
    service_problems,
    settings_problems,
)
from workers.errors import BackendError

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's account
CLUSTER = "controlplane"
NAME = "churn-production"
CLUSTER_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{CLUSTER}"
SERVICE_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/{CLUSTER}/{NAME}"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/controlplane-serving:sklearn-1.9"
EXECUTION_ROLE = f"arn:aws:iam::{ACCOUNT}:role/controlplane-serving-execution"
TASK_ROLE = f"arn:aws:iam::{ACCOUNT}:role/controlplane-serving-task"
LB_ROLE = f"arn:aws:iam::{ACCOUNT}:role/controlplane-ecs-infrastructure"
ALARM = "churn-production-5xx"
COST_TAGS = {"project": "churn", "model": "churn-classifier", "environment": "production"}
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
SHA = "3f" * 32
MOTO_LACKS = frozenset(
    {
        "list_service_deployments",
        "describe_service_deployments",
        "describe_service_revisions",
        "continue_service_deployment",
        "stop_service_deployment",
    }
)


def td(n: int) -> str:
    """The ARN of revision n of the service's task definition family, as ECS (and moto) name it."""
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{NAME}:{n}"


def sd(n: int) -> str:
    """A service deployment ARN in ECS's form."""
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:service-deployment/{CLUSTER}/{NAME}/Qx{n:02d}GC2ZR-taawPAYrIaU5"


def sr(n: int) -> str:
    """A service revision ARN in ECS's form."""
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:service-revision/{CLUSTER}/{NAME}/49803064663735770{n:02d}"


def environment(deployment: str) -> dict[str, str]:
    return {
        "MODEL_URI": "s3://controlplane-models/churn/7/model.joblib",
        "MODEL_SHA256": SHA,
        "SERVICE_NAME": NAME,
        "REVISION": deployment,
        "METRICS_SINK": "emf",
        "CAPTURE_URL": "s3://controlplane-capture/churn-production/",
        "CAPTURE_FRACTION": "0.05",
    }


def revision(deployment: str = "d41", rollout: Rollout | None = None, **fields: Any) -> RevisionSpec:
    values: dict[str, Any] = {
        "deployment_id": deployment,
        "environment": environment(deployment),
        "rollout": rollout or Rollout(strategy="canary", bake_minutes=5, canary_percent=10),
        "image": IMAGE,
        "cpu": 512,
        "memory": 1024,
    }
    values.update(fields)
    return RevisionSpec(**values)


@dataclass(frozen=True)
class Network:
    """The environment's resources in moto: subnets, a security group, an ALB with two target groups and the
    production listener rule, the ECS cluster; `settings` is the environment's backend settings."""

    settings: dict[str, Any]
    blue: str
    green: str
    rule: str
    load_balancer: str
    dns_name: str


@pytest.fixture
def network(aws_env: str) -> Network:
    ec2 = aws.aws_client("ec2", region=REGION)
    elbv2 = aws.aws_client("elbv2", region=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")["Subnet"][
            "SubnetId"
        ]
        for i, zone in ((1, "a"), (2, "b"))
    ]
    group = ec2.create_security_group(GroupName="serving", Description="serving tasks", VpcId=vpc)["GroupId"]
    balancer = elbv2.create_load_balancer(Name="controlplane", Subnets=subnets, SecurityGroups=[group])[
        "LoadBalancers"
    ][0]
    blue, green = (
        elbv2.create_target_group(Name=f"churn-{color}", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip")[
            "TargetGroups"
        ][0]["TargetGroupArn"]
        for color in ("blue", "green")
    )
    listener = elbv2.create_listener(
        LoadBalancerArn=balancer["LoadBalancerArn"],
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "404"}}],
    )["Listeners"][0]["ListenerArn"]
    rule = elbv2.create_rule(
        ListenerArn=listener,
        Priority=10,
        Conditions=[{"Field": "host-header", "Values": ["churn.example.internal"]}],
        Actions=[
            {
                "Type": "forward",
                "ForwardConfig": {
                    "TargetGroups": [{"TargetGroupArn": blue, "Weight": 100}, {"TargetGroupArn": green, "Weight": 0}]
                },
            }
        ],
    )["Rules"][0]["RuleArn"]
    aws.aws_client("ecs", region=REGION).create_cluster(clusterName=CLUSTER)
    settings = {
        "cluster": CLUSTER,
        "subnets": subnets,
        "security_groups": [group],
        "target_group_arn": blue,
        "alternate_target_group_arn": green,
        "production_listener_rule_arn": rule,
        "load_balancer_role_arn": LB_ROLE,
        "load_balancer_arn": balancer["LoadBalancerArn"],
        "execution_role_arn": EXECUTION_ROLE,
        "task_role_arn": TASK_ROLE,
        "alarm_names": [ALARM],
        "address": "https://churn.example.internal",
    }
    return Network(settings, blue, green, rule, balancer["LoadBalancerArn"], balancer["DNSName"])


class PartlyStubbed:
    """The project's moto-backed ECS client, except for the operations moto 5.2 lacks, which a Stubber answers."""

    def __init__(self, moto: BaseClient, stubbed: BaseClient, operations: frozenset[str] = MOTO_LACKS) -> None:
        self._moto = moto
        self._stubbed = stubbed
        self._operations = operations

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stubbed if name in self._operations else self._moto, name)


@pytest.fixture(scope="session")
def stub_client(moto_server: str) -> BaseClient:
    """The ECS client the Stubber answers for (built once: building a client parses its service model)."""
    return boto3.session.Session(region_name=REGION).client(
        "ecs", endpoint_url=moto_server, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


@pytest.fixture(scope="session")
def elbv2_stub_client(moto_server: str) -> BaseClient:
    """An ELBv2 client for a Stubber to answer, where a test needs what moto cannot do (refuse a call)."""
    return boto3.session.Session(region_name=REGION).client(
        "elbv2", endpoint_url=moto_server, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def target_group(arn: str, path: str) -> dict[str, Any]:
    """A DescribeTargetGroups entry for an ALB's HTTP target group of IP targets on port 8080, checked on `path`."""
    return {
        "TargetGroupArn": arn,
        "TargetGroupName": arn.split("/")[-2],
        "Protocol": "HTTP",
        "Port": 8080,
        "VpcId": "vpc-0a1b2c3d4e5f60718",
        "HealthCheckProtocol": "HTTP",
        "HealthCheckPort": "traffic-port",
        "HealthCheckEnabled": True,
        "HealthCheckIntervalSeconds": 30,
        "HealthCheckTimeoutSeconds": 5,
        "HealthyThresholdCount": 5,
        "UnhealthyThresholdCount": 2,
        "HealthCheckPath": path,
        "Matcher": {"HttpCode": "200"},
        "TargetType": "ip",
        "ProtocolVersion": "HTTP1",
        "IpAddressType": "ipv4",
    }


@pytest.fixture
def stub(aws_env: str, stub_client: BaseClient) -> Iterator[Stubber]:
    """An ECS client of its own whose answers come from a Stubber; every queued answer must be used."""
    with Stubber(stub_client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def service(network: Network) -> ServiceSpec:
    return ServiceSpec(name=NAME, desired_count=2, settings=network.settings, tags=COST_TAGS)


@pytest.fixture
def backend(network: Network, stub: Stubber) -> FargateServingBackend:
    """The backend with the project's clients (moto), ECS's service-deployment operations answered by the Stubber."""
    ecs = PartlyStubbed(aws.aws_client("ecs", region=REGION), stub.client)
    return FargateServingBackend(REGION, ecs_client=cast(BaseClient, ecs), clock=NOW.timestamp)


def moto_ecs() -> BaseClient:
    return aws.aws_client("ecs", region=REGION)


def record_requests(operation: str = "") -> list[dict[str, Any]]:
    """The JSON bodies of every `operation` request (every request, without one) the project's ECS client sends."""
    bodies: list[dict[str, Any]] = []

    def capture(request: Any, **_: Any) -> None:
        bodies.append(json.loads(request.body))

    moto_ecs().meta.events.register(f"before-send.ecs.{operation}" if operation else "before-send.ecs", capture)
    return bodies


def moto_elbv2() -> BaseClient:
    return aws.aws_client("elbv2", region=REGION)


def record_elbv2_calls(client: BaseClient | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Every ELBv2 operation (name, parameters) the client (the project's, on moto, without one) is asked to send;
    ELBv2 speaks the query protocol, so its parameters are taken before they are encoded."""
    calls: list[tuple[str, dict[str, Any]]] = []
    client = client or moto_elbv2()
    client.meta.events.register_first(
        "before-parameter-build.elastic-load-balancing-v2",
        lambda model, params, **_: calls.append((model.name, dict(params))),
    )
    return calls


def health_check(target_group: str) -> dict[str, Any]:
    (group,) = moto_elbv2().describe_target_groups(TargetGroupArns=[target_group])["TargetGroups"]
    return {key: group.get(key) for key in ("HealthCheckProtocol", "HealthCheckPort", "HealthCheckPath", "Matcher")}


ON_PING = {
    "HealthCheckProtocol": "HTTP",
    "HealthCheckPort": "traffic-port",
    "HealthCheckPath": "/ping",
    "Matcher": {"HttpCode": "200"},
}


def expect_lookup(stub: Stubber, rollouts: list[tuple[int, int]]) -> None:
    """ECS answers a look-up of the service's deployments: (service deployment n, task definition revision n),
    newest last; service revision n runs task definition revision n."""
    briefs = [
        {
            "serviceDeploymentArn": sd(n),
            "serviceArn": SERVICE_ARN,
            "clusterArn": CLUSTER_ARN,
            "createdAt": NOW - timedelta(minutes=30 - i),
            "startedAt": NOW - timedelta(minutes=30 - i),
            "targetServiceRevisionArn": sr(revision_n),
            "status": "IN_PROGRESS",
        }
        for i, (n, revision_n) in enumerate(rollouts)
    ]
    stub.add_response(
        "list_service_deployments",
        {"serviceDeployments": briefs},
        {"service": NAME, "cluster": CLUSTER, "maxResults": 100},
    )
    wanted = sorted({sr(revision_n) for _, revision_n in rollouts})
    stub.add_response(
        "describe_service_revisions",
        {
            "serviceRevisions": [
                {
                    "serviceRevisionArn": arn,
                    "serviceArn": SERVICE_ARN,
                    "clusterArn": CLUSTER_ARN,
                    "taskDefinition": td(int(arn[-2:])),
                    "launchType": "FARGATE",
                    "createdAt": NOW - timedelta(minutes=30),
                }
                for arn in wanted
            ],
            "failures": [],
        },
        {"serviceRevisionArns": wanted},
    )


def hook(status: str = "AWAITING_ACTION", *, expires: datetime | None = None) -> dict[str, Any]:
    return {
        "hookId": "ecs-pause-e7tK9G_WRJqNF_EOMjztDXfKenlJuEUVjsNStf4WLKw",
        "targetType": "PAUSE",
        "status": status,
        "expiresAt": expires or NOW + timedelta(minutes=VERDICT_MINUTES),
        "timeoutAction": "ROLLBACK",
    }


def service_deployment(
    n: int,
    status: str,
    *,
    rollout: Rollout | None = None,
    stage: str | None = None,
    hooks: list[dict[str, Any]] | None = None,
    weight: float | None = None,
    running: int = 2,
    source: int | None = 1,
    **extra: Any,
) -> dict[str, Any]:
    """A DescribeServiceDeployments entry as ECS gives it for a deployment of task definition revision n."""
    created = NOW - timedelta(minutes=20)
    target: dict[str, Any] = {
        "arn": sr(n),
        "requestedTaskCount": 2,
        "runningTaskCount": running,
        "pendingTaskCount": 2 - running,
    }
    if weight is not None:
        target["requestedProductionTrafficWeight"] = weight
        target["requestedTestTrafficWeight"] = 0.0
    found: dict[str, Any] = {
        "serviceDeploymentArn": sd(n),
        "serviceArn": SERVICE_ARN,
        "clusterArn": CLUSTER_ARN,
        "createdAt": created,
        "startedAt": created,
        "updatedAt": NOW - timedelta(minutes=1),
        "targetServiceRevision": target,
        "status": status,
        "deploymentConfiguration": deployment_configuration(rollout or Rollout("canary", 5), [ALARM]),
        "deploymentCircuitBreaker": {"status": "MONITORING", "failureCount": 0, "threshold": 3},
        "alarms": {"status": "MONITORING", "alarmNames": [ALARM], "triggeredAlarmNames": []},
    }
    if source is not None:
        found["sourceServiceRevisions"] = [
            {"arn": sr(source), "requestedTaskCount": 2, "runningTaskCount": 2, "pendingTaskCount": 0}
        ]
    if stage is not None:
        found["lifecycleStage"] = stage
    if hooks is not None:
        found["lifecycleHookDetails"] = hooks
    if status not in ("PENDING", "IN_PROGRESS"):
        found["finishedAt"] = NOW - timedelta(minutes=2)
    found.update(extra)
    return found


def expect_describe(stub: Stubber, *deployments: dict[str, Any]) -> None:
    for found in deployments:
        stub.add_response(
            "describe_service_deployments",
            {"serviceDeployments": [found], "failures": []},
            {"serviceDeploymentArns": [found["serviceDeploymentArn"]]},
        )


def deploy_first(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec, spec: RevisionSpec | None = None
) -> Handle:
    """The service's first deploy: CreateService on moto, the service deployment found through the Stubber."""
    expect_lookup(stub, [(1, 1)])
    return backend.deploy(service, spec or revision("d41"))


def deploy_second(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec, spec: RevisionSpec | None = None
) -> Handle:
    deploy_first(backend, stub, service, revision("d41", spec.rollout if spec else None))
    expect_lookup(stub, [(1, 1), (2, 2)])
    return backend.deploy(service, spec or revision("d42"))


# --- deploy -----------------------------------------------------------------------------------------------------------


def test_the_backend_is_a_serving_backend(backend: FargateServingBackend) -> None:
    assert isinstance(backend, ServingBackend)


def test_first_deploy_registers_a_revision_and_creates_the_service_behind_the_target_groups(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec, network: Network
) -> None:
    created = record_requests("CreateService")

    handle = deploy_first(backend, stub, service)

    assert handle == Handle(revision=td(1), rollout_id=sd(1), previous_revision="")
    described = moto_ecs().describe_task_definition(taskDefinition=td(1), include=["TAGS"])
    task = described["taskDefinition"]
    assert (task["family"], task["cpu"], task["memory"], task["networkMode"]) == (NAME, "512", "1024", "awsvpc")
    assert task["requiresCompatibilities"] == ["FARGATE"]
    assert (task["taskRoleArn"], task["executionRoleArn"]) == (TASK_ROLE, EXECUTION_ROLE)
    (container,) = task["containerDefinitions"]
    assert container["name"] == "serving" and container["image"] == IMAGE and container["essential"] is True
    assert [m["containerPort"] for m in container["portMappings"]] == [8080]
    assert {e["name"]: e["value"] for e in container["environment"]} == environment("d41")
    assert container["logConfiguration"] == {
        "logDriver": "awslogs",
        "options": {"awslogs-group": "/controlplane/serving", "awslogs-region": REGION, "awslogs-stream-prefix": NAME},
    }
    check = container["healthCheck"]["command"]
    assert check[:3] == ["CMD", "python", "-c"] and "http://127.0.0.1:8080/ping" in check[3]
    assert {t["key"]: t["value"] for t in described["tags"]} == {
        **COST_TAGS,
        "deployment": "d41",
        "controlplane:replaces": "",
        "controlplane:bake-minutes": "5",
    }

    (request,) = created
    # moto keeps none of these three, so they are read from what was sent.
    assert request["deploymentConfiguration"] == deployment_configuration(Rollout("canary", 5, 10), [ALARM])
    assert request["healthCheckGracePeriodSeconds"] == 60
    assert request["enableECSManagedTags"] is True
    # CreateService's clientToken: up to 36 ASCII characters from 33 to 126, the same for a repeated create.
    assert 1 <= len(request["clientToken"]) <= 36 and all(33 <= ord(ch) <= 126 for ch in request["clientToken"])
    (ecs_service,) = moto_ecs().describe_services(cluster=CLUSTER, services=[NAME], include=["TAGS"])["services"]
    assert ecs_service["taskDefinition"] == td(1)
    assert ecs_service["desiredCount"] == 2
    assert ecs_service["launchType"] == "FARGATE"
    assert ecs_service["propagateTags"] == "TASK_DEFINITION"
    assert {t["key"]: t["value"] for t in ecs_service["tags"]} == COST_TAGS
    assert ecs_service["loadBalancers"] == [
        {
            "targetGroupArn": network.blue,
            "containerName": "serving",
            "containerPort": 8080,
            "advancedConfiguration": {
                "alternateTargetGroupArn": network.green,
                "productionListenerRule": network.rule,
                "roleArn": LB_ROLE,
            },
        }
    ]
    assert ecs_service["networkConfiguration"] == {
        "awsvpcConfiguration": {
            "subnets": network.settings["subnets"],
            "securityGroups": network.settings["security_groups"],
            "assignPublicIp": "DISABLED",
        }
    }


def test_the_first_deploy_points_the_target_groups_health_checks_at_ping_and_later_ones_leave_them(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec, network: Network
) -> None:
    # The blue group as ELB makes it (HTTP on `/`, which serving answers 404), the green one checked elsewhere.
    assert health_check(network.blue)["HealthCheckPath"] == "/"
    moto_elbv2().modify_target_group(
        TargetGroupArn=network.green,
        HealthCheckPath="/healthz",
        HealthCheckPort="9000",
        Matcher={"HttpCode": "200-399"},
    )
    calls = record_elbv2_calls()
    created = record_requests("CreateService")

    deploy_first(backend, stub, service)

    sent = list(calls)
    assert [name for name, _ in sent] == ["DescribeTargetGroups", "ModifyTargetGroup", "ModifyTargetGroup"]
    assert sent[0][1] == {"TargetGroupArns": [network.blue, network.green]}
    assert [params for _, params in sent[1:]] == [
        {"TargetGroupArn": arn, **ON_PING, "HealthCheckEnabled": True} for arn in (network.blue, network.green)
    ]
    assert health_check(network.blue) == health_check(network.green) == ON_PING
    assert len(created) == 1
    # The service exists behind them now: a later deploy reads and changes no target group.
    calls.clear()
    expect_lookup(stub, [(1, 1), (2, 2)])
    backend.deploy(service, revision("d42"))
    assert [name for name, _ in calls if name in ("DescribeTargetGroups", "ModifyTargetGroup")] == []


def test_target_groups_already_checking_ping_are_left_as_they_are(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec, network: Network
) -> None:
    for arn, port in ((network.blue, "traffic-port"), (network.green, "8080")):  # the traffic port, by number too
        moto_elbv2().modify_target_group(
            TargetGroupArn=arn, HealthCheckPath="/ping", HealthCheckPort=port, Matcher={"HttpCode": "200"}
        )
    calls = record_elbv2_calls()

    deploy_first(backend, stub, service)

    assert [name for name, _ in calls if name.startswith(("Describe", "Modify"))] == ["DescribeTargetGroups"]


def test_a_refused_health_check_change_stops_the_first_deploy_before_the_service_is_made(
    network: Network, stub: Stubber, service: ServiceSpec, elbv2_stub_client: BaseClient
) -> None:
    ecs = PartlyStubbed(aws.aws_client("ecs", region=REGION), stub.client)
    with Stubber(elbv2_stub_client) as elbv2:
        backend = FargateServingBackend(
            REGION, ecs_client=cast(BaseClient, ecs), elbv2_client=elbv2_stub_client, clock=NOW.timestamp
        )
        elbv2.add_response(
            "describe_target_groups",
            {"TargetGroups": [target_group(network.blue, "/"), target_group(network.green, "/ping")]},
            {"TargetGroupArns": [network.blue, network.green]},
        )
        elbv2.add_client_error(
            "modify_target_group",
            service_error_code="AccessDenied",
            service_message="User is not authorized to perform: elasticloadbalancing:ModifyTargetGroup",
            http_status_code=403,
            expected_params={"TargetGroupArn": network.blue, **ON_PING, "HealthCheckEnabled": True},
        )
        with pytest.raises(BackendError) as refused:
            backend.deploy(service, revision("d41"))
        elbv2.assert_no_pending_responses()
    assert network.blue in refused.value.message and "/ping" in refused.value.message
    assert "ModifyTargetGroup" in refused.value.message
    assert moto_ecs().describe_services(cluster=CLUSTER, services=[NAME])["services"] == []


def test_deploy_repeated_for_the_same_deployment_registers_and_starts_nothing_more(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec
) -> None:
    registered = record_requests("RegisterTaskDefinition")
    created = record_requests("CreateService")
    updated = record_requests("UpdateService")
    first = deploy_first(backend, stub, service)

    expect_lookup(stub, [(1, 1)])
    again = backend.deploy(service, revision("d41"))

    assert again == first
    assert (len(registered), len(created), len(updated)) == (1, 1, 0)
    arns = moto_ecs().list_task_definitions(familyPrefix=NAME)["taskDefinitionArns"]
    assert arns == [td(1)]


EXPECTED_CONFIGURATIONS: dict[str, tuple[Rollout, dict[str, Any]]] = {
    "rolling": (
        Rollout("rolling", bake_minutes=5),
        {
            "strategy": "ROLLING",
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "maximumPercent": 200,
            "minimumHealthyPercent": 100,
            "lifecycleHooks": [],
            "alarms": {"alarmNames": [ALARM], "enable": True, "rollback": True},
        },
    ),
    "all_at_once": (
        Rollout("all_at_once", bake_minutes=5),
        {
            "strategy": "BLUE_GREEN",
            "bakeTimeInMinutes": 0,
            "lifecycleHooks": [
                {
                    "targetType": "PAUSE",
                    "lifecycleStages": ["POST_PRODUCTION_TRAFFIC_SHIFT"],
                    "timeoutConfiguration": {"timeoutInMinutes": 5 + VERDICT_MINUTES, "action": "ROLLBACK"},
                }
            ],
            "alarms": {"alarmNames": [ALARM], "enable": True, "rollback": True},
        },
    ),
    "canary": (
        Rollout("canary", bake_minutes=7.5, canary_percent=12.5),
        {
            "strategy": "CANARY",
            "bakeTimeInMinutes": 0,
            # The canary's bake is the canary phase: the hook pauses for the verdict alone.
            "lifecycleHooks": [
                {
                    "targetType": "PAUSE",
                    "lifecycleStages": ["POST_PRODUCTION_TRAFFIC_SHIFT"],
                    "timeoutConfiguration": {"timeoutInMinutes": VERDICT_MINUTES, "action": "ROLLBACK"},
                }
            ],
            "canaryConfiguration": {"canaryPercent": 12.5, "canaryBakeTimeInMinutes": 8},
            "alarms": {"alarmNames": [ALARM], "enable": True, "rollback": True},
        },
    ),
    "linear": (
        Rollout("linear", bake_minutes=3, linear_step_percent=20, linear_interval_minutes=2),
        {
            "strategy": "LINEAR",
            "bakeTimeInMinutes": 0,
            "lifecycleHooks": [
                {
                    "targetType": "PAUSE",
                    "lifecycleStages": ["POST_PRODUCTION_TRAFFIC_SHIFT"],
                    "timeoutConfiguration": {"timeoutInMinutes": 3 + VERDICT_MINUTES, "action": "ROLLBACK"},
                }
            ],
            "linearConfiguration": {"stepPercent": 20.0, "stepBakeTimeInMinutes": 2},
            "alarms": {"alarmNames": [ALARM], "enable": True, "rollback": True},
        },
    ),
}


@pytest.mark.parametrize("strategy", sorted(EXPECTED_CONFIGURATIONS))
def test_a_later_deploy_registers_a_revision_and_updates_the_service_with_the_strategy_mapped_onto_ecs(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec, strategy: str
) -> None:
    rollout, expected = EXPECTED_CONFIGURATIONS[strategy]
    created = record_requests("CreateService")
    updated = record_requests("UpdateService")

    handle = deploy_second(backend, stub, service, revision("d42", rollout))

    assert handle == Handle(revision=td(2), rollout_id=sd(2), previous_revision=td(1))
    assert len(created) == 1
    (request,) = updated
    assert request == {
        "cluster": CLUSTER,
        "service": NAME,
        "taskDefinition": td(2),
        "deploymentConfiguration": expected,
    }
    (ecs_service,) = moto_ecs().describe_services(cluster=CLUSTER, services=[NAME])["services"]
    assert ecs_service["taskDefinition"] == td(2)
    assert ecs_service["deploymentConfiguration"] == expected
    tags = moto_ecs().describe_task_definition(taskDefinition=td(2), include=["TAGS"])["tags"]
    assert {t["key"]: t["value"] for t in tags}["controlplane:replaces"] == td(1)


def test_a_service_whose_tasks_took_the_service_tags_takes_the_revision_tags_from_its_next_deploy(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec
) -> None:
    updated = record_requests("UpdateService")
    deploy_first(backend, stub, service)
    # As services were made before: tasks tagged like the service, so without the deployment tag.
    moto_ecs().update_service(cluster=CLUSTER, service=NAME, propagateTags="SERVICE")
    expect_lookup(stub, [(1, 1), (2, 2)])

    backend.deploy(service, revision("d42"))

    assert updated[-1]["propagateTags"] == "TASK_DEFINITION"
    (ecs_service,) = moto_ecs().describe_services(cluster=CLUSTER, services=[NAME])["services"]
    assert ecs_service["propagateTags"] == "TASK_DEFINITION"


def test_a_service_made_for_rolling_updates_gets_its_second_target_group_when_a_canary_follows(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec, network: Network
) -> None:
    updated = record_requests("UpdateService")
    deploy_first(backend, stub, service, revision("d41", Rollout("rolling", 5)))
    # A rolling service is behind the production target group only: the alternate one is not touched yet.
    assert (health_check(network.blue), health_check(network.green)["HealthCheckPath"]) == (ON_PING, "/")
    expect_lookup(stub, [(1, 1), (2, 2)])

    backend.deploy(service, revision("d42", Rollout("canary", 5, 10)))

    assert health_check(network.green) == ON_PING
    (request,) = updated
    assert request["loadBalancers"] == [
        {
            "targetGroupArn": network.blue,
            "containerName": "serving",
            "containerPort": 8080,
            "advancedConfiguration": {
                "alternateTargetGroupArn": network.green,
                "productionListenerRule": network.rule,
                "roleArn": LB_ROLE,
            },
        }
    ]


def test_reuse_updates_the_service_to_the_earlier_revision_and_registers_nothing(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec
) -> None:
    deploy_second(backend, stub, service)
    registered = record_requests("RegisterTaskDefinition")
    updated = record_requests("UpdateService")
    expect_lookup(stub, [(1, 1), (2, 2), (3, 1)])

    handle = backend.deploy(service, revision("d43", Rollout("all_at_once", 0), reuse=td(1)))

    assert handle == Handle(revision=td(1), rollout_id=sd(3), previous_revision=td(2))
    assert registered == []
    assert [r["taskDefinition"] for r in updated] == [td(1)]
    tags = moto_ecs().describe_task_definition(taskDefinition=td(1), include=["TAGS"])["tags"]
    values = {t["key"]: t["value"] for t in tags}
    # The revision keeps whose it is; what it replaces now is the revision it takes over from.
    assert (values["deployment"], values["controlplane:replaces"], values["controlplane:bake-minutes"]) == (
        "d41",
        td(2),
        "0",
    )


def test_reuse_of_another_family_is_refused_before_any_call(
    backend: FargateServingBackend, service: ServiceSpec
) -> None:
    sent = record_requests()
    other = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/fraud-production:3"

    with pytest.raises(InvalidSpec) as refused:
        backend.deploy(service, revision("d43", reuse=other))

    assert refused.value.permanent and "reuse" in refused.value.problems
    assert sent == []


def test_a_deploy_that_died_after_registering_registers_nothing_when_repeated(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec
) -> None:
    deploy_first(backend, stub, service)
    registered = record_requests("RegisterTaskDefinition")
    updated = record_requests("UpdateService")

    def die(**_: Any) -> None:
        raise RuntimeError("the worker died here")

    moto_ecs().meta.events.register_first("before-send.ecs.UpdateService", die)
    with pytest.raises(RuntimeError):
        backend.deploy(service, revision("d42"))
    moto_ecs().meta.events.unregister("before-send.ecs.UpdateService", die)
    expect_lookup(stub, [(1, 1), (2, 2)])

    handle = backend.deploy(service, revision("d42"))

    assert handle == Handle(revision=td(2), rollout_id=sd(2), previous_revision=td(1))
    assert len(registered) == 1
    assert [r["taskDefinition"] for r in updated] == [td(2)]


def test_the_same_deployment_with_another_image_is_refused(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec
) -> None:
    deploy_first(backend, stub, service)

    with pytest.raises(BackendError) as refused:
        backend.deploy(service, revision("d41", image=IMAGE.replace("1.9", "1.2")))

    assert refused.value.permanent
    assert "image" in refused.value.message and td(1) in refused.value.message


# --- settings and spec checks -----------------------------------------------------------------------------------------

ROLLING_REQUIRED = {"cluster", "subnets", "security_groups", "target_group_arn", "execution_role_arn", "task_role_arn"}
BLUE_GREEN_REQUIRED = {"alternate_target_group_arn", "production_listener_rule_arn", "load_balancer_role_arn"}


def test_settings_problems_name_every_missing_field_for_a_rolling_update() -> None:
    problems = settings_problems({}, "rolling")

    assert set(problems) == ROLLING_REQUIRED
    assert all(messages and messages[0].startswith("is not set") for messages in problems.values())


@pytest.mark.parametrize("strategy", ["all_at_once", "canary", "linear"])
def test_settings_problems_ask_for_the_second_target_group_listener_rule_and_role_for_traffic_shifting(
    strategy: str,
) -> None:
    problems = settings_problems({}, strategy)

    assert set(problems) == ROLLING_REQUIRED | BLUE_GREEN_REQUIRED
    assert strategy in problems["alternate_target_group_arn"][0]


def test_settings_problems_accept_the_environment_settings(network: Network) -> None:
    for strategy in ("rolling", "all_at_once", "canary", "linear"):
        assert settings_problems(network.settings, strategy) == {}
    assert settings_problems(network.settings, "canary", autoscaling_metric="requests") == {}
    comma_separated = {
        **network.settings,
        "subnets": ",".join(network.settings["subnets"]),
        "security_groups": network.settings["security_groups"][0],
        "assign_public_ip": "true",
        "health_check_grace_seconds": "120",
    }
    assert settings_problems(comma_separated, "rolling") == {}


def test_settings_problems_say_what_is_wrong_with_each_value(network: Network) -> None:
    broken = {
        **network.settings,
        "cluster": "my cluster",
        "subnets": ["subnet-0a1b2c3d4e5f60718", "vpc-0a1b2c3d"],
        "security_groups": 7,
        "target_group_arn": "churn-blue",
        "alternate_target_group_arn": network.settings["target_group_arn"],
        "execution_role_arn": f"arn:aws:iam::{ACCOUNT}:user/deployer",
        "production_listener_rule_arn": network.settings["load_balancer_arn"],
        "assign_public_ip": "sometimes",
        "health_check_grace_seconds": -5,
        "log_group": "serving logs",
        "address": "churn.example.internal",
    }

    problems = settings_problems(broken, "canary")

    assert set(problems) == {
        "cluster",
        "subnets",
        "security_groups",
        "target_group_arn",
        "execution_role_arn",
        "production_listener_rule_arn",
        "assign_public_ip",
        "health_check_grace_seconds",
        "log_group",
        "address",
    }
    assert "'vpc-0a1b2c3d'" in problems["subnets"][0]
    assert "'churn-blue'" in problems["target_group_arn"][0]
    assert problems["security_groups"] == ["must be a list of ids or one comma-separated string"]
    # Equal target groups show up once target_group_arn is valid.
    same = settings_problems({**network.settings, "alternate_target_group_arn": network.blue}, "linear")
    assert same == {"alternate_target_group_arn": ["must be another target group than target_group_arn"]}


def test_request_based_autoscaling_needs_the_load_balancer(network: Network) -> None:
    settings = {key: value for key, value in network.settings.items() if key != "load_balancer_arn"}

    assert settings_problems(settings, "rolling") == {}
    assert set(settings_problems(settings, "rolling", autoscaling_metric="requests")) == {"load_balancer_arn"}


def test_deploy_with_incomplete_settings_is_refused_before_any_call(backend: FargateServingBackend) -> None:
    sent = record_requests()
    service = ServiceSpec(name=NAME, desired_count=2, settings={"cluster": CLUSTER}, tags=COST_TAGS)

    with pytest.raises(InvalidSpec) as refused:
        backend.deploy(service, revision("d41", Rollout("linear", 5)))

    assert refused.value.permanent
    assert set(refused.value.problems) == (ROLLING_REQUIRED | BLUE_GREEN_REQUIRED) - {"cluster"}
    for field in refused.value.problems:
        assert field in refused.value.message
    assert sent == []


def test_a_linear_step_below_ecs_minimum_is_refused_naming_the_field(
    backend: FargateServingBackend, service: ServiceSpec
) -> None:
    sent = record_requests()

    with pytest.raises(InvalidSpec) as refused:
        backend.deploy(service, revision("d41", Rollout("linear", 5, linear_step_percent=2.5)))

    assert refused.value.permanent
    assert refused.value.problems == {
        "linear_step_percent": ["must be between 3 and 100 (ECS's minimum step for LINEAR), not 2.5"]
    }
    assert "linear_step_percent" in refused.value.message
    assert sent == []


def test_rollout_problems() -> None:
    assert rollout_problems(Rollout("linear", 5, linear_step_percent=3.0)) == {}
    assert rollout_problems(Rollout("canary", 5, canary_percent=0.1)) == {}
    assert set(rollout_problems(Rollout("canary", 5, canary_percent=0.05))) == {"canary_percent"}
    assert set(rollout_problems(Rollout("canary", 5, canary_percent=12.34))) == {"canary_percent"}
    assert set(rollout_problems(Rollout("all_at_once", bake_minutes=2000))) == {"bake_minutes"}
    assert set(rollout_problems(Rollout("linear", 5, linear_interval_minutes=-1))) == {"linear_interval_minutes"}
    assert set(rollout_problems(Rollout(cast(Any, "blue_green")))) == {"strategy"}


def test_revision_and_service_problems() -> None:
    assert revision_problems(revision("d41")) == {}
    problems = revision_problems(
        revision("d41", cpu=256, memory=4096, image="", environment={**environment("d41"), "PORT": "9000"})
    )
    assert set(problems) == {"memory", "image", "environment"}
    assert "512-2048" in problems["memory"][0]
    assert set(revision_problems(revision("d41", cpu=300))) == {"cpu"}
    assert service_problems(ServiceSpec(name=NAME, desired_count=2, tags=COST_TAGS)) == {}
    bad = ServiceSpec(
        name="Churn_Production",
        desired_count=-1,
        tags={"aws:owner": "x"},
        autoscaling=Autoscaling(metric="cpu", target=150, min_count=3, max_count=2),
    )
    assert set(service_problems(bad)) == {"name", "desired_count", "tags", "autoscaling"}


# --- progress ---------------------------------------------------------------------------------------------------------

CANARY = Rollout("canary", bake_minutes=5, canary_percent=10)
LINEAR = Rollout("linear", bake_minutes=3, linear_step_percent=20, linear_interval_minutes=1)
ALL_AT_ONCE = Rollout("all_at_once", bake_minutes=3)


@dataclass(frozen=True)
class Case:
    status: str
    phase: str
    traffic: float
    stage: str | None = None
    rollout: Rollout = CANARY
    hooks: list[dict[str, Any]] | None = None
    weight: float | None = None
    seconds: float | None = None
    message: str = ""
    extra: tuple[tuple[str, Any], ...] = ()


ROLLBACK_INFO: dict[str, Any] = {
    "reason": "Rolled back on request",
    "startedAt": NOW - timedelta(minutes=3),
    "serviceRevisionArn": sr(1),
}
ROLLBACK: tuple[str, Any] = ("rollback", ROLLBACK_INFO)
PROGRESS_CASES = {
    "pending": Case("PENDING", "starting", 0.0),
    "scaling up": Case("IN_PROGRESS", "starting", 0.0, stage="SCALE_UP"),
    "test traffic": Case("IN_PROGRESS", "starting", 0.0, stage="TEST_TRAFFIC_SHIFT"),
    "canary share reported": Case("IN_PROGRESS", "shifting", 10.0, stage="PRODUCTION_TRAFFIC_SHIFT", weight=10.0),
    "canary share derived": Case("IN_PROGRESS", "shifting", 10.0, stage="PRODUCTION_TRAFFIC_SHIFT"),
    "linear step derived": Case("IN_PROGRESS", "shifting", 20.0, stage="PRODUCTION_TRAFFIC_SHIFT", rollout=LINEAR),
    "linear step reported": Case(
        "IN_PROGRESS", "shifting", 60.0, stage="PRODUCTION_TRAFFIC_SHIFT", rollout=LINEAR, weight=60.0
    ),
    "blue/green switch": Case("IN_PROGRESS", "shifting", 100.0, stage="PRODUCTION_TRAFFIC_SHIFT", rollout=ALL_AT_ONCE),
    "paused hook, baking": Case(
        "IN_PROGRESS",
        "baking",
        100.0,
        stage="POST_PRODUCTION_TRAFFIC_SHIFT",
        rollout=ALL_AT_ONCE,
        hooks=[hook(expires=NOW + timedelta(minutes=VERDICT_MINUTES + 2))],
        seconds=120.0,
    ),
    "paused hook, bake over": Case(
        "IN_PROGRESS",
        "paused",
        100.0,
        stage="POST_PRODUCTION_TRAFFIC_SHIFT",
        hooks=[hook(expires=NOW + timedelta(minutes=10))],
        seconds=600.0,
        message="waiting for promote or roll back",
    ),
    "traffic moved, hook not reported yet": Case(
        "IN_PROGRESS", "baking", 100.0, stage="POST_PRODUCTION_TRAFFIC_SHIFT", rollout=ALL_AT_ONCE
    ),
    "promoted, ECS moving on": Case(
        "IN_PROGRESS", "baking", 100.0, stage="POST_PRODUCTION_TRAFFIC_SHIFT", hooks=[hook("SUCCEEDED")]
    ),
    "cleaning up": Case("IN_PROGRESS", "baking", 100.0, stage="CLEAN_UP", hooks=[hook("SUCCEEDED")]),
    "successful": Case("SUCCESSFUL", "complete", 100.0, hooks=[hook("SUCCEEDED")]),
    "rolling back": Case(
        "ROLLBACK_IN_PROGRESS",
        "shifting",
        0.0,
        message="ECS is rolling back: Rolled back on request",
        extra=(ROLLBACK,),
    ),
    "rolled back on request": Case(
        "ROLLBACK_SUCCESSFUL", "rolled_back", 0.0, message="Rolled back on request", extra=(ROLLBACK,)
    ),
    "rolled back when no verdict came": Case(
        "ROLLBACK_SUCCESSFUL",
        "rolled_back",
        0.0,
        hooks=[hook("TIMED_OUT", expires=NOW - timedelta(minutes=3))],
        message="no verdict came before the hook expired",
        extra=(ROLLBACK,),
    ),
    "circuit breaker": Case(
        "ROLLBACK_SUCCESSFUL",
        "failed",
        0.0,
        message="the circuit breaker counted 3 failed tasks",
        extra=(("deploymentCircuitBreaker", {"status": "TRIGGERED", "failureCount": 3, "threshold": 3}), ROLLBACK),
    ),
    "alarm": Case(
        "ROLLBACK_SUCCESSFUL",
        "failed",
        0.0,
        message=f"{ALARM} went into ALARM",
        extra=(("alarms", {"status": "TRIGGERED", "alarmNames": [ALARM], "triggeredAlarmNames": [ALARM]}), ROLLBACK),
    ),
    "rollback failed": Case(
        "ROLLBACK_FAILED",
        "failed",
        0.0,
        message="ECS could not roll back: tasks failed to start",
        extra=(("statusReason", "tasks failed to start"),),
    ),
    "stopped": Case("STOPPED", "failed", 0.0, message="Stopped by user", extra=(("statusReason", "Stopped by user"),)),
}


@pytest.mark.parametrize("name", list(PROGRESS_CASES))
def test_progress_maps_what_ecs_reports_onto_a_phase(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec, name: str
) -> None:
    case = PROGRESS_CASES[name]
    handle = deploy_second(backend, stub, service, revision("d42", case.rollout))
    running = 0 if case.phase == "starting" else 2
    expect_describe(
        stub,
        service_deployment(
            2,
            case.status,
            rollout=case.rollout,
            stage=case.stage,
            hooks=case.hooks,
            weight=case.weight,
            running=running,
            **dict(case.extra),
        ),
    )

    status = backend.progress(service, handle)

    assert (status.phase, status.traffic_percent) == (case.phase, case.traffic)
    assert status.seconds_to_next_step == case.seconds
    assert case.message in status.message
    assert (status.desired, status.running) == (2, running)
    assert status.final == (case.phase in ("complete", "failed", "rolled_back"))


def test_progress_reports_the_service_events_since_the_rollout_began_and_the_healthy_tasks(
    network: Network, stub: Stubber, service: ServiceSpec
) -> None:
    backend = FargateServingBackend(REGION, ecs_client=stub.client, clock=NOW.timestamp)
    handle = Handle(revision=td(2), rollout_id=sd(2), previous_revision=td(1))
    events = [
        {
            "id": "e3",
            "createdAt": NOW - timedelta(minutes=2),
            "message": f"(service {NAME}) has reached a steady state.",
        },
        {"id": "e2", "createdAt": NOW - timedelta(minutes=9), "message": f"(service {NAME}) registered 2 targets"},
        {"id": "e1", "createdAt": NOW - timedelta(hours=3), "message": f"(service {NAME}) has started 2 tasks"},
    ]
    stub.add_response(
        "describe_services",
        {"services": [ecs_service(td(2), events=events)], "failures": []},
        {"cluster": CLUSTER, "services": [NAME]},
    )
    expect_describe(stub, service_deployment(2, "IN_PROGRESS", stage="PRODUCTION_TRAFFIC_SHIFT", weight=10.0))
    tasks = [f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{CLUSTER}/{i:032x}" for i in range(4)]
    stub.add_response(
        "list_tasks",
        {"taskArns": tasks},
        {"cluster": CLUSTER, "serviceName": NAME, "desiredStatus": "RUNNING"},
    )
    described = [
        task(tasks[0], td(2), "HEALTHY"),
        task(tasks[1], td(2), "UNKNOWN"),
        task(tasks[2], td(1), "HEALTHY"),
        task(tasks[3], td(1), "HEALTHY"),
    ]
    stub.add_response("describe_tasks", {"tasks": described, "failures": []}, {"cluster": CLUSTER, "tasks": tasks})

    status = backend.progress(service, handle)

    assert status.events == (
        ("e2", (NOW - timedelta(minutes=9)).timestamp(), f"(service {NAME}) registered 2 targets"),
        ("e3", (NOW - timedelta(minutes=2)).timestamp(), f"(service {NAME}) has reached a steady state."),
    )
    assert (status.phase, status.traffic_percent, status.running, status.healthy) == ("shifting", 10.0, 2, 1)


def ecs_service(revision_arn: str, *, events: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """A DescribeServices entry as ECS gives it for the service this backend creates."""
    found: dict[str, Any] = {
        "serviceArn": SERVICE_ARN,
        "serviceName": NAME,
        "clusterArn": CLUSTER_ARN,
        "status": "ACTIVE",
        "desiredCount": 2,
        "runningCount": 2,
        "pendingCount": 0,
        "launchType": "FARGATE",
        "taskDefinition": revision_arn,
        "deploymentConfiguration": deployment_configuration(CANARY, [ALARM]),
        "deployments": [
            {
                "id": "ecs-svc/8146728364810924356",
                "status": "PRIMARY",
                "taskDefinition": revision_arn,
                "desiredCount": 2,
                "pendingCount": 0,
                "runningCount": 2,
                "failedTasks": 0,
                "createdAt": NOW - timedelta(minutes=20),
                "updatedAt": NOW - timedelta(minutes=1),
                "launchType": "FARGATE",
                "rolloutState": "IN_PROGRESS",
                "rolloutStateReason": "ECS deployment ecs-svc/8146728364810924356 in progress.",
            }
        ],
        "events": events or [],
        "createdAt": NOW - timedelta(days=3),
        "currentServiceDeployment": sd(2),
        "schedulingStrategy": "REPLICA",
        "deploymentController": {"type": "ECS"},
        "propagateTags": "TASK_DEFINITION",
        "enableECSManagedTags": True,
    }
    found.update(extra)
    return found


def task(arn: str, revision_arn: str, health: str) -> dict[str, Any]:
    return {
        "taskArn": arn,
        "clusterArn": CLUSTER_ARN,
        "taskDefinitionArn": revision_arn,
        "lastStatus": "RUNNING",
        "desiredStatus": "RUNNING",
        "healthStatus": health,
        "launchType": "FARGATE",
        "group": f"service:{NAME}",
    }


# --- promote and roll back --------------------------------------------------------------------------------------------


def paused(n: int = 2, rollout: Rollout = ALL_AT_ONCE) -> dict[str, Any]:
    return service_deployment(
        n,
        "IN_PROGRESS",
        rollout=rollout,
        stage="POST_PRODUCTION_TRAFFIC_SHIFT",
        hooks=[hook(expires=NOW + timedelta(minutes=10))],
    )


def test_promote_continues_the_deployment_at_the_paused_hook(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec
) -> None:
    handle = deploy_second(backend, stub, service, revision("d42", ALL_AT_ONCE))
    expect_describe(stub, paused())
    stub.add_response(
        "continue_service_deployment",
        {"serviceDeploymentArn": sd(2)},
        {"serviceDeploymentArn": sd(2), "hookId": hook()["hookId"], "action": "CONTINUE"},
    )
    expect_describe(
        stub, service_deployment(2, "IN_PROGRESS", rollout=ALL_AT_ONCE, stage="CLEAN_UP", hooks=[hook("SUCCEEDED")])
    )

    status = backend.promote(service, handle)

    assert (status.phase, status.traffic_percent) == ("baking", 100.0)
    assert "promoted" in status.message


def test_promote_again_after_ecs_finished_calls_nothing(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec
) -> None:
    handle = deploy_second(backend, stub, service, revision("d42", ALL_AT_ONCE))
    done = service_deployment(2, "SUCCESSFUL", rollout=ALL_AT_ONCE, hooks=[hook("SUCCEEDED")])
    expect_describe(stub, done, done)

    assert backend.promote(service, handle).phase == "complete"


def test_promote_after_another_worker_did_leaves_the_hook_as_it_is(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec
) -> None:
    handle = deploy_second(backend, stub, service, revision("d42", ALL_AT_ONCE))
    expect_describe(stub, paused())
    stub.add_client_error(
        "continue_service_deployment",
        service_error_code="InvalidParameterException",
        service_message="The lifecycle hook is not awaiting action.",
        http_status_code=400,
    )
    moved_on = service_deployment(2, "IN_PROGRESS", rollout=ALL_AT_ONCE, stage="CLEAN_UP", hooks=[hook("SUCCEEDED")])
    expect_describe(stub, moved_on, moved_on)

    assert backend.promote(service, handle).phase == "baking"


def test_roll_back_at_the_paused_hook_is_a_rollback_action(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec
) -> None:
    handle = deploy_second(backend, stub, service, revision("d42", ALL_AT_ONCE))
    expect_describe(stub, paused())
    stub.add_response(
        "continue_service_deployment",
        {"serviceDeploymentArn": sd(2)},
        {"serviceDeploymentArn": sd(2), "hookId": hook()["hookId"], "action": "ROLLBACK"},
    )
    expect_describe(stub, service_deployment(2, "ROLLBACK_IN_PROGRESS", rollout=ALL_AT_ONCE))

    status = backend.roll_back(service, handle)

    assert status.phase == "shifting" and not status.final


def test_roll_back_mid_canary_stops_the_deployment_with_a_rollback(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec
) -> None:
    handle = deploy_second(backend, stub, service, revision("d42", CANARY))
    expect_describe(stub, service_deployment(2, "IN_PROGRESS", stage="PRODUCTION_TRAFFIC_SHIFT", weight=10.0))
    stub.add_response(
        "stop_service_deployment",
        {"serviceDeploymentArn": sd(2)},
        {"serviceDeploymentArn": sd(2), "stopType": "ROLLBACK"},
    )
    expect_describe(stub, service_deployment(2, "ROLLBACK_SUCCESSFUL", rollback=ROLLBACK_INFO))

    status = backend.roll_back(service, handle)

    assert (status.phase, status.traffic_percent) == ("rolled_back", 0.0)


def test_roll_back_after_the_rollout_finished_updates_the_service_to_the_previous_revision(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec
) -> None:
    handle = deploy_second(backend, stub, service, revision("d42", CANARY))
    updated = record_requests("UpdateService")
    done = service_deployment(2, "SUCCESSFUL", hooks=[hook("SUCCEEDED")])
    expect_describe(stub, done)
    # progress: ours finished, the service runs td(1) again through a third service deployment, still rolling.
    expect_describe(stub, done)
    expect_lookup(stub, [(1, 1), (2, 2), (3, 1)])
    back = service_deployment(3, "IN_PROGRESS", stage="PRODUCTION_TRAFFIC_SHIFT", source=2, weight=100.0)
    back["targetServiceRevision"]["arn"] = sr(1)
    expect_describe(stub, back)

    status = backend.roll_back(service, handle)

    (request,) = updated
    assert request == {
        "cluster": CLUSTER,
        "service": NAME,
        "taskDefinition": td(1),
        # At once, without our hook, and with nothing that would roll back to the revision being left.
        "deploymentConfiguration": {
            "strategy": "BLUE_GREEN",
            "bakeTimeInMinutes": 0,
            "lifecycleHooks": [],
            "alarms": {"alarmNames": [ALARM], "enable": False, "rollback": False},
        },
    }
    assert (status.phase, status.traffic_percent) == ("shifting", 0.0)
    assert moto_ecs().describe_services(cluster=CLUSTER, services=[NAME])["services"][0]["taskDefinition"] == td(1)

    # Again, once the roll back succeeded: nothing more is sent, and it is final.
    expect_describe(stub, done, done)
    expect_lookup(stub, [(1, 1), (2, 2), (3, 1)])
    expect_describe(stub, back | {"status": "SUCCESSFUL", "finishedAt": NOW})

    status = backend.roll_back(service, handle)

    assert len(updated) == 1
    assert (status.phase, status.final) == ("rolled_back", True)


def test_roll_back_that_loses_the_race_with_the_end_of_the_rollout_still_rolls_back(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec
) -> None:
    handle = deploy_second(backend, stub, service, revision("d42", CANARY))
    updated = record_requests("UpdateService")
    expect_describe(stub, service_deployment(2, "IN_PROGRESS", stage="CLEAN_UP", hooks=[hook("SUCCEEDED")]))
    stub.add_client_error(
        "stop_service_deployment",
        service_error_code="ConflictException",
        service_message="The service deployment has already completed.",
        http_status_code=409,
    )
    done = service_deployment(2, "SUCCESSFUL", hooks=[hook("SUCCEEDED")])
    expect_describe(stub, done, done)
    expect_lookup(stub, [(1, 1), (2, 2), (3, 1)])
    expect_describe(stub, service_deployment(3, "IN_PROGRESS", stage="SCALE_UP", source=2))

    status = backend.roll_back(service, handle)

    assert [r["taskDefinition"] for r in updated] == [td(1)]
    assert status.phase == "shifting"


def test_roll_back_of_a_first_deployment_leaves_the_service_without_tasks(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec
) -> None:
    scaled = replace(service, autoscaling=Autoscaling(metric="cpu", target=60, min_count=1, max_count=4))
    handle = deploy_first(backend, stub, scaled, revision("d41", ALL_AT_ONCE))
    updated = record_requests("UpdateService")
    expect_describe(stub, paused(1))
    stub.add_response(
        "continue_service_deployment",
        {"serviceDeploymentArn": sd(1)},
        {"serviceDeploymentArn": sd(1), "hookId": hook()["hookId"], "action": "CONTINUE"},
    )
    done = service_deployment(1, "SUCCESSFUL", rollout=ALL_AT_ONCE, hooks=[hook("SUCCEEDED")], source=None)
    expect_describe(stub, done)

    status = backend.roll_back(scaled, handle)

    assert updated == [{"cluster": CLUSTER, "service": NAME, "desiredCount": 0}]
    targets = aws.aws_client("application-autoscaling", region=REGION).describe_scalable_targets(ServiceNamespace="ecs")
    assert targets["ScalableTargets"] == []
    # moto makes the running count follow the desired count at once.
    assert (status.phase, status.final) == ("rolled_back", True)


def test_progress_of_an_unknown_service_is_deployment_not_found(
    backend: FargateServingBackend, service: ServiceSpec
) -> None:
    with pytest.raises(DeploymentNotFound):
        backend.progress(service, Handle(revision=td(1), rollout_id=sd(1)))


# --- rolling updates --------------------------------------------------------------------------------------------------

ROLLING = Rollout("rolling", bake_minutes=5)


def test_a_rolling_update_bakes_after_ecs_finished_then_waits_for_the_verdict(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec
) -> None:
    handle = deploy_second(backend, stub, service, revision("d42", ROLLING))
    done = service_deployment(2, "SUCCESSFUL", rollout=ROLLING)  # finished two minutes ago
    expect_describe(stub, done)

    baking = backend.progress(service, handle)

    assert (baking.phase, baking.traffic_percent, baking.seconds_to_next_step) == ("baking", 100.0, 180.0)

    later = NOW + timedelta(minutes=4)
    backend.clock = later.timestamp
    expect_describe(stub, done)
    assert backend.progress(service, handle).phase == "paused"

    expect_describe(stub, done, done)
    promoted = backend.promote(service, handle)

    assert (promoted.phase, promoted.final) == ("complete", True)
    tags = moto_ecs().describe_task_definition(taskDefinition=td(2), include=["TAGS"])["tags"]
    assert {t["key"]: t["value"] for t in tags}["controlplane:verdict"] == "promoted"
    expect_describe(stub, done)
    assert backend.progress(service, handle).phase == "complete"


def test_a_rolling_update_in_progress_shares_traffic_by_running_tasks() -> None:
    handle = Handle(revision=td(2), rollout_id=sd(2), previous_revision=td(1))
    service = ecs_service(td(2), deploymentConfiguration=deployment_configuration(ROLLING))
    service["deployments"] = [
        {**service["deployments"][0], "runningCount": 1},
        {
            **service["deployments"][0],
            "id": "ecs-svc/1",
            "status": "ACTIVE",
            "taskDefinition": td(1),
            "runningCount": 2,
        },
    ]
    starting = service_deployment(2, "IN_PROGRESS", rollout=ROLLING, running=0)
    shifting = service_deployment(2, "IN_PROGRESS", rollout=ROLLING, running=1)

    assert rollout_status(handle, service=service, deployment=starting, now=NOW.timestamp()).phase == "starting"
    status = rollout_status(handle, service=service, deployment=shifting, now=NOW.timestamp())
    assert status.phase == "shifting"
    assert round(status.traffic_percent, 1) == 33.3


# --- autoscaling and scale --------------------------------------------------------------------------------------------


def autoscaling_state() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    client = aws.aws_client("application-autoscaling", region=REGION)
    targets = client.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]
    policies = client.describe_scaling_policies(ServiceNamespace="ecs")["ScalingPolicies"]
    return targets, {p["PolicyName"]: p for p in policies}


def label(network: Network, target_group: str) -> str:
    return f"{network.load_balancer.split(':loadbalancer/')[1]}/{target_group.split(':')[-1]}"


def test_the_first_deploy_registers_the_service_for_request_based_target_tracking(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec, network: Network
) -> None:
    scaled = replace(
        service, desired_count=9, autoscaling=Autoscaling(metric="requests", target=200, min_count=2, max_count=6)
    )
    created = record_requests("CreateService")

    deploy_first(backend, stub, scaled)

    assert created[0]["desiredCount"] == 6
    targets, policies = autoscaling_state()
    assert [(t["ResourceId"], t["ScalableDimension"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [
        (f"service/{CLUSTER}/{NAME}", "ecs:service:DesiredCount", 2, 6)
    ]
    policy = policies[f"{NAME}-requests"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    configuration = policy["TargetTrackingScalingPolicyConfiguration"]
    assert configuration["TargetValue"] == 200.0
    assert configuration["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "ALBRequestCountPerTarget",
        "ResourceLabel": label(network, network.blue),
    }


def test_promote_points_request_tracking_at_the_target_group_ecs_switched_production_to(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec, network: Network
) -> None:
    scaled = replace(service, autoscaling=Autoscaling(metric="requests", target=200, min_count=2, max_count=6))
    handle = deploy_second(backend, stub, scaled, revision("d42", ALL_AT_ONCE))
    # What ECS does at PRODUCTION_TRAFFIC_SHIFT: the production rule now forwards to the green target group.
    aws.aws_client("elbv2", region=REGION).modify_rule(
        RuleArn=network.rule,
        Actions=[
            {
                "Type": "forward",
                "ForwardConfig": {
                    "TargetGroups": [
                        {"TargetGroupArn": network.blue, "Weight": 0},
                        {"TargetGroupArn": network.green, "Weight": 100},
                    ]
                },
            }
        ],
    )
    expect_describe(stub, paused())
    stub.add_response(
        "continue_service_deployment",
        {"serviceDeploymentArn": sd(2)},
        {"serviceDeploymentArn": sd(2), "hookId": hook()["hookId"], "action": "CONTINUE"},
    )
    expect_describe(stub, service_deployment(2, "SUCCESSFUL", rollout=ALL_AT_ONCE, hooks=[hook("SUCCEEDED")]))

    backend.promote(scaled, handle)

    metric = autoscaling_state()[1][f"{NAME}-requests"]["TargetTrackingScalingPolicyConfiguration"]
    assert metric["PredefinedMetricSpecification"]["ResourceLabel"] == label(network, network.green)


def test_scale_sets_the_desired_count_within_the_bounds_and_switches_the_tracked_metric(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec
) -> None:
    deploy_first(
        backend,
        stub,
        replace(service, autoscaling=Autoscaling(metric="requests", target=200, min_count=1, max_count=4)),
    )
    updated = record_requests("UpdateService")

    backend.scale(replace(service, desired_count=0, autoscaling=Autoscaling("cpu", 60, min_count=2, max_count=5)))

    assert updated == [{"cluster": CLUSTER, "service": NAME, "desiredCount": 2}]
    targets, policies = autoscaling_state()
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(2, 5)]
    assert set(policies) == {f"{NAME}-cpu"}
    configuration = policies[f"{NAME}-cpu"]["TargetTrackingScalingPolicyConfiguration"]
    assert configuration["PredefinedMetricSpecification"] == {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}
    assert configuration["TargetValue"] == 60.0

    backend.scale(replace(service, desired_count=3))

    assert updated[-1] == {"cluster": CLUSTER, "service": NAME, "desiredCount": 3}
    assert autoscaling_state() == ([], {})
    assert moto_ecs().describe_services(cluster=CLUSTER, services=[NAME])["services"][0]["desiredCount"] == 3


def test_scale_of_a_service_that_was_never_deployed_is_deployment_not_found(
    backend: FargateServingBackend, service: ServiceSpec
) -> None:
    with pytest.raises(DeploymentNotFound):
        backend.scale(service)


# --- status -----------------------------------------------------------------------------------------------------------


def test_status_gives_the_address_and_the_revision_serving(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec, network: Network
) -> None:
    deploy_first(backend, stub, service)

    status = backend.status(service)

    assert (status.address, status.serving_revision, status.desired) == ("https://churn.example.internal", td(1), 2)
    unnamed = replace(service, settings={k: v for k, v in network.settings.items() if k != "address"})
    assert backend.status(unnamed).address == f"http://{network.dns_name}"


def test_status_mid_rollout_is_the_revision_being_replaced(
    network: Network, stub: Stubber, service: ServiceSpec
) -> None:
    backend = FargateServingBackend(REGION, ecs_client=stub.client, clock=NOW.timestamp)
    rolling_out = ecs_service(td(2))
    rolling_out["deployments"].append(
        {**rolling_out["deployments"][0], "id": "ecs-svc/1", "status": "ACTIVE", "taskDefinition": td(1)}
    )
    finished = ecs_service(td(2))
    finished["deployments"][0]["rolloutState"] = "COMPLETED"
    for found in (rolling_out, finished):
        stub.add_response(
            "describe_services", {"services": [found], "failures": []}, {"cluster": CLUSTER, "services": [NAME]}
        )

    assert backend.status(service).serving_revision == td(1)
    assert backend.status(service).serving_revision == td(2)


# --- every request against botocore's model ---------------------------------------------------------------------------
# moto accepts fields ECS would refuse; here a Stubber checks the exact requests (and the answers) against the model.

STUB_BLUE = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/churn-blue/943f017f100becff"
STUB_GREEN = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/churn-green/5c1e2d7f3a9b8c01"
STUB_RULE = (
    f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:listener-rule/app/controlplane/778d41231b141a0f/"
    "9683b2d02a6cabee/aa4b7e3c2d1f0e95"
)
STUB_SETTINGS = {
    "cluster": CLUSTER,
    "subnets": "subnet-0a1b2c3d4e5f60718,subnet-0f1e2d3c4b5a69788",
    "security_groups": ["sg-0123456789abcdef0"],
    "target_group_arn": STUB_BLUE,
    "alternate_target_group_arn": STUB_GREEN,
    "production_listener_rule_arn": STUB_RULE,
    "load_balancer_role_arn": LB_ROLE,
    "execution_role_arn": EXECUTION_ROLE,
    "task_role_arn": TASK_ROLE,
    "alarm_names": [ALARM],
    "log_group": "/controlplane/serving/production",
    "health_check_grace_seconds": 90,
}


def expected_task_definition(deployment: str, replaces: str, bake: str) -> dict[str, Any]:
    return {
        "family": NAME,
        "taskRoleArn": TASK_ROLE,
        "executionRoleArn": EXECUTION_ROLE,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "512",
        "memory": "1024",
        "containerDefinitions": [
            {
                "name": "serving",
                "image": IMAGE,
                "essential": True,
                "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
                "environment": [{"name": k, "value": v} for k, v in sorted(environment(deployment).items())],
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": "/controlplane/serving/production",
                        "awslogs-region": REGION,
                        "awslogs-stream-prefix": NAME,
                    },
                },
                "healthCheck": {
                    "command": [
                        "CMD",
                        "python",
                        "-c",
                        "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=4)",
                    ],
                    "interval": 10,
                    "timeout": 5,
                    "retries": 3,
                    "startPeriod": 60,
                },
                "stopTimeout": 30,
            }
        ],
        "tags": [
            {"key": "controlplane:bake-minutes", "value": bake},
            {"key": "controlplane:replaces", "value": replaces},
            {"key": "deployment", "value": deployment},
            {"key": "environment", "value": "production"},
            {"key": "model", "value": "churn-classifier"},
            {"key": "project", "value": "churn"},
        ],
    }


def registered(n: int, deployment: str) -> dict[str, Any]:
    """RegisterTaskDefinition's (and DescribeTaskDefinition's) answer for revision n."""
    request = expected_task_definition(deployment, td(n - 1) if n > 1 else "", "5")
    task = {key: value for key, value in request.items() if key != "tags"}
    task.update(
        {
            "taskDefinitionArn": td(n),
            "revision": n,
            "status": "ACTIVE",
            "compatibilities": ["EC2", "FARGATE"],
            "registeredAt": NOW - timedelta(hours=1),
            "registeredBy": f"arn:aws:sts::{ACCOUNT}:assumed-role/controlplane-worker/celery",
        }
    )
    return {"taskDefinition": task, "tags": request["tags"]}


def expected_load_balancers(strategy: str) -> list[dict[str, Any]]:
    load_balancer: dict[str, Any] = {"targetGroupArn": STUB_BLUE, "containerName": "serving", "containerPort": 8080}
    if strategy != "rolling":
        load_balancer["advancedConfiguration"] = {
            "alternateTargetGroupArn": STUB_GREEN,
            "productionListenerRule": STUB_RULE,
            "roleArn": LB_ROLE,
        }
    return [load_balancer]


@pytest.mark.parametrize("strategy", sorted(EXPECTED_CONFIGURATIONS))
def test_every_request_of_two_deploys_is_the_one_the_ecs_model_takes(
    aws_env: str, stub: Stubber, elbv2_stub_client: BaseClient, strategy: str
) -> None:
    rollout, configuration = EXPECTED_CONFIGURATIONS[strategy]
    service = ServiceSpec(name=NAME, desired_count=2, settings=STUB_SETTINGS, tags=COST_TAGS)
    elbv2 = Stubber(elbv2_stub_client)
    elbv2.activate()
    backend = FargateServingBackend(REGION, ecs_client=stub.client, elbv2_client=elbv2_stub_client, clock=NOW.timestamp)
    bake = str(math.ceil(rollout.bake_minutes))
    # Before the service is made behind them, its target groups (ELB's defaults: `/`) are pointed at /ping.
    groups = [STUB_BLUE] if strategy == "rolling" else [STUB_BLUE, STUB_GREEN]
    elbv2.add_response(
        "describe_target_groups",
        {"TargetGroups": [target_group(arn, "/") for arn in groups]},
        {"TargetGroupArns": groups},
    )
    for arn in groups:
        elbv2.add_response(
            "modify_target_group",
            {"TargetGroups": [target_group(arn, "/ping")]},
            {"TargetGroupArn": arn, **ON_PING, "HealthCheckEnabled": True},
        )

    # The first deploy: no service, no family yet.
    stub.add_response(
        "describe_services",
        {"services": [], "failures": [{"arn": SERVICE_ARN, "reason": "MISSING"}]},
        {"cluster": CLUSTER, "services": [NAME]},
    )
    stub.add_client_error(
        "describe_task_definition",
        service_error_code="ClientException",
        service_message="Unable to describe task definition.",
        http_status_code=400,
        expected_params={"taskDefinition": NAME, "include": ["TAGS"]},
    )
    first = expected_task_definition("d41", "", bake)
    stub.add_response("register_task_definition", registered(1, "d41"), first)
    stub.add_response(
        "create_service",
        {"service": ecs_service(td(1), currentServiceDeployment=sd(1), deploymentConfiguration=configuration)},
        {
            "cluster": CLUSTER,
            "serviceName": NAME,
            "taskDefinition": td(1),
            "desiredCount": 2,
            "clientToken": ANY,
            "launchType": "FARGATE",
            "schedulingStrategy": "REPLICA",
            "deploymentController": {"type": "ECS"},
            "deploymentConfiguration": configuration,
            "loadBalancers": expected_load_balancers(strategy),
            "networkConfiguration": {
                "awsvpcConfiguration": {
                    "subnets": ["subnet-0a1b2c3d4e5f60718", "subnet-0f1e2d3c4b5a69788"],
                    "securityGroups": ["sg-0123456789abcdef0"],
                    "assignPublicIp": "DISABLED",
                }
            },
            "healthCheckGracePeriodSeconds": 90,
            "propagateTags": "TASK_DEFINITION",
            "enableECSManagedTags": True,
            "tags": [
                {"key": "environment", "value": "production"},
                {"key": "model", "value": "churn-classifier"},
                {"key": "project", "value": "churn"},
            ],
        },
    )

    assert backend.deploy(service, revision("d41", rollout)) == Handle(revision=td(1), rollout_id=sd(1))

    # The second: the service runs revision 1; the family's latest revision is d41's.
    running = ecs_service(
        td(1),
        currentServiceDeployment=sd(1),
        deploymentConfiguration=configuration,
        loadBalancers=expected_load_balancers(strategy),
    )
    stub.add_response(
        "describe_services", {"services": [running], "failures": []}, {"cluster": CLUSTER, "services": [NAME]}
    )
    stub.add_response("describe_task_definition", registered(1, "d41"), {"taskDefinition": NAME, "include": ["TAGS"]})
    stub.add_response("register_task_definition", registered(2, "d42"), expected_task_definition("d42", td(1), bake))
    stub.add_response(
        "update_service",
        {"service": ecs_service(td(2), currentServiceDeployment=sd(2), deploymentConfiguration=configuration)},
        {"cluster": CLUSTER, "service": NAME, "taskDefinition": td(2), "deploymentConfiguration": configuration},
    )

    handle = backend.deploy(service, revision("d42", rollout))

    assert handle == Handle(revision=td(2), rollout_id=sd(2), previous_revision=td(1))
    elbv2.assert_no_pending_responses()  # the second deploy changed no target group
    elbv2.deactivate()


def test_a_first_deploy_repeated_after_dying_before_autoscaling_registers_it(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec
) -> None:
    scaled = replace(service, autoscaling=Autoscaling(metric="cpu", target=60, min_count=1, max_count=4))
    autoscaling = aws.aws_client("application-autoscaling", region=REGION)

    def die(**_: Any) -> None:
        raise RuntimeError("the worker died here")

    autoscaling.meta.events.register_first("before-send.application-autoscaling.RegisterScalableTarget", die)
    with pytest.raises(RuntimeError):
        backend.deploy(scaled, revision("d41"))
    autoscaling.meta.events.unregister("before-send.application-autoscaling.RegisterScalableTarget", die)
    created = record_requests("CreateService")
    expect_lookup(stub, [(1, 1)])

    handle = backend.deploy(scaled, revision("d41"))

    assert handle == Handle(revision=td(1), rollout_id=sd(1), previous_revision="")
    assert created == []
    targets, policies = autoscaling_state()
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(1, 4)]
    assert set(policies) == {f"{NAME}-cpu"}


def model_problems(shape: Any, value: Any, path: str) -> list[str]:
    """What in a request body the service model does not take: unknown members, values outside an enum, missing
    required members (botocore's own validation skips enums; moto checks none of it)."""
    if shape.type_name == "structure":
        found = [f"{path}.{key} is not in the model" for key in value if key not in shape.members]
        found += [f"{path}.{key} is required" for key in shape.required_members if key not in value]
        for key, item in value.items():
            if key in shape.members:
                found += model_problems(shape.members[key], item, f"{path}.{key}")
        return found
    if shape.type_name == "list":
        return [p for i, item in enumerate(value) for p in model_problems(shape.member, item, f"{path}[{i}]")]
    if shape.type_name == "map":
        return [p for key, item in value.items() for p in model_problems(shape.value, item, f"{path}[{key}]")]
    if shape.type_name == "string" and getattr(shape, "enum", None) and value not in shape.enum:
        return [f"{path}={value!r} is not one of {shape.enum}"]
    return []


def test_every_request_a_whole_rollout_sends_is_one_the_service_models_take(
    backend: FargateServingBackend, stub: Stubber, service: ServiceSpec
) -> None:
    sent: list[tuple[BaseClient, str, dict[str, Any]]] = []
    clients = [moto_ecs(), aws.aws_client("application-autoscaling", region=REGION), stub.client]

    def capture(client: BaseClient) -> Any:
        def record(request: Any, event_name: str, **_: Any) -> None:
            sent.append((client, event_name.rsplit(".", 1)[-1], json.loads(request.body)))

        return record

    for client in clients:
        prefix = client.meta.service_model.endpoint_prefix
        client.meta.events.register(f"before-send.{prefix}", capture(client))
    # The Stubber answers before anything is sent; its requests are checked by the same walk, from their parameters.
    stubbed: list[tuple[str, dict[str, Any]]] = []
    stub.client.meta.events.register_first(
        "before-parameter-build.ecs", lambda model, params, **_: stubbed.append((model.name, dict(params)))
    )
    # ELBv2 speaks the query protocol: its requests are checked from their parameters too.
    balancing = record_elbv2_calls()

    scaled = replace(service, autoscaling=Autoscaling(metric="requests", target=150, min_count=1, max_count=4))
    handle = deploy_second(backend, stub, scaled, revision("d42", LINEAR))
    expect_describe(stub, paused(2, LINEAR))
    stub.add_response(
        "continue_service_deployment",
        {"serviceDeploymentArn": sd(2)},
        {"serviceDeploymentArn": sd(2), "hookId": hook()["hookId"], "action": "CONTINUE"},
    )
    done = service_deployment(2, "SUCCESSFUL", rollout=LINEAR, hooks=[hook("SUCCEEDED")])
    expect_describe(stub, done)
    backend.promote(scaled, handle)
    expect_describe(stub, done, done)
    expect_lookup(stub, [(1, 1), (2, 2), (3, 1)])
    expect_describe(stub, service_deployment(3, "IN_PROGRESS", stage="SCALE_UP", source=2))
    backend.roll_back(scaled, handle)
    backend.scale(replace(scaled, autoscaling=Autoscaling(metric="cpu", target=70, min_count=1, max_count=4)))
    backend.status(scaled)

    operations = {name for _, name, _ in sent} | {name for name, _ in stubbed}
    assert {"RegisterTaskDefinition", "CreateService", "UpdateService", "TagResource", "ContinueServiceDeployment"} <= (
        operations
    )
    assert {"RegisterScalableTarget", "PutScalingPolicy"} <= operations
    problems = []
    for client, name, body in sent:
        shape = client.meta.service_model.operation_model(name).input_shape
        problems += model_problems(shape, body, name)
    for name, params in stubbed:
        problems += model_problems(stub.client.meta.service_model.operation_model(name).input_shape, params, name)
    elbv2_model = moto_elbv2().meta.service_model
    assert {"DescribeTargetGroups", "ModifyTargetGroup", "DescribeRules"} <= {name for name, _ in balancing}
    for name, params in balancing:
        problems += model_problems(elbv2_model.operation_model(name).input_shape, params, name)
    assert problems == []


# --- usage: the service's tasks, for cost estimates ------------------------------------------------------------------

# moto 5.2's ListTasks ignores serviceName and maxResults (one page, every task of the cluster) and its tasks have no
# startedAt, stoppedAt, cpu or memory: the listings and the descriptions come from the Stubber; the task definitions
# they name are moto's.
USAGE_STUBBED = MOTO_LACKS | {"list_tasks", "describe_tasks"}


def task_arn(i: int) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{CLUSTER}/{i:032x}"


def ecs_task(
    i: int, revision_arn: str, *, started: datetime | None, stopped: datetime | None = None, size: int = 512
) -> dict[str, Any]:
    """A DescribeTasks entry as ECS gives it for a task of the service (a Fargate task's cpu and memory are strings)."""
    found: dict[str, Any] = {
        "taskArn": task_arn(i),
        "clusterArn": CLUSTER_ARN,
        "taskDefinitionArn": revision_arn,
        "lastStatus": "STOPPED" if stopped else ("RUNNING" if started else "PROVISIONING"),
        "desiredStatus": "STOPPED" if stopped else "RUNNING",
        "launchType": "FARGATE",
        "group": f"service:{NAME}",
        "startedBy": "ecs-svc/8146728364810924356",
        "cpu": str(size),
        "memory": str(size * 2),
        "createdAt": (started or NOW) - timedelta(seconds=40),
    }
    if started:
        found["pullStartedAt"] = started - timedelta(seconds=30)
        found["startedAt"] = started
    if stopped:
        found.update(
            stoppingAt=stopped - timedelta(seconds=20), stoppedAt=stopped, stopCode="ServiceSchedulerInitiated"
        )
    return found


def test_usage_spans_each_task_ecs_lists_at_its_size_for_the_deployment_it_serves(
    network: Network, stub: Stubber, service: ServiceSpec
) -> None:
    ecs = PartlyStubbed(aws.aws_client("ecs", region=REGION), stub.client, USAGE_STUBBED)
    backend = FargateServingBackend(REGION, ecs_client=cast(BaseClient, ecs), clock=NOW.timestamp)
    # td(1): d41 (tagged d41); td(2): d42 as the Django side deploys it, tagged with the deployment's number.
    deploy_second(backend, stub, service, revision("d42", tags={"deployment": "42"}, cpu=1024, memory=2048))
    # td(3): a revision whose container has no REVISION (registered by hand): its deployment tag says which.
    moto_ecs().register_task_definition(
        family=NAME,
        cpu="256",
        memory="512",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        containerDefinitions=[{"name": "serving", "image": IMAGE, "environment": []}],
        tags=[{"key": "deployment", "value": "d40"}],
    )
    sent: list[tuple[str, dict[str, Any]]] = []
    stub.client.meta.events.register_first(
        "before-parameter-build.ecs", lambda model, params, **_: sent.append((model.name, dict(params)))
    )
    described = record_requests("DescribeTaskDefinition")
    since = NOW - timedelta(hours=1)
    tasks = [ecs_task(i, td(2), started=NOW - timedelta(minutes=10), size=1024) for i in range(99)]
    tasks.append(ecs_task(99, td(2), started=None))  # still provisioning: never started
    tasks += [ecs_task(i, td(1), started=NOW - timedelta(hours=2)) for i in range(100, 104)]
    tasks.append(ecs_task(104, td(1), started=NOW - timedelta(hours=3), stopped=NOW - timedelta(minutes=5)))
    tasks.append(ecs_task(105, td(1), started=NOW - timedelta(hours=3), stopped=NOW - timedelta(minutes=90)))
    tasks.append(ecs_task(106, td(3), started=NOW - timedelta(minutes=50), stopped=NOW - timedelta(minutes=30)))
    tasks.append(ecs_task(107, td(9), started=NOW - timedelta(minutes=20), size=256))  # its definition deleted since
    listing = {"cluster": CLUSTER, "serviceName": NAME, "maxResults": 100}
    running = [task_arn(i) for i in range(105)]
    stub.add_response(
        "list_tasks", {"taskArns": running[:100], "nextToken": "page-2"}, {**listing, "desiredStatus": "RUNNING"}
    )
    stub.add_response(
        "list_tasks",
        {"taskArns": running[100:] + [task_arn(107)]},
        {**listing, "desiredStatus": "RUNNING", "nextToken": "page-2"},
    )
    # Task 104 stopped between the two listings: it is in both, and described once.
    stopped = [task_arn(i) for i in (104, 105, 106)]
    stub.add_response("list_tasks", {"taskArns": stopped}, {**listing, "desiredStatus": "STOPPED"})
    order = running + [task_arn(107), task_arn(105), task_arn(106)]
    by_arn = {t["taskArn"]: t for t in tasks}
    for offset in (0, 100):
        batch = order[offset : offset + 100]
        stub.add_response(
            "describe_tasks",
            {"tasks": [by_arn[arn] for arn in batch], "failures": []},
            {"cluster": CLUSTER, "tasks": batch},
        )

    spans = backend.usage(service, since=since)

    assert len(spans) == 99 + 4 + 1 + 1 + 1
    assert [s.started_at for s in spans] == sorted(s.started_at for s in spans)
    by_task = {span.process: span for span in spans}
    assert by_task[task_arn(0)] == ServingSpan("d42", task_arn(0), NOW - timedelta(minutes=10), None, 1024, 2048)
    assert by_task[task_arn(100)] == ServingSpan("d41", task_arn(100), NOW - timedelta(hours=2), None, 512, 1024)
    assert by_task[task_arn(104)] == ServingSpan(
        "d41", task_arn(104), NOW - timedelta(hours=3), NOW - timedelta(minutes=5), 512, 1024
    )
    assert by_task[task_arn(106)].revision == "d40"
    assert by_task[task_arn(107)] == ServingSpan(td(9), task_arn(107), NOW - timedelta(minutes=20), None, 256, 512)
    assert task_arn(99) not in by_task and task_arn(105) not in by_task
    assert all(span.started_at.tzinfo is not None for span in spans)
    # Each task definition is described once, however many tasks it ran.
    assert sorted(body["taskDefinition"] for body in described) == [td(1), td(2), td(3), td(9)]
    problems = []
    for name, params in sent:
        if name in ("ListTasks", "DescribeTasks"):
            problems += model_problems(stub.client.meta.service_model.operation_model(name).input_shape, params, name)
    assert problems == []
    assert sum(1 for name, _ in sent if name == "ListTasks") == 3


def test_usage_of_a_service_ecs_does_not_know_is_empty_and_a_missing_cluster_is_said(
    aws_env: str, stub: Stubber, service: ServiceSpec
) -> None:
    backend = FargateServingBackend(REGION, ecs_client=stub.client, clock=NOW.timestamp)
    listing = {"cluster": CLUSTER, "serviceName": NAME, "maxResults": 100}
    for desired in ("RUNNING", "STOPPED"):
        stub.add_client_error(
            "list_tasks",
            service_error_code="ServiceNotFoundException",
            service_message="Service not found.",
            http_status_code=400,
            expected_params={**listing, "desiredStatus": desired},
        )
    assert backend.usage(service, since=NOW - timedelta(hours=1)) == []
    stub.add_client_error(
        "list_tasks",
        service_error_code="ClusterNotFoundException",
        service_message="Cluster not found.",
        http_status_code=400,
        expected_params={**listing, "desiredStatus": "RUNNING"},
    )
    with pytest.raises(BackendError) as caught:
        backend.usage(service, since=NOW - timedelta(hours=1))
    assert caught.value.permanent and "(setting cluster)" in caught.value.message
    with pytest.raises(ValueError):
        backend.usage(service, since=datetime(2026, 5, 4, 11, 0))
