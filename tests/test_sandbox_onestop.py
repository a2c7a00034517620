"""The sandbox's one-stop-shop systems (national-systems.md §6): schema, content, ground truth, changes."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from hub.cli import app
from hub.config import parse_onestop_urls
from sandbox.app import Sandbox, SandboxConfig
from sandbox.business import EnterpriseRegistry
from sandbox.ground_truth import GroundTruth
from sandbox.onestop import (
    HO_SO, MARIADB_SERVER, PG_SERVER, QUA_TRINH_XU_LY, OneStopConfig, OneStopError, OneStopSystems, epoch_of,
    local_time, parse_system)
from sandbox.onestop_dossiers import HO_SO_COLUMNS, STEP_COLUMNS, Shares
from sandbox.province import generate_residents

SEED = 5
AS_OF = datetime(2026, 11, 1, 12, 30)  # naive local time, as the databases store it
ART_19 = re.compile(r"(\d{3}\.\d{2}\.\d{2}\.H31)-(\d{6})-(\d{4})")
ALLOWED = {  # status -> the statuses a dossier may go to next
    "MOI": {"MOI", "TIEP_NHAN", "TU_CHOI"}, "TIEP_NHAN": {"DANG_XU_LY"},
    "DANG_XU_LY": {"BO_SUNG", "NVTC", "RUT", "DUNG", "DA_XU_LY"}, "BO_SUNG": {"DANG_XU_LY", "RUT"},
    "NVTC": {"DANG_XU_LY"}, "DA_XU_LY": {"DA_TRA"},
}


@pytest.fixture(scope="module")
def province():
    from schemas.timefmt import VN_TZ

    residents = generate_residents(2_000, seed=SEED, as_of=AS_OF.replace(tzinfo=VN_TZ))
    return residents, EnterpriseRegistry(residents, GroundTruth(), SEED)


def _systems(province, systems, seed: int = SEED, **options) -> tuple[OneStopSystems, GroundTruth]:
    residents, enterprises = province
    truth = GroundTruth()
    options.setdefault("dossiers_per_month", 3_000)
    options.setdefault("months", 2)
    config = OneStopConfig(systems=tuple(systems), change_interval_s=options.pop("change_interval_s", 0), **options)
    return OneStopSystems(config, residents, enterprises, truth, seed), truth


def _scratch_url(kind: str, tmp_path: Path) -> str:
    name = f"lgsp_onestop_test_{uuid.uuid4().hex[:10]}"
    return {"sqlite": f"sqlite:///{tmp_path / (name + '.sqlite')}", "postgresql": PG_SERVER + name,
            "mariadb": MARIADB_SERVER + name}[kind]


@pytest.fixture
def opened(province, tmp_path: Path) -> Iterator[Callable[..., tuple[OneStopSystems, GroundTruth]]]:
    """Build systems on throwaway databases, open them, and drop them all afterwards."""
    made: list[OneStopSystems] = []

    def build(systems, err=None, **options):
        built, truth = _systems(province, systems, **options)
        made.append(built)
        built.open(err or io.StringIO())
        return built, truth

    yield build
    for systems in made:
        systems.drop()


def _wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail saying ``what`` did not happen within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _rows(engine: sa.Engine, table: sa.Table) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(*table.primary_key.columns))]


# ------------------------------------------------------------------------------------------ schema


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_the_schema_is_exactly_section_6_on_every_backend(kind: str, opened, tmp_path: Path):
    systems, _ = opened([("so-cong-thuong", _scratch_url(kind, tmp_path))], dossiers_per_month=600, months=1)
    system = systems.systems["so-cong-thuong"]
    assert system.engine is not None, f"{kind} server not reachable"
    inspector = sa.inspect(system.engine)
    assert sorted(inspector.get_table_names()) == ["ho_so", "qua_trinh_xu_ly"]
    assert [c["name"] for c in inspector.get_columns("ho_so")] == list(HO_SO_COLUMNS)
    assert [c["name"] for c in inspector.get_columns("qua_trinh_xu_ly")] == list(STEP_COLUMNS)
    assert inspector.get_pk_constraint("ho_so")["constrained_columns"] == ["ma_ho_so"]
    assert inspector.get_pk_constraint("qua_trinh_xu_ly")["constrained_columns"] == ["id"]
    kinds = {c["name"]: c["type"] for c in inspector.get_columns("ho_so")}
    for column in ("ngay_tiep_nhan", "ngay_hen_tra", "ngay_ket_thuc", "ngay_tra", "updated_at"):
        assert kinds[column].python_type is datetime
        assert not getattr(kinds[column], "timezone", False)  # naive local time

    # What the database holds is what was generated, times as naive local time, Vietnamese intact.
    rows = _rows(system.engine, HO_SO)
    generated = sorted(system.dossiers.ho_so)
    assert len(rows) == len(generated) == 600
    first = dict(zip(HO_SO_COLUMNS, generated[0]))
    assert rows[0]["ma_ho_so"] == first["ma_ho_so"] and rows[0]["chu_ho_so"] == first["chu_ho_so"]
    assert rows[0]["ngay_tiep_nhan"] == local_time(first["ngay_tiep_nhan"])
    assert bool(rows[0]["da_thanh_toan"]) is bool(first["da_thanh_toan"])
    assert any(r["ngay_ket_thuc"] is None for r in rows) and any(r["ngay_ket_thuc"] is not None for r in rows)
    steps = _rows(system.engine, QUA_TRINH_XU_LY)
    assert len(steps) == len(system.dossiers.steps)
    assert {r["ma_ho_so"] for r in steps} == {r["ma_ho_so"] for r in rows}

    # The hub gets a read-only account on the servers; SQLite has no accounts.
    url = systems.urls()["so-cong-thuong"]
    if kind == "sqlite":
        assert url == system.url.render_as_string(hide_password=False)
    else:
        reader = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            assert sa.make_url(url).username.endswith("_ro")
            with reader.connect() as conn:
                assert conn.execute(sa.select(sa.func.count()).select_from(HO_SO)).scalar() == 600
            with pytest.raises(sa.exc.DBAPIError), reader.begin() as conn:
                conn.execute(HO_SO.delete())
        finally:
            reader.dispose()
        assert sa.make_url(url).password not in repr(systems)


def test_the_same_rows_on_every_backend(opened, tmp_path: Path):
    name = "so-tu-phap"
    read = {}
    for kind in ("sqlite", "postgresql", "mariadb"):
        systems, _ = opened([(name, _scratch_url(kind, tmp_path))], dossiers_per_month=400, months=1)
        engine = systems.systems[name].engine
        read[kind] = ([{**r, "da_thanh_toan": bool(r["da_thanh_toan"])} for r in _rows(engine, HO_SO)],
                      _rows(engine, QUA_TRINH_XU_LY))
    assert read["sqlite"] == read["postgresql"] == read["mariadb"]


def test_reopening_recreates_the_same_data_and_drop_removes_it(opened, tmp_path: Path):
    url = _scratch_url("postgresql", tmp_path)
    systems, _ = opened([("so-tu-phap", url)], dossiers_per_month=300, months=1)
    engine = systems.systems["so-tu-phap"].engine
    before = _rows(engine, HO_SO), _rows(engine, QUA_TRINH_XU_LY)
    systems.advance(30, seed=1)
    assert (_rows(engine, HO_SO), _rows(engine, QUA_TRINH_XU_LY)) != before
    systems.open(io.StringIO())
    engine = systems.systems["so-tu-phap"].engine
    assert (_rows(engine, HO_SO), _rows(engine, QUA_TRINH_XU_LY)) == before
    systems.drop()
    admin = sa.create_engine(PG_SERVER + "postgres", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        database = sa.make_url(url).database
        assert conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}).first() is None
        role = conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": database + "_ro"}).first()
        assert role is None
    admin.dispose()


def test_an_unreachable_server_is_reported_once_and_left_out(opened, tmp_path: Path):
    err = io.StringIO()
    systems, _ = opened([("quan-le-chan", _scratch_url("sqlite", tmp_path)),
                         ("so-y-te", "postgresql://postgres:not-shown@127.0.0.1:1/lgsp_onestop_nowhere")],
                        dossiers_per_month=200, months=1, err=err)
    assert [s.name for s in systems.served()] == ["quan-le-chan"]
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and "so-y-te" in lines[0] and "127.0.0.1:1" in lines[0] and "serving without it" in lines[0]
    assert "not-shown" not in err.getvalue()
    assert [name for name, _ in parse_onestop_urls(systems.environment_value())] == ["quan-le-chan"]


# ------------------------------------------------------------------------------------------ content


@pytest.fixture(scope="module")
def generated(province):
    """Two systems' generated history (no database needed to check what was drawn)."""
    return _systems(province, [("quan-hong-bang", "sqlite:///unused-a.sqlite"),
                               ("so-cong-thuong", "sqlite:///unused-b.sqlite")],
                    dossiers_per_month=6_000, months=3)


