"""The civil-status sandbox (national-systems.md §2) over real HTTP: auth, operations, errors, paging,
ground truth, determinism and the record faults a resuming client must survive."""

from __future__ import annotations

import base64
import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, Iterator

import pytest
import requests

from sandbox import names
from sandbox.auth import AuthError, Client, TokenIssuer
from sandbox.civil_status import FIELDS, MODULES, YEAR
from sandbox.faults import FaultPlan
from sandbox.province import CIVIL_YEARS, VN_TZ
from tests.conftest import RunningSandbox

API = "/apiHoTichTuPhap/"
MOMENT = "%d/%m/%Y %H:%M:%S"
#: role -> (name field, birth-date field, ID field) of each module's people, to check against the truth.
PEOPLE = {
    "KS": {"child": ("nksHoTen", "nksNgaySinh", "soDinhDanh"), "mother": ("meHoTen", "meNgaySinh", "meSoDDCN"),
           "father": ("chaHoTen", "chaNgaySinh", "chaSoDDCN"), "requester": ("nycHoTen", None, "nycSoDDCN")},
    "KT": {"deceased": ("nktHoTen", "nktNgaySinh", "nktSoGiayToTuyThan"), "requester": ("nycHoTen", None, "nycSoDDCN")},
    "KH": {"husband": ("chongHoTen", "chongNgaySinh", "chongSoGiayToTuyThan"),
           "wife": ("voHoTen", "voNgaySinh", "voSoGiayToTuyThan")},
}
KIND_FIELD = {"nktSoGiayToTuyThan": "nktLoaiGiayToTuyThan", "chongSoGiayToTuyThan": "chongLoaiGiayToTuyThan",
              "voSoGiayToTuyThan": "voLoaiGiayToTuyThan"}


class Civil:
    """A minimal client of the registry: a token, then POSTs that return the raw response."""

    def __init__(self, sb: RunningSandbox) -> None:
        self.sb = sb
        self.base = sb.env["HUB_CIVIL_URL"]
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.token()}"

    def token(self, secret: str | None = None) -> str:
        response = self.token_response(secret)
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def token_response(self, secret: str | None = None) -> requests.Response:
        env = self.sb.env
        return requests.post(f"{self.base}/token", data={"grant_type": "client_credentials"},
                             auth=(env["HUB_CIVIL_CLIENT_ID"], secret or env["HUB_CIVIL_CLIENT_SECRET"]), timeout=10)

    def post(self, operation: str, body: Any = None, **kwargs) -> requests.Response:
        if body is not None:
            kwargs["json"] = body
        return self.session.post(f"{self.base}{API}{operation}", timeout=10, **kwargs)

    def ok(self, operation: str, body: Any) -> Any:
        response = self.post(operation, body)
        assert response.status_code == 200, response.text
        payload = response.json()
        assert payload["status"] == 1
        return payload["data"]

    def page(self, module: str, day: str, trang: int, size: int) -> dict[str, Any]:
        return self.ok("dsHoSoDangKy", {"maTinh": "31", "module": module, "ngayCapNhat": day, "trang": trang,
                                        "soLuong": size})

    def records(self, module: str, ids: list[int]) -> list[dict[str, Any]]:
        out = []
        for k in range(0, len(ids), 100):
            out += self.ok("traDanhSachHoSo", {"maTinh": "31", "module": module, "dsMaHoSo": ids[k:k + 100]})
        return out


@pytest.fixture(scope="module")
def civil(clean_sandbox: RunningSandbox) -> Civil:
    return Civil(clean_sandbox)


def registry_ids(sb: RunningSandbox, module: str) -> list[int]:
    return sorted(sb.sandbox.civil.registry.ids(module))


def window_days(sb: RunningSandbox) -> Iterator[str]:
    """Every day from the start of the registry's window to tomorrow (server clock), as dd/MM/yyyy."""
    as_of = sb.sandbox.residents.as_of
    day = datetime.fromtimestamp(as_of - CIVIL_YEARS * YEAR, VN_TZ).date() - timedelta(days=1)
    last = max(datetime.fromtimestamp(as_of, VN_TZ), datetime.now(VN_TZ)).date() + timedelta(days=1)
    while day <= last:
        yield day.strftime("%d/%m/%Y")
        day += timedelta(days=1)


def assert_error(response: requests.Response, http_status: int, code: str) -> dict[str, Any]:
    assert response.status_code == http_status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == 0 and body["errorCode"] == code and body["errorDesc"] and body["errorMessage"]
    return body


