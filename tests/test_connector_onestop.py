"""The one-stop-shop connector (``national-systems.md`` §6) against real SQLite, PostgreSQL and MariaDB
databases: complete, incremental with an overlap, per-system clocks, tombstones, quarantine with reasons,
status maps, resumable after a kill, honest errors, `hub extract onestop` and its place in the lake."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from connectors.base import Batch
from connectors.errors import ConnectorError
from connectors.extract import land, run_extract
from connectors.onestop import OnestopConnector, applicant_id_kind, parse_status_map
from connectors.registry import build_connector
from hub.cli import app
from hub.config import Settings
from schemas.canonical import dossiers
from schemas.identifiers import dossier_code_problem, enterprise_check_digit
from schemas.timefmt import VN_TZ
from tests.onestop_helpers import BACKENDS, T0, OnestopDatabase, code, dossier, onestop_database, step

pytestmark = pytest.mark.timeout(300)
SECRET = "s3cr3t-Passw0rd"
ENTERPRISE = "010010910" + str(enterprise_check_digit("010010910"))


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def db(backend: str, tmp_path: Path) -> Iterator[OnestopDatabase]:
    with onestop_database(backend, tmp_path) as database:
        yield database


def connector(systems: dict[str, str], **knobs: str) -> OnestopConnector:
    """The connector as the hub builds it, from ``HUB_ONESTOP_URLS`` and knobs (no real back-off waits)."""
    env = {"HUB_ONESTOP_URLS": ",".join(f"{name}={url}" for name, url in systems.items()),
           "HUB_ONESTOP_BACKOFF_INITIAL": "0", "HUB_ONESTOP_BACKOFF_MAX": "0", **knobs}
    built = build_connector("onestop", Settings.from_env(env), env)
    assert isinstance(built, OnestopConnector)
    return built


def read_all(conn: OnestopConnector, cursor: dict | None) -> tuple[pa.Table, pa.Table, dict]:
    """Every batch of one run: (records, quarantine, the last cursor)."""
    batches = list(conn.read(cursor))
    records = pa.concat_tables([b.records for b in batches]) if batches else dossiers.SCHEMA.empty_table()
    quarantine = pa.concat_tables([b.quarantine for b in batches]) if batches else None
    return records, quarantine, batches[-1].cursor if batches else cursor


def by_code(table: pa.Table) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["system"], row["dossier_code"]): row for row in table.to_pylist()}


def vn(moment: datetime) -> datetime:
    return moment.replace(tzinfo=VN_TZ)


# ------------------------------------------------------------------------------------------ reading

def test_a_full_read_maps_every_column_to_the_canonical_row(db: OnestopDatabase):
    db.add(
        dossier(1, T0, so_giay_to="031090001234", trang_thai="DANG_XU_LY"),
        dossier(2, T0, kenh="TRUC_TUYEN", so_giay_to="031234567", trang_thai="DA_TRA", da_thanh_toan=True,
                ngay_ket_thuc=T0 - timedelta(hours=2), ngay_tra=T0 - timedelta(hours=1)),
        dossier(3, T0, kenh="BUU_CHINH", loai_doi_tuong=2, so_giay_to=ENTERPRISE, trang_thai="MOI"),
        dossier(4, T0, so_giay_to="ABC-1", trang_thai="TU_CHOI", ma_linh_vuc=None),
        steps=[step(code(1), T0 - timedelta(minutes=30)), step(code(1), T0 + timedelta(minutes=7), trang_thai="DANG_XU_LY"),
               step(code(2), T0 - timedelta(hours=3)), step(code(2), T0 - timedelta(hours=2), trang_thai="DA_XU_LY"),
               step(code(2), T0 - timedelta(hours=1), trang_thai="DA_TRA")])
    records, quarantine, cursor = read_all(connector({"q1": db.url}), None)
    assert quarantine.num_rows == 0 and records.schema.equals(dossiers.SCHEMA, check_metadata=True)
    rows = by_code(records)
    assert set(rows) == {("q1", code(n)) for n in (1, 2, 3, 4)}
    one, two, three, four = (rows["q1", code(n)] for n in (1, 2, 3, 4))
    assert (one["channel"], one["status"], one["source_status"], one["applicant_id_kind"]) == (1, 4, "DANG_XU_LY", 1)
    assert (two["channel"], two["status"], two["applicant_id_kind"], two["paid_online"]) == (2, 10, 2, True)
    assert (three["channel"], three["status"], three["applicant_id_kind"], three["applicant_type"]) == (3, 1, 3, 2)
    assert (four["status"], four["applicant_id_kind"], four["field_code"]) == (3, None, None)
    # Naive local times are Asia/Ho_Chi_Minh instants.
    assert one["received_at"] == vn(T0 - timedelta(days=1)) and one["received_at"].utcoffset() == timedelta(hours=7)
    assert two["finished_at"] == vn(T0 - timedelta(hours=2)) and two["returned_at"] == vn(T0 - timedelta(hours=1))
    # Steps nested in id order; the version is the latest of the row and its steps.
    assert [s["status"] for s in two["steps"]] == [2, 9, 10] and three["steps"] == []
    assert one["updated_at"] == vn(T0) and one["version"] == vn(T0 + timedelta(minutes=7))
    assert two["version"] == vn(T0) and not any(r["deleted"] for r in rows.values())
    assert one["steps"][1]["processed_at"] == vn(T0 + timedelta(minutes=7))
    assert {r["source_system"] for r in rows.values()} == {"onestop"}
    assert cursor["systems"]["q1"]["hwm"] == (T0 + timedelta(minutes=7)).isoformat(timespec="microseconds")


def test_an_incremental_read_takes_changed_rows_and_dossiers_whose_steps_changed(db: OnestopDatabase, tmp_path: Path):
    db.add(*(dossier(n, T0) for n in range(1, 6)), steps=[step(code(2), T0)])
    conn = connector({"q1": db.url})
    first = run_extract(conn, tmp_path / "out")
    assert (first.fetched, first.rows) == (5, 5)
    later = T0 + timedelta(hours=1)
    db.update(code(1), trang_thai="DA_XU_LY", ngay_ket_thuc=later, updated_at=later)
    db.add(steps=[step(code(2), later, trang_thai="DA_XU_LY")])
    second = run_extract(conn, tmp_path / "out")
    assert (second.fetched, second.rows) == (2, 5)  # only the two dossiers that changed
    table = by_code(pq.read_table(second.dataset_path))
    assert table["q1", code(1)]["status"] == 9 and table["q1", code(1)]["version"] == vn(later)
    assert [s["status"] for s in table["q1", code(2)]["steps"]] == [2, 9]
    assert table["q1", code(2)]["updated_at"] == vn(T0) and table["q1", code(2)]["version"] == vn(later)
    assert run_extract(conn, tmp_path / "out").fetched == 0  # nothing changed: nothing landed again


def test_the_overlap_catches_late_commits_with_older_timestamps(db: OnestopDatabase, tmp_path: Path):
    db.add(dossier(1, T0), dossier(2, T0 + timedelta(minutes=10)), steps=[step(code(1), T0)])
    conn = connector({"q1": db.url})
    assert run_extract(conn, tmp_path / "out").fetched == 2
    # Committed after that run, stamped before its high-water mark (T0+10 min), inside the 15-minute overlap:
    db.add(dossier(3, T0 + timedelta(minutes=4)), steps=[step(code(1), T0 - timedelta(minutes=2), noi_dung="Bổ sung")])
    # ... and one stamped far before it, beyond the overlap: found by the key-set check, not lost either.
    db.add(dossier(4, T0 - timedelta(hours=5)))
    second = run_extract(conn, tmp_path / "out")
    assert second.fetched == 3 and second.rows == 4
    table = by_code(pq.read_table(second.dataset_path))
    assert [s["content"] for s in table["q1", code(1)]["steps"]] == ["Tiếp nhận hồ sơ", "Bổ sung"]
    assert table["q1", code(3)]["version"] == vn(T0 + timedelta(minutes=4))


def test_each_system_keeps_its_own_clock(backend: str, tmp_path: Path):
    behind = T0 - timedelta(minutes=20)  # system b's clock is 20 minutes behind a's
    with onestop_database(backend, tmp_path) as a, onestop_database(backend, tmp_path) as b:
        a.add(dossier(1, T0), dossier(2, T0))
        b.add(dossier(1, behind), dossier(2, behind))  # the same codes: the key includes the system
        conn = connector({"a": a.url, "b": b.url}, HUB_ONESTOP_OVERLAP_S="60")
        records, _, cursor = read_all(conn, None)
        assert records.num_rows == 4
        b.update(code(2), trang_thai="DA_XU_LY", updated_at=behind + timedelta(minutes=1))  # long before a's mark
        a.update(code(1), trang_thai="BO_SUNG", updated_at=T0 + timedelta(minutes=1))
        records, _, cursor = read_all(conn, cursor)
        assert {(k, r["status"]) for k, r in by_code(records).items()} == {(("a", code(1)), 5), (("b", code(2)), 9)}
        assert cursor["systems"]["a"]["hwm"].startswith((T0 + timedelta(minutes=1)).isoformat())
        assert cursor["systems"]["b"]["hwm"].startswith((behind + timedelta(minutes=1)).isoformat())


def test_deleted_dossiers_become_tombstones(db: OnestopDatabase, tmp_path: Path):
    db.add(*(dossier(n, T0 + timedelta(minutes=n)) for n in range(1, 5)), steps=[step(code(2), T0)])
    conn = connector({"q1": db.url})
    run_extract(conn, tmp_path / "out")
    db.delete(code(2))
    second = run_extract(conn, tmp_path / "out")
    assert second.fetched == 1
    table = by_code(pq.read_table(second.dataset_path))
    gone = table["q1", code(2)]
    assert gone["deleted"] and gone["steps"] is None and gone["status"] is None
    assert gone["version"] > max(r["version"] for k, r in table.items() if k != ("q1", code(2)))
    assert [k for k, r in table.items() if r["deleted"]] == [("q1", code(2))]
    assert run_extract(conn, tmp_path / "out").fetched == 0  # told once
    # A deletion offset by an insert (the count stays the same) is still seen.
    db.delete(code(3))
    db.add(dossier(7, T0 + timedelta(hours=1)))
    third = run_extract(conn, tmp_path / "out")
    table = by_code(pq.read_table(third.dataset_path))
    assert third.fetched == 2 and table["q1", code(3)]["deleted"] and not table["q1", code(7)]["deleted"]
    # A dossier restored with its old timestamp (a backup put back) outranks its tombstone.
    db.add(dossier(2, T0 + timedelta(minutes=2)))
    fourth = run_extract(conn, tmp_path / "out")
    restored = by_code(pq.read_table(fourth.dataset_path))["q1", code(2)]
    assert fourth.fetched == 1 and not restored["deleted"] and restored["updated_at"] == vn(T0 + timedelta(minutes=2))


def test_the_key_set_stays_small_and_tells_a_deletion_among_many(tmp_path: Path):
    """10^4 dossiers (SQLite, quick to build): the key set stays small in the cursor, and a deletion
    among them is told."""
    with onestop_database("sqlite", tmp_path) as database:
        database.add(*(dossier(n, T0 - timedelta(hours=1, seconds=n)) for n in range(1, 10_000)))
        conn = connector({"q1": database.url})
        _, _, cursor = read_all(conn, None)
        assert len(cursor["systems"]["q1"]["keys"]) < 50_000  # under 5 bytes a code, compressed
        assert len(json.dumps(cursor)) < 100_000
        database.delete(code(5000))
        records, _, cursor = read_all(conn, cursor)
        assert [r["dossier_code"] for r in records.to_pylist() if r["deleted"]] == [code(5000)]


# --------------------------------------------------------------------------------------- validation

def test_every_refusal_is_quarantined_with_its_reason(db: OnestopDatabase, tmp_path: Path):
    bad = {
        "000.00.13.H31-260302": ("ma_ho_so", dict()),  # no serial
        "000.00.13.H31-261302-0001": ("not a calendar date", dict()),  # month 13
        code(11): ("trang_thai 'CHO_XU_LY'", dict(trang_thai="CHO_XU_LY")),
        code(12): ("kenh 'FAX'", dict(kenh="FAX")),
        code(13): ("ngay_hen_tra", dict(ngay_hen_tra=T0 - timedelta(days=10))),
        code(14): ("ngay_tiep_nhan", dict(ngay_tiep_nhan=datetime(1900, 1, 1))),
        code(15): ("loai_doi_tuong 7", dict(loai_doi_tuong=7)),
    }
    rows = [dossier(1, T0), dossier(2, T0)]
    for n, (key, (_, values)) in enumerate(bad.items()):
        rows.append(dossier(20 + n, T0, **values) | {"ma_ho_so": key})
    rows.append(dossier(16, T0))
    db.add(*rows, steps=[step(code(16), T0, trang_thai="XEP_HANG")])
    bad[code(16)] = ("qua_trinh_xu_ly id 1 trang_thai 'XEP_HANG'", {})
    if db.kind == "sqlite":  # SQLite keeps any text: a date that is not a date
        with db.engine.begin() as c:
            c.exec_driver_sql("INSERT INTO ho_so (ma_ho_so, kenh, trang_thai, ngay_tiep_nhan, updated_at) "
                              "VALUES (?, 'TRUC_TIEP', 'MOI', '2026-02-30 10:00:00', ?)", (code(17), str(T0)))
        bad[code(17)] = ("ngay_tiep_nhan '2026-02-30 10:00:00' is not a real date", {})
    conn = connector({"quan-1": db.url})
    result = run_extract(conn, tmp_path / "out")
    quarantine = pq.read_table(result.quarantine_path).to_pylist()
    assert result.rows == 2 and {r["record_key"] for r in quarantine} == set(bad)
    for row in quarantine:
        expected = bad[row["record_key"]][0]
        assert row["reason"].startswith(f"quan-1 dossier {row['record_key']}: ") and expected in row["reason"], row
        assert json.loads(row["raw"])["ho_so"]["ma_ho_so"] == row["record_key"]
        assert row["source_system"] == "onestop" and row["dataset"] == "dossiers" and "quan-1" in row["position"]
    assert run_extract(conn, tmp_path / "out").quarantined == 0  # read again in the overlap, not refused twice


def test_dossier_codes_and_identifier_kinds():
    assert dossier_code_problem("000.00.13.H31-250814-0001") is None
    for wrong in ("000.00.13.H31-250230-0001", "H31-250814-0001", "000.00.13.H31-250814-001", "000.0.13.H31-250814-0001",
                  "000.00.13.31-250814-0001", ""):
        assert dossier_code_problem(wrong), wrong
    assert [applicant_id_kind(v) for v in ("031090001234", "031234567", ENTERPRISE, ENTERPRISE + "-001",
                                           "000090001234", "0100109100", None)] == [1, 2, 3, 3, None, None, None]


def test_status_codes_map_per_system_with_an_override(backend: str, tmp_path: Path):
    with onestop_database(backend, tmp_path) as own, onestop_database(backend, tmp_path) as plain:
        for database in (own, plain):
            database.add(dossier(1, T0, trang_thai="CHO_DUYET"), dossier(2, T0, trang_thai="MOI"),
                         dossier(3, T0, trang_thai="DA_TRA"),
                         steps=[step(code(3), T0, trang_thai="CHO_DUYET")])
        conn = connector({"quan-1": own.url, "plain": plain.url}, HUB_ONESTOP_QUAN_1_STATUS_MAP="CHO_DUYET:4, MOI:2")
        records, quarantine, _ = read_all(conn, None)
        rows = by_code(records)
        assert {k[1]: r["status"] for k, r in rows.items() if k[0] == "quan-1"} == {code(1): 4, code(2): 2, code(3): 10}
        assert rows["quan-1", code(3)]["steps"][0]["status"] == 4
        assert {k[1]: r["status"] for k, r in rows.items() if k[0] == "plain"} == {code(2): 1}
        assert sorted(quarantine["record_key"].to_pylist()) == [code(1), code(3)]
        assert all(r.startswith("plain dossier") for r in quarantine["reason"].to_pylist())
    with pytest.raises(ValueError, match="HUB_ONESTOP_QUAN_1_STATUS_MAP: 'CHO:11'"):
        parse_status_map("HUB_ONESTOP_QUAN_1_STATUS_MAP", "CHO:11")


# -------------------------------------------------------------------------------------- resumption

class KilledAfter:
    """The connector, dying (as a kill would) once ``batches`` batches have been handed over."""

    def __init__(self, inner: OnestopConnector, batches: int) -> None:
        self.inner, self.batches = inner, batches
        for name in ("system", "dataset", "schema", "key", "version_column"):
            setattr(self, name, getattr(inner, name))

    def read(self, cursor: dict | None) -> Iterator[Batch]:
        for n, batch in enumerate(self.inner.read(cursor), start=1):
            yield batch
            if n == self.batches:
                raise KeyboardInterrupt("killed")


def test_a_killed_run_resumes_from_its_committed_cursor_and_loses_nothing(db: OnestopDatabase, tmp_path: Path):
    db.add(*(dossier(n, T0 + timedelta(minutes=n)) for n in range(1, 8)),
           steps=[step(code(n), T0 + timedelta(minutes=n, seconds=30)) for n in range(1, 8)])
    conn = connector({"q1": db.url}, HUB_ONESTOP_BATCH_SIZE="2")
    reference = by_code(pq.read_table(run_extract(conn, tmp_path / "reference").dataset_path))
    for kill_after in (1, 2, 3, 4):
        out = tmp_path / f"killed-{kill_after}"
        with pytest.raises(KeyboardInterrupt):
            land(KilledAfter(conn, kill_after), out)
        state = json.loads((out / "state.json").read_text())
        resumed = run_extract(conn, out)
        assert resumed.fetched == 7 - min(7, 2 * kill_after), (kill_after, state["cursor"])  # the rest, only
        table = by_code(pq.read_table(resumed.dataset_path))
        strip = lambda rows: {k: {c: v for c, v in r.items() if c not in ("request_id", "fetched_at")}
                              for k, r in rows.items()}  # noqa: E731
        assert strip(table) == strip(reference)
    # Killed while the deletions were being listed: the next run still tells them.
    out = tmp_path / "deletions"
    run_extract(conn, out)
    db.delete(code(1))
    with pytest.raises(KeyboardInterrupt):
        land(KilledAfter(conn, 1), out)  # killed after the pass, before the batch with the tombstone
    assert by_code(pq.read_table(run_extract(conn, out).dataset_path))["q1", code(1)]["deleted"]


def test_a_dropped_connection_is_resumed_within_the_run(tmp_path: Path):
    with onestop_database("postgresql", tmp_path) as database:
        database.add(*(dossier(n, T0) for n in range(1, 6)))
        conn = connector({"q1": database.url}, HUB_ONESTOP_BATCH_SIZE="2", HUB_ONESTOP_MAX_ATTEMPTS="3")
        name = database.engine.url.database
        reader = conn.read(None)
        first = next(reader)
        with database.engine.connect() as admin:  # the server drops the connector's connection
            killed = admin.execute(sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                           "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name}).scalar()
        assert killed == 1
        rest = list(reader)
        codes = [r["dossier_code"] for b in [first, *rest] for r in b.records.to_pylist()]
        assert sorted(set(codes)) == [code(n) for n in range(1, 6)]


# ------------------------------------------------------------------------------------------- errors

def test_an_unreachable_system_fails_the_run_naming_it_never_its_password(backend: str, tmp_path: Path):
    broken = {"sqlite": f"sqlite:///{tmp_path / 'missing' / 'none.db'}",
              "postgresql": f"postgresql://postgres:{SECRET}@127.0.0.1:1/db",
              "mariadb": f"mariadb://root:{SECRET}@127.0.0.1:3306/db"}[backend]
    with onestop_database("sqlite", tmp_path) as good:
        good.add(dossier(1, T0))
        conn = connector({"good": good.url, "broken": broken}, HUB_ONESTOP_MAX_ATTEMPTS="2")
        assert SECRET not in repr(conn)
        batches = []
        with pytest.raises(ConnectorError) as failure:
            for batch in conn.read(None):
                batches.append(batch)
        message = str(failure.value)
        assert message.startswith("onestop broken: cannot reach the database after 2 attempts"), message
        assert SECRET not in message and broken not in message and "\n" not in message
        assert sum(b.records.num_rows for b in batches) == 1  # the reachable system was read all the same
        verdict = conn.check()
        assert not verdict.ok and "good OK (sqlite, 1 dossiers)" in verdict.message
        assert "broken FAILED" in verdict.message and SECRET not in verdict.message


def test_a_malformed_url_or_status_map_is_refused_naming_the_system():
    env = {"HUB_ONESTOP_URLS": f"q1=postgresql://u:{SECRET}@[::1:5432/db"}
    with pytest.raises(ValueError) as failure:
        build_connector("onestop", Settings.from_env(env), env)
    assert "'q1'" in str(failure.value) and SECRET not in str(failure.value)
    env = {"HUB_ONESTOP_URLS": "q1=sqlite:///x.db", "HUB_ONESTOP_Q1_STATUS_MAP": "MOI=1"}
    with pytest.raises(ValueError, match="HUB_ONESTOP_Q1_STATUS_MAP"):
        build_connector("onestop", Settings.from_env(env), env)


def test_no_configured_system_reads_nothing_and_succeeds(tmp_path: Path):
    conn = build_connector("onestop", Settings.from_env({}), {})
    assert list(conn.read(None)) == [] and conn.check().ok
    result = run_extract(conn, tmp_path / "out")
    assert result.rows == 0 and pq.read_table(result.dataset_path).schema.equals(dossiers.SCHEMA)


# ------------------------------------------------------------------------------- command line, lake

def test_hub_extract_and_check_onestop(db: OnestopDatabase, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HUB_CONFIG", raising=False)
    db.add(dossier(1, T0), dossier(2, T0, kenh="FAX"))
    env = {"HUB_HOME": str(tmp_path / "home"), "HUB_ONESTOP_URLS": f"q1={db.url}"}
    runner = CliRunner()
    result = runner.invoke(app, ["extract", "onestop", "--out", str(tmp_path / "out")], env=env)
    assert result.exit_code == 0, result.output
    assert "1 rows fetched" in result.output and "1 quarantined" in result.output
    assert pq.read_table(tmp_path / "out" / "dossiers.parquet")["dossier_code"].to_pylist() == [code(1)]
    again = runner.invoke(app, ["extract", "onestop", "--out", str(tmp_path / "out")], env=env)
    assert again.exit_code == 0 and "0 rows fetched" in again.output
    checked = runner.invoke(app, ["check", "onestop"], env=env)
    assert checked.exit_code == 0 and f"onestop: OK - q1 OK ({db.engine.dialect.name}, 2 dossiers)" in checked.output
    broken = {**env, "HUB_ONESTOP_URLS": f"q1=postgresql://postgres:{SECRET}@127.0.0.1:1/db",
              "HUB_ONESTOP_MAX_ATTEMPTS": "1"}
    failed = runner.invoke(app, ["extract", "onestop", "--out", str(tmp_path / "other")], env=broken)
    assert failed.exit_code == 1 and "onestop q1: cannot reach" in failed.output and SECRET not in failed.output
    failed = runner.invoke(app, ["check", "onestop"], env=broken)
    assert failed.exit_code == 1 and "q1 FAILED" in failed.output and SECRET not in failed.output


def test_landing_and_canonical_dossiers_materialise_with_their_checks(tmp_path: Path, monkeypatch):
    from pipelines.canonical import canonical_assets
    from pipelines.checks import asset_checks
    from pipelines.lake import HubLake
    from pipelines.sources import landing_assets

    with onestop_database("sqlite", tmp_path) as database:
        database.add(dossier(1, T0), dossier(2, T0), steps=[step(code(1), T0)])
        monkeypatch.setenv("HUB_ONESTOP_URLS", f"q1={database.url}")
        monkeypatch.delenv("HUB_CONFIG", raising=False)
        monkeypatch.chdir(tmp_path)
        wanted = {dg.AssetKey(["landing", "onestop"]), dg.AssetKey(["canonical", "dossiers"])}
        assets = [a for a in [*landing_assets, *canonical_assets] if set(a.keys) & wanted]
        checks = [c for c in asset_checks if any(k.asset_key == dg.AssetKey(["canonical", "dossiers"])
                                                   for k in c.check_keys)]
        lake = HubLake(home=str(tmp_path / "home"))
        result = dg.materialize([*assets, *checks], resources={"lake": lake})
        assert result.success
        evaluations = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
        assert evaluations and all(evaluations.values()), evaluations
        assert "identifiers_valid" in evaluations
        landed = next(e.event_specific_data.materialization for e in result.get_asset_materialization_events()
                      if e.event_specific_data.materialization.asset_key == dg.AssetKey(["landing", "onestop"]))
        assert landed.metadata["rows"].value == 2  # and the cursor is shown without its key set:
        assert landed.metadata["cursor"].value == {"q1": {"hwm": T0.isoformat(timespec="microseconds"),
                                                          "dossiers": 2, "pass_after": None}}
        database.delete(code(2))
        assert dg.materialize([*assets, *checks], resources={"lake": lake}).success
        table = by_code(_table(lake))
        assert table["q1", code(2)]["deleted"] and not table["q1", code(1)]["deleted"]


def _table(lake) -> pa.Table:
    import duckdb

    with duckdb.connect() as con:
        return con.sql(f"SELECT * FROM {lake.table('dossiers').relation()}").to_arrow_table()
