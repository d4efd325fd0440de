"""The device listing at fleet scale: p50/p99 of one page filtered by cohort, beside its bare SQL.

    python bench/api.py [--devices 10000] [--cohorts 10] [--requests 500] [--limit 50]
                        [--database-url URL | --no-postgres]

For each database, SQLite (a file in a temporary folder) and PostgreSQL (--database-url, by default
the local server at postgresql+psycopg://postgres@127.0.0.1:5432/postgres, in a fresh schema dropped
afterwards), the benchmark:

1. creates the hub's tables and bulk-inserts ``--devices`` devices (their effective labels, a
   desired state each, three model versions, states and health spread as in a running fleet), and
   ``--cohorts`` cohorts by label selector (``site=sK``); device i is in cohort i mod K, so a
   cohort's members are spread over the whole id range, the hard case for a page ordered by id;
2. serves the hub's FastAPI app (``cloud.api.app.create_app``) with uvicorn in a process of its
   own on a free port of 127.0.0.1, and asks it through httpx (one keep-alive connection, bearer
   token) ``GET /api/v1/devices?cohort=site-1&limit=50``: the real HTTP stack, auth and JSON;
3. in the same loop, alternating with the requests, runs bare the SQL the service emits for that
   first page (``devices_page_query``, compiled for the dialect, through the same engine's driver
   connection with ``exec_driver_sql``): the baseline;
4. times ``GET /api/v1/fleet/summary`` after that, and records the query plan of the page.

Targets: the HTTP p99 <= 50 ms on each database. The ratio HTTP p50 / SQL p50 says what the stack
adds to the query. Wall-clock percentiles follow whatever else the machine runs, so the CPU time the
hub's process spends per listing request (from /proc) is recorded too: what a request costs on an
otherwise idle core. For PostgreSQL it leaves out the database server's own share, which the bare
query's time and the EXPLAIN ANALYZE recorded beside it show.

The time for the dashboard's overview page to become complete in Chromium is measured against the
SQLite hub with bench/dashboard_timing.py (``overview_complete_seconds(base_url, token)``); where it
cannot run (no Chromium, no Playwright) it is recorded as null with the reason.
The last line of output is one JSON object (see ../shared/DESIGN.md, "Benchmarks"); the exit
status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "proto"))

import httpx  # noqa: E402
from sqlalchemy import Engine, insert, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

TARGET_P99_MS = 50.0
FLEET = "bench"
VERSIONS = ("1.0.0", "1.1.0", "1.2.0")
HOST = "127.0.0.1"


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which."""


# --- the fleet --------------------------------------------------------------------------------


