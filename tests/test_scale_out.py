"""Beyond one machine: the hub's code location with its Dagster instance in PostgreSQL, and with its
steps executed by a Celery worker on RabbitMQ that the test starts itself.

Each test gets a database of its own (created here, dropped after), a sandbox of a small province and
its own lake; the Celery test also gets its own queue, so tests (or other runs on the same broker)
never take each other's steps. Runs go through ``dagster job execute`` in a process of their own, as
a deployment's run worker would. Nothing sleeps: every wait blocks on the event itself (a process's
exit, a worker's reply) under a deadline.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from celery import Celery
from celery.utils.nodenames import host_format
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage
from kombu import Connection
from psycopg2 import sql

from pipelines.scale_out import DEFAULT_BROKER, celery_settings, executor_from_env

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
BROKER = DEFAULT_BROKER  # RabbitMQ on 127.0.0.1:5672, guest/guest
ASSETS = {"landing/population", "canonical/citizens"}
CHECKS = {"schema_matches", "keys_unique", "identifiers_valid", "quarantine_rate", "copy_is_legally_valid"}
SCALE_OUT_VARS = ("HUB_EXECUTOR", "HUB_CELERY_BROKER", "HUB_CELERY_BACKEND", "HUB_CELERY_QUEUE")
RUN_SECONDS = 240


# --- Processes ----------------------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """This process's environment (the fixtures' settings included) for a hub process: the project
    importable and the virtualenv's commands first on PATH (``dagster-celery`` starts ``celery`` by name)."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT)}


def start(command: list[str], log: Path) -> subprocess.Popen:
    """``command`` from the project's root in a session (so a process group) of its own, output to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def tail(log: Path, chars: int = 4_000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no output)"


def live_group_members(pgid: int) -> set[int]:
    """Processes of group ``pgid`` that are still running (zombies excluded: they hold nothing)."""
    members = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.add(int(stat.parent.name))
    return members


def exited(pids: Iterable[int], deadline: float) -> bool:
    """Block until each of ``pids`` has exited (a pidfd turns readable then), or until ``deadline``."""
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                return False
        finally:
            os.close(fd)
    return True


def stop_group(process: subprocess.Popen, seconds: float = 30) -> None:
    """End the process group ``process`` leads: SIGTERM (Celery's warm shutdown), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + seconds
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        while (members := live_group_members(process.pid)) and exited(members, deadline):
            pass  # members may have forked while stopping; look again
        if not members:
            break
    process.wait(timeout=seconds)


def poll(condition: Callable[[], object], seconds: float, what: str) -> object:
    """Ask ``condition`` (which itself blocks a while for an answer) until it gives one, for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answer := condition():
            return answer
    raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")


# --- PostgreSQL ---------------------------------------------------------------------------------------


@contextmanager
def admin_cursor(dbname: str = "postgres") -> Iterator[psycopg2.extensions.cursor]:
    """An autocommit cursor on the local server (CREATE/DROP DATABASE cannot run in a transaction)."""
    con = psycopg2.connect(dbname=dbname, **PG)
    con.autocommit = True
    try:
        with con.cursor() as cur:
            yield cur
    finally:
        con.close()


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty database for one test, dropped afterwards even if connections were left open."""
    name = f"hub_test_{secrets.token_hex(6)}"
    with admin_cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with admin_cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass(frozen=True)
class PgInstance:
    home: Path
    database: str


@pytest.fixture
def pg_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PgInstance]:
    """``DAGSTER_HOME`` holding the shipped ``deploy/dagster-postgres.yaml``, its variables pointing at a
    fresh database: the test exercises the very file a deployment copies."""
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copyfile(ROOT / "deploy" / "dagster-postgres.yaml", home / "dagster.yaml")
    with fresh_database() as database:
        settings = {"DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": PG["host"], "DAGSTER_PG_PORT": str(PG["port"]),
                    "DAGSTER_PG_USER": PG["user"], "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": database}
        for key, value in settings.items():
            monkeypatch.setenv(key, value)
        yield PgInstance(home, database)


# --- The hub ------------------------------------------------------------------------------------------


