"""Serving: the serving runtime as deployed against `mlflow models serve` and a bare ASGI floor, same models, same load.

Run from the repository root:

    .venv/bin/python bench/serving.py                 # both models, every server, 10 s per load; about 20 minutes
    .venv/bin/python bench/serving.py --quick         # 2 s per load: a smoke run
    .venv/bin/python bench/serving.py --models lr --servers ours,floor --seconds 5
    .venv/bin/python bench/serving.py --only service  # only the service case (below): about 5 minutes

Needs `wrk` (Debian: `apt-get install -y wrk`) and `taskset`, and two cores. The first run creates two virtual
environments under `.bench/` (gitignored), never touching the project's requirements:

- `.bench/serving-mlflow`: MLflow (pinned below) with the project's scikit-learn, numpy, pandas, scipy and joblib
  versions from requirements/lock.txt, so it loads the very model.joblib the other servers serve;
- `.bench/serving-http`: the HTTP servers that are not the project's choice (uvicorn, granian) with the serving
  runtime's stack at the project's versions, for the bare floor and for the HTTP-stack candidates.

They are rebuilt when the pins change (`--only service` needs neither). What happens:

1. A child in the project's .venv trains the two models the way the recipes do (workers/recipes: the recipe's own
   estimator with its default parameters, `_training.build_pipeline`, its hold-out split, `_training.save_model`) on
   scikit-learn's breast-cancer data (30 numeric features): a logistic regression and a 100-tree random forest, seed
   42. Each becomes model.joblib + model.json, and an MLflow model directory saved from that same fitted object in
   the MLflow environment (skops format, with a signature inferred from the training columns).
2. For each model, each server in turn is started on core 0 (`taskset -c 0`), waited for, and checked: the
   single-row and the 100-row request must come back 200 with the labels the model predicts in-process. Then `wrk`
   on core 1 drives it at concurrency 1 and 16 with each body (a warm-up first, then the measurement), and the
   server is stopped. This script and its metrics sink run on core 1 too.
3. Each runtime's in-process predict time (1 and 100 rows) is measured once, on core 0, for context.
4. The service case (the first of --models): the model is deployed as a service through workers/deploy/local.py's
   LocalServingBackend (all_at_once, bake 0, then promoted) into the temporary directory, with ours' settings: its
   router (serving/router.py) on the service's stable address and one revision process behind it, both pinned to
   core 0. Beside it one `python -m serving` as ours, also on core 0, is driven directly on its own port. Both must
   answer the 1- and 100-row bodies with the expected labels (the service from its revision). Then, in --rounds
   interleaved rounds (the order of the two alternating), wrk drives each with single-row bodies: keep-alive at
   concurrency 1 and 16, and a new connection per request (`Connection: close`) at concurrency 16, where the router
   pays its per-connection cost. The table puts them side by side, with each round's throughput ratio and p50
   difference and the verdict against the deployments issue's budget (at most 10% of the direct throughput and
   0.1 ms of p50). The service is stopped (stop_service) whatever happens.

The servers:

- ours: `python -m serving` from the project's .venv, as deployed: the compiled copy when serving/compiled.py accepted
  one (COMPILED_URI/COMPILED_SHA256), capture on (CAPTURE_FRACTION=0.1 into a temporary file store) and metrics on
  (METRICS_SINK=portal, posting to a small sink this script runs; METRICS_FLUSH_SECONDS=5, so flushes happen during
  every measurement rather than once a minute);
- ours-original: the same without the compiled copy (the original pipeline serves); ours-bare: ours with capture and
  metrics off, to show what they cost;
- mlflow: `mlflow models serve --env-manager local` (its uvicorn, one worker);
- floor: bench/serving_floor.py on uvicorn with uvloop and httptools, no access log; floor-onnx: the same app on
  the compiled copy (onnxruntime), the floor for a server that serves it;
- the HTTP-stack candidates: the serving core (serving/asgi.py) on uvicorn and on granian, with ours' environment,
  and the floor app on granian, which shows what the HTTP server alone changes.

Servers whose code has not landed yet are listed as skipped. Ctrl-C stops everything this script started; the
temporary directory is removed at the end (`--keep` keeps it).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import http.client
import http.server
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _table import print_rows  # bench/_table.py: the shared table printer

ROOT = Path(__file__).resolve().parent.parent
# This file is bench/serving.py, so with bench/ first on sys.path `import serving` would find it, not the package.
sys.path.insert(0, str(ROOT))
BENCH = ROOT / ".bench"
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
SERVER_CORE, LOAD_CORE = 0, 1
SEED = 42
CONCURRENCIES = (1, 16)
ROWS = (1, 100)
CAPTURE_FRACTION = 0.1

MLFLOW_VERSION = "3.17.2"
UVICORN_VERSION = "0.54.0"
GRANIAN_VERSION = "2.8.7"
# The serving core behind the candidate HTTP servers (serving/asgi.py's factories).
ASGI_FACTORY = "serving.asgi:asgi_app"
RSGI_FACTORY = "serving.asgi:rsgi_app"

MODELS = {
    "lr": ("logistic regression", "logistic_regression"),
    "rf": ("random forest, 100 trees", "random_forest"),
}


# ---------------------------------------------------------------------------------------------------------------------
# The benchmark's own environments


def lock_pins(*names: str) -> list[str]:
    """`name==version` for each name, as requirements/lock.txt pins it."""
    pins = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if version:
            pins[name.strip().lower()] = f"{name.strip()}=={version.strip()}"
    return [pins[name] for name in names]


def environments() -> dict[str, list[str]]:
    science = lock_pins("scikit-learn", "numpy", "pandas", "scipy", "joblib")
    return {
        "serving-mlflow": [f"mlflow=={MLFLOW_VERSION}", *science],
        "serving-http": [
            f"uvicorn=={UVICORN_VERSION}",
            f"granian=={GRANIAN_VERSION}",
            *science,
            # serving/runtime.py imports workers.objectstore, which imports botocore whatever the store.
            *lock_pins("orjson", "uvloop", "httptools", "onnxruntime", "pyarrow", "boto3", "botocore"),
        ],
    }


def ensure_environment(name: str, pins: list[str]) -> Path:
    """.bench/<name>, created (or rebuilt when its pins changed) with exactly these pins; returns its bin/."""
    home = BENCH / name
    stamp = home / "bench-pins.txt"
    wanted = "\n".join(pins) + "\n"
    if stamp.is_file() and stamp.read_text() == wanted and (home / "bin" / "python").exists():
        return home / "bin"
    print(f"# creating .bench/{name}: {' '.join(pins)}", file=sys.stderr)
    shutil.rmtree(home, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
    log = BENCH / f"{name}-install.log"
    with open(log, "wb") as out:
        result = subprocess.run(
            [str(home / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", *pins],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        raise SystemExit(f"installing into .bench/{name} failed; see {log}")
    stamp.write_text(wanted)
    return home / "bin"


# ---------------------------------------------------------------------------------------------------------------------
# What runs in the child processes (each in the environment named)


def child_train(out: Path) -> dict[str, Any]:
    """Project .venv: both models as the recipes train them, plus the request rows and the labels they should get."""
    import contextlib

    sys.path.insert(0, str(ROOT / "workers" / "recipes"))
    import _training
    import logistic_regression
    import random_forest
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    frame = load_breast_cancer(as_frame=True).frame
    target = "target"
    features = [column for column in frame.columns if column != target]
    report: dict[str, Any] = {}
    for key, (_, recipe_name) in MODELS.items():
        recipe = {"logistic_regression": logistic_regression, "random_forest": random_forest}[recipe_name]
        params = {p["name"]: p.get("default") for p in recipe.RECIPE["parameters"]}
        params.update(target=target, seed=SEED)
        task = _training.CLASSIFICATION
        # The recipe's own hold-out (load_data reads channels; this is its split on the same frame).
        train, validation = train_test_split(
            frame, test_size=params["validation_fraction"], random_state=SEED, stratify=frame[target]
        )
        data = _training.TrainingData(
            x_train=train[features],
            y_train=train[target],
            x_validation=validation[features],
            y_validation=validation[target],
            features=features,
            feature_types={column: _training._feature_type(train[column]) for column in features},
            validation_source=f"held out {params['validation_fraction']:g} of train (seed {SEED})",
        )
        pipeline = _training.build_pipeline(
            data, recipe.make_estimator(params, task), scale=recipe_name == "logistic_regression"
        )
        directory = out / key
        os.environ["SM_MODEL_DIR"] = str(directory)
        with contextlib.redirect_stdout(sys.stderr):  # the recipes print progress and metric lines
            if hasattr(recipe, "fit"):
                model = recipe.fit(pipeline, data.x_train, data.y_train)
            else:
                model = pipeline.fit(data.x_train, data.y_train)
            results = _training.evaluate(task, model, data.x_validation, data.y_validation)
            _training.save_model(recipe.RECIPE, params, task, model, data, results)
        rows = data.x_validation.iloc[: max(ROWS)]
        data.x_validation.to_json(directory / "validation.json", orient="split")
        (directory / "rows.json").write_text(json.dumps(rows.to_numpy().tolist()))
        report[key] = {
            "expected": [int(v) for v in model.predict(rows)],
            "accuracy": results["accuracy"],
        }
    return report


def child_compile(out: Path) -> dict[str, Any]:
    """Project .venv: the compiled (ONNX) copy of each model, made and checked by serving/compiled.py's
    `compile_model` as registration does, on the model's held-out rows; accepted copies go to compiled.onnx."""
    try:
        from serving.compiled import compile_model
    except ImportError as exc:
        return {"skipped": f"serving.compiled does not import ({exc})"}
    import joblib
    import pandas as pd

    report: dict[str, Any] = {}
    for key in MODELS:
        directory = out / key
        card = json.loads((directory / "model.json").read_text())
        sample = pd.read_json(directory / "validation.json", orient="split")
        outcome = compile_model(
            joblib.load(directory / "model.joblib"), card, sample, sample_source="held-out validation rows"
        )
        if outcome.onnx is not None:
            (directory / "compiled.onnx").write_bytes(outcome.onnx)
        report[key] = {"accepted": outcome.accepted, "check": outcome.check}
    return report


