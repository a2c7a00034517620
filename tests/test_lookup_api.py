"""The lookup service over real HTTP on loopback, against a real published snapshot file.

The snapshot is a small DuckDB file written with the canonical pyarrow schemas, the way
``pipelines/publish.py`` writes one; the service runs in uvicorn; clients are registered in a real
clients file with hashed keys. Nothing sleeps: whatever waits polls with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import threading
import time
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qsl, urlencode

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_schema_conformance, status_code_conformance)
from starlette.applications import Starlette

from hub.access_policy import (SENSITIVE, AccessPolicy, PolicyFileError, RequestRefused, expand_grant, parse_grants,
                                read_clients, register_client)
from hub.audit_log import AuditEntry, AuditLog, subject, verify
from hub.audit_writer import AuditLogProcess
from hub.config import Settings
from hub.dossiers import MEASURES_SCHEMA, TIMES_SCHEMA
from hub.identity_match import fold_name, parse_birth
from hub.lookup_api import ApiLimits, _query_items, app_from_settings, create_app
from hub.lookup_openapi import openapi_document
from hub.serving_store import CATALOGUE, RowTable, SnapshotStore, read_snapshot
from sandbox.server import running
from schemas.canonical import citizens, civil_events, documents, enterprises
from schemas.identifiers import enterprise_check_digit

NOW = datetime.now(timezone.utc).replace(microsecond=0)

DUC = "031090012345"  # Nguyễn Văn Đức, male, 1990
HOA = "031195000077"  # Trần Thị Hoà, female, 1995, whole name in Ten and in NFD
LAN = "001302000123"  # Phạm Ngọc Lan, female, 2002, only the year of birth is known
TAM = "031045000321"  # Lê Văn Tám: died, not in the population copy
ENTERPRISE = "0100109106"
BRANCH = "0100109106-001"
UNKNOWN_ENTERPRISE = "0312345673"
FULL_KEY_FIELDS = [name for name in CATALOGUE["citizens"].columns if name not in ("ethnicity_code", "religion_code")]


def _prov(system: str, fetched: datetime) -> dict[str, Any]:
    return {"source_system": system, "request_id": f"req-{system}-1", "fetched_at": fetched,
            "payload_sha256": "5f" * 32}


def _citizen_rows(version: int, fetched: datetime) -> list[dict[str, Any]]:
    prov = _prov("population", fetched)
    home = {"permanent_province_code": "31", "permanent_ward_code": "11506",
            "permanent_address": "Số 12 Lạch Tray, Phường Lạch Tray, Hải Phòng"}
    return [
        {"personal_id": DUC, "cmnd": "031456789", "family_name": "Nguyễn", "middle_name": "Văn", "given_name": "Đức",
         "gender": 1, "ethnicity_code": "01", "religion_code": "00", "marital_status": 2, "blood_group": "04",
         "birth_year": 1990, "birth_date": date(1990, 5, 17), "nationality": "VN", "household_relation": "CH01",
         "household_head_id": DUC, "household_book": f"HP-{version:04d}", "updated_at": fetched - timedelta(days=3),
         "status": 0, **home, **prov},
        {"personal_id": HOA, "family_name": "", "middle_name": "",
         "given_name": unicodedata.normalize("NFD", "Trần Thị Hoà"), "gender": 2, "ethnicity_code": "02",
         "religion_code": "01", "birth_year": 1995, "birth_date": date(1995, 3, 8), "updated_at": fetched,
         "status": 0, **home, **prov},
        {"personal_id": LAN, "family_name": "PHẠM", "middle_name": "NGỌC", "given_name": "LAN", "gender": 2,
         "birth_year": 2002, "updated_at": fetched, "status": 0, **prov},
    ]


def _event_rows(fetched: datetime) -> list[dict[str, Any]]:
    prov = _prov("civil", fetched)
    return [
        {"module": "KS", "record_id": 7001, "agency_code": "H31.22", "registered_on": date(1995, 3, 20),
         "status": 1, "updated_at": fetched, "child_personal_id": HOA, "child_name": "Trần Thị Hoà",
         "child_gender": 2, "child_birth_date": date(1995, 3, 8), "child_ethnicity": "02",
         "mother_name": "Đỗ Thị Mai", **prov},
        {"module": "KH", "record_id": 9002, "agency_code": "H31.22", "registered_on": date(2019, 10, 2),
         "status": 1, "updated_at": fetched, "husband_name": "Nguyễn Văn Đức", "husband_birth_date": date(1990, 5, 17),
         "husband_id_type": 1, "husband_id_number": DUC, "wife_name": "Trần Thị Hoà",
         "wife_birth_date": date(1995, 3, 8), "wife_id_type": 1, "wife_id_number": HOA, **prov},
        {"module": "KT", "record_id": 8003, "agency_code": "H31.23", "registered_on": date(2026, 10, 1),
         "status": 1, "updated_at": fetched, "deceased_name": "Lê Văn Tám", "deceased_gender": 1,
         "deceased_birth_date": date(1945, 1, 1), "deceased_id_type": 1, "deceased_id_number": TAM,
         "death_date": date(2026, 9, 28), "death_cause": "Bệnh già", **prov},
    ]


def _enterprise_rows(fetched: datetime) -> list[dict[str, Any]]:
    prov = _prov("business", fetched)
    base = {"type_code": "01", "status_code": "01", "source_variant": "B",
            "last_dossier_processed_on": date(2026, 11, 20), "hq_province_code": "31", **prov}
    return [
        {"enterprise_code": ENTERPRISE, "enterprise_id": 11, "name": "CÔNG TY CỔ PHẦN CẢNG HẢI PHÒNG",
         "capital": Decimal("12345678901234.56"),
         "legal_representatives": [{"name": "Nguyễn Văn Đức", "id_type": "1", "id_number": DUC}],
         "business_activities": [{"code": "5224", "name": "Bốc xếp hàng hóa", "is_main": True}], **base},
        {"enterprise_code": BRANCH, "enterprise_id": 12, "name": "CHI NHÁNH CẢNG ĐÌNH VŨ", **base},
    ]


def _document_rows(fetched: datetime) -> list[dict[str, Any]]:
    prov = _prov("vdxp", fetched)
    doc = {"signature_verdict": "valid", "edxml": b"<edXML/>", **prov}
    return [
        {"doc_id": "D-0001", "message_type": "edoc", "from_organ_id": "000.00.00.G22", "to_organ_ids": ["H31.22"],
         "edxml_document_id": "G22-2026-15", "business_type": 0, "subject": "V/v triển khai Đề án 06",
         "code_number": "15", "code_notation": "CV-BCA", "received_at": fetched - timedelta(hours=5), **doc},
        {"doc_id": "S-0002", "message_type": "status", "from_organ_id": "H31.22", "to_organ_ids": ["000.00.00.G22"],
         "status_code": "06", "response_for_doc_id": "G22-2026-15", "received_at": fetched - timedelta(hours=1), **doc},
        {"doc_id": "S-0001", "message_type": "status", "from_organ_id": "H31.22", "to_organ_ids": ["000.00.00.G22"],
         "status_code": "01", "response_for_doc_id": "G22-2026-15", "received_at": fetched - timedelta(hours=4), **doc},
    ]


MEASURE_ROWS = [
    {"agency": agency, "month": month, "received": 100 + k, "online_share": 0.14, "resolved": 90, "on_time_share": 0.9,
     "late": 9, "open_past_due": 2}
    for k, (agency, month) in enumerate((("000.00.02.H31", "2026-10"), ("000.00.02.H31", "2026-11"),
                                         ("000.31.30.H31", "2026-11")))]
TIME_ROWS = [{"procedure_code": "1.001193", "procedure_name": "Đăng ký khai sinh", "resolved": 80, "median_days": 0.9}]


def write_snapshot(path: Path, version: int = 1, fetched: datetime | None = None,
                   extra_citizens: int = 0, meta_as_of: datetime | None = None,
                   refetched: tuple[str, ...] = ()) -> Path:
    """Publish a snapshot the way the pipeline does: build aside, close, ``os.replace``. Enterprises
    in ``refetched`` arrived an hour after the rest (a later sync changed them)."""
    fetched = fetched or NOW
    aside = path.with_name(f".building-{version}-{time.monotonic_ns()}.duckdb")
    firms = [{**row, "fetched_at": fetched + timedelta(hours=1)} if row["enterprise_code"] in refetched else row
             for row in _enterprise_rows(fetched)]
    tables = {citizens: _citizen_rows(version, fetched), civil_events: _event_rows(fetched),
              enterprises: firms, documents: _document_rows(fetched)}
    with duckdb.connect(str(aside)) as con:
        for module, rows in tables.items():
            con.register("incoming", pa.Table.from_pylist(rows, schema=module.SCHEMA))
            con.execute(f"CREATE TABLE {module.DATASET} AS SELECT * FROM incoming")
            con.unregister("incoming")
        for name, schema, rows in (("service_measures", MEASURES_SCHEMA, MEASURE_ROWS),
                                   ("procedure_times", TIMES_SCHEMA, TIME_ROWS)):
            con.register("incoming", pa.Table.from_pylist(rows, schema=schema))
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM incoming")
            con.unregister("incoming")
        if extra_citizens:
            con.execute("INSERT INTO citizens (personal_id, given_name, birth_year, updated_at, source_system, "
                        "request_id, fetched_at, payload_sha256) SELECT '0312' || lpad(i::VARCHAR, 8, '0'), "
                        "'Người ' || i, 2000 + i % 20, now(), 'population', 'bulk', now(), 'ff' "
                        "FROM range(?) t(i)", [extra_citizens])
        if meta_as_of is not None:  # what a publisher that knows ThoiDiemDuLieu would add
            con.execute("CREATE TABLE snapshot_meta (dataset VARCHAR, as_of TIMESTAMPTZ)")
            con.execute("INSERT INTO snapshot_meta VALUES ('citizens', ?)", [meta_as_of])
        con.execute("CHECKPOINT")
    os.replace(aside, path)
    return path


class RecordingSink:
    """The real audit log, with every entry also kept in memory for assertions."""

    def __init__(self, directory: Path, fail: bool = False) -> None:
        self.entries: list[AuditEntry] = []
        self.fail = fail
        self.directory = directory
        self.real = AuditLog(directory)

    def append(self, entry: AuditEntry, durable: bool = False) -> int:
        if self.fail:
            raise OSError("disk full")
        number = self.real.append(entry, durable=durable)
        self.entries.append(entry)
        return number

    def since(self, mark: int) -> list[AuditEntry]:
        return self.entries[mark:]

    def close(self) -> None:
        self.real.close()


@dataclass
class Service:
    base: str
    keys: dict[str, str]
    audit: RecordingSink
    snapshot: Path
    clients: Path
    session: requests.Session

    def get(self, path: str, client: str | None = "full", **params: Any) -> requests.Response:
        return self.session.get(self.base + path, params=params, headers=self.auth(client), timeout=10)

    def post(self, path: str, body: Any, client: str | None = "full", **kwargs: Any) -> requests.Response:
        return self.session.post(self.base + path, json=body, headers=self.auth(client), timeout=10, **kwargs)

    def auth(self, client: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[client]}"} if client else {}


CLIENTS = {
    "full": dict(agency_code="H31.22", datasets={"citizens": ["*"], "civil_events": ["*"], "enterprises": ["*"],
                                                  "documents": ["*"], "service_measures": ["*"]},
                 purposes=["1.00*", "H31.22-*"], rate=10_000, feeds=["enterprises", "civil_events"]),
    "sensitive": dict(agency_code="H31.30", datasets={"citizens": ["*", "ethnicity_code", "religion_code"],
                                                       "civil_events": ["*", "death_cause"]},
                      purposes=["2.001*"], rate=10_000),
    "narrow": dict(agency_code="H31.40", datasets={"citizens": ["personal_id", "family_name", "middle_name",
                                                                "given_name", "birth_date"]},
                   purposes=["1.001234"], rate=10_000),
    "fuzzer": dict(agency_code="H31.70", datasets={name: ["*", *sorted(SENSITIVE[name])] for name in CATALOGUE},
                   purposes=["*"], rate=10_000, feeds=list(CATALOGUE)),
    "slow": dict(agency_code="H31.50", datasets={"enterprises": ["name"]}, purposes=[], rate=0.001, burst=2),
}


@contextmanager
def serve(tmp: Path, *, fail_audit: bool = False, snapshot: bool = True, fetched: datetime | None = None,
          limits: ApiLimits | None = None, check_interval: float = 0.05) -> Iterator[Service]:
    current = tmp / "lake" / "published" / "current.duckdb"
    current.parent.mkdir(parents=True, exist_ok=True)
    if snapshot:
        write_snapshot(current, fetched=fetched)
    clients = tmp / "clients.json"
    keys = {name: register_client(clients, name, **spec) for name, spec in CLIENTS.items()}
    store = SnapshotStore(current, check_interval=check_interval)
    store.load()
    audit = RecordingSink(tmp / "audit", fail=fail_audit)
    app = create_app(store, AccessPolicy(clients, reload_interval=0.05, failure_burst=200), audit, limits)
    try:
        with running(app) as base, requests.Session() as session:
            yield Service(base, keys, audit, current, clients, session)
    finally:
        audit.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with serve(tmp_path_factory.mktemp("lookup")) as service:
        yield service


def citizen(api: Service, personal_id: str, name: str, birth: str, client: str = "full",
            purpose: str | None = "1.001234", **params: Any) -> requests.Response:
    if purpose is not None:
        params["purpose"] = purpose
    return api.get(f"/v1/citizens/{personal_id}", client, name=name, birth_date=birth, **params)


def refused(response: requests.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and body["message"], body
    return body


# --- the 037 rule --------------------------------------------------------------------------------------

def test_fold_name_ignores_case_diacritics_spaces_and_normal_form() -> None:
    folded = fold_name("Nguyễn Văn Đức")
    assert folded == "NGUYENVANDUC"
    assert fold_name(unicodedata.normalize("NFD", "nguyễn  văn đức")) == folded
    assert fold_name("Trần Thị Hòa") == fold_name("Tran Thi Hoà") == "TRANTHIHOA"
    assert fold_name("ÐỖ") == "DO"  # an eth typed for Đ


def test_parse_birth_accepts_the_wire_forms_and_refuses_impossible_dates() -> None:
    assert parse_birth("1990").day is None
    assert parse_birth("19900517").day == parse_birth("1990-05-17").day == date(1990, 5, 17)
    for bad in ("1990-02-30", "90", "1990/05/17", "1990051"):
        with pytest.raises(ValueError):
            parse_birth(bad)


def test_citizen_found_when_name_and_birth_date_match(api: Service) -> None:
    response = citizen(api, DUC, "Nguyễn Văn Đức", "19900517")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "population" and body["purpose"] == "1.001234"
    as_of = datetime.fromisoformat(body["as_of"])
    assert as_of == NOW and datetime.fromisoformat(body["valid_until"]) == as_of + timedelta(hours=24)
    assert body["as_of"].endswith("+07:00")
    assert body["fields"] == FULL_KEY_FIELDS and list(body["record"]) == FULL_KEY_FIELDS
    record = body["record"]
    assert record["personal_id"] == DUC and record["birth_date"] == "1990-05-17"
    assert record["household_book"] == "HP-0001" and record["updated_at"].endswith("+07:00")
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("name, birth", [
    ("TRAN THI HOA", "19950308"), ("Trần Thị Hoà", "1995-03-08"), ("trần thị hòa", "1995"),
    (unicodedata.normalize("NFD", "Trần Thị Hòa"), "19950308"), ("TRẦNTHỊHOÀ", "1995-03-08"),
])
def test_nfd_record_matches_any_spelling_of_the_name(api: Service, name: str, birth: str) -> None:
    response = citizen(api, HOA, name, birth)
    assert response.status_code == 200, response.text
    assert unicodedata.normalize("NFC", response.json()["record"]["given_name"]) == "Trần Thị Hoà"


def test_year_only_record_matches_a_year_but_not_a_full_date(api: Service) -> None:
    assert citizen(api, LAN, "Phạm Ngọc Lan", "2002").status_code == 200
    refused(citizen(api, LAN, "Phạm Ngọc Lan", "20020101"), 404, "not_found")


def test_mismatch_and_unknown_id_get_the_same_404(api: Service) -> None:
    wrong_name = refused(citizen(api, DUC, "Nguyễn Văn Đạt", "19900517"), 404, "not_found")
    wrong_date = refused(citizen(api, DUC, "Nguyễn Văn Đức", "19900518"), 404, "not_found")
    unknown = refused(citizen(api, "031090099999", "Nguyễn Văn Đức", "19900517"), 404, "not_found")
    assert wrong_name == wrong_date == unknown  # the answer does not tell whether the ID exists
    assert "name and date of birth" in unknown["message"]


def test_name_and_birth_date_are_required(api: Service) -> None:
    refused(api.get(f"/v1/citizens/{DUC}", purpose="1.001234", name="Nguyễn Văn Đức"), 400, "missing_parameter")
    refused(api.get(f"/v1/citizens/{DUC}", purpose="1.001234", birth_date="1990"), 400, "missing_parameter")


# --- fields, purposes, clients -----------------------------------------------------------------------

def test_sensitive_fields_only_where_granted(api: Service) -> None:
    refused(citizen(api, DUC, "Nguyễn Văn Đức", "1990", fields="personal_id,ethnicity_code"), 403,
            "field_not_granted")
    granted = citizen(api, DUC, "Nguyễn Văn Đức", "1990", client="sensitive", purpose="2.001999")
    assert granted.status_code == 200
    body = granted.json()
    assert {"ethnicity_code", "religion_code"} <= set(body["fields"])
    assert body["record"]["ethnicity_code"] == "01" and body["record"]["religion_code"] == "00"


def test_asked_fields_are_exactly_what_comes_back(api: Service) -> None:
    body = citizen(api, DUC, "Nguyễn Văn Đức", "1990", fields="given_name,personal_id").json()
    assert body["fields"] == ["given_name", "personal_id"]
    assert body["record"] == {"given_name": "Đức", "personal_id": DUC}
    narrow = citizen(api, DUC, "Nguyễn Văn Đức", "1990", client="narrow").json()
    assert set(narrow["record"]) == set(narrow["fields"]) == {"personal_id", "family_name", "middle_name",
                                                               "given_name", "birth_date"}
    refused(citizen(api, DUC, "Nguyễn Văn Đức", "1990", client="narrow", fields="cmnd"), 403, "field_not_granted")
    refused(citizen(api, DUC, "Nguyễn Văn Đức", "1990", fields="shoe_size"), 400, "unknown_field")


def test_every_person_lookup_names_an_allowed_purpose(api: Service) -> None:
    refused(citizen(api, DUC, "Nguyễn Văn Đức", "1990", purpose=None), 400, "purpose_required")
    refused(citizen(api, DUC, "Nguyễn Văn Đức", "1990", purpose="2.000001"), 403, "purpose_not_allowed")
    refused(citizen(api, DUC, "Nguyễn Văn Đức", "1990", purpose="1.00' OR '1'='1"), 400, "invalid_purpose")
    assert citizen(api, DUC, "Nguyễn Văn Đức", "1990", purpose="H31.22-260301-0042").status_code == 200


@pytest.mark.parametrize("header", [None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer not-a-key",
                                    "Bearer lgsp.full.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                    "Bearer lgsp.nobody.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"])
def test_unauthenticated_requests_get_401(api: Service, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = api.session.get(f"{api.base}/v1/enterprises/{ENTERPRISE}", headers=headers, timeout=10)
    refused(response, 401, "unauthenticated")


def test_dataset_not_granted_is_403(api: Service) -> None:
    refused(api.get(f"/v1/enterprises/{ENTERPRISE}", "narrow"), 403, "dataset_not_granted")
    refused(api.get("/v1/documents/D-0001", "sensitive"), 403, "dataset_not_granted")


def test_rate_limit_answers_429_with_retry_after(api: Service) -> None:
    statuses = [api.get(f"/v1/enterprises/{ENTERPRISE}", "slow").status_code for _ in range(3)]
    assert statuses[:2] == [200, 200]
    last = api.get(f"/v1/enterprises/{ENTERPRISE}", "slow")
    refused(last, 429, "too_many_requests")
    assert int(last.headers["Retry-After"]) >= 1


def test_registered_key_is_stored_hashed_in_an_owner_only_file(api: Service) -> None:
    text = api.clients.read_text()
    for key in api.keys.values():
        assert key.split(".")[2] not in text
    assert stat.S_IMODE(api.clients.stat().st_mode) == 0o600
    with pytest.raises(PolicyFileError):
        register_client(api.clients, "full", "H31.22", {"citizens": ["*"]}, ["*"])
    with pytest.raises(PolicyFileError):
        register_client(api.clients, "bad-grant", "H31.22", {"citizens": ["no_such_field"]}, ["*"])


def test_grants_from_the_command_line() -> None:
    assert parse_grants(["citizens=*,ethnicity_code", "enterprises=name"]) == {
        "citizens": ["*", "ethnicity_code"], "enterprises": ["name"]}
    for bad in ("citizens", "citizens=", "nowhere=*", "citizens=shoe_size"):
        with pytest.raises(PolicyFileError):
            parse_grants([bad])
    star = expand_grant("citizens", ["*"])
    assert "ethnicity_code" not in star and "religion_code" not in star and "given_name" in star
    assert "death_cause" not in expand_grant("civil_events", ["*"])


def test_a_client_registered_while_serving_is_accepted(api: Service) -> None:
    key = register_client(api.clients, "late", "H31.60", {"enterprises": ["name"]}, [], rate=100)
    deadline = time.monotonic() + 10
    while True:
        response = api.session.get(f"{api.base}/v1/enterprises/{ENTERPRISE}",
                                   headers={"Authorization": f"Bearer {key}"}, timeout=10)
        if response.status_code == 200 or time.monotonic() > deadline:
            break
    assert response.status_code == 200 and response.json()["record"] == {"name": "CÔNG TY CỔ PHẦN CẢNG HẢI PHÒNG"}
    assert "late" in read_clients(api.clients)


# --- the other endpoints -----------------------------------------------------------------------------

def test_verify_says_yes_or_no(api: Service) -> None:
    yes = api.post("/v1/citizens/verify", {"purpose": "1.001234", "personal_id": HOA, "name": "Tran Thi Hoa"})
    assert yes.status_code == 200 and yes.json()["exists"] is True, yes.text
    assert yes.json()["source"] == "population" and yes.json()["valid_until"]
    for body in ({"personal_id": HOA, "name": "Tran Thi Hoa", "birth_date": "1996"},
                 {"personal_id": DUC, "name": "Nguyen Van Duc", "cmnd": "031456780"},
                 {"personal_id": "031090099999", "name": "Nguyen Van Duc"}):
        answer = api.post("/v1/citizens/verify", {"purpose": "1.001234", **body})
        assert answer.status_code == 200 and answer.json()["exists"] is False, answer.text
    refused(api.post("/v1/citizens/verify", {"personal_id": HOA, "name": "Tran Thi Hoa"}), 400, "purpose_required")
    refused(api.post("/v1/citizens/verify", {"purpose": "1.001234", "personal_id": HOA, "name": "x", "age": 3}),
            400, "unknown_field")


def test_citizens_batch(api: Service) -> None:
    items = [{"personal_id": DUC, "name": "Nguyễn Văn Đức", "birth_date": "1990-05-17"},
             {"personal_id": HOA, "name": "Somebody Else", "birth_date": "1995"},
             {"personal_id": "031090099999", "name": "Nguyễn Văn Đức", "birth_date": "1990"}]
    response = api.post("/v1/citizens:batch", {"purpose": "1.001234", "fields": ["personal_id", "given_name"],
                                               "items": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["found"] for r in results] == [True, False, False]
    assert results[0]["record"] == {"personal_id": DUC, "given_name": "Đức"} and "record" not in results[1]
    too_many = api.post("/v1/citizens:batch", {"purpose": "1.001234", "items": items * 334})
    assert "at most 1000" in refused(too_many, 400, "batch_too_large")["message"]
    bad = api.post("/v1/citizens:batch", {"purpose": "1.001234", "items": [
        {"personal_id": "031990012345", "name": "A", "birth_date": "1990"}]})
    assert "items/0/personal_id" in refused(bad, 400, "invalid_personal_id")["message"]


def test_service_measures_per_agency_and_month(api: Service) -> None:
    mark = len(api.audit.entries)
    answer = api.get("/v1/service-measures", agency="000.00.02.H31").json()
    assert [(r["agency"], r["month"], r["received"]) for r in answer["records"]] == [
        ("000.00.02.H31", "2026-10", 100), ("000.00.02.H31", "2026-11", 101)]
    assert answer["source"] == "onestop" and answer["purpose"] is None and "as_of" in answer
    [entry] = api.audit.since(mark)
    assert entry.record_keys == ["000.00.02.H31/2026-10", "000.00.02.H31/2026-11"]
    assert len(api.get("/v1/service-measures", month="2026-11", fields="agency,late").json()["records"]) == 2
    assert api.get("/v1/service-measures", agency="000.00.02.H31", month="2026-12").json()["records"] == []
    refused(api.get("/v1/service-measures", month="2026-13"), 400, "invalid_parameter")
    refused(api.get("/v1/service-measures", agency="H31' OR 1=1"), 400, "invalid_parameter")
    refused(api.get("/v1/procedure-times"), 403, "dataset_not_granted")  # granted measures only
    refused(api.get("/v1/service-measures", client="narrow"), 403, "dataset_not_granted")


def test_enterprise_lookups(api: Service) -> None:
    plain = api.get(f"/v1/enterprises/{ENTERPRISE}", fields="name,capital")
    assert plain.status_code == 200 and plain.json()["record"] == {"name": "CÔNG TY CỔ PHẦN CẢNG HẢI PHÒNG",
                                                                    "capital": "12345678901234.56"}
    assert plain.json()["source"] == "business" and plain.json()["valid_until"] is None
    refused(api.get(f"/v1/enterprises/{ENTERPRISE}"), 400, "purpose_required")  # the grant includes representatives
    full = api.get(f"/v1/enterprises/{ENTERPRISE}", purpose="1.009999")
    assert full.json()["record"]["legal_representatives"][0]["id_number"] == DUC
    assert api.get(f"/v1/enterprises/{BRANCH}", fields="name").json()["record"]["name"] == "CHI NHÁNH CẢNG ĐÌNH VŨ"
    assert "check digit" in refused(api.get("/v1/enterprises/0100109107", fields="name"), 400,
                                    "invalid_enterprise_code")["message"]
    refused(api.get(f"/v1/enterprises/{UNKNOWN_ENTERPRISE}", fields="name"), 404, "not_found")
    batch = api.post("/v1/enterprises:batch", {"fields": ["name"], "codes": [ENTERPRISE, UNKNOWN_ENTERPRISE, BRANCH]})
    assert [r["found"] for r in batch.json()["results"]] == [True, False, True], batch.text
    refused(api.post("/v1/enterprises:batch", {"codes": [ENTERPRISE] * 1001}), 400, "batch_too_large")
    assert "codes/1" in refused(api.post("/v1/enterprises:batch", {"fields": ["name"], "codes": [
        ENTERPRISE, "0100109107"]}), 400, "invalid_enterprise_code")["message"]


def test_enterprise_codes_in_the_fixture_are_valid() -> None:
    for code in (ENTERPRISE, UNKNOWN_ENTERPRISE):
        assert enterprise_check_digit(code[:9]) == int(code[9])


def test_civil_events_of_a_person_in_the_population_copy(api: Service) -> None:
    response = api.get(f"/v1/citizens/{HOA}/civil-events", purpose="1.001234", name="Tran Thi Hoa",
                       birth_date="19950308", fields="module,record_id,child_ethnicity,wife_name")
    assert response.status_code == 403  # child_ethnicity is sensitive
    response = api.get(f"/v1/citizens/{HOA}/civil-events", purpose="1.001234", name="Tran Thi Hoa",
                       birth_date="19950308", fields="module,record_id")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "civil"
    assert [(e["role"], e["record"]["module"], e["record"]["record_id"]) for e in body["events"]] == [
        ("wife", "KH", 9002), ("child", "KS", 7001)]
    refused(api.get(f"/v1/citizens/{HOA}/civil-events", purpose="1.001234", name="Somebody Else",
                    birth_date="19950308"), 404, "not_found")


def test_civil_events_of_a_person_outside_the_copy_need_the_event_to_name_them(api: Service) -> None:
    ok = api.get(f"/v1/citizens/{TAM}/civil-events", purpose="1.001234", name="LE VAN TAM", birth_date="1945")
    assert ok.status_code == 200, ok.text
    (event,) = ok.json()["events"]
    assert event["role"] == "deceased" and event["record"]["death_date"] == "2026-09-28"
    assert "death_cause" not in event["record"]  # health data: sensitive
    refused(api.get(f"/v1/citizens/{TAM}/civil-events", purpose="1.001234", name="LE VAN TAM", birth_date="1946"),
            404, "not_found")
    sensitive = api.get(f"/v1/citizens/{TAM}/civil-events", client="sensitive", purpose="2.001000",
                        name="Lê Văn Tám", birth_date="1945-01-01")
    assert sensitive.json()["events"][0]["record"]["death_cause"] == "Bệnh già"


def test_document_status(api: Service) -> None:
    response = api.get("/v1/documents/D-0001", fields="doc_id,status_code,received_at")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "vdxp" and body["record"]["doc_id"] == "D-0001"
    assert [s["status_code"] for s in body["statuses"]] == ["01", "06"]  # in the order they arrived
    assert "edxml" not in CATALOGUE["documents"].columns
    refused(api.get("/v1/documents/D-9999"), 404, "not_found")
    refused(api.get("/v1/documents/D-0001%27%3B--"), 400, "invalid_doc_id")


# --- change feeds ------------------------------------------------------------------------------------

def test_change_feed_pages_and_then_returns_only_what_changed(tmp_path: Path) -> None:
    with serve(tmp_path) as service:
        first = service.get("/v1/changes/enterprises", fields="enterprise_code,name", limit="1")
        assert first.status_code == 200, first.text
        assert [item["key"] for item in first.json()["items"]] == [[ENTERPRISE]]
        second = service.get("/v1/changes/enterprises", fields="name", limit="1", since=first.json()["next"])
        assert [item["key"] for item in second.json()["items"]] == [[BRANCH]]
        caught_up = service.get("/v1/changes/enterprises", fields="name", since=second.json()["next"]).json()
        assert caught_up["items"] == [] and caught_up["next"] == second.json()["next"]
        write_snapshot(service.snapshot, 2, refetched=(ENTERPRISE,))
        changed = _poll(lambda: service.get("/v1/changes/enterprises", fields="name", since=caught_up["next"]),
                        lambda r: r.json()["items"])
        assert [(i["key"], i["record"]) for i in changed.json()["items"]] == [
            ([ENTERPRISE], {"name": "CÔNG TY CỔ PHẦN CẢNG HẢI PHÒNG"})]
        audit = service.audit.entries[-1]
        assert audit.record_keys == [ENTERPRISE] and audit.fields == ["name"]


def test_change_feed_of_civil_events_has_composite_keys_and_needs_a_purpose(api: Service) -> None:
    refused(api.get("/v1/changes/civil_events", fields="module"), 400, "purpose_required")
    page = api.get("/v1/changes/civil_events", purpose="1.001234", fields="module,record_id", limit="2").json()
    assert [item["key"] for item in page["items"]] == [["KH", 9002], ["KS", 7001]]
    rest = api.get("/v1/changes/civil_events", purpose="1.001234", fields="module", since=page["next"]).json()
    assert [item["key"] for item in rest["items"]] == [["KT", 8003]]


def test_change_feed_refusals(api: Service) -> None:
    refused(api.get("/v1/changes/citizens", purpose="1.001234"), 403, "feed_not_granted")
    refused(api.get("/v1/changes/enterprises", "narrow"), 403, "feed_not_granted")
    refused(api.get("/v1/changes/nowhere"), 400, "unknown_dataset")
    for since in ("c1.AAAA", "c1.!!", "garbage", "c1." + "A" * 500):
        refused(api.get("/v1/changes/enterprises", fields="name", since=since), 400, "invalid_cursor")
    for limit in ("0", "1001", "-1", "ten", "١"):
        refused(api.get("/v1/changes/enterprises", fields="name", limit=limit), 400, "invalid_parameter")
    with pytest.raises(PolicyFileError):
        register_client(api.clients, "feed-only", "H31.22", {"citizens": ["*"]}, ["*"], feeds=["enterprises"])


# --- hostile input -----------------------------------------------------------------------------------

INJECTIONS = ["' OR '1'='1", "1; DROP TABLE citizens; --", "<script>alert(1)</script>", "../../etc/passwd",
              "${jndi:ldap://x}", "%00", "\x00", "\u202e", "𝟘𝟛𝟙𝟘𝟡𝟘𝟘𝟙𝟚𝟛𝟜𝟝", "٠٣١٠٩٠٠١٢٣٤٥", "0" * 5000,
              "031090012345\n", "{{7*7}}", "ＤＵＣ"]


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_in_every_parameter_is_a_clear_4xx(api: Service, value: str) -> None:
    attempts = [
        citizen(api, DUC, value, "1990"), citizen(api, DUC, "Nguyễn Văn Đức", value),
        citizen(api, DUC, "Nguyễn Văn Đức", "1990", purpose=value),
        citizen(api, DUC, "Nguyễn Văn Đức", "1990", fields=value),
        api.get("/v1/citizens/" + requests.utils.quote(value, safe=""), purpose="1.001234", name="a",
                birth_date="1990"),
        api.get("/v1/enterprises/" + requests.utils.quote(value, safe="")),
        api.get("/v1/documents/" + requests.utils.quote(value, safe="")),
        api.post("/v1/citizens/verify", {"purpose": "1.001234", "personal_id": value, "name": value}),
        api.post("/v1/citizens:batch", {"purpose": value, "items": [{"personal_id": DUC, "name": value,
                                                                     "birth_date": "1990"}]}),
        api.post("/v1/enterprises:batch", {"codes": [value]}),
        api.get("/v1/enterprises/" + ENTERPRISE, **{value[:50]: "1"}),
    ]
    for response in attempts:
        assert 400 <= response.status_code < 500, (response.request.url, response.status_code, response.text)
        body = response.json()
        assert body["error"] and body["message"]


def _raw_exchange(base: str, head: bytes, chunks: list[bytes]) -> tuple[int, dict[str, Any]]:
    """Send a request by hand (headers, then body chunks) and read the whole answer: the server answers
    413 before a client library would have finished sending."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        for chunk in chunks:
            sock.sendall(chunk)
        received = b""
        while data := sock.recv(65536):
            received += data
            if b"\r\n\r\n" in received and _complete(received):
                break
    head_text, _, body = received.partition(b"\r\n\r\n")
    return int(head_text.split()[1]), orjson.loads(body)


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


