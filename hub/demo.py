"""The main job: the sandbox national systems, a full sync through Dagster, and the Dagster UI.

It starts the sandbox on loopback, writes its variables for ``hub sandbox env``, runs the
``sync_all`` job on the hub's Dagster instance (every source landed, canonical tables rebuilt and
checked, the serving snapshot published), then the ``reconcile`` job (links, golden records,
conflicts) and the ``dossiers`` job (the one-stop-shop dossiers reported to the sandbox's national
portal, applicants cross-checked, service measures), then starts the lookup API and the Dagster UI on the same instance, with the schedules
and the document-axis sensor running against the sandbox, and keeps everything up until interrupted.
"""

import os
import shutil
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

from hub.access_policy import clients_path, parse_grants, register_client
from hub.orchestration import run_full_sync, run_job, start_ui, stop_process_group, ui_log
from sandbox.app import Sandbox, SandboxConfig, write_runtime_file
from sandbox.onestop import OneStopConfig
from sandbox.server import running

DEMO_CLIENT = "demo-agency"


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


def wait_until_serving(url: str, process, timeout_s: float = 120) -> bool:
    """True once ``url`` answers; False if ``process`` exits first or the time runs out."""
    stop = threading.Event()
    for _ in range(int(timeout_s * 2)):
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            stop.wait(0.5)
    return False


def start_api(home: Path, port: int) -> subprocess.Popen:
    """``hub api serve`` on loopback in its own process group, logging to ``$HUB_HOME/api.log``."""
    with open(api_log(home), "ab") as log:
        return subprocess.Popen([str(Path(sys.executable).parent / "hub"), "api", "serve", "--port", str(port)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


def api_log(home: Path) -> Path:
    return home / "api.log"


def echo_api(home: Path, port: int, echo: Callable[[str], None]) -> None:
    """Register (or renew) the demo's client and show a lookup of a real resident with it."""
    import duckdb

    key = register_client(clients_path(os.environ, home), DEMO_CLIENT, "000.00.31.H31",
                          parse_grants(["citizens=*", "civil_events=*", "enterprises=*", "documents=*"]),
                          ["*"], rate=50, name="demo agency", replace=True)
    with duckdb.connect(str(home / "lake" / "published" / "current.duckdb"), read_only=True) as con:
        pid, family, middle, given, birth = con.execute(
            "SELECT personal_id, family_name, middle_name, given_name, "
            "coalesce(CAST(birth_date AS VARCHAR), CAST(birth_year AS VARCHAR)) "
            "FROM citizens ORDER BY personal_id LIMIT 1").fetchone()
    name = " ".join(p for p in (family, middle, given) if p)
    query = urllib.parse.urlencode({"purpose": "1.001234", "name": name, "birth_date": birth})
    echo(f"lookup API at http://127.0.0.1:{port}  (OpenAPI: /openapi.json, docs: /docs; every access is in "
         f"{home / 'audit'}, check it with hub audit verify). Client {DEMO_CLIENT}, key shown once:")
    echo(f"  curl -H 'Authorization: Bearer {key}' 'http://127.0.0.1:{port}/v1/citizens/{pid}?{query}'")


def run_demo(home: Path, residents: int, seed: int, port: int, ui_port: int, api_port: int, rate_limit: float,
             once: bool, echo: Callable[[str], None]) -> bool:
    echo(f"generating a province of {residents:,} residents (seed {seed}) ...")
    # The one-stop-shop system of the embedded default: one SQLite file, changing while the demo runs.
    onestop = OneStopConfig(sqlite_only=True, directory=home / "sandbox" / "onestop")
    sandbox = Sandbox(SandboxConfig(residents=residents, seed=seed, rate_limit=rate_limit, onestop=onestop))
    sandbox.onestop.open()
    sandbox.onestop.start()  # its dossiers keep changing from now on, as a live system's do
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
            for state in ("lake", "docaxis", "portal"):  # each demo province and portal is new: sync it afresh
                shutil.rmtree(home / state, ignore_errors=True)
            echo(f"full sync through Dagster ({rate_limit:g} requests/s to each system):")
            ok = report(run_full_sync(home), echo)
            if ok:
                echo("reconciliation through Dagster (links, golden records, conflicts):")
                ok = report(run_job(home, "reconcile"), echo)
            if ok:
                echo("one-stop-shop dossiers through Dagster (portal report, applicant flags, service measures):")
                ok = report(run_job(home, "dossiers"), echo)
            echo(f"lake: {home / 'lake'}  (published snapshot: {home / 'lake' / 'published' / 'current.duckdb'})")
            if once:
                return ok
            api = start_api(home, api_port)
            ui = start_ui(home, ui_port, env)
            try:
                for name, process, url, log in (("lookup API", api, f"http://127.0.0.1:{api_port}/healthz", api_log(home)),
                                                ("Dagster UI", ui, f"http://127.0.0.1:{ui_port}/server_info", ui_log(home))):
                    if not wait_until_serving(url, process):
                        tail = log.read_text(errors="replace")[-2000:]
                        echo(f"the {name} did not start ({'it exited' if process.poll() is not None else 'timeout'}); "
                             f"the end of {log}:\n{tail}")
                        return False
                echo_api(home, api_port, echo)
                echo(f"Dagster UI at http://127.0.0.1:{ui_port}  (assets, checks, runs; the hourly schedules and the "
                     "document-axis sensor are on). Press Ctrl-C to stop.")
                ui.wait()
            finally:
                stop_process_group(ui)
                stop_process_group(api)
            return ok
        except KeyboardInterrupt:
            return True
        finally:
            sandbox.onestop.close()
            runtime_file.unlink(missing_ok=True)