def child_mlflow_save(out: Path) -> dict[str, Any]:
    """MLflow environment: an MLflow model directory from the same fitted pipeline (skops, signature inferred)."""
    import warnings

    import joblib
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature

    warnings.simplefilter("ignore")
    for key in MODELS:
        directory = out / key
        model = joblib.load(directory / "model.joblib")
        card = json.loads((directory / "model.json").read_text())
        x = pd.DataFrame(json.loads((directory / "rows.json").read_text()), columns=card["features"])
        # What skops.io.get_untrusted_types reports for these pipelines; anything else would be a surprise to look at.
        trusted = ["numpy.dtype", "sklearn.tree._tree.Tree"] if key == "rf" else ["numpy.dtype"]
        mlflow.sklearn.save_model(
            model,
            str(directory / "mlflow"),
            signature=infer_signature(x, model.predict(x)),
            skops_trusted_types=trusted,
        )
    return {"mlflow": mlflow.__version__}


def child_predict_time(out: Path, runtime: str) -> dict[str, Any]:
    """Median in-process time of one predict of 1 and of 100 rows, as each server calls its model."""
    import warnings

    warnings.simplefilter("ignore")
    report: dict[str, Any] = {}
    for key in MODELS:
        directory = out / key
        all_rows = json.loads((directory / "rows.json").read_text())
        call = predict_call(runtime, directory)
        for n in ROWS:
            rows = all_rows[:n]
            for _ in range(20):
                call(rows)
            samples: list[float] = []
            budget = time.perf_counter() + 1.0
            while time.perf_counter() < budget or len(samples) < 30:
                start = time.perf_counter()
                call(rows)
                samples.append(time.perf_counter() - start)
            report[f"{key}/{n}"] = statistics.median(samples)
    return report


def predict_call(runtime: str, directory: Path) -> Callable[[list[list[float]]], Any]:
    """What each server does between the parsed JSON rows and the labels, without the HTTP."""
    import numpy as np

    columns = json.loads((directory / "model.json").read_text())["features"]
    if runtime == "mlflow":
        import mlflow.pyfunc
        import pandas as pd

        pyfunc = mlflow.pyfunc.load_model(str(directory / "mlflow"))
        return lambda rows: pyfunc.predict(pd.DataFrame(rows, columns=columns))
    if runtime == "floor":
        import joblib
        import pandas as pd

        model = joblib.load(directory / "model.joblib")
        return lambda rows: model.predict(pd.DataFrame(np.asarray(rows, dtype=np.float64), columns=columns, copy=False))
    if runtime == "ours-sklearn":
        import joblib

        from serving.predictors import Batch, SklearnPredictor

        predictor = SklearnPredictor(joblib.load(directory / "model.joblib"), classifier=True)

        def call(rows: list[list[float]]) -> Any:
            # As the request parser builds an all-numeric batch: one matrix, columns made only if asked for.
            matrix = np.asarray(rows, dtype=np.float64)
            return predictor.predict(Batch(matrix=matrix, names=columns, rows=len(rows)))

        return call
    if runtime == "ours-compiled":
        from serving import compiled as compiled_copy
        from serving.predictors import Batch, Feature

        card = json.loads((directory / "model.json").read_text())
        features = [Feature(name, card["feature_types"][name]) for name in columns]
        onnx = compiled_copy.OnnxPredictor(directory / "compiled.onnx", features=features, classes=card["classes"])

        def compiled(rows: list[list[float]]) -> Any:
            matrix = np.asarray(rows, dtype=np.float64)
            return onnx.predict(Batch(matrix=matrix, names=columns, rows=len(rows)))

        return compiled
    raise SystemExit(f"unknown runtime {runtime!r}")


def run_child(python: Path | str, task: str, out: Path, *extra: str, core: int | None = None) -> dict[str, Any]:
    argv = [str(python), str(Path(__file__).resolve()), "--child", task, "--out", str(out), *extra]
    if core is not None:
        argv = ["taskset", "-c", str(core), *argv]
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'bench'}", PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"child {task} ({python}) failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


# ---------------------------------------------------------------------------------------------------------------------
# The metrics sink (ours posts its metrics here, as it would to the portal's ingest endpoint)