def fold(text: str) -> str:
    return "".join(names.strip_diacritics(text).upper().split())


# -- authentication -------------------------------------------------------------------------------

def test_wrong_secret_gets_oauth_error(civil: Civil) -> None:
    response = civil.token_response(secret="not-the-secret")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("authorization", [None, "Bearer garbage-token", "Basic abc", "Bearer "])
def test_bad_bearer_gets_envelope_100(civil: Civil, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = requests.post(f"{civil.base}{API}danhMuc", json={"loaiDanhMuc": 1}, headers=headers, timeout=10)
    body = assert_error(response, 401, "100")
    assert body["errorDesc"] == "AUTHEN_ERROR"


def test_token_lifetime_is_honoured_over_http(sandbox_factory) -> None:
    with sandbox_factory(residents=300, seed=1, token_lifetime_s=0.3) as sb:
        client = Civil(sb)
        assert client.ok("danhMuc", {"loaiDanhMuc": 5})
        time.sleep(0.4)
        assert_error(client.post("danhMuc", {"loaiDanhMuc": 5}), 401, "100")


def test_token_expires_on_the_issuers_clock() -> None:
    now = [1_000.0]
    issuer = TokenIssuer({"hub": Client("hub", "s3cret")}, lifetime_s=300, clock=lambda: now[0])
    token, expires_in = issuer.issue("Basic " + base64.b64encode(b"hub:s3cret").decode())
    assert expires_in == 300
    now[0] += 299.9
    assert issuer.check(f"Bearer {token}")[0].name == "hub"
    now[0] += 0.2
    with pytest.raises(AuthError, match="expired"):
        issuer.check(f"Bearer {token}")


def test_rate_limit_answers_429_with_retry_after(sandbox_factory) -> None:
    with sandbox_factory(residents=300, seed=1, rate_limit=2) as sb:
        client = Civil(sb)
        responses = [client.post("danhMuc", {"loaiDanhMuc": 5}) for _ in range(8)]
        limited = [r for r in responses if r.status_code == 429]
        assert limited and responses[0].status_code == 200
        assert_error(limited[0], 429, "429")
        assert int(limited[0].headers["Retry-After"]) >= 1


# -- operations -----------------------------------------------------------------------------------

def test_list_then_fetch_every_way(civil: Civil, clean_sandbox: RunningSandbox) -> None:
    registry = clean_sandbox.sandbox.civil.registry
    module = "KH"
    row = 0
    record = registry.render(module, row)
    day = record["ngayCapNhat"][:10]
    listed = civil.page(module, day, 1, 1000)
    assert record["id"] in [e["id"] for e in listed["ds"]]
    assert listed["tongSo"] == len(listed["ds"])
    entry = next(e for e in listed["ds"] if e["id"] == record["id"])
    assert entry == {"id": record["id"], "maDonVi": record["maDonVi"], "ngayCapNhat": record["ngayCapNhat"]}
    assert civil.ok("traHoSo", {"module": module, "maHoSo": record["id"]}) == record
    batch = civil.ok("traDanhSachHoSo", {"maTinh": "31", "module": module, "dsMaHoSo": [record["id"], 1, record["id"]]})
    assert batch == [record]


@pytest.mark.parametrize("module", MODULES)
def test_records_carry_exactly_the_spec_fields(civil: Civil, clean_sandbox: RunningSandbox, module: str) -> None:
    for record in civil.records(module, registry_ids(clean_sandbox, module)):
        assert tuple(record) == FIELDS[module]
        assert record["module"] == module and record["trangThai"] in (1, 2, 3)
        assert record["maDonVi"].startswith("H31.")
        datetime.strptime(record["ngayDangKy"], "%d/%m/%Y")
        datetime.strptime(record["ngayCapNhat"], MOMENT)
        places = [v for v in record.values() if isinstance(v, dict)]
        assert places and all(set(p) == {"maTinh", "maHuyen", "maXa", "dcChiTiet"} for p in places)


def test_corrections_and_revocations(sandbox_factory) -> None:
    with sandbox_factory(residents=10_000, seed=0) as sb:
        client = Civil(sb)
        states = defaultdict(int)
        for module in MODULES:
            for record in client.records(module, registry_ids(sb, module)):
                states[record["trangThai"]] += 1
        assert states[1] > states[2] > 0 and states[3] >= 1


@pytest.mark.parametrize("kind", [1, 2, 3, 4, 5])
def test_catalogues(civil: Civil, kind: int) -> None:
    entries = civil.ok("danhMuc", {"loaiDanhMuc": kind})
    assert entries and all(set(e) == {"ma", "ten"} and e["ma"] and e["ten"] for e in entries)
    codes = {e["ma"] for e in entries}
    expected = {1: {"VN"}, 2: {"VN"}, 3: {"01", "04", "54"}, 4: {"31", "303", "11296"}, 5: {"1", "2", "3"}}[kind]
    assert expected <= codes


def test_page_past_the_end_is_empty(civil: Civil, clean_sandbox: RunningSandbox) -> None:
    record = clean_sandbox.sandbox.civil.registry.render("KT", 0)
    data = civil.page("KT", record["ngayCapNhat"][:10], 99, 1000)
    assert data["ds"] == [] and data["tongSo"] >= 1


# -- errors ---------------------------------------------------------------------------------------

LIST = {"maTinh": "31", "module": "KS", "ngayCapNhat": "15/08/2025", "trang": 1, "soLuong": 10}


@pytest.mark.parametrize(("operation", "body", "http_status", "code"), [
    ("dsHoSoDangKy", dict(LIST, maTinh="01"), 403, "108"),
    ("traDanhSachHoSo", {"maTinh": "01", "module": "KS", "dsMaHoSo": [1]}, 403, "108"),
    ("dsHoSoDangKy", {k: v for k, v in LIST.items() if k != "soLuong"}, 400, "200"),
    ("traHoSo", {"module": "KS"}, 400, "200"),
    ("dsHoSoDangKy", dict(LIST, trang="1"), 400, "302"),
    ("dsHoSoDangKy", dict(LIST, soLuong=1001), 400, "302"),
    ("dsHoSoDangKy", dict(LIST, ngayCapNhat="31/02/2026"), 400, "302"),
    ("dsHoSoDangKy", dict(LIST, ngayCapNhat="2026-02-01"), 400, "302"),
    ("traHoSo", {"module": "KS", "maHoSo": "12"}, 400, "302"),
    ("danhMuc", [1], 400, "302"),
    ("dsHoSoDangKy", dict(LIST, maDonVi="H31"), 400, "500"),
    ("traHoSo", {"module": "KS", "maHoSo": 1}, 404, "201"),
])
def test_error_codes(civil: Civil, operation: str, body: Any, http_status: int, code: str) -> None:
    assert_error(civil.post(operation, body), http_status, code)


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[" * 5_000 + b"]" * 5_000, "{\"loaiDanhMuc\": 1".encode()])
def test_malformed_json_is_500_data_incorrect(civil: Civil, raw: bytes) -> None:
    response = civil.post("danhMuc", data=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "500")


