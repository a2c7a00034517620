"""Applicant cross-checks and service measures over small, hand-made dossier tables."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pyarrow as pa
import pytest

from hub.dossiers import applicant_flags, procedure_times, service_measures
from pipelines.dossiers import late_jumps
from schemas.canonical.dossiers import SCHEMA
from schemas.timefmt import VN_TZ

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=VN_TZ)


def dossier(code: str, **fields) -> dict:
    row = {name: None for name in SCHEMA.names}
    row.update(system="district-a", dossier_code=code, procedure_code="1.001193", procedure_name="Đăng ký khai sinh",
               field_code="HT", channel=1, applicant_type=1, applicant_name="Nguyễn Văn An",
               applicant_id="031090000001", applicant_id_kind=1, received_at=T0, due_at=T0 + timedelta(days=3),
               status=4, paid_online=False, steps=[], deleted=False, version=T0, updated_at=T0)
    row.update(fields)
    return row


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


@pytest.fixture
def con():
    with duckdb.connect() as connection:
        connection.register("citizens", pa.table({
            "personal_id": ["031090000001", "031090000002"], "cmnd": ["031234567", None],
            "family_name": ["Nguyễn", "Trần"], "middle_name": ["Văn", "Thị"], "given_name": ["An", "Bình"]}))
        connection.register("enterprises", pa.table({"enterprise_code": ["0201234567"],
                                                     "name": ["CÔNG TY TNHH HẢI ĐĂNG"]}))
        yield connection


def test_applicant_flags(con):
    con.register("d", table([
        dossier("000.00.31.H31-261001-0001"),  # known, same name
        dossier("000.00.31.H31-261001-0002", applicant_name="NGUYỄN  VĂN  AN"),  # same name, other form
        dossier("000.00.31.H31-261001-0003", applicant_id="031099999999"),  # nobody has it
        dossier("000.00.31.H31-261001-0004", applicant_id="031090000002"),  # Trần Thị Bình's ID
        dossier("000.00.31.H31-261001-0005", applicant_id="031234567", applicant_id_kind=2),  # old CMND, right name
        dossier("000.00.31.H31-261001-0006", applicant_id="abc", applicant_id_kind=None),
        dossier("000.00.31.H31-261001-0007", applicant_type=2, applicant_id="0201234567", applicant_id_kind=3,
                applicant_name="Công ty TNHH Hải Đăng"),
        dossier("000.00.31.H31-261001-0008", applicant_type=1, applicant_id="0201234567", applicant_id_kind=3),
        dossier("000.00.31.H31-261001-0009", applicant_id="031099999999", deleted=True),  # tombstones are not judged
    ]))
    flags = {r["dossier_code"][-4:]: r["flag"] for r in applicant_flags(con, "d", "citizens", "enterprises").to_pylist()}
    assert flags == {"0003": "unknown_applicant", "0004": "name_mismatch", "0006": "no_identifier", "0008": "wrong_kind"}


def test_service_measures_and_procedure_times(con):
    late = dict(status=10, finished_at=T0 + timedelta(days=5))  # due after 3 days
    on_time = dict(status=9, finished_at=T0 + timedelta(days=1))
    con.register("d", table([
        dossier("000.00.31.H31-261001-0001", channel=2, **on_time),
        dossier("000.00.31.H31-261001-0002", **late),
        dossier("000.00.31.H31-261001-0003", **on_time),
        dossier("000.00.31.H31-261001-0004"),  # open, due 4 October: past due on the 10th
        dossier("000.00.31.H31-261001-0005", status=7),  # withdrawn: closed, not open
        dossier("000.00.31.H31-261001-0006", deleted=True),
        dossier("000.00.02.H31-261101-0001", received_at=T0 + timedelta(days=31), due_at=T0 + timedelta(days=60)),
    ]))
    rows = {(r["agency"], r["month"]): r for r in service_measures(con, "d", T0 + timedelta(days=9)).to_pylist()}
    october = rows[("000.00.31.H31", "2026-10")]
    assert (october["received"], october["resolved"], october["late"], october["open_past_due"]) == (5, 3, 1, 1)
    assert october["online_share"] == pytest.approx(0.2) and october["on_time_share"] == pytest.approx(2 / 3)
    november = rows[("000.00.02.H31", "2026-11")]
    assert (november["received"], november["resolved"], november["open_past_due"]) == (1, 0, 0)
    assert november["on_time_share"] is None
    [times] = procedure_times(con, "d").to_pylist()
    assert times["resolved"] == 3 and times["median_days"] == pytest.approx(1.0)


def test_late_share_jump_needs_enough_resolved_dossiers():
    measures = pa.Table.from_pylist([
        {"agency": "A", "month": m, "resolved": 100, "late": late} for m, late in
        (("2026-08", 5), ("2026-09", 10), ("2026-10", 6), ("2026-11", 30))
    ] + [{"agency": "B", "month": m, "resolved": r, "late": late} for m, r, late in
         (("2026-09", 100, 5), ("2026-10", 100, 5), ("2026-11", 10, 9))])
    [(agency, now, before)] = late_jumps(measures, "2026-11", 0.15)
    assert agency == "A" and now == pytest.approx(0.30) and before == pytest.approx(0.07)
    assert late_jumps(measures, "2026-11", 0.25) == []
