"""The local training backend with small test-only scripts: layout and environment, stop, crash, usage and logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from workers.errors import BackendError
from workers.recipes import Parameter, Recipe, get_recipe, metric_definitions
from workers.training import (
    InputFile,
    JobNotFound,
    JobSpec,
    JobStatus,
    LocalTrainingBackend,
    TrainingBackend,
)
from workers.training.base import LogChunk, Progress
from workers.training.local import DISAPPEARED, FAILURE_TAIL_BYTES

REPO = Path(__file__).resolve().parents[2]

SLEEPER = """
import subprocess, sys, time
# A grandchild in the same process group, which stop() must take down too.
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
for step in range(1, 100000):
    print(f"metric: tick={step}; step={step}", flush=True)
    time.sleep(0.05)
"""

STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
while True:
    time.sleep(0.05)
"""

BUSY = """
import time
data = b"x" * (80 * 1024 * 1024)
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
print("metric: tick=1", flush=True)
"""

# Holds 80 MB and keeps a core busy until stopped.
HOLDING = """
import time
data = b"x" * (80 * 1024 * 1024)
print("holding", flush=True)
end = time.monotonic() + 60
while time.monotonic() < end:
    pass
"""

FIVE_LINES = """
for number in range(1, 6):
    print(f"line {number}")
"""

# Writes half a line, waits for the test to say "go", then finishes it; ends without a final newline.
HALF_LINES = """
import pathlib, sys, time
print("metric: tick=1; step=1; time=100.5", flush=True)
print("progress: 1/3 folds", flush=True)
sys.stdout.write("half a "); sys.stdout.flush()
go = pathlib.Path(sys.argv[0]).parent.parent / "go"
while not go.exists():
    time.sleep(0.02)
sys.stdout.write("line\\n")
print("metric: tick=2; step=2", flush=True)
print("progress: 2/3 folds", flush=True)
sys.stdout.write("no newline at the end"); sys.stdout.flush()
"""

LONG_LOG = """
import sys
for number in range(1, 20001):
    print(f"line {number} " + "x" * 40)
print("the last words", file=sys.stderr)
sys.exit(2)
"""

BROKEN = """
import sys
print("loading things")
print("something broke", file=sys.stderr)
sys.exit(3)
"""

ENVIRONMENT = """
import json, os, pathlib
import _contract
names = [name for name in os.environ if name.startswith(("SM_", "PYTHON", "CONTROLPLANE"))]
seen = {name: os.environ[name] for name in names}
config = pathlib.Path(os.environ["SM_INPUT_CONFIG_DIR"])
seen["hyperparameters.json"] = json.loads((config / "hyperparameters.json").read_text())
seen["train files"] = sorted(path.name for path in pathlib.Path(os.environ["SM_CHANNEL_TRAIN"]).iterdir())
seen["cwd"] = os.getcwd()
# The same values once more, the way SageMaker delivers them: only hyperparameters.json, every value a string.
del os.environ["SM_HPS"]
recipe = {"parameters": [
    {"name": "rate", "type": "float", "default": 0.5},
    {"name": "names", "type": "columns"},
    {"name": "flag", "type": "bool", "default": False},
]}
seen["parsed from strings"] = _contract.load_hyperparameters(recipe)
(_contract.model_dir() / "seen.json").write_text(json.dumps(seen))
"""


def script_recipe(directory: Path, name: str, source: str, **fields: object) -> Recipe:
    script = directory / f"{name}.py"
    script.write_text(source)
    values: dict[str, object] = {
        "name": name,
        "kind": "training",
        "version": "test",
        "script": script,
        "description": "test only",
        "parameters": (),
        "channels": (),
        "metric_definitions": metric_definitions(["tick"]),
    }
    values.update(fields)
    return Recipe(**values)  # type: ignore[arg-type]


def start(backend: LocalTrainingBackend, recipe: Recipe, job: str, **fields: object) -> str:
    spec = JobSpec(
        run_id=f"run-{job}",
        recipe=recipe,
        hyperparameters=fields.pop("hyperparameters", {}),  # type: ignore[arg-type]
        inputs=fields.pop("inputs", []),  # type: ignore[arg-type]
        work_dir=backend.root / job,
        **fields,  # type: ignore[arg-type]
    )
    return backend.start(spec)


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def finished(backend: LocalTrainingBackend, job_id: str) -> JobStatus:
    wait_until(lambda: backend.describe(job_id).finished)
    return backend.describe(job_id)


