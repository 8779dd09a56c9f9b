"""The one place boto3 clients are built, and where AWS errors become the workers' own errors."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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

from workers.errors import BackendError

DEFAULT_REGION = "us-east-1"

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

_clients: dict[tuple[str, str, str | None], BaseClient] = {}
# boto3 sessions are not thread-safe, so each client gets its own session, built under this lock.
_clients_lock = threading.Lock()


def default_region() -> str:
    """The region from AWS_REGION or AWS_DEFAULT_REGION, else us-east-1."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def default_endpoint_url() -> str | None:
    """The endpoint from AWS_ENDPOINT_URL (e.g. a moto server), or None for the real AWS endpoints."""
    return os.environ.get("AWS_ENDPOINT_URL") or None


def aws_client(service: str, *, region: str | None = None, endpoint_url: str | None = None) -> BaseClient:
    """A shared, thread-safe boto3 client for `service`, with the project's retry and timeout settings."""
    resolved_region = region or default_region()
    resolved_endpoint = endpoint_url or default_endpoint_url()
    cache_key = (service, resolved_region, resolved_endpoint)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            session = boto3.session.Session(region_name=resolved_region)
            config = S3_CLIENT_CONFIG if service == "s3" else CLIENT_CONFIG
            client = session.client(service, endpoint_url=resolved_endpoint, config=config)
            _clients[cache_key] = client
    return client


def clear_client_cache() -> None:
    """Forget every cached client, so the next call reads credentials, region and endpoint afresh."""
    with _clients_lock:
        _clients.clear()


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
