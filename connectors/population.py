"""Connector for the National Population Database (``national-systems.md`` §1), SOAP.

zeep is used for what it is good at: the WSDL (loaded once per process from ``schemas/wsdl``), the
request envelope and WS-Security. The bulk answers of ``DongBoCongDan`` are read straight into
columns (zeep's object mapping is several times slower), and the next page is fetched and parsed in
a background thread while the current one is turned into Arrow, so the network and the parser
overlap. Memory is bounded by two pages whatever the size of the province.

Every answer is parsed in full by lxml, which decides well-formedness, refuses DTDs and reads faults.
Walking that tree element by element from Python costs more than the parse itself, though, so when
the records' bytes are plain XML (UTF-8; only the record elements, without attributes, comments,
CDATA or carriage returns) the columns are cut out of those already-checked bytes by numpy and Arrow
instead (:func:`scan_columns`). Any other answer takes the tree walk (:func:`extract_columns`); both
give the same columns.

Cursor: ``{"since": yyyyMMddHHmmss, "after": ConTro | None, "pass_started": ThoiDiemDuLieu}``. A pass
reads every record changed since ``since``; when it ends, the next pass starts from the server time
of the first page of this one, so a record changed while the pass ran is read again (dedupe on
``(SoDinhDanh, NgayCapNhat)`` happens in compaction).
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Iterator, Mapping, Sequence

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


def read_body_at_once(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    """Response hook: read the body in one piece of its announced length (at most 64 MB a piece).
    requests reads it in 10 kB pieces, and going through urllib3 250 times costs about 2 ms of CPU
    per 2.5 MB page; the bytes, and the errors a broken body raises, are the same.

    requests keeps a body it has read in ``_content``; setting it is how ``response.content`` is
    served from here on (hooks run before requests reads the body itself)."""
    if response._content is False and not response._content_consumed:
        announced = response.headers.get("Content-Length", "")
        piece = min(int(announced), _MAX_PIECE) if announced.isdigit() and int(announced) > 0 else _DEFAULT_PIECE
        response._content = b"".join(response.iter_content(piece)) or b""
    return response


_DEFAULT_PIECE, _MAX_PIECE = 1 << 20, 1 << 26


@dataclass
class Page:
    """One parsed ``DongBoCongDan`` answer, ready to be turned into columns."""

    element: etree._Element
    request_id: str
    fetched_at: datetime
    sha256: str
    server_time: str
    next_cursor: str | None
    body: bytes | None = None  # the answer as received, for the column scan


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
        hooks = self.transport.session.hooks["response"]
        if read_body_at_once not in hooks:
            hooks.insert(0, read_body_at_once)
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
                        server_time, cursor, response.content)

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
                        "", None, response.content)

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
        elements, texts = read_columns(page.element, page.body)
        n = len(elements)
        columns: dict[str, pa.Array] = {}
        problems: list[str | None] = [None] * n
        for name, array in texts.items():
            kind = citizens.TYPED.get(name)
            columns[name] = array if kind is None else _convert(name, array, kind, problems)
        ids = columns["personal_id"].to_pylist()
        # Vectorised first pass; only suspicious rows get the (slower) explanation in Python.
        plausible = pc.match_substring_regex(columns["personal_id"], _PLAUSIBLE_ID).to_numpy(zero_copy_only=False)
        no_update = columns["updated_at"].is_null().to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(~plausible | no_update):
            if problems[i] is None:
                problems[i] = ("SoDinhDanh is missing" if not ids[i] else personal_id_problem(ids[i])
                               or "NgayCapNhat is missing")
        bad = [i for i, problem in enumerate(problems) if problem is not None]
        return self._records(page, columns, bad), self._rejected(page, number, elements, ids, problems, bad)

    def _records(self, page: Page, columns: dict[str, pa.Array], bad: list[int]) -> pa.Table:
        """The accepted rows with their provenance, in the canonical schema."""
        n = len(columns["personal_id"])
        provenance = {
            "source_system": pa.repeat(pa.scalar(SYSTEM), n),
            "request_id": pa.repeat(pa.scalar(page.request_id), n),
            "fetched_at": pa.repeat(pa.scalar(page.fetched_at, pa.timestamp("ms", tz="UTC")), n),
            "payload_sha256": pa.repeat(pa.scalar(page.sha256), n),
        }
        table = pa.table({**columns, **provenance})
        if bad:  # most pages have nothing to drop, and filtering copies every column
            keep = np.ones(n, bool)
            keep[bad] = False
            table = table.filter(pa.array(keep))
        return table.cast(self.schema)

    def _rejected(self, page: Page, number: int, elements: Sequence[etree._Element], ids: list[str | None],
                  problems: list[str | None], bad: list[int]) -> pa.Table:
        """The quarantined rows: why, where on the page, and the record as received."""
        return pa.table({
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


def _convert(name: str, array: pa.Array, kind: pa.DataType, problems: list[str | None]) -> pa.Array:
    """A text column as ``kind``; a value that does not convert is reported in ``problems``."""
    empty = pc.equal(pc.utf8_length(array), 0)
    present = pc.invert(pc.fill_null(empty, True))
    if pa.types.is_integer(kind):
        valid = pc.match_substring_regex(array, r"^\s*-?0*\d{1,18}\s*$")  # at most 18 digits fit an int64
        wide = pc.cast(pc.if_else(valid, pc.utf8_trim_whitespace(array), None), pa.int64())
        bounds = np.iinfo(kind.to_pandas_dtype())
        fits = pc.and_(pc.greater_equal(wide, bounds.min), pc.less_equal(wide, bounds.max))
        _report(name, array, pc.and_(present, pc.invert(pc.fill_null(valid, False))), "a number", problems)
        _report(name, array, pc.and_(present, pc.invert(pc.fill_null(fits, True))),
                f"a number from {bounds.min} to {bounds.max}", problems)
        return pc.cast(pc.if_else(fits, wide, None), kind)
    # Arrow's strptime rolls 31/02 over into March; a value is valid only if it renders back as itself.
    fmt, width = ("%Y%m%d", 8) if pa.types.is_date(kind) else ("%Y%m%d%H%M%S", 14)
    parsed = pc.strptime(array, format=fmt, unit="s", error_is_null=True)
    valid = _renders_back(array, parsed, width)
    if pa.types.is_date(kind):
        converted, description = pc.cast(parsed, pa.date32()), "a date yyyyMMdd"
    else:
        converted = pc.assume_timezone(parsed, timezone="Asia/Ho_Chi_Minh")
        description = "a time yyyyMMddHHmmss"
    _report(name, array, pc.and_(present, pc.invert(pc.fill_null(valid, False))), description, problems)
    return converted


def _report(name: str, array: pa.Array, wrong: pa.Array, description: str, problems: list[str | None]) -> None:
    """Note, for each row ``wrong`` marks, that its value of ``name`` is not ``description``."""
    element = citizens.WIRE_TEXT[name]
    for i in np.flatnonzero(wrong.to_numpy(zero_copy_only=False)):
        if problems[i] is None:
            problems[i] = f"{element} {array[i].as_py()!r} is not {description}"


def _renders_back(text: pa.Array, parsed: pa.Array, width: int) -> pa.Array:
    """Whether ``parsed`` formats back as exactly ``text`` (``width`` 8: yyyyMMdd, 14: with HHmmss).

    ``strftime`` pads every field with zeros, so it gives ``text`` back exactly when ``text`` is
    ``width`` ASCII digits whose value is the parsed fields read as one number; checked that way it
    costs a tenth of formatting a thousand values."""
    digits = pc.match_substring_regex(text, f"^[0-9]{{{width}}}$")
    number = pc.cast(pc.if_else(digits, text, None), pa.int64())
    fields = [pc.year, pc.month, pc.day] + ([pc.hour, pc.minute, pc.second] if width == 14 else [])
    rendered = fields[0](parsed)
    for field in fields[1:]:
        rendered = pc.add(pc.multiply(rendered, 100), field(parsed))
    return pc.equal(rendered, number)


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


# -- reading the records into text columns ------------------------------------------------------

def read_columns(response: etree._Element, body: bytes | None) -> tuple[Sequence[etree._Element],
                                                                         dict[str, pa.Array]]:
    """The ``ns1:CongDan`` elements of an answer and their text columns, whitespace-trimmed, ``""``
    where a record has no such element: by :func:`scan_columns` when the bytes allow it, else by
    walking the tree."""
    collection = response.find(_COLLECTION)
    if body is not None and collection is not None:
        columns = scan_columns(body, collection)
        if columns is not None:
            return collection, columns
    elements, texts = extract_columns(response)
    return elements, {name: pc.utf8_trim_whitespace(pa.array(values, pa.string())) for name, values in texts.items()}


def scan_columns(body: bytes, collection: etree._Element) -> dict[str, pa.Array] | None:
    """The text columns of ``collection``'s records cut out of ``body``, the bytes lxml parsed it
    from, with no Python work per element; ``None`` when those bytes are not plain enough for that.

    Plain means: UTF-8; between the collection's two tags only the known record elements, in the
    collection's own prefix, without attributes, at most two levels below ``CongDan``, each in a
    record at most once; no comments, CDATA, processing instructions or carriage returns (the parser
    would have changed those); no record outside the collection. lxml has already checked that the
    bytes are well-formed, so in such bytes every ``<`` opens a tag and the first ``>`` after it ends it.
    """
    if not len(collection):
        return {name: pa.array([], pa.string()) for name in _COLUMNS}
    span = _records_span(body, collection)
    if span is None:
        return None
    start, end, prefix = span
    segments = _segments(body, start, end)
    codes = None if segments is None else _tag_codes(segments, _tags(prefix))
    records = len(collection)
    placed = None if codes is None else _place(codes, records)
    if placed is None:
        return None
    values = _gather(segments, *placed, records, unescape=body.find(b"&", start, end) >= 0)
    return {name: values.slice(i * records, records) for i, name in enumerate(_COLUMNS)}


def _records_span(body: bytes, collection: etree._Element) -> tuple[int, int, str] | None:
    """Where the collection's content lies in ``body`` and the prefix its tags use, if the document
    is UTF-8 and nothing but the collection's own two tags (not a comment, not a second collection)
    mentions it, and no record sits outside it."""
    encoding = (collection.getroottree().docinfo.encoding or "").lower()
    if encoding not in ("utf-8", "utf8") or len(body) >= 2**31:  # UTF-16 or -32 are not found below
        return None
    prefix = collection.prefix or ""
    qualified = f"{prefix}:".encode() if prefix else b""
    # A third mention between these two would be inside the records: as text it is harmless, as a
    # tag it is not a record tag, and the scan gives up.
    first, second = body.find(_NAME), body.rfind(_NAME)
    opening, closing = first - len(qualified) - 1, second - len(qualified) - 2
    if opening < 0 or second <= first:
        return None
    if body[opening:first] != b"<" + qualified or body[closing:second] != b"</" + qualified:
        return None
    tag = _START_TAG_REST.match(body, first + len(_NAME))
    if tag is None or tag.group(1) or not _END_TAG_REST.match(body, second + len(_NAME)):
        return None
    start, end = tag.end(), closing
    if _RECORD_TAG.search(body, 0, opening) or _RECORD_TAG.search(body, second) or body.find(b"\r", start, end) >= 0:
        return None
    return start, end, prefix


#: A ``CongDan`` start tag in any prefix (outside the collection, the tree walk would read it as a record).
_RECORD_TAG = re.compile(rb"<(?:[^\s<>/:]+:)?CongDan[\s/>]")
_NAME = b"CongdanCollection"
#: The rest of a start tag after its name: attributes (quoted values may hold ``>``), then ``>`` or ``/>``.
_START_TAG_REST = re.compile(rb"""(?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*\s*(/?)>""")
_END_TAG_REST = re.compile(rb"\s*>")


def _segments(body: bytes, start: int, end: int) -> pa.Array | None:
    """``body[start:end]`` cut at every tag boundary into alternating tags and texts, ``"<tag>"``,
    ``"text"``, ``"<tag>"``, … as one Arrow array over the same bytes (nothing is copied), plus a
    last, empty, segment that stands for absent values. ``None`` if a ``<`` is never closed."""
    view = np.frombuffer(body, np.uint8, end - start, start)
    opens = np.flatnonzero(view == ord("<"))
    closes = np.flatnonzero(view == ord(">"))
    if len(closes) != len(opens):  # some text holds a '>': a tag ends at the first '>' after its '<'
        first = np.searchsorted(closes, opens)
        if len(opens) and first[-1] >= len(closes):
            return None
        closes = closes[first]
    offsets = np.empty(2 * len(opens) + 2, np.int32)
    offsets[0:-2:2] = opens + start
    offsets[1:-2:2] = closes + start + 1
    offsets[-2:] = end
    return pa.Array.from_buffers(pa.string(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(body)])


@dataclass(frozen=True)
class _TagSet:
    """The tags a record may contain, spelled with one prefix: code ``3k`` opens element ``k``,
    ``3k+1`` closes it, ``3k+2`` is it empty (``<p:X/>``)."""

    spelled: pa.Array
    depth_change: np.ndarray  # +1, -1 or 0 per code
    element: np.ndarray  # element number per code


@lru_cache(maxsize=8)
def _tags(prefix: str) -> _TagSet:
    qualified = f"{prefix}:" if prefix else ""
    spelled = [form for name in _ELEMENTS for form in (f"<{qualified}{name}>", f"</{qualified}{name}>",
                                                       f"<{qualified}{name}/>")]
    codes = np.arange(len(spelled))
    return _TagSet(pa.array(spelled, pa.string()), np.array([1, -1, 0], np.int8)[codes % 3], codes // 3)


def _tag_codes(segments: pa.Array, tags: _TagSet) -> np.ndarray | None:
    """The code of every tag segment, or ``None`` if one is not a known record tag. Text segments
    never match (they cannot contain ``<``, with which every known tag starts), so the tags are all
    known exactly when the texts are the only misses."""
    found = pc.index_in(segments, value_set=tags.spelled)
    texts = len(segments) // 2 + 1
    if found.null_count != texts:
        return None
    return np.frombuffer(found.buffers()[1], np.int32, len(found), found.offset)[0:-1:2]


def _place(codes: np.ndarray, records: int) -> tuple[np.ndarray, np.ndarray] | None:
    """For every value of the page: its slot (``record * width + column``) and the segment holding
    its text (-1 for an empty element). ``None`` if the tags do not have the shape of records:
    ``CongDan`` elsewhere than around a record, deeper nesting, an element twice in one record."""
    tags = _tags("")  # depth change and element number do not depend on the prefix
    change = tags.depth_change[codes]
    opening = np.flatnonzero(change >= 0)
    change_at = change[opening]
    level = np.cumsum(change, dtype=np.int16)[opening] - change_at  # 0: a record, 1: its child, 2: its grandchild
    element = tags.element[codes[opening]]
    is_record = level == 0
    if level.max() > 2 or (is_record != (element == _CONG_DAN_NUMBER)).any() or is_record.sum() != records:
        return None
    # A start tag followed by an end tag encloses only text: a leaf. A grandchild's column depends on
    # the child it is in, the last child opened before it; a child's on the row of top-level columns.
    leaf = (change_at == 0) | (change[np.minimum(opening + 1, len(codes) - 1)] == -1)
    child = level == 1
    parent = element[np.maximum.accumulate(np.where(child, np.arange(len(opening)), 0))]
    parent[child] = _TOP_ROW
    column = _COLUMN_OF[parent, element]
    keep = leaf & (column >= 0)
    slots = (np.cumsum(is_record) - 1)[keep] * len(_COLUMNS) + column[keep]
    if len(slots) and np.bincount(slots).max() > 1:
        return None
    text = np.where(change_at[keep] == 0, -1, 2 * opening[keep] + 1)  # -1: the last, empty segment
    return slots, text


def _gather(segments: pa.Array, slots: np.ndarray, text: np.ndarray, records: int, unescape: bool) -> pa.Array:
    """All columns one after the other in one string array (``""`` where a record has no value),
    character references resolved, whitespace trimmed, as the tree walk gives them."""
    index = np.full(records * len(_COLUMNS), len(segments) - 1, np.int32)
    index[slots] = np.where(text < 0, len(segments) - 1, text)
    values = segments.take(index.reshape(records, len(_COLUMNS)).T.ravel())
    if unescape:
        escaped = pc.match_substring(values, "&")
        where = np.flatnonzero(escaped.to_numpy(zero_copy_only=False))
        if len(where):
            resolved = [_REFERENCE.sub(_resolve, values[int(i)].as_py()) for i in where]
            values = pc.replace_with_mask(values, escaped, pa.array(resolved, pa.string()))
    return pc.utf8_trim_whitespace(values)


#: The references well-formed XML without a DTD may contain (lxml has refused anything else).
_REFERENCE = re.compile(r"&(?:#x([0-9A-Fa-f]+)|#([0-9]+)|(lt|gt|amp|quot|apos));")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


def _resolve(reference: re.Match) -> str:
    hexadecimal, decimal, name = reference.groups()
    return chr(int(hexadecimal, 16)) if hexadecimal else chr(int(decimal)) if decimal else _NAMED[name]


_COLLECTION = f"{{{NS1}}}CongdanCollection"
#: Every element name a record may contain, and where each lands: a column number, or -1.
_ELEMENTS = sorted({part for path in citizens.WIRE_TEXT.values() for part in path.split("/")} | {"CongDan"})
_NUMBER = {name: i for i, name in enumerate(_ELEMENTS)}
_CONG_DAN_NUMBER = _NUMBER["CongDan"]
#: ``_COLUMN_OF[parent, element]``: the column of ``element`` inside ``parent``; row ``_TOP_ROW`` is for
#: the record's own children. A ``CongDan`` is in no column, so a record never lands anywhere.
_TOP_ROW = len(_ELEMENTS)
_COLUMN_OF = np.full((len(_ELEMENTS) + 1, len(_ELEMENTS)), -1, np.int64)
for _i, _path in enumerate(citizens.WIRE_TEXT.values()):
    _parts = [_NUMBER[part] for part in _path.split("/")]
    _COLUMN_OF[_parts[0] if len(_parts) == 2 else _TOP_ROW, _parts[-1]] = _i
