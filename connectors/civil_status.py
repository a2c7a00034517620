"""The civil-status registry connector (``national-systems.md`` §2): births, deaths, marriages → ``civil_events``.

The registry offers no change feed, only ``dsHoSoDangKy``: the records of one module changed on one day,
paged by number. So a sync walks every day from its cursor to today, per module, pages through each
day's list and fetches the records it has not seen with ``traDanhSachHoSo``. The list is at-least-once:

- a record may come twice (on two pages, or again after a kill) → dedupe on (module, id, ngayCapNhat);
- a record updated while we page leaves its day and joins today's list, which shifts the rest of its
  day → when a day's ``tongSo`` changes between its pages, that day is read again from page 1 (records
  already fetched are not fetched again), and today's list is read only after every other list call of
  the module has been answered, so whatever those calls moved is seen there;
- a record whose ``ngayCapNhat`` is on a later day is met again there; the newest ``updated_at`` wins
  when ``hub extract`` compacts the parts.

The cursor (``{"format": 1, "modules": {module: position}}``) is per module: the day to start at, the
page of that day and the ``tongSo`` seen on it, and the (id, ngayCapNhat) pairs already delivered from
that day on. Mid-sync it points at the next page or day; once today has been read it points back at
yesterday with both days' pairs, so the next run lists yesterday and today again (a client clock minutes
ahead of the server's near midnight cannot lose a record) but fetches only the records changed since.
Days are listed ahead in parallel (``HUB_CIVIL_WORKERS``) and committed strictly in order.

Validation. A record is quarantined (with the reason and its position: module, day, page, index, id)
only when what identifies or defines it is unusable. Required:
``id`` (an integer, the one asked for), ``module`` (when present, the one asked for), ``ngayCapNhat``
(the version: a real moment ``dd/MM/yyyy HH:mm:ss``), ``ngayDangKy`` (a real date), the date of the
registered event (``nksNgaySinh`` for a birth, ``nktNgayChet`` for a death) and, for a birth, ``soDinhDanh``
when present must pass the personal-ID structure rules: it is the number the registry itself assigned,
not one copied from a paper. Everything else is kept: a field that cannot be typed (an impossible date of
a parent, a gender of ``"x"``) becomes null and is described in ``issues``, and the ID numbers people
presented (parents, requester, the deceased, the spouses) stay verbatim, with what is wrong with them in
``issues``, because a mistyped or old CMND number is exactly what reconciliation must see.

Knobs besides the transport's ``HUB_CIVIL_…`` ones: ``HUB_CIVIL_MODULES`` (default ``KS,KT,KH``),
``HUB_CIVIL_SINCE`` (first day of a first sync, ``dd/MM/yyyy`` or ``YYYY-MM-DD``; default three years
ago), ``HUB_CIVIL_PAGE_SIZE`` (≤ 1000, default 1000), ``HUB_CIVIL_BATCH_SIZE`` (≤ 100, default 100),
``HUB_CIVIL_WORKERS`` (days listed at once, default 4).
"""

from __future__ import annotations

import copy
import hashlib
import re
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, Mapping

import orjson
import pyarrow as pa
import requests

from connectors.base import Batch, CheckResult
from connectors.errors import AuthenticationFailed, ConnectorError, MalformedResponse, PermanentError, TransientError
from connectors.transport import (HttpRequest, OAuth2ClientCredentials, Transport, TransportOptions, make_session,
                                  options_from_env)
from hub.config import ConfigError, Settings
from schemas.canonical import QUARANTINE_SCHEMA
from schemas.canonical import civil_events as canonical
from schemas.identifiers import is_cmnd, personal_id_problem
from schemas.timefmt import VN_TZ

SYSTEM = "civil"
API_PATH = "/apiHoTichTuPhap"
CURSOR_FORMAT = 1
OVERLAP_DAYS = 1  # days before today that every incremental run lists again (clock skew at midnight)
MAX_DAYS_PER_BATCH = 31  # commit at least monthly, so a kill re-lists at most a month of days
MAX_RESTARTS = 25  # re-reads of one day whose tongSo keeps moving before the run gives up
PREFETCH_DAYS_PER_WORKER = 16  # days listed ahead per worker: room to keep going while one call waits out a 429
CHECK_ATTEMPTS = 2  # `hub check` answers in seconds, not after a full retry schedule
DEFAULT_HISTORY_YEARS = 3  # the registry's electronic history (national-systems.md §7)

#: Dates that define the record (see the module docstring); an unusable one sends the record to quarantine.
REQUIRED_DATES = {"KS": ("ngayDangKy", "nksNgaySinh"), "KT": ("ngayDangKy", "nktNgayChet"), "KH": ("ngayDangKy",)}
#: ID fields whose structure is the record's own business: a broken one quarantines the record.
OWN_ID_FIELDS = {"KS": "soDinhDanh"}
#: ID numbers people presented, kept verbatim: (field, its LoaiGiayToTuyThan field or None when the field
#: is meant to hold a personal ID, the birth-date field to check the ID's year against, the gender: a code
#: or the field holding it).
PRESENTED_IDS: dict[str, tuple[tuple[str, str | None, str | None, int | str | None], ...]] = {
    "KS": (("meSoDDCN", None, "meNgaySinh", 2), ("chaSoDDCN", None, "chaNgaySinh", 1),
           ("nycSoDDCN", None, None, None)),
    "KT": (("nktSoGiayToTuyThan", "nktLoaiGiayToTuyThan", "nktNgaySinh", "nktGioiTinh"),
           ("nycSoDDCN", None, None, None)),
    "KH": (("chongSoGiayToTuyThan", "chongLoaiGiayToTuyThan", "chongNgaySinh", 1),
           ("voSoGiayToTuyThan", "voLoaiGiayToTuyThan", "voNgaySinh", 2)),
}
PERSONAL_ID_TYPE, CMND_TYPE = 1, 2