def test_the_same_seed_draws_the_same_dossiers(province, generated):
    systems, _ = generated
    again, _ = _systems(province, [("quan-hong-bang", "sqlite:///x.sqlite"), ("so-cong-thuong", "sqlite:///y.sqlite")],
                        dossiers_per_month=6_000, months=3)
    other, _ = _systems(province, [("quan-hong-bang", "sqlite:///x.sqlite")], seed=SEED + 1,
                        dossiers_per_month=6_000, months=3)
    a, b = systems.systems["quan-hong-bang"], again.systems["quan-hong-bang"]
    assert a.dossiers.ho_so == b.dossiers.ho_so and a.dossiers.steps == b.dossiers.steps
    assert a.offset_s == b.offset_s
    assert other.systems["quan-hong-bang"].dossiers.ho_so != a.dossiers.ho_so
    # The district gets four times a department's share of the province's dossiers.
    assert len(a.dossiers) == 14_400 and len(systems.systems["so-cong-thuong"].dossiers) == 3_600


def test_channels_late_and_open_past_due_follow_the_configured_shares(generated):
    systems, _ = generated
    shares = Shares()
    rows = [dict(zip(HO_SO_COLUMNS, r)) for s in systems.systems.values() for r in s.dossiers.ho_so]
    as_of = epoch_of(AS_OF)
    channels = Counter(r["kenh"] for r in rows)
    assert abs(channels["TRUC_TUYEN"] / len(rows) - shares.online) < 0.015
    assert abs(channels["BUU_CHINH"] / len(rows) - shares.post) < 0.01
    resolved = [r for r in rows if r["ngay_ket_thuc"] >= 0 and r["trang_thai"] in ("DA_XU_LY", "DA_TRA")]
    late = sum(r["ngay_ket_thuc"] > r["ngay_hen_tra"] for r in resolved)
    assert abs(late / len(resolved) - shares.late) < 0.03
    open_past_due = [r for r in rows if r["ngay_ket_thuc"] < 0 and r["trang_thai"] not in ("TU_CHOI", "RUT", "DUNG")
                     and r["ngay_hen_tra"] < as_of]
    assert shares.stalled * 0.5 < len(open_past_due) / len(rows) < shares.stalled + shares.late
    assert {r["trang_thai"] for r in rows} >= {"TIEP_NHAN", "DANG_XU_LY", "BO_SUNG", "DA_XU_LY", "DA_TRA", "TU_CHOI",
                                              "RUT", "DUNG"}