@pytest.mark.parametrize("path, error", [
    (f"/v1/citizens/{DUC}%0A", "invalid_personal_id"), ("/v1/citizens/%D9%A0%D9%A3%D9%A1%D9%A0%D9%A9%D9%A0%D9%A0"
                                                        "%D9%A1%D9%A2%D9%A3%D9%A4%D9%A5", "invalid_personal_id"),
    (f"/v1/enterprises/{ENTERPRISE}%0A", "invalid_enterprise_code"), ("/v1/documents/D-0001%0A", "invalid_doc_id"),
])
def test_identifiers_are_read_strictly(api: Service, path: str, error: str) -> None:
    """A trailing newline or Arabic-Indic digits pass Python's ``\\d`` and ``$``; not here."""
    refused(api.get(path, purpose="1.001234", name="a", birth_date="1990") if "citizens" in path else api.get(path),
            400, error)


def test_oversized_malformed_and_mistyped_bodies(api: Service) -> None:
    key = api.keys["full"].encode()
    head = (b"POST /v1/citizens:batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key +
            b"\r\nContent-Type: application/json\r\n")
    status, body = _raw_exchange(api.base, head + b"Content-Length: 2000000\r\n\r\n", [])
    assert (status, body["error"]) == (413, "body_too_large")
    piece = b"x" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] * 17  # 1.06 MB, chunked: no length declared up front
    status, body = _raw_exchange(api.base, head + b"Transfer-Encoding: chunked\r\n\r\n", chunks)
    assert (status, body["error"]) == (413, "body_too_large")
    url = api.base + "/v1/citizens:batch"
    headers = {**api.auth("full"), "Content-Type": "application/json"}
    refused(api.session.post(url, data=b'{"purpose": ', headers=headers, timeout=10), 400, "malformed_json")
    refused(api.session.post(url, data=b"[" * 5000 + b"]" * 5000, headers=headers, timeout=10), 400, "malformed_json")
    refused(api.session.post(url, data=b'{"purpose": "1.001234", "items": [1e999999]}', headers=headers, timeout=10),
            400, "malformed_json")
    refused(api.session.post(url, data=b'{"a": 1}', headers={**api.auth("full"), "Content-Type": "text/plain"},
                             timeout=10), 415, "unsupported_media_type")
    refused(api.post("/v1/citizens:batch", ["not", "an", "object"]), 400, "invalid_body")
    one = [{"personal_id": DUC, "name": "A", "birth_date": "1990"}]
    refused(api.post("/v1/citizens:batch", {"purpose": "1.001234", "items": one, "extra": 1}), 400, "unknown_field")
    refused(api.post("/v1/enterprises:batch", {"codes": [12345]}), 400, "invalid_body")
    refused(api.post("/v1/enterprises:batch?debug=1", {"codes": [ENTERPRISE]}), 400, "unknown_parameter")


