"""Contract tests of the population database (§1) over real HTTP: zeep for the happy paths, hand-built
SOAP for the faults, the errors and the paging invariants."""

from __future__ import annotations

import ipaddress
import time
import uuid

import numpy as np
import pyarrow.compute as pc
import pytest
import requests
import zeep
from lxml import etree
from zeep.exceptions import Fault
from zeep.wsse.username import UsernameToken

from sandbox import names
from sandbox.faults import FaultPlan
from sandbox.ground_truth import person_key
from tests.soap_helpers import DAN_NS, NS1, PopulationCaller, envelope, fault_code, security

pytestmark = pytest.mark.timeout(300)


def zeep_client(env: dict[str, str], password: str | None = None) -> zeep.Client:
    token = UsernameToken(env["HUB_POPULATION_USER"], password or env["HUB_POPULATION_PASSWORD"], use_digest=True)
    return zeep.Client(f"{env['HUB_POPULATION_URL']}/dancu?wsdl", wsse=token)


def context(env: dict[str, str]) -> dict[str, str]:
    return {"MaYeuCau": str(uuid.uuid4()), "MaDVC": env["HUB_AGENCY_CODE"], "MaCanBo": env["HUB_OFFICER_ID"]}


def walk(caller: PopulationCaller, since: str = "20000101000000", size: int = 400) -> list[etree._Element]:
    """Every CongDan of a full DongBoCongDan walk, in the order served."""
    records, cursor = [], None
    for _ in range(10_000):
        root = caller.call("DongBoCongDan", MaTinh="31", TuThoiDiem=since, ConTro=cursor, SoLuong=size)
        page = root.findall(f".//{{{NS1}}}CongDan")
        assert len(page) <= size
        records.extend(page)
        cursor_el = root.find(f".//{{{DAN_NS}}}ConTro")
        if cursor_el is None:
            return records
        cursor = cursor_el.text
    raise AssertionError("paging did not end")


def field(record: etree._Element, path: str) -> str:
    el = record.find("/".join(f"{{{NS1}}}{p}" for p in path.split("/")))
    return (el.text or "") if el is not None else ""


def test_zeep_loads_wsdl_and_calls_every_operation(clean_sandbox):
    env = clean_sandbox.env
    registry = clean_sandbox.sandbox.population.registry
    client = zeep_client(env)
    assert {"TraCuuThongTinCongDan", "XacThucThongTinCongDan", "DongBoCongDan"} <= set(
        client.service._binding._operations)
    pid = 5
    ho, chu_dem, ten = registry.r.name_parts(pid)
    birth = registry.r.birth[pid]
    day = time.strftime("%Y%m%d", time.gmtime(int(birth) + 7 * 3600))
    found = client.service.TraCuuThongTinCongDan(**context(env), MaTichHop="037", SoDinhDanh=registry.r.id_text(pid),
                                                 HoVaTen=f"{ho} {chu_dem} {ten}", NgayThangNamSinh=day)
    assert found.CongdanCollection.CongDan[0].SoDinhDanh == registry.r.id_text(pid)
    verified = client.service.XacThucThongTinCongDan(**context(env), MaDichVu="033", SoDinhDanh=registry.r.id_text(pid),
                                                     HoVaTen=f"{ho} {chu_dem} {ten}")
    assert verified.TonTai is True
    page = client.service.DongBoCongDan(**context(env), MaTinh="31", TuThoiDiem="20000101000000", SoLuong=7)
    assert len(page.CongdanCollection.CongDan) == 7 and page.ConTro