def test_every_dossier_follows_the_lifecycle(generated):
    systems, _ = generated
    as_of = epoch_of(AS_OF)
    for system in systems.systems.values():
        steps: dict[str, list[dict]] = {}
        for row in system.dossiers.steps:
            step = dict(zip(STEP_COLUMNS, row))
            steps.setdefault(step["ma_ho_so"], []).append(step)
        for row in system.dossiers.ho_so:
            d = dict(zip(HO_SO_COLUMNS, row))
            mine = steps[d["ma_ho_so"]]
            assert 2 <= len(mine) <= 8, d
            times = [s["thoi_diem"] for s in mine]
            assert times == sorted(times) and times[0] == d["ngay_tiep_nhan"] and times[-1] <= as_of
            statuses = [s["trang_thai"] for s in mine]
            assert statuses[0] == ("MOI" if d["kenh"] == "TRUC_TUYEN" else "TIEP_NHAN")
            assert all(b in ALLOWED[a] for a, b in zip(statuses, statuses[1:])), statuses
            assert statuses[-1] == d["trang_thai"] and d["updated_at"] >= times[-1]
            assert (d["ngay_tra"] >= 0) == ("DA_TRA" in statuses)
            assert (d["ngay_ket_thuc"] >= 0) == bool({"DA_XU_LY", "TU_CHOI", "RUT", "DUNG"} & set(statuses))
            procedure = next(p for p in system.procedures if p.code == d["ma_tthc"])
            assert d["ngay_hen_tra"] == d["ngay_tiep_nhan"] + procedure.days * 86_400


