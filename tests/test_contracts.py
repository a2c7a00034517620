"""The wire contracts load in zeep, accept what the spec allows and refuse what it forbids.

Offline: zeep gets a transport that refuses any remote load, so a WSDL that needs the network
fails here instead of in production behind a government firewall.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import zeep
from jsonschema import Draft202012Validator
from lxml import etree
from zeep.transports import Transport

from schemas import contracts

DAN = "http://dancuquocgia.bca"
NS1 = "http://www.mic.gov.vn/dancu/1.0"
EDOC = "urn:vn:gov:vdxp:edoc:1.0"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP11 = "http://schemas.xmlsoap.org/wsdl/soap/"
SAMPLE = (
    Path(__file__).resolve().parents[2]
    / "shared/reference/samples/csdlqg_dancu_congdan_response.sanitized.xml"
)


class OfflineTransport(Transport):
    """A zeep transport that fails on any remote load: the contracts must be self-contained."""

    def _load_remote_data(self, url: str) -> bytes:
        raise AssertionError(f"zeep tried to fetch {url}")


def client_for(path: Path | str) -> zeep.Client:
    return zeep.Client(wsdl=str(path), transport=OfflineTransport())


@pytest.fixture(scope="module")
def dancu_client() -> zeep.Client:
    return client_for(contracts.wsdl_path("dancu"))


@pytest.fixture(scope="module")
def edoc_client() -> zeep.Client:
    return client_for(contracts.wsdl_path("edoc"))


def operations(client: zeep.Client) -> dict[str, Any]:
    (service,) = client.wsdl.services.values()
    (port,) = service.ports.values()
    return dict(port.binding._operations)


def wrapper(ns: str, name: str, fields: list[tuple[str, str]]) -> etree._Element:
    """Build a request wrapper element with qualified children, in the given order."""
    root = etree.Element(f"{{{ns}}}{name}", nsmap={"x": ns})
    for field, value in fields:
        etree.SubElement(root, f"{{{ns}}}{field}").text = value
    return root


def body_of(envelope: etree._Element) -> etree._Element:
    (element,) = envelope.find(f"{{{SOAP_ENV}}}Body")
    return element


# --- valid requests, one per operation ----------------------------------------------------------

EDXML_B64 = base64.b64encode(b"<edXMLEnvelope/>").decode()

VALID: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("dancu", "TraCuuThongTinCongDanRequest"): [
        ("MaYeuCau", "req-0001"),
        ("MaDVC", "H31.02"),
        ("MaTichHop", "037"),
        ("MaCanBo", "031090000001"),
        ("MaHoSo", "000.00.13.H31-250814-0001"),
        ("SoDinhDanh", "031090000123"),
        ("SoCMND", "031234567"),
        ("HoVaTen", "Nguyễn Văn An"),
        ("NgayThangNamSinh", "19900115"),
    ],
    ("dancu", "XacThucThongTinCongDanRequest"): [
        ("MaYeuCau", "req-0002"),
        ("MaDVC", "H31.02"),
        ("MaDichVu", "033"),
        ("MaCanBo", "031090000001"),
        ("SoDinhDanh", "031090000123"),
        ("HoVaTen", "NGUYEN VAN AN"),
        ("NgayThangNamSinh", "1990"),
    ],
    ("dancu", "DongBoCongDanRequest"): [
        ("MaYeuCau", "req-0003"),
        ("MaDVC", "H31"),
        ("MaCanBo", "031090000001"),
        ("MaTinh", "31"),
        ("TuThoiDiem", "20250101000000"),
        ("ConTro", "opaque-cursor=="),
        ("SoLuong", "1000"),
    ],
    ("edoc", "GetAgenciesRequest"): [],
    ("edoc", "SendEdocRequest"): [("MessageType", "edoc"), ("Edxml", EDXML_B64)],
    ("edoc", "GetReceivedEdocListRequest"): [("MessageType", "status"), ("Limit", "100")],
    ("edoc", "GetEdocRequest"): [("DocId", "doc-1")],
    ("edoc", "UpdateStatusRequest"): [("DocId", "doc-1"), ("Status", "done")],
    ("edoc", "GetSentEdocListRequest"): [("DocId", "doc-1")],
}

NAMESPACE = {"dancu": DAN, "edoc": EDOC}


def request(system: str, name: str, **changes: str | None) -> etree._Element:
    """A valid request with some fields replaced (str) or removed (None)."""
    fields = [
        (field, changes.get(field, value))
        for field, value in VALID[(system, name)]
        if not (field in changes and changes[field] is None)
    ]
    return wrapper(NAMESPACE[system], name, [(f, v) for f, v in fields if v is not None])


# --- WSDLs in zeep ------------------------------------------------------------------------------


def test_dancu_wsdl_operations(dancu_client: zeep.Client) -> None:
    ops = operations(dancu_client)
    assert set(ops) == {"TraCuuThongTinCongDan", "XacThucThongTinCongDan", "DongBoCongDan"}
    for name, op in ops.items():
        assert op.input.body.qname == etree.QName(DAN, f"{name}Request")
        assert op.output.body.qname == etree.QName(DAN, f"{name}Response")
        assert op.soapaction == f"http://dancuquocgia.bca/{name}"
        assert set(op.faults) == {"Loi"}


def test_edoc_wsdl_operations(edoc_client: zeep.Client) -> None:
    ops = operations(edoc_client)
    expected = {
        "GetAgencies",
        "SendEdoc",
        "GetReceivedEdocList",
        "GetEdoc",
        "UpdateStatus",
        "GetSentEdocList",
    }
    assert set(ops) == expected
    for name, op in ops.items():
        assert op.input.body.qname == etree.QName(EDOC, f"{name}Request")
        assert op.output.body.qname == etree.QName(EDOC, f"{name}Response")
        assert op.soapaction == f"urn:vn:gov:vdxp:edoc:1.0/{name}"
        assert set(op.faults) == {"Loi"}


@pytest.mark.parametrize(
    ("name", "location"),
    [("dancu", "http://localhost/population/dancu"), ("edoc", "http://localhost/vdxp/edoc")],
)
def test_placeholder_address(name: str, location: str) -> None:
    client = client_for(contracts.wsdl_path(name))
    (service,) = client.wsdl.services.values()
    (port,) = service.ports.values()
    assert port.binding_options["address"] == location


@pytest.mark.parametrize("response", ["TraCuuThongTinCongDanResponse", "DongBoCongDanResponse"])
def test_population_responses_carry_the_citizen_collection(
    dancu_client: zeep.Client, response: str
) -> None:
    element = dancu_client.get_element(f"{{{DAN}}}{response}")
    children = [child.qname for _, child in element.type.elements]
    assert etree.QName(NS1, "CongdanCollection") in children
    assert children[0] == etree.QName(DAN, "MaYeuCau")


def test_population_record_children_in_spec_order(dancu_client: zeep.Client) -> None:
    congdan = dancu_client.get_element(f"{{{NS1}}}CongDan")
    names = [child.qname for _, child in congdan.type.elements]
    assert names[:4] == [
        etree.QName(NS1, n) for n in ("SoDinhDanh", "SoCMND", "HoVaTen", "GioiTinh")
    ]
    assert names[-3:] == [etree.QName(NS1, n) for n in ("NgayCapNhat", "TrangThai", "NgayChet")]
    assert all(child.min_occurs == 0 for _, child in congdan.type.elements)


def test_zeep_reads_a_sync_page(dancu_client: zeep.Client) -> None:
    reply = etree.fromstring(
        f"""<s:Envelope xmlns:s="{SOAP_ENV}" xmlns:dan="{DAN}" xmlns:ns1="{NS1}"><s:Body>
        <dan:DongBoCongDanResponse>
          <dan:MaYeuCau>req-0003</dan:MaYeuCau>
          <dan:ThoiDiemDuLieu>20250102030405</dan:ThoiDiemDuLieu>
          <dan:ConTro>next</dan:ConTro>
          <ns1:CongdanCollection>
            <ns1:CongDan>
              <ns1:SoDinhDanh>031090000123</ns1:SoDinhDanh>
              <ns1:HoVaTen><ns1:Ho/><ns1:ChuDem/><ns1:Ten>NGUYỄN VĂN AN</ns1:Ten></ns1:HoVaTen>
              <ns1:DanToc>01</ns1:DanToc>
              <ns1:NgayCapNhat>20250101120000</ns1:NgayCapNhat>
              <ns1:TrangThai>1</ns1:TrangThai>
              <ns1:NgayChet>20241231</ns1:NgayChet>
            </ns1:CongDan>
          </ns1:CongdanCollection>
        </dan:DongBoCongDanResponse></s:Body></s:Envelope>""".encode()
    )
    op = operations(dancu_client)["DongBoCongDan"]
    result = op.output.deserialize(reply)
    assert result.ConTro == "next"
    (citizen,) = result.CongdanCollection.CongDan
    assert citizen.SoDinhDanh == "031090000123"
    assert citizen.HoVaTen.Ten == "NGUYỄN VĂN AN"
    assert citizen.DanToc == "01"  # a code, so the leading zero survives
    assert (citizen.NgayCapNhat, citizen.TrangThai, citizen.NgayChet) == (
        "20250101120000",
        "1",
        "20241231",
    )


# --- wsdl_text ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dancu", "edoc"])
def test_wsdl_text_rewrites_the_address(name: str, tmp_path: Path) -> None:
    location = f"http://127.0.0.1:18080/{name}?tenant=31&x=<y>"
    text = contracts.wsdl_text(name, location)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = etree.fromstring(text.encode("utf-8"))
    addresses = [a.get("location") for a in root.iter(f"{{{SOAP11}}}address")]
    assert addresses == [location]
    assert "http://localhost/" not in text

    served = tmp_path / f"{name}.wsdl"
    served.write_text(text, encoding="utf-8")
    client = client_for(served)
    (service,) = client.wsdl.services.values()
    (port,) = service.ports.values()
    assert port.binding_options["address"] == location
    # The shipped file and later calls are unaffected.
    assert "http://localhost/" in contracts.wsdl_path(name).read_text(encoding="utf-8")
    assert location not in contracts.wsdl_text(name, "http://other:1/")


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError):
        contracts.wsdl_path("../etc/passwd")
    with pytest.raises(ValueError):
        contracts.request_schema("business")
    with pytest.raises(ValueError):
        contracts.json_request_schema("civil_status", "../civil_status/traHoSo")
    with pytest.raises(ValueError):
        contracts.json_validator("civil_status", "noSuchOperation")


# --- request_schema: XML request bodies ---------------------------------------------------------


def test_request_schema_is_cached() -> None:
    assert contracts.request_schema("dancu") is contracts.request_schema("dancu")
    assert isinstance(contracts.request_schema("edoc"), etree.XMLSchema)


@pytest.mark.parametrize(("system", "name"), list(VALID))
def test_valid_request_validates(system: str, name: str) -> None:
    schema = contracts.request_schema(system)
    schema.assertValid(request(system, name))


REQUIRED: list[tuple[str, str, str]] = [
    ("dancu", "TraCuuThongTinCongDanRequest", "MaYeuCau"),
    ("dancu", "TraCuuThongTinCongDanRequest", "MaTichHop"),
    ("dancu", "TraCuuThongTinCongDanRequest", "HoVaTen"),
    ("dancu", "TraCuuThongTinCongDanRequest", "NgayThangNamSinh"),
    ("dancu", "XacThucThongTinCongDanRequest", "MaDichVu"),
    ("dancu", "XacThucThongTinCongDanRequest", "SoDinhDanh"),
    ("dancu", "XacThucThongTinCongDanRequest", "HoVaTen"),
    ("dancu", "DongBoCongDanRequest", "MaCanBo"),
    ("dancu", "DongBoCongDanRequest", "MaTinh"),
    ("dancu", "DongBoCongDanRequest", "TuThoiDiem"),
    ("edoc", "SendEdocRequest", "MessageType"),
    ("edoc", "SendEdocRequest", "Edxml"),
    ("edoc", "GetReceivedEdocListRequest", "Limit"),
    ("edoc", "GetEdocRequest", "DocId"),
    ("edoc", "UpdateStatusRequest", "Status"),
    ("edoc", "GetSentEdocListRequest", "DocId"),
]


@pytest.mark.parametrize(("system", "name", "field"), REQUIRED)
def test_missing_required_field_is_invalid(system: str, name: str, field: str) -> None:
    schema = contracts.request_schema(system)
    assert not schema.validate(request(system, name, **{field: None}))
    assert field in str(schema.error_log)


OPTIONAL: list[tuple[str, str, str]] = [
    ("dancu", "TraCuuThongTinCongDanRequest", "MaHoSo"),
    ("dancu", "TraCuuThongTinCongDanRequest", "SoDinhDanh"),
    ("dancu", "TraCuuThongTinCongDanRequest", "SoCMND"),
    ("dancu", "XacThucThongTinCongDanRequest", "NgayThangNamSinh"),
    ("dancu", "DongBoCongDanRequest", "ConTro"),
    ("dancu", "DongBoCongDanRequest", "SoLuong"),
]


@pytest.mark.parametrize(("system", "name", "field"), OPTIONAL)
def test_optional_field_may_be_left_out(system: str, name: str, field: str) -> None:
    contracts.request_schema(system).assertValid(request(system, name, **{field: None}))


BAD_VALUES: list[tuple[str, str, str, str]] = [
    ("dancu", "DongBoCongDanRequest", "SoLuong", "abc"),
    ("dancu", "DongBoCongDanRequest", "SoLuong", "0"),
    ("dancu", "DongBoCongDanRequest", "SoLuong", "1001"),
    ("dancu", "DongBoCongDanRequest", "MaTinh", "3"),
    ("dancu", "DongBoCongDanRequest", "MaTinh", "031"),
    ("dancu", "DongBoCongDanRequest", "MaTinh", "HP"),
    ("dancu", "DongBoCongDanRequest", "TuThoiDiem", "202501010000"),
    ("dancu", "DongBoCongDanRequest", "TuThoiDiem", "2025-01-01T00:00:00"),
    ("dancu", "DongBoCongDanRequest", "TuThoiDiem", "20251301000000"),
    ("dancu", "TraCuuThongTinCongDanRequest", "NgayThangNamSinh", "1990-01-15"),
    ("dancu", "TraCuuThongTinCongDanRequest", "NgayThangNamSinh", "199001"),
    ("dancu", "TraCuuThongTinCongDanRequest", "NgayThangNamSinh", "15011990"),
    ("dancu", "XacThucThongTinCongDanRequest", "NgayThangNamSinh", "90"),
    ("edoc", "GetReceivedEdocListRequest", "Limit", "500"),
    ("edoc", "GetReceivedEdocListRequest", "Limit", "0"),
    ("edoc", "GetReceivedEdocListRequest", "Limit", "ten"),
    ("edoc", "GetReceivedEdocListRequest", "MessageType", "EDOC"),
    ("edoc", "SendEdocRequest", "MessageType", "letter"),
    ("edoc", "SendEdocRequest", "Edxml", "not base64!"),
    ("edoc", "UpdateStatusRequest", "Status", "OK"),
    ("edoc", "UpdateStatusRequest", "Status", "pending"),
]


@pytest.mark.parametrize(("system", "name", "field", "value"), BAD_VALUES)
def test_wrong_value_is_invalid(system: str, name: str, field: str, value: str) -> None:
    schema = contracts.request_schema(system)
    assert not schema.validate(request(system, name, **{field: value}))
    assert field in str(schema.error_log)


@pytest.mark.parametrize("value", ["1", "500", "1000"])
def test_soluong_bounds_are_inclusive(value: str) -> None:
    contracts.request_schema("dancu").assertValid(
        request("dancu", "DongBoCongDanRequest", SoLuong=value)
    )


def test_id_formats_are_left_to_the_server() -> None:
    """A malformed SoDinhDanh, or a lookup without any ID, is valid XML: the server answers it
    with a typed error (RECORD_UNCOMPLETE, DATA_TYPE_INVALID), not a schema fault."""
    schema = contracts.request_schema("dancu")
    schema.assertValid(request("dancu", "XacThucThongTinCongDanRequest", SoDinhDanh="12-AB"))
    schema.assertValid(
        request("dancu", "TraCuuThongTinCongDanRequest", SoDinhDanh=None, SoCMND=None)
    )


def test_unknown_misplaced_or_unqualified_children_are_invalid() -> None:
    schema = contracts.request_schema("dancu")
    extra = request("dancu", "DongBoCongDanRequest")
    etree.SubElement(extra, f"{{{DAN}}}Khac").text = "x"
    assert not schema.validate(extra)

    fields = dict(VALID[("dancu", "DongBoCongDanRequest")])
    swapped = wrapper(DAN, "DongBoCongDanRequest", [(k, fields[k]) for k in reversed(fields)])
    assert not schema.validate(swapped)

    unqualified = etree.Element(f"{{{DAN}}}GetEdocRequest")
    assert not schema.validate(unqualified)
    edoc_unqualified = etree.Element(f"{{{EDOC}}}GetEdocRequest")
    etree.SubElement(edoc_unqualified, "DocId").text = "doc-1"
    assert not contracts.request_schema("edoc").validate(edoc_unqualified)


@pytest.mark.parametrize(("system", "ns"), [("dancu", DAN), ("edoc", EDOC)])
def test_fault_detail(system: str, ns: str) -> None:
    schema = contracts.request_schema(system)
    busy = [("MaLoi", "429"), ("MoTaLoi", "TOO_MANY_REQUESTS"), ("RetryAfter", "3")]
    schema.assertValid(wrapper(ns, "Loi", busy + [("MaYeuCau", "req-1")]))
    schema.assertValid(wrapper(ns, "Loi", [("MaLoi", "100"), ("MoTaLoi", "AUTHEN_ERROR")]))
    assert not schema.validate(wrapper(ns, "Loi", [("MaLoi", "429"), ("RetryAfter", "3")]))
    assert not schema.validate(
        wrapper(ns, "Loi", [("MaLoi", "429"), ("MoTaLoi", "X"), ("RetryAfter", "soon")])
    )


@pytest.mark.skipif(not SAMPLE.is_file(), reason="shared reference sample not present")
def test_public_sample_fits_the_record_schema() -> None:
    """The record schema follows the public sample: same names, namespace and order."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    sample = etree.parse(str(SAMPLE), parser)
    collection = sample.find(f".//{{{NS1}}}CongdanCollection")
    assert collection is not None
    schema = contracts.request_schema("dancu")
    schema.assertValid(collection)

    citizen = collection[0]
    citizen.append(citizen.find(f"{{{NS1}}}SoDinhDanh"))  # moved to the end: out of order
    assert not schema.validate(collection)


