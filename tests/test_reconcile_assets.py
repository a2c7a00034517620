"""The reconciled assets on a lake built by the real pipeline: they materialise with readable metadata,
their checks run (and a blocking one stops what depends on it), and ``sync_all`` leaves them out."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hub.orchestration import run_full_sync, run_job
from pipelines.definitions import defs
from pipelines.lake import HubLake
from pipelines.reconcile import GROUP, check_link_rate
from schemas.timefmt import VN_TZ

pytestmark = pytest.mark.timeout(600)
RECONCILED = {f"{GROUP}/{name}" for name in ("links", "review_queue", "golden_persons", "golden_enterprises",
                                              "conflicts")}


@pytest.fixture
def synced_lake(sandbox_factory, tmp_path: Path, monkeypatch):
    """A sandbox (business registry through variant B, the last 150 days of the registries) fully synced
    through Dagster on the hub's instance."""
    with sandbox_factory(residents=1_500, seed=4, rate_limit=10_000, visibility_timeout_s=2) as sb:
        since = (datetime.now(VN_TZ) - timedelta(days=150)).strftime("%d/%m/%Y")
        for key, value in {**sb.env, "HUB_HOME": str(tmp_path), "HUB_VDXP_VISIBILITY_TIMEOUT": "2",
                           "HUB_BUSINESS_VARIANT": "B", "HUB_CIVIL_SINCE": since,
                           "HUB_BUSINESS_SINCE": since}.items():
            monkeypatch.setenv(key, value)
        results = run_full_sync(tmp_path)
        assert len(results) == 2 and all(r.success for r in results)
        yield sb, tmp_path, results


def materialized(results) -> dict[str, dict]:
    return {e.event_specific_data.materialization.asset_key.to_user_string(): e.event_specific_data.materialization.metadata
            for r in results for e in r.get_asset_materialization_events()}


def checks(results) -> dict[tuple[str, str], bool]:
    return {(e.asset_check_key.asset_key.to_user_string(), e.asset_check_key.name): e.passed
            for r in results for e in r.get_asset_check_evaluations()}


def test_sync_all_leaves_the_reconciled_assets_out() -> None:
    sync_keys = {k.to_user_string() for k in defs.resolve_job_def("sync_all").asset_layer.executable_asset_keys}
    reconcile_keys = {k.to_user_string() for k in defs.resolve_job_def("reconcile").asset_layer.executable_asset_keys}
    assert reconcile_keys == RECONCILED
    assert not sync_keys & RECONCILED
    assert {"canonical/citizens", "published/snapshot"} <= sync_keys
    schedule = defs.resolve_schedule_def("hourly_reconcile")
    assert schedule.job_name == "reconcile" and schedule.cron_schedule == "40 * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        if key.to_user_string() in RECONCILED:
            node = graph.get(key)
            assert node.description and node.owners and node.kinds and node.group_name == GROUP


def test_reconcile_materialises_with_metadata_and_checks(synced_lake, monkeypatch) -> None:
    sb, home, synced = synced_lake
    assert not set(materialized(synced)) & RECONCILED, "the sync does not reconcile"
    results = run_job(home, "reconcile")
    assert all(r.success for r in results)
    meta = materialized(results)
    assert set(meta) == RECONCILED
    links = meta[f"{GROUP}/links"]
    assert links["rows"].value > 1_000
    assert 0.9 <= links["link_rate"].value, links["link_rate"].value
    assert "link_rate/enterprises/legal_representative" in links and "link_rate/civil_events/deceased" in links
    assert meta[f"{GROUP}/review_queue"]["review_share"].value <= 0.05
    persons = meta[f"{GROUP}/golden_persons"]
    assert persons["rows"].value == sb.sandbox.residents.n
    assert persons["field_rows"].value > persons["rows"].value
    assert meta[f"{GROUP}/golden_enterprises"]["rows"].value > 0
    conflicts = meta[f"{GROUP}/conflicts"]
    assert {"open", "resolved", "conflict_rate", "open/moved_out", "open/rep_name_mismatch", "seconds"} <= set(conflicts)
    for m in meta.values():
        assert m["seconds"].value >= 0 and Path(m["path"].value).exists()
    verdicts = checks(results)
    assert {(f"{GROUP}/links", "check_link_rate"), (f"{GROUP}/review_queue", "check_review_share"),
            (f"{GROUP}/conflicts", "check_conflict_rate")} <= set(verdicts)
    assert all(verdicts.values()), verdicts
    lake = home / "lake" / GROUP
    first = pq.read_table(lake / "conflicts.parquet")
    assert first.num_rows == conflicts["rows"].value

    # Run again: the same conflicts under the same ids, none resolved.
    again = run_job(home, "reconcile")
    assert all(r.success for r in again)
    second = pq.read_table(lake / "conflicts.parquet")
    assert sorted(second["conflict_id"].to_pylist()) == sorted(first["conflict_id"].to_pylist())
    assert set(second["status"].to_pylist()) <= {"open"}

    # A limit that is not a share fails the blocking check, naming the variable: golden records and
    # conflicts wait rather than being rebuilt under an unknown threshold.
    monkeypatch.setenv("HUB_RECONCILE_MIN_LINK_RATE", "2")
    golden_before = (lake / "golden_persons.parquet").stat().st_mtime_ns
    blocked = run_job(home, "reconcile")
    evaluations = {e.asset_check_key.name: e for r in blocked for e in r.get_asset_check_evaluations()}
    assert evaluations["check_link_rate"].passed is False
    assert "HUB_RECONCILE_MIN_LINK_RATE" in evaluations["check_link_rate"].metadata["error"].value
    assert f"{GROUP}/golden_persons" not in materialized(blocked)
    assert (lake / "golden_persons.parquet").stat().st_mtime_ns == golden_before


def test_the_link_rate_check_fails_below_its_threshold(tmp_path: Path, monkeypatch) -> None:
    links = pa.table({"dataset": ["civil_events"] * 4 + ["citizens"] * 2 + ["enterprises"],
                      "role": ["deceased", "deceased", "husband", "wife", "father", "mother", "legal_representative"],
                      "band": ["exact", "non_match", "match", "review", "exact", "exact", "non_match"],
                      "mention_id_number": [None, None, None, None, None, None, ""]})
    lake = HubLake(home=str(tmp_path))
    (lake.root / GROUP).mkdir(parents=True)
    pq.write_table(links, lake.root / GROUP / "links.parquet")
    monkeypatch.setenv("HUB_RECONCILE_MIN_LINK_RATE", "0.9")
    passed, metadata = check_link_rate(lake)
    assert passed is False and metadata["link_rate"] == 0.5 and metadata["lowest_role_rate"] == 0.0
    assert metadata["representatives_without_id"] == 1  # left out: nothing to link it by
    monkeypatch.setenv("HUB_RECONCILE_MIN_LINK_RATE", "0.5")
    assert check_link_rate(lake)[0] is True