def test_dossier_codes_follow_article_19_except_the_recorded_malformed(generated):
    systems, truth = generated
    anomalies = truth.anomaly_table().to_pylist()
    recorded = {(a["system"], a["served_value"]): a for a in anomalies if a["field"] == "ma_ho_so"}
    assert len(recorded) >= 5
    for system in systems.systems.values():
        per_day: dict[str, list[int]] = {}
        for row in system.dossiers.ho_so:
            d = dict(zip(HO_SO_COLUMNS, row))
            code = d["ma_ho_so"]
            if (system.name, code) in recorded:
                assert not ART_19.fullmatch(code)
                code = recorded[(system.name, code)]["true_value"]
            match = ART_19.fullmatch(code)
            assert match, code
            day = local_time(d["ngay_tiep_nhan"]).strftime("%y%m%d")
            assert match.group(1) == system.agency.code102 and match.group(2) == day
            per_day.setdefault(day, []).append(int(match.group(3)))
        for numbers in per_day.values():  # NNNN counts the agency's dossiers of the day from 0001
            assert sorted(numbers) == list(range(1, len(numbers) + 1))
    served = {(s.name, r[0]) for s in systems.systems.values() for r in s.dossiers.ho_so}
    assert set(recorded) <= served


def test_applicants_are_the_provinces_people_and_enterprises_except_the_recorded_faults(province, generated):
    residents, enterprises = province
    systems, truth = generated
    by_id = {residents.id_text(p): p for p in range(residents.n)}
    by_cmnd = {residents.cmnd_text(p): p for p in range(residents.n) if residents.cmnd[p] >= 0}
    by_code = {code: e for e, code in enumerate(enterprises.codes)}
    applicants = truth.tables["dossier_applicants"].to_pylist()
    assert len(applicants) == sum(len(s.dossiers) for s in systems.systems.values())
    faults = Counter(a["fault"] for a in applicants)
    assert faults["unknown_id"] > 20 and faults["name_mismatch"] > 20 and faults["cmnd"] > 100
    served = {(s.name, r[0]): dict(zip(HO_SO_COLUMNS, r)) for s in systems.systems.values() for r in s.dossiers.ho_so}
    for a in applicants:
        d = served[(a["system"], a["ma_ho_so"])]
        assert (d["so_giay_to"], d["chu_ho_so"], d["loai_doi_tuong"]) == (a["so_giay_to"], a["chu_ho_so"],
                                                                           a["loai_doi_tuong"])
        document = d["so_giay_to"]
        if d["loai_doi_tuong"] == 2:
            eid = by_code.get(document)
            if a["fault"] == "unknown_id":
                assert eid is None and a["entity_id"] == ""
                continue
            assert a["entity_id"] == f"E{eid:07d}"
            assert (enterprises.name[eid] == d["chu_ho_so"]) == (a["fault"] != "name_mismatch")
            continue
        pid = by_cmnd.get(document) if a["fault"] == "cmnd" else by_id.get(document)
        if a["fault"] == "unknown_id":
            assert document not in by_id and a["entity_id"] == ""
            continue
        assert len(document) == (9 if a["fault"] == "cmnd" else 12)
        assert a["entity_id"] == f"P{pid:07d}"
        assert (residents.full_name(pid) == d["chu_ho_so"]) == (a["fault"] != "name_mismatch")


# ------------------------------------------------------------------------------------------ changes


def _now() -> float:
    return epoch_of(datetime(2026, 11, 2, 9, 0))


