"""The business-registry connector (``national-systems.md`` §3): dossiers by window, then details.

The registry has no "what changed since" feed for enterprises; what it has is ``danhSachHoSo``, the
dossiers processed in a window of at most five days. So a sync walks the calendar in five-day windows
from its cursor up to today (Asia/Ho_Chi_Minh), collects the enterprises named by each window's
dossiers and fetches their details (variant A's or variant B's payload, as configured), one
:class:`~connectors.base.Batch` per window. The details are the enterprise's *current* state, so an
enterprise seen in several windows is simply fetched again; the row of the latest dossier wins.

The window that reaches today is not finished (more dossiers may be processed today), so the cursor
after it points at its own start: the next run re-reads it and goes forward from there.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import queue
import re
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterator, Mapping

import orjson
import pyarrow as pa
import requests

from connectors.base import Batch, CheckResult
from connectors.errors import (AuthenticationFailed, ConnectorError, MalformedResponse, PermanentError,
                               TransientError)
from connectors.transport import (HttpRequest, OAuth2ClientCredentials, Transport, TransportOptions,
                                  options_from_env)
from hub.config import ConfigError, Settings
from schemas.canonical import QUARANTINE_SCHEMA
from schemas.canonical import enterprises
from schemas.errors import TRANSIENT_CODES
from schemas.identifiers import enterprise_code_problem
from schemas.timefmt import VN_TZ

SYSTEM = "business"
LIST_OPERATION = "danhSachHoSo"
DETAIL_OPERATION = "chiTietDoanhNghiep"
LIST_PATH = "apiCSDLDKDN/danhSachHoSo"
DETAIL_PATHS = {"A": "apiCSDLDKDN/chiTietDoanhNghiep", "B": "apiDKKD/DoanhNghiep/chiTietDoanhNghiep"}
WINDOW_DAYS = 5  # §3: at most five days, both ends included
MAX_PAGE_SIZE = 500  # §3: limit ≤ 500
WINDOW_READS = 10  # full re-reads of one window whose DataCount keeps moving, before giving up
#: §3 ENTERPRISE_STATUS / MaTinhTrangPhapLy: variant A sends only the code.
STATUS_NAMES = {"01": "Đang hoạt động", "02": "Tạm ngừng kinh doanh", "03": "Đang làm thủ tục giải thể",
                "04": "Đã giải thể", "05": "Bị thu hồi giấy chứng nhận",
                "06": "Không hoạt động tại địa chỉ đăng ký"}
#: Error codes that concern the whole client, not the enterprise asked about: never quarantine on them.
CLIENT_REFUSALS = frozenset({"101", "106", "108"})
_CODE_PREFIX = re.compile(r"^\s*(\d{3})\b")
_MONEY_LIMIT = Decimal(10) ** 20
_CENT = Decimal("0.01")


# -- windows ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """``first``..``last``, both included, as ``danhSachHoSo`` takes them."""

    first: date
    last: date

    def params(self) -> dict[str, str]:
        return {"from_date": _vn_day(self.first), "to_date": _vn_day(self.last)}

    def __str__(self) -> str:
        return f"{_vn_day(self.first)}-{_vn_day(self.last)}"


def windows(start: date, today: date) -> Iterator[Window]:
    """Consecutive windows of at most ``WINDOW_DAYS`` from ``start``, the last one ending today."""
    first = start
    while first <= today:
        last = min(first + timedelta(days=WINDOW_DAYS - 1), today)
        yield Window(first, last)
        first = last + timedelta(days=1)


def next_cursor(window: Window, today: date) -> dict[str, str]:
    """Where the next read starts: after ``window``, or at its start again if it reaches today."""
    start = window.first if window.last >= today else window.last + timedelta(days=1)
    return {"from": start.isoformat()}


def _vn_day(day: date) -> str:
    return day.strftime("%d/%m/%Y")


def parse_since(text: str) -> date:
    """``HUB_BUSINESS_SINCE`` in dd/MM/yyyy (the registry's own format) or ISO YYYY-MM-DD."""
    for fmt in ("%d/%m/%Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(text.strip(), fmt).date()
        except ValueError:
            pass
    raise ConfigError(f"HUB_BUSINESS_SINCE must be a date as dd/MM/yyyy or YYYY-MM-DD, got {text!r}")


def two_years_before(day: date) -> date:
    try:
        return day.replace(year=day.year - 2)
    except ValueError:  # 29 February
        return day.replace(year=day.year - 2, day=28)


def today_in_vietnam() -> date:
    return datetime.now(VN_TZ).date()


# -- values on the wire -------------------------------------------------------------------------------

class RecordProblem(Exception):
    """A record cannot be accepted; the message is the quarantine reason."""


def _text(value: Any) -> str | None:
    """Trimmed NFC text, or None when empty: §0 lets names arrive in NFD, and joins need one form."""
    if value is None:
        return None
    text = unicodedata.normalize("NFC", str(value)).strip()
    return text or None


_DATE_FORMATS = ("%d/%m/%Y", "%Y-%m-%d", "%d/%m/%Y %H:%M:%S", "%Y-%m-%dT%H:%M:%S")


def _date(value: Any, name: str) -> date | None:
    """A wire date (dd/MM/yyyy per §3; ISO and a time part tolerated); unreadable → quarantine."""
    text = _text(value)
    if text is None:
        return None
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text[:19], fmt).date()
        except ValueError:
            pass
    raise RecordProblem(f"{name} {text[:40]!r} is not a date (dd/MM/yyyy)")


def _int(value: Any, name: str, bits: int = 64) -> int | None:
    """A whole number that fits the column (a count in int32, an id in int64), else quarantine."""
    if value is None or value == "":
        return None
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value.strip())
    if number is None or abs(number) >= 2 ** (bits - 1):
        return _reject(name, value, f"an integer of {bits} bits")
    return number