def test_huge_garbage_body_is_413_with_the_envelope(civil: Civil) -> None:
    response = civil.post("traHoSo", data=b"\x00garbage" * (2 << 17), headers={"Content-Type": "application/json"})
    assert_error(response, 413, "500")


# -- paging ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", MODULES)
def test_every_day_of_the_window_lists_each_record_once(civil: Civil, clean_sandbox: RunningSandbox,
                                                        module: str) -> None:
    size, seen = 4, []
    for day in window_days(clean_sandbox):
        trang, total = 1, None
        while True:
            data = civil.page(module, day, trang, size)
            assert total in (None, data["tongSo"])
            total, ds = data["tongSo"], data["ds"]
            assert len(ds) == max(0, min(size, total - (trang - 1) * size))
            keys = [(datetime.strptime(e["ngayCapNhat"], MOMENT), e["id"]) for e in ds]
            assert keys == sorted(keys) and all(e["ngayCapNhat"][:10] == day for e in ds)
            seen += [e["id"] for e in ds]
            if trang * size >= total:
                break
            trang += 1
    assert sorted(seen) == registry_ids(clean_sandbox, module)


# -- ground truth ---------------------------------------------------------------------------------

def civil_truth(sb: RunningSandbox) -> tuple[dict, dict]:
    """(module, id) -> {role: pid}, and (module, id) -> [anomaly rows], from the sandbox's truth."""
    truth = sb.sandbox.truth
    people: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    rec = truth.records
    for system, dataset, key, role, kind, entity in zip(rec["system"], rec["dataset"], rec["record_key"], rec["role"],
                                                        rec["entity_kind"], rec["entity_id"]):
        if system == "civil":
            assert kind == "person" and role not in people[(dataset, key)]
            people[(dataset, key)][role] = int(entity[1:])
    anomalies: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    an = truth.anomalies
    for row in zip(*an.values()):
        item = dict(zip(an, row))
        if item["system"] == "civil":
            anomalies[(item["dataset"], item["record_key"])].append(item)
    return people, anomalies