def test_unknown_parameters_and_paths_are_refused_in_json(api: Service) -> None:
    refused(citizen(api, DUC, "Nguyễn Văn Đức", "1990", include_deleted="true"), 400, "unknown_parameter")
    repeated = api.session.get(f"{api.base}/v1/enterprises/{ENTERPRISE}?fields=name&fields=capital",
                               headers=api.auth("full"), timeout=10)
    refused(repeated, 400, "invalid_parameter")
    refused(api.get("/v1/admin"), 404, "not_found")
    refused(api.session.delete(f"{api.base}/v1/enterprises/{ENTERPRISE}", timeout=10), 405, "method_not_allowed")


# --- audit -------------------------------------------------------------------------------------------

def test_every_request_is_audited_with_keys_and_fields_but_no_values(api: Service) -> None:
    mark = len(api.audit.entries)
    citizen(api, DUC, "Nguyễn Văn Đức", "1990", fields="personal_id,given_name")
    citizen(api, DUC, "Nguyễn Văn Đạt", "1990")
    citizen(api, DUC, "Nguyễn Văn Đức", "1990", purpose=None)
    api.get(f"/v1/enterprises/{ENTERPRISE}", client=None)
    api.get("/v1/nowhere")
    api.post("/v1/citizens/verify", {"purpose": "1.001234", "personal_id": DUC, "name": "Nguyễn Văn Đức", "x": 1})
    api.get("/openapi.json", client=None)
    entries = api.audit.since(mark)
    assert [e.outcome for e in entries] == [200, 404, 400, 401, 404, 400]
    ok, mismatch, no_purpose, anonymous, nowhere, unknown_field = entries
    assert (ok.client_id, ok.agency_code, ok.purpose, ok.method) == ("full", "H31.22", "1.001234", "GET")
    assert ok.path == "/v1/citizens/{personal_id}" and ok.asked == [DUC]
    assert ok.fields == ["personal_id", "given_name"] and ok.record_keys == [DUC]
    assert ok.at.tzinfo is not None and abs(ok.at - datetime.now(timezone.utc)) < timedelta(minutes=1)
    assert mismatch.record_keys == [] and mismatch.fields == [] and "does not match" in mismatch.detail
    assert "purpose_required" in no_purpose.detail and no_purpose.purpose is None
    assert anonymous.client_id == "" and "unauthenticated" in anonymous.detail
    assert nowhere.path == "/v1/nowhere"
    assert "unknown_field" in unknown_field.detail
    for entry in entries:
        text = repr(entry)
        assert "Nguyễn" not in text and "Đạt" not in text and "Đức" not in text  # names are never logged


