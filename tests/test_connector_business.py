"""The business-registry connector against real sandboxes over loopback: both payload variants land the
registry's enterprises exactly once, under every injected fault, across a SIGKILL, and incrementally;
what cannot be accepted is quarantined with its reason, and what fails for good names the exchange."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from connectors.business import BusinessConnector, Refusal, Window, next_cursor, parse_detail, parse_since, windows
from connectors.errors import ConnectorError, MalformedResponse, PermanentError, TransientError
from connectors.extract import run_extract
from hub.config import Settings
from sandbox.business import EnterpriseRegistry
from sandbox.faults import FaultPlan
from schemas.canonical import QUARANTINE_SCHEMA
from schemas.canonical.enterprises import SCHEMA
from tests.conftest import RunningSandbox
from tests.extract_helpers import HUB, extract_env, extract_killed_then_resumed, run_extract_cli

pytestmark = pytest.mark.timeout(300)

FAST_RETRIES = {"HUB_BUSINESS_BACKOFF_INITIAL": "0.01", "HUB_BUSINESS_BACKOFF_MAX": "2",
                "HUB_BUSINESS_MAX_ATTEMPTS": "10"}
REQUEST_ID = r"request [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


# -- helpers ------------------------------------------------------------------------------------------

def truth_codes(sb: RunningSandbox) -> set[str]:
    records = sb.sandbox.truth.record_table().to_pydict()
    return {key for system, role, key in zip(records["system"], records["role"], records["record_key"])
            if system == "business" and role == "enterprise"}


def current_amendments(registry: EnterpriseRegistry) -> dict[str, tuple[int, date | None]]:
    """What the registry says *now* (live changes included): number of changes and last amendment day."""
    out = {}
    for eid, code in enumerate(registry.codes):
        changes, day = registry.amendments(eid)
        out[code] = (changes, date(1970, 1, 1) + timedelta(days=day) if day >= 0 else None)
    return out


def landed_amendments(table: pa.Table) -> dict[str, tuple[int, date | None]]:
    rows = table.select(["enterprise_code", "number_of_changes", "last_amendment_date"]).to_pylist()
    return {r["enterprise_code"]: (r["number_of_changes"], r["last_amendment_date"]) for r in rows}


def assert_exactly_the_registry(table: pa.Table, sb: RunningSandbox) -> None:
    """One row per enterprise of the truth, none else, each with the registry's current state."""
    codes = table["enterprise_code"].to_pylist()
    assert len(codes) == len(set(codes))
    assert set(codes) == truth_codes(sb)
    assert landed_amendments(table) == current_amendments(sb.sandbox.business.registry)


def extract(sb: RunningSandbox, out: Path, **extra: str) -> tuple[pa.Table, pa.Table, str]:
    """`hub extract business` as a user runs it: (canonical table, quarantine, stdout)."""
    env = extract_env(sb.env, out.parent / f"{out.name}-home", **{"HUB_BUSINESS_RATE_LIMIT": "0", **extra})
    done = run_extract_cli("business", out, env)
    assert done.returncode == 0, done.stderr
    return pq.read_table(out / "enterprises.parquet"), pq.read_table(out / "quarantine.parquet"), done.stdout


def connector_for(sb: RunningSandbox, **extra: str) -> BusinessConnector:
    env = {**sb.env, "HUB_BUSINESS_RATE_LIMIT": "0", **FAST_RETRIES, **extra}
    return BusinessConnector.from_settings(Settings.from_env(env), env)


def hub_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([HUB, "check", "business"], env=env, capture_output=True, text=True, timeout=120)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def variants(clean_sandbox: RunningSandbox, tmp_path_factory) -> dict[str, tuple[pa.Table, pa.Table]]:
    """A full extract of the shared sandbox through each payload variant."""
    root = tmp_path_factory.mktemp("business")
    return {v: extract(clean_sandbox, root / v, HUB_BUSINESS_VARIANT=v)[:2] for v in ("A", "B")}


# -- windows and cursors ------------------------------------------------------------------------------

