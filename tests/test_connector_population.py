"""The population connector against running sandboxes: complete, exactly once, resumable, honest errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from connectors.errors import ConnectorError, MalformedResponse, PermanentError
from connectors.extract import run_extract
from connectors.population import PopulationConnector, parse_soap
from connectors.registry import build_connector
from hub.config import Settings
from sandbox.faults import FaultPlan
from schemas.canonical import citizens
from tests.extract_helpers import extract_env, extract_killed_then_resumed, run_extract_cli

pytestmark = pytest.mark.timeout(600)


def connector(env: dict[str, str], **knobs: str) -> PopulationConnector:
    merged = {**env, "HUB_POPULATION_RATE_LIMIT": "0", "HUB_POPULATION_BACKOFF_INITIAL": "0.01",
              "HUB_POPULATION_BACKOFF_MAX": "0.05", **knobs}
    return build_connector("population", Settings.from_env(merged), merged)


def row_of(table, personal_id: str) -> dict:
    return table.filter(pc.equal(table["personal_id"], personal_id)).to_pylist()[0]


def expected_ids(sandbox) -> set[str]:
    r = sandbox.residents
    return {r.id_text(p) for p in range(r.n)}


def test_full_extract_is_the_registry(clean_sandbox, tmp_path: Path):
    result = run_extract(connector(clean_sandbox.env, HUB_POPULATION_PAGE_SIZE="300"), tmp_path)
    table = pq.read_table(result.dataset_path)
    assert table.schema.equals(citizens.SCHEMA, check_metadata=False)
    assert set(table["personal_id"].to_pylist()) == expected_ids(clean_sandbox.sandbox)
    assert table.num_rows == result.rows == clean_sandbox.sandbox.residents.n
    registry = clean_sandbox.sandbox.population.registry
    pid = 17
    row = row_of(table, registry.r.id_text(pid))
    assert (row["family_name"], row["middle_name"], row["given_name"]) == registry.served_name(pid)
    assert row["source_system"] == "population" and len(row["payload_sha256"]) == 64 and row["request_id"]


def test_incremental_run_fetches_only_what_changed(sandbox_factory, tmp_path: Path):
    with sandbox_factory(residents=1_500, seed=21, rate_limit=10_000) as sb:
        first = run_extract(connector(sb.env), tmp_path)
        assert first.fetched == 1_500
        registry = sb.sandbox.population.registry
        for pid in (3, 99, 1_200):
            registry.touch(pid)
        second = run_extract(connector(sb.env), tmp_path)
        assert second.fetched == 3 and second.rows == 1_500
        table = pq.read_table(second.dataset_path)
        touched = row_of(table, registry.r.id_text(99))
        assert int(touched["updated_at"].timestamp()) == registry.updated(99)


def test_exactly_once_under_every_fault(sandbox_factory, tmp_path: Path):
    plan = FaultPlan.uniform(0.03, seed=9, latency_ms=5)
    plan.rates["population"].update(duplicate_record=0.1, concurrent_update=0.1)
    with sandbox_factory(residents=3_000, seed=13, faults=plan, rate_limit=40) as sb:
        c = connector(sb.env, HUB_POPULATION_PAGE_SIZE="200", HUB_POPULATION_RATE_LIMIT="30",
                      HUB_POPULATION_MAX_ATTEMPTS="30")
        result = run_extract(c, tmp_path)
        injector = sb.sandbox.runtimes["population"].faults
        assert sum(injector.counts.values()) >= 5 and c.transport.retries > 0
        table = pq.read_table(result.dataset_path)
        ids = table["personal_id"].to_pylist()
        assert len(ids) == len(set(ids)) and set(ids) == expected_ids(sb.sandbox)
        registry = sb.sandbox.population.registry
        for pid in registry.live_updated:  # records changed mid-run are kept in their latest version
            row = row_of(table, registry.r.id_text(pid))
            assert int(row["updated_at"].timestamp()) == registry.updated(pid)


def test_killed_and_resumed_extract_is_exact(sandbox_factory, tmp_path: Path):
    with sandbox_factory(residents=20_000, seed=5, rate_limit=10_000) as sb:
        env = extract_env(sb.env, tmp_path / "home", HUB_POPULATION_PAGE_SIZE="200", HUB_POPULATION_RATE_LIMIT="30")
        table, kills = extract_killed_then_resumed("population", tmp_path / "out", env, seed=3,
                                                   kill_window_s=(1.0, 2.5))
        assert kills >= 1
        ids = table["personal_id"].to_pylist()
        assert len(ids) == len(set(ids)) and set(ids) == expected_ids(sb.sandbox)


def test_malformed_pages_fail_the_run_and_commit_nothing_of_them(sandbox_factory, tmp_path: Path):
    plan = FaultPlan(seed=1, rates={"population": {"malformed": 1.0}})
    with sandbox_factory(residents=1_000, seed=2, faults=plan, rate_limit=10_000) as sb:
        env = extract_env(sb.env, tmp_path / "home", HUB_POPULATION_MAX_ATTEMPTS="3",
                          HUB_POPULATION_BACKOFF_INITIAL="0.01")
        result = run_extract_cli("population", tmp_path / "out", env)
        assert result.returncode == 1
        assert "population DongBoCongDan (request " in result.stderr and "not well-formed" in result.stderr
        state = tmp_path / "out" / "state.json"
        assert not state.exists() or json.loads(state.read_text())["parts"] == []
        assert not list((tmp_path / "out" / "parts").glob("*.parquet"))


def test_invalid_records_go_to_quarantine_with_reason_and_position(sandbox_factory, tmp_path: Path):
    with sandbox_factory(residents=1_000, seed=8, rate_limit=10_000) as sb:
        registry = sb.sandbox.population.registry
        bad_date, bad_id = registry.r.id_text(10), registry.r.id_text(20)
        original = registry.render

        def garbled(pids):
            out = []
            for piece in original(pids):
                if piece.startswith(f"<ns1:CongDan><ns1:SoDinhDanh>{bad_date}<"):
                    day = piece.split("<ns1:NgayThangNam>")[1][:8]
                    piece = piece.replace(f"<ns1:NgayThangNam>{day}", f"<ns1:NgayThangNam>{day[:4]}0231")
                if piece.startswith(f"<ns1:CongDan><ns1:SoDinhDanh>{bad_id}<"):
                    piece = piece.replace(f"<ns1:CongDan><ns1:SoDinhDanh>{bad_id}", "<ns1:CongDan><ns1:SoDinhDanh>12AB", 1)
                out.append(piece)
            return out

        registry.render = garbled
        result = run_extract(connector(sb.env, HUB_POPULATION_PAGE_SIZE="100"), tmp_path)
        assert result.quarantined == 2 and result.rows == 998
        rejected = {row["record_key"]: row for row in pq.read_table(result.quarantine_path).to_pylist()}
        assert "NgayThangNamSinh/NgayThangNam" in rejected[bad_date]["reason"] and "0231" in rejected[bad_date]["reason"]
        assert "not 12 digits" in rejected["12AB"]["reason"]
        for row in rejected.values():
            assert row["position"].startswith("page ") and ", record " in row["position"]
            assert row["raw"].startswith("<ns1:CongDan") and row["operation"] == "DongBoCongDan"


def test_lookup_037_and_verify_033(clean_sandbox):
    c = connector(clean_sandbox.env)
    r = clean_sandbox.sandbox.residents
    pid = int(np.flatnonzero(r.cmnd >= 0)[3])
    name = r.full_name(pid)
    birth = str(pq_day(r.birth[pid]))
    row = c.lookup(personal_id=r.id_text(pid), full_name=name.upper(), birth=birth, dossier="000.00.13.H31-261101-0001")
    assert row is not None and row["personal_id"] == r.id_text(pid)
    assert c.lookup(cmnd=r.cmnd_text(pid), full_name=name, birth=birth[:4], procedure="1.000894") is not None
    assert c.lookup(personal_id=r.id_text(pid), full_name="Ai Đó", birth=birth, procedure="1.000894") is None
    with pytest.raises(ValueError, match="purpose"):
        c.lookup(personal_id=r.id_text(pid), full_name=name, birth=birth)
    assert c.verify(personal_id=r.id_text(pid), full_name=name) is True
    assert c.verify(personal_id=r.id_text(pid), full_name=name, birth="19000101") is False


def pq_day(epoch) -> str:
    import time
    return time.strftime("%Y%m%d", time.gmtime(int(epoch) + 7 * 3600))


def test_check_reports_in_one_line(clean_sandbox):
    assert connector(clean_sandbox.env).check().ok
    wrong = connector({**clean_sandbox.env, "HUB_POPULATION_PASSWORD": "wrong"}).check()
    assert not wrong.ok and "credentials refused" in wrong.message
    agency = connector({**clean_sandbox.env, "HUB_AGENCY_CODE": "000.00.00.H01"}).check()
    assert not agency.ok and "106" in agency.message
    gone = connector({**clean_sandbox.env, "HUB_POPULATION_URL": "http://127.0.0.1:9"}).check()
    assert not gone.ok and "cannot reach" in gone.message and "\n" not in gone.message


@pytest.mark.parametrize("payload, error", [
    (b'<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><x>&b;</x>', PermanentError),
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>', PermanentError),
    (b"<soapenv:Envelope xmlns:soapenv='http://schemas.xmlsoap.org/soap/envelope/'><soapenv:Body>", MalformedResponse),
])
def test_answers_with_dtds_or_broken_xml_are_refused(payload, error):
    with pytest.raises(error):
        parse_soap(payload)


def test_configuration_errors_name_the_variable(clean_sandbox):
    with pytest.raises(ValueError, match="HUB_POPULATION_PAGE_SIZE"):
        connector(clean_sandbox.env, HUB_POPULATION_PAGE_SIZE="5000")
    with pytest.raises(ConnectorError):
        connector({**clean_sandbox.env, "HUB_POPULATION_URL": "http://127.0.0.1:9"},
                  HUB_POPULATION_MAX_ATTEMPTS="1").lookup(personal_id="031090000001", full_name="A", birth="1990",
                                                          procedure="1.000894")
