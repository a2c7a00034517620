"""The Dagster code location: it loads, and a full materialisation against a sandbox lands, builds,
checks and publishes; an expired population copy fails its check and blocks publishing."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest
from tests.extract_helpers import extract_env

from connectors.extract import compact
from hub.orchestration import run_full_sync
from pipelines.lake import HubLake, current_generation
from pipelines.automation import day_range_tags
from pipelines.definitions import defs
from schemas.canonical import PROVENANCE_FIELDS
from schemas.canonical.registry import DATASETS
from schemas.timefmt import COMPACT, VN_TZ

pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parent.parent
PROVENANCE_NAMES = {f.name for f in PROVENANCE_FIELDS}


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
    assert {s.name for s in defs.schedules} == {"hourly_days", "hourly_sync", "hourly_reconcile", "hourly_dossiers"}
    assert {s.name for s in defs.sensors} == {"docaxis_inbox"}


@pytest.fixture
def lake_env(sandbox_factory, tmp_path: Path, monkeypatch):
    """A sandbox and the hub pointed at it, with the registries' whole history."""
    with sandbox_factory(residents=1_500, seed=4, rate_limit=10_000, visibility_timeout_s=2) as sb:
        for key, value in {**sb.env, "HUB_HOME": str(tmp_path), "HUB_VDXP_VISIBILITY_TIMEOUT": "2"}.items():
            monkeypatch.setenv(key, value)
        yield sb, tmp_path / "lake"


@pytest.fixture
def recent_lake_env(lake_env, monkeypatch):
    """The same, syncing only the last 150 days of the day-shaped registries (fewer partitions to run)."""
    since = (datetime.now(VN_TZ) - timedelta(days=150)).strftime("%d/%m/%Y")
    monkeypatch.setenv("HUB_CIVIL_SINCE", since)
    monkeypatch.setenv("HUB_BUSINESS_SINCE", since)
    return lake_env


def materialize_all() -> list[dg.ExecuteInProcessResult]:
    """The full sync exactly as `hub sync` runs it: every day landed, then everything else."""
    return run_full_sync(Path(os.environ["HUB_HOME"]))


def succeeded(results: list[dg.ExecuteInProcessResult]) -> bool:
    return len(results) == 2 and all(r.success for r in results)


def materializations(results: list[dg.ExecuteInProcessResult]) -> dict[str, dict]:
    return {e.event_specific_data.materialization.asset_key.to_user_string(): e.event_specific_data.materialization.metadata
            for r in results for e in r.get_asset_materialization_events()}


def test_full_sync_lands_builds_checks_and_publishes(lake_env):
    sb, lake = lake_env
    results = materialize_all()
    assert succeeded(results)
    checks = {(e.asset_check_key.asset_key.to_user_string(), e.asset_check_key.name): e.passed
              for r in results for e in r.get_asset_check_evaluations()}
    assert checks and all(checks.values()), {k: v for k, v in checks.items() if not v}
    assert ("canonical/citizens", "copy_is_legally_valid") in checks
    landing = materializations(results)
    assert landing["landing/population"]["rows"].value == sb.sandbox.residents.n
    assert "cursor" in landing["landing/civil"]
    with duckdb.connect(str(lake / "published" / "current.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM citizens").fetchone()[0] == sb.sandbox.residents.n
        assert con.execute("SELECT count(DISTINCT enterprise_code) FROM enterprises").fetchone()[0] == \
            len(sb.sandbox.business.registry.codes)
        assert con.execute("SELECT count(*) FROM documents").fetchone()[0] > 0
    # A second run lands nothing new and republishes the same tables.
    again = materialize_all()
    assert succeeded(again)
    assert materializations(again)["landing/population"]["rows"].value == 0


def test_an_expired_copy_fails_its_check_and_blocks_publishing(recent_lake_env):
    sb, lake = recent_lake_env
    assert succeeded(materialize_all())
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


def land_days_run(first: str, last: str) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("land_days").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False, tags=day_range_tags(first, last))


def day_generations(lake: Path, system: str) -> dict[str, str]:
    return {d.name: (d / "CURRENT").read_text() for d in (lake / "landing" / system).glob("day=*")}