def test_empty_record_and_collection_are_valid() -> None:
    schema = contracts.request_schema("dancu")
    collection = etree.Element(f"{{{NS1}}}CongdanCollection")
    schema.assertValid(collection)
    etree.SubElement(collection, f"{{{NS1}}}CongDan")
    schema.assertValid(collection)


# --- zeep serialises requests that the schema accepts -------------------------------------------


def test_zeep_serialised_sync_request_validates(dancu_client: zeep.Client) -> None:
    schema = contracts.request_schema("dancu")
    envelope = dancu_client.create_message(
        dancu_client.service,
        "DongBoCongDan",
        MaYeuCau="req-0003",
        MaDVC="H31",
        MaCanBo="031090000001",
        MaTinh="31",
        TuThoiDiem="20250101000000",
        ConTro="abc",
        SoLuong=500,
    )
    body = body_of(envelope)
    assert body.tag == f"{{{DAN}}}DongBoCongDanRequest"
    schema.assertValid(body)
    assert body.findtext(f"{{{DAN}}}SoLuong") == "500"

    first_page = dancu_client.create_message(
        dancu_client.service,
        "DongBoCongDan",
        MaYeuCau="req-0004",
        MaDVC="H31",
        MaCanBo="031090000001",
        MaTinh="31",
        TuThoiDiem="20250101000000",
    )
    schema.assertValid(body_of(first_page))

    too_many = dancu_client.create_message(
        dancu_client.service,
        "DongBoCongDan",
        MaYeuCau="req-0005",
        MaDVC="H31",
        MaCanBo="031090000001",
        MaTinh="31",
        TuThoiDiem="20250101000000",
        SoLuong=5000,
    )
    assert not schema.validate(body_of(too_many))