class Sink:
    def __init__(self) -> None:
        counts = self.counts = {"posts": 0, "bytes": 0}

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size)
                counts["posts"] += 1
                counts["bytes"] += len(body)
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/serving/ingest"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------------------------------------
# The servers


@dataclass
class Context:
    tmp: Path
    bins: dict[str, Path]
    sink: Sink
    model: str = ""

    def model_dir(self) -> Path:
        return self.tmp / self.model


@dataclass
class Server:
    key: str
    label: str
    payload: str  # "instances" (ours, the floor) or "mlflow" (dataframe_split)
    command: Callable[[Context, int], tuple[list[str], dict[str, str]]]
    missing: Callable[[Context], str | None] = lambda ctx: None  # why it cannot run (yet), or None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ours_env(ctx: Context, port: int, name: str) -> dict[str, str]:
    directory = ctx.model_dir()
    model = directory / "model.joblib"
    compiled = directory / "compiled.onnx"
    capture = ctx.tmp / "capture" / name / ctx.model
    env = {
        "MODEL_URI": model.as_uri(),
        "MODEL_SHA256": sha256(model),
        "MODEL_CARD": (directory / "model.json").read_text(),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "SERVICE_NAME": f"bench-{ctx.model}",
        "REVISION": "bench",
        "CAPTURE_URL": capture.as_uri(),
        "CAPTURE_FRACTION": str(CAPTURE_FRACTION),
        "METRICS_SINK": "portal",
        "METRICS_INGEST_URL": ctx.sink.url,
        "SERVING_TOKEN": "bench-token",
        "METRICS_FLUSH_SECONDS": "5",
        "SERVING_WORK_DIR": str(ctx.tmp / "work" / name / ctx.model),
    }
    if compiled.exists():  # registration accepted a compiled copy: the deployment serves it
        env.update(COMPILED_URI=compiled.as_uri(), COMPILED_SHA256=sha256(compiled))
    return env


def floor_env(ctx: Context, port: int) -> dict[str, str]:
    return {"FLOOR_MODEL": str(ctx.model_dir() / "model.joblib")}


def floor_onnx_env(ctx: Context, port: int) -> dict[str, str]:
    return {**floor_env(ctx, port), "FLOOR_ONNX": str(ctx.model_dir() / "compiled.onnx")}


def ours_bare_env(ctx: Context, port: int) -> dict[str, str]:
    env = ours_env(ctx, port, "ours-bare")
    for name in ("CAPTURE_URL", "METRICS_INGEST_URL", "SERVING_TOKEN", "METRICS_FLUSH_SECONDS"):
        env.pop(name)
    env.update(CAPTURE_FRACTION="0", METRICS_SINK="none")
    return env


def missing_compiled(ctx: Context) -> str | None:
    return None if (ctx.model_dir() / "compiled.onnx").exists() else "no compiled copy"


def missing_file(relative: str) -> Callable[[Context], str | None]:
    return lambda ctx: None if (ROOT / relative).exists() else f"{relative} has not landed"


def ours_original_env(ctx: Context, port: int) -> dict[str, str]:
    env = ours_env(ctx, port, "ours-original")
    env.pop("COMPILED_URI", None)
    env.pop("COMPILED_SHA256", None)
    return env


def uvicorn_command(ctx: Any, port: int, app: str, *extra: str) -> list[str]:
    """uvicorn as the floor and the candidates run it: uvloop, httptools, no access log."""
    return [
        str(ctx.bins["serving-http"] / "uvicorn"),
        app,
        *extra,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def granian_command(ctx: Any, port: int, interface: str, app: str, *extra: str) -> list[str]:
    """granian with one worker and one runtime thread on uvloop, no access log."""
    return [
        str(ctx.bins["serving-http"] / "granian"),
        "--interface",
        interface,
        *extra,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--runtime-threads",
        "1",
        "--loop",
        "uvloop",
        "--no-access-log",
        "--log-level",
        "warning",
        app,
    ]


SERVERS = [
    Server(
        "ours",
        "ours: python -m serving (capture 10%, metrics to portal)",
        "instances",
        lambda ctx, port: ([str(PROJECT_PYTHON), "-m", "serving"], ours_env(ctx, port, "ours")),
        missing_file("serving/__main__.py"),
    ),
    Server(
        "ours-original",
        "ours without the compiled copy: the original pipeline (what serves when compiling was refused)",
        "instances",
        lambda ctx, port: ([str(PROJECT_PYTHON), "-m", "serving"], ours_original_env(ctx, port)),
        lambda ctx: None if (ctx.model_dir() / "compiled.onnx").exists() else "no compiled copy: ours is this",
    ),
    Server(
        "ours-bare",
        "ours with capture and metrics off (what they cost)",
        "instances",
        lambda ctx, port: ([str(PROJECT_PYTHON), "-m", "serving"], ours_bare_env(ctx, port)),
        missing_file("serving/__main__.py"),
    ),
    Server(
        "mlflow",
        f"mlflow {MLFLOW_VERSION} models serve --env-manager local",
        "mlflow",
        lambda ctx, port: (
            [
                str(ctx.bins["serving-mlflow"] / "mlflow"),
                "models",
                "serve",
                "-m",
                str(ctx.model_dir() / "mlflow"),
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                "1",
            ],
            {"PATH": f"{ctx.bins['serving-mlflow']}{os.pathsep}{os.environ['PATH']}"},
        ),
    ),
    Server(
        "floor",
        f"floor: bench/serving_floor.py on uvicorn {UVICORN_VERSION} (uvloop, httptools)",
        "instances",
        lambda ctx, port: (
            uvicorn_command(ctx, port, "serving_floor:app", "--lifespan", "off"),
            floor_env(ctx, port),
        ),
    ),
    Server(
        "floor-onnx",
        f"floor on the compiled copy: bench/serving_floor.py with FLOOR_ONNX, uvicorn {UVICORN_VERSION}",
        "instances",
        lambda ctx, port: (
            uvicorn_command(ctx, port, "serving_floor:app", "--lifespan", "off"),
            floor_onnx_env(ctx, port),
        ),
        missing_compiled,
    ),
    Server(
        "floor-granian",
        f"floor app on granian {GRANIAN_VERSION} ASGI",
        "instances",
        lambda ctx, port: (
            granian_command(ctx, port, "asgi", "serving_floor:app"),
            floor_env(ctx, port),
        ),
    ),
    Server(
        "core-uvicorn",
        f"serving core (serving/asgi.py) on uvicorn {UVICORN_VERSION} (uvloop, httptools)",
        "instances",
        lambda ctx, port: (
            uvicorn_command(ctx, port, ASGI_FACTORY, "--factory"),
            ours_env(ctx, port, "core-uvicorn"),
        ),
        missing_file("serving/asgi.py"),
    ),
    Server(
        "core-granian",
        f"serving core (serving/asgi.py) on granian {GRANIAN_VERSION} ASGI",
        "instances",
        lambda ctx, port: (
            granian_command(ctx, port, "asgi", ASGI_FACTORY, "--factory"),
            ours_env(ctx, port, "core-granian"),
        ),
        missing_file("serving/asgi.py"),
    ),
    Server(
        "core-granian-rsgi",
        f"serving core (serving/asgi.py) on granian {GRANIAN_VERSION} RSGI",
        "instances",
        lambda ctx, port: (
            granian_command(ctx, port, "rsgi", RSGI_FACTORY, "--factory"),
            ours_env(ctx, port, "core-granian-rsgi"),
        ),
        missing_file("serving/asgi.py"),
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    """One server process group, started in its own session on the server core."""

    def __init__(self, server: Server, ctx: Context, log: Path) -> None:
        self.server = server
        self.port = free_port()
        argv, extra = server.command(ctx, self.port)
        env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'bench'}", PYTHONDONTWRITEBYTECODE="1")
        env.update(extra)
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                ["taskset", "-c", str(SERVER_CORE), *argv],
                cwd=ROOT / "bench" if server.key.startswith("floor") else ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 180) -> float:
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.server.key} exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                status, _ = request(self.port, "GET", "/ping", None, timeout=2)
                if status == 200:
                    return time.monotonic() - began
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"{self.server.key} did not answer GET /ping with 200 within {timeout:.0f} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        stop_group(self.proc)


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM a server's process group, SIGKILL it after 15 s (bench/router.py stops its processes the same way)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def request(port: int, method: str, path: str, body: bytes | None, timeout: float = 30) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def labels_of(answer: bytes) -> list[int]:
    """The predicted labels in a server's answer: {"predictions": [label, ...]} or a list of {"label": ...} items."""
    document = json.loads(answer)
    items = document["predictions"] if isinstance(document, dict) else document
    labels = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("label", item.get("prediction"))
        labels.append(int(item))
    return labels