def _money(value: Any, name: str) -> Decimal | None:
    """An amount of VND as an exact decimal (see the schema for why not float)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return _reject(name, value, "an amount")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else str(value).strip().replace(" ", ""))
    except InvalidOperation:
        return _reject(name, value, "an amount")
    if not amount.is_finite() or abs(amount) >= _MONEY_LIMIT:
        return _reject(name, value, "an amount")
    return amount.quantize(_CENT)


def _float(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return _reject(name, value, "a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        return _reject(name, value, "a number")


_TRUE, _FALSE = {"y", "yes", "true", "1"}, {"n", "no", "false", "0"}


def _flag(value: Any, name: str) -> bool | None:
    """Variant A says Y/N, variant B a boolean; other gateways 1/0 or true/false."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    return _reject(name, value, "Y or N")


def _reject(name: str, value: Any, kind: str) -> Any:
    raise RecordProblem(f"{name} {str(value)[:40]!r} is not {kind}")


def _object(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordProblem(f"{name} is not an object")
    return value


def _objects(value: Any, name: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise RecordProblem(f"{name} is not a list of objects")
    return value


def _required(row: dict[str, Any], names: Mapping[str, str]) -> None:
    """Quarantine a record that lacks what makes it usable (its name, its legal status)."""
    missing = [wire for column, wire in names.items() if row.get(column) is None]
    if missing:
        raise RecordProblem(f"missing required field(s): {', '.join(missing)}")


# -- variant A and B details → canonical rows ---------------------------------------------------------

def map_variant_a(data: Any, code: str) -> dict[str, Any]:
    """Variant A's ``Data`` as a canonical row (without version and provenance)."""
    data = _object(data, "Data")
    main, office = _object(data.get("MainInformation"), "MainInformation"), _object(data.get("HOAdress"), "HOAdress")
    status = _text(main.get("ENTERPRISE_STATUS"))
    row = {
        "enterprise_code": code, "enterprise_id": _int(main.get("ENTERPRISE_ID"), "ENTERPRISE_ID"),
        "gdt_code": _text(main.get("ENTERPRISE_GDT_CODE")),
        "old_registration_code": _text(main.get("IMP_BUSINESS_CODE")),
        "type_code": _text(main.get("ENTERPRISE_TYPE_ID")), "type_name": _text(main.get("ENTERPRISE_TYPE_NAME")),
        "name": _text(main.get("NAME")), "name_foreign": _text(main.get("NAME_F")),
        "name_short": _text(main.get("SHORT_NAME")),
        "founding_date": _date(main.get("FOUNDING_DATE"), "FOUNDING_DATE"),
        "last_amendment_date": _date(main.get("LAST_AMEND_DATE"), "LAST_AMEND_DATE"),
        "number_of_changes": _int(main.get("NUMBER_CHANGES"), "NUMBER_CHANGES", 32),
        "status_code": status, "status_name": STATUS_NAMES.get(status or ""),
        "suspended_from": None, "suspended_until": None, "suspension_reason": None,
        "capital": _money(main.get("CAPITAL_AMOUNT"), "CAPITAL_AMOUNT"),
        **_office(office, OFFICE_A),
        "business_activities": [_activity_a(a) for a in _objects(data.get("BusinessActivity"), "BusinessActivity")],
        "members": [_member_a(item) for item in _objects(data.get("Member"), "Member")],
        "legal_representatives": [_name_only(name) for name in _split_names(main.get("LEGAL_NAMES"))],
        "source_variant": "A",
    }
    _required(row, {"name": "MainInformation.NAME", "status_code": "MainInformation.ENTERPRISE_STATUS"})
    return row


#: Head-office columns and the wire names each variant gives them.
OFFICE_A = {"hq_province_code": "CityID", "hq_province_name": "CityName", "hq_district_code": "DistrictID",
            "hq_district_name": "DistrictName", "hq_ward_code": "WardID", "hq_ward_name": "WardName",
            "hq_street": "StreetNumber", "hq_address": "AddressFullText"}
OFFICE_B = {"hq_province_code": "MaTinhThanh", "hq_province_name": "TenTinhThanh", "hq_district_code": "MaQuanHuyen",
            "hq_district_name": "TenQuanHuyen", "hq_ward_code": "MaPhuongXa", "hq_ward_name": "TenPhuongXa",
            "hq_street": "SoNha", "hq_address": "DiaChi"}


def _office(address: dict[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    return {column: _text(address.get(wire)) for column, wire in names.items()}


def _activity_a(item: dict[str, Any]) -> dict[str, Any]:
    return {"code": _text(item.get("CODE")), "name": _text(item.get("NAME")),
            "is_main": _flag(item.get("IS_MAIN"), "BusinessActivity.IS_MAIN")}


def _member_a(item: dict[str, Any]) -> dict[str, Any]:
    return {"name": _text(item.get("MEMBER_NAME")), "amount": _money(item.get("AMOUNT"), "Member.AMOUNT"),
            "ratio": _float(item.get("RATIO_PERCENT"), "Member.RATIO_PERCENT"), "country": _text(item.get("COUNTRY"))}


def _split_names(value: Any) -> list[str]:
    """``LEGAL_NAMES`` is the representatives' names joined with ``;``."""
    return [name for name in (_text(part) for part in str(value or "").split(";")) if name]


def _name_only(name: str) -> dict[str, Any]:
    return {"name": name, "id_type": None, "id_number": None, "issued_on": None, "issued_by": None,
            "nationality": None}


def map_variant_b(item: Any, code: str, gdt_code: str | None) -> dict[str, Any]:
    """Variant B's ``GetEntCert`` item as a canonical row; ``gdt_code`` comes from the dossier list."""
    item = _object(item, "GetEntCert")
    served = _text(item.get("MaSoDoanhNghiep"))
    if served is not None and served != code:
        raise RecordProblem(f"answer is about enterprise {served[:20]!r}, not {code}")
    status = (_objects(item.get("TinhTrangPhapLy"), "TinhTrangPhapLy") or [{}])[0]
    certificate = _text(item.get("SoGCNDKKD"))
    row = {
        "enterprise_code": code, "enterprise_id": _int(item.get("MaNoiBo"), "MaNoiBo"), "gdt_code": gdt_code,
        "old_registration_code": certificate if certificate != code else None,
        "type_code": _text(item.get("MaLoaiHinhDN")), "type_name": _text(item.get("LoaiHinhDN")),
        "name": _text(item.get("TenTiengViet")), "name_foreign": _text(item.get("TenNuocNgoai")),
        "name_short": _text(item.get("TenVietTat")),
        "founding_date": _date(item.get("NgayDangKyLanDau"), "NgayDangKyLanDau"),
        "last_amendment_date": _date(item.get("NgayDangKyThayDoi"), "NgayDangKyThayDoi"),
        "number_of_changes": _int(item.get("SoLanDangKyThayDoi"), "SoLanDangKyThayDoi", 32),
        **_status_b(status), "capital": None, **_office_b(item.get("DiaChiTruSo")),
        "business_activities": [_activity_b(a) for a in _objects(item.get("NganhNgheKinhDoanh"), "NganhNgheKinhDoanh")],
        "members": None,
        "legal_representatives": [_person_b(p) for p in _representatives_b(item.get("DaiDienPhapLuat"))],
        "source_variant": "B",
    }
    _required(row, {"name": "TenTiengViet", "status_code": "TinhTrangPhapLy.MaTinhTrangPhapLy"})
    return row


def _status_b(status: dict[str, Any]) -> dict[str, Any]:
    code = _text(status.get("MaTinhTrangPhapLy"))
    return {"status_code": code, "status_name": _text(status.get("TinhTrangPhapLy")) or STATUS_NAMES.get(code or ""),
            "suspended_from": _date(status.get("NgayBatDauTamNgung"), "NgayBatDauTamNgung"),
            "suspended_until": _date(status.get("NgayKetThucTamNgung"), "NgayKetThucTamNgung"),
            "suspension_reason": _text(status.get("LyDoTamNgung"))}


def _office_b(value: Any) -> dict[str, Any]:
    """``DiaChiTruSo: [{DiaChi: [address]}]``: the first address of the first entry."""
    offices = _objects(value, "DiaChiTruSo")
    address = (_objects(offices[0].get("DiaChi"), "DiaChiTruSo.DiaChi") or [{}])[0] if offices else {}
    return _office(address, OFFICE_B)


def _activity_b(item: dict[str, Any]) -> dict[str, Any]:
    return {"code": _text(item.get("MaNganh")), "name": _text(item.get("TenNganh")),
            "is_main": _flag(item.get("LaNganhChinh"), "NganhNgheKinhDoanh.LaNganhChinh")}


def _representatives_b(value: Any) -> list[dict[str, Any]]:
    """``DaiDienPhapLuat: [{ThongTinCaNhan: [person, …]}, …]`` flattened to the persons."""
    return [person for group in _objects(value, "DaiDienPhapLuat")
            for person in _objects(group.get("ThongTinCaNhan"), "DaiDienPhapLuat.ThongTinCaNhan")]


def _person_b(person: dict[str, Any]) -> dict[str, Any]:
    return {"name": _text(person.get("HoVaTen")), "id_type": _text(person.get("MaLoaiGiayToChungThuc")),
            "id_number": _text(person.get("SoGiayChungThuc")),
            "issued_on": _date(person.get("NgayCap"), "DaiDienPhapLuat.NgayCap"),
            "issued_by": _text(person.get("NoiCap")),
            "nationality": _text(person.get("MaQuocTich")) or _text(person.get("QuocTich"))}


# -- answers ------------------------------------------------------------------------------------------

@dataclass
class Exchange:
    """One accepted answer and what provenance needs of it."""

    value: Any
    request_id: str
    payload_sha256: str
    fetched_at: datetime


@dataclass(frozen=True)
class Refusal:
    """The registry answered, about this enterprise, that it cannot give it (unknown code and the like)."""

    message: str


def _envelope(response: requests.Response, where: str) -> Any:
    """The JSON body; a body that does not parse was damaged on the way and is worth another attempt."""
    if response.status_code >= 500:
        raise TransientError(f"{where}: HTTP {response.status_code}: {_message_of(response)}")
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponse(f"{where}: HTTP {response.status_code} body is not valid JSON ({exc})") from None


def _message_of(response: requests.Response) -> str:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text[:200].replace("\n", " ")
    return str(body.get("Message") or body.get("message") or "")[:300] if isinstance(body, dict) else ""


def _error_code(body: dict[str, Any]) -> str:
    """``ErrorCode`` when present, else the code the §0 vocabulary puts at the head of ``Message``."""
    code = str(body.get("ErrorCode") or "").strip()
    match = _CODE_PREFIX.match(str(body.get("Message") or ""))
    return code or (match.group(1) if match else "")


def _raise_unless_record_level(code: str, message: str, where: str) -> None:
    """Errors about the call itself (busy, token, not allowed) are raised; the rest concern the record."""
    if code.isdigit() and int(code) in TRANSIENT_CODES:
        raise TransientError(f"{where}: registry busy: {message}")
    if code == "100":
        raise AuthenticationFailed(f"{where}: {message}")
    if code in CLIENT_REFUSALS:
        raise PermanentError(f"{where}: registry refused the client: {message}", code=code)


@dataclass(frozen=True)
class Page:
    total: int
    rows: list[Any]


def parse_page(response: requests.Response, where: str) -> Page:
    """A ``danhSachHoSo`` page; anything but ``Status: 1`` with a count and a list is not a page."""
    if 400 <= response.status_code < 500:
        raise PermanentError(f"{where}: HTTP {response.status_code}: {_message_of(response)}")
    body = _envelope(response, where)
    if not isinstance(body, dict) or "Status" not in body:
        raise MalformedResponse(f"{where}: the page has no Status")
    if str(body["Status"]) != "1":
        message = str(body.get("Message") or "")[:300]
        _raise_unless_record_level(_error_code(body), message, where)
        raise PermanentError(f"{where}: the registry refused the list: {message}", code=_error_code(body))
    total, rows = body.get("DataCount"), body.get("Data")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0 or not isinstance(rows, list):
        raise MalformedResponse(f"{where}: the page lacks DataCount or the Data list")
    return Page(total, rows)


def parse_detail(response: requests.Response, variant: str, code: str) -> Any:
    """Variant A's ``Data`` or variant B's ``GetEntCert`` item, or a :class:`Refusal` to quarantine."""
    where = f"msdn {code}"
    if response.status_code in (400, 404):
        return _refusal_or_wrong_address(response, where)
    if response.status_code == 403:
        raise PermanentError(f"{where}: HTTP 403: {_message_of(response)}", code="101")
    if response.status_code != 200 and response.status_code < 500:
        raise PermanentError(f"{where}: HTTP {response.status_code}: {_message_of(response)}")
    body = _envelope(response, where)
    if not isinstance(body, dict):
        raise MalformedResponse(f"{where}: the details are not a JSON object")
    return _detail_a(body, code) if variant == "A" else _detail_b(body, code)


def _refusal_or_wrong_address(response: requests.Response, where: str) -> Refusal:
    """A 404/400 in the registry's envelope is about this enterprise (quarantine it); one without is
    about the address (a wrong base URL or variant), which would otherwise quarantine every record."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or not {"Status", "Message", "GetEntCert", "ErrorCode"} & body.keys():
        raise PermanentError(f"{where}: HTTP {response.status_code} from {response.url} without the registry's "
                             f"envelope; check HUB_BUSINESS_URL and HUB_BUSINESS_VARIANT")
    message = str(body.get("Message") or "")[:300]
    _raise_unless_record_level(_error_code(body), message, where)
    return Refusal(f"HTTP {response.status_code}: {message or 'no message'}")


def _detail_a(body: dict[str, Any], code: str) -> Any:
    if str(body.get("Status")) == "1":
        if not isinstance(body.get("Data"), dict):
            raise MalformedResponse(f"msdn {code}: Status 1 without a Data object")
        return body["Data"]
    if "Status" not in body:
        raise MalformedResponse(f"msdn {code}: the details have no Status")
    message = str(body.get("Message") or "")[:300]
    _raise_unless_record_level(_error_code(body), message, f"msdn {code}")
    return Refusal(f"Status {body.get('Status')}: {message or 'no message'}")


def _detail_b(body: dict[str, Any], code: str) -> Any:
    items = body.get("GetEntCert")
    if items is None and ("Message" in body or "ErrorCode" in body):
        message = str(body.get("Message") or "")[:300]
        _raise_unless_record_level(_error_code(body), message, f"msdn {code}")
        return Refusal(message or "no GetEntCert")
    if not isinstance(items, list):
        raise MalformedResponse(f"msdn {code}: the details have no GetEntCert list")
    if not items:
        return Refusal(f"GetEntCert is empty: {str(body.get('Message') or 'no message')[:300]}")
    matching = [i for i in items if isinstance(i, dict) and _text(i.get("MaSoDoanhNghiep")) == code]
    return (matching or items)[0]


# -- a window's dossiers ------------------------------------------------------------------------------

@dataclass
class Quarantine:
    """Refused records of one batch, built column-wise."""

    columns: dict[str, list[Any]] = field(default_factory=lambda: {f.name: [] for f in QUARANTINE_SCHEMA})

    def add(self, operation: str, request_id: str, position: str, key: str | None, reason: str, raw: Any,
            fetched_at: datetime) -> None:
        values = (SYSTEM, enterprises.DATASET, operation, request_id, position, key, reason, _raw_text(raw),
                  fetched_at)
        for name, value in zip(self.columns, values):
            self.columns[name].append(value)

    def table(self) -> pa.Table:
        return pa.table({f.name: pa.array(self.columns[f.name], f.type) for f in QUARANTINE_SCHEMA},
                        schema=QUARANTINE_SCHEMA)


def _raw_text(raw: Any) -> str | None:
    if raw is None or isinstance(raw, str):
        return raw
    try:
        return orjson.dumps(raw).decode()
    except TypeError:
        return repr(raw)[:2000]


@dataclass
class Listing:
    """A window's dossiers, deduplicated on ``IN_JOURNAL_NO``: enterprises to fetch and refused rows."""

    total: int = 0
    versions: dict[str, date] = field(default_factory=dict)  # code → latest PROCESSED_DATE in the window
    gdt_codes: dict[str, str | None] = field(default_factory=dict)
    journals: set[str] = field(default_factory=set)
    refused: dict[str, tuple] = field(default_factory=dict)  # journal (or raw text) → quarantine arguments

    def covered(self) -> int:
        return len(self.journals) + len(self.refused)


def classify_dossier(row: Any, window: Window) -> tuple[str, str, date, str | None]:
    """(journal, code, processed day, GDT code) of a listed dossier, or :class:`RecordProblem`."""
    if not isinstance(row, dict):
        raise RecordProblem("dossier is not an object")
    journal = _text(row.get("IN_JOURNAL_NO"))
    if journal is None:
        raise RecordProblem("missing required field IN_JOURNAL_NO")
    code = _text(row.get("ENTERPRISE_CODE")) or _text(row.get("ENTERPRISE_GDT_CODE")) or ""
    problem = enterprise_code_problem(code)
    if problem:
        raise RecordProblem(problem)
    processed = _date(row.get("PROCESSED_DATE"), "PROCESSED_DATE")
    if processed is None:
        raise RecordProblem("missing required field PROCESSED_DATE")
    if not window.first <= processed <= window.last:
        raise RecordProblem(f"PROCESSED_DATE {_vn_day(processed)} is outside the window {window}")
    return journal, code, processed, _text(row.get("ENTERPRISE_GDT_CODE"))


def add_page(listing: Listing, rows: list[Any], window: Window, offset: int, request_id: str,
             fetched_at: datetime) -> None:
    """Fold one page into the window's listing; a dossier delivered twice counts once."""
    for index, row in enumerate(rows):
        try:
            journal, code, processed, gdt = classify_dossier(row, window)
        except RecordProblem as problem:
            key = _text(row.get("IN_JOURNAL_NO")) if isinstance(row, dict) else None
            code = (_text(row.get("ENTERPRISE_CODE")) if isinstance(row, dict) else None)
            listing.refused[key or _raw_text(row) or ""] = (
                LIST_OPERATION, request_id, f"window {window}, offset {offset}, index {index}", code or key,
                str(problem), row, fetched_at)
            continue
        listing.journals.add(journal)
        if processed > listing.versions.get(code, date.min):
            listing.versions[code] = processed
        listing.gdt_codes.setdefault(code, gdt)


_DONE = object()  # the producer's last word when every window was read


def _offer(ahead: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item`` for the consumer unless it has stopped listening (then say so)."""
    while not stop.is_set():
        try:
            ahead.put(item, timeout=0.1)
            return True
        except queue.Full:
            pass
    return False


# -- the connector ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Knobs:
    """The connector's own ``HUB_BUSINESS_…`` knobs (transport ones are in :class:`TransportOptions`)."""

    since: date | None = None
    page_size: int = MAX_PAGE_SIZE
    concurrency: int = 4  # detail calls in flight; the rate limit still caps the request rate

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "Knobs":
        since = environ.get("HUB_BUSINESS_SINCE", "").strip()
        return cls(since=parse_since(since) if since else None,
                   page_size=_bounded(environ, "HUB_BUSINESS_PAGE_SIZE", MAX_PAGE_SIZE, 1, MAX_PAGE_SIZE),
                   concurrency=_bounded(environ, "HUB_BUSINESS_CONCURRENCY", 4, 1, 32))


def _bounded(environ: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise ConfigError(f"{name} must be an integer from {lo} to {hi}, got {raw!r}")
    return int(raw)


class BusinessConnector:
    """§3 for one province: ``check()`` and ``read(cursor)`` of the ``enterprises`` dataset."""

    system = SYSTEM
    dataset = enterprises.DATASET
    schema = enterprises.SCHEMA
    key = enterprises.KEY
    version_column = enterprises.VERSION_COLUMN

    def __init__(self, base_url: str, client_id: str, client_secret: str, variant: str = "A", *,
                 options: TransportOptions | None = None, knobs: Knobs = Knobs(), agency_code: str = "",
                 officer_id: str = "", today: Callable[[], date] = today_in_vietnam) -> None:
        if variant not in DETAIL_PATHS:
            raise ConfigError(f"HUB_BUSINESS_VARIANT must be A or B, got {variant!r}")
        self.base_url = base_url.rstrip("/")
        self.variant = variant
        self.options = options or TransportOptions()
        self.knobs = knobs
        self.agency_code, self.officer_id = agency_code, officer_id
        self._credentials = (client_id, client_secret)
        self._today = today
        self.transport = self._transport(self.options)
        self._last_list_request = ""  # named when a window's listing never settles

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str]) -> "BusinessConnector":
        missing = [name for name, value in (("HUB_BUSINESS_URL", settings.business_url),
                                            ("HUB_BUSINESS_CLIENT_ID", settings.business_client_id),
                                            ("HUB_BUSINESS_CLIENT_SECRET", settings.business_client_secret))
                   if not value]
        if missing:
            raise ConfigError(f"the business registry is not configured: set {', '.join(missing)}")
        return cls(settings.business_url, settings.business_client_id, settings.business_client_secret.reveal(),
                   settings.business_variant, options=options_from_env(SYSTEM, environ),
                   knobs=Knobs.from_env(environ), agency_code=settings.agency_code, officer_id=settings.officer_id)

    def between(self, first: date, last: date) -> "BusinessConnector":
        """This connector limited to the dossiers processed from ``first`` to ``last`` (one daily
        partition, or a range of them): windows of at most five days over exactly that range, on the
        same transport and token."""
        bounded = copy.copy(self)
        bounded.knobs = dataclasses.replace(self.knobs, since=first)
        bounded._today = lambda: last
        return bounded

    def history_start(self) -> date:
        """The first day a first sync reads: ``HUB_BUSINESS_SINCE``, else two years ago."""
        return self.knobs.since or two_years_before(self._today())

    def _transport(self, options: TransportOptions) -> Transport:
        token = OAuth2ClientCredentials(f"{self.base_url}/token", *self._credentials,
                                        Transport(SYSTEM, options, base_url=self.base_url))
        return Transport(SYSTEM, options, token, base_url=self.base_url)

    # -- check ------------------------------------------------------------------------------------
    def check(self) -> CheckResult:
        """A token, then the cheapest real call (today's dossiers, one row): both must work."""
        quick = dataclasses.replace(self.options, max_attempts=min(self.options.max_attempts, 2),
                                    backoff_max_s=min(self.options.backoff_max_s, 1.0))
        today = self._today()
        try:
            page, _ = self._list_page(self._transport(quick), Window(today, today), 0, 1)
        except ConnectorError as exc:  # the CLI names the system; keep the exchange and the cause
            where = exc.operation + (f" (request {exc.request_id})" if exc.request_id else "")
            return CheckResult(False, " ".join(f"{where}: {exc.detail}".split()))
        return CheckResult(True, f"token accepted and {LIST_OPERATION} answered at {self.base_url} "
                                 f"({page.total} dossiers processed today; details via variant {self.variant})")

    # -- read -------------------------------------------------------------------------------------
    def read(self, cursor: dict[str, Any] | None) -> Iterator[Batch]:
        """Batches in window order; the next window is fetched while the caller commits this one.

        Fetching ahead is safe because every detail call of a window still happens before any of
        the next window's, so for each enterprise a later fetch never carries an older version."""
        today = self._today()
        ahead: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()
        producer = threading.Thread(target=self._produce, args=(self._start(cursor, today), today, ahead, stop),
                                    daemon=True, name="business-windows")
        producer.start()
        try:
            while (item := ahead.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            producer.join(timeout=self.options.read_timeout_s)

    def _produce(self, start: date, today: date, ahead: queue.Queue, stop: threading.Event) -> None:
        """Producer thread: window after window into ``ahead``, then ``_DONE`` or the error."""
        pool = ThreadPoolExecutor(self.knobs.concurrency, thread_name_prefix="business-details")
        try:
            for window in windows(start, today):
                if stop.is_set() or not _offer(ahead, self._read_window(window, today, pool), stop):
                    return
            _offer(ahead, _DONE, stop)
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            _offer(ahead, exc, stop)
        finally:  # after a failure, detail calls not yet started are dropped; those in flight finish
            pool.shutdown(wait=True, cancel_futures=True)

    def _start(self, cursor: dict[str, Any] | None, today: date) -> date:
        if cursor and cursor.get("from"):
            return date.fromisoformat(str(cursor["from"]))
        return self.knobs.since or two_years_before(today)

    def _read_window(self, window: Window, today: date, pool: ThreadPoolExecutor) -> Batch:
        """The window's enterprises as one batch; any call failing for good fails the whole window."""
        listing = self._list_window(window)
        quarantine = Quarantine()
        for arguments in listing.refused.values():
            quarantine.add(*arguments)
        codes = list(listing.versions)
        answers = list(pool.map(self._fetch_detail, codes))
        rows = self._rows(window, listing, codes, answers, quarantine)
        return Batch(records=rows, cursor=next_cursor(window, today), quarantine=quarantine.table(),
                     progress=listing.covered())

    def _rows(self, window: Window, listing: Listing, codes: list[str], answers: list[Exchange],
              quarantine: Quarantine) -> pa.Table:
        columns: dict[str, list[Any]] = {f.name: [] for f in self.schema}
        for code, answer in zip(codes, answers):
            try:
                row = self._map(answer.value, code, listing.gdt_codes.get(code))
            except RecordProblem as problem:
                quarantine.add(DETAIL_OPERATION, answer.request_id, f"window {window}, msdn {code}", code,
                               str(problem), answer.value if not isinstance(answer.value, Refusal) else None,
                               answer.fetched_at)
                continue
            row.update({self.version_column: listing.versions[code], "source_system": SYSTEM,
                        "request_id": answer.request_id, "fetched_at": answer.fetched_at,
                        "payload_sha256": answer.payload_sha256})
            for name, values in columns.items():
                values.append(row[name])
        return pa.table({f.name: pa.array(columns[f.name], f.type) for f in self.schema}, schema=self.schema)

    def _map(self, value: Any, code: str, gdt_code: str | None) -> dict[str, Any]:
        if isinstance(value, Refusal):
            raise RecordProblem(f"listed, but the registry has no details: {value.message}")
        if self.variant == "A":
            row = map_variant_a(value, code)
            row["gdt_code"] = row["gdt_code"] or gdt_code
            return row
        return map_variant_b(value, code, gdt_code)

    # -- calls ------------------------------------------------------------------------------------
    def _list_window(self, window: Window) -> Listing:
        """Every dossier of ``window``; read again from offset 0 when the total moves under us."""
        why = ""
        for _ in range(WINDOW_READS):
            listing, why = self._page_through(window)
            if listing is not None:
                return listing
        raise ConnectorError(SYSTEM, LIST_OPERATION, self._last_list_request,
                             f"window {window}: {why}; gave up after {WINDOW_READS} reads of the window")

    def _page_through(self, window: Window) -> tuple[Listing | None, str]:
        listing, offset, size = Listing(), 0, self.knobs.page_size
        while True:
            page, exchange = self._list_page(self.transport, window, offset, size)
            if offset and page.total != listing.total:
                return None, f"DataCount changed from {listing.total} to {page.total} while paging"
            listing.total = page.total
            add_page(listing, page.rows, window, offset, exchange.request_id, exchange.fetched_at)
            offset += min(len(page.rows), size)
            if not page.rows or offset >= page.total:
                break
        if listing.covered() < listing.total:
            return None, f"DataCount is {listing.total} but only {listing.covered()} distinct dossiers came"
        return listing, ""

    def _list_page(self, transport: Transport, window: Window, offset: int, limit: int) -> tuple[Page, Exchange]:
        where = f"window {window}, offset {offset}"
        params = {**window.params(), "offset": str(offset), "limit": str(limit)}
        exchange = self._get(transport, LIST_OPERATION, LIST_PATH, params, lambda r: parse_page(r, where))
        self._last_list_request = exchange.request_id
        return exchange.value, exchange

    def _fetch_detail(self, code: str) -> Exchange:
        return self._get(self.transport, DETAIL_OPERATION, DETAIL_PATHS[self.variant], {"msdn": code},
                         lambda response: parse_detail(response, self.variant, code))

    def _get(self, transport: Transport, operation: str, path: str, params: dict[str, str],
             parse: Callable[[requests.Response], Any]) -> Exchange:
        """One GET through the shared transport; remembers which attempt's answer was accepted."""
        sent: dict[str, str] = {}  # this call's attempt in flight; build and parse run in turn

        def build(request_id: str) -> HttpRequest:
            sent["request_id"] = request_id
            return HttpRequest("GET", f"{self.base_url}/{path}", headers=self._headers(request_id), params=params)

        def accept(response: requests.Response) -> Exchange:
            value = parse(response)
            return Exchange(value, sent["request_id"], hashlib.sha256(response.content).hexdigest(),
                            datetime.now(timezone.utc))

        return transport.call(operation, build, accept)

    def _headers(self, request_id: str) -> dict[str, str]:
        """§0 purpose context: the request id always, the agency and officer when configured."""
        headers = {"Accept": "application/json", "MaYeuCau": request_id}
        if self.agency_code:
            headers["MaDVC"] = self.agency_code
        if self.officer_id:
            headers["MaCanBo"] = self.officer_id
        return headers
