"""The one-stop-shop dossiers end to end: the sandbox's one-stop-shop database, the sync through Dagster,
then the ``dossiers`` job: the portal holds exactly what the local system holds, each step once; the
applicant flags agree with the ground truth; ``hub report portal`` runs the same pass from a shell."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from hub.orchestration import run_full_sync, run_job
from hub.portal_report import orphans, refusals
from pipelines.definitions import defs
from pipelines.dossiers import output, state_path
from pipelines.lake import HubLake
from hub.serving_store import read_snapshot
from sandbox.onestop import OneStopConfig
from schemas.identifiers import dossier_code_problem
from schemas.timefmt import COMPACT, VN_TZ

pytestmark = pytest.mark.timeout(900)
HUB = [str(Path(sys.executable).with_name("hub"))]
DOSSIER_ASSETS = {"portal/report", "dossiers/applicant_flags", "dossiers/service_measures", "dossiers/procedure_times"}


def materialized(results) -> dict[str, dict]:
    return {e.event_specific_data.materialization.asset_key.to_user_string(): e.event_specific_data.materialization.metadata
            for r in results for e in r.get_asset_materialization_events()}


def checks(results) -> dict[str, bool]:
    return {e.asset_check_key.name: e.passed for r in results for e in r.get_asset_check_evaluations()}


def source_state(url: str) -> tuple[set[str], Counter]:
    """The valid dossier codes the one-stop-shop database holds, and its steps as the portal identifies them."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as con:
            codes = {c for (c,) in con.execute(sa.text("SELECT ma_ho_so FROM ho_so")) if dossier_code_problem(c) is None}
            steps = Counter((c, _moment(t).strftime(COMPACT)) for c, t in con.execute(
                sa.text("SELECT ma_ho_so, thoi_diem FROM qua_trinh_xu_ly")) if c in codes)
    finally:
        engine.dispose()
    return codes, steps


def _moment(value) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))  # SQLite gives text


def assert_portal_matches_source(portal, url: str) -> None:
    codes, steps = source_state(url)
    assert set(portal.dossiers()) == codes
    assert Counter((s["MaHoSo"], s["ThoiDiemXuLy"]) for s in portal.steps()) == steps


@pytest.fixture
def synced(sandbox_factory, tmp_path: Path, monkeypatch):
    onestop = OneStopConfig(sqlite_only=True, directory=tmp_path / "onestop", dossiers_per_month=400, months=3,
                            change_interval_s=0)
    with sandbox_factory(residents=1_500, seed=4, rate_limit=10_000, visibility_timeout_s=2, onestop=onestop) as sb:
        sb.sandbox.onestop.open()
        sb.sandbox.onestop.advance(20, seed=1)  # a live system: its history ends at as_of, its changes are now
        env = sb.sandbox.environment(sb.base_url)
        since = (datetime.now(VN_TZ) - timedelta(days=150)).strftime("%d/%m/%Y")
        for key, value in {**env, "HUB_HOME": str(tmp_path), "HUB_VDXP_VISIBILITY_TIMEOUT": "2",
                           "HUB_CIVIL_SINCE": since, "HUB_BUSINESS_SINCE": since}.items():
            monkeypatch.setenv(key, value)
        sync = run_full_sync(tmp_path)
        assert all(r.success for r in sync)
        assert checks(sync)["systems_reporting"]  # a check of canonical/dossiers: it runs with the sync
        [(name, url)] = sb.sandbox.onestop.urls().items()
        yield sb, tmp_path, name, url
        sb.sandbox.onestop.close()


