"""Where the AWS-owned SageMaker scikit-learn framework container lives in each region.

AWS publishes the image from a different ECR account per region. The accounts below are the training registries
for `sagemaker-scikit-learn` as the SageMaker Python SDK lists them (image_uri_config/sklearn.json); they are the
same for every published version (0.20.0, 0.23-1, 1.0-1, 1.2-1, 1.4-2-py312).
"""

from __future__ import annotations

import re

from workers.errors import BackendError

REPOSITORY = "sagemaker-scikit-learn"
DEFAULT_SKLEARN_VERSION = "1.2-1"

SKLEARN_REGISTRIES: dict[str, str] = {
    "af-south-1": "510948584623",
    "ap-east-1": "651117190479",
    "ap-northeast-1": "354813040037",
    "ap-northeast-2": "366743142698",
    "ap-northeast-3": "867004704886",
    "ap-south-1": "720646828776",
    "ap-south-2": "628508329040",
    "ap-southeast-1": "121021644041",
    "ap-southeast-2": "783357654285",
    "ap-southeast-3": "951798379941",
    "ap-southeast-4": "106583098589",
    "ca-central-1": "341280168497",
    "ca-west-1": "190319476487",
    "cn-north-1": "450853457545",
    "cn-northwest-1": "451049120500",
    "eu-central-1": "492215442770",
    "eu-central-2": "680994064768",
    "eu-north-1": "662702820516",
    "eu-south-1": "978288397137",
    "eu-south-2": "104374241257",
    "eu-west-1": "141502667606",
    "eu-west-2": "764974769150",
    "eu-west-3": "659782779980",
    "il-central-1": "898809789911",
    "me-central-1": "272398656194",
    "me-south-1": "801668240914",
    "sa-east-1": "737474898029",
    "us-east-1": "683313688378",
    "us-east-2": "257758044811",
    "us-gov-east-1": "237065988967",
    "us-gov-west-1": "414596584902",
    "us-iso-east-1": "833128469047",
    "us-isob-east-1": "281123927165",
    "us-west-1": "746614075791",
    "us-west-2": "246618743249",
}

# ECR's DNS suffix by partition (the region-name prefixes botocore's partitions use); everything else is aws.
_PARTITION_DOMAINS = (
    ("cn-", "amazonaws.com.cn"),
    ("us-isob-", "sc2s.sgov.gov"),
    ("us-iso-", "c2s.ic.gov"),
)
# Published tags are `<version>-cpu-py3`, the version being scikit-learn's major.minor[.patch], then the container
# build (1.2-1; plain for 0.20.0), then for newer images the Python it ships (1.4-2-py312). A whole tag is taken as is.
_VERSION = re.compile(r"[0-9]+\.[0-9]+(?:\.[0-9]+)?(?:-[0-9]+)?(?:-py[0-9]+)?")
_TAG_SUFFIX = "-cpu-py3"


def ecr_domain(region: str) -> str:
    """The DNS suffix of ECR registries in `region`'s partition."""
    for prefix, domain in _PARTITION_DOMAINS:
        if region.startswith(prefix):
            return domain
    return "amazonaws.com"


def sklearn_image_uri(region: str, *, version: str = DEFAULT_SKLEARN_VERSION) -> str:
    """The CPU training image of the SageMaker scikit-learn container `version` (or whole tag) in `region`."""
    account = SKLEARN_REGISTRIES.get(region)
    if account is None:
        raise BackendError(
            f"no SageMaker scikit-learn image is published in region {region!r} "
            f"(known regions: {', '.join(sorted(SKLEARN_REGISTRIES))}); set the training image explicitly",
            permanent=True,
        )
    tag = version if version.endswith(_TAG_SUFFIX) else f"{version}{_TAG_SUFFIX}"
    if not _VERSION.fullmatch(tag[: -len(_TAG_SUFFIX)]):
        raise BackendError(
            f"scikit-learn container version {version!r} is not a version tag like {DEFAULT_SKLEARN_VERSION!r}, "
            f"'1.4-2-py312' or '1.4-2-py312{_TAG_SUFFIX}'",
            permanent=True,
        )
    return f"{account}.dkr.ecr.{region}.{ecr_domain(region)}/{REPOSITORY}:{tag}"