def test_the_audit_log_on_disk_tells_who_looked_at_a_person(api: Service) -> None:
    mark = len(api.audit.entries)
    citizen(api, LAN, "Phạm Ngọc Lan", "2002", purpose="H31.22-260301-0042")
    api.audit.real.flush()
    found = [e for e in subject(api.audit.directory, LAN) if e.purpose == "H31.22-260301-0042"]
    assert [(e.client_id, e.outcome, e.record_keys) for e in found] == [("full", 200, [LAN])]
    assert len(api.audit.entries) == mark + 1
    api.audit.real.checkpoint()
    report = verify(api.audit.directory, api.audit.real.public_key)
    assert report.ok and report.entries >= len(api.audit.entries), report.summary()


def test_durable_audit_mode_answers_after_the_entry_is_on_disk(tmp_path: Path) -> None:
    with serve(tmp_path, limits=ApiLimits(audit_durable=True)) as service:
        response = citizen(service, DUC, "Nguyễn Văn Đức", "1990")
        assert response.status_code == 200
        assert service.audit.real.durable_seq >= int(response.headers["x-audit-entry"])


def test_answers_are_withheld_when_the_audit_log_fails(tmp_path: Path) -> None:
    with serve(tmp_path, fail_audit=True) as service:
        response = citizen(service, DUC, "Nguyễn Văn Đức", "1990")
        body = refused(response, 503, "audit_unavailable")
        assert DUC not in response.text and "record" not in body