def test_dossiers_job_is_apart_from_the_sync() -> None:
    sync_keys = {k.to_user_string() for k in defs.resolve_job_def("sync_all").asset_layer.executable_asset_keys}
    job_keys = {k.to_user_string() for k in defs.resolve_job_def("dossiers").asset_layer.executable_asset_keys}
    assert job_keys == DOSSIER_ASSETS
    assert {"landing/onestop", "canonical/dossiers"} <= sync_keys and not sync_keys & DOSSIER_ASSETS
    schedule = defs.resolve_schedule_def("hourly_dossiers")
    assert schedule.job_name == "dossiers" and schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_report_flags_and_measures_end_to_end(synced) -> None:
    sb, home, name, url = synced
    portal = sb.sandbox.dvcqg
    first = run_job(home, "dossiers")
    assert all(r.success for r in first)
    meta = materialized(first)
    assert set(meta) == DOSSIER_ASSETS
    report = meta["portal/report"]
    assert report["dossiers_new"].value == len(portal.dossiers()) > 500
    assert report["refused_dossiers"].value == 0, refusals(state_path(HubLake()))
    assert_portal_matches_source(portal, url)
    assert checks(first) == {"late_share_jump": True}

    # Changes at the source: progress, new dossiers, two deleted. The next sync and report follow them.
    changes = sb.sandbox.onestop.advance(60, seed=2)
    kept = sorted(portal.dossiers())
    for code in kept[:2]:
        assert sb.sandbox.onestop.delete(name, code)
    assert all(r.success for r in run_full_sync(home))
    second = materialized(run_job(home, "dossiers"))["portal/report"]
    assert second["dossiers_updated"].value + second["dossiers_new"].value >= len({c.ma_ho_so for c in changes}) // 2
    assert second["steps_sent"].value > 0
    assert second["deleted_at_source"].value == 2
    assert orphans(state_path(HubLake())) == kept[:2]
    codes, steps = source_state(url)
    assert set(portal.dossiers()) == codes | set(kept[:2])  # the portal has no call to delete a dossier
    assert Counter((s["MaHoSo"], s["ThoiDiemXuLy"]) for s in portal.steps()) - Counter(
        {k: v for k, v in Counter((s["MaHoSo"], s["ThoiDiemXuLy"]) for s in portal.steps()).items()
         if k[0] in kept[:2]}) == steps

    # Nothing new: nothing is written.
    third = materialized(run_job(home, "dossiers"))["portal/report"]
    assert third["write_calls"].value == 0

    # Service measures per agency and month, and procedure times, readable from their Parquet files.
    lake = HubLake()
    measures = pq.read_table(output(lake, "service_measures")).to_pylist()
    assert sum(m["received"] for m in measures) == len(codes)
    assert all(0 <= m["online_share"] <= 1 for m in measures)
    assert 0.05 < sum(m["online_share"] * m["received"] for m in measures) / len(codes) < 0.3  # about one in seven
    assert pq.read_table(output(lake, "procedure_times")).num_rows > 3
    # The published snapshot holds the same measures, with a data time, for the lookup API.
    served = read_snapshot(lake.published / "current.duckdb").datasets["service_measures"]
    assert len(served.rows) == len(measures) and served.as_of is not None


def test_applicant_flags_agree_with_the_ground_truth(synced) -> None:
    sb, home, name, url = synced
    assert all(r.success for r in run_job(home, "dossiers"))
    flags = {r["dossier_code"]: r["flag"] for r in pq.read_table(output(HubLake(), "applicant_flags")).to_pylist()}
    truth = sb.sandbox.truth.tables["dossier_applicants"].to_pylist()
    citizens = [t for t in truth if t["loai_doi_tuong"] == 1 and dossier_code_problem(t["ma_ho_so"]) is None]
    faulty = {t["ma_ho_so"]: t["fault"] for t in citizens if t["fault"] in ("unknown_id", "name_mismatch")}
    assert faulty, "the sandbox injects applicant faults"
    caught = {code for code, fault in faulty.items()
              if flags.get(code) == {"unknown_id": "unknown_applicant", "name_mismatch": "name_mismatch"}[fault]}
    assert len(caught) / len(faulty) >= 0.95
    clean = [t["ma_ho_so"] for t in citizens if t["fault"] in ("", "cmnd")]
    wrongly = [code for code in clean if code in flags]
    assert len(wrongly) / len(clean) <= 0.01, wrongly[:5]


def test_hub_report_portal_runs_the_same_pass_from_a_shell(synced) -> None:
    sb, home, name, url = synced
    env = {**os.environ}
    done = subprocess.run([*HUB, "report", "portal"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "new" in done.stdout
    assert_portal_matches_source(sb.sandbox.dvcqg, url)
    # The asset shares its state: it finds nothing left to send.
    meta = materialized(run_job(home, "dossiers"))["portal/report"]
    assert meta["write_calls"].value == 0 and meta["dossiers_unchanged"].value == len(sb.sandbox.dvcqg.dossiers())
    # The lake's dossiers, read as the asset reads them: every version is on the portal already.
    from_lake = subprocess.run([*HUB, "report", "portal", "--lake"], env=env, capture_output=True, text=True, timeout=300)
    assert from_lake.returncode == 0, from_lake.stderr
    assert "0 new, 0 updated" in from_lake.stdout
    listed = subprocess.run([*HUB, "report", "portal", "--refused"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and listed.stdout == ""
