"""Hand-built SOAP requests for tests that must control every byte (stale times, replays, garbage)."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from datetime import datetime, timedelta, timezone

import requests
from lxml import etree

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
DAN_NS = "http://dancuquocgia.bca"
NS1 = "http://www.mic.gov.vn/dancu/1.0"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"


def security(user: str, password: str, *, nonce: bytes | None = None, skew_s: float = 0) -> str:
    nonce = nonce if nonce is not None else os.urandom(16)
    created = (datetime.now(timezone.utc) + timedelta(seconds=skew_s)).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()
    return (f'<wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"><wsse:UsernameToken>'
            f'<wsse:Username>{user}</wsse:Username><wsse:Password Type="{DIGEST}">{digest}</wsse:Password>'
            f"<wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce><wsu:Created>{created}</wsu:Created>"
            "</wsse:UsernameToken></wsse:Security>")


def envelope(header: str, body: str) -> bytes:
    return (f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}" xmlns:dan="{DAN_NS}">'
            f"<soapenv:Header>{header}</soapenv:Header><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>").encode()


ORDER = {
    "TraCuuThongTinCongDan": ("MaYeuCau", "MaDVC", "MaTichHop", "MaCanBo", "MaHoSo", "SoDinhDanh", "SoCMND",
                              "HoVaTen", "NgayThangNamSinh"),
    "XacThucThongTinCongDan": ("MaYeuCau", "MaDVC", "MaDichVu", "MaCanBo", "SoDinhDanh", "SoCMND", "HoVaTen",
                               "NgayThangNamSinh"),
    "DongBoCongDan": ("MaYeuCau", "MaDVC", "MaCanBo", "MaTinh", "TuThoiDiem", "ConTro", "SoLuong"),
}


def request_element(operation: str, **fields: object) -> str:
    """The request wrapper with ``fields`` in the schema's order (None leaves a field out)."""
    order = ORDER.get(operation, tuple(fields))
    inner = "".join(f"<dan:{k}>{fields[k]}</dan:{k}>" for k in order if fields.get(k) is not None)
    return f"<dan:{operation}Request>{inner}</dan:{operation}Request>"


class PopulationCaller:
    """Posts hand-built requests to a sandbox's population endpoint with valid credentials."""

    def __init__(self, env: dict[str, str], session: requests.Session | None = None) -> None:
        self.env = env
        self.url = f"{env['HUB_POPULATION_URL']}/dancu"
        self.session = session or requests.Session()

    def context(self) -> dict[str, str]:
        return {"MaYeuCau": str(uuid.uuid4()), "MaDVC": self.env["HUB_AGENCY_CODE"], "MaCanBo": self.env["HUB_OFFICER_ID"]}

    def post(self, operation: str, header: str | None = None, raw: bytes | None = None, **fields) -> requests.Response:
        if header is None:
            header = security(self.env["HUB_POPULATION_USER"], self.env["HUB_POPULATION_PASSWORD"])
        body = raw if raw is not None else envelope(header, request_element(operation, **fields))
        return self.session.post(self.url, data=body, timeout=30,
                                 headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f"{DAN_NS}/{operation}"})

    def call(self, operation: str, **fields) -> etree._Element:
        response = self.post(operation, **{**self.context(), **fields})
        return etree.fromstring(response.content)


def fault_code(response: requests.Response) -> str:
    root = etree.fromstring(response.content)
    code = root.find(f".//{{{DAN_NS}}}MaLoi")
    assert code is not None, response.text[:500]
    return code.text
