"""Check a serving image's requirements without Docker: build them into a virtualenv, train a model there with a
real recipe, serve it with `python -m serving` from that virtualenv, and predict.

    .venv/bin/python docker/serving/check_image_release.py requirements/serving-sklearn-1.2.txt

Used for the images whose requirements are not the project's own (the sklearn-1.2 image); `make test` covers the
default image, whose requirements are the project's. The virtualenv is kept under .bench/ for the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def main() -> int:
    requirements = Path(sys.argv[1] if len(sys.argv) > 1 else "requirements/serving-sklearn-1.2.txt")
    venv = REPO / ".bench" / f"image-{requirements.stem}"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REPO / requirements)], check=True)
    version = subprocess.run(
        [str(python), "-c", "import sklearn; print(sklearn.__version__)"], check=True, capture_output=True, text=True
    ).stdout.strip()
    print(f"{requirements}: scikit-learn {version}")

    from sklearn.datasets import load_breast_cancer

    from workers.recipes import get_recipe
    from workers.training import InputFile, JobSpec, LocalTrainingBackend

    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        load_breast_cancer(as_frame=True).frame.to_csv(base / "train.csv", index=False)
        backend = LocalTrainingBackend(base / "jobs", python=str(python))
        spec = JobSpec(
            run_id="check",
            recipe=get_recipe("random_forest"),
            hyperparameters={"target": "target", "seed": 7},
            inputs=[InputFile("train", base / "train.csv", "train.csv")],
            work_dir=base / "jobs" / "check",
        )
        backend.start(spec)
        while not (status := backend.describe("check")).finished:
            time.sleep(0.3)
        if status.state != "succeeded":
            print(f"training failed: {status.message}")
            return 1
        model = Path(status.model_dir)
        card = json.loads((model / "model.json").read_text())
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "MODEL_URI": (model / "model.joblib").as_uri(),
            "MODEL_SHA256": hashlib.sha256((model / "model.joblib").read_bytes()).hexdigest(),
            "MODEL_CARD": json.dumps(card),
            "HOST": "127.0.0.1",
            "PORT": "18931",
            "CAPTURE_URL": (base / "store").as_uri(),
            "CAPTURE_FRACTION": "1",
        }
        server = subprocess.Popen([str(python), "-m", "serving"], env=env)
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen("http://127.0.0.1:18931/ping", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            row = load_breast_cancer().data[:2].tolist()
            request = urllib.request.Request(
                "http://127.0.0.1:18931/invocations",
                data=json.dumps({"instances": row}).encode(),
                headers={"Content-Type": "application/json"},
            )
            answer = json.loads(urllib.request.urlopen(request, timeout=5).read())
        finally:
            server.terminate()
            code = server.wait(timeout=30)
        captured = list((base / "store" / "capture").rglob("*.parquet"))
        print(f"trained with scikit-learn {card['sklearn_version']}, served: {answer['predictions']}, "
              f"exit {code}, capture files {len(captured)}")
        return 0 if code == 0 and len(answer["predictions"]) == 2 and captured else 1


if __name__ == "__main__":
    sys.exit(main())