def test_advance_moves_updated_at_forward_and_adds_steps(opened, tmp_path: Path):
    systems, _ = opened([("quan-hong-bang", _scratch_url("sqlite", tmp_path))], dossiers_per_month=500, months=1,
                        clock_offsets=(("quan-hong-bang", 0),))
    engine = systems.systems["quan-hong-bang"].engine
    before = {r["ma_ho_so"]: r for r in _rows(engine, HO_SO)}
    steps_before = Counter(r["ma_ho_so"] for r in _rows(engine, QUA_TRINH_XU_LY))
    changes = systems.advance(60, seed=1, now=_now())
    kinds = Counter(c.kind for c in changes)
    assert kinds["progressed"] > 20 and kinds["received"] > 5
    after = {r["ma_ho_so"]: r for r in _rows(engine, HO_SO)}
    steps = {}
    for r in _rows(engine, QUA_TRINH_XU_LY):
        steps.setdefault(r["ma_ho_so"], []).append(r)
    moved = 0
    for change in changes:
        if change.kind == "deleted" or change.ma_ho_so not in after:
            continue
        row = after[change.ma_ho_so]
        mine = steps[change.ma_ho_so]
        assert [s["thoi_diem"] for s in mine] == sorted(s["thoi_diem"] for s in mine)
        assert row["trang_thai"] == mine[-1]["trang_thai"]
        if change.kind == "received":
            assert change.ma_ho_so not in before and len(mine) >= change.steps_added == 2
            assert ART_19.fullmatch(change.ma_ho_so).group(2) == "261102"
        elif change.ma_ho_so in before:
            assert row["updated_at"] > before[change.ma_ho_so]["updated_at"]
            assert row["updated_at"] >= change.at
            assert len(mine) > steps_before[change.ma_ho_so]
            moved += 1
    assert moved > 15
    # The same seed on the same state makes the same changes.
    twin, _ = opened([("quan-hong-bang", _scratch_url("sqlite", tmp_path))], dossiers_per_month=500, months=1,
                     clock_offsets=(("quan-hong-bang", 0),))
    assert twin.advance(60, seed=1, now=_now()) == changes


def test_every_change_moves_updated_at_forward_even_within_a_second(opened, tmp_path: Path):
    systems, _ = opened([("so-tu-phap", _scratch_url("mariadb", tmp_path))], dossiers_per_month=100, months=1)
    system = systems.systems["so-tu-phap"]
    stamps: dict[str, list[datetime]] = {}
    for seed in range(15):
        for change in systems.advance(4, seed=seed, now=_now()):  # the clock stands still
            if change.kind != "deleted":
                stamps.setdefault(change.ma_ho_so, []).append(change.at)
    assert any(len(v) > 1 for v in stamps.values())
    for code, seen in stamps.items():
        assert seen == sorted(seen) and len(set(seen)) == len(seen), code
    stored = {r["ma_ho_so"]: r["updated_at"] for r in _rows(system.engine, HO_SO)}
    for code, seen in stamps.items():
        if code in stored:
            assert stored[code] == seen[-1]


def test_deleting_a_dossier_removes_its_rows(opened, tmp_path: Path):
    systems, _ = opened([("so-cong-thuong", _scratch_url("postgresql", tmp_path))], dossiers_per_month=200, months=1)
    engine = systems.systems["so-cong-thuong"].engine
    code = _rows(engine, HO_SO)[7]["ma_ho_so"]
    assert systems.delete("so-cong-thuong", code) is True
    assert code not in {r["ma_ho_so"] for r in _rows(engine, HO_SO)}
    assert code not in {r["ma_ho_so"] for r in _rows(engine, QUA_TRINH_XU_LY)}
    assert systems.delete("so-cong-thuong", code) is False
    with pytest.raises(OneStopError, match="quan-le-chan"):
        systems.delete("quan-le-chan", code)
    # The changer deletes now and then too, both tables at once.
    deleted = [c for seed in range(40) for c in systems.advance(5, seed=seed, now=_now()) if c.kind == "deleted"]
    assert deleted
    left = {r["ma_ho_so"] for r in _rows(engine, QUA_TRINH_XU_LY)} | {r["ma_ho_so"] for r in _rows(engine, HO_SO)}
    assert not {c.ma_ho_so for c in deleted} & left


