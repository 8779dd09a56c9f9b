"""The main pages' latency while 50 API clients and 10 deployments' metrics streams use the real portal over loopback
HTTP: idle, under load and after, SQLite and PostgreSQL.

Run from the repository root:

    .venv/bin/python bench/load.py [--seconds 60] [--rounds 5] [--clients 50] [--think 1.0] [--services 10]
                                   [--history large] [--databases sqlite,postgres]

Each database is measured in its own Python process (`bench/_databases.py`: the embedded settings, DEBUG off, a
temporary var/ folder; PostgreSQL in the database cp_load_bench, created and dropped). That process:

- migrates, seeds the history `bench/pages.py` seeds (its `Seeder`, grown to the small then the large counts, ANALYZE
  on PostgreSQL), and adds `--services` services, each with a succeeded deployment as its current one and its own
  ingest token (`monitoring.services.ingest.service_ingest_token`), and a DRF token for the admin and five scientists;
- starts the portal as `make run` does (`runall.web_command`: controlplane/web.py, one address in front of two
  gunicorn pools from docker/gunicorn.conf.py, pages and /api/; their sizes and the API pool's priority unchanged,
  the overrides, `WEB_CONCURRENCY=4` or `API_NICE=0` say, pass through from the environment) on a free port of
  127.0.0.1, its log in var/log/web.log, and waits for /healthz;
- measures the pages `bench/pages.py` measures (and the service list and a service's monitoring page, which read what
  the ingest writes) with one signed-in client (a session cookie, keep-alive, one request at a time), in three phases:
  1. idle: 2 untimed warm-up requests a page, then `--rounds` rounds of every page;
  2. under load, for `--seconds`: two load processes of their own (so their threads do not share the measuring
     client's interpreter) run `--clients` API clients (token auth, keep-alive, each looping over random API list and
     detail GETs, `--think` seconds between its requests; 0 is as fast as answered) and `--services` serving
     processes (each POSTs one batch to /api/v1/ingest/metrics/ every second, built by serving/metrics.py's `Metrics`
     from 20 simulated requests, as a serving process reports). The measuring client goes round the pages for the
     whole phase, after a 1 s ramp; a request counts if it ended before the load stopped. 60 s by default: a round
     of the pages takes 20-30 s under 50 clients here, so 20 s would give most pages one sample;
  3. after: `--rounds` rounds again, the load gone.

Printed per page: p50 and p95 idle and under load, their ratio, the samples under load, and whether the goal
(`bench/pages.py`'s: p95 < 150 ms) holds under load; then the API clients' requests, throughput, p50/p95 and errors,
the ingest batches accepted and refused with their p95 and the minutes stored, and the web processes' CPU use.
Everything listens on and connects to 127.0.0.1 only, and every phase is bounded (requests time out after 30 s).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _databases import run_children  # bench/_databases.py: one child process per database
from _table import print_rows  # bench/_table.py: the shared table printer

ROOT = Path(__file__).resolve().parent.parent
BENCH_DATABASE = "cp_load_bench"
HOST = "127.0.0.1"
RAMP_SECONDS = 1.0
REQUEST_TIMEOUT = 30.0
INGEST_URL = "/api/v1/ingest/metrics/"
INGEST_REQUESTS_PER_SECOND = 20  # simulated predictions a serving process counts between two sends


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (inclusive method, as bench/pages.py), or the only value, or NaN for none."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# ---------------------------------------------------------------------------------------------------------------------
# The load processes (`--loadgen api|ingest CONFIG`): threads until the stop time, then one JSON report on stdout


def _wait_until(moment: float) -> None:
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)


def api_clients(config: dict[str, Any]) -> dict[str, Any]:
    import requests

    base, urls, tokens = config["base"], config["urls"], config["tokens"]
    start_at, stop_at, think = config["start_at"], config["stop_at"], config["think"]
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[str, int] = {}

    def client(index: int) -> None:
        rng = random.Random(index)
        session = requests.Session()
        session.headers["Authorization"] = f"Token {tokens[index % len(tokens)]}"
        _wait_until(start_at + rng.uniform(0, max(think, 0.2)))  # staggered, as real clients are
        while time.time() < stop_at:
            url = rng.choice(urls)
            began = time.perf_counter()
            try:
                status = str(session.get(base + url, timeout=REQUEST_TIMEOUT).status_code)
            except requests.RequestException as exc:
                status = type(exc).__name__
            ms = (time.perf_counter() - began) * 1000
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == "200":
                    latencies.append(ms)
            if think:
                time.sleep(min(think * rng.uniform(0.5, 1.5), max(stop_at - time.time(), 0)))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(config["clients"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(stop_at - time.time(), 0) + REQUEST_TIMEOUT + 5)
    ended = time.time()
    with lock:
        return {
            "seconds": ended - start_at,
            "statuses": dict(statuses),
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "max": max(latencies, default=float("nan")),
            "ok": len(latencies),
        }


def serving_processes(config: dict[str, Any]) -> dict[str, Any]:
    import requests

    sys.path.insert(0, str(ROOT))  # the serving package, not bench/serving.py
    from serving.metrics import BUCKETS_MS, FORMAT, Metrics

    base, start_at, stop_at = config["base"], config["start_at"], config["stop_at"]
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    parts = {"taken": 0, "duplicated": 0, "late": 0}

    def serving(service: dict[str, Any], index: int) -> None:
        rng = random.Random(1000 + index)
        metrics = Metrics(service=service["name"], revision=service["revision"], runtime="bench")
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {service['token']}"
        pending: list[Any] = []  # as serving/metrics.py's PortalSink: what was not taken is sent again, same part ids
        tick = start_at + index / len(config["services"])  # spread over the second
        while tick < stop_at:
            _wait_until(tick)
            for _ in range(INGEST_REQUESTS_PER_SECOND):
                answered = 400 if rng.random() < 0.02 else 200
                metrics.record(answered, rng.lognormvariate(-5.5, 0.6), rows=rng.randint(1, 20))
            pending += metrics.take_minutes(now=time.time(), include_current=True)
            body = {
                "format": FORMAT,
                "service": service["name"],
                "revision": service["revision"],
                "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "latency_buckets_ms": list(BUCKETS_MS),
                "minutes": [m.as_json() for m in pending],
            }
            began = time.perf_counter()
            answer: dict[str, Any] = {}
            try:
                # PortalSink gives up after SEND_TIMEOUT_SECONDS (3 s) and keeps the minutes; so does this one.
                response = session.post(base + INGEST_URL, json=body, timeout=3.0)
                status = str(response.status_code)
                if response.status_code == 200:
                    answer = response.json()
                if response.status_code == 200 or (400 <= response.status_code < 500 and status not in ("408", "429")):
                    pending = []
            except requests.RequestException as exc:
                status = type(exc).__name__
            ms = (time.perf_counter() - began) * 1000
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(ms)
                parts["taken"] += answer.get("taken", 0)
                parts["duplicated"] += answer.get("duplicated", 0)
            tick += 1.0
            if tick < time.time():  # the send took longer than a second: skip to the next whole tick
                with lock:
                    parts["late"] += 1
                tick += int(time.time() - tick) + 1

    threads = [
        threading.Thread(target=serving, args=(service, i), daemon=True) for i, service in enumerate(config["services"])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(stop_at - time.time(), 0) + 10)
    with lock:
        return {
            "statuses": dict(statuses),
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "max": max(latencies, default=float("nan")),
            **parts,
            "simulated_requests_per_batch": INGEST_REQUESTS_PER_SECOND,
        }


# ---------------------------------------------------------------------------------------------------------------------
# The measuring child (`--child sqlite|postgres`): Django set up, the portal started, the three phases


def seed(history: str, services: int, tmp: Path) -> dict[str, Any]:
    """bench/pages.py's history, `services` services with a current deployment, tokens; what the phases need."""
    from django.conf import settings
    from django.test import Client
    from django.urls import reverse
    from django.utils import timezone
    from pages import LARGE, SMALL, Seeder, analyze, pages
    from rest_framework.authtoken.models import Token

    from deployments.models import ApprovalRequest, Deployment, Service
    from lineage.models import Dataset, DatasetVersion, ModelVersion, RegisteredModel, Run
    from monitoring.services.ingest import service_ingest_token

    seeder = Seeder(tmp)
    seeded = seeder.grow_to(SMALL)
    if history == "large":
        seeded = seeder.grow_to(LARGE)
    production = seeder.environments[1]
    now = timezone.now()
    template = ModelVersion.objects.order_by("pk").first()
    while len(seeder.models) < services:  # the small history has one registered model: one more per service
        number = len(seeder.models)
        model = RegisteredModel.objects.create(
            project=seeder.projects[number % 5], name=f"Model {number}", slug=f"model-{number}", created_by=seeder.admin
        )
        ModelVersion.objects.create(
            **{f: getattr(template, f) for f in ("task", "target", "input_schema", "classes", "metrics")},
            run=Run.objects.filter(model_version__isnull=True).order_by("pk").first(),
            registered_model=model,
            number=1,
            artifact_uri=template.artifact_uri,
            artifact_key=template.artifact_key,
            sha256=template.sha256,
            size=template.size,
            created_by=seeder.admin,
        )
        seeder.models.append(model)
    streams, service_rows = [], []
    for model in seeder.models[:services]:
        service = Service.objects.create(
            registered_model=model,
            environment=production,
            name=f"{model.slug}-production",
            backend="local",
            created_by=seeder.admin,
        )
        deployment = Deployment.objects.create(
            service=service,
            model_version=ModelVersion.objects.filter(registered_model=model).order_by("number").first(),
            status=Deployment.Status.SUCCEEDED,
            revision="r-d0",
            initiated_by=seeder.admin,
            reason="seeded for bench/load.py",
            started_at=now,
            baking_at=now,
            finished_at=now,
        )
        Deployment.objects.filter(pk=deployment.pk).update(revision=f"r-d{deployment.pk}")
        Service.objects.filter(pk=service.pk).update(current_deployment=deployment)
        streams.append({"name": service.name, "revision": f"d{deployment.pk}", "token": service_ingest_token(service)})
        service_rows.append(service)
    analyze()

    rng = random.Random(3)

    def pick(population: list[Any], k: int) -> list[Any]:
        return rng.sample(population, min(k, len(population)))

    runs = list(Run.objects.values_list("pk", flat=True)[:5000])
    datasets = list(Dataset.objects.select_related("project")[:500])
    api_urls = [
        reverse(name)
        for name in (
            "api-project-list",
            "api-dataset-list",
            "api-run-list",
            "api-model-list",
            "api-audit-list",
            "api-environment-list",
            "api-approval-request-list",
            "api-service-list",
            "api-deployment-list",
            "api-alert-list",
        )
    ]
    api_urls += [reverse("api-run-list") + "?status=failed"]
    api_urls += [reverse("api-project-detail", args=[p.slug]) for p in seeder.projects[:3]]
    api_urls += [reverse("api-dataset-detail", args=[d.project.slug, d.slug]) for d in pick(datasets, 3)]
    api_urls += [
        reverse("api-dataset-version-detail", args=[pk])
        for pk in pick(list(DatasetVersion.objects.values_list("pk", flat=True)[:5000]), 3)
    ]
    api_urls += [reverse("api-run-detail", args=[pk]) for pk in pick(runs, 3)]
    api_urls += [
        reverse("api-model-version-detail", args=[pk])
        for pk in pick(list(ModelVersion.objects.values_list("pk", flat=True)[:5000]), 3)
    ]
    api_urls += [
        reverse("api-approval-request-detail", args=[pk])
        for pk in pick(list(ApprovalRequest.objects.values_list("pk", flat=True)[:5000]), 3)
    ]
    api_urls += [reverse("api-service-detail", args=[s.pk]) for s in service_rows[:3]]
    api_urls += [reverse("api-service-metrics", args=[s.pk]) for s in service_rows[:3]]

    users = [seeder.admin, *seeder.users]
    tokens = [Token.objects.get_or_create(user=user)[0].key for user in users]
    browser = Client()
    browser.force_login(seeder.admin)  # a session row, as signing in makes; its cookie goes to the real server
    page_urls = pages(seeded) + [
        ("services", reverse("service-list")),
        ("service monitoring", reverse("service-metrics", args=[service_rows[0].pk])),
    ]
    return {
        "pages": page_urls,
        "api_urls": api_urls,
        "tokens": tokens,
        "streams": streams,
        "cookie": (settings.SESSION_COOKIE_NAME, browser.cookies[settings.SESSION_COOKIE_NAME].value),
        "counts": dict(seeder.counts, services=len(service_rows)),
        "service_ids": [s.pk for s in service_rows],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_portal(port: int) -> subprocess.Popen[bytes]:
    from django.conf import settings

    from controlplane.management.commands.runall import web_command

    log_dir = settings.VAR_DIR / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "web.log").open("ab") as log:
        portal = subprocess.Popen(
            web_command(HOST, port),
            cwd=settings.BASE_DIR,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    import requests

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if portal.poll() is not None:
            raise SystemExit(f"the portal exited ({portal.returncode}): {(log_dir / 'web.log').read_text()[-3000:]}")
        try:
            if requests.get(f"http://{HOST}:{port}/healthz", timeout=2).status_code == 200:
                return portal
        except requests.RequestException:
            pass
        time.sleep(0.2)
    stop_portal(portal)
    raise SystemExit("the portal did not answer /healthz within 60 s")


def stop_portal(portal: subprocess.Popen[bytes]) -> None:
    import signal

    if portal.poll() is None:
        portal.send_signal(signal.SIGTERM)
        try:
            portal.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(portal.pid, signal.SIGKILL)
            portal.wait()


def web_cpu_seconds(portal: subprocess.Popen[bytes]) -> float:
    """User and system CPU of the web process and its gunicorn masters and workers so far."""
    import psutil

    total = 0.0
    master = psutil.Process(portal.pid)
    for process in [master, *master.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def page_request(session: Any, base: str, name: str, url: str) -> tuple[str, float, float]:
    """One page: (name, ms, when it ended in wall-clock seconds)."""
    began = time.perf_counter()
    response = session.get(base + url, timeout=REQUEST_TIMEOUT)
    ms = (time.perf_counter() - began) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {response.status_code}: {response.text[:300]!r}")
    return name, ms, time.time()


def page_rounds(session: Any, base: str, pages: list[tuple[str, str]], rounds: int) -> list[tuple[str, float, float]]:
    return [page_request(session, base, name, url) for _ in range(rounds) for name, url in pages]


def by_page(samples: list[tuple[str, float, float]]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    for name, ms, _ in samples:
        times.setdefault(name, []).append(ms)
    return times


def summary(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {name: {"p50": percentile(v, 50), "p95": percentile(v, 95), "n": len(v)} for name, v in times.items()}


def child(database: str, args: argparse.Namespace) -> dict[str, Any]:
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    import requests
    from django.core.management import call_command
    from django.db import connection, connections

    from monitoring.models import MetricPoint

    call_command("migrate", verbosity=0)
    results: dict[str, Any] = {"vendor": connection.vendor}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        world = seed(args.history, args.services, Path(tmp))
        results["seed_seconds"] = time.perf_counter() - started
        results["counts"] = world["counts"]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SHOW server_version")
                results["server"] = "PostgreSQL " + cursor.fetchone()[0]
        connections.close_all()  # the portal's processes hold the database from here

        from dataclasses import asdict

        from controlplane.web import pools

        results["pools"] = [asdict(pool) for pool in pools()]
        port = free_port()
        base = f"http://{HOST}:{port}"
        portal = start_portal(port)
        loaders: list[subprocess.Popen[bytes]] = []
        try:
            session = requests.Session()
            session.cookies.set(*world["cookie"], domain=HOST)
            pages = [tuple(p) for p in world["pages"]]
            page_rounds(session, base, pages, 2)
            check = requests.Session()
            check.headers["Authorization"] = f"Token {world['tokens'][0]}"
            for url in world["api_urls"]:
                answer = check.get(base + url, timeout=REQUEST_TIMEOUT)
                if answer.status_code != 200:
                    raise SystemExit(f"API {url} answered {answer.status_code}: {answer.text[:300]!r}")

            phases: dict[str, Any] = {}
            results["load_before"] = os.getloadavg()
            idle = page_rounds(session, base, pages, args.rounds)
            phases["idle"] = summary(by_page(idle))

            start_at = time.time() + 3.0  # the load processes start Python and import requests first
            stop_at = start_at + args.seconds
            common = {"base": base, "start_at": start_at, "stop_at": stop_at}
            specs = {
                "api": {
                    **common,
                    "urls": world["api_urls"],
                    "tokens": world["tokens"],
                    "clients": args.clients,
                    "think": args.think,
                },
                "ingest": {**common, "services": world["streams"]},
            }
            for kind, spec in specs.items():
                path = Path(tmp) / f"{kind}.json"
                path.write_text(json.dumps(spec))
                env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'bench'}")
                loaders.append(
                    subprocess.Popen(
                        [sys.executable, __file__, "--loadgen", kind, str(path)],
                        env=env,
                        cwd=ROOT,
                        stdout=subprocess.PIPE,
                        start_new_session=True,
                    )
                )
            _wait_until(start_at + RAMP_SECONDS)
            cpu_before, wall_before = web_cpu_seconds(portal), time.time()
            loaded = []
            # Round after round without restarting at the first page, so every page gets as many samples, give or
            # take one; a request still running when the load stops is not counted.
            for name, url in itertools.cycle(pages):
                if time.time() >= stop_at:
                    break
                sample = page_request(session, base, name, url)
                if sample[2] <= stop_at:
                    loaded.append(sample)
            cpu_during = web_cpu_seconds(portal) - cpu_before
            wall_during = min(time.time(), stop_at) - wall_before
            results["web_cpu_per_second"] = cpu_during / wall_during
            phases["load"] = summary(by_page(loaded))
            results["load_during"] = os.getloadavg()
            for kind, loader in zip(specs, loaders, strict=True):
                out, _ = loader.communicate(timeout=args.seconds + REQUEST_TIMEOUT + 30)
                if loader.returncode != 0:
                    raise SystemExit(f"the {kind} load process failed ({loader.returncode})")
                results[kind] = json.loads(out)

            after = page_rounds(session, base, pages, args.rounds)
            phases["after"] = summary(by_page(after))
            results["phases"] = phases
        finally:
            for loader in loaders:
                if loader.poll() is None:
                    os.killpg(loader.pid, 9)
                    loader.wait()
            stop_portal(portal)
        stored = MetricPoint.objects.filter(service_id__in=world["service_ids"])
        results["stored"] = {
            "rows": stored.count(),
            "requests": sum(stored.values_list("requests", flat=True)),
        }
    return results


# ---------------------------------------------------------------------------------------------------------------------
# The parent: one child per database, then the tables


def ms(value: float) -> str:
    return "-" if value != value else f"{value:.0f}"  # NaN: no sample


def report(database: str, results: dict[str, Any], args: argparse.Namespace, target_ms: float) -> list[str]:
    from sqlite3 import sqlite_version

    counts = results["counts"]
    print(
        f"\n{database} ({results.get('server', 'SQLite ' + sqlite_version)}); "
        f"seeded in {results['seed_seconds']:.0f} s: " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
    )
    shapes = ", ".join(
        f"{p['name']} {p['workers']} workers x {p['threads']} threads at nice {p['nice']}" for p in results["pools"]
    )
    print(
        f"portal: controlplane.web, gunicorn gthread pools: {shapes}; web processes used "
        f"{results['web_cpu_per_second']:.2f} CPU-seconds a second under load"
    )
    print(
        "load average (1, 5, 15 min) before: {}, under load: {}".format(
            *(" ".join(f"{x:.1f}" for x in load) for load in (results["load_before"], results["load_during"]))
        )
    )
    phases = results["phases"]
    rows = [("page", "idle p50", "p95", "load p50", "p95", "n", "p95 ratio", "after p95", f"< {target_ms:.0f} ms")]
    misses = []
    for name, idle in phases["idle"].items():
        load = phases["load"].get(name, {"p50": float("nan"), "p95": float("nan"), "n": 0})
        after = phases["after"][name]
        holds = load["p95"] < target_ms
        if load["n"] and not holds:
            misses.append(f"{database}: {name}")
        rows.append(
            (
                name,
                ms(idle["p50"]),
                ms(idle["p95"]),
                ms(load["p50"]),
                ms(load["p95"]),
                str(load["n"]),
                f"{load['p95'] / idle['p95']:.1f}x" if load["n"] else "-",
                ms(after["p95"]),
                ("yes" if holds else "NO") if load["n"] else "no sample",
            )
        )
    print_rows(rows)
    api, ingest = results["api"], results["ingest"]
    errors = {k: v for k, v in api["statuses"].items() if k != "200"}
    refused = {k: v for k, v in ingest["statuses"].items() if k != "200"}
    print_rows(
        [
            ("load", "requests", "per s", "p50 ms", "p95 ms", "max ms", "not 200"),
            (
                f"API clients ({args.clients}, think {args.think:g} s)",
                str(sum(api["statuses"].values())),
                f"{api['ok'] / api['seconds']:.1f}",
                ms(api["p50"]),
                ms(api["p95"]),
                ms(api["max"]),
                ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "0",
            ),
            (
                f"ingest ({results['counts']['services']} services, 1 batch/s each)",
                str(sum(ingest["statuses"].values())),
                f"{ingest['statuses'].get('200', 0) / args.seconds:.1f}",
                ms(ingest["p50"]),
                ms(ingest["p95"]),
                ms(ingest["max"]),
                ", ".join(f"{k}: {v}" for k, v in sorted(refused.items())) or "0",
            ),
        ]
    )
    stored = results["stored"]
    print(
        f"ingest: {ingest['statuses'].get('200', 0)} batches accepted, {sum(refused.values())} refused or failed, "
        f"{ingest['late']} sent late (the previous send took over 1 s); parts taken {ingest['taken']}, resent and "
        f"recognised {ingest['duplicated']}; stored {stored['rows']} per-minute rows counting "
        f"{stored['requests']:,} simulated requests ({ingest['simulated_requests_per_batch']} a part)"
    )
    return misses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load runs (default 60)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every page idle and after (default 5)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent API clients (default 50)")
    parser.add_argument("--think", type=float, default=1.0, help="seconds between a client's requests (default 1)")
    parser.add_argument("--services", type=int, default=10, help="services streaming metrics (default 10)")
    parser.add_argument("--history", choices=("small", "large"), default="large", help="bench/pages.py's history")
    parser.add_argument("--databases", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--loadgen", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loadgen:
        kind, path = args.loadgen
        config = json.loads(Path(path).read_text())
        print(json.dumps(api_clients(config) if kind == "api" else serving_processes(config)))
        return 0
    if args.child:
        print(json.dumps(child(args.child, args)))
        return 0
    from pages import TARGET_MS

    print(
        f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    print(
        f"{args.history} history; {args.rounds} rounds idle and after; {args.seconds:g} s of load: {args.clients} API "
        f"clients (think {args.think:g} s) and {args.services} services sending metrics every second"
    )
    os.environ["DJANGO_DEBUG"] = "false"
    os.environ.pop("REDIS_URL", None)  # nothing measured enqueues work; the embedded settings' broker is not started
    forwarded = [
        f"--{name}={getattr(args, name)}" for name in ("seconds", "rounds", "clients", "think", "services", "history")
    ]
    try:
        outputs = run_children(
            __file__, args.databases.split(","), database_name=BENCH_DATABASE, args=forwarded, cwd=ROOT
        )
    except subprocess.CalledProcessError as exc:  # run_children keeps the child's stderr: show why it failed
        raise SystemExit(f"the measuring process failed ({exc.returncode}):\n{exc.stderr[-3000:]}") from None
    misses: list[str] = []
    for database, out in outputs.items():
        misses += report(database, json.loads(out.strip().splitlines()[-1]), args, TARGET_MS)
    print("\npages missing the goal under load: " + (", ".join(misses) if misses else "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