# ---------------------------------------------------------------------------------------------------------------------
# The load


@dataclass
class Load:
    requests_per_second: float
    p50: float  # seconds
    p99: float
    requests: int
    non_2xx: int
    socket_errors: int
    cpu_per_request: float = 0.0  # seconds of the server's own CPU time per request
    others_share: float = 0.0  # how much of the server's core other processes used meanwhile (0..1)
    attempts: int = 1


TICK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in the process group (the server and its workers)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # After the command: state, ppid, pgrp, ..., utime (14th field overall) and stime (15th).
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / TICK


def core_seconds(core: int) -> tuple[float, float]:
    """(busy, total) CPU seconds of one core since boot, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + values[4]
            return (sum(values[:8]) - idle) / TICK, sum(values[:8]) / TICK
    raise SystemExit(f"no cpu{core} in /proc/stat")


UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def parse_wrk(text: str) -> Load:
    def duration(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        if not match:
            raise ValueError(f"no {percent}% line")
        return float(match.group(1)) * UNITS[match.group(2)]

    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    done = re.search(r"^\s+(\d+) requests in", text, re.M)
    if not rate or not done:
        raise ValueError("no Requests/sec line")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return Load(
        requests_per_second=float(rate.group(1)),
        p50=duration("50"),
        p99=duration("99"),
        requests=int(done.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


def measure(running: Running, lua: Path, concurrency: int, seconds: float) -> tuple[Load, str]:
    """wrk's figures, plus the server's CPU time per request and what else ran on its core meanwhile."""
    load, text, _ = measure_groups(running.port, lua, concurrency, seconds, [running.proc.pid])
    return load, text


def measure_groups(
    port: int, lua: Path, concurrency: int, seconds: float, groups: list[int]
) -> tuple[Load, str, list[float]]:
    """wrk's figures on `port`, the CPU seconds per request of each process group (the first is the server's:
    load.cpu_per_request), and the share of the server's core that processes outside these groups took."""
    before, (busy_before, total_before) = [group_cpu_seconds(g) for g in groups], core_seconds(SERVER_CORE)
    load, text = wrk(port, lua, concurrency, seconds)
    after, (busy_after, total_after) = [group_cpu_seconds(g) for g in groups], core_seconds(SERVER_CORE)
    cpu = [a - b for a, b in zip(after, before, strict=True)]
    per_request = [c / max(load.requests, 1) for c in cpu]
    load.cpu_per_request = per_request[0]
    load.others_share = max(0.0, (busy_after - busy_before) - sum(cpu)) / max(total_after - total_before, 1e-9)
    return load, text, per_request


