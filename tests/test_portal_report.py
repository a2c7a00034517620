"""Reporting dossiers to the national portal, exactly once, against the sandbox's portal over HTTP.

The rows are canonical ``dossiers`` rows built here (the one-stop-shop path to them is tested in
``test_dossiers_pipeline.py``); what the portal holds is read from the sandbox's own record.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from connectors.portal import PortalClient, WriteOutcomeUnknown
from hub.config import Settings
from hub.portal_report import (ReportState, agency_of, dossier_payload, orphans, refusals, report_pass,
                               step_payloads)
from sandbox.agencies import agencies
from sandbox.faults import FaultPlan
from sandbox.procedures import procedures
from schemas.timefmt import VN_TZ
from tests.conftest import start_sandbox

AGENCIES = [a.code102 for a in agencies() if a.in_province][1:4]
START = datetime(2026, 11, 2, 8, 0, tzinfo=VN_TZ)


def make_rows(n: int, seed: int = 0, steps: int = 3) -> list[dict]:
    """``n`` canonical dossier rows over three agencies, each with ``steps`` progress steps."""
    rng = random.Random(seed)
    catalogue = procedures()
    rows, serial = [], Counter()
    for i in range(n):
        agency = AGENCIES[i % len(AGENCIES)]
        received = START + timedelta(days=i // 40, minutes=i % 40 * 7)
        serial[(agency, received.date())] += 1
        code = f"{agency}-{received:%y%m%d}-{serial[(agency, received.date())]:04d}"
        procedure = rng.choice(catalogue)
        rows.append({
            "system": "district-a", "dossier_code": code, "procedure_code": procedure.code,
            "procedure_name": procedure.name, "field_code": procedure.field_code, "channel": rng.choice((1, 1, 2, 3)),
            "applicant_name": "Nguyễn Văn An", "applicant_type": 1, "applicant_id": f"031{rng.randrange(10**9):09d}",
            "applicant_id_kind": 1, "summary": f"Hồ sơ {i}", "received_at": received,
            "due_at": received + timedelta(days=procedure.days), "finished_at": None, "returned_at": None,
            "status": 4, "source_status": "DANG_XU_LY", "paid_online": False, "deleted": False,
            "updated_at": received, "version": received,
            "steps": [{"step_id": i * 10 + k, "handler": f"Cán bộ {k}", "handler_title": "Chuyên viên",
                       "department": "Bộ phận một cửa", "content": f"Bước {k}", "status": 2 if k == 0 else 4,
                       "source_status": "DANG_XU_LY", "processed_at": received + timedelta(hours=k),
                       "due_at": received + timedelta(days=procedure.days), "updated_at": received}
                      for k in range(steps)],
        })
    return rows


def touch(row: dict) -> None:
    """A change at the source gives the canonical row a later version."""
    row["version"] = row["version"] + timedelta(seconds=1)


def client_for(running) -> PortalClient:
    env = {**running.env, "HUB_DVCQG_BACKOFF_INITIAL": "0.001", "HUB_DVCQG_BACKOFF_MAX": "0.01"}
    return PortalClient.from_settings(Settings.from_env(env), env)


def expected(rows: list[dict]) -> tuple[dict[str, dict], Counter]:
    """What the portal must hold for ``rows``: dossier payloads by code, and each step exactly once."""
    live = [r for r in rows if not r["deleted"]]
    dossiers = {r["dossier_code"]: r for r in live}
    steps = Counter((s["MaHoSo"], s["ThoiDiemXuLy"]) for r in live for s in step_payloads(r))
    return dossiers, steps


def assert_portal_matches(portal, rows: list[dict]) -> None:
    dossiers, steps = expected(rows)
    held = portal.dossiers()
    assert set(held) == set(dossiers)
    for code, row in dossiers.items():
        want = dossier_payload(row, {})
        got = {k: v for k, v in held[code].items() if k in want and k != "TenLinhVuc"}
        assert got == {k: v for k, v in want.items() if k != "TenLinhVuc"}, code
    recorded = Counter((s["MaHoSo"], s["ThoiDiemXuLy"]) for s in portal.steps())
    assert recorded == steps  # every step once: none missing, none twice


@pytest.fixture
def portal(tmp_path):
    with start_sandbox(residents=200, seed=3, rate_limit=0) as running:
        yield running


def test_first_pass_sends_everything_and_a_second_sends_nothing(portal, tmp_path):
    rows = make_rows(450)
    state = tmp_path / "state.sqlite"
    first = report_pass(rows, client_for(portal), state, batch_size=100, step_batch_size=250)
    assert (first.dossiers_new, first.dossiers_updated, first.steps_sent) == (450, 0, 1350)
    assert_portal_matches(portal.sandbox.dvcqg, rows)
    second = report_pass(rows, client_for(portal), state)
    assert (second.dossiers_new, second.dossiers_updated, second.steps_sent, second.dossiers_unchanged) == (0, 0, 0, 450)
    assert second.write_calls == 0
    assert_portal_matches(portal.sandbox.dvcqg, rows)


def test_changes_go_as_updates_and_new_steps_alone(portal, tmp_path):
    rows = make_rows(60)
    state = tmp_path / "state.sqlite"
    report_pass(rows, client_for(portal), state)
    for row in rows[:10]:
        row["status"], row["finished_at"] = 9, row["received_at"] + timedelta(days=1)
        row["steps"].append({**row["steps"][-1], "step_id": row["steps"][-1]["step_id"] + 1, "status": 9,
                             "content": "Đã xử lý xong", "processed_at": row["received_at"] + timedelta(days=1)})
        touch(row)
    result = report_pass(rows, client_for(portal), state)
    assert (result.dossiers_new, result.dossiers_updated, result.steps_sent) == (0, 10, 10)
    assert_portal_matches(portal.sandbox.dvcqg, rows)
    assert portal.sandbox.dvcqg.dossiers()[rows[0]["dossier_code"]]["TrangThaiHoSo"] == "9"


def test_a_lost_state_file_sends_no_step_twice(portal, tmp_path):
    """With no state, every dossier is new to the hub but not to the portal: "3" turns them into
    look-ups, and the steps the portal shows are not sent again."""
    rows = make_rows(50)
    report_pass(rows, client_for(portal), tmp_path / "first.sqlite")
    rows[0]["steps"].append({**rows[0]["steps"][-1], "step_id": 999_999, "processed_at": START + timedelta(days=3)})
    touch(rows[0])
    result = report_pass(rows, client_for(portal), tmp_path / "fresh.sqlite")
    assert result.steps_sent == 1
    assert result.lookups >= 50
    assert_portal_matches(portal.sandbox.dvcqg, rows)


def test_refused_dossier_is_isolated_kept_with_the_message_and_retried_once_fixed(portal, tmp_path):
    rows = make_rows(120)
    bad = rows[37]
    bad["procedure_code"] = "9.999999"  # not in the portal's catalogue
    state = tmp_path / "state.sqlite"
    result = report_pass(rows, client_for(portal), state, batch_size=100)
    assert result.refused_dossiers == 1 and result.dossiers_new == 119
    assert result.waiting_steps == 3  # its steps wait for it
    assert bad["dossier_code"] not in portal.sandbox.dvcqg.dossiers()
    [refusal] = refusals(state)
    assert refusal["MaHoSo"] == bad["dossier_code"] and refusal["error_code"] == "500"
    assert "MaTTHC" in refusal["message"]
    again = report_pass(rows, client_for(portal), state)  # unchanged at the source: not sent again
    assert (again.still_refused, again.write_calls) == (1, 0)
    bad["procedure_code"] = procedures()[0].code
    touch(bad)
    fixed = report_pass(rows, client_for(portal), state)
    assert (fixed.dossiers_new, fixed.steps_sent, fixed.refused_dossiers) == (1, 3, 0)
    assert refusals(state) == []
    assert_portal_matches(portal.sandbox.dvcqg, rows)


def test_a_pass_skips_a_version_the_portal_holds_without_building_its_payload(portal, tmp_path, monkeypatch):
    rows = make_rows(40)
    state = tmp_path / "state.sqlite"
    report_pass(rows, client_for(portal), state)
    built = []
    monkeypatch.setattr("hub.portal_report.dossier_payload",
                        lambda row, names: built.append(row["dossier_code"]) or dossier_payload(row, names))
    touch(rows[3])
    again = report_pass(rows, client_for(portal), state)
    assert built == [rows[3]["dossier_code"]]  # only the one whose version moved
    assert (again.dossiers_unchanged, again.write_calls) == (40, 0)  # same content: nothing to send


def test_deleted_at_the_source_after_reporting_is_listed_for_an_operator(portal, tmp_path):
    rows = make_rows(20)
    state = tmp_path / "state.sqlite"
    report_pass(rows, client_for(portal), state)
    gone = rows[4]["dossier_code"]
    rows[4] = {**{k: None for k in rows[4]}, "system": "district-a", "dossier_code": gone, "deleted": True,
               "version": START + timedelta(days=9)}
    result = report_pass(rows, client_for(portal), state)
    assert result.deleted_at_source == 1 and result.write_calls == 0
    assert orphans(state) == [gone]


def test_faults_never_duplicate_or_lose_anything(tmp_path):
    """Every §0 fault of the portal at a high rate, answers lost after writes included."""
    plan = FaultPlan(seed=11, rates={"dvcqg": {"reset": 0.08, "truncate": 0.06, "malformed": 0.06, "http_503": 0.05,
                                               "http_500": 0.03, "rate_limit": 0.03, "token_expiry": 0.05}})
    rows = make_rows(400, seed=5)
    with start_sandbox(residents=200, seed=3, rate_limit=0, faults=plan) as running:
        result = report_pass(rows, client_for(running), tmp_path / "state.sqlite", batch_size=40, step_batch_size=60)
        assert result.unknown_outcomes > 0  # the faults did hit writes
        assert_portal_matches(running.sandbox.dvcqg, rows)


class KillingClient:
    """A portal client that dies (BaseException, like a kill) at the ``n``-th write, before sending it or
    after the portal applied it: the two moments a pass can be lost at."""

    def __init__(self, client: PortalClient, n: int, after: bool) -> None:
        self._client, self._n, self._after, self.writes = client, n, after, 0

    def __getattr__(self, name):
        return getattr(self._client, name)

    def _write(self, method, *args):
        self.writes += 1
        if self.writes == self._n and not self._after:
            raise KeyboardInterrupt("killed before the write")
        getattr(self._client, method)(*args)
        if self.writes == self._n:
            raise KeyboardInterrupt("killed after the write")

    def sync_dossiers(self, *args):
        self._write("sync_dossiers", *args)

    def add_steps(self, *args):
        self._write("add_steps", *args)


@pytest.mark.parametrize("after", [False, True])
def test_killed_at_every_write_then_rerun_matches_exactly(tmp_path, after):
    rows = make_rows(30, steps=2)
    with start_sandbox(residents=200, seed=3, rate_limit=0) as running:
        total = report_pass(rows, client_for(running), tmp_path / "probe.sqlite", batch_size=7, step_batch_size=9).write_calls
    assert total >= 8
    for n in range(1, total + 1):
        with start_sandbox(residents=200, seed=3, rate_limit=0) as running:
            state = tmp_path / f"state-{n}.sqlite"
            with pytest.raises(KeyboardInterrupt):
                report_pass(rows, KillingClient(client_for(running), n, after), state, batch_size=7, step_batch_size=9)
            if after:
                assert ReportState(state).in_flight()  # the write the kill interrupted is known to be in flight
            report_pass(rows, client_for(running), state, batch_size=7, step_batch_size=9)
            assert_portal_matches(running.sandbox.dvcqg, rows)


def test_sigkill_of_a_reporting_process_then_rerun_matches_exactly(tmp_path):
    """A real process, killed with SIGKILL while it writes, at a moment the test does not choose."""
    rows = make_rows(300, seed=9)
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps(rows, default=lambda v: v.isoformat()))
    state = tmp_path / "state.sqlite"
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from connectors.portal import PortalClient
        from hub.config import Settings
        from hub.portal_report import report_pass
        from tests.test_portal_report import rows_with_datetimes
        client = PortalClient.from_settings(Settings.from_env(os.environ), os.environ)
        report_pass(rows_with_datetimes(Path({str(rows_file)!r})), client, {str(state)!r}, batch_size=5, step_batch_size=7)
    """)
    with start_sandbox(residents=200, seed=3, rate_limit=0) as running:
        portal = running.sandbox.dvcqg
        env = {**os.environ, **running.env, "HUB_DVCQG_RATE_LIMIT": "0"}
        process = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=Path(__file__).parents[1])
        deadline = time.monotonic() + 60
        target = random.Random(4).randrange(20, 120)  # writes the portal has seen before the kill
        while sum(portal.received()["calls"].get(s, 0) for s in ("DongBoHoSoMC", "CapNhatTienDoHoSoMC")) < target:
            assert process.poll() is None, "the reporting process ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.001)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert len(portal.dossiers()) < len(rows) or len(portal.steps()) < 600  # it was killed mid-way
        result = report_pass(rows_with_datetimes(rows_file), client_for(running), state, batch_size=5, step_batch_size=7)
        assert result.dossiers_seen == 300
        assert_portal_matches(portal, rows)


