"""The one place boto3 clients are built, and where AWS errors become the workers' own errors."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    IncompleteReadError,
)

from workers.errors import BackendError, ConfigError

log = logging.getLogger(__name__)

CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=60,
)

# Codes AWS uses to say "slow down" or "try again"; botocore already retried them, so the caller may retry later.
RETRYABLE_ERROR_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "ProvisionedThroughputExceededException",
        "BandwidthLimitExceeded",
        "EC2ThrottledException",
        "PriorRequestNotComplete",
        "TransactionInProgressException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)

# Presigned S3 URLs would otherwise use the deprecated Signature Version 2 in us-east-1.
S3_CLIENT_CONFIG = CLIENT_CONFIG.merge(Config(signature_version="s3v4"))
# S3-compatible stores (MinIO, Ceph, older LocalStack) refuse boto3's default aws-chunked checksum trailers.
S3_COMPATIBLE_CONFIG = S3_CLIENT_CONFIG.merge(
    Config(request_checksum_calculation="when_required", response_checksum_validation="when_required")
)
# A region as AWS names them: us-east-1, eu-central-2, us-gov-west-1, cn-north-1, us-isob-east-1.
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]+")
# The DNS suffixes of AWS's own endpoints (commercial, China, GovCloud/ISO partitions).
_AWS_ENDPOINT_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn", ".c2s.ic.gov", ".sc2s.sgov.gov", ".api.aws")

_clients: dict[tuple[str, str, str | None], BaseClient] = {}
# boto3 sessions are not thread-safe, so each client gets its own session, built under this lock.
_clients_lock = threading.Lock()
# Each bucket's region, learned once per endpoint and bucket: presigned URLs must be signed for it.
_bucket_regions: dict[tuple[str, str], str] = {}
_bucket_regions_lock = threading.Lock()


def default_endpoint_url() -> str | None:
    """The endpoint from AWS_ENDPOINT_URL (e.g. a moto server), or None for the real AWS endpoints."""
    return os.environ.get("AWS_ENDPOINT_URL") or None


def is_aws_endpoint(endpoint_url: str | None) -> bool:
    """Whether `endpoint_url` is AWS itself (None: boto3's own AWS endpoints), not an S3-compatible store."""
    if not endpoint_url:
        return True
    host = (urlsplit(endpoint_url).hostname or "").lower()
    return host.endswith(_AWS_ENDPOINT_SUFFIXES)


def check_region(region: str) -> str:
    """`region` if it is an AWS region name, else a ConfigError naming AWS_REGION."""
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        raise ConfigError(f"AWS_REGION {region!r} is not an AWS region name (e.g. us-east-1, eu-central-1)")
    return region


# Who hears of AWS retries: (service, operation, retries, gave_up) → None. The portal sets one that counts them per
# day in its database (controlplane.services.aws_retries_record, shown on the status page); workers never import it.
RetryRecorder = Callable[[str, str, int, bool], None]
_retry_recorder: RetryRecorder | None = None


def set_retry_recorder(recorder: RetryRecorder | None) -> None:
    global _retry_recorder
    _retry_recorder = recorder


def _report_retries(service: str, operation: str, retries: int, gave_up: bool) -> None:
    if not retries and not gave_up:
        return
    log.warning("AWS %s.%s: retried %d time(s)%s", service, operation, retries, ", then gave up" if gave_up else "")
    if _retry_recorder is not None:
        try:
            _retry_recorder(service, operation, retries, gave_up)
        except Exception:  # counting must never break the call it counts
            log.exception("could not count the AWS retries of %s.%s", service, operation)


def _after_call(http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
    """botocore's after-call event (every answer, error or not, once its own retries are done): count them."""
    metadata = parsed.get("ResponseMetadata", {}) if isinstance(parsed, dict) else {}
    retries = int(metadata.get("RetryAttempts") or 0)
    status = getattr(http_response, "status_code", 200)
    gave_up = False
    if status >= 300:
        code = str(parsed.get("Error", {}).get("Code", "")) if isinstance(parsed, dict) else ""
        gave_up = code in RETRYABLE_ERROR_CODES or status >= 500 or status == 429
    _report_retries(model.service_model.service_name, model.name, retries, gave_up)


def _after_call_error(exception: Exception, context: dict[str, Any], event_name: str = "", **_: Any) -> None:
    """botocore's after-call-error event: no answer at all (the connection failed on every attempt). The event is
    named after-call-error.<service id>.<operation>."""
    names = event_name.split(".")
    service, operation = (names[1], names[2]) if len(names) >= 3 else ("", "")
    attempt = (context or {}).get("retries", {}).get("attempt", 1)
    _report_retries(service, operation, max(int(attempt) - 1, 0), True)


def aws_client(service: str, *, region: str, endpoint_url: str | None = None) -> BaseClient:
    """A shared, thread-safe boto3 client for `service` in `region` (settings.AWS_REGION, passed in: workers never
    read the region from the environment), with the project's retry and timeout settings."""
    check_region(region)
    resolved_endpoint = endpoint_url or default_endpoint_url()
    cache_key = (service, region, resolved_endpoint)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            session = boto3.session.Session(region_name=region)
            if service != "s3":
                config = CLIENT_CONFIG
            elif is_aws_endpoint(resolved_endpoint):
                config = S3_CLIENT_CONFIG
            else:
                config = S3_COMPATIBLE_CONFIG
            client = session.client(service, endpoint_url=resolved_endpoint, config=config)
            client.meta.events.register("after-call", _after_call)
            client.meta.events.register("after-call-error", _after_call_error)
            _clients[cache_key] = client
    return client


def clear_client_cache() -> None:
    """Forget every cached client and learned bucket region, so the next call reads credentials and endpoint afresh."""
    with _clients_lock:
        _clients.clear()
    forget_bucket_regions()


def forget_bucket_regions() -> None:
    """Forget the bucket regions learned so far (the buckets may have been made again elsewhere)."""
    with _bucket_regions_lock:
        _bucket_regions.clear()


def bucket_region(client: BaseClient, bucket: str, *, fallback: str) -> str:
    """The region `bucket` lives in, cached per endpoint and bucket: HeadBucket's x-amz-bucket-region header (S3
    sends it with 301 and 403 answers too), else GetBucketLocation (S3-compatible stores); when neither answers,
    `fallback`, not cached, so the next call asks again."""
    cache_key = (str(client.meta.endpoint_url), bucket)
    with _bucket_regions_lock:
        known = _bucket_regions.get(cache_key)
    if known is not None:
        return known
    region: str | None = None
    try:
        region = client.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPHeaders"].get("x-amz-bucket-region")
    except ClientError as exc:
        region = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
    except BotoCoreError:
        region = None
    if not region:
        try:
            constraint = client.get_bucket_location(Bucket=bucket).get("LocationConstraint")
        except (ClientError, BotoCoreError):
            return fallback
        # S3 answers no constraint for us-east-1 and the legacy "EU" for eu-west-1.
        region = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(constraint, constraint)
    with _bucket_regions_lock:
        _bucket_regions[cache_key] = str(region)
    return str(region)


def is_retryable_client_error(exc: ClientError) -> bool:
    """Whether AWS said the request may succeed if tried again later (throttling, timeouts, 5xx)."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in RETRYABLE_ERROR_CODES:
        return True
    if isinstance(status, int) and (status >= 500 or status == 429):
        return True
    # HEAD responses have no body, so botocore reports the bare status as the code.
    return code.isdigit() and int(code) >= 500


def translate_client_error(exc: ClientError, *, action: str) -> BackendError:
    """The BackendError for an AWS error response, naming the action, the AWS code and the AWS message."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "UnknownError")
    aws_message = str(error.get("Message") or "").strip()
    message = f"Could not {action}: AWS returned {code}"
    if aws_message:
        message += f" ({aws_message})"
    return BackendError(message, permanent=not is_retryable_client_error(exc))


def translate_botocore_error(exc: BotoCoreError, *, action: str) -> BackendError:
    """The BackendError for a failure before AWS answered; connection problems and timeouts are retryable."""
    retryable = isinstance(exc, (ConnectionError, HTTPClientError, IncompleteReadError))
    return BackendError(f"Could not {action}: {exc}", permanent=not retryable)


@contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Re-raise any botocore error inside the block as a BackendError describing `action`."""
    try:
        yield
    except ClientError as exc:
        raise translate_client_error(exc, action=action) from exc
    except BotoCoreError as exc:
        raise translate_botocore_error(exc, action=action) from exc