def wrk(port: int, lua: Path, concurrency: int, seconds: float) -> tuple[Load, str]:
    argv = [
        "taskset",
        "-c",
        str(LOAD_CORE),
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(lua),
        f"http://127.0.0.1:{port}/invocations",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if result.returncode != 0:
        raise SystemExit(f"wrk failed ({result.returncode}): {result.stderr}")
    try:
        return parse_wrk(result.stdout), result.stdout
    except ValueError as exc:
        raise SystemExit(f"cannot read wrk's output ({exc}):\n{result.stdout}") from None


def write_bodies(ctx: Context, features: list[str]) -> dict[tuple[str, int], Path]:
    """The JSON bodies and a wrk script posting each: {(payload, rows): post-<payload>-<rows>.lua}."""
    all_rows = json.loads((ctx.model_dir() / "rows.json").read_text())
    scripts = {}
    for rows in ROWS:
        data = all_rows[:rows]
        bodies = {
            "instances": {"instances": data},
            "mlflow": {"dataframe_split": {"columns": features, "data": data}},
        }
        for payload, document in bodies.items():
            body = ctx.model_dir() / f"body-{payload}-{rows}.json"
            body.write_text(json.dumps(document, separators=(",", ":")))
            lua = ctx.model_dir() / f"post-{payload}-{rows}.lua"
            lua.write_text(
                'wrk.method = "POST"\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                f'local f = assert(io.open("{body}", "rb"))\n'
                'wrk.body = f:read("*a")\n'
                "f:close()\n"
            )
            scripts[(payload, rows)] = lua
    return scripts


# ---------------------------------------------------------------------------------------------------------------------
# The service case: the same model through a service's stable address (workers/deploy/local.py)

# (load, concurrency): keep-alive is what clients of a model service do; "new" sends `Connection: close`, so each
# request is a new connection, which is what the router pays for (it hands each accepted connection over).
SERVICE_LOADS = (("keep-alive", 1), ("keep-alive", 16), ("new", 16))
# The deployments issue: "the router may cost at most 10 % of the direct throughput and 0.1 ms of p50".
BUDGET_RATIO = 0.90
BUDGET_P50 = 0.1e-3
SERVICE_DEPLOYMENT = "bench"
# direct: one `python -m serving` on its own port; service: the stable address; revision (optional): the service's
# revision process on its own port, which tells the router's part from the process's.
SERVICE_TARGETS = ("direct", "service", "revision")


@dataclass
class Target:
    name: str  # "direct" or "service"
    port: int
    groups: list[int]  # process groups on the server core: this target's serving process first, then its router
    has_router: bool = False


@dataclass
class Sample:
    """One target under one load in one round: the least disturbed attempt."""

    load: Load
    server_cpu: float  # seconds of the serving process's CPU per request
    router_cpu: float  # seconds of the router's CPU per request (0 for direct)


@dataclass
class ServiceCase:
    model: str
    address: str = ""
    rounds: int = 0
    deploy_seconds: float = 0.0  # deploy() to promote() complete and the stable address answering
    events: list[str] = field(default_factory=list)
    samples: dict[tuple[str, str, int], list[Sample]] = field(default_factory=dict)  # (target, load, conc) -> rounds


def pinned_python(tmp: Path, core: int) -> Path:
    """A `python` for LocalServingBackend that runs the project's interpreter pinned to `core`, so the router and
    the revision's processes it starts (and restarts) share the server core, as bench/router.py's `handoff@0`."""
    path = tmp / f"python-core{core}"
    path.write_text(f'#!/bin/sh\nexec taskset -c {core} "{PROJECT_PYTHON}" "$@"\n')
    path.chmod(0o755)
    return path


def answer_of(port: int, body: bytes) -> tuple[int, bytes, str]:
    """POST /invocations: (status, body, its x-revision header)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("x-revision", "")
    finally:
        connection.close()


def run_service_case(
    ctx: Context, expected: list[int], scripts: dict[str, Path], args: argparse.Namespace, tmp: Path
) -> ServiceCase:
    """Deploy the model as a service through LocalServingBackend and drive it and a direct `ours`, interleaved."""
    from workers.deploy.base import RevisionSpec, Rollout, ServiceSpec
    from workers.deploy.local import LocalServingBackend
    from workers.local_state import read_json

    case = ServiceCase(ctx.model, rounds=args.rounds)
    backend = LocalServingBackend(tmp / "services", python=str(pinned_python(tmp, SERVER_CORE)))
    spec = ServiceSpec(name=f"bench-{ctx.model}", desired_count=1)
    # As `ours` is configured; the backend sets HOST, PORT, SERVICE_NAME, REVISION and the hand-off socket itself.
    environment = {
        k: v for k, v in ours_env(ctx, 0, "service").items() if k not in ("HOST", "PORT", "SERVICE_NAME", "REVISION")
    }
    ours = next(s for s in SERVERS if s.key == "ours")
    direct: Running | None = None
    try:
        direct = Running(ours, ctx, tmp / f"{ctx.model}-service-direct.log")
        direct.wait_ready()

        began = time.monotonic()
        revision = RevisionSpec(
            deployment_id=SERVICE_DEPLOYMENT,
            environment=environment,
            rollout=Rollout(strategy="all_at_once", bake_minutes=0),
        )
        handle = backend.deploy(spec, revision)
        deadline = began + 180
        while True:
            status = backend.progress(spec, handle)
            if status.phase in ("paused", "complete"):
                break
            if status.final or time.monotonic() > deadline:
                raise SystemExit(f"service {spec.name}: rollout {status.phase}: {status.message}")
            time.sleep(0.2)
        status = backend.promote(spec, handle)
        if status.phase != "complete":
            raise SystemExit(f"service {spec.name}: promote left it {status.phase}: {status.message}")
        case.events = [text for _, _, text in status.events]
        case.address = backend.status(spec).address
        port = int(case.address.rsplit(":", 1)[1])
        # The router gates the revision on its own /ping, a moment after progress() saw it pass.
        body = (ctx.model_dir() / "body-instances-1.json").read_bytes()
        while True:
            try:
                code, _, served_by = answer_of(port, body)
                if code == 200 and served_by == SERVICE_DEPLOYMENT:
                    break
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"service {spec.name} at {case.address} does not answer")
            time.sleep(0.1)
        case.deploy_seconds = time.monotonic() - began

        directory = backend.root / spec.name
        router_pgid = int(read_json(directory / "service.json")["router"]["pgid"])
        record = read_json(directory / "revisions" / f"r-{SERVICE_DEPLOYMENT}" / "revision.json")
        revision_pgid = int(record["processes"][0]["pgid"])
        direct_pgid = direct.proc.pid
        revision_port = int(record["processes"][0]["port"])
        targets = [
            Target("direct", direct.port, [direct_pgid, revision_pgid, router_pgid]),
            Target("service", port, [revision_pgid, router_pgid, direct_pgid], has_router=True),
            Target("revision", revision_port, [revision_pgid, router_pgid, direct_pgid]),
        ]
        targets = [t for t in targets if t.name in args.service_targets]
        for target in targets:
            for n in ROWS:
                code, answer, served_by = answer_of(
                    target.port, (ctx.model_dir() / f"body-instances-{n}.json").read_bytes()
                )
                if code != 200 or labels_of(answer) != expected[:n]:
                    raise SystemExit(f"{target.name}: {n}-row request answered {code}: {answer[:300]!r}")
                if target.name != "direct" and served_by != SERVICE_DEPLOYMENT:
                    raise SystemExit(f"{target.name}: answered by revision {served_by!r}, not {SERVICE_DEPLOYMENT!r}")

        for round_ in range(args.rounds):
            for kind, concurrency in SERVICE_LOADS:
                # The order alternates from round to round, so drift on the shared machine falls on both alike.
                for target in targets if round_ % 2 == 0 else targets[::-1]:
                    lua = scripts[kind]
                    wrk(target.port, lua, concurrency, args.warmup)
                    attempts: list[Sample] = []
                    while len(attempts) < args.attempts:
                        load, text, per_request = measure_groups(
                            target.port, lua, concurrency, args.seconds, target.groups
                        )
                        sample = Sample(load, per_request[0], per_request[1] if target.has_router else 0.0)
                        attempts.append(sample)
                        print(
                            f"# service round {round_ + 1}: {target.name} {kind} c{concurrency}: "
                            f"{load.requests_per_second:,.0f} req/s, p50 {ms(load.p50)} ms, p99 {ms(load.p99)} ms, "
                            f"{load.non_2xx + load.socket_errors} bad, others {load.others_share:.0%} of core "
                            f"{SERVER_CORE}",
                            file=sys.stderr,
                        )
                        if load.non_2xx or load.socket_errors:
                            print(text, file=sys.stderr)
                        if direct.proc.poll() is not None:
                            raise SystemExit(f"the direct server died under load:\n{direct.tail()}")
                        if load.others_share <= args.max_others:
                            break
                    best = min(attempts, key=lambda a: a.load.others_share)
                    best.load.attempts = len(attempts)
                    case.samples.setdefault((target.name, kind, concurrency), []).append(best)
        return case
    finally:
        # Whatever happened, nothing this case started outlives it (Ctrl-C included: ignored while cleaning up).
        handlers = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            try:
                backend.stop_service(spec.name)
            finally:
                if direct is not None:
                    direct.stop()
        finally:
            signal.signal(signal.SIGINT, handlers[0])
            signal.signal(signal.SIGTERM, handlers[1])


# ---------------------------------------------------------------------------------------------------------------------
# Output


@dataclass
class Result:
    model: str
    server: Server
    loads: dict[tuple[int, int], Load] = field(default_factory=dict)  # (concurrency, rows) -> Load
    ready_seconds: float = 0.0
    note: str = ""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}" if seconds < 0.1 else f"{seconds * 1000:.0f}"


def print_model(model: str, results: list[Result]) -> None:
    by_key = {r.server.key: r for r in results if r.loads}
    rows: list[tuple[str, ...]] = [
        (
            "server",
            "conc",
            "rows",
            "req/s",
            "p50 ms",
            "p99 ms",
            "bad",
            "CPU µs/req",
            "others",
            "× mlflow",
            "× floor",
            "p50 − floor ms",
        )
    ]
    for result in results:
        if not result.loads:
            continue
        for (concurrency, n), load in result.loads.items():
            mlflow = by_key.get("mlflow")
            floor = by_key.get("floor")
            vs_mlflow = mlflow.loads.get((concurrency, n)) if mlflow else None
            vs_floor = floor.loads.get((concurrency, n)) if floor else None
            rows.append(
                (
                    result.server.key,
                    str(concurrency),
                    str(n),
                    f"{load.requests_per_second:,.0f}",
                    ms(load.p50),
                    ms(load.p99),
                    str(load.non_2xx + load.socket_errors),
                    f"{load.cpu_per_request * 1e6:,.0f}",
                    f"{load.others_share:.0%}",
                    f"{load.requests_per_second / vs_mlflow.requests_per_second:.1f}" if vs_mlflow else "",
                    f"{load.requests_per_second / vs_floor.requests_per_second:.2f}" if vs_floor else "",
                    f"{(load.p50 - vs_floor.p50) * 1000:+.3f}" if vs_floor else "",
                )
            )
    print(f"## {MODELS[model][0]}")
    print()
    print_rows(rows)
    print()
    skipped = [f"- {r.server.key}: skipped, {r.note}" for r in results if not r.loads]
    if skipped:
        print("\n".join(skipped))
        print()


def print_service(case: ServiceCase) -> None:
    """Each target beside direct: medians of the rounds, and the rounds' paired figures (each round measured every
    target, one after the other), with the verdict on the router's budget."""
    names = [name for name in SERVICE_TARGETS if any(key[0] == name for key in case.samples)]
    header = ("target", "load", "conc", "req/s", "p50 ms", "p99 ms", "bad", "server µs", "router µs", "others")
    rows: list[tuple[str, ...]] = [(*header, "× direct", "p50 − direct ms")]
    paired: dict[tuple[str, str, int], tuple[list[float], list[float]]] = {}  # (target, load, conc) -> ratios, Δp50
    cpu: dict[tuple[str, str, int], float] = {}  # seconds of core-0 CPU per request, the router's included
    for kind, concurrency in SERVICE_LOADS:
        direct = case.samples.get(("direct", kind, concurrency), [])
        for name in names:
            samples = case.samples.get((name, kind, concurrency), [])
            if not samples or not direct:
                continue
            pairs = list(zip(direct, samples, strict=True))
            ratios = [s.load.requests_per_second / d.load.requests_per_second for d, s in pairs]
            deltas = [s.load.p50 - d.load.p50 for d, s in pairs]
            paired[(name, kind, concurrency)] = ratios, deltas
            cpu[(name, kind, concurrency)] = statistics.median(s.server_cpu + s.router_cpu for s in samples)
            loads = [s.load for s in samples]
            rows.append(
                (
                    name,
                    kind,
                    str(concurrency),
                    f"{statistics.median(x.requests_per_second for x in loads):,.0f}",
                    ms(statistics.median(x.p50 for x in loads)),
                    ms(statistics.median(x.p99 for x in loads)),
                    str(sum(x.non_2xx + x.socket_errors for x in loads)),
                    f"{statistics.median(s.server_cpu for s in samples) * 1e6:,.0f}",
                    f"{statistics.median(s.router_cpu for s in samples) * 1e6:,.0f}" if name == "service" else "",
                    f"{max(x.others_share for x in loads):.0%}",
                    f"{statistics.median(ratios):.3f}",
                    f"{statistics.median(deltas) * 1000:+.3f}",
                )
            )

    def rounds(values: list[float], scale: float, form: str) -> str:
        return ", ".join(format(v * scale, form) for v in values)

    print(f"## Through the service's stable address ({MODELS[case.model][0]}, one-row bodies)")
    print()
    print(
        f"# service: LocalServingBackend service bench-{case.model} (all_at_once, bake 0, promoted) at {case.address}, "
        f"its router and one revision process, both on core {SERVER_CORE}; direct: one `python -m serving` as ours, "
        f"also on core {SERVER_CORE}, on its own port"
        + ("; revision: the service's revision process on its own port (no router)" if "revision" in names else "")
    )
    print(
        f"# rounds: {case.rounds}, interleaved (each load measures every target, the order alternating); medians of "
        "the rounds; × direct and p50 − direct: medians of the rounds' paired figures; server µs / router µs: CPU "
        "per request"
    )
    print(f"# deployed and answering on the stable address in {case.deploy_seconds:.1f} s")
    disturbed = max((s.load.others_share for samples in case.samples.values() for s in samples), default=0.0)
    if disturbed > 1 - BUDGET_RATIO:
        print(
            f"# other processes took up to {disturbed:.0%} of core {SERVER_CORE} during the kept measurements, more "
            "than the budget's 10%: throughput ratios and p50 differences are not conclusive at that level; the CPU "
            "per request is less disturbed"
        )
    print()
    print_rows(rows)
    print()
    print("Through the stable address against direct, per load (each round's figure in parentheses):")
    print()
    for kind, concurrency in SERVICE_LOADS:
        key = ("service", kind, concurrency)
        if key not in paired:
            continue
        ratios, deltas = paired[key]
        direct_cpu, service_cpu = cpu[("direct", kind, concurrency)], cpu[key]
        print(
            f"- {kind}, concurrency {concurrency}: {statistics.median(ratios):.3f}× the throughput "
            f"({rounds(ratios, 1, '.3f')}), p50 {statistics.median(deltas) * 1000:+.3f} ms "
            f"({rounds(deltas, 1000, '+.3f')})"
            + (
                "; at this concurrency p50 is mostly the wait behind the other requests in flight"
                if concurrency > 1
                else ""
            )
            + f"; CPU per request on core {SERVER_CORE}, the router's included: {service_cpu * 1e6:,.0f} µs against "
            f"{direct_cpu * 1e6:,.0f} µs ({direct_cpu / service_cpu:.3f}× the direct capacity)"
        )
    print()
    # The budget as the router's design was judged (docs/benchmarks/serving.md, Router): throughput under load
    # (concurrency 16), latency where nothing queues (concurrency 1).
    throughput, latency = paired.get(("service", "keep-alive", 16)), paired.get(("service", "keep-alive", 1))
    if throughput and latency:
        ratio, delta = statistics.median(throughput[0]), statistics.median(latency[1])
        verdict = "within the budget" if ratio >= BUDGET_RATIO and delta <= BUDGET_P50 else "OVER the budget"
        print(
            f"Budget (the router may cost at most 10% of the direct throughput and 0.1 ms of p50), keep-alive clients: "
            f"concurrency 16 {ratio:.3f}× the direct throughput (≥ {BUDGET_RATIO:.2f}), concurrency 1 p50 "
            f"{delta * 1000:+.3f} ms (≤ +{BUDGET_P50 * 1000:.3f}): {verdict}"
            + (
                f" ({sum(r < BUDGET_RATIO for r in throughput[0])} of {len(throughput[0])} rounds under "
                f"{BUDGET_RATIO:.2f})"
                if any(r < BUDGET_RATIO for r in throughput[0])
                else ""
            )
        )
    fresh = paired.get(("service", "new", 16))
    if fresh:
        ratio = statistics.median(fresh[0])
        print(
            f"A new connection per request, concurrency 16: {ratio:.3f}× the direct throughput: "
            + ("within" if ratio >= BUDGET_RATIO else "over")
            + " the budget's 10% (the router's cost is per connection)"
        )
    split = []
    for kind, concurrency in SERVICE_LOADS:
        alone, behind = paired.get(("revision", kind, concurrency)), paired.get(("service", kind, concurrency))
        if alone and behind:
            router_part = statistics.median(b / a for a, b in zip(alone[0], behind[0], strict=True))
            split.append(
                f"- {kind}, concurrency {concurrency}: through the router {router_part:.3f}× the revision's own port "
                f"(the router's part); the revision's own port {statistics.median(alone[0]):.3f}× direct (the "
                "process's part)"
            )
    if split:
        print()
        print("The router's part and the revision process's part (paired per round):")
        print()
        print("\n".join(split))
    print()


