"""The command line as a user runs it: `hub sandbox serve` in one process, `hub sandbox env` in another."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

HUB = [str(Path(sys.executable).parent / "hub")]  # the installed console script


def run_hub(*args: str, env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", 120)
    return subprocess.run([*HUB, *args], env=env, capture_output=True, text=True, **kwargs)


def test_serve_then_env_points_the_hub_at_the_sandbox(tmp_path: Path):
    env = {**os.environ, "HUB_HOME": str(tmp_path / "home")}
    env.pop("HUB_CONFIG", None)
    faults = tmp_path / "faults.toml"
    faults.write_text("seed = 3\n[civil]\nhttp_503 = 0.0\n")
    server = subprocess.Popen([*HUB, "sandbox", "serve", "--residents", "1000", "--port", "0", "--faults", str(faults),
                               "--onestop-sqlite-only", "--onestop-dossiers", "300"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        runtime = tmp_path / "home" / "sandbox" / "runtime.json"
        deadline = time.monotonic() + 60
        while not runtime.exists():
            assert server.poll() is None, server.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        printed = run_hub("sandbox", "env", env=env)
        assert printed.returncode == 0, printed.stderr
        lines = dict(line.removeprefix("export ").split("=", 1) for line in printed.stdout.splitlines())
        expected = {"HUB_PROVINCE", "HUB_AGENCY_CODE", "HUB_OFFICER_ID", "HUB_POPULATION_URL", "HUB_POPULATION_USER",
                    "HUB_POPULATION_PASSWORD", "HUB_CIVIL_URL", "HUB_CIVIL_CLIENT_ID", "HUB_CIVIL_CLIENT_SECRET", "HUB_CIVIL_SINCE",
                    "HUB_BUSINESS_URL", "HUB_BUSINESS_CLIENT_ID", "HUB_BUSINESS_CLIENT_SECRET", "HUB_BUSINESS_VARIANT", "HUB_BUSINESS_SINCE",
                    "HUB_VDXP_URL", "HUB_VDXP_SYSTEM_ID", "HUB_VDXP_SECRET", "HUB_POPULATION_RATE_LIMIT",
                    "HUB_CIVIL_RATE_LIMIT", "HUB_BUSINESS_RATE_LIMIT", "HUB_VDXP_RATE_LIMIT",
                    "HUB_DVCQG_URL", "HUB_DVCQG_USER", "HUB_DVCQG_PASSWORD", "HUB_DVCQG_DSTCODE", "HUB_DVCQG_RATE_LIMIT",
                    "HUB_ONESTOP_URLS"}
        assert set(lines) == expected
        evaluated = subprocess.run(["bash", "-c", f'eval "$({HUB[0]} sandbox env 2>/dev/null)"; '
                                   'echo "$HUB_CIVIL_URL"'], env=env, capture_output=True, text=True, timeout=60)
        assert evaluated.stdout.strip() == lines["HUB_CIVIL_URL"]
        token = requests.post(f"{lines['HUB_CIVIL_URL']}/token", data={"grant_type": "client_credentials"},
                              auth=(lines["HUB_CIVIL_CLIENT_ID"], lines["HUB_CIVIL_CLIENT_SECRET"]), timeout=10)
        assert token.status_code == 200 and token.json()["token_type"] == "Bearer"
        shown = run_hub("config", env={**env, **lines})
        assert lines["HUB_CIVIL_CLIENT_SECRET"] not in shown.stdout and "HUB_CIVIL_CLIENT_SECRET=(set)" in shown.stdout
        assert (tmp_path / "home" / "sandbox" / "truth" / "anomalies.parquet").exists()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert not runtime.exists()
    gone = run_hub("sandbox", "env", env=env)
    assert gone.returncode == 1 and "no sandbox is running" in gone.stderr


def test_bad_options_get_clear_errors(tmp_path: Path):
    env = {**os.environ, "HUB_HOME": str(tmp_path)}
    bad = tmp_path / "bad.toml"
    bad.write_text("[population]\nhttp_503 = 2\n")
    result = run_hub("sandbox", "serve", "--faults", str(bad), "--port", "0", env=env)
    assert result.returncode == 2 and "http_503 must be a rate between 0 and 1" in result.stderr
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[population]\nexplode = 0.1\n")
    result = run_hub("sandbox", "serve", "--faults", str(unknown), "--port", "0", env=env)
    assert result.returncode == 2 and "unknown fault 'explode'" in result.stderr
    result = run_hub("config", env={**env, "HUB_BUSINESS_VARIANT": "C"})
    assert result.returncode == 2 and "HUB_BUSINESS_VARIANT must be A or B" in result.stderr


def test_demo_syncs_everything_through_dagster(tmp_path: Path):
    env = {**os.environ, "HUB_HOME": str(tmp_path), "HUB_VDXP_VISIBILITY_TIMEOUT": "5"}
    result = run_hub("demo", "--once", "--residents", "1000", "--port", "0", "--rate-limit", "2000", env=env,
                     timeout=600)  # four Dagster jobs: minutes on a loaded 2-core machine
    assert result.returncode == 0, result.stdout + result.stderr
    for asset in ("landing/population", "landing/civil", "landing/business", "landing/vdxp", "canonical/citizens",
                  "canonical/civil_events", "canonical/enterprises", "canonical/documents", "published/snapshot"):
        assert any(line.strip().startswith(asset) for line in result.stdout.splitlines()), asset
    assert "check FAILED" not in result.stdout
    assert (tmp_path / "lake" / "published" / "current.duckdb").exists()
    runs = list((tmp_path / "dagster" / "storage").iterdir())
    assert runs, "the sync run is recorded in the hub's Dagster instance"