def rows_with_datetimes(path: Path) -> list[dict]:
    rows = json.loads(path.read_text())
    for row in rows:
        for name in ("received_at", "due_at", "updated_at", "version"):
            row[name] = datetime.fromisoformat(row[name])
        for step in row["steps"]:
            for name in ("processed_at", "due_at", "updated_at"):
                step[name] = datetime.fromisoformat(step[name])
    return rows


def test_expired_sessions_are_renewed_without_losing_a_write(portal, tmp_path):
    """The portal's clock runs 700 s per look at it: a 30-minute session expires every few calls."""
    ticks = iter(range(0, 10**9, 700))
    portal.sandbox.dvcqg.clock = lambda: float(next(ticks))
    rows = make_rows(60)
    result = report_pass(rows, client_for(portal), tmp_path / "state.sqlite", batch_size=10, step_batch_size=20)
    assert result.unknown_outcomes == 0 and result.write_calls == 6 + 9
    assert portal.sandbox.dvcqg.received()["refusals"].get("DongBoHoSoMC", {}).get("401", 0) > 0
    assert_portal_matches(portal.sandbox.dvcqg, rows)


def test_client_refuses_without_configuration():
    with pytest.raises(Exception, match="HUB_DVCQG_URL"):
        PortalClient.from_settings(Settings.from_env({}), {})


def test_write_outcome_unknown_names_the_service(portal):
    client = client_for(portal)
    client.base_url = "http://127.0.0.1:9"  # nothing listens: the write cannot be known to have landed
    with pytest.raises(WriteOutcomeUnknown, match="DongBoHoSoMC"):
        client.sync_dossiers(AGENCIES[0], [dossier_payload(make_rows(1)[0], {})], updating=False)


def test_agency_of_a_dossier_code():
    assert agency_of("000.00.13.H31-250814-0001") == "000.00.13.H31"