@pytest.fixture
def hub_env(sandbox_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A small province served by a sandbox, the hub's settings pointing at it, its lake under tmp."""
    for key in SCALE_OUT_VARS:
        monkeypatch.delenv(key, raising=False)
    with sandbox_factory(residents=1_000, seed=11, rate_limit=10_000) as sb:
        for key, value in {**sb.env, "HUB_HOME": str(tmp_path / "hub")}.items():
            monkeypatch.setenv(key, value)
        yield sb


def run_sync_population(log: Path) -> tuple[int, str]:
    """Run ``sync_population`` of the code location with ``dagster job execute``; returns the id of the
    process that orchestrated it and the run's id. A process of its own, as a run worker is, also means
    no job definition loaded by one test (under its settings) is reused by the next."""
    process = start([str(BIN / "dagster"), "job", "execute", "-m", "pipelines.definitions", "-a", "defs",
                     "-j", "sync_population"], log)
    try:
        returncode = process.wait(timeout=RUN_SECONDS)
    finally:
        stop_group(process)
    assert returncode == 0, tail(log)
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
    assert len(runs) == 1, tail(log)  # the test's database is its own
    return process.pid, runs[0].run_id


def step_pids(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    """Each step of the run and the process it started in."""
    return {e.step_key: e.dagster_event.pid for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)}


def materialized(instance: dg.DagsterInstance, run_id: str) -> dict[str, dg.AssetMaterialization]:
    entries = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    return {e.asset_materialization.asset_key.to_user_string(): e.asset_materialization for e in entries}


def assert_run_stored(instance: dg.DagsterInstance, run_id: str, residents: int) -> None:
    """The run succeeded, both assets are materialised with every row, and every check of canonical
    citizens has a stored, successful execution from this run."""
    run = instance.get_run_by_id(run_id)
    assert run.status == dg.DagsterRunStatus.SUCCESS and run.job_name == "sync_population"
    landed = materialized(instance, run_id)
    assert set(landed) == ASSETS
    assert landed["landing/population"].metadata["rows"].value == residents
    assert landed["canonical/citizens"].metadata["rows"].value == residents
    keys = [dg.AssetCheckKey(dg.AssetKey(["canonical", "citizens"]), name) for name in CHECKS]
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    assert {key.name for key in latest} == CHECKS
    for key, record in latest.items():
        assert (record.run_id, record.status.value) == (run_id, "SUCCEEDED"), key


def test_runs_materialisations_and_checks_are_stored_in_postgres(pg_instance: PgInstance, hub_env, tmp_path: Path):
    orchestrator, run_id = run_sync_population(tmp_path / "run.log")

    # A fresh instance in this process, from the same config, reads everything back from PostgreSQL,
    # written there by several processes: the default executor ran each step in a process of its own.
    with dg.DagsterInstance.get() as fresh:
        assert isinstance(fresh.run_storage, PostgresRunStorage)
        assert isinstance(fresh.event_log_storage, PostgresEventLogStorage)
        assert_run_stored(fresh, run_id, hub_env.sandbox.residents.n)
        pids = step_pids(fresh, run_id)
    assert orchestrator not in pids.values() and len(set(pids.values())) > 1

    # It is in the tables themselves, and no SQLite file appeared under DAGSTER_HOME.
    with admin_cursor(pg_instance.database) as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", [run_id])
        assert cur.fetchall() == [("SUCCESS",)]
        cur.execute("SELECT DISTINCT asset_key FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
                    [run_id, "ASSET_MATERIALIZATION"])
        assert {dg.AssetKey.from_db_string(row[0]).to_user_string() for row in cur.fetchall()} == ASSETS
        cur.execute("SELECT check_name, execution_status FROM asset_check_executions WHERE run_id = %s", [run_id])
        assert dict(cur.fetchall()) == dict.fromkeys(CHECKS, "SUCCEEDED")
    assert not list(pg_instance.home.rglob("*.db"))


# --- Celery -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Worker:
    process: subprocess.Popen
    nodename: str
    log: Path


def answers(app: Celery, worker: Worker) -> bool:
    """Whether the worker replies to a ping (the broadcast waits up to a second for its reply)."""
    if worker.process.poll() is not None:
        raise AssertionError(f"the celery worker exited with {worker.process.returncode}:\n{tail(worker.log)}")
    return bool(app.control.ping(destination=[worker.nodename], timeout=1.0))


def delete_queue(queue: str) -> None:
    """The queue is durable on the broker; it served this test only."""
    with Connection(BROKER) as connection:
        connection.default_channel.queue_delete(queue)


@pytest.fixture
def celery_worker(pg_instance: PgInstance, hub_env, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    """A ``dagster-celery`` worker on a queue of this test's own, with the test's instance, hub settings and
    lake, started from the project's root as a deployment would (``deploy/dagster-celery.yaml``); the
    code location is switched to Celery by the environment alone."""
    queue = f"hub-test-{secrets.token_hex(4)}"
    for key, value in {"HUB_EXECUTOR": "celery", "HUB_CELERY_BROKER": BROKER, "HUB_CELERY_BACKEND": "rpc://",
                       "HUB_CELERY_QUEUE": queue}.items():
        monkeypatch.setenv(key, value)
    log = tmp_path / "celery-worker.log"
    process = start([str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                     "-y", str(ROOT / "deploy" / "dagster-celery.yaml"), "-q", queue, "-n", queue, "-l", "INFO",
                     "--", "--concurrency=2", "--without-mingle", "--without-gossip"], log)
    worker = Worker(process, host_format(f"{queue}@%h"), log)
    app = Celery(broker=BROKER)
    try:
        poll(lambda: answers(app, worker), 120, f"celery worker {worker.nodename} to answer a ping")
        yield worker
    finally:
        app.close()
        stop_group(process)
        delete_queue(queue)


def test_the_job_runs_its_steps_in_a_celery_worker(celery_worker: Worker, hub_env, tmp_path: Path):
    orchestrator, run_id = run_sync_population(tmp_path / "run.log")
    with dg.DagsterInstance.get() as instance:
        assert_run_stored(instance, run_id, hub_env.sandbox.residents.n)
        pids = step_pids(instance, run_id)
        delegated = {e.step_key: e.dagster_event.engine_event_data.metadata["Celery worker"].value
                     for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
                     if "in celery worker" in e.message}
    assert {"landing__population", "canonical__citizens"} <= set(pids)
    # Every step ran in a process of the worker's group, none in the run's orchestrating process ...
    worker_pids = live_group_members(celery_worker.process.pid)
    assert not {orchestrator, os.getpid()} & set(pids.values())
    assert set(pids.values()) <= worker_pids, (pids, worker_pids, tail(celery_worker.log))
    # ... and dagster-celery reports the worker that executed each one: ours.
    assert delegated == dict.fromkeys(pids, celery_worker.nodename)


# --- Choosing the executor ----------------------------------------------------------------------------


def test_the_executor_is_multiprocess_unless_celery_is_asked_for():
    assert executor_from_env({}) is dg.multi_or_in_process_executor
    assert executor_from_env({"HUB_EXECUTOR": "multiprocess"}) is dg.multi_or_in_process_executor
    assert executor_from_env({"HUB_EXECUTOR": " Celery "}).name == "celery"
    with pytest.raises(ValueError, match="HUB_EXECUTOR='k8s'"):
        executor_from_env({"HUB_EXECUTOR": "k8s"})


def test_celery_settings_come_from_the_environment_with_local_defaults():
    assert celery_settings({}) == {"broker": "pyamqp://guest:guest@127.0.0.1:5672//", "backend": "rpc://",
                                   "config_source": {"task_default_queue": "dagster"}}
    chosen = {"HUB_CELERY_BROKER": "pyamqp://hub:secret@broker-host:5672/hub",
              "HUB_CELERY_BACKEND": "rpc://", "HUB_CELERY_QUEUE": "hub"}
    assert celery_settings(chosen) == {"broker": "pyamqp://hub:secret@broker-host:5672/hub", "backend": "rpc://",
                                       "config_source": {"task_default_queue": "hub"}}