def test_lookup_matches_name_as_the_spec_folds_it(clean_sandbox):
    caller = PopulationCaller(clean_sandbox.env)
    r = clean_sandbox.sandbox.residents
    pid = int(np.flatnonzero(r.cmnd >= 0)[0])
    name = r.full_name(pid)
    day = time.strftime("%Y%m%d", time.gmtime(int(r.birth[pid]) + 7 * 3600))
    variants = [name.upper(), names.strip_diacritics(name).lower(), names.to_nfd(name), name.replace(" ", "")]
    for variant in variants:
        root = caller.call("TraCuuThongTinCongDan", MaTichHop="037", SoDinhDanh=r.id_text(pid), HoVaTen=variant,
                           NgayThangNamSinh=day)
        assert len(root.findall(f".//{{{NS1}}}CongDan")) == 1, variant
    by_card = caller.call("TraCuuThongTinCongDan", MaTichHop="037", SoCMND=r.cmnd_text(pid), HoVaTen=name,
                          NgayThangNamSinh=day[:4])
    assert field(by_card.find(f".//{{{NS1}}}CongDan"), "SoDinhDanh") == r.id_text(pid)
    wrong_name = caller.call("TraCuuThongTinCongDan", MaTichHop="037", SoDinhDanh=r.id_text(pid),
                             HoVaTen=name + " X", NgayThangNamSinh=day)
    assert wrong_name.findall(f".//{{{NS1}}}CongDan") == []
    wrong_day = caller.call("TraCuuThongTinCongDan", MaTichHop="037", SoDinhDanh=r.id_text(pid), HoVaTen=name,
                            NgayThangNamSinh=str(int(day[:4]) + 1))
    assert wrong_day.findall(f".//{{{NS1}}}CongDan") == []
    unknown = caller.call("XacThucThongTinCongDan", MaDichVu="033", SoDinhDanh="099999999999", HoVaTen=name)
    assert unknown.find(f".//{{{DAN_NS}}}TonTai").text == "false"


def test_full_walk_serves_every_resident_once_in_order(clean_sandbox):
    caller = PopulationCaller(clean_sandbox.env)
    records = walk(caller)
    ids = [field(rec, "SoDinhDanh") for rec in records]
    keys = [(field(rec, "NgayCapNhat"), i) for rec, i in zip(records, ids)]
    assert keys == sorted(keys)
    assert len(ids) == len(set(ids))
    truth = clean_sandbox.sandbox.truth.record_table()
    subjects = truth.filter(pc.and_(pc.equal(truth["system"], "population"), pc.equal(truth["role"], "subject")))
    assert set(ids) == set(subjects["record_key"].to_pylist())


def test_scope_sees_movers_leave_only_from_before_their_move(clean_sandbox):
    r = clean_sandbox.sandbox.residents
    movers = np.flatnonzero(r.moved_to >= 0)
    assert len(movers) > 0
    pid = int(movers[0])
    moved = time.strftime("%Y%m%d%H%M%S", time.gmtime(int(r.moved_at[pid]) + 7 * 3600))
    caller = PopulationCaller(clean_sandbox.env)
    before = {field(rec, "SoDinhDanh"): rec for rec in walk(caller, since=moved)}
    assert r.id_text(pid) in before
    assert field(before[r.id_text(pid)], "ThuongTru/MaTinhThanh") != "31"
    after = time.strftime("%Y%m%d%H%M%S", time.gmtime(int(r.moved_at[pid]) + 7 * 3600 + 1))
    assert r.id_text(pid) not in {field(rec, "SoDinhDanh") for rec in walk(caller, since=after)}


def test_served_records_carry_the_injected_anomalies(clean_sandbox):
    caller = PopulationCaller(clean_sandbox.env)
    served = {field(rec, "SoDinhDanh"): rec for rec in walk(caller)}
    anomalies = clean_sandbox.sandbox.truth.anomaly_table().to_pylist()
    kinds = {a["anomaly"] for a in anomalies if a["system"] == "population"}
    assert {"name_all_in_ten", "name_nfd", "name_old_tone", "death_not_in_population", "moved_out"} <= kinds
    for a in anomalies:
        if a["system"] != "population":
            continue
        rec = served[a["record_key"]]
        if a["anomaly"] == "name_all_in_ten":
            assert field(rec, "HoVaTen/Ho") == "" and field(rec, "HoVaTen/Ten") == a["served_value"]
        elif a["anomaly"] == "death_not_in_population":
            assert field(rec, "TrangThai") == "0"
        elif a["anomaly"] == "address_2025_codes":
            assert field(rec, "ThuongTru/MaQuanHuyen") == "" and field(rec, "ThuongTru/MaPhuongXa") == a["served_value"]
        elif a["anomaly"] in ("name_nfd", "name_old_tone"):
            parts = [field(rec, f"HoVaTen/{p}") for p in ("Ho", "ChuDem", "Ten")]
            assert " ".join(p for p in parts if p) == a["served_value"] != a["true_value"]