def test_zeep_serialised_lookup_validates(dancu_client: zeep.Client) -> None:
    envelope = dancu_client.create_message(
        dancu_client.service,
        "TraCuuThongTinCongDan",
        MaYeuCau="req-0001",
        MaDVC="H31.02",
        MaTichHop="037",
        MaCanBo="031090000001",
        SoDinhDanh="031090000123",
        HoVaTen="Nguyễn Văn An",
        NgayThangNamSinh="19900115",
    )
    contracts.request_schema("dancu").assertValid(body_of(envelope))


def test_zeep_serialised_edoc_requests_validate(edoc_client: zeep.Client) -> None:
    schema = contracts.request_schema("edoc")
    send = edoc_client.create_message(
        edoc_client.service, "SendEdoc", MessageType="edoc", Edxml=b"<edXMLEnvelope/>"
    )
    body = body_of(send)
    schema.assertValid(body)
    assert base64.b64decode(body.findtext(f"{{{EDOC}}}Edxml")) == b"<edXMLEnvelope/>"

    schema.assertValid(body_of(edoc_client.create_message(edoc_client.service, "GetAgencies")))
    schema.assertValid(
        body_of(
            edoc_client.create_message(
                edoc_client.service, "GetReceivedEdocList", MessageType="edoc", Limit=100
            )
        )
    )
    over = edoc_client.create_message(
        edoc_client.service, "GetReceivedEdocList", MessageType="edoc", Limit=500
    )
    assert not schema.validate(body_of(over))