def test_answers_are_withheld_once_the_audit_writer_process_is_gone(tmp_path: Path) -> None:
    write_snapshot(tmp_path / "current.duckdb")
    store = SnapshotStore(tmp_path / "current.duckdb")
    store.load()
    clients = tmp_path / "clients.json"
    key = register_client(clients, "full", **CLIENTS["full"])
    audit = AuditLogProcess(tmp_path / "audit")
    headers = {"Authorization": f"Bearer {key}"}
    params = {"purpose": "1.001234", "name": "Nguyễn Văn Đức", "birth_date": "1990"}
    try:
        with running(create_app(store, AccessPolicy(clients), audit, ApiLimits(audit_durable=True))) as base:
            served = requests.get(f"{base}/v1/citizens/{DUC}", params=params, headers=headers, timeout=10)
            assert served.status_code == 200 and audit.durable_seq >= int(served.headers["x-audit-entry"])
            audit._child.kill()
            audit._child.wait(30)
            for _ in range(2):  # the one that finds the writer gone, and every one after it
                withheld = requests.get(f"{base}/v1/citizens/{DUC}", params=params, headers=headers, timeout=10)
                body = refused(withheld, 503, "audit_unavailable")
                assert DUC not in withheld.text and "record" not in body
    finally:
        audit.close()