def served(record: dict[str, Any], field: str) -> str:
    value = record[field]
    return value["maXa"] if isinstance(value, dict) else value


@pytest.mark.parametrize("module", MODULES)
def test_ground_truth_describes_every_served_record(civil: Civil, clean_sandbox: RunningSandbox, module: str) -> None:
    people, anomalies = civil_truth(clean_sandbox)
    residents = clean_sandbox.sandbox.residents
    records = civil.records(module, registry_ids(clean_sandbox, module))
    assert {k for k in people if k[0] == module} == {(module, str(r["id"])) for r in records}
    assert {k for k in anomalies if k[0] == module} <= {(module, str(r["id"])) for r in records}
    for record in records:
        key = (module, str(record["id"]))
        faults = {(a["field"], a["anomaly"]): a for a in anomalies[key]}
        for item in anomalies[key]:
            assert served(record, item["field"]) == item["served_value"], item
        named = {role for role, (name, _, _) in PEOPLE[module].items() if record[name]}
        assert set(people[key]) == named
        for role, pid in people[key].items():
            check_person(record, PEOPLE[module][role], pid, residents, faults)
        for name, value in record.items():
            if isinstance(value, dict) and value["maXa"]:
                assert (value["maHuyen"] == "") == ((name, "address_2025_codes") in faults)


def check_person(record: dict, fields: tuple, pid: int, residents, faults: dict) -> None:
    """The served name, birth date and ID are the person's, but for the recorded faults."""
    name_field, birth_field, id_field = fields
    true_name = residents.full_name(pid)
    assert fold(record[name_field]) == fold(true_name)
    if record[name_field].upper() != true_name.upper():
        assert any(f == name_field for f, _ in faults), (record[name_field], true_name)
    if birth_field:
        assert record[birth_field] == datetime.fromtimestamp(int(residents.birth[pid]), VN_TZ).strftime("%d/%m/%Y")
    served_id = record[id_field]
    if served_id != residents.id_text(pid):
        fault = next(a for (f, _), a in faults.items() if f == id_field)
        assert fault["true_value"] == residents.id_text(pid) and fault["served_value"] == served_id
        if fault["anomaly"] == "id_cmnd_instead":
            assert served_id == residents.cmnd_text(pid) and len(served_id) == 9
            assert record.get(KIND_FIELD.get(id_field), "2") == "2"


def test_every_kind_of_data_fault_is_injected(sandbox_factory) -> None:
    with sandbox_factory(residents=3_000, seed=2) as sb:
        _, anomalies = civil_truth(sb)
    kinds = {a["anomaly"] for rows in anomalies.values() for a in rows}
    assert kinds == {"name_no_diacritics", "name_nfd", "name_old_tone", "id_typo", "id_swap", "id_cmnd_instead",
                     "address_2025_codes"}


# -- determinism ----------------------------------------------------------------------------------

def served_bytes(sb: RunningSandbox) -> list[bytes]:
    client = Civil(sb)
    out = []
    for module in MODULES:
        ids = registry_ids(sb, module)
        for k in range(0, len(ids), 100):
            body = {"maTinh": "31", "module": module, "dsMaHoSo": ids[k:k + 100]}
            out.append(client.post("traDanhSachHoSo", body).content)
    return out


def truth_rows(sb: RunningSandbox) -> tuple[list, list]:
    truth = sb.sandbox.truth
    return ([row for row in zip(*truth.records.values()) if row[0] == "civil"],
            [row for row in zip(*truth.anomalies.values()) if row[0] == "civil"])


def test_same_seed_same_bytes_and_truth_other_seed_differs(sandbox_factory) -> None:
    results = []
    for seed in (3, 3, 4):
        with sandbox_factory(residents=1_500, seed=seed) as sb:
            results.append((served_bytes(sb), truth_rows(sb)))
    assert results[0] == results[1]
    assert results[0][0] != results[2][0] and results[0][1] != results[2][1]


# -- record faults --------------------------------------------------------------------------------

def current_day(sb: RunningSandbox) -> str:
    """The day a record updated now is listed under (the server's clock, never before ``as_of``)."""
    return max(datetime.fromtimestamp(sb.sandbox.residents.as_of, VN_TZ), datetime.now(VN_TZ)).strftime("%d/%m/%Y")


