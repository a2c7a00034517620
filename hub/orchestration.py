"""The hub's side of Dagster: its instance home, a full sync run, and the UI process.

Users never set ``DAGSTER_HOME``: the hub uses ``$HUB_HOME/dagster`` and keeps the project's
``dagster.yaml`` there (SQLite storage by default; a deployment may replace that file with one that
points at PostgreSQL, and the hub leaves an edited file alone).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
DAGSTER_YAML = PROJECT / "dagster.yaml"
WORKSPACE = PROJECT / "workspace.yaml"


def dagster_home(hub_home: Path) -> Path:
    """``$HUB_HOME/dagster`` with the instance config in place; sets ``DAGSTER_HOME`` for this process."""
    home = (hub_home / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(DAGSTER_YAML, config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def run_full_sync(hub_home: Path):
    """Run the ``sync_all`` job on the hub's instance (so it shows in the UI's run history)."""
    import dagster as dg

    from pipelines.definitions import defs

    dagster_home(hub_home)
    with dg.DagsterInstance.get() as instance:
        return defs.resolve_job_def("sync_all").execute_in_process(instance=instance, raise_on_error=False)


def start_ui(hub_home: Path, port: int, environ: dict[str, str] | None = None) -> subprocess.Popen:
    """``dagster dev`` (webserver and daemon) on the hub's code location and instance."""
    home = dagster_home(hub_home)
    env = {**os.environ, **(environ or {}), "DAGSTER_HOME": str(home)}
    command = [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(WORKSPACE), "-h", "127.0.0.1",
               "-p", str(port)]
    return subprocess.Popen(command, cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
