"""The price table every cost estimate uses: AWS on-demand prices in USD for the region and date below.

Estimates stand in for the bill until Cost Explorer has it (and are all there is on the local backend), so they use
the prices of what a run or a service stands for: a SageMaker training instance per hour, a Fargate task's vCPU-hours
and GB-hours. Each figure can be overridden from the environment; a bad value stops the process naming it.
"""

from __future__ import annotations

import json

from controlplane.settings.env import ConfigurationError, env_str

# Where and when these were taken from the AWS pricing pages (Linux, on-demand). They were not re-checked from this
# machine, which cannot reach AWS: set PRICES_REGION / PRICES_AS_OF with the figures when you update them.
PRICES_REGION = env_str("PRICES_REGION", "us-east-1") or "us-east-1"
PRICES_AS_OF = env_str("PRICES_AS_OF", "2026-12-01") or "2026-12-01"
PRICES_CURRENCY = "USD"


def _price(name: str, default: float) -> float:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(name, raw, "a price in USD, e.g. 0.04048") from None
    if not value >= 0:
        raise ConfigurationError(name, raw, "a price of 0 or more")
    return value


# SageMaker training, per instance-hour; the instance types offered for training are exactly its keys.
TRAINING_INSTANCE_PRICES: dict[str, float] = {
    "ml.m5.large": 0.115,
    "ml.m5.xlarge": 0.23,
    "ml.m5.2xlarge": 0.461,
    "ml.m5.4xlarge": 0.922,
    "ml.c5.xlarge": 0.204,
    "ml.c5.2xlarge": 0.408,
    "ml.c5.4xlarge": 0.816,
}
_prices_json = env_str("TRAINING_INSTANCE_PRICES_JSON")
if _prices_json:
    try:
        TRAINING_INSTANCE_PRICES = {str(k): float(v) for k, v in json.loads(_prices_json).items()}
    except (ValueError, AttributeError, TypeError):
        raise ConfigurationError(
            "TRAINING_INSTANCE_PRICES_JSON",
            _prices_json,
            'a JSON object of instance type to USD per hour, e.g. {"ml.m5.large": 0.115}',
        ) from None

# Fargate (Linux/x86), per vCPU-hour and per GB-hour of task memory.
FARGATE_VCPU_HOUR_PRICE = _price("FARGATE_VCPU_HOUR_PRICE", 0.04048)
FARGATE_GB_HOUR_PRICE = _price("FARGATE_GB_HOUR_PRICE", 0.004445)

# A local run is costed by its measured CPU time at this price per CPU-hour (an m5.large: $0.096 for 2 vCPUs).
LOCAL_CPU_HOUR_PRICE = _price("LOCAL_CPU_HOUR_PRICE", 0.048)

# The AWS service names Cost Explorer's SERVICE dimension gives what we estimate, so estimates and the bill line up;
# what ran on this machine is named as such, never as AWS spend.
AWS_SERVICE_TRAINING = "Amazon SageMaker"
AWS_SERVICE_SERVING = "Amazon Elastic Container Service"
LOCAL_SERVICE_TRAINING = "Local training"
LOCAL_SERVICE_SERVING = "Local serving"