def day_keys(lake: Path, system: str, day: str) -> set[tuple]:
    spec = DATASETS[system]
    generation = current_generation(lake / "landing" / system / f"day={day}")
    files = list((generation / "parts").glob("*.records.parquet"))
    if not files:
        return set()
    table = pq.read_table(files, columns=list(spec.KEY))
    return set(zip(*(table[k].to_pylist() for k in spec.KEY)))


def busiest_day(lake: Path, system: str) -> str:
    days = [d.name.removeprefix("day=") for d in (lake / "landing" / system).glob("day=*")]
    return max(sorted(days), key=lambda day: len(day_keys(lake, system, day)))


def test_rerunning_a_partition_replaces_exactly_that_partition(recent_lake_env):
    sb, lake = recent_lake_env
    assert succeeded(materialize_all())
    for system in ("civil", "business"):
        before = day_generations(lake, system)
        day = busiest_day(lake, system)
        keys = day_keys(lake, system, day)
        assert keys, f"{system}: the sandbox has changes on {day}"
        result = land_days_run(day, day)
        assert result.success
        after = day_generations(lake, system)
        changed = {name for name in after if after[name] != before[name]}
        # Both day-shaped systems are in the job, so each replaced only its own partition `day`.
        assert changed == {f"day={day}"} and after.keys() == before.keys()
        assert day_keys(lake, system, day) == keys  # same records, landed afresh
        assert len(list((lake / "landing" / system / f"day={day}").glob("gen-*"))) == 1


def test_a_backfill_of_a_date_range_lands_exactly_those_days(recent_lake_env, tmp_path: Path, monkeypatch):
    sb, lake = recent_lake_env
    assert succeeded(materialize_all())
    days = sorted(d.name.removeprefix("day=") for d in (lake / "landing" / "civil").glob("day=*"))
    first, last = sorted([busiest_day(lake, "civil"), busiest_day(lake, "business")])
    first, last = days[max(0, days.index(first) - 3)], days[min(len(days) - 1, days.index(last) + 3)]
    other = tmp_path / "backfill"
    monkeypatch.setenv("HUB_HOME", str(other))
    result = land_days_run(first, last)
    assert result.success
    materialized = {e.partition for e in result.get_asset_materialization_events()
                    if e.asset_key == dg.AssetKey(["landing", "civil"])}
    assert materialized == {d for d in days if first <= d <= last}  # the UI shows each day of the range
    backfilled = other / "lake"
    for system in ("civil", "business"):
        landed = sorted(d.name.removeprefix("day=") for d in (backfilled / "landing" / system).glob("day=*"))
        assert landed == [d for d in days if first <= d <= last]
        both = [(day_keys(backfilled, system, d), day_keys(lake, system, d)) for d in landed]
        assert all(mine == theirs for mine, theirs in both)
        assert any(mine for mine, _ in both), f"{system}: the range holds some changes"


def canonical_contents(lake: Path, dataset: str) -> list[tuple]:
    """The canonical table without its provenance columns (which name the exchange, not the data)."""
    table = HubLake(home=str(lake.parent)).table(dataset)
    columns = ", ".join(f'"{f.name}"' for f in table.schema if f.name not in PROVENANCE_NAMES)
    with duckdb.connect() as con:
        return con.execute(f"SELECT {columns} FROM {table.relation()} ORDER BY ALL").fetchall()


def assert_snapshot_holds_the_tables(lake: Path) -> None:
    with duckdb.connect(str(lake / "published" / "current.duckdb"), read_only=True) as con:
        for spec in DATASETS.values():
            relation = HubLake(home=str(lake.parent)).table(spec.DATASET).relation()
            published, expected = (con.execute(f"SELECT * FROM {source} ORDER BY ALL").fetchall()
                                   for source in (spec.DATASET, relation))
            assert published == expected, spec.DATASET
            # Every table holds rows, but dossiers only when one-stop-shop systems are configured.
            assert expected or (spec.DATASET == "dossiers" and not os.environ.get("HUB_ONESTOP_URLS")), spec.DATASET


