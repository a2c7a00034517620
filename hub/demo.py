"""The main job, as far as the hub has been built: the sandbox national systems, and a full pull of each.

It starts the sandbox on loopback, writes its variables for ``hub sandbox env``, checks every
national system through its connector and extracts each one completely into canonical Parquet
under ``$HUB_HOME/extract/<system>`` (exactly as ``hub extract`` does), then keeps serving until
interrupted. Later stages of the hub (the Dagster sync, reconciliation, the lookup API and the Dagster
UI) join this job as they are built.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

from connectors.errors import ConnectorError
from connectors.extract import run_extract
from connectors.registry import CONNECTORS, build_connector
from hub.config import Settings
from sandbox.app import Sandbox, SandboxConfig, write_runtime_file
from sandbox.server import running


def pull_everything(env: dict[str, str], out: Path, echo: Callable[[str], None]) -> bool:
    """Check and extract every system with the sandbox's variables; True when all succeeded."""
    environ = {**os.environ, **env}
    settings = Settings.from_env(environ)
    ok = True
    for system in CONNECTORS:
        connector = build_connector(system, settings, environ)
        check = connector.check()
        if not check.ok:
            echo(f"  {system:<11} check FAILED: {check.message}")
            ok = False
            continue
        started = time.monotonic()
        try:
            result = run_extract(connector, out / system)
        except ConnectorError as exc:
            echo(f"  {system:<11} extract FAILED: {exc}")
            ok = False
            continue
        echo(f"  {system:<11} {result.rows:>8,} rows in {result.dataset_path} ({result.quarantined:,} quarantined, "
             f"{time.monotonic() - started:.1f} s)")
    return ok


def run_demo(home: Path, residents: int, seed: int, port: int, rate_limit: float, once: bool,
             echo: Callable[[str], None]) -> bool:
    echo(f"generating a province of {residents:,} residents (seed {seed}) ...")
    sandbox = Sandbox(SandboxConfig(residents=residents, seed=seed, rate_limit=rate_limit))
    sandbox.truth.write(home / "sandbox" / "truth")
    runtime_file = home / "sandbox" / "runtime.json"
    with running(sandbox.app(), port=port) as base_url:
        env = sandbox.environment(base_url)
        write_runtime_file(runtime_file, env, os.getpid())
        try:
            echo(f"sandbox national systems at {base_url}  (variables: eval \"$(hub sandbox env)\")")
            echo(f"ground truth written to {home / 'sandbox' / 'truth'}")
            echo(f"pulling every national system through its connector, {rate_limit:g} requests/s each:")
            shutil.rmtree(home / "extract", ignore_errors=True)  # each demo province is new: pull it afresh
            ok = pull_everything(env, home / "extract", echo)
            if not once:
                echo("serving; press Ctrl-C to stop")
                threading.Event().wait()
            return ok
        except KeyboardInterrupt:
            return True
        finally:
            runtime_file.unlink(missing_ok=True)
