"""Writes and transitions for deployments/, one module per concern:

  environments: where models are promoted to (admins) · approvals: approval requests, decisions, the artifact check,
  expiry, what users are told · mirror: the SageMaker Model Registry mirror of requests (aws backend)

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
from deployments.services.environments import (
    ENVIRONMENT_FIELDS,
    MAX_APPROVALS,
    WHOLE_NUMBER_RANGES,
    environment_create,
    environment_update,
)
from deployments.services.mirror import approval_mirror_fail, approval_mirror_sync

__all__ = [
    "APPROVAL_MACHINE",
    "ENVIRONMENT_FIELDS",
    "MAX_APPROVALS",
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
