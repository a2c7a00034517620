"""The main job: the sandbox national systems, a full sync through Dagster, and the Dagster UI.

It starts the sandbox on loopback, writes its variables for ``hub sandbox env``, runs the
``sync_all`` job on the hub's Dagster instance (every source landed, canonical tables rebuilt and
checked, the serving snapshot published), then starts the Dagster UI on the same instance, with the
schedule and the document-axis sensor running against the sandbox, and keeps everything up until
interrupted. Reconciliation and the lookup API join this job as they are built.
"""

import os
import shutil
import threading
import urllib.request
from pathlib import Path
from typing import Callable

from hub.orchestration import run_full_sync, start_ui, stop_ui, ui_log
from sandbox.app import Sandbox, SandboxConfig, write_runtime_file
from sandbox.server import running


def report(results: list, echo: Callable[[str], None]) -> bool:
    """Print each asset's outcome of a sync's runs, and each failed check; True if all went well."""
    ok = True
    for result in results:
        shown_keys: set[str] = set()
        for event in result.get_asset_materialization_events():
            materialization = event.event_specific_data.materialization
            key = materialization.asset_key.to_user_string()
            if key in shown_keys:  # a range run records each day with the run's figures: show them once
                continue
            shown_keys.add(key)
            rows = materialization.metadata.get("rows")
            shown = f"{rows.value:,} rows" if rows is not None else "done"
            echo(f"  {key:<24} {shown}" + (f" over {materialization.metadata['days'].value:,} days"
                                           if "days" in materialization.metadata else ""))
        failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
        for evaluation in failed:
            key = evaluation.asset_check_key
            echo(f"  check FAILED: {key.asset_key.to_user_string()} {key.name}")
        for event in result.all_events:
            if event.is_step_failure:
                echo(f"  step FAILED: {event.step_key}: {event.event_specific_data.error.message.strip()}")
        ok = ok and result.success and not failed
    return ok


def wait_for_ui(url: str, ui, timeout_s: float = 120) -> bool:
    stop = threading.Event()
    for _ in range(int(timeout_s * 2)):
        if ui.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                return True
        except OSError:
            stop.wait(0.5)
    return False


def run_demo(home: Path, residents: int, seed: int, port: int, ui_port: int, rate_limit: float, once: bool,
             echo: Callable[[str], None]) -> bool:
    echo(f"generating a province of {residents:,} residents (seed {seed}) ...")
    sandbox = Sandbox(SandboxConfig(residents=residents, seed=seed, rate_limit=rate_limit))
    sandbox.truth.write(home / "sandbox" / "truth")
    runtime_file = home / "sandbox" / "runtime.json"
    with running(sandbox.app(), port=port) as base_url:
        env = sandbox.environment(base_url)
        write_runtime_file(runtime_file, env, os.getpid())
        os.environ.update(env)
        os.environ["HUB_HOME"] = str(home)
        try:
            echo(f"sandbox national systems at {base_url}  (variables: eval \"$(hub sandbox env)\")")
            echo(f"ground truth written to {home / 'sandbox' / 'truth'}")
            shutil.rmtree(home / "lake", ignore_errors=True)  # each demo province is new: sync it afresh
            echo(f"full sync through Dagster ({rate_limit:g} requests/s to each system):")
            ok = report(run_full_sync(home), echo)
            echo(f"lake: {home / 'lake'}  (published snapshot: {home / 'lake' / 'published' / 'current.duckdb'})")
            if once:
                return ok
            ui = start_ui(home, ui_port, env)
            url = f"http://127.0.0.1:{ui_port}"
            if not wait_for_ui(url, ui):
                tail = ui_log(home).read_text(errors="replace")[-2000:]
                echo(f"the Dagster UI did not start ({'it exited' if ui.poll() is not None else 'timeout'}); "
                     f"the end of {ui_log(home)}:\n{tail}")
                stop_ui(ui)
                return False
            echo(f"Dagster UI at {url}  (assets, checks, runs; the hourly schedule and the document-axis "
                 "sensor are on). Press Ctrl-C to stop.")
            try:
                ui.wait()
            finally:
                stop_ui(ui)
            return ok
        except KeyboardInterrupt:
            return True
        finally:
            runtime_file.unlink(missing_ok=True)
