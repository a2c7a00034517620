"""Connector for the National Population Database (``national-systems.md`` §1), SOAP.

zeep is used for what it is good at: the WSDL (loaded once per process from ``schemas/wsdl``), the
request envelope and WS-Security. The bulk answers of ``DongBoCongDan`` are read with lxml straight
into columns (zeep's object mapping is several times slower), and the next page is fetched and
parsed in a background thread while the current one is turned into Arrow, so the network and the
parser overlap. Memory is bounded by two pages whatever the size of the province.

Cursor: ``{"since": yyyyMMddHHmmss, "after": ConTro | None, "pass_started": ThoiDiemDuLieu}``. A pass
reads every record changed since ``since``; when it ends, the next pass starts from the server time
of the first page of this one, so a record changed while the pass ran is read again (dedupe on
``(SoDinhDanh, NgayCapNhat)`` happens in compaction).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import requests
import zeep
from lxml import etree
from zeep.wsse.username import UsernameToken

from connectors.base import Batch, CheckResult
from connectors.errors import (AuthenticationFailed, ConnectorError, MalformedResponse, PermanentError,
                               TransientError)
from connectors.transport import HttpRequest, Transport, options_from_env
from hub.config import Settings
from schemas import contracts
from schemas.canonical import QUARANTINE_SCHEMA
from schemas.canonical import citizens
from schemas.identifiers import personal_id_problem
from schemas.timefmt import COMPACT, render

DAN = "http://dancuquocgia.bca"
NS1 = "http://www.mic.gov.vn/dancu/1.0"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
BINDING = f"{{{DAN}}}DanCuSoapBinding"
SYSTEM = "population"
EVERYTHING = "20000101000000"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)


@lru_cache(maxsize=1)
def _wsdl_client() -> zeep.Client:
    """The zeep client of the population WSDL, parsed once per process (it is the slow part of zeep)."""
    return zeep.Client(str(contracts.wsdl_path("dancu")))


def parse_soap(body: bytes) -> etree._Element:
    """The SOAP Body's first element of an answer; faults become the transport's error types."""
    if b"<!DOCTYPE" in body[:2048].upper():
        raise PermanentError("answer carries a DTD, which is refused")
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise MalformedResponse(f"answer is not well-formed XML ({len(body)} bytes): {exc}") from None
    fault = root.find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    if fault is not None:
        raise_fault(fault)
    payload = root.find(f"{{{SOAP}}}Body")
    element = next((child for child in payload if isinstance(child.tag, str)), None) if payload is not None else None
    if element is None:
        raise MalformedResponse("answer has no SOAP Body content")
    return element


def raise_fault(fault: etree._Element) -> None:
    """Turn a SOAP fault (detail ``Loi/MaLoi`` per §0) into a transient, auth or permanent error."""
    code = (fault.findtext(".//{*}MaLoi") or "").strip()
    message = (fault.findtext("faultstring") or fault.findtext("{*}faultstring") or "").strip()
    retry_after = fault.findtext(".//{*}RetryAfter")
    if code in ("429", "503"):
        raise TransientError(f"fault {code}: {message}", float(retry_after) if retry_after else None)
    if code == "100":
        raise AuthenticationFailed(f"fault 100: {message}")
    raise PermanentError(f"fault {code or '?'}: {message}", code=code)


@dataclass
class Page:
    """One parsed ``DongBoCongDan`` answer, ready to be turned into columns."""

    element: etree._Element
    request_id: str
    fetched_at: datetime
    sha256: str
    server_time: str
    next_cursor: str | None


class PopulationConnector:
    system = SYSTEM
    dataset = citizens.DATASET
    schema = citizens.SCHEMA
    key = citizens.KEY
    version_column = citizens.VERSION_COLUMN

    def __init__(self, base_url: str, user: str, password: str, *, province: str, agency_code: str, officer_id: str,
                 page_size: int = 1000, since: str = EVERYTHING, transport: Transport | None = None) -> None:
        if not base_url:
            raise ValueError("HUB_POPULATION_URL is not set")
        self.endpoint = f"{base_url.rstrip('/')}/dancu"
        self._token = UsernameToken(user, password, use_digest=True)
        self.province, self.agency_code, self.officer_id = province, agency_code, officer_id
        self.page_size = page_size
        self.since = since
        self.transport = transport or Transport(SYSTEM, base_url=base_url)
        self._service = _wsdl_client().create_service(BINDING, self.endpoint)

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str]) -> "PopulationConnector":
        page_size = int(environ.get("HUB_POPULATION_PAGE_SIZE", "1000"))
        if not 1 <= page_size <= 1000:
            raise ValueError("HUB_POPULATION_PAGE_SIZE must be between 1 and 1000")
        since = environ.get("HUB_POPULATION_SINCE", EVERYTHING).strip()
        if not (len(since) == 14 and since.isdigit()):
            raise ValueError("HUB_POPULATION_SINCE must be yyyyMMddHHmmss")
        return cls(settings.population_url, settings.population_user, settings.population_password.reveal(),
                   province=settings.province, agency_code=settings.agency_code, officer_id=settings.officer_id,
                   page_size=page_size, since=since,
                   transport=Transport(SYSTEM, options_from_env(SYSTEM, environ), base_url=settings.population_url))

    # -- requests ---------------------------------------------------------------------------------
    def _request(self, operation: str, request_id: str, **fields: Any) -> HttpRequest:
        """A fresh envelope for one attempt: new MaYeuCau, new WS-Security nonce and time."""
        envelope = _wsdl_client().create_message(self._service, operation, MaYeuCau=request_id,
                                                 MaDVC=self.agency_code, **fields)
        envelope, _ = self._token.apply(envelope, {})
        return HttpRequest("POST", self.endpoint, data=etree.tostring(envelope, encoding="utf-8"),
                           headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f"{DAN}/{operation}"})

    def _page(self, since: str, after: str | None, size: int, attempts: int | None = None) -> Page:
        sent: dict[str, str] = {}

        def build(request_id: str) -> HttpRequest:
            sent["id"] = request_id
            fields = {"MaCanBo": self.officer_id, "MaTinh": self.province, "TuThoiDiem": since, "SoLuong": size}
            if after:
                fields["ConTro"] = after
            return self._request("DongBoCongDan", request_id, **fields)

        def parse(response: requests.Response) -> Page:
            element = parse_soap(response.content)
            if etree.QName(element).localname != "DongBoCongDanResponse":
                raise MalformedResponse(f"expected DongBoCongDanResponse, got {etree.QName(element).localname}")
            server_time = (element.findtext(f"{{{DAN}}}ThoiDiemDuLieu") or "").strip()
            if not (len(server_time) == 14 and server_time.isdigit()):
                raise MalformedResponse(f"ThoiDiemDuLieu {server_time!r} is not yyyyMMddHHmmss")
            if element.find(f"{{{NS1}}}CongdanCollection") is None:
                raise MalformedResponse("answer has no CongdanCollection")
            cursor = (element.findtext(f"{{{DAN}}}ConTro") or "").strip() or None
            return Page(element, sent["id"], datetime.now(timezone.utc), hashlib.sha256(response.content).hexdigest(),
                        server_time, cursor)

        return self.transport.call("DongBoCongDan", build, parse, attempts)

    def lookup(self, *, full_name: str, birth: str, personal_id: str = "", cmnd: str = "", dossier: str = "",
               procedure: str = "") -> dict[str, Any] | None:
        """Service 037: the citizen's record as a canonical row, or ``None`` when the registry does not
        match (unknown ID, or name and date of birth not those of the ID). ``birth`` is ``yyyyMMdd`` or
        ``yyyy``; the purpose is the dossier code or, failing that, the procedure code."""
        if not (personal_id or cmnd):
            raise ValueError("a lookup needs a personal ID or an old CMND number")
        if not (dossier or procedure):
            raise ValueError("a lookup of a person must name its purpose: a dossier or a procedure code")
        fields = {"MaTichHop": "037", "MaCanBo": self.officer_id, "MaHoSo": dossier or procedure,
                  "SoDinhDanh": personal_id or None, "SoCMND": cmnd or None, "HoVaTen": full_name,
                  "NgayThangNamSinh": birth}
        page = self._single("TraCuuThongTinCongDan", fields)
        records, rejected = self.to_tables(page, 1)
        if rejected.num_rows:
            raise ConnectorError(SYSTEM, "TraCuuThongTinCongDan", page.request_id, rejected["reason"][0].as_py())
        return records.to_pylist()[0] if records.num_rows else None

    def verify(self, *, personal_id: str, full_name: str, birth: str = "", cmnd: str = "") -> bool:
        """Service 033: does a citizen with this ID, name (and date of birth, card) exist?"""
        fields = {"MaDichVu": "033", "MaCanBo": self.officer_id, "SoDinhDanh": personal_id,
                  "SoCMND": cmnd or None, "HoVaTen": full_name, "NgayThangNamSinh": birth or None}
        page = self._single("XacThucThongTinCongDan", fields)
        answer = (page.element.findtext(f"{{{DAN}}}TonTai") or "").strip().lower()
        if answer not in ("true", "false", "1", "0"):
            raise ConnectorError(SYSTEM, "XacThucThongTinCongDan", page.request_id, f"TonTai is {answer!r}")
        return answer in ("true", "1")

    def _single(self, operation: str, fields: dict[str, Any]) -> Page:
        sent: dict[str, str] = {}

        def build(request_id: str) -> HttpRequest:
            sent["id"] = request_id
            return self._request(operation, request_id, **fields)

        def parse(response: requests.Response) -> Page:
            element = parse_soap(response.content)
            if etree.QName(element).localname != f"{operation}Response":
                raise MalformedResponse(f"expected {operation}Response, got {etree.QName(element).localname}")
            return Page(element, sent["id"], datetime.now(timezone.utc), hashlib.sha256(response.content).hexdigest(),
                        "", None)

        return self.transport.call(operation, build, parse)

    # -- the connector protocol -----------------------------------------------------------------------
    def check(self) -> CheckResult:
        now = render(datetime.now(timezone.utc).timestamp(), COMPACT)
        try:
            page = self._page(now, None, 1, attempts=2)
        except ConnectorError as exc:
            return CheckResult(False, exc.detail)
        return CheckResult(True, f"{self.endpoint} answered DongBoCongDan as {self.agency_code} "
                                 f"(server time {page.server_time})")

    def read(self, cursor: dict[str, Any] | None) -> Iterator[Batch]:
        cursor = dict(cursor or {"since": self.since, "after": None, "pass_started": None})
        pages: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()
        fetcher = threading.Thread(target=self._fetch_pages, args=(cursor, pages, stop), daemon=True,
                                   name="population-prefetch")
        fetcher.start()
        try:
            while True:
                item = pages.get()
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    return
                page, position = item
                records, rejected = self.to_tables(page, position)
                started = cursor["pass_started"] or page.server_time
                if page.next_cursor:
                    cursor = {"since": cursor["since"], "after": page.next_cursor, "pass_started": started}
                else:
                    cursor = {"since": started, "after": None, "pass_started": None}
                yield Batch(records, dict(cursor), rejected, progress=records.num_rows + rejected.num_rows)
        finally:
            stop.set()
            while fetcher.is_alive():
                try:
                    pages.get_nowait()
                except queue.Empty:
                    fetcher.join(0.05)

    def _fetch_pages(self, cursor: dict[str, Any], pages: queue.Queue, stop: threading.Event) -> None:
        """Producer: fetch and parse page after page, one ahead of the consumer."""
        since, after, number = cursor["since"], cursor["after"], 0
        try:
            while not stop.is_set():
                page = self._page(since, after, self.page_size)
                number += 1
                pages.put((page, number))
                if not page.next_cursor:
                    break
                after = page.next_cursor
            pages.put(None)
        except BaseException as exc:  # handed to the consumer, which raises it in the caller's thread
            pages.put(exc)

    # -- columns ------------------------------------------------------------------------------------
    def to_tables(self, page: Page, number: int) -> tuple[pa.Table, pa.Table]:
        """Canonical rows and quarantined rows of one page."""
        elements, texts = extract_columns(page.element)
        n = len(elements)
        columns: dict[str, pa.Array] = {}
        problems: list[str | None] = [None] * n
        for name, values in texts.items():
            array = pc.utf8_trim_whitespace(pa.array(values, pa.string()))
            kind = citizens.TYPED.get(name)
            columns[name] = array if kind is None else _convert(name, array, kind, problems)
        ids = columns["personal_id"].to_pylist()
        # Vectorised first pass; only suspicious rows get the (slower) explanation in Python.
        plausible = pc.match_substring_regex(columns["personal_id"], _PLAUSIBLE_ID).to_pylist()
        no_update = columns["updated_at"].is_null().to_pylist()
        for i in np.flatnonzero(~np.array(plausible, bool) | np.array(no_update, bool)):
            if problems[i] is None:
                problems[i] = ("SoDinhDanh is missing" if not ids[i] else personal_id_problem(ids[i])
                               or "NgayCapNhat is missing")
        ok = np.array([p is None for p in problems], bool)
        provenance = {
            "source_system": pa.repeat(pa.scalar(SYSTEM), n),
            "request_id": pa.repeat(pa.scalar(page.request_id), n),
            "fetched_at": pa.repeat(pa.scalar(page.fetched_at, pa.timestamp("ms", tz="UTC")), n),
            "payload_sha256": pa.repeat(pa.scalar(page.sha256), n),
        }
        table = pa.table({**columns, **provenance}).filter(pa.array(ok)).cast(self.schema)
        bad = np.flatnonzero(~ok)
        rejected = pa.table({
            "source_system": [SYSTEM] * len(bad),
            "dataset": [self.dataset] * len(bad),
            "operation": ["DongBoCongDan"] * len(bad),
            "request_id": [page.request_id] * len(bad),
            "position": [f"page {number}, record {i + 1}" for i in bad],
            "record_key": [ids[i] or None for i in bad],
            "reason": [problems[i] for i in bad],
            "raw": [etree.tostring(elements[i], encoding="unicode") for i in bad],
            "fetched_at": pa.repeat(pa.scalar(page.fetched_at, pa.timestamp("ms", tz="UTC")), len(bad)),
        }, schema=QUARANTINE_SCHEMA)
        return table, rejected


def _convert(name: str, array: pa.Array, kind: pa.DataType, problems: list[str | None]) -> pa.Array:
    """A text column as ``kind``; a value that does not convert is reported in ``problems``."""
    empty = pc.equal(pc.utf8_length(array), 0)
    present = pc.invert(pc.fill_null(empty, True))
    if pa.types.is_integer(kind):
        valid = pc.match_substring_regex(array, r"^\s*-?\d+\s*$")
        converted = pc.cast(pc.if_else(valid, pc.utf8_trim_whitespace(array), None), kind, safe=False)
        description = "a number"
    else:
        # Arrow's strptime rolls 31/02 over into March; a value is valid only if it renders back as itself.
        fmt = "%Y%m%d" if pa.types.is_date(kind) else "%Y%m%d%H%M%S"
        parsed = pc.strptime(array, format=fmt, unit="s", error_is_null=True)
        valid = pc.equal(pc.strftime(parsed, format=fmt), array)
        if pa.types.is_date(kind):
            converted, description = pc.cast(parsed, pa.date32()), "a date yyyyMMdd"
        else:
            converted = pc.assume_timezone(parsed, timezone="Asia/Ho_Chi_Minh")
            description = "a time yyyyMMddHHmmss"
    wrong = np.flatnonzero(pc.and_(present, pc.invert(pc.fill_null(valid, False))).to_numpy(zero_copy_only=False))
    element = citizens.WIRE_TEXT[name]
    for i in wrong:
        if problems[i] is None:
            problems[i] = f"{element} {array[i].as_py()!r} is not {description}"
    return converted


#: A 12-digit personal ID whose province part is not 000 and whose gender/century digit is 0-5.
_PLAUSIBLE_ID = r"^(?:0\d[1-9]|0[1-9]\d|[1-9]\d\d)[0-5]\d{8}$"
_TOP: dict[str, str] = {}
_NESTED: dict[str, dict[str, str]] = {}
for _column, _path in citizens.WIRE_TEXT.items():
    _parts = _path.split("/")
    if len(_parts) == 1:
        _TOP[f"{{{NS1}}}{_parts[0]}"] = _column
    else:
        _NESTED.setdefault(f"{{{NS1}}}{_parts[0]}", {})[f"{{{NS1}}}{_parts[1]}"] = _column
_CONG_DAN = f"{{{NS1}}}CongDan"
_COLUMNS = list(citizens.WIRE_TEXT)
_INDEX = {name: i for i, name in enumerate(_COLUMNS)}
_TOP_INDEX = {tag: _INDEX[c] for tag, c in _TOP.items()}
_NESTED_INDEX = {tag: {leaf: _INDEX[c] for leaf, c in leaves.items()} for tag, leaves in _NESTED.items()}


def extract_columns(response: etree._Element) -> tuple[list[etree._Element], dict[str, tuple[str, ...]]]:
    """The ``ns1:CongDan`` elements of an answer and their text columns, in one pass over the tree.

    Element order inside a record does not matter and absent elements give empty strings. A child
    with children of its own (an address, a relative) switches the lookup table for exactly that
    many following elements, so a nested ``SoDinhDanh`` is never taken for the record's own.
    """
    width = len(_COLUMNS)
    rows: list[list[str]] = []
    elements: list[etree._Element] = []
    row: list[str] | None = None
    nested: dict[str, int] = {}
    remaining = 0
    top_get, nested_get = _TOP_INDEX.get, _NESTED_INDEX.get
    for element in response.iter():
        tag = element.tag
        if remaining:
            remaining -= 1
            index = nested.get(tag)
            if index is not None:
                row[index] = element.text or ""
            continue
        if tag == _CONG_DAN:
            row = [""] * width
            rows.append(row)
            elements.append(element)
            continue
        if row is None:
            continue
        children = len(element)
        if children:
            nested, remaining = nested_get(tag) or {}, children
            continue
        index = top_get(tag)
        if index is not None:
            row[index] = element.text or ""
    columns = list(zip(*rows)) if rows else [()] * width
    return elements, dict(zip(_COLUMNS, columns))
