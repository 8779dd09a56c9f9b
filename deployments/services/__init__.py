"""Writes and transitions for deployments/, one module per concern:

  environments: where models are promoted to (admins) · approvals: approval requests, decisions, the artifact check,
  expiry, what users are told · mirror: the SageMaker Model Registry mirror of requests (aws backend)
  deploys: services, deployments and rollbacks, the poll that follows them, scaling

Callers import from here: `from deployments import services; services.approval_decide(...)`.
"""

from deployments.services.approvals import (
    APPROVAL_MACHINE,
    MIN_OVERRIDE_REASON,
    Conflict,
    approval_announce,
    approval_decide,
    approval_finish,
    approval_finish_fail,
    approval_request_create,
    approval_request_expire,
    approval_requests_expire,
    approval_requests_resume,
    approval_withdraw,
)
from deployments.services.deploys import (
    DEPLOYMENT_MACHINE,
    MIN_ROLLBACK_REASON,
    active_deployment,
    backend_settings_problems,
    deploy_on_approval,
    deployment_create,
    deployment_fail,
    deployment_poll,
    deployment_poll_again,
    deployment_rollback,
    deployment_start,
    deployments_resume,
    rollback_target,
    service_scale,
    service_scale_apply,
    serving_backend,
)
from deployments.services.environments import (
    AUTOSCALING_METRICS,
    ENVIRONMENT_FIELDS,
    MAX_APPROVALS,
    NUMBER_RANGES,
    STRATEGIES,
    WHOLE_NUMBER_RANGES,
    environment_create,
    environment_update,
)
from deployments.services.mirror import approval_mirror_fail, approval_mirror_sync

__all__ = [
    "DEPLOYMENT_MACHINE",
    "MIN_ROLLBACK_REASON",
    "active_deployment",
    "backend_settings_problems",
    "deploy_on_approval",
    "deployment_create",
    "deployment_fail",
    "deployment_poll",
    "deployment_poll_again",
    "deployment_rollback",
    "deployment_start",
    "deployments_resume",
    "rollback_target",
    "serving_backend",
    "service_scale",
    "service_scale_apply",
    "APPROVAL_MACHINE",
    "ENVIRONMENT_FIELDS",
    "AUTOSCALING_METRICS",
    "MAX_APPROVALS",
    "NUMBER_RANGES",
    "STRATEGIES",
    "MIN_OVERRIDE_REASON",
    "WHOLE_NUMBER_RANGES",
    "Conflict",
    "approval_announce",
    "approval_decide",
    "approval_finish",
    "approval_finish_fail",
    "approval_mirror_fail",
    "approval_mirror_sync",
    "approval_request_create",
    "approval_request_expire",
    "approval_requests_expire",
    "approval_requests_resume",
    "approval_withdraw",
    "environment_create",
    "environment_update",
]