# -- configuration ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CivilOptions:
    """What to read and in which slices; each has a ``HUB_CIVIL_…`` variable (module docstring)."""

    since: date
    modules: tuple[str, ...] = canonical.MODULES
    page_size: int = 1000
    batch_size: int = 100
    workers: int = 4

    @classmethod
    def from_env(cls, environ: Mapping[str, str], today: date) -> "CivilOptions":
        raw_modules = environ.get("HUB_CIVIL_MODULES", "").strip()
        modules = tuple(m.strip().upper() for m in raw_modules.split(",") if m.strip()) or canonical.MODULES
        unknown = [m for m in modules if m not in canonical.MODULES]
        if unknown:
            raise ConfigError(f"HUB_CIVIL_MODULES: unknown module(s) {', '.join(unknown)}; "
                              f"the canonical table maps {', '.join(canonical.MODULES)}")
        raw_since = environ.get("HUB_CIVIL_SINCE", "").strip()
        return cls(since=parse_since(raw_since) if raw_since else years_before(today, DEFAULT_HISTORY_YEARS),
                   modules=tuple(dict.fromkeys(modules)),
                   page_size=_bounded_int(environ, "HUB_CIVIL_PAGE_SIZE", 1000, 1, 1000),
                   batch_size=_bounded_int(environ, "HUB_CIVIL_BATCH_SIZE", 100, 1, 100),
                   workers=_bounded_int(environ, "HUB_CIVIL_WORKERS", 4, 1, 32))


