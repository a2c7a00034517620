"""The hub's side of Dagster: its instance home, a full sync run, and the UI process.

Users never set ``DAGSTER_HOME``: the hub uses ``$HUB_HOME/dagster`` and keeps the project's
``dagster.yaml`` there (SQLite storage by default; a deployment may replace that file with one that
points at PostgreSQL, and the hub leaves an edited file alone).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
DAGSTER_YAML = PROJECT / "dagster.yaml"
WORKSPACE = PROJECT / "workspace.yaml"
PLANNED_AS_SUBSET = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
PROCESS_TAG = "hub/process"  # host:pid:start-time of the process running an in-process run


def dagster_home(hub_home: Path) -> Path:
    """``$HUB_HOME/dagster`` with the instance config in place (the hub's ``DAGSTER_HOME``)."""
    home = (hub_home / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(DAGSTER_YAML, config)
    # A backfill of N days otherwise writes N "planned" events per asset before it starts, one SQLite
    # transaction each (most of a full sync's overhead); with this, one event names the whole range.
    # The trade-off, per Dagster: days of a failed range run show as missing rather than failed.
    os.environ.setdefault(PLANNED_AS_SUBSET, "true")
    return home


def run_full_sync(hub_home: Path, first_day: str | None = None) -> list:
    """A full sync on the hub's instance (so it shows in the UI's run history): one ``land_days`` run over
    every day from ``first_day`` (default: where the configured history starts) to today, then one
    ``sync_all`` run. Runs of an earlier ``hub sync`` that was killed are closed first."""
    import dagster as dg

    from pipelines.automation import day_range_tags
    from pipelines.definitions import defs
    from pipelines.partitions import days, first_day as history_start

    home = dagster_home(hub_home)
    keys = days.get_partition_keys()
    first = max(first_day or history_start().isoformat(), keys[0])
    tags = {PROCESS_TAG: this_process()}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        close_abandoned_runs(instance)
        landed = defs.resolve_job_def("land_days").execute_in_process(
            instance=instance, raise_on_error=False, tags={**tags, **day_range_tags(first, keys[-1])})
        if not landed.success:
            return [landed]
        synced = defs.resolve_job_def("sync_all").execute_in_process(instance=instance, raise_on_error=False, tags=tags)
        return [landed, synced]


def run_job(hub_home: Path, job: str) -> list:
    """One run of ``job`` on the hub's instance, as its hourly schedule launches it: ``reconcile`` (links,
    review queue, golden records, conflicts) or ``dossiers`` (the portal report, applicant flags,
    service measures), each from the canonical tables as they are, with its checks."""
    import dagster as dg

    from pipelines.definitions import defs

    home = dagster_home(hub_home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        close_abandoned_runs(instance)
        result = defs.resolve_job_def(job).execute_in_process(
            instance=instance, raise_on_error=False, tags={PROCESS_TAG: this_process()})
        return [result]


def this_process(pid: int | None = None) -> str | None:
    """``host:pid:start-time`` of a live process (None if there is none): a pid alone may be reused."""
    pid = pid or os.getpid()
    try:
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{socket.gethostname()}:{pid}:{start}"


def close_abandoned_runs(instance) -> list[str]:
    """Mark failed the in-process runs of this host whose process is gone (a ``hub sync`` killed part-way),
    and free the pool slots they held: otherwise their steps would hold ``api_civil`` and the others for
    ever, and the next sync would wait on them. Returns the run ids closed."""
    import dagster as dg

    closed = []
    unfinished = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING])
    for run in instance.get_runs(filters=unfinished):
        owner = run.tags.get(PROCESS_TAG)
        if not owner or not owner.startswith(f"{socket.gethostname()}:"):
            continue
        if this_process(int(owner.split(":")[1])) == owner:
            continue  # still running
        instance.report_run_failed(run, message=f"the process that ran it ({owner}) ended without finishing it")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        closed.append(run.run_id)
    return closed


def start_ui(hub_home: Path, port: int, environ: dict[str, str] | None = None) -> subprocess.Popen:
    """``dagster dev`` (webserver and daemon) on the hub's code location and instance, in its own
    process group, logging to ``$HUB_HOME/dagster/dagster-dev.log`` (a pipe nobody reads would fill
    and stall it). SIGINT is reset to its default in the child: ``dagster dev`` stops on SIGTERM by
    raising what SIGINT raises, which an inherited "ignore SIGINT" (``nohup``, ``cmd &``) would defeat."""
    home = dagster_home(hub_home)
    env = {**os.environ, **(environ or {}), "DAGSTER_HOME": str(home)}
    command = [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(WORKSPACE), "-h", "127.0.0.1",
               "-p", str(port)]
    with open(ui_log(hub_home), "ab") as log:
        return subprocess.Popen(command, cwd=PROJECT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def ui_log(hub_home: Path) -> Path:
    return (hub_home / "dagster").resolve() / "dagster-dev.log"


def stop_process_group(process: subprocess.Popen, grace_s: float = 60) -> None:
    """SIGTERM to a process group (for the UI: webserver, daemon, code server, run workers), SIGKILL to
    whatever is left after ``grace_s``; returns once the group is empty."""
    pause = threading.Event()
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
        deadline = time.monotonic() + wait_s
        _signal_group(process.pid, sig)
        while _signal_group(process.pid, 0) and time.monotonic() < deadline:
            process.poll()  # reap dagster dev itself, or it stays in the group as a zombie
            pause.wait(0.2)
    process.wait(timeout=10)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False once no process is left in it (signal 0 only asks)."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True
