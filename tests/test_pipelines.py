"""The Dagster code location: it loads, and a full materialisation against a sandbox lands, builds,
checks and publishes; an expired population copy fails its check and blocks publishing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipelines.definitions import defs
from schemas.timefmt import COMPACT, VN_TZ

pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parent.parent


def test_definitions_validate_from_the_workspace(tmp_path: Path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    result = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w",
                             "workspace.yaml"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


def test_every_asset_is_described_owned_and_kinded():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description and node.owners and node.kinds, key
    assert {s.name for s in defs.schedules} == {"hourly_sync"}
    assert {s.name for s in defs.sensors} == {"document_axis_inbox"}


@pytest.fixture
def lake_env(sandbox_factory, tmp_path: Path, monkeypatch):
    with sandbox_factory(residents=1_500, seed=4, rate_limit=10_000, visibility_timeout_s=2) as sb:
        for key, value in {**sb.env, "HUB_HOME": str(tmp_path), "HUB_VDXP_VISIBILITY_TIMEOUT": "2"}.items():
            monkeypatch.setenv(key, value)
        yield sb, tmp_path / "lake"


def materialize_all() -> dg.ExecuteInProcessResult:
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def test_full_sync_lands_builds_checks_and_publishes(lake_env):
    sb, lake = lake_env
    result = materialize_all()
    assert result.success
    checks = {(e.asset_check_key.asset_key.to_user_string(), e.asset_check_key.name): e.passed
              for e in result.get_asset_check_evaluations()}
    assert checks and all(checks.values()), {k: v for k, v in checks.items() if not v}
    assert ("canonical/citizens", "copy_is_legally_valid") in checks
    landing = {m.asset_key.to_user_string(): m.metadata for m in result.get_asset_materialization_events()
               and [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]}
    assert landing["landing/population"]["rows"].value == sb.sandbox.residents.n
    assert "cursor" in landing["landing/civil"]
    with duckdb.connect(str(lake / "published" / "current.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM citizens").fetchone()[0] == sb.sandbox.residents.n
        assert con.execute("SELECT count(DISTINCT enterprise_code) FROM enterprises").fetchone()[0] == \
            len(sb.sandbox.business.registry.codes)
        assert con.execute("SELECT count(*) FROM documents").fetchone()[0] > 0
    # A second run lands nothing new and republishes the same tables.
    again = materialize_all()
    assert again.success
    rows = {e.event_specific_data.materialization.asset_key.to_user_string():
            e.event_specific_data.materialization.metadata.get("rows") for e in again.get_asset_materialization_events()}
    assert rows["landing/population"].value == 0


def test_an_expired_copy_fails_its_check_and_blocks_publishing(lake_env):
    sb, lake = lake_env
    assert materialize_all().success
    state_path = lake / "landing" / "population" / "state.json"
    state = json.loads(state_path.read_text())
    stale = (datetime.now(VN_TZ) - timedelta(hours=25)).strftime(COMPACT)
    state["cursor"]["since"] = stale  # as if the last complete pass were 25 hours ago
    state_path.write_text(json.dumps(state))
    published = (lake / "published" / "current.duckdb").stat().st_mtime_ns
    job = dg.define_asset_job("rebuild", selection=dg.AssetSelection.assets(dg.AssetKey(["canonical", "citizens"]), dg.AssetKey(["published", "snapshot"])))
    result = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("rebuild").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    verdicts = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}
    assert verdicts["copy_is_legally_valid"].passed is False
    assert verdicts["copy_is_legally_valid"].metadata["valid_until"].value < datetime.now(VN_TZ).isoformat()
    materialized = {e.event_specific_data.materialization.asset_key.to_user_string()
                    for e in result.get_asset_materialization_events()}
    assert "published/snapshot" not in materialized
    assert (lake / "published" / "current.duckdb").stat().st_mtime_ns == published