def _bounded_int(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {raw!r}")
    return int(raw)


def parse_since(text: str) -> date:
    """``HUB_CIVIL_SINCE``: the registry's own ``dd/MM/yyyy`` or ISO ``YYYY-MM-DD``."""
    for fmt in ("%d/%m/%Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ConfigError(f"HUB_CIVIL_SINCE must be a date dd/MM/yyyy or YYYY-MM-DD, got {text!r}")


def years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def today_in_vietnam() -> date:
    """Days are the registry's local days (+07:00), whatever the host's time zone."""
    return datetime.now(VN_TZ).date()


def vn_day(day: date) -> str:
    return day.strftime("%d/%m/%Y")


# -- the wire -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    """An accepted answer and what provenance needs of it."""

    data: Any
    request_id: str
    sha256: str  # of the raw response body
    fetched_at: datetime


def _error_text(body: Mapping[str, Any]) -> str:
    parts = (str(body.get(k, "")).strip() for k in ("errorCode", "errorDesc", "errorMessage"))
    return " ".join(p for p in parts if p) or "no error detail"


def _decode(response: requests.Response) -> Any:
    """The JSON body, or the error that fits a body that is not JSON."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        status = response.status_code
        if status == 200:
            raise MalformedResponse(f"body is not valid JSON ({exc})") from None
        if status >= 500 and status not in (501, 505):
            raise TransientError(f"HTTP {status}") from None
        if status in (404, 405):
            raise PermanentError(f"HTTP {status} at {response.url}: not an operation of the civil-status API "
                                 "(is HUB_CIVIL_URL the registry's base?)") from None
        raise PermanentError(f"HTTP {status}: {response.text[:200]}") from None


def envelope_data(response: requests.Response) -> Any:
    """``data`` of a ``{"status": 1, "data": …}`` envelope; errors classified for the transport."""
    body = _decode(response)
    if not isinstance(body, dict):
        raise MalformedResponse("body is not a JSON object")
    if body.get("status") == 1 and response.status_code == 200:
        if "data" not in body:
            raise MalformedResponse("envelope has status 1 but no data")
        return body["data"]
    code, detail = str(body.get("errorCode", "")), _error_text(body)
    if response.status_code >= 500 or code in ("429", "503"):
        raise TransientError(f"HTTP {response.status_code}: {detail}")
    if code == "100":
        raise AuthenticationFailed(detail)
    if body.get("status") == 0:
        raise PermanentError(detail, code=code)
    raise MalformedResponse(f"HTTP {response.status_code} without a status 1/0 envelope")


def list_shape(data: Any) -> tuple[int, list[Any]]:
    """(tongSo, ds) of a dsHoSoDangKy page; a page of another shape is damaged and worth a retry."""
    if not isinstance(data, dict):
        raise MalformedResponse("dsHoSoDangKy data is not an object")
    total, entries = data.get("tongSo"), data.get("ds")
    if type(total) is not int or total < 0 or not isinstance(entries, list):
        raise MalformedResponse("dsHoSoDangKy data lacks an integer tongSo and a list ds")
    return total, entries


def list_of(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise MalformedResponse("data is not a list")
    return data


def object_of(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise MalformedResponse("data is not an object")
    return data


class CivilApi:
    """The four operations of §2 over the shared transport.

    The JSON schemas of the requests allow no extra body fields, so the purpose context of §0 (request
    id, agency, officer) travels in headers named after the wire vocabulary.
    """

    def __init__(self, transport: Transport, base_url: str, province: str, agency_code: str = "",
                 officer_id: str = "") -> None:
        self.transport = transport
        self.base_url = base_url
        self.province = province
        self._context = {k: v for k, v in (("MaDVC", agency_code), ("MaCanBo", officer_id)) if v}

    def list_page(self, module: str, day: date, page: int, size: int) -> Reply:
        body = {"maTinh": self.province, "module": module, "ngayCapNhat": vn_day(day), "trang": page, "soLuong": size}
        return self.post("dsHoSoDangKy", body, list_shape)

    def records(self, module: str, ids: list[int]) -> Reply:
        return self.post("traDanhSachHoSo", {"maTinh": self.province, "module": module, "dsMaHoSo": ids}, list_of)

    def record(self, module: str, record_id: int) -> Reply:
        return self.post("traHoSo", {"module": module, "maHoSo": record_id}, object_of)

    def catalogue(self, kind: int) -> Reply:
        return self.post("danhMuc", {"loaiDanhMuc": kind}, list_of)

    def post(self, operation: str, body: Mapping[str, Any], shape: Callable[[Any], Any]) -> Reply:
        payload = orjson.dumps(body)
        sent: dict[str, str] = {}

        def build(request_id: str) -> HttpRequest:
            sent["request_id"] = request_id
            headers = {"Content-Type": "application/json", "Accept": "application/json", "MaYeuCau": request_id,
                       **self._context}
            return HttpRequest("POST", f"{self.base_url}{API_PATH}/{operation}", headers=headers, data=payload)

        def parse(response: requests.Response) -> Reply:
            data = shape(envelope_data(response))
            return Reply(data, sent["request_id"], hashlib.sha256(response.content).hexdigest(),
                         datetime.now(timezone.utc))

        return self.transport.call(operation, build, parse)


# -- wire values → typed columns --------------------------------------------------------------------------

_DATE_RE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
_MOMENT_RE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?")
_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_EPOCH = date(1970, 1, 1).toordinal()
_MS_PER_DAY = 86_400_000
_VN_OFFSET_MS = 7 * 3_600_000


@lru_cache(maxsize=65_536)
def day_number(text: str) -> int | None:
    """Days since 1970-01-01 of a ``dd/MM/yyyy`` date; None for 31/02 or anything not a date."""
    match = _DATE_RE.fullmatch(text.strip())
    if not match:
        return None
    try:
        return date(int(match[3]), int(match[2]), int(match[1])).toordinal() - _EPOCH
    except ValueError:
        return None


def moment_ms(text: str) -> int | None:
    """Epoch milliseconds of a ``dd/MM/yyyy HH:mm:ss`` moment in +07:00; None if impossible."""
    match = _MOMENT_RE.fullmatch(text.strip())
    if not match:
        return None
    days = day_number(f"{match[1]}/{match[2]}/{match[3]}")
    hour, minute, second = int(match[4] or 0), int(match[5] or 0), int(match[6] or 0)
    if days is None or hour > 23 or minute > 59 or second > 59:
        return None
    return days * _MS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000 - _VN_OFFSET_MS


def time_ms(text: str) -> int | None:
    """Milliseconds since midnight of ``HH:mm`` (or ``HH:mm:ss``)."""
    match = _TIME_RE.fullmatch(text.strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59 or int(match[3] or 0) > 59:
        return None
    return ((int(match[1]) * 60 + int(match[2])) * 60 + int(match[3] or 0)) * 1000


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def text_value(value: Any) -> str | None:
    """Text as served; numbers as their digits; blanks, objects and lists give None."""
    if isinstance(value, str):
        return value if value.strip() else None
    return str(value) if _is_number(value) else None


def int_value(value: Any, low: int, high: int) -> int | None:
    if type(value) is int:
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        return None
    return number if low <= number <= high else None


_PARSERS: dict[pa.DataType, tuple[Callable[[Any], Any], str]] = {
    pa.date32(): (lambda v: day_number(v) if isinstance(v, str) else None, "is not a date dd/MM/yyyy"),
    canonical.VN_TIMESTAMP: (lambda v: moment_ms(v) if isinstance(v, str) else None,
                             "is not a moment dd/MM/yyyy HH:mm:ss"),
    canonical.TIME_OF_DAY: (lambda v: time_ms(v) if isinstance(v, str) else None, "is not a time HH:mm"),
    pa.int8(): (lambda v: int_value(v, -128, 127), "is not a small integer"),
    pa.int64(): (lambda v: int_value(v, -(2 ** 63), 2 ** 63 - 1), "is not an integer"),
    pa.string(): (text_value, "is not text"),
}


@dataclass(frozen=True)
class Origin:
    """Where a received record came from: the exchange and its position in the day's list."""

    operation: str
    request_id: str
    sha256: str
    fetched_at: datetime
    position: str


@dataclass(frozen=True)
class Received:
    record: Any
    expected_id: int | None  # the id asked for when the record answered a traHoSo for one id
    origin: Origin


class RecordMapper:
    """Maps a module's received records to canonical columns, one column at a time.

    ``problems`` (per row) send a record to quarantine; ``issues`` (per row) are kept in the row.
    """

    def __init__(self, module: str, received: list[Received]) -> None:
        self.module = module
        self.received = received
        self.rows = [r.record if isinstance(r.record, dict) else {} for r in received]
        self.problems: list[list[str]] = [[] if isinstance(r.record, dict) else ["record is not a JSON object"]
                                          for r in received]
        self.issues: list[list[str]] = [[] for _ in received]
        self.columns: dict[str, list[Any]] = {}

    def run(self) -> tuple[pa.Table, list[dict[str, Any]]]:
        for wire in canonical.MODULE_FIELDS[self.module]:
            if wire in canonical.PLACE_FIELDS:
                self._place(wire)
            elif wire not in ("id", "module"):
                self._typed(wire)
        self._key()
        self._required()
        self._presented_ids()
        keep = [i for i, problems in enumerate(self.problems) if not problems]
        return self._table().take(pa.array(keep, pa.int64())), self._quarantine(keep)

    def values(self, wire: str) -> list[Any]:
        return [row.get(wire) for row in self.rows]

    def _typed(self, wire: str) -> None:
        column = canonical.WIRE_TO_COLUMN[wire]
        parse, complaint = _PARSERS[canonical.SCHEMA.field(column).type]
        out = []
        for i, value in enumerate(self.values(wire)):
            typed = None if _blank(value) else parse(value)
            if typed is None and not _blank(value):
                self.issues[i].append(f"{wire}: {_show(value)} {complaint}")
            out.append(typed)
        self.columns[column] = out

    def _place(self, wire: str) -> None:
        prefix = canonical.WIRE_TO_COLUMN[wire]
        parts = {part: [] for part in canonical.PLACE_PARTS}
        for i, value in enumerate(self.values(wire)):
            place = value if isinstance(value, dict) else {}
            if not isinstance(value, dict) and not _blank(value):
                self.issues[i].append(f"{wire}: {_show(value)} is not a place object")
            for part, out in parts.items():
                out.append(text_value(place.get(part)))
        for part, suffix in canonical.PLACE_PARTS.items():
            self.columns[f"{prefix}_{suffix}"] = parts[part]

    def _key(self) -> None:
        ids = []
        for i, (row, got) in enumerate(zip(self.rows, self.received)):
            record_id = row.get("id")
            if record_id is None and self.problems[i] == []:
                self.problems[i].append("id: missing")
            elif record_id is not None and type(record_id) is not int:
                self.problems[i].append(f"id: {_show(record_id)} is not an integer")
            elif got.expected_id is not None and record_id is not None and record_id != got.expected_id:
                self.problems[i].append(f"id: asked for {got.expected_id}, got {record_id}")
            module = row.get("module")
            if module is not None and module != self.module:
                self.problems[i].append(f"module: {_show(module)} answered a request for {self.module}")
            ids.append(record_id if type(record_id) is int else None)
        self.columns["record_id"] = ids

    def _required(self) -> None:
        """Unusable defining fields are problems; move their typing issues over so they are said once."""
        objects = [isinstance(r.record, dict) for r in self.received]  # a non-object is refused as such
        for wire in ("ngayCapNhat", *REQUIRED_DATES[self.module]):
            column = self.columns[canonical.WIRE_TO_COLUMN[wire]]
            for i, value in enumerate(column):
                if value is None and objects[i]:
                    said = [s for s in self.issues[i] if s.startswith(f"{wire}: ")]
                    self.problems[i].extend(said or [f"{wire}: missing"])
                    self.issues[i] = [s for s in self.issues[i] if s not in said]
        own = OWN_ID_FIELDS.get(self.module)
        if own:
            for i, number in enumerate(self.columns[canonical.WIRE_TO_COLUMN[own]]):
                problem = personal_id_problem(number) if number is not None else None
                if problem:
                    self.problems[i].append(f"{own}: {problem}")

    def _presented_ids(self) -> None:
        for wire, kind_field, birth_field, gender in PRESENTED_IDS[self.module]:
            numbers = self.columns[canonical.WIRE_TO_COLUMN[wire]]
            kinds = self.columns[canonical.WIRE_TO_COLUMN[kind_field]] if kind_field else [None] * len(numbers)
            births = self.columns[canonical.WIRE_TO_COLUMN[birth_field]] if birth_field else [None] * len(numbers)
            genders = (self.columns[canonical.WIRE_TO_COLUMN[gender]] if isinstance(gender, str)
                       else [gender] * len(numbers))
            for i, number in enumerate(numbers):
                if number is not None:
                    problem = presented_id_problem(number, kinds[i], births[i], genders[i])
                    if problem:
                        self.issues[i].append(f"{wire}: {problem}")
        own = OWN_ID_FIELDS.get(self.module)
        if own == "soDinhDanh":  # structure is checked in _required; here what the child's facts add
            births, genders = self.columns["child_birth_date"], self.columns["child_gender"]
            for i, number in enumerate(self.columns["child_personal_id"]):
                if number is not None and not self.problems[i]:
                    problem = personal_id_problem(number, birth_year=_year(births[i]), gender=genders[i])
                    if problem:
                        self.issues[i].append(f"soDinhDanh: {problem}")

    def _table(self) -> pa.Table:
        n = len(self.rows)
        origins = [r.origin for r in self.received]
        data = {
            **self.columns,
            "module": [self.module] * n,
            canonical.ISSUES_COLUMN: ["; ".join(found) if found else None for found in self.issues],
            "source_system": [SYSTEM] * n,
            "request_id": [o.request_id for o in origins],
            "fetched_at": [o.fetched_at for o in origins],
            "payload_sha256": [o.sha256 for o in origins],
        }
        arrays = [pa.array(data[f.name], f.type) if f.name in data else pa.nulls(n, f.type)
                  for f in canonical.SCHEMA]
        return pa.Table.from_arrays(arrays, schema=canonical.SCHEMA)

    def _quarantine(self, keep: list[int]) -> list[dict[str, Any]]:
        kept = set(keep)
        out = []
        for i, got in enumerate(self.received):
            if i in kept:
                continue
            record_id = self.columns["record_id"][i] or got.expected_id
            out.append(quarantine_row(got.origin, f"{self.module}:{record_id}" if record_id else None,
                                      "; ".join(self.problems[i]), got.record))
        return out


def presented_id_problem(number: str, kind: int | None, birth_day: int | None, gender: int | None) -> str | None:
    """What is wrong with an ID number a person presented, given its declared kind and the person's facts."""
    if kind == CMND_TYPE:
        return None if is_cmnd(number) else f"{number!r} is declared a CMND (type 2) but is not 9 digits"
    if kind not in (None, PERSONAL_ID_TYPE):
        return None  # a passport or another paper: no structure to check
    if is_cmnd(number):
        declared = "declared a personal ID (type 1)" if kind == PERSONAL_ID_TYPE else "not a personal ID"
        return f"{number!r} is an old 9-digit CMND number, {declared}"
    return personal_id_problem(number, birth_year=_year(birth_day), gender=gender if gender in (1, 2) else None)


def _year(day_number_: int | None) -> int | None:
    return None if day_number_ is None else date.fromordinal(day_number_ + _EPOCH).year


def _show(value: Any) -> str:
    text = orjson.dumps(value).decode() if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def quarantine_row(origin: Origin, record_key: str | None, reason: str, raw: Any) -> dict[str, Any]:
    return {"source_system": SYSTEM, "dataset": canonical.DATASET, "operation": origin.operation,
            "request_id": origin.request_id, "position": origin.position, "record_key": record_key,
            "reason": reason, "raw": orjson.dumps(raw).decode() if raw is not None else None,
            "fetched_at": origin.fetched_at}


def quarantine_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA) if rows else QUARANTINE_SCHEMA.empty_table()


# -- reading one day --------------------------------------------------------------------------------------

EMPTY_RECORDS = canonical.SCHEMA.empty_table()  # built once: 84 empty columns cost more than a list call
Seen = tuple[int, str]  # (id, ngayCapNhat as listed): the at-least-once dedupe key within a module


@dataclass
class DayState:
    """How far one module's list of one day has been read."""

    day: date
    page: int = 1
    total: int | None = None  # tongSo when the page before `page` was read
    seen: set[Seen] = field(default_factory=set)
    done: bool = False
    restarts: int = 0


@dataclass
class Chunk:
    records: pa.Table
    quarantine: list[dict[str, Any]]
    entries: int  # list entries covered


class Stopped(Exception):
    """The sync is ending (a failure elsewhere); a prefetching worker stops before its next call."""


class DayReader:
    """Reads one module's list of one day a page at a time, re-reading from page 1 when tongSo moves."""

    def __init__(self, api: CivilApi, module: str, state: DayState, options: CivilOptions,
                 stop: threading.Event | None = None) -> None:
        self.api = api
        self.module = module
        self.state = state
        self.options = options
        self.stop = stop or threading.Event()
        self._reported: set[bytes] = set()  # unusable list entries already quarantined
        self._unserved: set[int] = set()  # ids listed but answered 201 RECORD_NOT_FOUND (reported once)

    def step(self) -> Chunk:
        """List the next page and fetch the records it names that were not delivered yet."""
        page, reply, total, entries = self._next_page()
        fresh, quarantine = self._fresh(page, reply, entries)
        records, more = self._fetch(fresh)
        # An id listed but not served is left out of `seen`, so a later listing of its day asks again.
        self.state.seen.update(key for key, _ in fresh if key[0] not in self._unserved)
        self.state.total = total
        if not entries or page * self.options.page_size >= total:
            self.state.done = True
        else:
            self.state.page = page + 1
        return Chunk(records, quarantine + more, len(entries))

    def _next_page(self) -> tuple[int, Reply, int, list[Any]]:
        while True:
            self._check_stop()
            page = self.state.page
            reply = self.api.list_page(self.module, self.state.day, page, self.options.page_size)
            total, entries = reply.data
            if self.state.total is None or total == self.state.total:
                return page, reply, total, entries
            self._restart(reply, total)

    def _restart(self, reply: Reply, total: int) -> None:
        """tongSo moved: entries shifted across page boundaries, so read the day again from page 1."""
        self.state.restarts += 1
        if self.state.restarts > MAX_RESTARTS:
            raise ConnectorError(SYSTEM, "dsHoSoDangKy", reply.request_id,
                                 f"the {self.module} list of {vn_day(self.state.day)} changed under us "
                                 f"{MAX_RESTARTS} times (tongSo now {total}); run again when it is quieter")
        self.state.page, self.state.total = 1, None

    def _fresh(self, page: int, reply: Reply, entries: list[Any]) -> tuple[list[tuple[Seen, str]], list[dict]]:
        """Entries not delivered before, each with its position; unusable entries go to quarantine."""
        fresh: dict[Seen, str] = {}
        quarantine = []
        for index, entry in enumerate(entries):
            record_id = entry.get("id") if isinstance(entry, dict) else None
            position = self._position(page, index, record_id)
            if type(record_id) is not int:
                raw = orjson.dumps(entry)
                if raw not in self._reported:
                    self._reported.add(raw)
                    origin = Origin("dsHoSoDangKy", reply.request_id, reply.sha256, reply.fetched_at, position)
                    quarantine.append(quarantine_row(origin, None, "list entry has no integer id", entry))
                continue
            key = (record_id, str(entry.get("ngayCapNhat", "")))
            if key not in self.state.seen and key not in fresh:
                fresh[key] = position
        return list(fresh.items()), quarantine

    def _position(self, page: int, index: int, record_id: Any) -> str:
        return (f"module {self.module}, day {vn_day(self.state.day)}, page {page}, index {index}, "
                f"id {record_id if record_id is not None else '(none)'}")

    def _fetch(self, fresh: list[tuple[Seen, str]]) -> tuple[pa.Table, list[dict]]:
        """traDanhSachHoSo in batches; ids it leaves out are asked for one by one, then reported."""
        positions: dict[int, str] = {}
        for (record_id, _), position in fresh:
            positions.setdefault(record_id, position)
        ids = list(positions)
        received: list[Received] = []
        quarantine: list[dict] = []
        size = self.options.batch_size
        for start in range(0, len(ids), size):
            self._check_stop()
            asked = ids[start:start + size]
            got, left_out = self._batch(asked, positions)
            received += got
            for record_id in left_out:
                one, reported = self._one(record_id, positions[record_id])
                received += one
                quarantine += reported
        if not received:
            return EMPTY_RECORDS, quarantine
        table, refused = RecordMapper(self.module, received).run()
        return table, quarantine + refused

    def _batch(self, asked: list[int], positions: dict[int, str]) -> tuple[list[Received], list[int]]:
        reply = self.api.records(self.module, asked)
        wanted = set(asked)
        got, answered, anonymous = [], set(), []
        for index, record in enumerate(reply.data):
            record_id = record.get("id") if isinstance(record, dict) else None
            if type(record_id) is int and record_id in wanted:
                position = positions[record_id]
                answered.add(record_id)
            else:
                position = f"module {self.module}, traDanhSachHoSo answer index {index} (not an id asked for)"
            received = Received(record, None, Origin("traDanhSachHoSo", reply.request_id, reply.sha256,
                                                     reply.fetched_at, position))
            (got if type(record_id) is int else anonymous).append(received)
        left_out = [i for i in asked if i not in answered]
        # A record without a usable id answers one of the ids left out: those are asked for one by one,
        # which names the record; only when none was left out is it reported as it is.
        return got + (anonymous if not left_out else []), left_out

    def _one(self, record_id: int, position: str) -> tuple[list[Received], list[dict]]:
        try:
            reply = self.api.record(self.module, record_id)
        except ConnectorError as exc:
            if exc.code != "201":
                raise
            if record_id in self._unserved:
                return [], []
            self._unserved.add(record_id)
            origin = Origin("traHoSo", exc.request_id, "", datetime.now(timezone.utc), position)
            return [], [quarantine_row(origin, f"{self.module}:{record_id}",
                                       f"listed by dsHoSoDangKy but not served: {exc.detail}", None)]
        origin = Origin("traHoSo", reply.request_id, reply.sha256, reply.fetched_at, position)
        return [Received(reply.data, record_id, origin)], []

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Stopped()


# -- the connector ----------------------------------------------------------------------------------------

class PendingBatch:
    """Chunks waiting to be committed together."""

    def __init__(self) -> None:
        self.tables: list[pa.Table] = []
        self.quarantine: list[dict[str, Any]] = []
        self.rows = self.entries = self.days = 0

    def add(self, chunk: Chunk) -> None:
        if chunk.records.num_rows:
            self.tables.append(chunk.records)
        self.quarantine += chunk.quarantine
        self.rows += chunk.records.num_rows + len(chunk.quarantine)
        self.entries += chunk.entries

    def flush(self, cursor: dict[str, Any]) -> Batch:
        records = pa.concat_tables(self.tables) if self.tables else EMPTY_RECORDS
        batch = Batch(records=records, cursor=cursor, quarantine=quarantine_table(self.quarantine),
                      progress=self.entries)
        self.tables, self.quarantine = [], []
        self.rows = self.entries = self.days = 0
        return batch


def position_of(state: DayState) -> dict[str, Any]:
    """The cursor entry of a module whose reading stopped at ``state`` (a day before today).

    Mid-day it names the next page and the tongSo seen: pages before it need no record of what they
    delivered, because a resumed read whose tongSo differs starts the day again anyway (and fetches
    them again, which compaction absorbs), while one whose tongSo agrees never looks back.
    """
    if state.done:
        return {"day": (state.day + timedelta(days=1)).isoformat(), "page": 1, "total": None, "seen": {}}
    return {"day": state.day.isoformat(), "page": state.page, "total": state.total, "seen": {}}


def state_from(position: Mapping[str, Any] | None, since: date) -> tuple[DayState, dict[date, set[Seen]]]:
    """The first day's state and the pairs already delivered per day, from a module's cursor entry."""
    if not position:
        return DayState(since), {}
    try:
        seen = {date.fromisoformat(day): {(int(i), str(m)) for i, m in pairs}
                for day, pairs in position.get("seen", {}).items()}
        first = date.fromisoformat(position["day"])
        state = DayState(first, int(position.get("page", 1)), position.get("total"), seen.pop(first, set()))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConnectorError(SYSTEM, "resume", "", f"the committed cursor is not understood ({exc}); "
                             "move the state file away to start over") from None
    return state, seen


class CivilStatusConnector:
    """Births, deaths and marriages of the province from the civil-status registry (§2)."""

    system = SYSTEM
    dataset = canonical.DATASET
    schema = canonical.SCHEMA
    key = canonical.KEY
    version_column = canonical.VERSION_COLUMN

    def __init__(self, base_url: str, client_id: str, client_secret: str, *, province: str, options: CivilOptions,
                 agency_code: str = "", officer_id: str = "", transport_options: TransportOptions | None = None,
                 today: Callable[[], date] = today_in_vietnam, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self.province, self.agency_code, self.officer_id = province, agency_code, officer_id
        self.options = options
        self.transport_options = transport_options or TransportOptions()
        self._today = today
        self.session = session or make_session(self.base_url, options.workers + 2)
        self.api = self._api(self.transport_options)

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str]) -> "CivilStatusConnector":
        missing = [name for name, value in (("HUB_CIVIL_URL", settings.civil_url),
                                            ("HUB_CIVIL_CLIENT_ID", settings.civil_client_id),
                                            ("HUB_CIVIL_CLIENT_SECRET", settings.civil_client_secret)) if not value]
        if missing:
            raise ConfigError(f"{', '.join(missing)} not set: the civil-status registry needs its base URL and "
                              "client credentials")
        return cls(settings.civil_url, settings.civil_client_id, settings.civil_client_secret.reveal(),
                   province=settings.province, agency_code=settings.agency_code, officer_id=settings.officer_id,
                   options=CivilOptions.from_env(environ, today_in_vietnam()),
                   transport_options=options_from_env(SYSTEM, environ))

    def between(self, first: date, last: date) -> "CivilStatusConnector":
        """This connector limited to the records changed from ``first`` to ``last`` (one daily
        partition, or a range of them), on the same session, API client and token."""
        bounded = copy.copy(self)
        bounded.options = replace(self.options, since=first)
        bounded._today = lambda: last
        return bounded

    def history_start(self) -> date:
        """The first day a first sync reads (``HUB_CIVIL_SINCE``, else three years ago)."""
        return self.options.since

    def _api(self, options: TransportOptions) -> CivilApi:
        token_transport = Transport(SYSTEM, options, session=self.session)
        auth = OAuth2ClientCredentials(f"{self.base_url}/token", self.client_id, self._secret, token_transport)
        return CivilApi(Transport(SYSTEM, options, auth, session=self.session), self.base_url, self.province,
                        self.agency_code, self.officer_id)

    # -- check ----------------------------------------------------------------------------------------
    def check(self) -> CheckResult:
        """A token and the cheapest call (danhMuc 5); on failure, a probe of the token endpoint says why."""
        quick = replace(self.transport_options, max_attempts=CHECK_ATTEMPTS,
                        backoff_max_s=min(self.transport_options.backoff_max_s, 1.0),
                        read_timeout_s=min(self.transport_options.read_timeout_s, 15.0))
        started = time.monotonic()
        try:
            reply = self._api(quick).catalogue(5)
        except ConnectorError as exc:
            return CheckResult(False, _one_line(self._diagnose(exc, quick)))
        took = (time.monotonic() - started) * 1000
        return CheckResult(True, f"{self.base_url}: token issued to {self.client_id}, danhMuc 5 lists "
                                 f"{len(reply.data)} kinds of identity paper ({took:.0f} ms)")

    def _diagnose(self, failure: ConnectorError, options: TransportOptions) -> str:
        token_url = f"{self.base_url}/token"
        try:
            probe = self.session.post(token_url, data={"grant_type": "client_credentials"},
                                      auth=(self.client_id, self._secret),
                                      timeout=(options.connect_timeout_s, options.read_timeout_s))
        except requests.Timeout:
            return f"unreachable: {token_url} did not answer within {options.read_timeout_s:g} s"
        except requests.ConnectionError as exc:
            return f"unreachable: cannot connect to {self.base_url} ({_root_cause(exc)})"
        if probe.status_code in (400, 401, 403):
            return (f"credentials refused: {token_url} answered HTTP {probe.status_code} {_oauth_error(probe)}; "
                    "check HUB_CIVIL_CLIENT_ID and HUB_CIVIL_CLIENT_SECRET")
        if probe.status_code != 200 or not _is_token(probe):
            return (f"wrong base URL? POST {token_url} answered HTTP {probe.status_code}, not an OAuth2 token; "
                    "check HUB_CIVIL_URL")
        return f"token issued, but the registry failed: {failure}"

    # -- read -----------------------------------------------------------------------------------------
    def read(self, cursor: dict[str, Any] | None) -> Iterator[Batch]:
        """Every module from its cursor position to today; batches in day order, each with its cursor."""
        if cursor and cursor.get("format") != CURSOR_FORMAT:
            raise ConnectorError(SYSTEM, "resume", "", f"cursor format {cursor.get('format')!r} is not "
                                 f"{CURSOR_FORMAT}; move the state file away to start over")
        positions: dict[str, Any] = dict((cursor or {}).get("modules", {}))
        today = self._today()
        for module in self.options.modules:
            yield from self._read_module(module, positions, today)

    def _read_module(self, module: str, positions: dict[str, Any], today: date) -> Iterator[Batch]:
        start, seen_by_day = state_from(positions.get(module), self.options.since)
        resume_day = max(start.day, today - timedelta(days=OVERLAP_DAYS))
        pending, recent = PendingBatch(), {}
        for state, chunk in self._chunks(module, start, seen_by_day, today):
            pending.add(chunk)
            if state.done:
                pending.days += 1
                if state.day >= resume_day:
                    recent[state.day.isoformat()] = sorted(state.seen)
            last = state.done and state.day == today  # only the final cursor may follow today
            if not last and (pending.rows >= self.options.page_size or pending.days >= MAX_DAYS_PER_BATCH):
                positions[module] = position_of(state)
                yield pending.flush(self._cursor(positions))
        if start.day <= today:
            positions[module] = {"day": resume_day.isoformat(), "page": 1, "total": None, "seen": recent}
        yield pending.flush(self._cursor(positions))

    @staticmethod
    def _cursor(positions: dict[str, Any]) -> dict[str, Any]:
        return {"format": CURSOR_FORMAT, "modules": dict(positions)}

    def _chunks(self, module: str, start: DayState, seen_by_day: dict[date, set[Seen]],
                today: date) -> Iterator[tuple[DayState, Chunk]]:
        """(state after the step, chunk) in day order. Days before today are listed ahead in parallel;
        today is listed last, after every other call of the module, so it holds whatever they moved."""
        def state_of(day: date) -> DayState:
            return start if day == start.day else DayState(day, seen=seen_by_day.get(day, set()))

        days = [start.day + timedelta(days=k) for k in range((today - start.day).days + 1)]
        earlier = (DayReader(self.api, module, state_of(day), self.options) for day in days[:-1])
        for reader, chunk in self._prefetched(earlier):
            yield from self._rest_of_day(reader, chunk)
        if days:
            reader = DayReader(self.api, module, state_of(days[-1]), self.options)
            yield from self._rest_of_day(reader, reader.step())

    @staticmethod
    def _rest_of_day(reader: DayReader, first: Chunk) -> Iterator[tuple[DayState, Chunk]]:
        yield reader.state, first
        while not reader.state.done:
            yield reader.state, reader.step()

    def _prefetched(self, readers: Iterable[DayReader]) -> Iterator[tuple[DayReader, Chunk]]:
        """Each reader's first step run ahead on a pool, handed back in order (a bounded window)."""
        workers = self.options.workers
        if workers <= 1:
            for reader in readers:
                yield reader, reader.step()
            return
        stop = threading.Event()
        pool = ThreadPoolExecutor(workers, thread_name_prefix="civil-day")
        window: deque = deque()
        try:
            for reader in readers:
                reader.stop = stop
                window.append((reader, pool.submit(reader.step)))
                if len(window) > PREFETCH_DAYS_PER_WORKER * workers:
                    ahead, future = window.popleft()
                    yield ahead, future.result()
            while window:
                ahead, future = window.popleft()
                yield ahead, future.result()
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)


def _is_token(response: requests.Response) -> bool:
    try:
        return "access_token" in response.json()
    except ValueError:
        return False


def _oauth_error(response: requests.Response) -> str:
    try:
        body = response.json()
        return f"({body.get('error', '')}: {body.get('error_description', '')})".replace("(: )", "").strip()
    except ValueError:
        return ""


def _root_cause(exc: BaseException) -> str:
    """The innermost OS-level reason of a connection failure ("Connection refused")."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    reason = str(exc)
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            reason = cause.strerror
        inner = getattr(cause, "reason", None)
        cause = inner if isinstance(inner, BaseException) else (
            cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else cause.__cause__)
    return reason


def _one_line(text: str) -> str:
    return " ".join(text.split())