# --- JSON Schemas for the civil-status registry -------------------------------------------------

VALID_JSON: dict[str, dict[str, Any]] = {
    "dsHoSoDangKy": {
        "maTinh": "31",
        "module": "KS",
        "ngayCapNhat": "15/08/2025",
        "trang": 1,
        "soLuong": 1000,
    },
    "traDanhSachHoSo": {"maTinh": "31", "module": "KT", "dsMaHoSo": [1, 9223372036854775807]},
    "traHoSo": {"module": "KH", "maHoSo": 123456789012},
    "danhMuc": {"loaiDanhMuc": 4},
}


def errors(operation: str, body: Any) -> list[str]:
    validator = contracts.json_validator("civil_status", operation)
    return [e.message for e in validator.iter_errors(body)]


@pytest.mark.parametrize("operation", list(VALID_JSON))
def test_json_valid_body(operation: str) -> None:
    validator = contracts.json_validator("civil_status", operation)
    assert isinstance(validator, Draft202012Validator)
    assert validator is contracts.json_validator("civil_status", operation)
    assert errors(operation, VALID_JSON[operation]) == []


@pytest.mark.parametrize(
    ("operation", "field"),
    [(op, field) for op, body in VALID_JSON.items() for field in body],
)
def test_json_every_field_is_required(operation: str, field: str) -> None:
    body = {k: v for k, v in VALID_JSON[operation].items() if k != field}
    assert any(field in message for message in errors(operation, body))