@pytest.mark.parametrize("skew, reuse, password, expect", [
    (0, False, "wrong-password", "100"),
    (-900, False, None, "100"),  # stale wsu:Created
    (0, True, None, "100"),  # replayed nonce
])
def test_ws_security_failures_are_fault_100(clean_sandbox, skew, reuse, password, expect):
    env = clean_sandbox.env
    caller = PopulationCaller(env)
    nonce = b"0123456789abcdef"
    header = lambda: security(env["HUB_POPULATION_USER"], password or env["HUB_POPULATION_PASSWORD"],  # noqa: E731
                              nonce=nonce if reuse else None, skew_s=skew)
    fields = {**caller.context(), "MaTinh": "31", "TuThoiDiem": "20000101000000", "SoLuong": 1}
    if reuse:
        assert caller.post("DongBoCongDan", header=header(), **fields).status_code == 200
    response = caller.post("DongBoCongDan", header=header(), **fields)
    assert response.status_code == 500
    assert fault_code(response) == expect


def test_zeep_surfaces_the_fault(clean_sandbox):
    with pytest.raises(Fault) as raised:
        zeep_client(clean_sandbox.env, password="not-it").service.DongBoCongDan(
            **context(clean_sandbox.env), MaTinh="31", TuThoiDiem="20000101000000", SoLuong=1)
    assert "100 AUTHEN_ERROR" in raised.value.message


@pytest.mark.parametrize("fields, code", [
    ({"MaDVC": "000.00.00.H01"}, "106"),
    ({"MaTinh": "01"}, "108"),
    ({"SoLuong": "abc"}, "302"),
    ({"SoLuong": "5000"}, "302"),
    ({"MaCanBo": "12"}, "302"),
    ({"TuThoiDiem": None}, "200"),
    ({"ConTro": "not-a-cursor!"}, "302"),
])
def test_sync_request_errors(clean_sandbox, fields, code):
    caller = PopulationCaller(clean_sandbox.env)
    request = {**caller.context(), "MaTinh": "31", "TuThoiDiem": "20000101000000", "ConTro": None, "SoLuong": 10}
    request.update(fields)
    ordered = {k: request[k] for k in ("MaYeuCau", "MaDVC", "MaCanBo", "MaTinh", "TuThoiDiem", "ConTro", "SoLuong")}
    response = caller.post("DongBoCongDan", **ordered)
    assert response.status_code == 500, response.text[:300]
    assert fault_code(response) == code


@pytest.mark.parametrize("fields, code", [
    ({"MaTichHop": "099"}, "500"),
    ({"SoDinhDanh": "12345"}, "302"),
    ({"SoDinhDanh": None}, "200"),
])
def test_lookup_request_errors(clean_sandbox, fields, code):
    caller = PopulationCaller(clean_sandbox.env)
    request = {**caller.context(), "MaTichHop": "037", "MaHoSo": None, "SoDinhDanh": "031090000001",
               "SoCMND": None, "HoVaTen": "Nguyễn Văn A", "NgayThangNamSinh": "1990"}
    request.update(fields)
    response = caller.post("TraCuuThongTinCongDan", **request)
    assert fault_code(response) == code


@pytest.mark.parametrize("body", [
    b"<not-xml",
    b"\x00\xff" * 1_000_000,  # 2 MB of garbage
    envelope("", "<dan:NoSuchOperationRequest/>"),
    b'<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>&b;</soapenv:Body>'
    b"</soapenv:Envelope>",
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><x>&xxe;</x>',
])
def test_bad_input_gets_a_fault_not_a_traceback(clean_sandbox, body):
    caller = PopulationCaller(clean_sandbox.env)
    started = time.monotonic()
    response = caller.post("DongBoCongDan", raw=body)
    assert time.monotonic() - started < 10
    assert response.status_code in (413, 500)
    assert fault_code(response) == "500"
    assert b"Traceback" not in response.content and b"root:" not in response.content


def test_wsdl_and_method_handling(clean_sandbox):
    url = f"{clean_sandbox.env['HUB_POPULATION_URL']}/dancu"
    wsdl = requests.get(url + "?wsdl", timeout=10)
    assert wsdl.status_code == 200 and url.encode() in wsdl.content
    assert requests.get(url, timeout=10).status_code == 405


