"""The national document-exchange axis (VDXP, national-systems.md §4): receive, store, settle; and send.

Receiving is a queue with at-least-once delivery: ``GetReceivedEdocList`` lists messages not yet
settled (each listed one hides for the visibility timeout), ``GetEdoc`` fetches a package,
``UpdateStatus`` settles it. The axis forgets a settled message, so a message is settled only *after*
the batch holding it is durably committed (``Batch.after_commit``): ``done`` when stored, ``fail``
when its package is refused for good (quarantined with the reason; the sender sees ``fail``).

Exactly-once on the hub's side comes from the cursor, committed with each batch:

- ``settle``: the outcomes of the batch just committed. A run killed between the commit and the
  settling finds them here and settles them again first (UpdateStatus is idempotent), instead of
  storing the messages twice when the axis redelivers them.
- ``seen``: the outcomes of recently committed DocIds (bounded); a redelivered one is settled
  again without a new row. Compaction by ``doc_id`` absorbs any duplicate that still slips by.
- ``draining``: a run is under way. A run killed after *listing* but before committing hid those
  messages for the visibility timeout; the next run therefore does not conclude "queue empty"
  before one timeout has passed since it started. A listing whose answer was lost in this run
  (reset, truncated, timed out) is treated the same way.

zeep is used for what it is good at: the WSDL (parsed once per process, from ``schemas/wsdl``), the
operations' envelopes and WS-Security (a fresh UsernameToken nonce for every attempt). Envelopes go
through the shared :class:`~connectors.transport.Transport` (retries, back-off, pacing, TLS), and
answers are read with lxml, which is several times faster than zeep's object mapping and refuses DTDs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cache
from typing import Any, Callable, Iterator, Mapping

import pyarrow as pa
import requests
import zeep
from zeep.wsdl import Document
from lxml import etree
from zeep.wsse.username import UsernameToken

from connectors import edxml
from connectors.base import Batch, CheckResult
from connectors.errors import (AuthenticationFailed, ConnectorError, MalformedResponse, PermanentError,
                               TransientError)
from connectors.transport import HttpRequest, Transport, TransportOptions, options_from_env
from hub.config import Settings, env_number
from schemas.canonical import QUARANTINE_SCHEMA, documents
from schemas.contracts import wsdl_path

log = logging.getLogger(__name__)

SYSTEM = "vdxp"
NS = "urn:vn:gov:vdxp:edoc:1.0"
BINDING = f"{{{NS}}}EdocSoapBinding"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
MESSAGE_TYPES = ("edoc", "status")
MAX_PAGE = 100  # GetReceivedEdocList's Limit (the WSDL's LimitType)
SEEN_LIMIT = 5_000  # DocIds remembered in the cursor for deduplication (about 50 full pages)
RAW_LIMIT = 1 << 20  # characters of a refused package kept in the quarantine row
#: HTTP statuses by which a server says it did not carry the request out.
_REFUSING_STATUS = frozenset({429, 502, 503, 504})


class SendRefused(ConnectorError):
    """``SendEdoc`` answered ``FAIL``: the axis refused the package (``error_code``, ``error_desc``)."""

    def __init__(self, request_id: str, error_code: str, error_desc: str) -> None:
        super().__init__(SYSTEM, "SendEdoc", request_id, f"package refused: {error_code} {error_desc}",
                         code=error_code)
        self.error_code = error_code
        self.error_desc = error_desc


class SendOutcomeUnknown(ConnectorError):
    """A ``SendEdoc`` answer was lost after the request may have reached the axis.

    Sending again could deliver the document twice under a new DocId, so the connector does not;
    whoever sent it decides (the recipients can be asked, or the document sent again knowingly).
    """


@dataclass(frozen=True)
class Agency:
    """An agency of the axis directory; both code forms are kept, neither derived from the other."""

    id: str
    code: str  # Decision 20/2020 form
    code102: str  # QCVN 102 form
    name: str
    parent_code: str


@dataclass(frozen=True)
class Recipient:
    """Where a sent message stands at one recipient (``pending``, ``done`` or ``fail``)."""

    organ_id: str
    status: str
    updated: datetime | None


@dataclass(frozen=True)
class Knobstick:
    """One listed message (the axis's envelope of a package)."""

    doc_id: str
    message_type: str
    sender: str
    to: str
    created: datetime | None
    delivery_count: int


# -- the WSDL, once per process -------------------------------------------------------------------------

@cache
def _wsdl() -> Document:
    """The axis WSDL from the contracts shipped with the hub (never fetched from the server)."""
    settings = zeep.Settings(strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    return Document(str(wsdl_path("edoc")), zeep.Transport(), settings=settings)


# -- answers ------------------------------------------------------------------------------------------

_ANSWER_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
_HUGE_ANSWER_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)


def _child(element: etree._Element | None, name: str) -> etree._Element | None:
    if element is None:
        return None
    return next((c for c in element if isinstance(c.tag, str) and etree.QName(c).localname == name), None)


def _children(element: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in element if isinstance(c.tag, str) and etree.QName(c).localname == name]


def _text(element: etree._Element | None, name: str) -> str:
    node = _child(element, name)
    return (node.text or "").strip() if node is not None else ""


def _envelope(response: requests.Response, huge: bool) -> etree._Element:
    """The SOAP Body of an answer; a damaged answer is transient, a hostile one permanent."""
    body = response.content
    if b"<!DOCTYPE" in body[:4096].upper() or b"<!ENTITY" in body[:65536].upper():
        raise PermanentError("the answer declares a DTD; refused")
    try:
        root = etree.fromstring(body, _HUGE_ANSWER_PARSER if huge else _ANSWER_PARSER)
    except etree.XMLSyntaxError as exc:
        if response.status_code == 200 or response.status_code >= 500:
            raise MalformedResponse(f"HTTP {response.status_code}, answer is not well-formed XML: {exc}") from None
        raise PermanentError(f"HTTP {response.status_code}: {body[:200]!r}") from None
    soap_body = root.find(f"{{{SOAP_NS}}}Body") if root is not None else None
    if soap_body is None:
        raise MalformedResponse(f"HTTP {response.status_code}: the answer is not a SOAP envelope")
    return soap_body


def _raise_fault(fault: etree._Element, response: requests.Response) -> None:
    """Map a SOAP fault: 429/503 and Server faults retry (honouring RetryAfter), 100 is the
    credentials, anything else is the request's own fault."""
    loi = next(fault.iter(f"{{{NS}}}Loi", "{*}Loi"), None)
    code = _text(loi, "MaLoi")
    faultcode = _text(fault, "faultcode")
    message = f"fault {code or faultcode} {_text(loi, 'MoTaLoi')}: {_text(fault, 'faultstring')}".strip()
    retry_after = _seconds(_text(loi, "RetryAfter") or response.headers.get("Retry-After", ""))
    if code in ("429", "503"):
        raise TransientError(message, retry_after)
    if code == "100":
        raise AuthenticationFailed(message)
    if faultcode.rpartition(":")[2] == "Server":  # SOAP 1.1: the server failed; the same request may succeed
        raise TransientError(message, retry_after)
    raise PermanentError(message, code=code)


def _seconds(value: str) -> float | None:
    try:
        return float(value) if value.strip() else None
    except ValueError:
        return None


def _answer(response: requests.Response, operation: str, huge: bool = False) -> etree._Element:
    """The ``{operation}Response`` element of an answer, or the error it stands for."""
    soap_body = _envelope(response, huge)
    fault = _child(soap_body, "Fault")
    if fault is not None:
        _raise_fault(fault, response)
    answer = _child(soap_body, f"{operation}Response")
    if answer is None:
        raise MalformedResponse(f"HTTP {response.status_code}: no {operation}Response in the answer")
    return answer


def _moment(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def _knobstick(node: etree._Element) -> Knobstick:
    count = _text(node, "DeliveryCount")
    return Knobstick(_text(node, "DocId"), _text(node, "MessageType"), _text(node, "From"), _text(node, "To"),
                     _moment(_text(node, "CreatedTime")), int(count) if count.isdigit() else 1)


# -- attempts whose outcome is unknown ------------------------------------------------------------------

@dataclass
class _Attempts:
    """The attempts of one call, to tell whether a failed one may still have been carried out.

    An attempt is *refused* when the server said it did not do it (a SOAP fault, 429, 502–504); an
    attempt that got no answer, or an unreadable one, may have been done and its answer lost.
    """

    started: float | None = None
    refused: bool = False
    unknown: list[float] = field(default_factory=list)

    def begin(self) -> None:
        if self.started is not None and not self.refused:
            self.unknown.append(self.started)
        self.started, self.refused = time.time(), False


# -- the connector ------------------------------------------------------------------------------------

class DocumentExchangeConnector:
    """Receives documents and status packages from the axis into ``documents``; sends packages."""

    system = SYSTEM
    dataset = documents.DATASET
    schema = documents.SCHEMA
    key = documents.KEY
    version_column = documents.VERSION_COLUMN

    def __init__(self, base_url: str, system_id: str, secret: str, options: TransportOptions | None = None, *,
                 page_size: int = MAX_PAGE, visibility_timeout_s: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not 1 <= page_size <= MAX_PAGE:
            raise ValueError(f"page size must be 1..{MAX_PAGE}, got {page_size}")
        self.endpoint = f"{base_url.rstrip('/')}/edoc"
        self.system_id = system_id
        self.page_size = page_size
        self.visibility_timeout_s = visibility_timeout_s
        self.options = options or TransportOptions()
        self.transport = Transport(SYSTEM, self.options, sleep=sleep, base_url=base_url)
        self.transport.session.hooks["response"].append(self._note_response)
        self._sleep = sleep
        self._client = zeep.Client(wsdl=_wsdl(), wsse=UsernameToken(system_id, secret, use_digest=True))
        self._service = self._client.create_service(BINDING, self.endpoint)
        self._binding = self._client.wsdl.bindings[BINDING]
        self._attempts: _Attempts | None = None
        self._request_id = ""

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str]) -> "DocumentExchangeConnector":
        """From ``HUB_VDXP_URL/SYSTEM_ID/SECRET``, ``HUB_VDXP_PAGE_SIZE`` (≤ 100, default 100),
        ``HUB_VDXP_VISIBILITY_TIMEOUT`` (seconds, default 60) and the transport's ``HUB_VDXP_…`` knobs."""
        missing = [name for name, value in (("HUB_VDXP_URL", settings.vdxp_url),
                                            ("HUB_VDXP_SYSTEM_ID", settings.vdxp_system_id),
                                            ("HUB_VDXP_SECRET", settings.vdxp_secret)) if not value]
        if missing:
            raise ValueError(f"the document axis needs {', '.join(missing)}")
        return cls(settings.vdxp_url, settings.vdxp_system_id, settings.vdxp_secret.reveal(),
                   options_from_env(SYSTEM, environ),
                   page_size=env_number(environ, "HUB_VDXP_PAGE_SIZE", MAX_PAGE, kind=int, low=1, high=MAX_PAGE),
                   visibility_timeout_s=env_number(environ, "HUB_VDXP_VISIBILITY_TIMEOUT", 60.0, low=0, high=3600))

    # -- one SOAP call ---------------------------------------------------------------------------------
    def _note_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if self._attempts is not None and response.status_code in _REFUSING_STATUS:
            self._attempts.refused = True

    def _call(self, operation: str, values: Mapping[str, Any], parse: Callable[[etree._Element], Any], *,
              huge: bool = False, attempts: _Attempts | None = None,
              transport: Transport | None = None) -> Any:
        """Run ``operation`` through the transport: a fresh envelope (and nonce) per attempt."""
        action = self._binding.get(operation).soapaction
        self._attempts = attempts

        def build(request_id: str) -> HttpRequest:
            if attempts is not None:
                attempts.begin()
                if operation == "SendEdoc" and attempts.unknown:
                    raise SendOutcomeUnknown(SYSTEM, operation, self._request_id,
                                             "the answer was lost after the package may have reached the axis; "
                                             "not sending it again (it could arrive twice)")
            self._request_id = request_id
            envelope = self._client.create_message(self._service, operation, **values)
            return HttpRequest("POST", self.endpoint, data=etree.tostring(envelope, encoding="utf-8"),
                               headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{action}"'})

        def read(response: requests.Response) -> Any:
            try:
                return parse(_answer(response, operation, huge))
            except (TransientError, AuthenticationFailed, PermanentError) as exc:
                if attempts is not None and not isinstance(exc, MalformedResponse):
                    attempts.refused = True  # the server answered, and said it did not do it
                raise

        try:
            return (transport or self.transport).call(operation, build, read)
        finally:
            self._attempts = None

    # -- directory, check ------------------------------------------------------------------------------
    def agencies(self, transport: Transport | None = None) -> list[Agency]:
        """The axis directory (``GetAgencies``)."""
        def parse(answer: etree._Element) -> list[Agency]:
            return [Agency(_text(a, "Id"), _text(a, "Code"), _text(a, "Code102"), _text(a, "Name"),
                           _text(a, "ParentCode")) for a in _children(answer, "Agency")]
        return self._call("GetAgencies", {}, parse, transport=transport)

    def check(self) -> CheckResult:
        """One line: whether the axis answers and accepts the hub's systemId and secret."""
        quick = Transport(SYSTEM, replace(self.options, max_attempts=min(self.options.max_attempts, 3)),
                          base_url=self.endpoint)
        try:
            found = self.agencies(quick)
        except ConnectorError as exc:
            return CheckResult(False, str(exc))
        return CheckResult(True, f"{self.endpoint} accepted system {self.system_id} (WS-Security); "
                                 f"{len(found):,} agencies in the directory")

    # -- sending ---------------------------------------------------------------------------------------
    def send(self, package: bytes, message_type: str = "edoc") -> str:
        """Send an edXML package; its DocId on the axis. :class:`SendRefused` when the axis says FAIL,
        :class:`SendOutcomeUnknown` when an answer was lost and a retry could deliver it twice."""
        if message_type not in MESSAGE_TYPES:
            raise ValueError(f"message type must be edoc or status, got {message_type!r}")

        def parse(answer: etree._Element) -> tuple[str, str, str, str]:
            return (_text(answer, "Status"), _text(answer, "ErrorCode"), _text(answer, "ErrorDesc"),
                    _text(answer, "DocId"))

        status, code, description, doc_id = self._call("SendEdoc", {"MessageType": message_type, "Edxml": package},
                                                       parse, attempts=_Attempts())
        if status != "OK":
            raise SendRefused(self._request_id, code, description)
        if not doc_id:
            raise ConnectorError(SYSTEM, "SendEdoc", self._request_id, "answered OK without a DocId")
        return doc_id

    def sent_status(self, doc_id: str) -> list[Recipient]:
        """Where a sent message stands at each recipient (``GetSentEdocList``)."""
        def parse(answer: etree._Element) -> list[Recipient]:
            return [Recipient(_text(r, "OrganId"), _text(r, "Status"), _moment(_text(r, "UpdatedTime")))
                    for r in _children(answer, "Recipient")]
        return self._call("GetSentEdocList", {"DocId": doc_id}, parse)

    def acknowledge(self, doc_id: str, ok: bool) -> None:
        """Settle a received message: ``done`` (stored) or ``fail`` (refused for good)."""
        def parse(answer: etree._Element) -> str:
            return _text(answer, "Status")

        status = self._call("UpdateStatus", {"DocId": doc_id, "Status": "done" if ok else "fail"}, parse)
        if status != "OK":
            raise ConnectorError(SYSTEM, "UpdateStatus", self._request_id,
                                 f"answered {status or 'nothing'} for {doc_id}")

    # -- receiving -------------------------------------------------------------------------------------
    def list_received(self, message_type: str, limit: int | None = None) -> tuple[list[Knobstick], float]:
        """Unsettled messages of a type, and the latest moment a lost listing may have hidden others
        (0 when every attempt was answered)."""
        attempts = _Attempts()
        found = self._call("GetReceivedEdocList", {"MessageType": message_type, "Limit": limit or self.page_size},
                           lambda answer: [_knobstick(k) for k in _children(answer, "Knobstick")], attempts=attempts)
        return found, max(attempts.unknown, default=0.0)

    def fetch(self, doc_id: str) -> tuple[str, bytes | None, str]:
        """(message type, package, problem) of one message; the package is None when the axis sent
        something that is not base64 (a problem of the package, not of the transport)."""
        def parse(answer: etree._Element) -> tuple[str, bytes | None, str]:
            if _text(answer, "DocId") != doc_id:
                raise MalformedResponse(f"GetEdoc answered DocId {_text(answer, 'DocId')!r} for {doc_id!r}")
            encoded = _text(answer, "Edxml")
            try:
                return _text(answer, "MessageType"), base64.b64decode("".join(encoded.split()), validate=True), ""
            except (binascii.Error, ValueError):
                return _text(answer, "MessageType"), encoded[:RAW_LIMIT].encode(), "Edxml is not valid base64"
        return self._call("GetEdoc", {"DocId": doc_id}, parse, huge=True)

    def read(self, cursor: dict[str, Any] | None) -> Iterator[Batch]:
        """Drain the queue, one batch per listed page; each batch settles its messages once committed."""
        state = _ReadState.load(cursor)
        started = time.time()
        hidden_until = started + self.visibility_timeout_s if state.draining else 0.0
        self._settle(state.settle)  # the previous run may have been killed between its commit and settling
        state.settle, state.draining = {}, True
        yield Batch(self.schema.empty_table(), state.cursor())  # commits "a run is under way"
        page = 0
        while True:
            listed = False
            for message_type in MESSAGE_TYPES:
                knobsticks, lost_at = self.list_received(message_type)
                if lost_at:
                    hidden_until = max(hidden_until, lost_at + self.visibility_timeout_s)
                if knobsticks:
                    listed, page = True, page + 1
                    yield self._page(message_type, knobsticks, page, state)
            if listed:
                continue
            wait = hidden_until - time.time()
            if wait <= 0:
                break
            log.info("vdxp: queue looks empty; waiting %.1f s for messages a lost or interrupted listing hid", wait)
            self._sleep(wait)
            hidden_until = 0.0
        state.draining = False
        yield Batch(self.schema.empty_table(), state.cursor())

    def _settle(self, outcomes: Mapping[str, str]) -> None:
        """Settle committed messages; one the axis no longer has (201) needs no settling."""
        for doc_id, outcome in outcomes.items():
            try:
                self.acknowledge(doc_id, outcome == "done")
            except ConnectorError as exc:
                if exc.code != "201":
                    raise
                log.info("vdxp: %s is no longer on the axis; nothing to settle", doc_id)

    def _page(self, message_type: str, knobsticks: list[Knobstick], page: int, state: "_ReadState") -> Batch:
        """Fetch and map one listed page; the batch settles every listed message after its commit."""
        rows, refused = _Rows(), _Refused()
        outcomes: dict[str, str] = {}
        unique: dict[str, Knobstick] = {}
        for knob in knobsticks:
            unique.setdefault(knob.doc_id, knob)  # listed twice in one answer: handled once
        for position, knob in enumerate(unique.values(), start=1):
            if knob.doc_id in state.seen:  # committed before: settle again, no new row
                outcomes[knob.doc_id] = state.seen[knob.doc_id]
                continue
            where = f"{message_type} page {page}, message {position}"
            try:
                kind, package, problem = self.fetch(knob.doc_id)
            except ConnectorError as exc:
                if exc.code != "201":
                    raise
                kind, package, problem = message_type, b"", f"listed, but GetEdoc does not serve it: {exc}"
            reason = problem or rows.add(knob, kind or message_type, package or b"", self._request_id)
            if reason:
                refused.add(knob.doc_id, where, reason, package or b"", self._request_id)
            outcomes[knob.doc_id] = "fail" if reason else "done"
        state.remember(outcomes)
        return Batch(rows.table(), state.cursor(), refused.table(), after_commit=lambda: self._settle(outcomes),
                     progress=len(unique))


# -- cursor ---------------------------------------------------------------------------------------------

@dataclass
class _ReadState:
    """What the cursor carries between batches and runs (see the module docstring)."""

    settle: dict[str, str] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)
    draining: bool = False

    @classmethod
    def load(cls, cursor: Mapping[str, Any] | None) -> "_ReadState":
        cursor = cursor or {}
        return cls(dict(cursor.get("settle", {})), dict(cursor.get("seen", {})), bool(cursor.get("draining")))

    def remember(self, outcomes: Mapping[str, str]) -> None:
        self.settle = dict(outcomes)
        for doc_id, outcome in outcomes.items():
            self.seen.pop(doc_id, None)
            self.seen[doc_id] = outcome
        while len(self.seen) > SEEN_LIMIT:
            del self.seen[next(iter(self.seen))]

    def cursor(self) -> dict[str, Any]:
        return {"version": 1, "settle": dict(self.settle), "seen": dict(self.seen), "draining": self.draining}


# -- mapping to columns ---------------------------------------------------------------------------------

def _problems(package: edxml.Package, message_type: str) -> list[str]:
    """Why a parsed package cannot be stored as a ``message_type`` message (the axis's own rules, §4)."""
    if package.kind != message_type:
        return [f"the axis lists it as {message_type} but the package is a {package.kind} package"]
    problems = list(package.attachment_errors)
    if message_type == "status":
        if not any(r.document_id for r in package.response_for):
            problems.append("ResponseFor/DocumentId is missing")
        return problems
    if not package.recipients or not all(r.organ_id for r in package.recipients):
        problems.append("To/OrganId is missing")
    for name, value in (("Code/CodeNumber", package.code_number), ("Code/CodeNotation", package.code_notation),
                        ("Subject", package.subject)):
        if not value:
            problems.append(f"{name} is missing")
    return problems


def _verdict(package: bytes) -> str:
    try:
        return edxml.verify(package).status
    except edxml.EdxmlError:
        return edxml.INVALID


def _business_reference(package: edxml.Package) -> str | None:
    business = package.business
    if business is None or business.doc_type == 0:
        return None
    if business.document_id:
        return business.document_id
    return next((r.document_id for r in business.replacements if r.document_id), None)


class _Rows:
    """The columns of one batch, filled message by message."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {f.name: [] for f in documents.SCHEMA}

    def add(self, knob: Knobstick, message_type: str, data: bytes, request_id: str) -> str:
        """Append the message; '' when stored, else the reason it cannot be."""
        try:
            package = edxml.parse(data)
        except edxml.EdxmlError as exc:
            return f"package refused: {exc}"
        problems = _problems(package, message_type)
        if problems:
            return "package refused: " + "; ".join(problems)
        for name, value in self._values(knob, message_type, package, data, request_id).items():
            self.columns[name].append(value)
        return ""

    @staticmethod
    def _values(knob: Knobstick, message_type: str, p: edxml.Package, data: bytes, request_id: str) -> dict:
        is_status = message_type == "status"
        return {
            "doc_id": knob.doc_id, "message_type": message_type, "from_organ_id": p.sender.organ_id,
            "to_organ_ids": [r.organ_id for r in p.response_for] if is_status else [r.organ_id for r in p.recipients],
            "edxml_document_id": p.document_id or None,
            "business_type": p.business.doc_type if p.business else None,
            "business_reference_doc_id": _business_reference(p), "subject": p.subject or None,
            "code_number": p.code_number or None, "code_notation": p.code_notation or None,
            "promulgation_date": p.promulgation_date, "due_date": p.due_date,
            "document_type": p.document_type_name or _codes(p.document_type, p.document_type_detail),
            "status_code": p.status.code if p.status else None,
            "response_for_doc_id": next((r.document_id for r in p.response_for if r.document_id), None),
            "attachments": [{"name": a.name, "mime": a.mime, "size": a.size, "zipped": a.zipped, "sha256": a.sha256}
                            for a in p.attachments],
            "signature_verdict": _verdict(data), "received_at": knob.created, "delivery_count": knob.delivery_count,
            "edxml": data, "source_system": SYSTEM, "request_id": request_id,
            "fetched_at": datetime.now(timezone.utc), "payload_sha256": hashlib.sha256(data).hexdigest(),
        }

    def table(self) -> pa.Table:
        return pa.table({f.name: pa.array(self.columns[f.name], f.type) for f in documents.SCHEMA},
                        schema=documents.SCHEMA)


def _codes(kind: str, detail: str) -> str | None:
    return f"{kind}/{detail}" if kind or detail else None


class _Refused:
    """The quarantine rows of one batch."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, doc_id: str, where: str, reason: str, data: bytes, request_id: str) -> None:
        self.rows.append({"source_system": SYSTEM, "dataset": "documents", "operation": "GetEdoc",
                          "request_id": request_id, "position": where, "record_key": doc_id, "reason": reason,
                          "raw": data[:RAW_LIMIT].decode("utf-8", "replace"),
                          "fetched_at": datetime.now(timezone.utc)})

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=QUARANTINE_SCHEMA)