@pytest.mark.parametrize("operation", list(VALID_JSON))
def test_json_extra_field_is_refused(operation: str) -> None:
    body = dict(VALID_JSON[operation], maDonVi="H31")
    assert any("maDonVi" in message for message in errors(operation, body))


@pytest.mark.parametrize(
    ("operation", "field", "value"),
    [
        ("dsHoSoDangKy", "soLuong", 0),
        ("dsHoSoDangKy", "soLuong", 1001),
        ("dsHoSoDangKy", "soLuong", "100"),
        ("dsHoSoDangKy", "soLuong", 10.5),
        ("dsHoSoDangKy", "trang", 0),
        ("dsHoSoDangKy", "trang", True),
        ("dsHoSoDangKy", "module", "XX"),
        ("dsHoSoDangKy", "module", "ks"),
        ("dsHoSoDangKy", "maTinh", 31),
        ("dsHoSoDangKy", "maTinh", "031"),
        ("dsHoSoDangKy", "maTinh", "31\n"),
        ("dsHoSoDangKy", "ngayCapNhat", "2025-08-15"),
        ("dsHoSoDangKy", "ngayCapNhat", "32/08/2025"),
        ("dsHoSoDangKy", "ngayCapNhat", "15/13/2025"),
        ("dsHoSoDangKy", "ngayCapNhat", "15/08/2025\n"),
        ("traDanhSachHoSo", "dsMaHoSo", []),
        ("traDanhSachHoSo", "dsMaHoSo", list(range(1, 102))),
        ("traDanhSachHoSo", "dsMaHoSo", ["1"]),
        ("traDanhSachHoSo", "dsMaHoSo", [9223372036854775808]),
        ("traDanhSachHoSo", "dsMaHoSo", 1),
        ("traHoSo", "maHoSo", "123"),
        ("traHoSo", "module", None),
        ("danhMuc", "loaiDanhMuc", 0),
        ("danhMuc", "loaiDanhMuc", 6),
        ("danhMuc", "loaiDanhMuc", "1"),
    ],
)
def test_json_wrong_value_is_refused(operation: str, field: str, value: Any) -> None:
    body = dict(VALID_JSON[operation], **{field: value})
    found = list(contracts.json_validator("civil_status", operation).iter_errors(body))
    assert found, f"{field}={value!r} was accepted"
    assert all(list(e.absolute_path)[:1] == [field] for e in found)


def test_json_limits_are_inclusive() -> None:
    hundred = dict(VALID_JSON["traDanhSachHoSo"], dsMaHoSo=list(range(100)))
    assert errors("traDanhSachHoSo", hundred) == []
    assert errors("danhMuc", {"loaiDanhMuc": 1}) == []
    assert errors("danhMuc", {"loaiDanhMuc": 5}) == []
    assert errors("dsHoSoDangKy", dict(VALID_JSON["dsHoSoDangKy"], soLuong=1)) == []


def test_json_request_schema_returns_a_copy() -> None:
    schema = contracts.json_request_schema("civil_status", "danhMuc")
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    schema["properties"]["loaiDanhMuc"]["maximum"] = 99
    fresh = contracts.json_request_schema("civil_status", "danhMuc")
    assert fresh["properties"]["loaiDanhMuc"]["maximum"] == 5
    assert errors("danhMuc", {"loaiDanhMuc": 6})


def test_not_an_object_is_refused() -> None:
    assert errors("danhMuc", [4])
    assert errors("danhMuc", None)