def test_a_sync_killed_at_any_instant_and_rerun_leaves_the_same_tables(sandbox_factory, tmp_path: Path):
    with sandbox_factory(residents=1_200, seed=9, rate_limit=10_000, visibility_timeout_s=2) as sb:
        since = (datetime.now(VN_TZ) - timedelta(days=150)).strftime("%d/%m/%Y")
        base = {**sb.env, "HUB_CIVIL_SINCE": since, "HUB_BUSINESS_SINCE": since, "HUB_VDXP_VISIBILITY_TIMEOUT": "2"}
        reference, killed = tmp_path / "reference", tmp_path / "killed"
        sync = [str(Path(sys.executable).parent / "hub"), "sync"]
        done = subprocess.run(sync, env=extract_env(base, reference), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        rng = random.Random(11)
        kills = 0
        for _ in range(3):
            process = subprocess.Popen(sync, env=extract_env(base, killed), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                process.wait(timeout=rng.uniform(2.0, 12.0))  # the kill instant; a finished run is fine too
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                kills += 1
        assert kills, "at least one run was killed part-way"
        finished = subprocess.run(sync, env=extract_env(base, killed), capture_output=True, text=True, timeout=600)
        assert finished.returncode == 0, finished.stdout + finished.stderr
    for dataset in ("citizens", "civil_events", "enterprises"):
        mine, theirs = canonical_contents(killed / "lake", dataset), canonical_contents(reference / "lake", dataset)
        assert mine == theirs and mine, dataset
    # The killed runs were closed by the next sync (or their pool slots would have blocked it), visibly.
    with dg.DagsterInstance.from_config(str(killed / "dagster")) as instance:
        runs = instance.get_runs()
        assert not [r.run_id for r in runs if r.status == dg.DagsterRunStatus.STARTED]
        assert len([r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]) <= kills


def test_an_incremental_sync_lands_only_what_changed(recent_lake_env):
    sb, lake = recent_lake_env
    assert succeeded(materialize_all())
    changed = sb.sandbox.change(0.05, seed=3)
    assert changed["residents"] and changed["KS"] + changed["KT"] + changed["KH"] and changed["enterprises"]
    today = datetime.now(VN_TZ).date().isoformat()
    results = run_full_sync(Path(os.environ["HUB_HOME"]), today)  # what the hourly schedules run
    assert succeeded(results)
    landed = materializations(results)
    assert landed["landing/population"]["rows"].value == changed["residents"]
    assert landed["landing/civil"]["rows"].value == changed["KS"] + changed["KT"] + changed["KH"]
    assert landed["landing/business"]["rows"].value == changed["enterprises"]
    with duckdb.connect(str(lake / "published" / "current.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM citizens").fetchone()[0] == sb.sandbox.residents.n
        changed_today = con.execute("SELECT count(*) FROM civil_events WHERE CAST(timezone('Asia/Ho_Chi_Minh', "
                                    "updated_at) AS DATE) = ?", [today]).fetchone()[0]
    assert changed_today == landed["landing/civil"]["rows"].value  # the new versions won in the canonical table
    # The citizens table took only the new parts as one change, and is what a rebuild from every part gives.
    assert landed["canonical/citizens"]["build"].text.startswith(("changed", "compacted"))
    assert landed["canonical/citizens"]["changed_rows"].value == changed["residents"]
    spec = DATASETS["population"]
    records, _ = HubLake().committed_files("population", spec.DATASET)
    rebuilt = lake / "rebuilt.parquet"
    compact(records, [], spec.SCHEMA, spec.KEY, spec.VERSION_COLUMN, rebuilt, lake / "rebuilt.quarantine.parquet")
    citizens = HubLake().table(spec.DATASET)
    with duckdb.connect() as con:
        merged_rows, rebuilt_rows = (con.execute(f"SELECT * FROM {relation} ORDER BY ALL").fetchall()
                                     for relation in (citizens.relation(), f"read_parquet('{rebuilt}')"))
    assert merged_rows == rebuilt_rows
    # The snapshot applied the changes to the previous one, and holds what loading every table whole gives.
    assert "citizens 1 changes applied" in landed["published/snapshot"]["build"].text
    assert_snapshot_holds_the_tables(lake)