def test_ip_allow_list_and_rate_limit(sandbox_factory):
    with sandbox_factory(residents=1_000, seed=1, rate_limit=3) as sb:
        caller = PopulationCaller(sb.env)
        fields = {"MaTinh": "31", "TuThoiDiem": "20000101000000", "SoLuong": 1}
        statuses = [caller.post("DongBoCongDan", **{**caller.context(), **fields}) for _ in range(8)]
        limited = [r for r in statuses if r.status_code == 429]
        assert limited and all(int(r.headers["Retry-After"]) >= 1 and fault_code(r) == "429" for r in limited)
        sb.sandbox.runtimes["population"].allowed_networks = (ipaddress.ip_network("10.0.0.0/8"),)
        time.sleep(1.1)  # let the bucket refill
        response = caller.post("DongBoCongDan", **{**caller.context(), **fields})
        assert fault_code(response) == "101"


def _robust_walk(caller: PopulationCaller, size: int) -> tuple[dict[str, str], int]:
    """A client that retries every failure and dedupes on (SoDinhDanh, NgayCapNhat): id → latest version."""
    latest: dict[str, str] = {}
    cursor, failures = None, 0
    while True:
        try:
            response = caller.post("DongBoCongDan", **{**caller.context(), "MaTinh": "31",
                                                       "TuThoiDiem": "20000101000000", "ConTro": cursor,
                                                       "SoLuong": size})
            root = etree.fromstring(response.content) if response.status_code == 200 else None
        except (requests.RequestException, etree.XMLSyntaxError):
            root = None
        if root is None:
            failures += 1
            assert failures < 500
            continue
        for rec in root.iter(f"{{{NS1}}}CongDan"):
            key, version = field(rec, "SoDinhDanh"), field(rec, "NgayCapNhat")
            latest[key] = max(latest.get(key, ""), version)
        cursor_el = root.find(f".//{{{DAN_NS}}}ConTro")
        if cursor_el is None:
            return latest, failures
        cursor = cursor_el.text


def test_retrying_deduping_client_gets_exactly_the_truth_under_every_fault(sandbox_factory):
    plan = FaultPlan.uniform(0.04, seed=3, latency_ms=5)
    plan.rates["population"].update(duplicate_record=0.15, concurrent_update=0.15)
    with sandbox_factory(residents=3_000, seed=11, faults=plan, rate_limit=10_000) as sb:
        latest, failures = _robust_walk(PopulationCaller(sb.env), size=100)
        injector = sb.sandbox.runtimes["population"].faults
        assert failures > 0 and injector.counts.get("duplicate_record", 0) > 0
        assert injector.counts.get("concurrent_update", 0) > 0
        r = sb.sandbox.residents
        assert set(latest) == {r.id_text(p) for p in range(r.n)}
        registry = sb.sandbox.population.registry
        for pid in registry.live_updated:
            assert latest[r.id_text(pid)] == time.strftime("%Y%m%d%H%M%S", time.gmtime(registry.updated(pid) + 25200))


def test_same_seed_same_data_and_faults(sandbox_factory):
    def snapshot(seed: int):
        plan = FaultPlan.uniform(0.1, seed=5, latency_ms=0)
        with sandbox_factory(residents=1_000, seed=seed, faults=plan, rate_limit=10_000) as sb:
            caller = PopulationCaller(sb.env)
            outcomes = []
            for _ in range(30):
                try:
                    response = caller.post("DongBoCongDan", **{**caller.context(), "MaTinh": "31",
                                                               "TuThoiDiem": "20000101000000", "SoLuong": 50})
                    body = response.content
                    start = body.find(b"<ns1:CongdanCollection")
                    outcomes.append((response.status_code, body[start:] if start >= 0 else b""))
                except requests.RequestException as exc:
                    outcomes.append((type(exc).__name__, b""))
            return outcomes, sb.sandbox.truth.anomaly_table(), sb.sandbox.truth.record_table()

    first, second, other = snapshot(1), snapshot(1), snapshot(2)
    assert first[0] == second[0]
    assert first[1].equals(second[1]) and first[2].equals(second[2])
    assert not first[1].equals(other[1])
    assert [o[0] for o in first[0]] != [200] * 30  # faults did fire, identically both times


def test_truth_links_relatives_to_true_people(clean_sandbox):
    truth = clean_sandbox.sandbox.truth.record_table().to_pylist()
    r = clean_sandbox.sandbox.residents
    fathers = [t for t in truth if t["system"] == "population" and t["role"] == "father"]
    assert fathers
    for t in fathers[:200]:
        pid = int(np.flatnonzero(r.personal_id == int(t["record_key"]))[0])
        assert t["entity_id"] == person_key(int(r.father[pid]))