def print_goals(results: dict[str, list[Result]]) -> None:
    """The issue's goals, single-row requests."""

    def load(model: str, key: str, concurrency: int) -> Load | None:
        for result in results.get(model, []):
            if result.server.key == key:
                return result.loads.get((concurrency, 1))
        return None

    lines = []
    ours, floor, mlflow = load("lr", "ours", 16), load("lr", "floor", 16), load("lr", "mlflow", 16)
    if ours and floor and mlflow:
        lines.append(
            f"lr, concurrency 16: ours {ours.requests_per_second:,.0f} req/s, floor {floor.requests_per_second:,.0f}"
            f" ({ours.requests_per_second / floor.requests_per_second:.2f}×; goal ≥ 1), "
            f"{ours.requests_per_second / mlflow.requests_per_second:.0f}× mlflow (goal ≥ 30)"
        )
    ours, floor = load("lr", "ours", 1), load("lr", "floor", 1)
    if ours and floor:
        lines.append(
            f"lr, concurrency 1: ours p50 {ms(ours.p50)} ms, floor {ms(floor.p50)} ms "
            f"({(ours.p50 - floor.p50) * 1000:+.3f} ms; goal ≤ +0.050)"
        )
    for model in ("lr", "rf"):
        ours, floor = load(model, "ours", 16), load(model, "floor-onnx", 16)
        ours1, floor1 = load(model, "ours", 1), load(model, "floor-onnx", 1)
        if ours and floor and ours1 and floor1:
            lines.append(
                f"{model}, against the floor on the compiled copy: concurrency 16 "
                f"{ours.requests_per_second / floor.requests_per_second:.2f}× its throughput, concurrency 1 "
                f"p50 {(ours1.p50 - floor1.p50) * 1000:+.3f} ms"
            )
    ours, mlflow = load("rf", "ours", 16), load("rf", "mlflow", 16)
    if ours and mlflow:
        lines.append(
            f"rf, concurrency 16: ours {ours.requests_per_second:,.0f} req/s, "
            f"{ours.requests_per_second / mlflow.requests_per_second:.1f}× mlflow (goal ≥ 20)"
        )
    if lines:
        print("## Goals (single-row requests)")
        print()
        for line in lines:
            print(f"- {line}")
        print()


