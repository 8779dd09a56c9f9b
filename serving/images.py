"""Which serving image serves a model: the one built with the scikit-learn minor release the model was trained with.

Pickled scikit-learn models are only supported by the release that wrote them, so there is one serving image per
minor release, tagged `sklearn-<major>.<minor>` (docker/serving/README.md says how each is built). Local runs train
with the project's scikit-learn (1.9); SageMaker runs train in AWS's scikit-learn container (1.2-1 by default).
"""

from __future__ import annotations

import re

# The releases we build serving images for, and the requirements file each is built from.
IMAGES: dict[str, str] = {
    "1.9": "requirements/serving.txt",
    "1.2": "requirements/serving-sklearn-1.2.txt",
}
_VERSION = re.compile(r"(\d+)\.(\d+)")


class ImageError(ValueError):
    """No serving image fits the model; the message says which would and how to get it."""


def sklearn_minor(version: str) -> str:
    match = _VERSION.match(version.strip())
    if match is None:
        raise ImageError(f"{version!r} is not a scikit-learn version")
    return f"{int(match.group(1))}.{int(match.group(2))}"


def image_tag(framework_version: str) -> str:
    """`sklearn-1.9` for a model trained with scikit-learn 1.9.x; ImageError if no such image is built."""
    minor = sklearn_minor(framework_version)
    if minor not in IMAGES:
        built = ", ".join(IMAGES)
        raise ImageError(
            f"no serving image is built for scikit-learn {minor} (the model was trained with {framework_version}); "
            f"images exist for {built}: retrain the model with one of them"
        )
    return f"sklearn-{minor}"


def serving_image(repository: str, framework_version: str) -> str:
    """The image URI for the model: `repository` (SERVING_IMAGE, without a tag, or with `{sklearn}` in the tag)
    with the tag chosen by the model's scikit-learn release."""
    tag = image_tag(framework_version)
    repository = repository.strip()
    if "{sklearn}" in repository:
        return repository.replace("{sklearn}", tag.removeprefix("sklearn-"))
    last = repository.rsplit("/", 1)[-1]
    if ":" in last or "@" in last:
        raise ImageError(
            f"SERVING_IMAGE {repository!r} names a fixed image; give the repository alone (the tag is chosen per "
            "model) or put {sklearn} where the release goes"
        )
    return f"{repository}:{tag}"