def test_windows_are_five_days_inclusive_and_end_today():
    cut = list(windows(date(2026, 2, 24), date(2026, 3, 7)))
    assert cut == [Window(date(2026, 2, 24), date(2026, 2, 28)), Window(date(2026, 3, 1), date(2026, 3, 5)),
                   Window(date(2026, 3, 6), date(2026, 3, 7))]
    assert cut[1].params() == {"from_date": "01/03/2026", "to_date": "05/03/2026"}
    assert list(windows(date(2026, 3, 8), date(2026, 3, 7))) == []
    # a finished window moves the cursor past it; the one reaching today is read again next time
    assert next_cursor(cut[1], date(2026, 3, 7)) == {"from": "2026-03-06"}
    assert next_cursor(cut[2], date(2026, 3, 7)) == {"from": "2026-03-06"}
    assert parse_since("01/03/2026") == parse_since("2026-03-01") == date(2026, 3, 1)
    with pytest.raises(ValueError, match="HUB_BUSINESS_SINCE"):
        parse_since("March 2026")


# -- full extracts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["A", "B"])
def test_full_extract_is_exactly_the_truth(variants, clean_sandbox: RunningSandbox, variant: str):
    table, quarantine = variants[variant]
    assert table.schema.equals(SCHEMA, check_metadata=False) and quarantine.num_rows == 0
    assert_exactly_the_registry(table, clean_sandbox)
    true = {r["enterprise_code"]: r for r in clean_sandbox.sandbox.truth.tables["enterprises"].to_pylist()}
    for row in table.to_pylist():
        expected = true[row["enterprise_code"]]
        assert (row["name"], row["status_code"], row["type_code"], row["founding_date"]) == \
            (expected["name"], expected["status"], expected["type_id"], expected["founding_date"])
        assert row["source_variant"] == variant and row["source_system"] == "business"
        assert row["last_dossier_processed_on"] is not None and len(row["payload_sha256"]) == 64
        assert sum(a["is_main"] for a in row["business_activities"]) == 1
        if variant == "A":
            assert row["capital"] == expected["capital"] and row["members"]
        else:
            assert row["capital"] is None and row["members"] is None


def test_variants_agree_and_only_b_has_representatives_papers(variants):
    a = {r["enterprise_code"]: r for r in variants["A"][0].to_pylist()}
    b = {r["enterprise_code"]: r for r in variants["B"][0].to_pylist()}
    assert a.keys() == b.keys()
    same = ("name", "name_foreign", "status_code", "status_name", "founding_date", "last_amendment_date",
            "number_of_changes", "hq_ward_code", "hq_address", "business_activities", "last_dossier_processed_on")
    for code, row_a in a.items():
        row_b = b[code]
        assert {k: row_a[k] for k in same} == {k: row_b[k] for k in same}, code
        names = [[p["name"] for p in row["legal_representatives"]] for row in (row_a, row_b)]
        assert names[0] == names[1] and names[0]
        assert all(p["id_number"] is None and p["id_type"] is None for p in row_a["legal_representatives"])
        assert all(re.fullmatch(r"\d{9}|\d{12}", p["id_number"]) and p["id_type"] in ("1", "2")
                   for p in row_b["legal_representatives"])
    assert all(r["suspended_from"] and r["suspension_reason"] for r in b.values() if r["status_code"] == "02")


# -- check --------------------------------------------------------------------------------------------

def test_check_says_in_one_line_what_works_and_what_does_not(clean_sandbox: RunningSandbox, tmp_path: Path):
    env = extract_env(clean_sandbox.env, tmp_path, HUB_BUSINESS_BACKOFF_INITIAL="0.01")
    ok = hub_check(env)
    assert ok.returncode == 0 and ok.stdout.startswith("business: OK - ") and len(ok.stdout.splitlines()) == 1

    wrong = hub_check({**env, "HUB_BUSINESS_CLIENT_SECRET": "not-the-secret"})
    assert wrong.returncode == 1 and len(wrong.stdout.splitlines()) == 1
    assert re.match(rf"business: FAILED - token \({REQUEST_ID}\): .*HTTP 401", wrong.stdout)

    started = time.monotonic()
    unreachable = hub_check({**env, "HUB_BUSINESS_URL": f"http://127.0.0.1:{free_port()}/business"})
    assert unreachable.returncode == 1 and len(unreachable.stdout.splitlines()) == 1
    assert re.match(rf"business: FAILED - token \({REQUEST_ID}\): .*refused", unreachable.stdout)
    assert time.monotonic() - started < 30  # a check gives up quickly, it does not retry like a sync


# -- exactly once -------------------------------------------------------------------------------------

def every_fault(seed: int) -> FaultPlan:
    plan = FaultPlan.uniform(0.03, seed=seed, latency_ms=5)
    plan.rates["business"].update(duplicate_record=0.1, concurrent_update=0.1)
    return plan


