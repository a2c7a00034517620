"""The civil-status connector against real sandboxes: a full extract is the registry, `hub check` says what
is wrong in one line, every fault and a kill -9 still end in exactly the registry's records, a second run
fetches only what changed, a page that never parses fails the run without committing it, and refused
records land in quarantine with their reason and position."""

from __future__ import annotations

import json
import re
import socket
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from connectors.civil_status import day_number, moment_ms, presented_id_problem, time_ms
from sandbox.civil_status import day_start
from sandbox.faults import RECORD_FAULTS, RESPONSE_FAULTS, FaultPlan
from schemas.canonical import QUARANTINE_SCHEMA
from schemas.canonical.civil_events import (MODULE_FIELDS, MODULES, PLACE_FIELDS, PLACE_PARTS, SCHEMA, TYPED,
                                            WIRE_TO_COLUMN)
from schemas.timefmt import VN_TZ
from tests.conftest import RunningSandbox
from tests.extract_helpers import HUB, extract_env, extract_killed_then_resumed, run_extract_cli

pytestmark = pytest.mark.timeout(300)

MOMENT = "%d/%m/%Y %H:%M:%S"
REQUEST_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
#: Knobs every test sets: no client pacing (the sandbox's limit is high) and short back-off.
FAST = {"HUB_CIVIL_RATE_LIMIT": "0", "HUB_CIVIL_BACKOFF_INITIAL": "0.01", "HUB_CIVIL_BACKOFF_MAX": "2"}


# -- helpers --------------------------------------------------------------------------------------

def env_for(sb: RunningSandbox, home: Path, **extra: str) -> dict[str, str]:
    return extract_env(sb.env, home, **{**FAST, **extra})


def since_days_before_as_of(sb: RunningSandbox, days: int) -> date:
    return datetime.fromtimestamp(sb.sandbox.residents.as_of, VN_TZ).date() - timedelta(days=days)


def registry_versions(sb: RunningSandbox, since: date | None = None) -> dict[tuple[str, int], datetime]:
    """(module, id) → ngayCapNhat now, for every record the ground truth names (changed since ``since``)."""
    truth = sb.sandbox.truth.record_table()
    civil = truth.filter(pc.equal(truth["system"], "civil"))
    keys = set(zip(civil["dataset"].to_pylist(), map(int, civil["record_key"].to_pylist())))
    registry = sb.sandbox.civil.registry
    assert keys == {(m, i) for m in MODULES for i in registry.ids(m)}
    out = {}
    for module, record_id in keys:
        served = registry.render(module, registry.row(module, record_id))["ngayCapNhat"]
        moment = datetime.strptime(served, MOMENT).replace(tzinfo=VN_TZ)
        if since is None or moment.date() >= since:
            out[(module, record_id)] = moment
    return out


def extracted_versions(table: pa.Table) -> dict[tuple[str, int], datetime]:
    rows = zip(table["module"].to_pylist(), table["record_id"].to_pylist(), table["updated_at"].to_pylist())
    versions = {(m, i): at for m, i, at in rows}
    assert len(versions) == table.num_rows  # one row per key
    return versions


def extract(sb: RunningSandbox, out: Path, **extra: str) -> tuple[pa.Table, pa.Table]:
    result = run_extract_cli("civil", out, env_for(sb, out.parent / "home", **extra))
    assert result.returncode == 0, result.stderr
    return pq.read_table(out / "civil_events.parquet"), pq.read_table(out / "quarantine.parquet")


def count_calls(monkeypatch: pytest.MonkeyPatch, sb: RunningSandbox) -> list[int]:
    """Counts the registry's API calls (the token endpoint aside) on the server side."""
    runtime = sb.sandbox.runtimes["civil"]
    original, calls = runtime.draw, [0]

    async def counted(applicable=None):
        calls[0] += 1
        return await original(applicable)

    monkeypatch.setattr(runtime, "draw", counted)
    return calls