def test_the_app_wired_from_settings_serves_the_hub_home(tmp_path: Path) -> None:
    home = tmp_path / "hub"
    (home / "lake" / "published").mkdir(parents=True)
    write_snapshot(home / "lake" / "published" / "current.duckdb")
    key = register_client(home / "clients.json", "full", **CLIENTS["full"])
    environ = {"HUB_HOME": str(home), "HUB_AUDIT_FLUSH_MS": "0"}
    app = app_from_settings(Settings.from_env(environ), environ)
    with running(app) as base:
        response = requests.get(f"{base}/v1/enterprises/{ENTERPRISE}", params={"fields": "name"},
                                headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert response.status_code == 200, response.text
    (found,) = subject(home / "audit", ENTERPRISE)
    assert (found.client_id, found.outcome, found.fields) == ("full", 200, ["name"])


def test_an_internal_failure_is_a_clear_500_and_is_audited(tmp_path: Path) -> None:
    class FailingStore(SnapshotStore):
        def poll(self) -> None:
            raise RuntimeError("the disk went away")

    write_snapshot(tmp_path / "current.duckdb")
    store = FailingStore(tmp_path / "current.duckdb")
    clients = tmp_path / "clients.json"
    key = register_client(clients, "full", **CLIENTS["full"])
    audit = RecordingSink(tmp_path / "audit")
    try:
        with running(create_app(store, AccessPolicy(clients), audit)) as base:
            response = requests.get(f"{base}/v1/enterprises/{ENTERPRISE}", params={"fields": "name"},
                                    headers={"Authorization": f"Bearer {key}"}, timeout=10)
    finally:
        audit.close()
    refused(response, 500, "internal_error")
    assert "disk" not in response.text  # no internals in the answer
    (entry,) = audit.entries
    assert (entry.outcome, entry.client_id, entry.detail) == (500, "full", "internal error")


def test_invalid_keys_are_audited_as_asked(api: Service) -> None:
    mark = len(api.audit.entries)
    api.get("/v1/enterprises/0100109107", fields="name")
    (entry,) = api.audit.since(mark)
    assert entry.outcome == 400 and entry.asked == ["0100109107"] and entry.path == "/v1/enterprises/{code}"


def test_audit_entry_number_is_returned(api: Service) -> None:
    response = api.get(f"/v1/enterprises/{ENTERPRISE}", fields="name")
    assert int(response.headers["x-audit-entry"]) >= 1


# --- snapshots ---------------------------------------------------------------------------------------

def test_expired_population_copy_is_not_served(tmp_path: Path) -> None:
    with serve(tmp_path, fetched=NOW - timedelta(hours=25)) as service:
        body = refused(citizen(service, DUC, "Nguyễn Văn Đức", "1990"), 503, "copy_expired")
        assert "Decree 47/2020" in body["message"]
        assert service.get(f"/v1/enterprises/{ENTERPRISE}", fields="name").status_code == 200  # no agreed period


def test_no_snapshot_yet_is_503_then_served_once_published(tmp_path: Path) -> None:
    with serve(tmp_path, snapshot=False) as service:
        refused(citizen(service, DUC, "Nguyễn Văn Đức", "1990"), 503, "no_snapshot")
        write_snapshot(service.snapshot)
        response = _poll(lambda: citizen(service, DUC, "Nguyễn Văn Đức", "1990"), lambda r: r.status_code == 200)
        assert response.json()["record"]["household_book"] == "HP-0001"


def test_a_broken_snapshot_keeps_the_previous_one(tmp_path: Path) -> None:
    with serve(tmp_path) as service:
        broken = service.snapshot.with_name("broken.duckdb")
        broken.write_bytes(b"this is not a database")
        os.replace(broken, service.snapshot)
        health = _poll(lambda: service.session.get(service.base + "/healthz", timeout=10),
                       lambda r: r.json()["last_error"] is not None)
        assert health.json()["status"] == "ok"
        assert citizen(service, DUC, "Nguyễn Văn Đức", "1990").status_code == 200


def test_snapshot_swaps_under_load_drop_no_request(tmp_path: Path) -> None:
    """Two clients hammer lookups over HTTP while the pipeline publishes three new snapshots; every
    request succeeds, and each client's answers move to each new snapshot and never back."""
    with serve(tmp_path) as service:
        seen: list[list[int]] = [[], []]
        failures: list[str] = []
        progress = threading.Condition()
        stop = threading.Event()

        def hammer(mine: list[int]) -> None:
            params = {"purpose": "1.001234", "name": "Nguyen Van Duc", "birth_date": "1990", "fields": "household_book"}
            with requests.Session() as session:
                while not stop.is_set() and len(mine) < 200_000:
                    response = session.get(f"{service.base}/v1/citizens/{DUC}", headers=service.auth("full"),
                                           params=params, timeout=10)
                    with progress:
                        if response.status_code == 200:
                            mine.append(int(response.json()["record"]["household_book"][3:]))
                        else:
                            failures.append(f"{response.status_code} {response.text}")
                        progress.notify_all()

        threads = [threading.Thread(target=hammer, args=(mine,), daemon=True) for mine in seen]
        for thread in threads:
            thread.start()
        try:
            for version in (2, 3, 4):
                write_snapshot(service.snapshot, version, extra_citizens=20_000)
                with progress:
                    assert progress.wait_for(lambda: all(m and m[-1] == version for m in seen), timeout=60), seen
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        assert failures == []
        for mine in seen:
            assert mine == sorted(mine) and {1, 2, 3, 4} >= set(mine) >= {2, 3, 4}
        assert sum(map(len, seen)) > 100


def test_the_store_indexes_civil_events_and_statuses(tmp_path: Path) -> None:
    snapshot = read_snapshot(write_snapshot(tmp_path / "s.duckdb"))
    assert {name: len(copy.rows) for name, copy in snapshot.datasets.items()} == {
        "citizens": 3, "civil_events": 3, "enterprises": 2, "documents": 3, "service_measures": 3,
        "procedure_times": 1}
    assert len(snapshot.person_events.get(HOA)) == 2 and snapshot.person_events.get("03109001234") == []
    copy = snapshot.datasets["citizens"]
    assert copy.rows.find(DUC) is not None and copy.rows.find(DUC + "0") is None and copy.rows.find(DUC[:-1]) is None
    assert copy.as_of_basis == "max(fetched_at)"


def test_the_publisher_s_data_time_wins_over_fetched_at(tmp_path: Path) -> None:
    synced = NOW - timedelta(hours=3)
    snapshot = read_snapshot(write_snapshot(tmp_path / "s.duckdb", meta_as_of=synced))
    copy = snapshot.datasets["citizens"]
    assert (copy.as_of, copy.as_of_basis) == (synced, "snapshot_meta")
    assert copy.valid_until == synced + timedelta(hours=24) and copy.valid_until_text.endswith("+07:00")
    assert snapshot.datasets["enterprises"].as_of_basis == "max(fetched_at)"


def test_row_table_reads_rows_across_arrow_chunks() -> None:
    rows = pa.chunked_array([pa.array(['["a", 1]', '["b", 2]']), pa.array([], pa.string()),
                             pa.array(['["c", null]'])])  # plain strings, an empty chunk: both handled
    table = RowTable(("key", "n"), rows, np.array(["a", "b", "c"]))
    assert len(table) == 3 and [table.values(i) for i in range(3)] == [["a", 1], ["b", 2], ["c", None]]
    assert table.find("c") == 2 and table.find("d") is None and table.find("cc") is None


def test_row_table_projects_any_field_list_in_its_order() -> None:
    table = RowTable(("a", "b", "c"), pa.chunked_array([pa.array(['["x", 1, null]'])]), np.array(["x"]))
    values = table.values(0)
    assert table.projector(("c", "a"))(values) == {"c": None, "a": "x"}
    assert list(table.projector(("c", "a"))(values)) == ["c", "a"]
    assert table.projector(("b",))(values) == {"b": 1} and table.projector(())(values) == {}
    assert table.picker(("b",))(values) == (1,) and table.picker(("b", "a"))(values) == (1, "x")
    with pytest.raises(KeyError):
        table.picker(("missing",))


def test_row_table_searches_digit_keys_by_value_in_two_levels() -> None:
    rng = np.random.default_rng(7)
    numbers = np.unique(rng.integers(10**11, 10**12, 5000))
    keys = np.array([f"{n:012d}" for n in numbers])
    table = RowTable(("key",), pa.chunked_array([pa.array([f'["{k}"]' for k in keys])]), keys)
    assert table._int_keys is not None  # the two-level search over int64 values is the one exercised
    assert [table.find(str(k)) for k in keys] == list(range(len(keys)))
    for probe in rng.integers(10**11, 10**12, 2000):
        text = f"{probe:012d}"
        low = int(np.searchsorted(keys, text))
        assert table.find(text) == (low if low < len(keys) and keys[low] == text else None)
    first = str(keys[0])
    for absent in ("0" * 12, "9" * 12, first[:-1], first + "0", " " + first[1:], first[:-1] + "\uff11",
                   first[:-1] + "\u0661", "", "+" + first[1:]):
        assert table.find(absent) is None, absent
    single = RowTable(("key",), pa.chunked_array([pa.array(['["a"]'])]), np.array(["031090012345"]))
    assert single.find("031090012345") == 0 and single.find("031090012346") is None
    mixed = np.array(["031090012345", "0310900123AB"])  # not all digits: searched as text
    text_table = RowTable(("key",), pa.chunked_array([pa.array(['["a"]', '["b"]'])]), mixed)
    assert text_table._int_keys is None and text_table.find("0310900123AB") == 1


@settings(max_examples=3000, deadline=None, derandomize=True, database=None)
@given(raw=st.one_of(st.binary(max_size=60), st.lists(st.sampled_from(
    ["a", "b", "=", "&", "+", "%", "%2", "%26", "%3D", "%3d", "%2B", "%25", "%5C", "%E1%BB%85", "%C4", "%zz", "\\",
     "\\x41", "é", "\x80", "name", "purpose", " "]), max_size=25).map(lambda parts: "".join(parts).encode("utf-8"))))
def test_query_strings_are_read_as_starlette_reads_them(raw: bytes) -> None:
    assert _query_items(raw) == parse_qsl(raw.decode("latin-1"), keep_blank_values=True)


async def _asgi(app: Callable[..., Any], scope: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(dict(scope), receive, send)
    (start,) = [m for m in messages if m["type"] == "http.response.start"]
    return start["status"], list(start["headers"]), b"".join(m.get("body", b"") for m in messages[1:])


def _citizen_scope(personal_id: str, query: str, authorization: str | None) -> dict[str, Any]:
    path = f"/v1/citizens/{personal_id}"
    headers = [(b"host", b"lookup.test"), (b"user-agent", b"differential")]
    if authorization is not None:
        headers.append((b"authorization", authorization.encode("latin-1")))
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "server": ("127.0.0.1", 8800), "client": ("127.0.0.1", 50123), "scheme": "http", "method": "GET",
            "root_path": "", "path": path, "raw_path": path.encode(), "query_string": query.encode("latin-1"),
            "headers": headers}


def _differential_requests(keys: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """(personal ID, query string, Authorization) for GET /v1/citizens/{personal_id}: answers, every
    kind of refusal, and the spellings the 037 rule folds."""
    def q(**params: str) -> str:
        return urlencode(params)

    duc = dict(purpose="1.001234", name="Nguyễn Văn Đức", birth_date="19900517")
    full, narrow, sensitive = (f"Bearer {keys[name]}" for name in ("full", "narrow", "sensitive"))
    return [
        (DUC, q(**duc), full), (DUC, q(**duc), full),  # the second from the caches the first one filled
        (DUC, q(**duc, fields="given_name,personal_id"), full),
        (DUC, q(**duc, fields="given_name,personal_id"), full),
        (HOA, q(purpose="1.001234", name=unicodedata.normalize("NFD", "Trần Thị Hòa"), birth_date="1995"), full),
        (HOA, "purpose=1.001234&name=TRAN+THI+HOA&birth_date=1995-03-08", full),
        (HOA, "purpose=1.001234&name=Tr%E1%BA%A7n%20Th%E1%BB%8B%20Ho%C3%A0&birth_date=19950308", full),
        (LAN, q(purpose="H31.22-260301-0042", name="Phạm Ngọc Lan", birth_date="2002"), full),
        (LAN, q(purpose="H31.22-260301-0042", name="Phạm Ngọc Lan", birth_date="20020101"), full),
        (DUC, q(**{**duc, "name": "Nguyễn Văn Đạt"}), full), ("031090099999", q(**duc), full),
        (DUC, q(purpose="1.001234", name="Nguyễn Văn Đức"), full),
        (DUC, q(purpose="1.001234", birth_date="1990"), full),
        (DUC, q(purpose="1.001234", name="   ", birth_date="1990"), full),
        (DUC, q(**{**duc, "birth_date": "1990-02-30"}), full), (DUC, q(**{**duc, "birth_date": "19900517000"}), full),
        (DUC, q(**{**duc, "name": "Nguyễn\x07Văn"}), full), (DUC, q(**{**duc, "name": "Đ" * 201}), full),
        (DUC, q(**{**duc, "name": "Nguyễn\u00a0Văn Đức"}), full),
        (DUC, q(name="Nguyễn Văn Đức", birth_date="1990"), full),
        (DUC, q(**{**duc, "purpose": "2.000001"}), full), (DUC, q(**{**duc, "purpose": "1.00' OR '1'='1"}), full),
        (DUC, q(**{**duc, "purpose": "1.001234" * 12}), full),
        (DUC, q(**duc, include_deleted="true"), full), (DUC, q(**duc) + "&name=x", full),
        (DUC, q(**duc, fields="shoe_size"), full), (DUC, q(**duc, fields="Given_Name"), full),
        (DUC, q(**duc, fields="personal_id,ethnicity_code"), full), (DUC, q(**duc, fields=""), full),
        (DUC, q(**duc, fields="personal_id,personal_id"), full),
        (DUC, q(**{**duc, "purpose": "2.001999"}), sensitive),
        (DUC, q(**{**duc, "purpose": "2.001999"}, fields="ethnicity_code,religion_code"), sensitive),
        (DUC, q(**duc), narrow), (DUC, q(**duc, fields="cmnd"), narrow),
        ("031990012345", q(**duc), full), ("12345", q(**duc), full), ("03109001234\uff15", q(**duc), full),
        ("000090012345", q(**duc), full), ("verify", q(**duc), full), ("x" * 60, q(**duc), full),
        ("0310900 2345", q(**duc), full),
        (DUC, q(**duc), None), (DUC, q(**duc), "Basic dXNlcjpwYXNz"), (DUC, q(**duc), "Bearer"),
        (DUC, q(**duc), "bearer " + keys["full"]), (DUC, q(**duc), "Bearer   " + keys["full"] + "  "),
        (DUC, q(**duc), "Bearer lgsp.full.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        (DUC, q(**duc), "Bearer " + keys["full"][:-1]), (DUC, q(**duc), "Bearer " + keys["full"] + "x"),
        (DUC, q(**duc), f"Bearer {keys['off']}"), (DUC, q(**duc), f"Bearer {keys['off']}"),
        *[(DUC, q(**duc), f"Bearer {keys['tight']}")] * 4, (DUC, q(**duc), full),
    ]


def _differential_apps(tmp: Path, name: str, snapshot: Path, clients: Path, *, fail_audit: bool = False,
                       store_class: type[SnapshotStore] = SnapshotStore,
                       plain_log: type[AuditLog] | type[AuditLogProcess] | None = None,
                       ) -> tuple[Any, RecordingSink | AuditLog | AuditLogProcess]:
    store = store_class(snapshot, check_interval=3600)
    if store_class is SnapshotStore:
        store.load()
    sink = plain_log(tmp / f"audit-{name}") if plain_log else RecordingSink(tmp / f"audit-{name}", fail=fail_audit)
    return create_app(store, AccessPolicy(clients, reload_interval=3600), sink), sink


def _entries(sink: RecordingSink | AuditLog | AuditLogProcess) -> list[dict[str, Any]]:
    """The entries a sink took, without their moment (and, read back from a log's lines, without the
    hashes that cover it)."""
    if isinstance(sink, (AuditLog, AuditLogProcess)):
        lines = b"".join(path.read_bytes() for path in sorted(sink.directory.glob("audit-*.jsonl"))).splitlines()
        return [{k: v for k, v in orjson.loads(line).items() if k not in ("at", "hash", "prev_hash")} for line in lines]
    return [{k: v for k, v in entry.to_record().items() if k != "at"} for entry in sink.entries]


@pytest.mark.parametrize("scenario", ["served", "served_log", "served_process", "expired", "no_snapshot",
                                      "audit_fails", "store_fails"])
def test_the_direct_citizen_path_answers_exactly_as_the_starlette_route(tmp_path: Path, scenario: str) -> None:
    """``LookupApp`` answers ``GET /v1/citizens/{personal_id}`` itself; the same request through the
    framework (its route and AuditMiddleware) must get the same status, headers and body bytes, and
    leave the same audit entries (numbers included), for every answer and every refusal, and through
    the caches the first requests fill. Two apps from the same files, one driven each way; with the
    audit log as the sink itself (``served_log``, and written by its own process as ``hub api serve``
    writes it: ``served_process``) the direct path appends field by field (``append_request``), and
    the lines it writes are compared."""
    snapshot = tmp_path / "current.duckdb"
    if scenario != "no_snapshot":
        write_snapshot(snapshot, fetched=NOW - timedelta(hours=25) if scenario == "expired" else None)
    clients = tmp_path / "clients.json"
    keys = {name: register_client(clients, name, **spec) for name, spec in CLIENTS.items()}
    keys["off"] = register_client(clients, "off", "H31.80", {"citizens": ["*"]}, ["*"], rate=10_000)
    keys["tight"] = register_client(clients, "tight", "H31.81", {"citizens": ["*"]}, ["*"], rate=0.001, burst=2)
    document = orjson.loads(clients.read_bytes())
    for entry in document["clients"]:
        entry["disabled"] = entry["client_id"] == "off"
    clients.write_bytes(orjson.dumps(document))

    class FailingStore(SnapshotStore):
        def poll(self) -> None:
            raise RuntimeError("the disk went away")

    logs = {"served_log": AuditLog, "served_process": AuditLogProcess}
    options = {"fail_audit": scenario == "audit_fails", "plain_log": logs.get(scenario),
               "store_class": FailingStore if scenario == "store_fails" else SnapshotStore}
    direct, direct_sink = _differential_apps(tmp_path, "direct", snapshot, clients, **options)
    routed, routed_sink = _differential_apps(tmp_path, "routed", snapshot, clients, **options)
    decided = []  # how the direct path decided: in one pass (bytes), step by step (None), or refused
    one_pass = direct.service.fast_citizen

    def counted(*args: Any) -> bytes | None:
        try:
            decided.append(type(answer := one_pass(*args)).__name__)
        except RequestRefused:
            decided.append("refused")
            raise
        return answer

    direct.service.fast_citizen = counted
    try:
        async def drive() -> list[tuple[Any, Any]]:
            pairs = []
            for personal_id, query, authorization in _differential_requests(keys):
                scope = _citizen_scope(personal_id, query, authorization)
                pairs.append((await _asgi(direct, scope), await _asgi(partial(Starlette.__call__, routed), scope)))
            return pairs

        pairs = asyncio.run(drive())
    finally:
        direct_sink.close()
        routed_sink.close()
    statuses = set()
    for request, (mine, theirs) in zip(_differential_requests(keys), pairs):
        assert mine == theirs, request
        statuses.add(mine[0])
    expected = {"served": {200, 400, 401, 403, 404, 429}, "served_log": {200, 400, 401, 403, 404, 429},
                "served_process": {200, 400, 401, 403, 404, 429},
                "expired": {400, 401, 403, 429, 503},
                "no_snapshot": {400, 401, 403, 429, 503}, "audit_fails": {503},
                "store_fails": {400, 401, 403, 429, 500}}
    assert statuses == expected[scenario]
    assert _entries(direct_sink) == _entries(routed_sink)
    if scenario != "audit_fails":
        assert len(_entries(direct_sink)) == len(pairs)
    if scenario in ("served", "served_log", "served_process", "audit_fails"):
        # both ways of deciding were compared, answers and refusals
        assert {"bytes", "NoneType", "refused"} <= set(decided), decided


def test_policy_decisions_are_remembered_per_client_object(tmp_path: Path) -> None:
    clients = tmp_path / "clients.json"
    register_client(clients, "full", **CLIENTS["full"])
    policy = AccessPolicy(clients, reload_interval=0)
    client = policy._clients["full"]
    fields = policy.grant(client, "citizens", ("given_name", "personal_id"), "1.001234")
    assert fields == ("given_name", "personal_id")
    assert policy.known_grant(client, "citizens", ("given_name", "personal_id"), "1.001234") == fields
    assert policy.known_grant(client, "citizens", ("given_name",), "1.001234") is None
    with pytest.raises(RequestRefused):
        policy.grant(client, "citizens", ("ethnicity_code",), "1.001234")
    assert policy.known_grant(client, "citizens", ("ethnicity_code",), "1.001234") is None  # refusals recomputed
    register_client(clients, "full", "H31.22", {"citizens": ["personal_id"]}, ["1.001*"], replace=True)
    policy.reload()
    changed = policy._clients["full"]
    assert policy.known_grant(changed, "citizens", ("given_name", "personal_id"), "1.001234") is None
    with pytest.raises(RequestRefused):  # the narrower grant takes effect at once
        policy.grant(changed, "citizens", ("given_name", "personal_id"), "1.001234")
    assert policy.known_grant(client, "citizens", ("given_name", "personal_id"), "1.001234") is None


def test_a_verified_key_is_remembered_only_as_sent_and_compared_whole(tmp_path: Path) -> None:
    clients = tmp_path / "clients.json"
    key = register_client(clients, "full", **CLIENTS["full"])
    policy = AccessPolicy(clients, reload_interval=3600)
    assert policy.cached_client(key) is None
    assert policy.check_key(key, "127.0.0.1").client_id == "full"
    assert policy.cached_client(key).client_id == "full"
    secret = key.rsplit(".", 1)[1]
    for wrong in (key[:-1] + ("A" if key[-1] != "A" else "B"), key[:-1], key + "A", key.rsplit(".", 1)[0], "",
                  f"lgsp.full.{secret[::-1]}", "lgsp.full", key.replace("lgsp.full.", "lgsp.fulx.")):
        assert policy.cached_client(wrong) is None, wrong
    assert len(policy._verified) == 1  # one per client, filed under its public part
    register_client(clients, "full", **CLIENTS["full"], replace=True)
    policy.reload()
    assert policy.cached_client(key) is None  # a re-read file forgets every remembered key


def _poll(probe: Callable[[], Any], done: Callable[[], Any] | Callable[[Any], bool], timeout: float = 30) -> Any:
    """Repeat an HTTP probe until ``done`` holds, failing at the deadline (each probe is a round trip,
    so this paces itself)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not done within {timeout} s; last value {value!r}")


# --- contract ----------------------------------------------------------------------------------------

def test_openapi_document_and_docs_page(api: Service) -> None:
    document = api.session.get(api.base + "/openapi.json", timeout=10).json()
    assert document == orjson.loads(orjson.dumps(openapi_document()))
    assert document["openapi"].startswith("3.")
    page = api.session.get(api.base + "/docs", timeout=10)
    assert page.headers["content-type"].startswith("text/html") and "<script" not in page.text
    for path in document["paths"]:
        assert path in page.text


# --- fuzzing against the contract -----------------------------------------------------------------

CONTRACT = schemathesis.openapi.from_dict(openapi_document())
OPERATIONS = [(path, method) for path, methods in openapi_document()["paths"].items() for method in methods]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
#: Known records for the third pass, so that generated queries reach the lookups and the answers.
KNOWN: dict[str, dict[str, Any]] = {
    "/v1/citizens/{personal_id}": {"path_parameters": {"personal_id": HOA},
                                   "query": {"name": "Tran Thi Hoa", "birth_date": "1995"}},
    "/v1/citizens/{personal_id}/civil-events": {"path_parameters": {"personal_id": TAM},
                                                "query": {"name": "Le Van Tam", "birth_date": "1945"}},
    "/v1/enterprises/{code}": {"path_parameters": {"code": ENTERPRISE}},
    "/v1/documents/{doc_id}": {"path_parameters": {"doc_id": "D-0001"}},
    "/v1/changes/{dataset}": {"path_parameters": {"dataset": "enterprises"}, "query": {"fields": "name,status_code"}},
}


@pytest.mark.parametrize("mode", ["valid", "invalid", "known"])
@pytest.mark.parametrize("path, method", OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_fuzz_every_operation_against_the_openapi_document(api: Service, path: str, method: str, mode: str) -> None:
    """Schemathesis generates requests from the document (valid ones, ones that break it, and valid
    ones about records that exist) and checks that none gets a 5xx, that invalid ones are refused,
    and that every answer matches the documented statuses, media types and schemas. Derandomised:
    the same cases every run."""
    operation = CONTRACT[path][method.upper()]
    generation = GenerationMode.NEGATIVE if mode == "invalid" else GenerationMode.POSITIVE
    fixed = KNOWN.get(path, {}) if mode == "known" else {}
    seen: set[int] = set()

    @settings(max_examples=60, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=generation, **fixed))
    def check(case: Any) -> None:
        # a case whose headers break the document keeps them: a valid key put over a missing or broken
        # Authorization would repair the case, and a refusal expected of it would not come
        broken_headers = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
        response = case.call_and_validate(base_url=api.base, headers=None if broken_headers else api.auth("fuzzer"),
                                          checks=CHECKS, timeout=10)
        seen.add(response.status_code)

    check()
    if mode == "known" and path in KNOWN:
        assert 200 in seen, seen
