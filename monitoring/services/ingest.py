"""The per-service token a serving process sends with its metrics (`Authorization: Bearer <token>`).

The token is HMAC-SHA256(SECRET_KEY, "serving-ingest:" + the service's nonce), so the portal can hand it to every
revision it starts without storing it; only its SHA-256 is stored, and the ingest endpoint compares hashes in
constant time. Rotating makes a new nonce: revisions that run keep the token they were started with, so their
reports are refused (401) until they are redeployed — and a rollback that reuses a revision started before the
rotation reuses that revision's recorded environment, old token included. Rotate, then redeploy.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from django.conf import settings
from django.db import transaction

from controlplane import permissions
from controlplane.services import audit_record
from deployments.models import Service
from deployments.services.deploys import service_project

_PURPOSE = "serving-ingest:"


def _token(nonce: str) -> str:
    return hmac.new(settings.SECRET_KEY.encode(), (_PURPOSE + nonce).encode(), hashlib.sha256).hexdigest()


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def service_ingest_token(service: Service) -> str:
    """The service's ingest token; the first call makes its nonce and stores the token's hash. Safe to race: a
    conditional update picks one nonce, and every caller derives the token from the one stored."""
    if not service.ingest_token_nonce:
        nonce = secrets.token_hex(16)
        Service.objects.filter(pk=service.pk, ingest_token_nonce="").update(
            ingest_token_nonce=nonce, ingest_token_sha256=_sha256(_token(nonce))
        )
        stored = Service.objects.values_list("ingest_token_nonce", "ingest_token_sha256").get(pk=service.pk)
        service.ingest_token_nonce, service.ingest_token_sha256 = stored
    return _token(service.ingest_token_nonce)


# What a rotation does to running revisions, as the page and the API tell the user who rotated.
ROTATION_EFFECT = (
    "The token is never shown: it is derived and handed to each revision when it is deployed. Running revisions keep "
    "the old token, so their metrics are refused (401) until the service is redeployed; a rollback to a revision "
    "started before the rotation also reports with the old token. Rotate, then redeploy."
)


def service_ingest_token_rotate(*, service: Service, actor: Any) -> str:
    """A new token for the service (audited), returned once. Running revisions keep the old one until they are
    redeployed: their reports are refused meanwhile."""
    permissions.require(actor, "deployment.deploy", project=service_project(service.pk))
    with transaction.atomic():
        locked = Service.objects.select_for_update().get(pk=service.pk)
        nonce = secrets.token_hex(16)
        token = _token(nonce)
        had = bool(locked.ingest_token_sha256)
        locked.ingest_token_nonce, locked.ingest_token_sha256 = nonce, _sha256(token)
        locked.save(update_fields=["ingest_token_nonce", "ingest_token_sha256"])
        audit_record(
            actor=actor,
            action="service.ingest_token_rotate",
            object_type="service",
            object_id=locked.pk,
            object_repr=locked.name,
            before={"had_token": had},
            after={"token_sha256_prefix": locked.ingest_token_sha256[:8]},
            reason="running revisions report with the new token once redeployed",
            project=service_project(locked.pk),
        )
    service.ingest_token_nonce, service.ingest_token_sha256 = locked.ingest_token_nonce, locked.ingest_token_sha256
    return token


def service_for_token(service_name: str, token: str) -> Service | None:
    """The service named, when `token` is its ingest token; else None (unknown service or wrong token alike)."""
    service = Service.objects.filter(name=service_name).first() if service_name else None
    offered = _sha256(token or "")
    stored = service.ingest_token_sha256 if service is not None else ""
    # Compared even when there is no service, so the answer's timing does not say which names exist.
    matches = hmac.compare_digest(offered, stored or "0" * 64)
    return service if service is not None and stored and matches else None
