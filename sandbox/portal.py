"""The National Public Service Portal (DVCQG, ``national-systems.md`` §5) over REST/JSON.

The province reports every one-stop-shop dossier and each of its progress steps here. Two routes
make the portal's interface, both ``POST`` with a JSON body and the header ``dstcode`` (the
province's code on the portal):

- ``{base}/login`` ``{"username", "password"}`` → ``{"error_code": 0, "session"}``; a session lives
  ``session_s`` seconds (*conv.* 30 min) and is then answered ``error_code`` ``"401"``;
- ``{base}/integration`` ``{"session", "madonvi", "service", …}`` → ``{"error_code": "0", "result"}``
  or ``{"error_code", "message"}``, HTTP 200 either way. Services: ``TraCuuHoSo``, ``DongBoHoSoMC``,
  ``CapNhatTienDoHoSoMC``, ``LayDanhSachTTHC``, ``LayDanhMucCoQuan``.

What the portal checks (*conv.* where §5 is silent):

- ``error_code`` values: ``"401"`` no, unknown or expired session; ``"3"`` a new dossier that already
  exists; otherwise the §0 vocabulary: ``100`` wrong username or password, ``101`` caller address,
  ``106`` ``madonvi`` not an agency of the province, ``108`` missing or wrong ``dstcode``, ``200``
  RECORD_UNCOMPLETE (a required field missing or empty), ``201`` RECORD_NOT_FOUND (an update or a step
  for a dossier the portal does not hold), ``302`` DATA_TYPE_INVALID (wrong JSON type or form: dates,
  ``MaHoSo``, ID numbers), ``500`` DATA_INCORRECT (a value outside its code list, an unknown ``MaTTHC``,
  an unknown service, a malformed body), ``429`` (HTTP 429 with ``Retry-After``).
- A dossier needs ``MaHoSo``, ``MaTTHC``, ``TenTTHC``, ``KenhThucHien``, ``ChuHoSo``, ``LoaiDoiTuong``,
  ``NgayTiepNhan`` and ``TrangThaiHoSo``; a step needs ``MaHoSo``, ``NguoiXuLy``, ``ThoiDiemXuLy``,
  ``NoiDungXuLy`` and ``TrangThai`` (``1``–``10``, as ``TrangThaiHoSo``). The other §5 fields are optional
  (absent, ``null`` or ``""``) but checked when given. Code fields may be JSON strings or integers.
  Fields beyond §5 are kept as sent. ``MaTTHC`` must be in :mod:`sandbox.procedures`; ``MaHoSo`` must
  have the Circular 01/2018 Art. 19 form ``{QCVN 102 agency code}-{YYMMDD}-{NNNN}``; ``DinhDanhCHS`` is
  a list of ``{LoaiDinhDanh, SoDinhDanh}`` whose number has the form of its kind (12 digits, 9 digits,
  an enterprise code).
- A write carries 1 to :data:`MAX_ITEMS` items and is all or nothing: the answer to a refused write
  names the first refused item (its index, ``MaHoSo`` and field) and how many others were refused too.
  Within one new-dossier write a ``MaHoSo`` may appear once; an update replaces the dossier's fields
  (the last occurrence wins). Steps are not deduplicated: a step sent twice is recorded twice.
- Results: a write answers ``{"count": n}`` (the items written); ``TraCuuHoSo`` answers a list, empty
  or holding the dossier as last written plus ``QuaTrinhXuLy`` (its steps in the order recorded);
  ``LayDanhSachTTHC`` ``[{MATTHC, TENTTHC, LINHVUCTHUCHIEN: [{MALINHVUC, TENLINHVUC}]}]`` and
  ``LayDanhMucCoQuan`` ``[{MADONVI (QCVN 102 form), TENDONVI}]``. ``madonvi`` may be either form of a
  province agency's code.

Injected faults (§0, :mod:`sandbox.faults`, system ``dvcqg``) hit ``/integration`` only (the login,
like the REST systems' token endpoint, is left alone). Latency, HTTP 500/502/503, 429 with
``Retry-After`` and token expiry (the session is invalidated and the call answered ``"401"``) happen
**before** anything is applied. A connection reset, a truncated body and malformed JSON happen
**after**: for ``DongBoHoSoMC`` and ``CapNhatTienDoHoSoMC`` the write has been applied and only the
answer is lost, so a client that sends again blindly records a step twice; it must look the dossier
up (``TraCuuHoSo``) first.

``GET {base}/_sandbox/received`` (HTTP Basic, the portal account's username and password) is the
sandbox's own record for tests and benchmarks, **not part of the portal's interface**: every
dossier as last written, every step as recorded (duplicates included), the calls per service and
the refusals per service and code. :meth:`PortalService.dossiers`, :meth:`PortalService.steps` and
:meth:`PortalService.received` give the same in process, from any thread.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Any, Callable, Mapping

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.agencies import agencies
from sandbox.auth import Client
from sandbox.faults import RESPONSE_FAULTS
from sandbox.procedures import Procedure, by_code, procedures
from sandbox.service import ServiceError, SystemRuntime, injected_error
from sandbox.transport import BodyTooLarge, damage, read_body
from schemas.errors import ERROR_NAMES

SYSTEM = "dvcqg"
JSON_TYPE = "application/json"
SESSION_S = 1800.0
MAX_ITEMS = 1000  # items per write call
BODY_LIMIT = 8 << 20  # bytes of a request body: a thousand dossiers with room to spare
#: No paged feeds here, so only the response faults apply.
APPLICABLE_FAULTS = frozenset(RESPONSE_FAULTS)

OK = "0"
EXISTS = "3"  # a new dossier that the portal already holds: send it again as an update
SESSION_REFUSED = "401"

CHANNELS = {"1": "at the counter", "2": "online", "3": "by post"}
APPLICANT_KINDS = {"1": "citizen", "2": "enterprise", "3": "state agency", "4": "other"}
STATUSES = {str(n): name for n, name in enumerate((
    "mới đăng ký", "được tiếp nhận", "không được tiếp nhận", "đang xử lý", "yêu cầu bổ sung",
    "yêu cầu nghĩa vụ tài chính", "công dân rút hồ sơ", "dừng xử lý", "đã xử lý xong", "đã trả kết quả"), start=1)}
FLAGS = {"0": "no", "1": "yes"}
ID_KINDS = {"1": "personal ID", "2": "CMND", "3": "enterprise code"}
_ID_FORMS = {"1": (re.compile(r"\d{12}"), "a 12-digit personal ID"),
             "2": (re.compile(r"\d{9}"), "a 9-digit CMND number"),
             "3": (re.compile(r"\d{10}(?:-\d{3})?"), "an enterprise code (10 digits, optionally -NNN)")}
_DOSSIER_CODE = re.compile(r"(\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2})-(\d{2})(\d{2})(\d{2})-(\d{4})")
_MOMENT = re.compile(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})")


class PortalError(Exception):
    """A refusal in the portal's envelope ``{"error_code", "message"}``."""

    def __init__(self, code: str, message: str, http_status: int = 200, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status
        self.retry_after = retry_after

    @classmethod
    def of(cls, error: ServiceError) -> "PortalError":
        """The portal's answer for a shared runtime check or an injected fault."""
        status = error.http_status if error.code in (429, 500, 503) and error.http_status >= 429 else 200
        return cls(str(error.code), f"{error.name}: {error.message}", status, error.retry_after)

    def body(self) -> dict[str, str]:
        return {"error_code": self.code, "message": self.message}


def refused(code: int, message: str) -> PortalError:
    """A refusal with a §0 code, its name leading the message."""
    return PortalError(str(code), f"{ERROR_NAMES[code]}: {message}")


# -- field checks -----------------------------------------------------------------------------------

Problem = tuple[int, str]  # (§0 code, what is wrong)
Check = Callable[[Any], Problem | None]


def _show(value: Any) -> str:
    """A value as it can be quoted back in a message (short, whatever it was)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def text_field(value: Any) -> Problem | None:
    return None if isinstance(value, str) else (302, f"must be a string, got {_show(value)}")


def moment_field(value: Any) -> Problem | None:
    """yyyyMMddHHmmss, a real moment (+07:00 is implied, as everywhere on the wire)."""
    match = _MOMENT.fullmatch(value) if isinstance(value, str) else None
    if match:
        try:
            datetime(*(int(part) for part in match.groups()))
            return None
        except ValueError:
            pass
    return 302, f"must be a date-time yyyyMMddHHmmss, got {_show(value)}"


def code_field(allowed: Mapping[str, str]) -> Check:
    """A code of ``allowed``, sent as a JSON string or integer."""
    listed = ", ".join(f"{code} {meaning}" for code, meaning in allowed.items())

    def check(value: Any) -> Problem | None:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            return 302, f"must be a code (string or integer), got {_show(value)}"
        if str(value) not in allowed:
            return 500, f"{_show(value)} is not one of {listed}"
        return None

    return check


def dossier_code_field(value: Any) -> Problem | None:
    """Circular 01/2018 Art. 19: ``{QCVN 102 agency code}-{YYMMDD}-{NNNN}``."""
    match = _DOSSIER_CODE.fullmatch(value) if isinstance(value, str) else None
    if match:
        try:
            yy, mm, dd = (int(part) for part in match.group(2, 3, 4))
            datetime(2000 + yy, mm, dd)
            return None
        except ValueError:
            pass
    return 302, f"must have the form {{agency code V1V2V3.Z1Z2.Y1Y2.MX1X2}}-{{YYMMDD}}-{{NNNN}}, got {_show(value)}"


def procedure_field(catalogue: Mapping[str, Procedure]) -> Check:
    def check(value: Any) -> Problem | None:
        if not isinstance(value, str):
            return 302, f"must be a string, got {_show(value)}"
        if value not in catalogue:
            return 500, f"{_show(value)} is not a procedure of the portal's catalogue (LayDanhSachTTHC)"
        return None

    return check


_id_kind_field = code_field(ID_KINDS)


def identifiers_field(value: Any) -> Problem | None:
    """``DinhDanhCHS``: ``[{LoaiDinhDanh, SoDinhDanh}]``, each number in the form of its kind."""
    if not isinstance(value, list):
        return 302, f"must be a list of {{LoaiDinhDanh, SoDinhDanh}}, got {_show(value)}"
    for k, entry in enumerate(value):
        where = f"[{k}]"
        if not isinstance(entry, dict):
            return 302, f"{where} must be an object {{LoaiDinhDanh, SoDinhDanh}}, got {_show(entry)}"
        for name in ("LoaiDinhDanh", "SoDinhDanh"):
            if entry.get(name) in (None, ""):
                return 200, f"{where}.{name} is required"
        problem = _id_kind_field(entry["LoaiDinhDanh"])
        if problem:
            return problem[0], f"{where}.LoaiDinhDanh {problem[1]}"
        number = entry["SoDinhDanh"]
        form, described = _ID_FORMS[str(entry["LoaiDinhDanh"])]
        if not (isinstance(number, str) and form.fullmatch(number)):
            return 302, f"{where}.SoDinhDanh must be {described} (LoaiDinhDanh {entry['LoaiDinhDanh']}), got {_show(number)}"
    return None


def dossier_fields(catalogue: Mapping[str, Procedure]) -> dict[str, tuple[bool, Check]]:
    """The §5 dossier fields: (required, check), in the order they are checked."""
    return {
        "MaHoSo": (True, dossier_code_field),
        "MaTTHC": (True, procedure_field(catalogue)),
        "TenTTHC": (True, text_field),
        "MaLinhVuc": (False, text_field),
        "TenLinhVuc": (False, text_field),
        "KenhThucHien": (True, code_field(CHANNELS)),
        "ChuHoSo": (True, text_field),
        "LoaiDoiTuong": (True, code_field(APPLICANT_KINDS)),
        "DinhDanhCHS": (False, identifiers_field),
        "TrichYeuHoSo": (False, text_field),
        "NgayTiepNhan": (True, moment_field),
        "NgayHenTra": (False, moment_field),
        "TrangThaiHoSo": (True, code_field(STATUSES)),
        "NgayKetThucXuLy": (False, moment_field),
        "NgayTra": (False, moment_field),
        "DonViXuLy": (False, text_field),
        "DuocThanhToanTrucTuyen": (False, code_field(FLAGS)),
    }


STEP_FIELDS: dict[str, tuple[bool, Check]] = {
    "MaHoSo": (True, dossier_code_field),
    "NguoiXuLy": (True, text_field),
    "ChucDanh": (False, text_field),
    "ThoiDiemXuLy": (True, moment_field),
    "PhongBanXuLy": (False, text_field),
    "NoiDungXuLy": (True, text_field),
    "TrangThai": (True, code_field(STATUSES)),
    "NgayBatDau": (False, moment_field),
    "NgayKetThucTheoQuyDinh": (False, moment_field),
}


def item_problem(item: Any, fields: Mapping[str, tuple[bool, Check]]) -> Problem | None:
    """The first thing wrong with one dossier or step, naming the field."""
    if not isinstance(item, dict):
        return 302, f"must be an object, got {_show(item)}"
    for name, (required, check) in fields.items():
        value = item.get(name)
        if value is None or value == "":
            if required:
                return 200, f"{name} is required"
            continue
        problem = check(value)
        if problem:
            return problem[0], f"{name} {problem[1]}"
    return None


def item_label(index: int, item: Any, step: bool) -> str:
    """How a message names an item: its place in ``data`` and its keys, as far as they can be read."""
    label = f"data[{index}]"
    if isinstance(item, dict) and isinstance(item.get("MaHoSo"), str):
        label += f" (MaHoSo {_show(item['MaHoSo'])}"
        if step and isinstance(item.get("ThoiDiemXuLy"), str):
            label += f", ThoiDiemXuLy {_show(item['ThoiDiemXuLy'])}"
        label += ")"
    return label


def first_refusal(kind: str, items: list[Any], step: bool, problems: list[tuple[int, int, str]]) -> PortalError:
    """The answer to a write with refused items: the first one named, the others counted."""
    index, code, text = problems[0]
    more = f"; {len(problems) - 1} more of the {len(items)} {kind} refused too" if len(problems) > 1 else ""
    return refused(code, f"{item_label(index, items[index], step)}: {text}{more}; nothing was written")


# -- sessions and the record ------------------------------------------------------------------------

class Sessions:
    """Portal sessions: issued at login for a username and password, valid ``lifetime_s``."""

    def __init__(self, clients: Mapping[str, Client], lifetime_s: float, clock: Callable[[], float]) -> None:
        self.clients = clients
        self.lifetime_s = lifetime_s
        self._clock = clock
        self._sessions: dict[str, tuple[Client, float]] = {}
        self._lock = threading.Lock()

    def login(self, username: str, password: str) -> str:
        client = self.clients.get(username)
        if client is None or not hmac.compare_digest(client.secret.encode(), password.encode()):
            raise refused(100, "unknown username or wrong password")
        session = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            if len(self._sessions) > 1000:  # drop expired sessions now and then, not on every login
                self._sessions = {s: v for s, v in self._sessions.items() if v[1] > now}
            self._sessions[session] = (client, now + self.lifetime_s)
        return session

    def check(self, session: Any) -> Client:
        if not isinstance(session, str) or not session:
            raise PortalError(SESSION_REFUSED, "session is required: log in first (POST {base}/login)")
        with self._lock:
            entry = self._sessions.get(session)
        if entry is None:
            raise PortalError(SESSION_REFUSED, "unknown or invalidated session: log in again")
        if entry[1] <= self._clock():
            raise PortalError(SESSION_REFUSED, "session expired: log in again")
        return entry[0]

    def invalidate(self, session: str) -> None:
        with self._lock:
            self._sessions.pop(session, None)


class Received:
    """What the portal holds and was told: dossiers by ``MaHoSo``, steps in arrival order, counts.

    One lock guards everything, so a write is checked and applied in one step (all or nothing) and a
    reader in another thread sees a write entirely or not at all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dossiers: dict[str, dict[str, Any]] = {}
        self._steps: list[dict[str, Any]] = []
        self._steps_of: dict[str, list[dict[str, Any]]] = {}
        self._calls: Counter[str] = Counter()
        self._refusals: dict[str, Counter[str]] = {}

    def write_dossiers(self, items: list[dict[str, Any]], updating: bool) -> None:
        with self._lock:
            if updating:
                missing = [k for k, item in enumerate(items) if item["MaHoSo"] not in self._dossiers]
                if missing:
                    raise self._write_refused("201", "RECORD_NOT_FOUND: ", items, missing,
                                              "the portal holds no such dossier; send it with isUpdating \"False\"")
            else:
                present = [k for k, item in enumerate(items) if item["MaHoSo"] in self._dossiers]
                if present:
                    raise self._write_refused(EXISTS, "", items, present,
                                              "the dossier already exists; send it again with isUpdating \"True\"")
            for item in items:
                self._dossiers[item["MaHoSo"]] = item

    def add_steps(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            missing = [k for k, item in enumerate(items) if item["MaHoSo"] not in self._dossiers]
            if missing:
                raise self._write_refused("201", "RECORD_NOT_FOUND: ", items, missing,
                                          "a step for a dossier the portal does not hold; send the dossier first",
                                          step=True)
            for item in items:
                self._steps.append(item)
                self._steps_of.setdefault(item["MaHoSo"], []).append(item)

    @staticmethod
    def _write_refused(code: str, prefix: str, items: list[Any], indices: list[int], why: str,
                       step: bool = False) -> PortalError:
        more = f"; {len(indices) - 1} more of the {len(items)} items too" if len(indices) > 1 else ""
        first = indices[0]
        return PortalError(code, f"{prefix}{item_label(first, items[first], step)}: {why}{more}; nothing was written")

    def look_up(self, code: str) -> dict[str, Any] | None:
        with self._lock:
            dossier = self._dossiers.get(code)
            if dossier is None:
                return None
            return {**dossier, "QuaTrinhXuLy": list(self._steps_of.get(code, ()))}

    def count(self, service: str, refusal: str | None = None) -> None:
        with self._lock:
            self._calls[service] += 1
            if refusal is not None:
                self._refusals.setdefault(service, Counter())[refusal] += 1

    def dossiers(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {code: dict(d) for code, d in self._dossiers.items()}

    def steps(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(s) for s in self._steps]

    def counts(self) -> dict[str, Any]:
        with self._lock:
            return {"calls": dict(self._calls),
                    "refusals": {service: dict(codes) for service, codes in self._refusals.items()},
                    "dossiers": len(self._dossiers), "steps": len(self._steps)}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"dossiers": list(self._dossiers.values()), "steps": list(self._steps),
                    "calls": dict(self._calls),
                    "refusals": {service: dict(codes) for service, codes in self._refusals.items()}}


# -- the service ------------------------------------------------------------------------------------

class PortalService:
    """§5 over HTTP: login, the integration services, and the sandbox's record of what it received."""

    def __init__(self, runtime: SystemRuntime, dstcode: str, session_s: float = SESSION_S,
                 clock: Callable[[], float] = time.time, body_limit: int = BODY_LIMIT) -> None:
        self.runtime = runtime
        self.dstcode = dstcode
        self.clock = clock  # tests drive session expiry by replacing it
        self.body_limit = body_limit
        self.sessions = Sessions(runtime.clients, session_s, lambda: self.clock())
        self.record = Received()
        self.catalogue = by_code()
        self._dossier_fields = dossier_fields(self.catalogue)
        self.services: dict[str, Callable[[dict[str, Any]], Any]] = {
            "TraCuuHoSo": self.look_up,
            "DongBoHoSoMC": self.sync_dossiers,
            "CapNhatTienDoHoSoMC": self.record_steps,
            "LayDanhSachTTHC": self.list_procedures,
            "LayDanhMucCoQuan": self.list_agencies,
        }

    def routes(self) -> list[Route]:
        return [Route("/login", self._login, methods=["POST"]),
                Route("/integration", self._integration, methods=["POST"]),
                Route("/_sandbox/received", self._received, methods=["GET"])]

    # in-process view of the record (tests, benchmarks)
    def dossiers(self) -> dict[str, dict[str, Any]]:
        """Every dossier as last written, by ``MaHoSo``."""
        return self.record.dossiers()

    def steps(self) -> list[dict[str, Any]]:
        """Every step in the order it was recorded, duplicates included."""
        return self.record.steps()

    def received(self) -> dict[str, Any]:
        """Calls per service, refusals per service and code, and how many dossiers and steps are held."""
        return self.record.counts()

    # HTTP
    async def _login(self, request: Request) -> Response:
        try:
            self._guard(request)
            body = await self._body(request)
            for name in ("username", "password"):
                if not body.get(name):
                    raise refused(200, f"{name} is required")
                if not isinstance(body[name], str):
                    raise refused(302, f"{name} must be a string")
            session = self.sessions.login(body["username"], body["password"])
        except PortalError as error:
            self.record.count("login", error.code)
            return self._error(error)
        self.record.count("login")
        return self._json({"error_code": 0, "session": session})

    async def _integration(self, request: Request) -> Response:
        decision = await self.runtime.draw(APPLICABLE_FAULTS)
        if decision.response == "http_502":
            return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=502,
                            media_type="text/html")
        injected = injected_error(decision)
        if injected is not None:
            return self._error(PortalError.of(injected))
        service = "(none)"
        try:
            self._guard(request)
            body = await self._body(request)
            if isinstance(body.get("service"), str) and body["service"]:
                service = body["service"]
            client = self.sessions.check(body.get("session"))
            if decision.response == "token_expiry":
                self.sessions.invalidate(body["session"])
                raise PortalError(SESSION_REFUSED, "session expired: log in again")
            try:
                self.runtime.check_rate(client)
            except ServiceError as error:
                raise PortalError.of(error) from None
            self._agency(body, client)
            name = body.get("service")
            if name in (None, ""):
                raise refused(200, "service is required")
            handler = self.services.get(name) if isinstance(name, str) else None
            if handler is None:
                raise refused(500, f"service {_show(name)} is not offered; known: {', '.join(self.services)}")
            result = handler(body)
        except PortalError as error:
            self.record.count(service, error.code)
            return self._error(error)
        self.record.count(service)
        return damage(decision, orjson.dumps({"error_code": OK, "result": result}), JSON_TYPE)

    async def _received(self, request: Request) -> Response:
        """The sandbox's own record, for tests and benchmarks; not part of the portal's interface."""
        if not self._basic_ok(request.headers.get("authorization")):
            return Response(orjson.dumps({"error_code": "100", "message": "AUTHEN_ERROR: HTTP Basic with the "
                                          "portal account's username and password is required"}),
                            status_code=401, media_type=JSON_TYPE, headers={"WWW-Authenticate": 'Basic realm="dvcqg"'})
        return self._json(self.record.snapshot())

    def _basic_ok(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Basic "):
            return False
        try:
            username, _, password = base64.b64decode(authorization[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        client = self.runtime.clients.get(username)
        return client is not None and hmac.compare_digest(client.secret.encode(), password.encode())

    def _guard(self, request: Request) -> None:
        """The caller's address, then the ``dstcode`` header."""
        try:
            self.runtime.check_ip(request.client.host if request.client else None)
        except ServiceError as error:
            raise PortalError.of(error) from None
        dstcode = request.headers.get("dstcode")
        if not dstcode:
            raise refused(108, "header dstcode (the province's code on the portal) is required on every call")
        if not hmac.compare_digest(dstcode.encode(), self.dstcode.encode()):
            raise refused(108, f"header dstcode {_show(dstcode)} is not a province this portal serves")

    async def _body(self, request: Request) -> dict[str, Any]:
        try:
            raw = await read_body(request, self.body_limit)
        except BodyTooLarge as exc:
            raise refused(500, f"{exc}; send fewer items per call") from None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise refused(500, f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise refused(302, f"request body must be a JSON object, got {type(body).__name__}")
        return body

    @staticmethod
    def _agency(body: dict[str, Any], client: Client) -> None:
        madonvi = body.get("madonvi")
        if madonvi in (None, ""):
            raise refused(200, "madonvi (the reporting agency's code) is required")
        if not isinstance(madonvi, str) or madonvi not in client.agencies:
            raise refused(106, f"madonvi {_show(madonvi)} is not an agency of the province this account reports for")

    def _error(self, error: PortalError) -> Response:
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
        return self._json(error.body(), error.http_status, headers)

    @staticmethod
    def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        return Response(orjson.dumps(payload), status_code=status, media_type=JSON_TYPE, headers=headers)

    # services
    def look_up(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """TraCuuHoSo: ``[dossier with QuaTrinhXuLy]``, or ``[]`` when the portal holds none."""
        code = body.get("mahoso")
        if code in (None, ""):
            raise refused(200, "mahoso is required")
        problem = dossier_code_field(code)
        if problem:
            raise refused(problem[0], f"mahoso {problem[1]}")
        dossier = self.record.look_up(code)
        return [] if dossier is None else [dossier]

    def sync_dossiers(self, body: dict[str, Any]) -> dict[str, Any]:
        """DongBoHoSoMC: create (``isUpdating`` ``"False"``) or replace (``"True"``) dossiers, all or none."""
        flag = body.get("isUpdating")
        if flag in (None, ""):
            raise refused(200, 'isUpdating is required: "False" for new dossiers, "True" for updates')
        if flag not in ("False", "True"):
            raise refused(302, f'isUpdating must be "False" or "True", got {_show(flag)}')
        updating = flag == "True"
        items = self._items(body, "dossiers")
        problems = [(k, *problem) for k, item in enumerate(items)
                    if (problem := item_problem(item, self._dossier_fields))]
        if not updating:
            refused_items = {p[0] for p in problems}
            seen: dict[str, int] = {}
            for k, item in enumerate(items):
                code = item.get("MaHoSo") if isinstance(item, dict) else None
                if not isinstance(code, str):
                    continue
                if code in seen and k not in refused_items:
                    problems.append((k, 500, f"MaHoSo repeats data[{seen[code]}] in the same call"))
                seen.setdefault(code, k)
            problems.sort()
        if problems:
            raise first_refusal("dossiers", items, False, problems)
        self.record.write_dossiers(items, updating)
        return {"count": len(items)}

    def record_steps(self, body: dict[str, Any]) -> dict[str, Any]:
        """CapNhatTienDoHoSoMC: record progress steps, all or none; each for a dossier the portal holds."""
        items = self._items(body, "steps")
        problems = [(k, *problem) for k, item in enumerate(items) if (problem := item_problem(item, STEP_FIELDS))]
        if problems:
            raise first_refusal("steps", items, True, problems)
        self.record.add_steps(items)
        return {"count": len(items)}

    @staticmethod
    def _items(body: dict[str, Any], kind: str) -> list[Any]:
        data = body.get("data")
        if data is None:
            raise refused(200, f"data (the list of {kind}) is required")
        if not isinstance(data, list):
            raise refused(302, f"data must be a list of {kind}, got {type(data).__name__}")
        if not data:
            raise refused(200, f"data is empty: send 1 to {MAX_ITEMS} {kind}")
        if len(data) > MAX_ITEMS:
            raise refused(500, f"data holds {len(data)} {kind}; at most {MAX_ITEMS} per call")
        return data

    @staticmethod
    def list_procedures(body: dict[str, Any]) -> list[dict[str, Any]]:
        """LayDanhSachTTHC: the procedures the portal knows (the sandbox's catalogue)."""
        return [{"MATTHC": p.code, "TENTTHC": p.name,
                 "LINHVUCTHUCHIEN": [{"MALINHVUC": p.field_code, "TENLINHVUC": p.field_name}]}
                for p in procedures()]

    @staticmethod
    def list_agencies(body: dict[str, Any]) -> list[dict[str, str]]:
        """LayDanhMucCoQuan: every agency, its code in the QCVN 102 form dossier codes use."""
        return [{"MADONVI": a.code102, "TENDONVI": a.name} for a in agencies()]