def print_predict_times(times: dict[str, dict[str, Any]]) -> None:
    rows: list[tuple[str, ...]] = [("runtime", *(f"{m} {n} row{'s' * (n > 1)} µs" for m in MODELS for n in ROWS))]
    for runtime, report in times.items():
        if "skipped" in report:
            rows.append((runtime, *("" for _ in MODELS for _ in ROWS)))
            continue
        rows.append((runtime, *(f"{report[f'{m}/{n}'] * 1e6:,.0f}" for m in MODELS for n in ROWS)))
    print("## In-process predict, median (core 0, no server running)")
    print()
    print_rows(rows)
    print()


# ---------------------------------------------------------------------------------------------------------------------
# Main


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="seconds of measurement per load (default 10)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up before each (default 2)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 s per load, 1 s warm-up")
    parser.add_argument("--models", default="lr,rf", help="comma-separated: lr, rf (default both)")
    parser.add_argument("--servers", default="", help=f"comma-separated subset of {', '.join(s.key for s in SERVERS)}")
    parser.add_argument(
        "--max-others",
        type=float,
        default=0.05,
        help="measure again when other processes took more than this share of the server's core (default 0.05)",
    )
    parser.add_argument("--attempts", type=int, default=3, help="measurements per load at most (default 3)")
    parser.add_argument(
        "--only",
        choices=("servers", "service"),
        help="servers: only the servers side by side; service: only the model through a service's stable address "
        "(the first of --models), against it served directly (default: both)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the service case (default 3)")
    parser.add_argument(
        "--service-targets",
        default="direct,service",
        help="the service case's targets: direct, service (both always), revision: the service's revision process on "
        "its own port, no router, to tell the router's part from the process's (default direct,service)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (models, logs, capture)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--runtime", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        tasks: dict[str, Callable[[], dict[str, Any]]] = {
            "train": lambda: child_train(args.out),
            "compile": lambda: child_compile(args.out),
            "mlflow-save": lambda: child_mlflow_save(args.out),
            "predict-time": lambda: child_predict_time(args.out, args.runtime),
        }
        print(json.dumps(tasks[args.child]()))
        return 0

    if args.quick:
        args.seconds, args.warmup = 2, 1
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in MODELS for m in models):
        parser.error(f"--models: choose from {', '.join(MODELS)}")
    wanted = {s.strip() for s in args.servers.split(",") if s.strip()} or {s.key for s in SERVERS}
    unknown = wanted - {s.key for s in SERVERS}
    if unknown:
        parser.error(f"--servers: unknown {', '.join(sorted(unknown))}")
    args.service_targets = {t.strip() for t in args.service_targets.split(",") if t.strip()} | {"direct", "service"}
    if args.service_targets - set(SERVICE_TARGETS):
        parser.error(f"--service-targets: choose from {', '.join(SERVICE_TARGETS)}")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    if shutil.which("taskset") is None:
        raise SystemExit("taskset is not installed: apt-get install -y util-linux")
    if not {SERVER_CORE, LOAD_CORE} <= os.sched_getaffinity(0):
        raise SystemExit(f"needs cores {SERVER_CORE} and {LOAD_CORE}; this process may use {os.sched_getaffinity(0)}")
    # This script, its sink and every child not pinned elsewhere share the load generator's core.
    os.sched_setaffinity(0, {LOAD_CORE})

    signal.signal(signal.SIGTERM, _interrupt)
    run_servers, run_service = args.only != "service", args.only != "servers"
    # The service case needs only the project's .venv.
    bins = {name: ensure_environment(name, pins) for name, pins in environments().items()} if run_servers else {}
    tmp = Path(tempfile.mkdtemp(prefix="cp-bench-serving-"))
    sink = Sink()
    ctx = Context(tmp=tmp, bins=bins, sink=sink)
    running: Running | None = None
    began = time.monotonic()
    began_load = os.getloadavg()
    try:
        trained = run_child(PROJECT_PYTHON, "train", tmp)
        compiled = run_child(PROJECT_PYTHON, "compile", tmp)
        saved: dict[str, Any] = {}
        times: dict[str, dict[str, Any]] = {}
        if run_servers:
            saved = run_child(bins["serving-mlflow"] / "python", "mlflow-save", tmp)
            times = {
                "floor: pipeline.predict(DataFrame)": run_child(
                    bins["serving-http"] / "python", "predict-time", tmp, "--runtime", "floor", core=SERVER_CORE
                ),
                "ours: SklearnPredictor (predict_proba)": run_child(
                    PROJECT_PYTHON, "predict-time", tmp, "--runtime", "ours-sklearn", core=SERVER_CORE
                ),
                **(
                    {
                        "ours: OnnxPredictor (compiled copy)": run_child(
                            PROJECT_PYTHON, "predict-time", tmp, "--runtime", "ours-compiled", core=SERVER_CORE
                        )
                    }
                    if all(compiled.get(m, {}).get("accepted") for m in MODELS)
                    else {}
                ),
                "mlflow: pyfunc.predict(DataFrame)": run_child(
                    bins["serving-mlflow"] / "python", "predict-time", tmp, "--runtime", "mlflow", core=SERVER_CORE
                ),
            }

        results: dict[str, list[Result]] = {}
        for model in models if run_servers else []:
            ctx.model = model
            card = json.loads((ctx.model_dir() / "model.json").read_text())
            scripts = write_bodies(ctx, card["features"])
            expected = trained[model]["expected"]
            results[model] = []
            for server in SERVERS:
                if server.key not in wanted:
                    continue
                result = Result(model, server)
                results[model].append(result)
                why = server.missing(ctx)
                if why:
                    result.note = why
                    print(f"# {model} {server.key}: skipped, {why}", file=sys.stderr)
                    continue
                posts_before = sink.counts["posts"]
                running = Running(server, ctx, tmp / f"{model}-{server.key}.log")
                result.ready_seconds = running.wait_ready()
                for n in ROWS:
                    body = (ctx.model_dir() / f"body-{server.payload}-{n}.json").read_bytes()
                    status, answer = request(running.port, "POST", "/invocations", body)
                    if status != 200:
                        raise SystemExit(f"{model} {server.key}: {n}-row request answered {status}: {answer[:500]!r}")
                    if labels_of(answer) != expected[:n]:
                        raise SystemExit(
                            f"{model} {server.key}: {n}-row request predicted {labels_of(answer)[:10]}…, "
                            f"expected {expected[:10]}…"
                        )
                for n in ROWS:
                    for concurrency in CONCURRENCIES:
                        lua = scripts[(server.payload, n)]
                        wrk(running.port, lua, concurrency, args.warmup)
                        # The cores are shared: when something else took much of the server's core, measure
                        # again, and keep the attempt it disturbed least.
                        attempts: list[Load] = []
                        while len(attempts) < args.attempts:
                            load, text = measure(running, lua, concurrency, args.seconds)
                            attempts.append(load)
                            print(
                                f"# {model} {server.key} c{concurrency} {n} rows: "
                                f"{load.requests_per_second:,.0f} req/s, p50 {ms(load.p50)} ms, p99 {ms(load.p99)} ms, "
                                f"{load.non_2xx} non-2xx, {load.socket_errors} socket errors, "
                                f"{load.cpu_per_request * 1e6:,.0f} µs CPU/request, "
                                f"others {load.others_share:.0%} of core {SERVER_CORE}",
                                file=sys.stderr,
                            )
                            if load.non_2xx or load.socket_errors:
                                print(text, file=sys.stderr)
                            if running.proc.poll() is not None:
                                raise SystemExit(f"{model} {server.key} died under load:\n{running.tail()}")
                            if load.others_share <= args.max_others:
                                break
                        load = min(attempts, key=lambda a: a.others_share)
                        load.attempts = len(attempts)
                        result.loads[(concurrency, n)] = load
                running.stop()
                running = None
                if server.key.startswith(("ours", "core-")):
                    capture = tmp / "capture" / server.key / model
                    files = [p for p in capture.rglob("*") if p.is_file()] if capture.exists() else []
                    result.note = (
                        f"{len(files)} capture files ({sum(p.stat().st_size for p in files):,} bytes), "
                        f"{sink.counts['posts'] - posts_before} metrics posts"
                    )

        case: ServiceCase | None = None
        if run_service:
            ctx.model = models[0]
            card = json.loads((ctx.model_dir() / "model.json").read_text())
            keep_alive = write_bodies(ctx, card["features"])[("instances", 1)]
            fresh = keep_alive.with_name("post-instances-1-close.lua")  # wrk: each request on a new connection
            fresh.write_text(keep_alive.read_text() + 'wrk.headers["Connection"] = "close"\n')
            case = run_service_case(
                ctx, trained[ctx.model]["expected"], {"keep-alive": keep_alive, "new": fresh}, args, tmp
            )

        import sklearn  # the project's scikit-learn, for the header

        print(
            f"# {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} · {platform.machine()} · "
            f"{os.cpu_count()} cores · python {platform.python_version()} · scikit-learn {sklearn.__version__} · "
            + (f"mlflow {saved['mlflow']} · " if saved else "")
            + f"wrk -t1 on core {LOAD_CORE}, server on core {SERVER_CORE}"
        )
        print(
            f"# breast-cancer data, 30 numeric features; models trained as the recipes do, seed {SEED} "
            f"(validation accuracy: " + ", ".join(f"{m} {trained[m]['accuracy']:.3f}" for m in models) + ")"
        )
        print(
            f"# {args.seconds:g} s per load after {args.warmup:g} s of warm-up; p50/p99 from wrk --latency"
            + (f"; the service case: {args.rounds} round{'s' * (args.rounds > 1)}" if case else "")
        )
        print(
            f"# bad: non-2xx answers + socket errors; CPU µs/req: the server's own user+system time per request; "
            f"others: the share of core {SERVER_CORE} that other processes took during the measurement (a load is "
            f"measured up to {args.attempts} times while that is over {args.max_others:.0%}; the least disturbed "
            "attempt is shown)"
        )
        print(f"# load average at the start {began_load[0]:.2f}, at the end {os.getloadavg()[0]:.2f}")
        if "skipped" in compiled:
            print(f"# compiled copy: none ({compiled['skipped']})")
        else:
            print(
                "# compiled copy (serving/compiled.py, checked on the held-out rows): "
                + "; ".join(
                    f"{m} "
                    + (
                        f"accepted, max |Δp| {compiled[m]['check'].get('max_abs_diff')}"
                        if compiled[m]["accepted"]
                        else f"refused ({compiled[m]['check'].get('reason')})"
                    )
                    for m in models
                )
            )
        print()
        for model in results:
            print_model(model, results[model])
        if results:
            print_goals(results)
        if times:
            print_predict_times(times)
        if case:
            print_service(case)
        notes = [f"{r.model} {r.server.key}: {r.note}" for rs in results.values() for r in rs if r.note and r.loads]
        if notes:
            print("## Capture and metrics while ours ran")
            print()
            for note in notes:
                print(f"- {note}")
            print()
        print(f"# {time.monotonic() - began:.0f} s wall")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if running is not None:
            running.stop()
        sink.close()
        if args.keep:
            print(f"# kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