def processes_in_group(pgid: int) -> list[int]:
    """Live processes in the group, read straight from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(stat.parent.name))
    return found


def job_record(backend: LocalTrainingBackend, job_id: str) -> dict[str, object]:
    return json.loads((backend.root / job_id / "job.json").read_text())


def whole_log(backend: LocalTrainingBackend, job_id: str) -> LogChunk:
    return backend.read_log(job_id, cursor=None, metric_definitions=metric_definitions(["tick"]))


def ticking(backend: LocalTrainingBackend, job_id: str) -> bool:
    return len(whole_log(backend, job_id).metrics.get("tick", [])) >= 3


@pytest.fixture
def backend(tmp_path: Path) -> LocalTrainingBackend:
    return LocalTrainingBackend(tmp_path / "jobs")


def test_it_is_a_training_backend(backend: LocalTrainingBackend) -> None:
    assert isinstance(backend, TrainingBackend)


def test_the_job_sees_the_sagemaker_contract(
    backend: LocalTrainingBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTROLPLANE_SECRET", "must not leak into the job")
    data = tmp_path / "rows.csv"
    data.write_text("a,b\n1,2\n")
    parameters = (Parameter("rate", "float", default=0.5), Parameter("names", "columns"), Parameter("flag", "bool"))
    recipe = script_recipe(
        tmp_path,
        "environment",
        ENVIRONMENT,
        parameters=parameters,
        channels=("train", "validation"),
        optional_channels=("validation",),
    )
    job_id = start(
        backend,
        recipe,
        "env",
        hyperparameters={"rate": "0.25", "names": "a,b", "flag": True},
        inputs=[InputFile("train", data, "train.csv")],
    )
    status = finished(backend, job_id)
    assert status.state == "succeeded", status.message
    work = backend.root / "env"
    seen = json.loads((work / "model" / "seen.json").read_text())
    assert json.loads(seen["SM_HPS"]) == {"rate": 0.25, "names": ["a", "b"], "flag": True}
    assert seen["hyperparameters.json"] == {"rate": "0.25", "names": '["a", "b"]', "flag": "true"}
    assert seen["parsed from strings"] == {"rate": 0.25, "names": ["a", "b"], "flag": True}
    assert seen["SM_HP_RATE"] == "0.25" and seen["SM_HP_FLAG"] == "true"
    assert seen["SM_CHANNEL_TRAIN"] == str(work / "input" / "data" / "train")
    assert "SM_CHANNEL_VALIDATION" not in seen
    assert json.loads(seen["SM_CHANNELS"]) == ["train"]
    assert seen["train files"] == ["train.csv"]
    assert (work / "input" / "data" / "train" / "train.csv").read_bytes() == data.read_bytes()
    assert seen["SM_MODEL_DIR"] == str(work / "model")
    assert seen["SM_OUTPUT_DATA_DIR"] == str(work / "output" / "data")
    assert seen["SM_OUTPUT_DIR"] == str(work / "output")
    assert seen["SM_INPUT_DIR"] == str(work / "input")
    assert seen["PYTHONHASHSEED"] == "0"
    assert seen["cwd"] == str(work / "code")
    assert "CONTROLPLANE_SECRET" not in seen
    assert sorted(path.name for path in (work / "code").iterdir()) == ["_contract.py", "_training.py", "environment.py"]
    assert status.model_dir == work / "model" and status.output_dir == work / "output" / "data"


def test_stop_ends_the_whole_process_group_within_the_grace_period(
    backend: LocalTrainingBackend, tmp_path: Path
) -> None:
    job_id = start(backend, script_recipe(tmp_path, "sleeper", SLEEPER), "sleeper")
    wait_until(lambda: ticking(backend, job_id))
    assert backend.describe(job_id).state == "running"
    pgid = int(job_record(backend, job_id)["pgid"])  # type: ignore[call-overload]
    assert len(processes_in_group(pgid)) == 3  # the wrapper, the script and its grandchild
    began = time.monotonic()
    backend.stop(job_id)
    assert time.monotonic() - began < backend.grace_seconds
    status = backend.describe(job_id)
    assert status.state == "stopped" and status.message == "stopped on request"
    assert processes_in_group(pgid) == []
    assert status.metrics == {}  # the series come from read_log
    assert [point["step"] for point in whole_log(backend, job_id).metrics["tick"]][:3] == [1, 2, 3]
    assert status.usage["wall_seconds"] > 0  # type: ignore[operator]
    assert status.model_dir is None
    backend.stop(job_id)  # stopping a stopped job changes nothing
    assert backend.describe(job_id).state == "stopped"


def test_stop_kills_a_job_that_ignores_sigterm(tmp_path: Path) -> None:
    backend = LocalTrainingBackend(tmp_path / "jobs", grace_seconds=1.0)
    job_id = start(backend, script_recipe(tmp_path, "stubborn", STUBBORN), "stubborn")
    wait_until(lambda: whole_log(backend, job_id).lines == ["ignoring SIGTERM"])
    pgid = int(job_record(backend, job_id)["pgid"])  # type: ignore[call-overload]
    began = time.monotonic()
    backend.stop(job_id)
    assert 1.0 <= time.monotonic() - began < 4.0
    status = backend.describe(job_id)
    assert status.state == "stopped"
    assert processes_in_group(pgid) == []
    # The SIGKILL left no usage.json; the numbers come from /proc just before it.
    assert status.usage["wall_seconds"] >= 1.0  # type: ignore[operator]
    assert status.usage["cpu_seconds"] is not None and status.usage["peak_memory_mb"] > 0  # type: ignore[operator]


def test_another_process_can_describe_and_stop_a_job(backend: LocalTrainingBackend, tmp_path: Path) -> None:
    job_id = start(backend, script_recipe(tmp_path, "sleeper", SLEEPER), "elsewhere")
    wait_until(lambda: ticking(backend, job_id))
    pgid = int(job_record(backend, job_id)["pgid"])  # type: ignore[call-overload]
    program = (
        "import sys; from pathlib import Path; from workers.training import LocalTrainingBackend; "
        "backend = LocalTrainingBackend(Path(sys.argv[1])); print(backend.describe(sys.argv[2]).state); "
        "backend.stop(sys.argv[2]); print(backend.describe(sys.argv[2]).state)"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, str(backend.root), job_id],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == ["running", "stopped"]
    assert backend.describe(job_id).state == "stopped"
    assert processes_in_group(pgid) == []


def test_a_killed_wrapper_is_reported_as_disappeared(backend: LocalTrainingBackend, tmp_path: Path) -> None:
    job_id = start(backend, script_recipe(tmp_path, "sleeper", SLEEPER), "killed")
    wait_until(lambda: ticking(backend, job_id))
    pgid = int(job_record(backend, job_id)["pgid"])  # type: ignore[call-overload]
    os.killpg(pgid, signal.SIGKILL)
    wait_until(lambda: not processes_in_group(pgid))
    for observer in (backend, LocalTrainingBackend(backend.root)):
        wait_until(lambda observer=observer: observer.describe(job_id).state != "running")  # type: ignore[misc]
        status = observer.describe(job_id)
        assert status.state == "failed"
        assert status.message == DISAPPEARED == "the training process disappeared (the machine or worker restarted?)"
    backend.stop(job_id)  # nothing left to stop: it stays failed
    assert backend.describe(job_id).message == DISAPPEARED


def test_usage_is_measured(backend: LocalTrainingBackend, tmp_path: Path) -> None:
    job_id = start(backend, script_recipe(tmp_path, "busy", BUSY), "busy")
    status = finished(backend, job_id)
    assert status.state == "succeeded", status.message
    usage = status.usage
    assert usage["cpu_seconds"] >= 0.3  # type: ignore[operator]
    assert usage["wall_seconds"] >= 0.3  # type: ignore[operator]
    assert usage["peak_memory_mb"] >= 80  # type: ignore[operator]
    assert job_record(backend, job_id)["exit_code"] == 0


def test_usage_is_measured_while_the_job_runs(backend: LocalTrainingBackend, tmp_path: Path) -> None:
    job_id = start(backend, script_recipe(tmp_path, "holding", HOLDING), "holding")
    wait_until(lambda: whole_log(backend, job_id).lines == ["holding"])
    wait_until(lambda: (backend.describe(job_id).usage["cpu_seconds"] or 0) >= 0.3)
    usage = backend.describe(job_id).usage
    assert backend.describe(job_id).state == "running"
    assert usage["peak_memory_mb"] >= 80  # type: ignore[operator]
    assert usage["wall_seconds"] >= usage["cpu_seconds"] * 0.5  # type: ignore[operator]
    backend.stop(job_id)
    assert backend.describe(job_id).state == "stopped"


def test_a_pid_reused_by_another_process_is_not_the_job(backend: LocalTrainingBackend, tmp_path: Path) -> None:
    job_id = start(backend, script_recipe(tmp_path, "sleeper", SLEEPER), "reused")
    wait_until(lambda: ticking(backend, job_id))
    record = job_record(backend, job_id)
    os.killpg(int(record["pgid"]), signal.SIGKILL)  # type: ignore[call-overload]
    wait_until(lambda: not processes_in_group(int(record["pgid"])))  # type: ignore[call-overload]
    # Another program now holds the job's pid and leads its own process group (as after a pid wrap-around).
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        record.update(pid=stranger.pid, pgid=stranger.pid)
        (backend.root / job_id / "job.json").write_text(json.dumps(record))
        status = backend.describe(job_id)
        assert status.state == "failed" and status.message == DISAPPEARED
        backend.stop(job_id)
        assert stranger.poll() is None, "stop() signalled a process that is not the job's"
        assert backend.describe(job_id).message == DISAPPEARED
    finally:
        stranger.kill()
        stranger.wait()


def test_read_log_returns_each_complete_line_once(backend: LocalTrainingBackend, tmp_path: Path) -> None:
    job_id = start(backend, script_recipe(tmp_path, "half", HALF_LINES), "half")
    definitions = metric_definitions(["tick"])

    def read(cursor: dict[str, object] | None) -> LogChunk:
        return backend.read_log(job_id, cursor=cursor, metric_definitions=definitions)

    wait_until(lambda: len(read(None).lines) == 2)
    first = read(None)
    assert first.lines == ["metric: tick=1; step=1; time=100.5", "progress: 1/3 folds"]
    assert first.metrics == {"tick": [{"value": 1.0, "step": 1, "time": 100.5}]}
    assert first.progress == Progress(done=1, total=3, unit="folds")
    assert first.cursor == {"offset": len(b"metric: tick=1; step=1; time=100.5\nprogress: 1/3 folds\n")}
    # The job is running and "half a " has no newline yet: it is not returned, and the cursor does not move past it.
    pending = read(first.cursor)
    assert pending.lines == [] and pending.cursor == first.cursor and pending.metrics == {}
    assert pending.progress is None
    (backend.root / job_id / "go").touch()
    assert finished(backend, job_id).state == "succeeded"
    rest = read(first.cursor)
    assert rest.lines == ["half a line", "metric: tick=2; step=2", "progress: 2/3 folds", "no newline at the end"]
    # Metrics of the new lines only, each with its own time label (none on this line).
    assert rest.metrics == {"tick": [{"value": 2.0, "step": 2, "time": None}]}
    assert rest.progress == Progress(done=2, total=3, unit="folds")
    assert rest.cursor == {"offset": (backend.root / job_id / "logs" / "output.log").stat().st_size}
    assert read(rest.cursor) == LogChunk(lines=[], cursor=rest.cursor)
    assert read(None).lines == first.lines + rest.lines
    json.dumps(rest.cursor)  # the caller stores it as JSON


def test_describe_reads_no_metrics_and_read_log_refuses_a_bad_cursor(
    backend: LocalTrainingBackend, tmp_path: Path
) -> None:
    job_id = start(backend, script_recipe(tmp_path, "five", FIVE_LINES + 'print("metric: tick=3")'), "five")
    status = finished(backend, job_id)
    assert status.state == "succeeded" and status.metrics == {}
    assert whole_log(backend, job_id).metrics == {"tick": [{"value": 3.0, "time": None}]}
    for cursor in ({"offset": -1}, {"offset": "12"}, {"offset": 1.5}):
        with pytest.raises(BackendError, match="log cursor offset must be a whole number of bytes >= 0") as caught:
            backend.read_log(job_id, cursor=cursor, metric_definitions=[])
        assert caught.value.permanent
    assert backend.read_log(job_id, cursor={"offset": 10_000}, metric_definitions=[]).lines == []
    assert not hasattr(backend, "logs")


def test_a_starting_jobs_half_line_waits_for_its_end(backend: LocalTrainingBackend, tmp_path: Path) -> None:
    job_id = start(backend, script_recipe(tmp_path, "five", FIVE_LINES), "starting")
    assert finished(backend, job_id).state == "succeeded"
    # As in the moment between spawning the process and recording its pid: running, but no pid in job.json yet.
    record = {key: value for key, value in job_record(backend, job_id).items() if key not in ("pid", "pgid")}
    record["state"] = "starting"
    (backend.root / job_id / "job.json").write_text(json.dumps(record))
    (backend.root / job_id / "usage.json").unlink()
    (backend.root / job_id / "logs" / "output.log").write_text("complete\nhalf a li")
    chunk = backend.read_log(job_id, cursor=None, metric_definitions=[])
    assert chunk.lines == ["complete"] and chunk.cursor == {"offset": len("complete\n")}


def test_a_failed_jobs_message_quotes_the_end_of_a_long_log(backend: LocalTrainingBackend, tmp_path: Path) -> None:
    job_id = start(backend, script_recipe(tmp_path, "long", LONG_LOG), "long")
    status = finished(backend, job_id)
    assert (backend.root / job_id / "logs" / "output.log").stat().st_size > 10 * FAILURE_TAIL_BYTES
    expected = [f"line {number} " + "x" * 40 for number in range(19982, 20001)] + ["the last words"]
    assert status.message == "the recipe exited with code 2; last log lines:\n" + "\n".join(expected)


def test_without_a_failure_file_the_message_is_the_end_of_the_log(
    backend: LocalTrainingBackend, tmp_path: Path
) -> None:
    job_id = start(backend, script_recipe(tmp_path, "broken", BROKEN), "broken")
    status = finished(backend, job_id)
    assert status.state == "failed"
    assert status.message == "the recipe exited with code 3; last log lines:\nloading things\nsomething broke"


def test_a_job_over_its_maximum_runtime_fails(backend: LocalTrainingBackend, tmp_path: Path) -> None:
    job_id = start(backend, script_recipe(tmp_path, "sleeper", SLEEPER), "slow", max_runtime_seconds=1)
    status = finished(backend, job_id)
    assert status.state == "failed"
    assert status.message == "the run exceeded its maximum runtime of 1 seconds and was stopped"
    assert processes_in_group(int(job_record(backend, job_id)["pgid"])) == []  # type: ignore[call-overload]


def test_starting_the_same_run_twice_starts_one_job(backend: LocalTrainingBackend, tmp_path: Path) -> None:
    recipe = script_recipe(tmp_path, "five", FIVE_LINES)
    job_id = start(backend, recipe, "once")
    pid = job_record(backend, job_id)["pid"]
    assert start(backend, recipe, "once") == job_id
    assert job_record(backend, job_id)["pid"] == pid
    other = JobSpec(run_id="another-run", recipe=recipe, hyperparameters={}, inputs=[], work_dir=backend.root / "once")
    with pytest.raises(BackendError, match="already holds job once of run run-once") as caught:
        backend.start(other)
    assert caught.value.permanent
    assert finished(backend, job_id).state == "succeeded"


def test_bad_specs_are_refused_before_anything_runs(backend: LocalTrainingBackend, tmp_path: Path) -> None:
    data = tmp_path / "rows.csv"
    data.write_text("a\n1\n")
    forest = get_recipe("random_forest")
    cases = [
        (
            {"hyperparameters": {"target": "a", "n_estimators": 0}, "inputs": [InputFile("train", data, "t.csv")]},
            "hyperparameter n_estimators: expected a whole number between 1 and 2000",
        ),
        (
            {"hyperparameters": {"target": "a"}, "inputs": [InputFile("test", data, "t.csv")]},
            "input 't.csv': recipe random_forest has no channel 'test' (channels: train, validation); "
            "channel 'train' needs at least one input file",
        ),
        (
            {"hyperparameters": {"target": "a"}, "inputs": [InputFile("train", data, "../t.csv")]},
            "input file name '../t.csv' must be a plain file name",
        ),
    ]
    for number, (fields, message) in enumerate(cases):
        with pytest.raises(BackendError) as caught:
            start(backend, forest, f"bad-{number}", **fields)
        assert caught.value.permanent
        assert caught.value.message == f"cannot start run run-bad-{number}: {message}"
        assert not (backend.root / f"bad-{number}").exists()
    outside = JobSpec(run_id="r", recipe=forest, hyperparameters={}, inputs=[], work_dir=tmp_path / "elsewhere")
    with pytest.raises(BackendError, match="must be a directory directly under"):
        backend.start(outside)


def test_unknown_jobs_are_not_found(backend: LocalTrainingBackend) -> None:
    for job_id in ("nope", "../jobs", ""):
        with pytest.raises(JobNotFound):
            backend.describe(job_id)
        with pytest.raises(JobNotFound):
            backend.stop(job_id)