def hub_check(env: dict[str, str]) -> tuple[int, str]:
    import subprocess

    result = subprocess.run([HUB, "check", "civil"], env=env, capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout + result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- wire values ----------------------------------------------------------------------------------

def test_dates_are_read_strictly() -> None:
    assert day_number("01/01/1970") == 0 and day_number("29/02/2024") == 19_782
    assert day_number("31/02/2025") is None and day_number("29/02/2025") is None and day_number("2025-02-01") is None
    assert moment_ms("01/01/1970 07:00:01") == 1_000
    assert moment_ms("01/01/2025 24:00:00") is None and moment_ms("30/02/2025 10:00:00") is None
    assert time_ms("23:59") == 86_340_000 and time_ms("24:10") is None


@pytest.mark.parametrize(("number", "kind", "birth", "gender", "problem"), [
    ("031090123456", 1, date(1990, 5, 1), 1, None),
    ("031090123456", 1, date(1991, 5, 1), 1, "encodes birth year 1990"),
    ("031190123456", None, date(1990, 5, 1), 1, "does not match gender"),
    ("123456789", None, None, None, "old 9-digit CMND"),
    ("123456789", 2, None, None, None),
    ("12345678", 2, None, None, "not 9 digits"),
    ("B1234567", 3, None, None, None),
    ("931090123456", 1, None, None, "not a province code"),
])
def test_presented_ids_are_judged_by_their_declared_kind(number, kind, birth, gender, problem) -> None:
    days = None if birth is None else (birth - date(1970, 1, 1)).days
    found = presented_id_problem(number, kind, days, gender)
    assert (found is None) if problem is None else (problem in found)


# -- a full extract -------------------------------------------------------------------------------

def expected_cell(value: Any, column: str) -> Any:
    """The canonical value of one wire value, by the column's type (a small oracle of the mapping)."""
    kind = TYPED.get(column, pa.string())
    if value in (None, ""):
        return None
    if kind == pa.date32():
        return datetime.strptime(value, "%d/%m/%Y").date()
    if kind == pa.int8() or kind == pa.int64():
        return int(value)
    if column == "updated_at":
        return datetime.strptime(value, MOMENT).replace(tzinfo=VN_TZ)
    if column == "death_time":
        return datetime.strptime(value, "%H:%M").time()
    return value


def test_full_extract_is_exactly_the_registry(clean_sandbox: RunningSandbox, tmp_path: Path) -> None:
    table, quarantine = extract(clean_sandbox, tmp_path / "out")
    assert table.schema.equals(SCHEMA) and quarantine.schema.equals(QUARANTINE_SCHEMA)
    assert extracted_versions(table) == registry_versions(clean_sandbox)
    assert quarantine.num_rows == 0
    registry = clean_sandbox.sandbox.civil.registry
    rows = {(r["module"], r["record_id"]): r for r in table.to_pylist()}
    for (module, record_id), row in rows.items():
        served = registry.render(module, registry.row(module, record_id))
        for wire in MODULE_FIELDS[module]:
            column = WIRE_TO_COLUMN[wire]
            if wire in PLACE_FIELDS:
                for part, suffix in PLACE_PARTS.items():
                    assert row[f"{column}_{suffix}"] == (served[wire][part] or None), (wire, part)
            else:
                assert row[column] == expected_cell(served[wire], column), (module, record_id, wire)
        assert row["source_system"] == "civil" and re.fullmatch(REQUEST_ID, row["request_id"])
        assert re.fullmatch(r"[0-9a-f]{64}", row["payload_sha256"])
    assert all(rows[k]["child_name"] is None and rows[k]["husband_name"] is None for k in rows if k[0] == "KT")


def test_mistyped_ids_of_people_are_kept_and_described(sandbox_factory, tmp_path: Path) -> None:
    """Reconciliation must see a mistyped or old-CMND ID: the record stays, ``issues`` says what is odd."""
    faults = FaultPlan(data={"id_typo": 0.3, "id_swap": 0.3, "id_cmnd_instead": 0.3})
    with sandbox_factory(residents=1_000, seed=4, faults=faults, rate_limit=10_000) as sb:
        table, quarantine = extract(sb, tmp_path / "out")
        assert extracted_versions(table) == registry_versions(sb) and quarantine.num_rows == 0
        anomalies = sb.sandbox.truth.anomaly_table().to_pylist()
    rows = {(r["module"], str(r["record_id"])): r for r in table.to_pylist()}
    garbled = [a for a in anomalies if a["system"] == "civil" and a["anomaly"] in ("id_typo", "id_swap", "id_cmnd_instead")]
    assert len(garbled) > 20
    for anomaly in garbled:  # kept verbatim, whatever is wrong with it
        assert rows[(anomaly["dataset"], anomaly["record_key"])][WIRE_TO_COLUMN[anomaly["field"]]] == anomaly["served_value"]
    described = [a for a in garbled if a["field"] in (rows[(a["dataset"], a["record_key"])]["issues"] or "")]
    cmnd_where_an_id_belongs = [a for a in garbled if a["anomaly"] == "id_cmnd_instead" and "SoDDCN" in a["field"]]
    assert cmnd_where_an_id_belongs and all(a in described for a in cmnd_where_an_id_belongs)
    # a changed serial digit still looks like a plausible ID (there is no check digit); other digits show
    assert {a["anomaly"] for a in described} == {"id_typo", "id_swap", "id_cmnd_instead"}


# -- hub check ------------------------------------------------------------------------------------

def test_check_says_in_one_line_what_works_or_what_not(clean_sandbox: RunningSandbox, tmp_path: Path) -> None:
    env = env_for(clean_sandbox, tmp_path)
    cases = [
        ({}, 0, r"^civil: OK - .*token issued.*danhMuc 5"),
        ({"HUB_CIVIL_CLIENT_SECRET": "not-the-secret"}, 1,
         r"^civil: FAILED - credentials refused: .*/token answered HTTP 401 .*HUB_CIVIL_CLIENT_SECRET"),
        ({"HUB_CIVIL_URL": f"http://127.0.0.1:{free_port()}/civil"}, 1,
         r"^civil: FAILED - unreachable: cannot connect to http://127\.0\.0\.1:\d+/civil \(Connection refused\)"),
        ({"HUB_CIVIL_URL": clean_sandbox.base_url + "/nowhere"}, 1,
         r"^civil: FAILED - wrong base URL\? POST .*/nowhere/token answered HTTP 404.*HUB_CIVIL_URL"),
    ]
    for change, code, pattern in cases:
        started = time.monotonic()
        returncode, output = hub_check({**env, **change})
        assert returncode == code and output.count("\n") == 1 and re.search(pattern, output), output
        assert time.monotonic() - started < 20


# -- exactly once ---------------------------------------------------------------------------------

def test_exactly_once_under_every_fault(sandbox_factory, tmp_path: Path) -> None:
    plan = FaultPlan.uniform(0.03, seed=13, latency_ms=5)
    plan.rates["civil"].update(duplicate_record=0.1, concurrent_update=0.1)
    with sandbox_factory(residents=3_000, seed=5, faults=plan, rate_limit=10_000) as sb:
        since = since_days_before_as_of(sb, 120)  # every injected 429 costs a second: keep the calls few
        table, quarantine = extract(sb, tmp_path / "out", HUB_CIVIL_SINCE=since.isoformat(), HUB_CIVIL_PAGE_SIZE="2",
                                    HUB_CIVIL_BATCH_SIZE="1", HUB_CIVIL_MAX_ATTEMPTS="12", HUB_CIVIL_WORKERS="8")
        assert extracted_versions(table) == registry_versions(sb, since)
        assert quarantine.num_rows == 0
        counts = sb.sandbox.runtimes["civil"].faults.counts
        assert all(counts.get(fault, 0) > 0 for fault in (*RESPONSE_FAULTS, *RECORD_FAULTS)), counts
        moved = sum(len(index.live) for index in sb.sandbox.civil.registry.index.values())
        as_of = since_days_before_as_of(sb, 0)
        assert moved > 0 and moved == sum(1 for at in extracted_versions(table).values() if at.date() > as_of)


def test_rate_limits_are_honoured(sandbox_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client paces itself under the server's limit, and waits out a 429's Retry-After."""
    plan = FaultPlan(seed=2, rates={"civil": {"rate_limit": 0.04}})
    with sandbox_factory(residents=1_000, seed=3, faults=plan, rate_limit=40) as sb:
        limiter = sb.sandbox.runtimes["civil"].limiter
        refused, acquire = [], limiter.acquire
        monkeypatch.setattr(limiter, "acquire", lambda client: refused.append(acquire(client)) or refused[-1])
        since = since_days_before_as_of(sb, 20)
        started = time.monotonic()
        table, _ = extract(sb, tmp_path / "out", HUB_CIVIL_SINCE=since.isoformat(), HUB_CIVIL_RATE_LIMIT="30",
                           HUB_CIVIL_WORKERS="1")
        took = time.monotonic() - started
        assert extracted_versions(table) == registry_versions(sb, since)
    injected = sb.sandbox.runtimes["civil"].faults.counts.get("rate_limit", 0)
    assert len(refused) > 50 and not any(refused)  # never beyond the server's limit
    assert injected >= 1 and took >= injected * 1.0  # each injected 429 says Retry-After: 1


def test_killed_at_random_instants_then_resumed(sandbox_factory, tmp_path: Path) -> None:
    plan = FaultPlan(seed=5, rates={"civil": {"duplicate_record": 0.1, "concurrent_update": 0.1, "http_503": 0.02,
                                              "truncate": 0.02}})
    with sandbox_factory(residents=3_000, seed=6, faults=plan, rate_limit=10_000) as sb:
        env = env_for(sb, tmp_path / "home", HUB_CIVIL_PAGE_SIZE="1", HUB_CIVIL_BATCH_SIZE="2")
        table, kills = extract_killed_then_resumed("civil", tmp_path / "out", env, seed=21, kill_window_s=(1.0, 3.0))
        assert kills >= 1
        assert extracted_versions(table) == registry_versions(sb)
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert set(state["cursor"]["modules"]) == set(MODULES)


def test_a_second_run_fetches_only_what_changed(sandbox_factory, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    with sandbox_factory(residents=1_000, seed=8, rate_limit=10_000) as sb:
        out = tmp_path / "out"
        first, _ = extract(sb, out)
        assert extracted_versions(first) == registry_versions(sb)
        registry, rng = sb.sandbox.civil.registry, np.random.default_rng(1)
        today = day_start(int(time.time()))
        moved = [registry.touch_listed(module, today, 0, rng) for module in ("KS", "KT", "KT")]
        assert all(row is not None for row in moved)
        calls = count_calls(monkeypatch, sb)
        env = env_for(sb, tmp_path / "home")
        second = run_extract_cli("civil", out, env)
        assert second.returncode == 0, second.stderr
        assert "3 rows fetched" in second.stdout
        assert calls[0] == 2 * 3 + 2  # yesterday's and today's lists of each module, one fetch per module
        table = pq.read_table(out / "civil_events.parquet")
        assert extracted_versions(table) == registry_versions(sb)
        calls[0] = 0
        third = run_extract_cli("civil", out, env)
        assert third.returncode == 0 and "0 rows fetched" in third.stdout and calls[0] == 6


# -- failures -------------------------------------------------------------------------------------

def test_a_page_that_never_parses_fails_the_run_naming_the_exchange(sandbox_factory, tmp_path: Path) -> None:
    plan = FaultPlan(seed=1, rates={"civil": {"malformed": 1.0}})
    with sandbox_factory(residents=1_000, seed=3, faults=plan, rate_limit=10_000) as sb:
        out = tmp_path / "out"
        result = run_extract_cli("civil", out, env_for(sb, tmp_path / "home", HUB_CIVIL_MAX_ATTEMPTS="3"))
    assert result.returncode == 1
    assert re.search(rf"civil dsHoSoDangKy \(request {REQUEST_ID}\): body is not valid JSON.*gave up after 3 attempts",
                     result.stderr), result.stderr
    state = out / "state.json"
    assert not state.exists() or json.loads(state.read_text())["parts"] == []
    assert not list((out / "parts").glob("*"))


def test_a_failed_page_commits_nothing_of_its_day_and_the_rerun_completes(sandbox_factory, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with sandbox_factory(residents=1_000, seed=3, rate_limit=10_000) as sb:
        registry = sb.sandbox.civil.registry
        days = sorted({day_start(int(registry.tables["KT"].upd[row])) for row in range(len(registry.ids("KT")))})
        broken_day = days[len(days) // 2]
        broken_rows = set(registry.day("KT", broken_day))
        entries = registry.entries
        monkeypatch.setattr(registry, "entries", lambda module, rows: {"damaged": True}
                            if module == "KT" and broken_rows & set(rows) else entries(module, rows))
        out, env = tmp_path / "out", env_for(sb, tmp_path / "home", HUB_CIVIL_MAX_ATTEMPTS="2")
        failed = run_extract_cli("civil", out, env)
        assert failed.returncode == 1
        assert re.search(rf"civil dsHoSoDangKy \(request {REQUEST_ID}\): dsHoSoDangKy data lacks", failed.stderr)
        committed = committed_records(out)
        kt = committed.filter(pc.equal(committed["module"], "KT"))
        broken_start = datetime.fromtimestamp(broken_day, VN_TZ)
        assert kt.num_rows > 0 and max(kt["updated_at"].to_pylist()) < broken_start
        assert set(committed["module"].to_pylist()) == {"KS", "KT"}  # KH comes after KT: not reached
        monkeypatch.setattr(registry, "entries", entries)
        table, _ = extract(sb, out)
        assert extracted_versions(table) == registry_versions(sb)


def committed_records(out: Path) -> pa.Table:
    parts = json.loads((out / "state.json").read_text())["parts"]
    tables = [pq.read_table(out / "parts" / p) for p in parts if p.endswith(".records.parquet")]
    return pa.concat_tables(tables)


# -- quarantine -----------------------------------------------------------------------------------

def damage(monkeypatch: pytest.MonkeyPatch, sb: RunningSandbox,
           changes: dict[tuple[str, int], Callable[[dict[str, Any]], None]]) -> None:
    """Serve the records at (module, row) changed by ``changes`` (render is what every operation serves)."""
    registry = sb.sandbox.civil.registry
    render = registry.render

    def damaged(module: str, row: int) -> dict[str, Any]:
        record = render(module, row)
        if (module, row) in changes:
            changes[(module, row)](record)
        return record

    monkeypatch.setattr(registry, "render", damaged)
    registry._cache.clear()


def list_position(sb: RunningSandbox, module: str, row: int) -> str:
    registry = sb.sandbox.civil.registry
    moment = int(registry.tables[module].upd[row])
    listed = registry.day(module, day_start(moment))
    day = datetime.fromtimestamp(moment, VN_TZ).strftime("%d/%m/%Y")
    return f"module {module}, day {day}, page 1, index {listed.index(row)}, id {int(registry.tables[module].ids[row])}"


def test_refused_records_carry_reason_and_position(sandbox_factory, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with sandbox_factory(residents=1_000, seed=3, rate_limit=10_000) as sb:
        registry = sb.sandbox.civil.registry
        ids = {m: registry.tables[m].ids for m in MODULES}
        bad_day, no_id, bad_own_id, odd_parent, odd_deceased = ("KS", 0), ("KT", 1), ("KS", 2), ("KS", 3), ("KT", 4)
        damage(monkeypatch, sb, {
            bad_day: lambda r: r.update(ngayDangKy="31/02/2025"),
            no_id: lambda r: r.pop("id"),
            bad_own_id: lambda r: r.update(soDinhDanh="999" + r["soDinhDanh"][3:]),
            odd_parent: lambda r: r.update(meSoDDCN="12345", meNgaySinh="30/02/1990"),
            odd_deceased: lambda r: r.update(nktLoaiGiayToTuyThan="1", nktSoGiayToTuyThan="9310" + "1" * 8),
        })
        table, quarantine = extract(sb, tmp_path / "out")
        expected = registry_versions(sb)
        positions = {key: list_position(sb, *key) for key in (bad_day, no_id, bad_own_id)}
    refused = {(m, int(ids[m][row])) for m, row in (bad_day, no_id, bad_own_id)}
    assert extracted_versions(table) == {k: v for k, v in expected.items() if k not in refused}
    rows = {r["record_key"]: r for r in quarantine.to_pylist()}
    assert set(rows) == {f"{m}:{i}" for m, i in refused}
    reasons = {bad_day: r"^ngayDangKy: '31/02/2025' is not a date dd/MM/yyyy$", no_id: r"^id: missing$",
               bad_own_id: r"^soDinhDanh: personal ID 999\d{9}: province part 999 is not a province code$"}
    for (module, row), reason in reasons.items():
        got = rows[f"{module}:{int(ids[module][row])}"]
        assert re.search(reason, got["reason"]), got
        assert got["position"] == positions[(module, row)]
        assert got["source_system"] == "civil" and got["dataset"] == "civil_events"
        assert re.fullmatch(REQUEST_ID, got["request_id"]) and got["fetched_at"] is not None
        assert got["operation"] == ("traHoSo" if (module, row) == no_id else "traDanhSachHoSo")
        assert isinstance(orjson.loads(got["raw"]), dict)
    kept = {(r["module"], r["record_id"]): r for r in table.to_pylist()}
    parent = kept[("KS", int(ids["KS"][odd_parent[1]]))]
    assert parent["mother_id_number"] == "12345" and parent["mother_birth_date"] is None
    assert "meSoDDCN: personal ID '12345' is not 12 digits" in parent["issues"]
    assert "meNgaySinh: '30/02/1990' is not a date dd/MM/yyyy" in parent["issues"]
    deceased = kept[("KT", int(ids["KT"][odd_deceased[1]]))]
    assert deceased["deceased_id_number"] == "931011111111"
    assert "nktSoGiayToTuyThan: personal ID 931011111111: province part 931 is not a province code" in deceased["issues"]