def _device_rows(n: int, cohorts: int, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Devices and their effective labels; about 94% online, a few degraded, some on trial."""
    devices, labels = [], []
    for i in range(n):
        device_id = f"dev-{i:06d}"
        site = f"s{i % cohorts}"
        online = i % 17 != 0
        health = "serving" if online else "offline"
        if online and i % 101 == 0:
            health = "degraded: checksum mismatch on 1.2.0"
        elif online and i % 53 == 0:
            health = f"trial: digits:{VERSIONS[2]} (serve, 12/200 requests)"
        version = VERSIONS[0] if i % 10 < 7 else VERSIONS[1] if i % 10 < 9 else VERSIONS[2]
        device_labels = {"site": site, "tier": "canary" if i % 50 == 0 else "main"}
        devices.append(
            {
                "id": device_id,
                "fleet": FLEET,
                "state": "online" if online else "offline",
                "agent_version": "0.9.0",
                "health": health,
                "capabilities": {"runtimes": ["onnxruntime"], "cpu_arch": "aarch64", "cpu_count": 4},
                "labels": device_labels,
                "operator_labels": {},
                "active_model_name": "digits",
                "active_model_version": version,
                "active_model_sha256": f"{VERSIONS.index(version):064x}",
                "active_model_variant": "",
                "active_model_precision": "",
                "previous_model_variant": "",
                "previous_model_precision": "",
                "applied_generation": 1,
                "hardware_id": "",
                "firmware_version": "",
                "firmware_slot": "",
                "trusted_root_version": 1,
                "queued_messages": 0,
                "dropped_messages": 0,
                "first_seen": now - timedelta(days=30),
                "last_seen": now - timedelta(seconds=i % 3600),
            }
        )
        labels += [{"device_id": device_id, "key": k, "value": v} for k, v in device_labels.items()]
    return devices, labels


def seed(engine: Engine, devices: int, cohorts: int) -> dict[str, Any]:
    """The fleet in bulk (executemany INSERTs, one transaction); returns counts and the time it took."""
    from sqlmodel import Session

    from cloud.db import create_all
    from cloud.models import Cohort, DesiredState, Device, DeviceLabel, ModelVersion

    create_all(engine)
    now = datetime.now(UTC)
    device_rows, label_rows = _device_rows(devices, cohorts, now)
    start = time.perf_counter()
    with Session(engine) as session:
        version_ids = []
        for k, version in enumerate(VERSIONS):
            row = ModelVersion(
                name="digits", version=version, format="onnx", sha256=f"{k:064x}", length=1024, created_at=now
            )
            session.add(row)
            session.flush()
            assert row.id is not None
            version_ids.append(row.id)
        session.execute(insert(Device), device_rows)
        session.execute(insert(DeviceLabel), label_rows)
        desired = [
            {"device_id": d["id"], "model_version_id": version_ids[VERSIONS.index(d["active_model_version"])],
             "variant_id": None, "generation": 1, "issued_at": now}
            for d in device_rows
        ]  # fmt: skip
        session.execute(insert(DesiredState), desired)
        for k in range(cohorts):
            session.add(Cohort(fleet=FLEET, name=f"site-{k}", selector=f"site=s{k}", created_at=now))
        session.commit()
    seconds = time.perf_counter() - start
    if engine.dialect.name == "postgresql":
        # A running database has statistics from autovacuum; a table filled a moment ago has none yet.
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    return {"devices": devices, "labels": len(label_rows), "cohorts": cohorts, "seed_s": round(seconds, 2)}


def _make_token(engine: Engine) -> str:
    from cloud.db import session_factory
    from cloud.models import Role
    from cloud.services import tokens

    with session_factory(engine)() as session:
        _row, secret = tokens.create_token(session, f"bench-{secrets.token_hex(4)}", Role.VIEWER)
    return secret


# --- the hub's API in a process of its own -------------------------------------------------------


def _serve(database_url: str, data_dir: str, ports: mp.Queue[int]) -> None:
    import uvicorn

    from cloud.api.app import create_app
    from cloud.artifacts import ArtifactStore
    from cloud.context import HubContext
    from cloud.db import create_db_engine
    from cloud.services.publisher import RecordingPublisher
    from cloud.settings import Settings
    from cloud.startup import bind_http_socket

    settings = Settings(data_dir=Path(data_dir), fleet=FLEET, database_url=database_url)
    ctx = HubContext(
        settings=settings,
        engine=create_db_engine(database_url),
        store=ArtifactStore(Path(data_dir) / "artifacts"),
        publisher=RecordingPublisher(),
        artifact_endpoint=f"{HOST}:50051",
    )
    # The socket as the hub binds it (cloud.startup), listening before its port is told: a request
    # sent before uvicorn accepts waits in the backlog.
    sock = bind_http_socket(HOST, 0)
    ports.put(int(sock.getsockname()[1]))
    config = uvicorn.Config(create_app(ctx), log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


@dataclass(frozen=True, slots=True)
class Hub:
    url: str
    pid: int


@contextlib.contextmanager
def hub_api(database_url: str, data_dir: Path, timeout: float) -> Iterator[Hub]:
    """The hub's API served by uvicorn in a child process (its base URL and pid); stopped on exit."""
    spawn = mp.get_context("spawn")
    ports: mp.Queue[int] = spawn.Queue()
    proc = spawn.Process(target=_serve, args=(database_url, str(data_dir), ports), daemon=True)
    proc.start()
    try:
        try:
            port = ports.get(timeout=timeout)
        except Exception as e:
            raise BenchError(f"the API process did not report its port within {timeout} s") from e
        assert proc.pid is not None
        yield Hub(f"http://{HOST}:{port}", proc.pid)
    finally:
        proc.terminate()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join(30)


# --- measuring --------------------------------------------------------------------------------


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(q[98], 3),
        "max_ms": round(ordered[-1], 3),
        "n": len(ordered),
    }


def _bare_page_sql(engine: Engine, cohort: str, limit: int) -> tuple[str, Any]:
    """The SQL of the first page as the service emits it, and its parameters in the driver's style."""
    from sqlmodel import Session

    from cloud.services import cohorts
    from cloud.services.devices import DeviceFilter, devices_page_query

    with Session(engine) as session:
        found = cohorts.get_cohort(session, FLEET, cohort)
        session.expunge(found)
    stmt = devices_page_query(DeviceFilter(fleet=FLEET, cohort=found), limit)
    compiled = stmt.compile(dialect=engine.dialect)
    params = compiled.construct_params()
    if compiled.positiontup is not None:
        return str(compiled), tuple(params[name] for name in compiled.positiontup)
    return str(compiled), params