def count_real_429s(sb: RunningSandbox) -> list[int]:
    """Wrap the business system's own limiter so the test sees every 429 it (not a fault) answers."""
    runtime, refused = sb.sandbox.runtimes["business"], [0]
    check = runtime.check_rate

    def counting(client) -> None:
        try:
            check(client)
        except Exception:
            refused[0] += 1
            raise

    runtime.check_rate = counting
    return refused


@pytest.mark.parametrize("variant, seed, concurrency", [("A", 21, "1"), ("B", 22, "4")])
def test_exactly_once_under_every_fault(sandbox_factory, tmp_path: Path, variant: str, seed: int, concurrency: str):
    """Variant A one call at a time (the same seed then draws the same faults for the same requests);
    variant B with detail calls in parallel, so token refreshes and retries also race."""
    with sandbox_factory(residents=3_000, seed=seed, faults=every_fault(seed), rate_limit=150) as sb:
        refused = count_real_429s(sb)
        table, quarantine, _ = extract(sb, tmp_path / "out", HUB_BUSINESS_VARIANT=variant,
                                       HUB_BUSINESS_CONCURRENCY=concurrency, HUB_BUSINESS_RATE_LIMIT="120",
                                       HUB_BUSINESS_PAGE_SIZE="3", **FAST_RETRIES)
        fired = sb.sandbox.runtimes["business"].faults.counts
    assert_exactly_the_registry(table, sb)
    assert quarantine.num_rows == 0
    assert refused[0] == 0  # paced under the limit: every 429 seen was an injected one
    for fault in ("duplicate_record", "concurrent_update", "malformed", "truncate", "reset", "rate_limit",
                  "token_expiry", "http_500"):
        assert fired.get(fault, 0) > 0, (fault, fired)
    assert len(sb.sandbox.business.registry.live) > 0  # enterprises changed while the connector paged


def test_killed_then_resumed_ends_with_exactly_the_registry(sandbox_factory, tmp_path: Path):
    plan = FaultPlan.uniform(0.02, seed=31, latency_ms=5)
    with sandbox_factory(residents=3_000, seed=31, faults=plan, rate_limit=1_000) as sb:
        env = extract_env(sb.env, tmp_path / "home", HUB_BUSINESS_RATE_LIMIT="80", HUB_BUSINESS_PAGE_SIZE="3",
                          **FAST_RETRIES)  # paced so that a whole run outlasts the first kill
        table, kills = extract_killed_then_resumed("business", tmp_path / "out", env, seed=31,
                                                   kill_window_s=(0.8, 1.6))
        assert kills >= 1
        assert_exactly_the_registry(table, sb)


def test_incremental_run_fetches_only_what_changed(sandbox_factory, tmp_path: Path):
    with sandbox_factory(residents=1_500, seed=41, rate_limit=10_000) as sb:
        first = run_extract(connector_for(sb), tmp_path)
        resume = date.fromisoformat(json.loads((tmp_path / "state.json").read_text())["cursor"]["from"])
        registry = sb.sandbox.business.registry
        changed = {int(e) for e in registry.changeable()[:3]}
        for eid in changed:
            registry.amend_now(eid, time.time())
        # what the re-read window holds besides the changes: history dossiers from the resume day on
        recent = registry.h.d_eid[registry.h.d_processed >= (resume - date(1970, 1, 1)).days]
        expected = changed | {int(e) for e in recent}
        again = connector_for(sb)
        second = run_extract(again, tmp_path)
        table = pq.read_table(second.dataset_path)
    assert first.batches > 100 and second.batches <= 2  # the window that reached today (and a new day's)
    assert resume > date.today() - timedelta(days=6)
    assert second.fetched == len(expected) and second.rows == first.rows
    assert again.transport.attempts <= 1 + second.batches + len(expected)  # a token, the lists, the details
    assert_exactly_the_registry(table, sb)


# -- failures and quarantine --------------------------------------------------------------------------