def test_each_system_stamps_its_own_clock(province, opened, tmp_path: Path):
    systems, truth = opened([("quan-hong-bang", _scratch_url("sqlite", tmp_path)),
                             ("so-tu-phap", _scratch_url("sqlite", tmp_path))], dossiers_per_month=300, months=1,
                            clock_offsets=(("quan-hong-bang", 150), ("so-tu-phap", -90)))
    recorded = {r["system"]: r["clock_offset_s"] for r in truth.tables["onestop_systems"].to_pylist()}
    assert recorded == {"quan-hong-bang": 150, "so-tu-phap": -90}
    now = _now() + 30 * 86_400  # far after every generated step, so only the clock decides
    changes = systems.advance(40, seed=3, now=now)
    offsets = {"quan-hong-bang": 150, "so-tu-phap": -90}
    for change in changes:  # a dossier changed twice in the same second moves on by a second
        assert local_time(now + offsets[change.system]) <= change.at <= local_time(now + offsets[change.system] + 5)
    for name, offset in offsets.items():
        assert local_time(now + offset) in {c.at for c in changes if c.system == name and c.kind == "progressed"}
    # Offsets not configured are drawn from the seed, within a few minutes.
    drawn, _ = _systems(province, [("quan-le-chan", "sqlite:///z.sqlite")])
    assert abs(drawn.systems["quan-le-chan"].offset_s) <= 180


def test_the_background_changer_keeps_changing_until_stopped(opened, tmp_path: Path):
    systems, _ = opened([("quan-le-chan", _scratch_url("sqlite", tmp_path))], dossiers_per_month=200, months=1,
                        change_interval_s=0.05)
    engine = systems.systems["quan-le-chan"].engine

    def latest() -> datetime:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(HO_SO.c.updated_at))).scalar()

    start = latest()
    systems.start()
    _wait_until(lambda: latest() != start, 20, "the changer made no change")
    systems.stop()
    assert systems._thread is None
    stopped = latest(), len(_rows(engine, QUA_TRINH_XU_LY))
    assert systems._stop.is_set() and (latest(), len(_rows(engine, QUA_TRINH_XU_LY))) == stopped


# ------------------------------------------------------------------------------------------ wiring


def test_the_sandbox_hands_out_urls_the_hub_config_accepts(tmp_path: Path):
    config = SandboxConfig(residents=1_000, seed=SEED, onestop=OneStopConfig(
        systems=(("quan-hong-bang", _scratch_url("sqlite", tmp_path)),
                 ("so-tu-phap", _scratch_url("postgresql", tmp_path))),
        dossiers_per_month=300, months=1, change_interval_s=0))
    sandbox = Sandbox(config)
    assert "HUB_ONESTOP_URLS" not in sandbox.environment("http://127.0.0.1:1")  # nothing open yet
    assert "dossier_applicants" not in sandbox.truth.tables  # nor drawn: a sandbox that never opens them pays nothing
    try:
        assert sandbox.onestop.open(io.StringIO()) == ["quan-hong-bang", "so-tu-phap"]
        parsed = dict(parse_onestop_urls(sandbox.environment("http://127.0.0.1:1")["HUB_ONESTOP_URLS"]))
        assert list(parsed) == ["quan-hong-bang", "so-tu-phap"]
        for name, url in parsed.items():
            engine = sa.create_engine(url.reveal(), poolclass=sa.pool.NullPool)
            with engine.connect() as conn:
                assert conn.execute(sa.select(sa.func.count()).select_from(HO_SO)).scalar() == \
                    len(sandbox.onestop.systems[name].dossiers)
            engine.dispose()
        assert {"dossier_applicants", "onestop_systems"} <= set(sandbox.truth.tables)
    finally:
        sandbox.onestop.drop()


