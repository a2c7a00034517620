"""Contract tests of the business registry (§3) over real HTTP: the token flow, both payload variants,
every documented refusal, the dossier feed's paging and window invariants, the injected faults, and
the ground truth the reconciliation is scored against."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any, Iterator

import numpy as np
import pyarrow.compute as pc
import pytest
import requests

from sandbox import business, names
from sandbox.auth import AuthError, Client, TokenIssuer
from sandbox.business import EnterpriseRegistry, day_of, day_text, detail_a, detail_b, enterprise_codes
from sandbox.faults import RESPONSE_FAULTS, FaultPlan
from sandbox.ground_truth import GroundTruth, enterprise_key, person_key
from sandbox.province import VN_TZ, generate_residents
from schemas.identifiers import enterprise_check_digit, enterprise_code_problem
from tests.conftest import RunningSandbox, start_sandbox

pytestmark = pytest.mark.timeout(300)

LIST = "apiCSDLDKDN/danhSachHoSo"
DETAIL_A = "apiCSDLDKDN/chiTietDoanhNghiep"
DETAIL_B = "apiDKKD/DoanhNghiep/chiTietDoanhNghiep"
MAIN_FIELDS = {"ENTERPRISE_ID", "ENTERPRISE_GDT_CODE", "IMP_BUSINESS_CODE", "ENTERPRISE_TYPE_ID",
               "ENTERPRISE_TYPE_NAME", "NAME", "SHORT_NAME", "NAME_F", "FOUNDING_DATE", "LAST_AMEND_DATE",
               "NUMBER_CHANGES", "ENTERPRISE_STATUS", "LEGAL_NAMES", "CAPITAL_AMOUNT"}
ADDRESS_FIELDS = {"CityID", "CityName", "DistrictID", "DistrictName", "WardID", "WardName", "StreetNumber",
                  "AddressFullText"}
ROW_FIELDS = ["IN_JOURNAL_NO", "DOCUMENT_TYPE", "ENTERPRISE_GDT_CODE", "ENTERPRISE_CODE", "NAME", "SITE_ID",
              "PROCESS_STATUS", "RECEIPT_DATE", "PLAN_DATE", "PROCESSED_DATE"]
B_FIELDS = {"MaNoiBo", "MaSoDoanhNghiep", "SoGCNDKKD", "MaLoaiHinhDN", "LoaiHinhDN", "TenTiengViet", "TenNuocNgoai",
            "TenVietTat", "NgayDangKyLanDau", "NgayDangKyThayDoi", "SoLanDangKyThayDoi", "TinhTrangPhapLy",
            "DaiDienPhapLuat", "DiaChiTruSo", "NganhNgheKinhDoanh"}
B_STATUS = {"TinhTrangPhapLy", "MaTinhTrangPhapLy", "NgayBatDauTamNgung", "NgayKetThucTamNgung", "LyDoTamNgung"}
B_PERSON = {"HoVaTen", "LoaiGiayToChungThuc", "MaLoaiGiayToChungThuc", "SoGiayChungThuc", "NgayCap", "NoiCap",
            "QuocTich", "MaQuocTich"}
B_ADDRESS = {"QuocGia", "MaQuocGia", "TenTinhThanh", "MaTinhThanh", "TenQuanHuyen", "MaQuanHuyen", "TenPhuongXa",
             "MaPhuongXa", "DiaChi", "SoNha"}
HEAVY_FAULTS = {"rep_name_mismatch": 0.3, "name_no_diacritics": 0.15, "name_nfd": 0.15, "name_old_tone": 0.5,
                "id_typo": 0.15, "id_swap": 0.15, "id_cmnd_instead": 0.2}


class BusinessCaller:
    """A minimal client: one token, GETs under ``{base}``."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.base = env["HUB_BUSINESS_URL"]
        self.session = requests.Session()
        self.token = self.fetch_token()

    def fetch_token(self, secret: str | None = None) -> str:
        response = self.session.post(f"{self.base}/token", data={"grant_type": "client_credentials"},
                                     auth=(self.env["HUB_BUSINESS_CLIENT_ID"],
                                           secret or self.env["HUB_BUSINESS_CLIENT_SECRET"]))
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def get(self, path: str, token: str | None = None, **params: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return self.session.get(f"{self.base}/{path}", params=params, headers=headers, timeout=30)

    def json(self, path: str, **params: Any) -> Any:
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        return response.json()


def windows(registry: EnterpriseRegistry) -> Iterator[tuple[str, str]]:
    """Every 5-day window covering the registry's history."""
    for first in range(registry.first_day, registry.last_day + 1, 5):
        yield day_text(first), day_text(min(first + 4, registry.last_day))


def walk(caller: BusinessCaller, registry: EnterpriseRegistry, limit: int) -> list[dict[str, Any]]:
    rows = []
    for first, last in windows(registry):
        offset, total = 0, None
        while total is None or offset < total:
            page = caller.json(LIST, from_date=first, to_date=last, offset=offset, limit=limit)
            assert page["Status"] == 1 and page["Message"] == "" and len(page["Data"]) <= limit
            total = page["DataCount"] if total is None else total
            assert page["DataCount"] == total
            rows.extend(page["Data"])
            offset += limit
    return rows


def vn_day(text: str) -> date:
    d, m, y = (int(p) for p in text.split("/"))
    return date(y, m, d)


def row_key(row: dict[str, Any]) -> tuple[date, str]:
    return vn_day(row["PROCESSED_DATE"]), row["IN_JOURNAL_NO"]


def fold(text: str) -> str:
    return "".join(names.strip_diacritics(text).upper().split())


@pytest.fixture(scope="module")
def caller(clean_sandbox: RunningSandbox) -> BusinessCaller:
    return BusinessCaller(clean_sandbox.env)


@pytest.fixture(scope="module")
def registry(clean_sandbox: RunningSandbox) -> EnterpriseRegistry:
    return clean_sandbox.sandbox.business.registry


@pytest.fixture(scope="module")
def dossiers(caller: BusinessCaller, registry: EnterpriseRegistry) -> list[dict[str, Any]]:
    return walk(caller, registry, limit=4)


@pytest.fixture(scope="module")
def details(caller: BusinessCaller, registry: EnterpriseRegistry) -> dict[str, tuple[dict, dict]]:
    return {code: (caller.json(DETAIL_A, msdn=code), caller.json(DETAIL_B, msdn=code)) for code in registry.codes}


@pytest.fixture(scope="module")
def faulty() -> Iterator[RunningSandbox]:
    """A sandbox whose registry garbles many representatives, so every data fault shows up."""
    with start_sandbox(residents=3_000, seed=11, faults=FaultPlan(data=HEAVY_FAULTS), rate_limit=10_000) as sb:
        yield sb


# -- registry generation ------------------------------------------------------------------------------

def test_code_generator_issues_valid_unique_codes_under_the_prefix():
    codes = enterprise_codes(np.random.default_rng(1), 5_000)
    assert len(set(codes)) == 5_000
    assert all(c.startswith("02") and len(c) == 10 and enterprise_code_problem(c) is None for c in codes)
    assert all(enterprise_check_digit(c[:9]) == int(c[9]) for c in codes)
    with pytest.raises(ValueError):
        enterprise_codes(np.random.default_rng(1), 10**7)


def test_registry_shape(registry: EnterpriseRegistry, clean_sandbox: RunningSandbox):
    r = clean_sandbox.sandbox.residents
    assert registry.n == max(20, round(r.n / 60))
    assert registry.last_day == day_of(r.as_of) - 1
    as_of = datetime.fromtimestamp(r.as_of, VN_TZ).date()  # midnight: history ends the day before
    assert vn_day(day_text(registry.last_day)) == as_of - timedelta(days=1)
    assert vn_day(day_text(registry.first_day)) == as_of.replace(year=as_of.year - 2)
    assert len(set(registry.name)) == registry.n
    for reps in registry.reps:
        assert 1 <= len(reps) <= 2 and len({rep.pid for rep in reps}) == len(reps)
        for rep in reps:
            assert r.status[rep.pid] == 0 and (r.as_of - r.birth[rep.pid]) / 86_400 / 365.25 >= 18


# -- auth and rate limit ------------------------------------------------------------------------------

def test_token_flow_and_refusals(clean_sandbox: RunningSandbox, caller: BusinessCaller, registry):
    env, base = clean_sandbox.env, caller.base
    ok = requests.post(f"{base}/token", data={"grant_type": "client_credentials"},
                       auth=(env["HUB_BUSINESS_CLIENT_ID"], env["HUB_BUSINESS_CLIENT_SECRET"]))
    assert ok.status_code == 200 and ok.json()["token_type"] == "Bearer" and ok.json()["expires_in"] == 300
    wrong = requests.post(f"{base}/token", data={"grant_type": "client_credentials"},
                          auth=(env["HUB_BUSINESS_CLIENT_ID"], "wrong"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    no_grant = requests.post(f"{base}/token", auth=(env["HUB_BUSINESS_CLIENT_ID"], env["HUB_BUSINESS_CLIENT_SECRET"]))
    assert no_grant.status_code == 400
    code = registry.codes[0]
    for path in (DETAIL_A, DETAIL_B, LIST):
        for headers in ({}, {"Authorization": "Bearer garbage"}, {"Authorization": "Basic Zm9vOmJhcg=="},
                        {"Authorization": "Bearer "}):
            response = requests.get(f"{base}/{path}", params={"msdn": code}, headers=headers)
            assert response.status_code == 401 and "Bearer" in response.headers["WWW-Authenticate"]
            body = response.json()
            assert body["Status"] == 0 and body["ErrorCode"] == "100" and body["DataCount"] == 0
            assert body["Data"] is None and body["Message"].startswith("100 AUTHEN_ERROR: ")


def test_issuer_expires_tokens_on_its_clock():
    now = [1_000.0]
    issuer = TokenIssuer({"c": Client("c", "s")}, lifetime_s=300, clock=lambda: now[0])
    token, expires_in = issuer.issue("Basic Yzpz")
    assert expires_in == 300 and issuer.check(f"Bearer {token}")[0].name == "c"
    now[0] += 299.9
    issuer.check(f"Bearer {token}")
    now[0] += 0.2
    with pytest.raises(AuthError, match="expired"):
        issuer.check(f"Bearer {token}")


def test_expired_token_gets_401_over_http(sandbox_factory):
    with sandbox_factory(residents=300, seed=1, token_lifetime_s=0.3, rate_limit=10_000) as sb:
        caller = BusinessCaller(sb.env)
        code = sb.sandbox.business.registry.codes[0]
        assert caller.get(DETAIL_A, msdn=code).status_code == 200
        time.sleep(0.4)
        expired = caller.get(DETAIL_A, msdn=code)
        assert expired.status_code == 401 and "expired" in expired.json()["Message"]
        assert caller.get(DETAIL_A, token=caller.fetch_token(), msdn=code).status_code == 200


def test_burst_beyond_the_rate_limit_gets_429(sandbox_factory):
    with sandbox_factory(residents=300, seed=1, rate_limit=2) as sb:
        caller = BusinessCaller(sb.env)
        code = sb.sandbox.business.registry.codes[0]
        answers = [caller.get(DETAIL_B, msdn=code) for _ in range(6)]
        limited = [a for a in answers if a.status_code == 429]
        assert answers[0].status_code == 200 and limited
        assert int(limited[0].headers["Retry-After"]) >= 1
        assert limited[0].json()["ErrorCode"] == "429" and limited[0].json()["Status"] == 0


@pytest.mark.parametrize("fault, status, code", [("http_503", 503, "503"), ("http_500", 500, "500"),
                                                 ("rate_limit", 429, "429"), ("token_expiry", 401, "100")])
def test_injected_faults_answer_in_the_envelope(sandbox_factory, fault, status, code):
    with sandbox_factory(residents=300, seed=1, rate_limit=10_000,
                         faults=FaultPlan(rates={"business": {fault: 1.0}})) as sb:
        caller = BusinessCaller(sb.env)
        for path, params in ((DETAIL_A, {"msdn": sb.sandbox.business.registry.codes[0]}),
                             (LIST, {"from_date": "01/03/2026", "to_date": "05/03/2026"})):
            response = caller.get(path, **params)
            assert response.status_code == status
            body = response.json()
            assert body["Status"] == 0 and body["ErrorCode"] == code and body["Data"] is None
            assert body["Message"].startswith(f"{code} ")


# -- the dossier feed ---------------------------------------------------------------------------------

@pytest.mark.parametrize("params, why", [
    ({"from_date": "01/03/2026", "to_date": "06/03/2026"}, "6 days"),
    ({"from_date": "05/03/2026", "to_date": "01/03/2026"}, "before"),
    ({"from_date": "2026-03-01", "to_date": "05/03/2026"}, "dd/MM/yyyy"),
    ({"from_date": "1/3/2026", "to_date": "05/03/2026"}, "dd/MM/yyyy"),
    ({"from_date": "30/02/2026", "to_date": "02/03/2026"}, "dd/MM/yyyy"),
    ({"to_date": "05/03/2026"}, "required"),
    ({"from_date": "01/03/2026", "to_date": "05/03/2026", "limit": "501"}, "limit"),
    ({"from_date": "01/03/2026", "to_date": "05/03/2026", "limit": "0"}, "limit"),
    ({"from_date": "01/03/2026", "to_date": "05/03/2026", "limit": "ten"}, "limit"),
    ({"from_date": "01/03/2026", "to_date": "05/03/2026", "offset": "-1"}, "offset"),
    ({"from_date": "01/03/2026", "to_date": "05/03/2026", "offset": "9" * 40}, "offset"),
])
def test_list_refusals_are_status_0(caller: BusinessCaller, params, why):
    response = caller.get(LIST, **params)
    assert response.status_code == 200
    body = response.json()
    assert body["Status"] == 0 and body["DataCount"] == 0 and body["Data"] == [] and why in body["Message"]


@pytest.mark.parametrize("first, last", [("01/03/2026", "05/03/2026"), ("29/12/2025", "02/01/2026"),
                                         ("28/02/2026", "04/03/2026"), ("07/03/2026", "07/03/2026")])
def test_windows_up_to_five_days_are_served(caller: BusinessCaller, registry: EnterpriseRegistry, first, last):
    body = caller.json(LIST, from_date=first, to_date=last, offset=0, limit=500)
    expected = [j for j, d in zip(registry.journal, registry.h.d_processed)
                if vn_day(first) <= date(1970, 1, 1) + timedelta(days=int(d)) <= vn_day(last)]
    assert body["Status"] == 1 and body["DataCount"] == len(expected)
    assert [row["IN_JOURNAL_NO"] for row in body["Data"]] == expected


def test_walk_yields_every_dossier_once_and_every_enterprise(dossiers, registry: EnterpriseRegistry):
    journals = [row["IN_JOURNAL_NO"] for row in dossiers]
    assert len(journals) == len(set(journals)) == len(registry.journal)
    assert set(journals) == set(registry.journal)
    assert dossiers == sorted(dossiers, key=row_key)
    assert {row["ENTERPRISE_CODE"] for row in dossiers} == set(registry.codes)
    for row in dossiers:
        assert list(row) == ROW_FIELDS
        assert row["ENTERPRISE_GDT_CODE"] == row["ENTERPRISE_CODE"]
        assert enterprise_code_problem(row["ENTERPRISE_CODE"]) is None
        assert row["DOCUMENT_TYPE"] in {"DKM", "DKTD", "TN", "GT", "HDTL"} and row["PROCESS_STATUS"] in {"1", "2"}
        assert vn_day(row["RECEIPT_DATE"]) <= vn_day(row["PROCESSED_DATE"])
        assert vn_day(row["PLAN_DATE"]) == vn_day(row["RECEIPT_DATE"]) + timedelta(days=3)


def test_paging_edges(caller: BusinessCaller, registry: EnterpriseRegistry):
    busiest = np.bincount(registry.h.d_processed - registry.first_day).argmax() + registry.first_day
    first, last = day_text(int(busiest) - 2), day_text(int(busiest) + 2)
    full = caller.json(LIST, from_date=first, to_date=last, limit=500)
    assert full["DataCount"] == len(full["Data"]) >= 2
    assert caller.json(LIST, from_date=first, to_date=last)["Data"] == full["Data"]  # defaults: offset 0, limit 500
    assert caller.json(LIST, from_date=first, to_date=last, offset=1, limit=1)["Data"] == full["Data"][1:2]
    beyond = caller.json(LIST, from_date=first, to_date=last, offset=full["DataCount"], limit=10)
    assert beyond["Status"] == 1 and beyond["Data"] == [] and beyond["DataCount"] == full["DataCount"]
    after = caller.json(LIST, from_date=day_text(registry.last_day + 1), to_date=day_text(registry.last_day + 5))
    assert after["Status"] == 1 and after["DataCount"] == 0


def test_dossiers_are_consistent_with_status_history(dossiers, details, registry: EnterpriseRegistry):
    by_code = defaultdict(list)
    for row in dossiers:
        by_code[row["ENTERPRISE_CODE"]].append(row)
    window_start = date(1970, 1, 1) + timedelta(days=registry.first_day)
    for code, (a, _) in details.items():
        main = a["Data"]["MainInformation"]
        rows = sorted(by_code[code], key=row_key)
        kinds = [row["DOCUMENT_TYPE"] for row in rows]
        founded = vn_day(main["FOUNDING_DATE"])
        if founded >= window_start:
            assert kinds[0] == "DKM" and rows[0]["PROCESSED_DATE"] == main["FOUNDING_DATE"] and kinds.count("DKM") == 1
        else:
            assert "DKM" not in kinds and any(k == "DKTD" and r["PROCESS_STATUS"] == "1" for k, r in zip(kinds, rows))
        changes = [row for row in rows if row["DOCUMENT_TYPE"] == "DKTD" and row["PROCESS_STATUS"] == "1"]
        assert main["NUMBER_CHANGES"] >= len(changes)
        if changes:
            assert main["LAST_AMEND_DATE"] == max(changes, key=row_key)["PROCESSED_DATE"]
        states = [k for k in kinds if k in ("TN", "HDTL", "GT")]
        assert "GT" not in kinds or kinds[-1] == "GT"
        for i, kind in enumerate(states):
            if kind == "HDTL":
                assert i > 0 and states[i - 1] == "TN"
        expected_last = {"01": {None, "HDTL"}, "02": {"TN"}, "03": {"GT"}, "04": {"GT"}, "05": {None, "HDTL"},
                         "06": {None, "HDTL"}}[main["ENTERPRISE_STATUS"]]
        assert (states[-1] if states else None) in expected_last, (code, kinds, main["ENTERPRISE_STATUS"])


# -- the detail payloads ------------------------------------------------------------------------------

def test_both_variants_describe_every_enterprise_the_same_way(details, registry: EnterpriseRegistry):
    for code, (a, b) in details.items():
        assert a["Status"] == 1 and a["DataCount"] == 1 and a["Message"] == ""
        data = a["Data"]
        main, address = data["MainInformation"], data["HOAdress"]
        assert set(main) == MAIN_FIELDS and set(address) == ADDRESS_FIELDS
        assert main["ENTERPRISE_GDT_CODE"] == code and enterprise_code_problem(code) is None
        assert all(set(x) == {"CODE", "NAME", "IS_MAIN"} for x in data["BusinessActivity"])
        assert [x["IS_MAIN"] for x in data["BusinessActivity"]].count("Y") == 1
        assert all(set(m) == {"MEMBER_NAME", "AMOUNT", "RATIO_PERCENT", "COUNTRY"} for m in data["Member"])
        assert sum(m["AMOUNT"] for m in data["Member"]) == main["CAPITAL_AMOUNT"]
        assert all(m["AMOUNT"] > 0 for m in data["Member"])
        assert abs(sum(m["RATIO_PERCENT"] for m in data["Member"]) - 100) < 0.05
        (item,) = b["GetEntCert"]
        assert set(item) == B_FIELDS
        (status,) = item["TinhTrangPhapLy"]
        (place,) = item["DiaChiTruSo"][0]["DiaChi"]
        people = [p for rep in item["DaiDienPhapLuat"] for p in rep["ThongTinCaNhan"]]
        assert set(status) == B_STATUS and set(place) == B_ADDRESS and all(set(p) == B_PERSON for p in people)
        assert (item["MaSoDoanhNghiep"], item["MaNoiBo"]) == (code, main["ENTERPRISE_ID"])
        assert (item["TenTiengViet"], item["TenNuocNgoai"], item["TenVietTat"]) == (
            main["NAME"], main["NAME_F"], main["SHORT_NAME"])
        assert (item["MaLoaiHinhDN"], item["LoaiHinhDN"]) == (main["ENTERPRISE_TYPE_ID"], main["ENTERPRISE_TYPE_NAME"])
        assert (item["NgayDangKyLanDau"], item["NgayDangKyThayDoi"], item["SoLanDangKyThayDoi"]) == (
            main["FOUNDING_DATE"], main["LAST_AMEND_DATE"], main["NUMBER_CHANGES"])
        assert status["MaTinhTrangPhapLy"] == main["ENTERPRISE_STATUS"]
        assert bool(status["NgayBatDauTamNgung"]) == (main["ENTERPRISE_STATUS"] == "02")
        assert (place["MaTinhThanh"], place["MaQuanHuyen"], place["MaPhuongXa"], place["SoNha"], place["DiaChi"]) == (
            address["CityID"], address["DistrictID"], address["WardID"], address["StreetNumber"],
            address["AddressFullText"])
        assert main["LEGAL_NAMES"].split(";") == [p["HoVaTen"] for p in people]
        assert [(x["MaNganh"], x["LaNganhChinh"]) for x in item["NganhNgheKinhDoanh"]] == [
            (x["CODE"], x["IS_MAIN"] == "Y") for x in data["BusinessActivity"]]
        assert all(p["MaLoaiGiayToChungThuc"] in {"1", "2"} and p["SoGiayChungThuc"].isdigit() for p in people)


@pytest.mark.parametrize("msdn, why", [("", "required"), ("123", "not 10 digits"), ("0100109107", "check digit"),
                                       ("abcdefghij", "not 10 digits"), ("0100109106-1", "not 10 digits"),
                                       ("9" * 20, "20 characters")])
def test_malformed_msdn_is_refused_with_the_reason(caller: BusinessCaller, msdn, why):
    a = caller.get(DETAIL_A, msdn=msdn)
    assert a.status_code == 200 and a.json()["Status"] == 0 and a.json()["DataCount"] == 0
    assert why in a.json()["Message"]
    b = caller.get(DETAIL_B, msdn=msdn)
    assert b.status_code == 400 and b.json()["GetEntCert"] == [] and why in b.json()["Message"]


def test_code_without_a_check_digit_is_refused(caller: BusinessCaller):
    head = next(f"02{i:07d}" for i in range(10**7) if enterprise_check_digit(f"02{i:07d}") is None)
    body = caller.json(DETAIL_A, msdn=f"{head}0")
    assert body["Status"] == 0 and "no check digit exists" in body["Message"]


def test_unknown_code_is_not_found(caller: BusinessCaller, registry: EnterpriseRegistry):
    unknown = next(c for c in ("0100109106", "0315065353") if c not in registry.eid_of)
    a = caller.get(DETAIL_A, msdn=unknown)
    assert a.status_code == 200 and a.json()["Status"] == 0 and a.json()["DataCount"] == 0
    assert a.json()["Message"].startswith("201 RECORD_NOT_FOUND")
    b = caller.get(DETAIL_B, msdn=unknown)
    assert b.status_code == 404 and b.json()["GetEntCert"] == [] and b.json()["Message"]
    branch = caller.json(DETAIL_A, msdn=f"{registry.codes[0]}-001")
    assert branch["Status"] == 0 and branch["DataCount"] == 0


@pytest.mark.parametrize("params", [{"msdn": "9" * 2_000_000}, {"from_date": "x" * 2_000_000},
                                    {"msdn": "9" * 60_000}, {"msdn": "\x00\xff\u202e%%%"},
                                    {f"p{i}": "v" for i in range(2_000)},
                                    {"from_date": "01/03/2026", "to_date": "05/03/2026", "limit": "1e3"}])
def test_huge_or_garbage_queries_never_get_a_5xx(caller: BusinessCaller, params):
    for path in (DETAIL_A, DETAIL_B, LIST):
        try:
            response = caller.get(path, **params)
        except requests.ConnectionError:
            continue  # the server may refuse an oversized request line outright; that is not a crash
        assert response.status_code < 500, response.text[:200]
        assert "Traceback" not in response.text
    wrong_method = requests.post(f"{caller.base}/{DETAIL_A}", headers={"Authorization": f"Bearer {caller.token}"})
    assert wrong_method.status_code == 405


# -- ground truth -------------------------------------------------------------------------------------

def business_truth(sb: RunningSandbox) -> tuple[list[dict], dict[str, list[str]]]:
    truth = sb.sandbox.truth
    anomalies = truth.anomaly_table()
    rows = anomalies.filter(pc.equal(anomalies["system"], "business")).to_pylist()
    records = truth.record_table()
    reps = defaultdict(list)
    for rec in records.filter(pc.equal(records["role"], "legal_rep")).to_pylist():
        assert rec["system"] == "business" and rec["dataset"] == "enterprise" and rec["entity_kind"] == "person"
        reps[rec["record_key"]].append(rec["entity_id"])
    return rows, reps


def test_ground_truth_matches_what_is_served(faulty: RunningSandbox):
    caller = BusinessCaller(faulty.env)
    residents = faulty.sandbox.residents
    rows, reps = business_truth(faulty)
    true_names = {person_key(p): residents.full_name(p) for p in range(residents.n)}
    true_ids = {person_key(p): residents.id_text(p) for p in range(residents.n)}
    kinds = {row["anomaly"] for row in rows}
    assert kinds >= {"rep_name_mismatch", "name_no_diacritics", "name_nfd", "name_old_tone", "id_typo", "id_swap",
                     "id_cmnd_instead", "address_2025_codes"}
    for row in rows:
        assert row["dataset"] == "enterprise"
        # A commune that kept its code in 2025 is still served in the 2025 code set (no district).
        assert row["true_value"] != row["served_value"] or row["anomaly"] == "address_2025_codes"
        main = caller.json(DETAIL_A, msdn=row["record_key"])["Data"]
        (item,) = caller.json(DETAIL_B, msdn=row["record_key"])["GetEntCert"]
        people = [p for rep in item["DaiDienPhapLuat"] for p in rep["ThongTinCaNhan"]]
        rep_keys = reps[row["record_key"]]
        if row["field"] == "LEGAL_NAMES":
            assert row["served_value"] in main["MainInformation"]["LEGAL_NAMES"].split(";")
            assert row["served_value"] in [p["HoVaTen"] for p in people]
            assert row["true_value"] in [true_names[k] for k in rep_keys]
            if row["anomaly"] == "rep_name_mismatch":
                assert fold(row["served_value"]) != fold(row["true_value"])
        elif row["field"] == "SoGiayChungThuc":
            assert row["served_value"] in [p["SoGiayChungThuc"] for p in people]
            assert row["true_value"] in [true_ids[k] for k in rep_keys]
        else:
            assert row["anomaly"] == "address_2025_codes" and row["field"] == "HOAdress"
            assert main["HOAdress"]["WardID"] == row["served_value"] and main["HOAdress"]["DistrictID"] == ""
            assert item["DiaChiTruSo"][0]["DiaChi"][0]["MaPhuongXa"] == row["served_value"]
    moved = {row["record_key"] for row in rows if row["anomaly"] == "address_2025_codes"}
    table = faulty.sandbox.truth.tables["enterprises"].to_pylist()
    for true in table[:40]:
        if true["enterprise_code"] not in moved:
            served = caller.json(DETAIL_A, msdn=true["enterprise_code"])["Data"]["HOAdress"]["WardID"]
            assert served == true["ward_code"]


def test_truth_records_and_enterprise_table(faulty: RunningSandbox):
    reg, residents = faulty.sandbox.business.registry, faulty.sandbox.residents
    _, reps = business_truth(faulty)
    records = faulty.sandbox.truth.record_table()
    mine = records.filter(pc.equal(records["system"], "business"))
    enterprises = mine.filter(pc.equal(mine["role"], "enterprise")).to_pylist()
    assert [(e["record_key"], e["entity_id"], e["entity_kind"]) for e in enterprises] == [
        (code, enterprise_key(eid), "enterprise") for eid, code in enumerate(reg.codes)]
    table = faulty.sandbox.truth.tables["enterprises"]
    assert table.num_rows == reg.n
    assert set(table.column_names) >= {"enterprise_key", "enterprise_code", "name", "status", "founding_date",
                                       "representatives"}
    for row in table.to_pylist():
        assert reps[row["enterprise_code"]] == row["representatives"]
        for key in row["representatives"]:
            assert residents.status[int(key[1:])] == 0


# -- record faults ------------------------------------------------------------------------------------

def test_duplicate_record_repeats_the_previous_pages_last_row(sandbox_factory):
    with sandbox_factory(residents=2_000, seed=7, rate_limit=10_000,
                         faults=FaultPlan(rates={"business": {"duplicate_record": 1.0}})) as sb:
        caller, reg = BusinessCaller(sb.env), sb.sandbox.business.registry
        seen: dict[str, dict] = {}
        for first, last in windows(reg):
            previous, offset, total = None, 0, 1
            while offset < total:
                page = caller.json(LIST, from_date=first, to_date=last, offset=offset, limit=2)
                total = page["DataCount"]
                if previous:
                    assert page["Data"][0] == previous[-1]
                for row in page["Data"]:
                    seen[row["IN_JOURNAL_NO"]] = row
                previous, offset = page["Data"], offset + 2
        assert set(seen) == set(reg.journal)


def test_concurrent_update_adds_a_change_processed_today(sandbox_factory):
    with sandbox_factory(residents=2_000, seed=7, rate_limit=10_000,
                         faults=FaultPlan(rates={"business": {"concurrent_update": 1.0}})) as sb:
        caller, reg = BusinessCaller(sb.env), sb.sandbox.business.registry
        today = max(day_of(int(time.time())), day_of(sb.sandbox.residents.as_of))
        window = {"from_date": day_text(today - 4), "to_date": day_text(today)}
        first = caller.json(LIST, **window)
        second = caller.json(LIST, **window)
        assert second["DataCount"] == first["DataCount"] + 1 >= 2
        new = second["Data"][-1]
        assert (new["DOCUMENT_TYPE"], new["PROCESSED_DATE"], new["PROCESS_STATUS"]) == ("DKTD", day_text(today), "1")
        assert new not in first["Data"] and new["IN_JOURNAL_NO"] not in reg.journal
        eid = reg.eid_of[new["ENTERPRISE_CODE"]]
        main = caller.json(DETAIL_A, msdn=new["ENTERPRISE_CODE"])["Data"]["MainInformation"]
        bumps = sum(row["ENTERPRISE_CODE"] == new["ENTERPRISE_CODE"] for row in second["Data"])
        assert main["LAST_AMEND_DATE"] == day_text(today)
        assert main["NUMBER_CHANGES"] == int(reg.h.changes[eid]) + bumps
        assert main["ENTERPRISE_STATUS"] in {"01", "02"}


def test_retrying_client_gets_exactly_the_history_under_every_fault(sandbox_factory):
    plan = FaultPlan.uniform(0.04, seed=3, latency_ms=1)
    with sandbox_factory(residents=1_200, seed=5, rate_limit=10_000, faults=plan) as sb:
        caller, reg = BusinessCaller(sb.env), sb.sandbox.business.registry
        seen = set()
        for first, last in windows(reg):
            offset, total = 0, 1
            while offset < total:
                page = robust_get(caller, LIST, from_date=first, to_date=last, offset=offset, limit=3)
                total = page["DataCount"]
                seen.update(row["IN_JOURNAL_NO"] for row in page["Data"])
                offset += 3
        assert seen == set(reg.journal)
        assert sum(sb.sandbox.runtimes["business"].faults.counts.get(f, 0) for f in RESPONSE_FAULTS) > 0


def robust_get(caller: BusinessCaller, path: str, **params: Any) -> dict[str, Any]:
    for _ in range(50):
        try:
            response = caller.get(path, **params)
            body = response.json()
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, ValueError):
            continue
        if response.status_code == 401:
            caller.token = caller.fetch_token()
        elif response.status_code == 200 and body.get("Status") == 1:
            return body
    raise AssertionError("no answer after 50 tries")


# -- determinism --------------------------------------------------------------------------------------

def payloads(reg: EnterpriseRegistry) -> list[Any]:
    return ([detail_a(reg, e) for e in range(reg.n)] + [detail_b(reg, e) for e in range(reg.n)]
            + reg.dossier_rows(0, len(reg.journal)))


def build(seed: int, residents: int = 1_500) -> tuple[EnterpriseRegistry, GroundTruth]:
    truth = GroundTruth()
    return EnterpriseRegistry(generate_residents(residents, seed=seed), truth, seed), truth


def test_same_seed_same_registry_and_truth_different_seed_differs():
    (one, truth_one), (two, truth_two), (other, _) = build(3), build(3), build(4)
    assert payloads(one) == payloads(two)
    assert truth_one.anomaly_table().equals(truth_two.anomaly_table())
    assert truth_one.record_table().equals(truth_two.record_table())
    assert truth_one.tables["enterprises"].equals(truth_two.tables["enterprises"])
    assert one.codes != other.codes
    assert payloads(one) != payloads(other)


def test_same_seed_same_payloads_over_http(clean_sandbox: RunningSandbox, caller: BusinessCaller,
                                          registry: EnterpriseRegistry, details):
    with start_sandbox(**vars(clean_sandbox.sandbox.config)) as again:
        other = BusinessCaller(again.env)
        for code in registry.codes:
            assert (other.json(DETAIL_A, msdn=code), other.json(DETAIL_B, msdn=code)) == details[code]
        first, last = next(windows(registry))
        assert other.json(LIST, from_date=first, to_date=last) == caller.json(LIST, from_date=first, to_date=last)


def test_registry_scales_and_keeps_its_invariants():
    reg, _ = build(0, residents=30_000)
    assert reg.n == 500 and len(set(reg.codes)) == 500
    assert set(reg.h.d_eid.tolist()) == set(range(reg.n))
    assert np.all((reg.h.d_processed >= reg.first_day) & (reg.h.d_processed <= reg.last_day))
    assert len(set(reg.journal)) == len(reg.journal)
    share = np.bincount(reg.h.status, minlength=7)[1:] / reg.n
    assert 0.65 < share[0] < 0.9 and share[1:].sum() > 0.1
    assert business.MAX_WINDOW_DAYS == 5 and business.MAX_LIMIT == 500