def test_a_page_that_stays_malformed_fails_naming_the_exchange_and_commits_nothing_of_its_window(
        sandbox_factory, tmp_path: Path):
    with sandbox_factory(residents=1_000, seed=51, rate_limit=10_000) as sb:
        connector = connector_for(sb, HUB_BUSINESS_MAX_ATTEMPTS="3")
        injector, read = sb.sandbox.runtimes["business"].faults, connector.read

        def read_then_break(cursor) -> Iterator:
            for index, batch in enumerate(read(cursor)):
                yield batch
                if index == 20:  # from now on every answer is damaged (the window read ahead may still pass)
                    injector.rates = {"malformed": 1.0}

        connector.read = read_then_break
        with pytest.raises(ConnectorError) as failure:
            run_extract(connector, tmp_path)
        found = re.match(rf"business danhSachHoSo \({REQUEST_ID}\): window (\S+)-\S+, offset 0: HTTP 200 body is not "
                         r"valid JSON .* \(gave up after 3 attempts\)$", str(failure.value))
        assert found, str(failure.value)
        failed = datetime.strptime(found.group(1), "%d/%m/%Y").date()
        state = json.loads((tmp_path / "state.json").read_text())
        # The committed cursor is at most the failed window (empty windows may commit a little later).
        assert date.fromisoformat(state["cursor"]["from"]) <= failed and state["sequence"] >= 1
        assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == sorted(state["parts"])
        committed = pq.read_table([tmp_path / "parts" / p for p in state["parts"] if p.endswith("records.parquet")])
        assert max(committed["last_dossier_processed_on"].to_pylist()) < failed

        injector.rates = {}
        connector.read = read
        run_extract(connector, tmp_path)
        assert_exactly_the_registry(pq.read_table(tmp_path / "enterprises.parquet"), sb)


@pytest.mark.parametrize("variant", ["A", "B"])
def test_refused_details_and_bad_codes_land_in_quarantine(clean_sandbox: RunningSandbox, tmp_path: Path,
                                                          monkeypatch, variant: str):
    registry = clean_sandbox.sandbox.business.registry
    unknown, garbled, nameless = registry.codes[:3]
    bad = garbled[:9] + str((int(garbled[9]) + 1) % 10)  # the check digit no longer matches
    monkeypatch.delitem(registry.eid_of, unknown)  # still listed, but the details say "not found"
    monkeypatch.setattr(registry, "codes", [unknown, bad, *registry.codes[2:]])  # listed under an invalid code
    monkeypatch.setattr(registry, "name", [*registry.name[:2], "", *registry.name[3:]])  # details without a name
    table, quarantine, stdout = extract(clean_sandbox, tmp_path / "out", HUB_BUSINESS_VARIANT=variant)
    assert set(table["enterprise_code"].to_pylist()) == truth_codes(clean_sandbox) - {unknown, garbled, nameless}
    assert quarantine.schema.equals(QUARANTINE_SCHEMA, check_metadata=False)
    rows = quarantine.to_pylist()
    details = [r for r in rows if r["record_key"] == unknown]
    assert details and all(r["operation"] == "chiTietDoanhNghiep" and "RECORD_NOT_FOUND" in r["reason"]
                           and unknown in r["position"] for r in details)
    listed = [r for r in rows if r["record_key"] == bad]
    assert listed and all(r["operation"] == "danhSachHoSo" and "check digit" in r["reason"] and
                          re.fullmatch(r"window \S+, offset \d+, index \d+", r["position"]) for r in listed)
    incomplete = [r for r in rows if r["record_key"] == nameless]
    name_field = {"A": "MainInformation.NAME", "B": "TenTiengViet"}[variant]
    assert incomplete and all(f"missing required field(s): {name_field}" == r["reason"] and nameless in r["raw"]
                              for r in incomplete)
    assert len(rows) == len(details) + len(listed) + len(incomplete) and f"{len(rows)} quarantined" in stdout


def answer(status: int, body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code, response._content, response.url = status, body, "http://registry/x"
    return response


def test_a_404_outside_the_envelope_is_a_wrong_address_not_a_missing_enterprise():
    code = "0200643696"
    refused = parse_detail(answer(404, b'{"GetEntCert": [], "Message": "201 RECORD_NOT_FOUND: none"}'), "B", code)
    assert isinstance(refused, Refusal) and "RECORD_NOT_FOUND" in refused.message
    with pytest.raises(PermanentError, match="HUB_BUSINESS_VARIANT"):
        parse_detail(answer(404, b"Not Found"), "B", code)
    with pytest.raises(TransientError):  # busy, said in the envelope of an HTTP 200
        parse_detail(answer(200, b'{"Status": 0, "Message": "503 SERVICE_UNAVAILABLE: later"}'), "A", code)
    with pytest.raises(MalformedResponse, match=f"msdn {code}"):
        parse_detail(answer(200, b'{"Status": 1, "Data": {"MainInf'), "A", code)