def _plan(engine: Engine, sql: str, params: Any) -> list[str]:
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN (ANALYZE, COSTS OFF) "
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(explain + sql, params).all()
    return [" ".join(str(c) for c in row) for row in rows]


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far; None where /proc cannot tell."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # utime and stime are fields 14 and 15 of stat(5); the split starts at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    engine: Engine, hub: Hub, token: str, *, cohort: str, limit: int, requests: int, warmup: int
) -> dict[str, Any]:
    sql, params = _bare_page_sql(engine, cohort, limit)
    headers = {"Authorization": f"Bearer {token}"}
    listing = f"/api/v1/devices?cohort={cohort}&limit={limit}"
    summary_path = "/api/v1/fleet/summary"
    http_ms: list[float] = []
    sql_ms: list[float] = []
    summary_ms: list[float] = []
    with httpx.Client(base_url=hub.url, headers=headers, timeout=30.0) as client, engine.connect() as conn:
        first = client.get(listing)
        if first.status_code != 200:
            raise BenchError(f"GET {listing}: expected 200, got {first.status_code}: {first.text[:300]}")
        body = first.json()
        bare_rows = conn.exec_driver_sql(sql, params).all()
        # Each run in a transaction of its own, as each API request's: on SQLite the engine begins
        # every transaction IMMEDIATE, so one left open would hold the API's requests.
        conn.rollback()
        # The same page both ways: the API shows the first `limit` of the limit + 1 rows it reads.
        if [d["id"] for d in body["data"]] != [r[0] for r in bare_rows[:limit]]:
            raise BenchError("the API's first page and the bare SQL's rows differ; expected the same devices")
        hub_cpu: float | None = 0.0  # None: /proc cannot tell
        bare_cpu = 0.0
        for i in range(warmup + requests):
            cpu0 = _cpu_s(hub.pid)
            t0 = time.perf_counter()
            r = client.get(listing)
            t1 = time.perf_counter()
            cpu1 = _cpu_s(hub.pid)
            if r.status_code != 200:
                raise BenchError(f"GET {listing}: expected 200, got {r.status_code}")
            c0 = time.process_time()
            t2 = time.perf_counter()
            conn.exec_driver_sql(sql, params).all()
            conn.rollback()
            t3 = time.perf_counter()
            c1 = time.process_time()
            if i >= warmup:
                http_ms.append((t1 - t0) * 1000)
                sql_ms.append((t3 - t2) * 1000)
                bare_cpu += c1 - c0
                if hub_cpu is not None and cpu0 is not None and cpu1 is not None:
                    hub_cpu += cpu1 - cpu0
                else:
                    hub_cpu = None
        for i in range(warmup + requests):
            t0 = time.perf_counter()
            s = client.get(summary_path)
            t1 = time.perf_counter()
            if s.status_code != 200:
                raise BenchError(f"GET {summary_path}: expected 200, got {s.status_code}")
            if i >= warmup:
                summary_ms.append((t1 - t0) * 1000)
        summary = s.json()
    http, bare = _percentiles(http_ms), _percentiles(sql_ms)
    return {
        "page_devices": body["count"],
        "has_next_cursor": body["next_cursor"] is not None,
        "http_listing": http,
        "bare_sql_listing": bare,
        "http_vs_sql_p50": round(http["p50_ms"] / bare["p50_ms"], 1),
        "http_vs_sql_p99": round(http["p99_ms"] / bare["p99_ms"], 1),
        # What a request costs whatever else runs on the machine: CPU, not wall-clock, time.
        "hub_cpu_ms_per_listing": None if hub_cpu is None else round(hub_cpu * 1000 / requests, 2),
        "bare_sql_client_cpu_ms": round(bare_cpu * 1000 / requests, 2),
        "http_summary": _percentiles(summary_ms),
        "summary_total": summary["total"],
        "plan": _plan(engine, sql, params),
    }


def _dashboard_time(base_url: str, token: str) -> dict[str, Any]:
    try:
        from bench.dashboard_timing import overview_complete_seconds
    except ImportError as e:
        return {"seconds": None, "reason": f"bench/dashboard_timing.py cannot be imported: {e}"}
    try:
        seconds = float(overview_complete_seconds(base_url, token))
    except Exception as e:  # the browser is optional here: record why, measure the rest
        return {"seconds": None, "reason": f"{type(e).__name__}: {e}"}
    return {"seconds": round(seconds, 3), "reason": None}