def sweep(client: Civil, sb: RunningSandbox, module: str, size: int) -> dict[int, str]:
    """A careful client: reads every day of the window, the server's current day last, re-reads a
    day whose total moved under it, dedupes on (module, id, ngayCapNhat) and keeps each record's
    latest change. A record updated while it pages joins the end of the current day's list: read
    last, that day sees every such update (one made while it is paged moves its total)."""
    latest: dict[int, str] = {}

    def read(day: str) -> None:
        trang, total = 1, None
        while True:
            data = client.page(module, day, trang, size)
            if total is not None and data["tongSo"] != total:
                trang, total = 1, None
                continue
            total = data["tongSo"]
            for entry in data["ds"]:
                moment = entry["ngayCapNhat"]
                known = latest.get(entry["id"])
                if known is None or datetime.strptime(moment, MOMENT) > datetime.strptime(known, MOMENT):
                    latest[entry["id"]] = moment
            if trang * size >= total:
                return
            trang += 1

    today = current_day(sb)
    for day in window_days(sb):
        if day != today:
            read(day)
    while True:  # past midnight meanwhile: the new current day too
        read(today)
        if (now := current_day(sb)) == today:
            return latest
        today = now


def test_a_resuming_client_survives_duplicates_and_concurrent_updates(sandbox_factory) -> None:
    plan = FaultPlan(seed=11, rates={"civil": {"duplicate_record": 0.5, "concurrent_update": 0.5}})
    with sandbox_factory(residents=3_000, seed=5, faults=plan, rate_limit=10_000) as sb:
        client = Civil(sb)
        registry = sb.sandbox.civil.registry
        for module in MODULES:
            latest = sweep(client, sb, module, size=3)
            assert sorted(latest) == registry_ids(sb, module)
            for record_id, moment in latest.items():
                assert registry.render(module, registry.row(module, record_id))["ngayCapNhat"] == moment
        counts = sb.sandbox.runtimes["civil"].faults.counts
        assert counts["duplicate_record"] > 0 and counts["concurrent_update"] > 0
        assert sum(len(index.live) for index in registry.index.values()) > 0


def test_record_faults_only_hit_the_list(sandbox_factory) -> None:
    plan = FaultPlan(seed=1, rates={"civil": {"duplicate_record": 1.0, "concurrent_update": 1.0}})
    with sandbox_factory(residents=3_000, seed=5, faults=plan) as sb:
        client = Civil(sb)
        record = sb.sandbox.civil.registry.render("KH", 0)
        client.ok("traHoSo", {"module": "KH", "maHoSo": record["id"]})
        client.ok("danhMuc", {"loaiDanhMuc": 3})
        counts = sb.sandbox.runtimes["civil"].faults.counts
        assert not counts
        day = record["ngayCapNhat"][:10]
        client.page("KH", day, 1, 1)
        client.page("KH", day, 2, 1)
        assert counts["duplicate_record"] == 2 and counts["concurrent_update"] == 2


def test_duplicate_record_repeats_the_previous_pages_last_entry(sandbox_factory) -> None:
    plan = FaultPlan(seed=1, rates={"civil": {"duplicate_record": 1.0}})
    with sandbox_factory(residents=3_000, seed=5, faults=plan) as sb:
        client = Civil(sb)
        registry = sb.sandbox.civil.registry
        days = {}
        for index in range(len(registry.ids("KH"))):
            days.setdefault(registry.render("KH", index)["ngayCapNhat"][:10], []).append(index)
        day = next(d for d, members in days.items() if len(members) >= 2)
        first = client.page("KH", day, 1, 1)
        second = client.page("KH", day, 2, 1)
        assert second["ds"][0] == first["ds"][-1] and len(second["ds"]) == 2


def test_token_expiry_fault_applies_to_every_operation(sandbox_factory) -> None:
    plan = FaultPlan(seed=1, rates={"civil": {"token_expiry": 1.0}})
    with sandbox_factory(residents=300, seed=5, faults=plan) as sb:
        client = Civil(sb)
        for operation, body in (("dsHoSoDangKy", LIST), ("traHoSo", {"module": "KS", "maHoSo": 1}),
                                ("traDanhSachHoSo", {"maTinh": "31", "module": "KS", "dsMaHoSo": [1]}),
                                ("danhMuc", {"loaiDanhMuc": 1})):
            client.session.headers["Authorization"] = f"Bearer {client.token()}"
            assert_error(client.post(operation, body), 401, "100")
            assert_error(client.post(operation, body), 401, "100")  # the token was revoked