def test_the_default_systems_and_sqlite_only(tmp_path: Path):
    config = OneStopConfig(directory=tmp_path)
    names = [name for name, _ in config.resolved()]
    assert names == ["quan-hong-bang", "so-tu-phap", "so-cong-thuong"]
    assert [sa.make_url(u).get_backend_name() for _, u in config.resolved()] == ["sqlite", "postgresql", "mysql"]
    only = OneStopConfig(directory=tmp_path, sqlite_only=True).resolved()
    assert only == [("quan-hong-bang", f"sqlite:///{tmp_path / 'quan-hong-bang.sqlite'}")]


@pytest.mark.parametrize("text, message", [
    ("so-y-te", "name=URL"),
    ("quan-tay-ho=sqlite:///x.sqlite", "unknown one-stop-shop system 'quan-tay-ho'"),
    ("so-y-te=oracle://host/db", "not 'oracle'"),
    ("so-y-te=postgresql://postgres@127.0.0.1:5432/", "must name its database"),
    ("so-y-te=sqlite://", "needs a file"),
])
def test_a_bad_system_option_says_what_is_wrong(text: str, message: str):
    with pytest.raises(OneStopError, match=re.escape(message)):
        parse_system(text)


def test_sandbox_truth_writes_the_onestop_tables(tmp_path: Path):
    result = CliRunner().invoke(app, ["sandbox", "truth", "--out", str(tmp_path / "truth"), "--residents", "1000",
                                      "--onestop-sqlite-only", "--onestop-dossiers", "600", "--onestop-months", "1"])
    assert result.exit_code == 0, result.output
    applicants = pq.read_table(tmp_path / "truth" / "dossier_applicants.parquet")
    assert applicants.num_rows == 600 and set(applicants.column("system").to_pylist()) == {"quan-hong-bang"}
    systems = pq.read_table(tmp_path / "truth" / "onestop_systems.parquet").to_pylist()
    assert [s["system"] for s in systems] == ["quan-hong-bang"] and systems[0]["agency_code102"] == "000.01.30.H31"
    bad = CliRunner().invoke(app, ["sandbox", "truth", "--out", str(tmp_path / "t2"),
                                   "--onestop", "nowhere=sqlite:///x"])
    assert bad.exit_code == 2 and "unknown one-stop-shop system 'nowhere'" in bad.output


def test_serve_fills_the_systems_keeps_them_changing_and_stops_cleanly(tmp_path: Path):
    env = {**os.environ, "HUB_HOME": str(tmp_path / "home")}
    env.pop("HUB_CONFIG", None)
    database = tmp_path / "quan-le-chan.sqlite"
    hub = str(Path(sys.executable).parent / "hub")
    server = subprocess.Popen([hub, "sandbox", "serve", "--residents", "1000", "--port", "0",
                               "--onestop", f"quan-le-chan=sqlite:///{database}", "--onestop", "so-y-te=" + PG_SERVER
                               + "lgsp_onestop_x", "--onestop-sqlite-only", "--onestop-dossiers", "900",
                               "--onestop-months", "1", "--onestop-interval", "0.1"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        runtime = tmp_path / "home" / "sandbox" / "runtime.json"
        _wait_until(lambda: runtime.exists() or server.poll() is not None, 90, "the sandbox did not start")
        assert server.poll() is None, server.stderr.read()
        printed = subprocess.run([hub, "sandbox", "env"], env=env, capture_output=True, text=True, timeout=60)
        lines = dict(line.removeprefix("export ").split("=", 1) for line in printed.stdout.splitlines())
        urls = parse_onestop_urls(lines["HUB_ONESTOP_URLS"].strip("'"))
        assert [name for name, _ in urls] == ["quan-le-chan"]  # --onestop-sqlite-only left so-y-te out
        engine = sa.create_engine(urls[0][1].reveal(), poolclass=sa.pool.NullPool)

        def latest() -> tuple[int, datetime]:
            with engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count(), sa.func.max(HO_SO.c.updated_at))).one()

        first = latest()
        assert first[0] >= 900 - 5
        _wait_until(lambda: latest() != first, 30, "the changer made no change while serving")
        engine.dispose()
        assert (tmp_path / "home" / "sandbox" / "truth" / "dossier_applicants.parquet").exists()
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    assert "onestop     quan-le-chan" in out and not runtime.exists()