# --- databases ----------------------------------------------------------------------------------


DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def _postgres(url: str | None) -> Iterator[tuple[str, str]]:
    """A fresh schema of the PostgreSQL at ``url`` (the local server by default), and what it is."""
    import psycopg

    from cloud.db import normalize_url

    url = url or DEFAULT_POSTGRES
    where = make_url(url).render_as_string(hide_password=True)
    url = normalize_url(url)
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    schema = f"bench_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as e:
        raise SystemExit(
            f"bench/api.py: cannot reach PostgreSQL at {where} ({e}); pass --database-url URL, "
            "or --no-postgres to measure SQLite only"
        ) from e
    try:
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False), where
    finally:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _server_version(engine: Engine) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return "sqlite " + str(conn.execute(text("select sqlite_version()")).scalar())
        return str(conn.execute(text("show server_version")).scalar())


def run_one(
    name: str, url: str, where: str, work: Path, args: argparse.Namespace, *, dashboard: bool
) -> dict[str, Any]:
    from cloud.db import create_db_engine

    engine = create_db_engine(url)
    try:
        seeded = seed(engine, args.devices, args.cohorts)
        token = _make_token(engine)
        data_dir = work / f"hub-{name}"
        data_dir.mkdir()
        with hub_api(url, data_dir, args.timeout) as hub:
            result = {"database": where, "server": _server_version(engine), **seeded}
            result.update(
                measure(
                    engine,
                    hub,
                    token,
                    cohort=f"site-{min(1, args.cohorts - 1)}",
                    limit=args.limit,
                    requests=args.requests,
                    warmup=args.warmup,
                )
            )
            if dashboard:
                result["dashboard_overview"] = _dashboard_time(hub.url, token)
        return result
    finally:
        engine.dispose()


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ef-bench-api-"))
    results: dict[str, Any] = {
        "transport": "uvicorn (a child process) on 127.0.0.1, httpx client with keep-alive",
        "query": f"GET /api/v1/devices?cohort=site-1&limit={args.limit} (first page)",
    }
    try:
        results["sqlite"] = run_one(
            "sqlite", f"sqlite:///{work / 'hub.db'}", "SQLite file", work, args, dashboard=True
        )
        if args.no_postgres:
            results["postgresql"] = None
        else:
            with _postgres(args.database_url) as (url, where):
                results["postgresql"] = run_one("postgresql", url, where, work, args, dashboard=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    dash = results["sqlite"].pop("dashboard_overview")
    results["dashboard_overview_complete_s"] = dash["seconds"]
    results["dashboard_overview_reason"] = dash["reason"]
    return results


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for db in ("sqlite", "postgresql"):
        if results.get(db) is None:
            continue
        p99 = results[db]["http_listing"]["p99_ms"]
        out[f"{db}_listing_p99"] = {
            "value": p99,
            "goal": TARGET_P99_MS,
            "unit": "ms (at most)",
            "met": p99 <= TARGET_P99_MS,
        }
    return out


def _versions() -> dict[str, str]:
    out = {}
    for name in ("fastapi", "starlette", "uvicorn", "httpx", "sqlalchemy", "sqlmodel", "pydantic", "psycopg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = None
    with contextlib.suppress(OSError):
        load = round(os.getloadavg()[0], 2)
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "load_1m": load}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000, help="devices in the fleet (default 10000)")
    parser.add_argument(
        "--cohorts", type=int, default=10, help="cohorts the devices spread over (default 10)"
    )
    parser.add_argument("--requests", type=int, default=500, help="timed requests per database (default 500)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests first (default 50)")
    parser.add_argument("--limit", type=int, default=50, help="devices per page (default 50)")
    parser.add_argument("--database-url", help=f"the PostgreSQL to use (default: {DEFAULT_POSTGRES})")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--timeout", type=float, default=120.0, help="for the API process to start, s")
    args = parser.parse_args(argv)
    if args.devices < 1 or args.cohorts < 1 or args.requests < 2 or not 1 <= args.limit <= 1000:
        parser.error(
            "expected --devices and --cohorts >= 1, --requests >= 2 and --limit in 1..1000, got "
            f"{args.devices}, {args.cohorts}, {args.requests} and {args.limit}"
        )
    results = run(args)
    goals = targets(results)
    print(json.dumps({"machine": _machine(), "versions": _versions(), "results": results, "targets": goals}))
    return 1 if any(t["met"] is False for t in goals.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
