"""The national document-exchange axis (``national-systems.md`` §4) over SOAP, with edXML packages.

The axis is a store of messages and, per receiving system (the UsernameToken's systemId), a queue:
a message addressed to any agency the system speaks for is listed by ``GetReceivedEdocList`` until
the system settles it with ``UpdateStatus``. Delivery is at-least-once: a listed message turns
invisible for the visibility timeout and is listed again, with ``DeliveryCount`` + 1, unless it was
settled meanwhile; the ``duplicate_record`` fault lists one message twice in an answer.

Traffic comes from :mod:`sandbox.edxml_traffic` (documents and status packages sent to the province,
in the ground truth). A revoke of a document *revoked after delivery* reaches the receiver only once
it has settled the original. ``SendEdoc`` checks a package as §4 says and routes it: recipients that
a registered system speaks for find it in their queue (the province's own agencies land in the
caller's own queue) and report what that system settled; outside recipients settle by themselves
after ``recipient_delay_s``, a seeded few of them with ``fail``.

Times: the visibility timeout and the recipients' delay run on the injectable ``clock`` (monotonic
seconds) so tests advance time instead of sleeping; wire times (``CreatedTime``, ``UpdatedTime``)
of live events are that clock mapped onto the sandbox calendar, never earlier than ``as_of``.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable
from xml.sax.saxutils import escape

from lxml import etree
from starlette.routing import Route

from sandbox.agencies import Agency, agencies
from sandbox.auth import Client
from sandbox.edxml_traffic import DEFAULT_ATTACHMENT_SIZE, EdxmlTraffic, TrafficMessage, generate_traffic
from sandbox.ground_truth import GroundTruth
from sandbox.province import VN_TZ, Residents
from sandbox.service import ServiceError, SystemRuntime
from sandbox.soap import Call, SoapEndpoint

NS = "urn:vn:gov:vdxp:edoc:1.0"
SEND_BODY_LIMIT = 64 << 20  # a package with attachments travels inside SendEdoc
BODY_LIMIT = 1 << 20  # every other request is a few hundred bytes
STATUS_CODES = frozenset({"01", "02", "03", "04", "05", "06", "13", "15", "16"})
_PACKAGE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.I)


class PackageRefused(Exception):
    """``SendEdoc`` refuses the package: answered ``Status FAIL`` with this code and reason."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


@dataclass
class Message:
    """One message on the axis: who sent it, to whom, and (for live sends) its package."""

    doc_id: str
    message_type: str
    sender: str  # From/OrganId as in the package
    recipients: tuple[str, ...]  # every To/OrganId (status: ResponseFor/OrganId), as in the package
    created: float  # epoch seconds it reached the axis
    payload: bytes | None = None  # None: generated traffic, rendered on demand
    after: str = ""  # DocId the receiver must settle before this message reaches it
    sent_by: str = ""  # systemId of a live sender
    sent_at: float = 0.0  # service clock when sent
    outside_fails: dict[str, bool] = field(default_factory=dict)  # outside recipient -> will refuse


@dataclass
class Delivery:
    """One receiving system's view of one message."""

    count: int = 0
    visible_at: float = float("-inf")  # service clock
    settled: str = ""  # "", "done" or "fail"
    settled_time: float = 0.0  # epoch seconds


class DocumentAxisService:
    """The six operations of §4 over a thread-safe in-memory axis."""

    def __init__(self, residents: Residents, runtime: SystemRuntime, truth: GroundTruth, seed: int = 0, *,
                 visibility_timeout_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 recipient_delay_s: float = 2.0, recipient_fail_rate: float = 0.05,
                 attachment_size: int = DEFAULT_ATTACHMENT_SIZE) -> None:
        self.runtime = runtime
        self.visibility_timeout_s = visibility_timeout_s
        self.recipient_delay_s = recipient_delay_s
        self.recipient_fail_rate = recipient_fail_rate
        self.clock = clock  # tests may swap in a fake clock that never runs behind this one
        self._clock0 = clock()
        self._epoch0 = max(time.time(), float(residents.as_of))
        self._lock = threading.Lock()
        self._rng = random.Random(f"{seed}:vdxp-recipients")
        self._agencies: dict[str, Agency] = {c: a for a in agencies() for c in (a.code, a.code102)}
        self._messages: dict[str, Message] = {}
        self._order: list[str] = []
        self._deliveries: dict[tuple[str, str], Delivery] = {}
        self._start: dict[str, int] = {}  # per receiver: messages before this index are finished
        self.traffic: EdxmlTraffic = generate_traffic(residents, seed, attachment_size)
        self.traffic.record_truth(truth)
        for generated in self.traffic.messages:
            self._append(_from_traffic(generated))
        operations = {"GetAgencies": self.get_agencies, "SendEdoc": self.send_edoc,
                      "GetReceivedEdocList": self.get_received_edoc_list, "GetEdoc": self.get_edoc,
                      "UpdateStatus": self.update_status, "GetSentEdocList": self.get_sent_edoc_list}
        self.endpoint = SoapEndpoint(runtime, namespace=NS, wsdl="edoc", operations=operations, body_limit=BODY_LIMIT,
                                     large_bodies={"SendEdoc": SEND_BODY_LIMIT})

    # -- HTTP ---------------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [self.endpoint.route("/edoc")]

    # -- state helpers (call with the lock held) ----------------------------------------------------
    def _append(self, message: Message) -> None:
        self._messages[message.doc_id] = message
        self._order.append(message.doc_id)

    def now(self) -> float:
        """The sandbox calendar now: the service clock mapped onto epoch seconds, never before ``as_of``."""
        return self._epoch0 + (self.clock() - self._clock0)

    def _delivery(self, receiver: str, doc_id: str) -> Delivery:
        return self._deliveries.setdefault((receiver, doc_id), Delivery())

    def _settled(self, receiver: str, doc_id: str) -> bool:
        delivery = self._deliveries.get((receiver, doc_id))
        return delivery is not None and bool(delivery.settled)

    @staticmethod
    def _addressed(client: Client, message: Message) -> bool:
        return any(r in client.agencies for r in message.recipients)

    def _reached(self, client: Client, message: Message) -> bool:
        """Addressed to ``client`` and arrived (a late revoke arrives once its original is settled)."""
        return self._addressed(client, message) and (not message.after or self._settled(client.name, message.after))

    def _message_for(self, client: Client, doc_id: str) -> Message:
        message = self._messages.get(doc_id)
        if message is None or not self._reached(client, message):
            raise ServiceError(201, f"no message {doc_id!r} for this system")
        return message

    def _listable(self, client: Client, message_type: str, now: float, limit: int) -> list[Message]:
        """Up to ``limit`` unsettled, visible, arrived messages of the type, in arrival order."""
        found: list[Message] = []
        start = self._start.get(client.name, 0)
        for i in range(start, len(self._order)):
            message = self._messages[self._order[i]]
            finished = self._settled(client.name, message.doc_id) or not self._addressed(client, message)
            if finished and i == start:
                start += 1
                continue
            delivery = self._deliveries.get((client.name, message.doc_id))
            if (finished or message.message_type != message_type or not self._reached(client, message)
                    or (delivery is not None and delivery.visible_at > now)):
                continue
            found.append(message)
            if len(found) >= limit:
                break
        self._start[client.name] = start
        return found

    # -- operations ---------------------------------------------------------------------------------
    def get_agencies(self, call: Call) -> str:
        rows = []
        for a in agencies():
            parent = _el("ParentCode", a.parent_code) if a.parent_code else ""
            rows.append(f"<edoc:Agency>{_el('Id', a.id)}{_el('Code', a.code)}{_el('Code102', a.code102)}"
                        f"{_el('Name', a.name)}{parent}</edoc:Agency>")
        return _wrap("GetAgenciesResponse", "".join(rows))

    def get_received_edoc_list(self, call: Call) -> str:
        """Unsettled messages for the caller; each listed one hides for the visibility timeout."""
        limit = int(call.text("Limit"))
        duplicate = call.decision.has("duplicate_record") and limit > 1
        with self._lock:
            now = self.clock()
            picked = self._listable(call.client, call.text("MessageType"), now, limit - 1 if duplicate else limit)
            rows = []
            for message in picked:
                delivery = self._delivery(call.client.name, message.doc_id)
                delivery.count += 1
                delivery.visible_at = now + self.visibility_timeout_s
                rows.append(self._knobstick(call.client, message, delivery.count))
        if duplicate and rows:
            rows.append(rows[0])  # at-least-once: the same message twice in one answer
        return _wrap("GetReceivedEdocListResponse", "".join(rows))

    @staticmethod
    def _knobstick(client: Client, message: Message, count: int) -> str:
        to = ",".join(r for r in message.recipients if r in client.agencies)
        return (f"<edoc:Knobstick>{_el('DocId', message.doc_id)}{_el('MessageType', message.message_type)}"
                f"{_el('From', message.sender)}{_el('To', to)}{_el('CreatedTime', _datetime(message.created))}"
                f"{_el('DeliveryCount', count)}</edoc:Knobstick>")

    def get_edoc(self, call: Call) -> str:
        doc_id = call.text("DocId")
        with self._lock:
            message = self._message_for(call.client, doc_id)
        package = message.payload if message.payload is not None else self.package(doc_id)
        return _wrap("GetEdocResponse", _el("DocId", doc_id) + _el("MessageType", message.message_type)
                     + _el("Edxml", base64.b64encode(package).decode()))

    def package(self, doc_id: str) -> bytes:
        """The edXML package of a generated message (rendered afresh; identical every time)."""
        message = self._messages[doc_id]
        if message.payload is not None:
            return message.payload
        return self.traffic.render(self.traffic.by_doc_id[doc_id])

    def update_status(self, call: Call) -> str:
        """Settle a message for the caller; settling again is a no-op (the first outcome stays)."""
        doc_id, status = call.text("DocId"), call.text("Status")
        with self._lock:
            self._message_for(call.client, doc_id)
            delivery = self._delivery(call.client.name, doc_id)
            if not delivery.settled:
                delivery.settled, delivery.settled_time = status, self.now()
        return _wrap("UpdateStatusResponse", _el("Status", "OK"))

    def send_edoc(self, call: Call) -> str:
        message_type = call.text("MessageType")
        try:
            package = _decode(call.text("Edxml"))
            sender, recipients = self._check(call.client, message_type, _parse_package(package))
        except PackageRefused as refused:
            return _wrap("SendEdocResponse", _el("Status", "FAIL") + _el("ErrorCode", refused.code)
                         + _el("ErrorDesc", refused.description))
        with self._lock:
            message = Message(str(uuid.uuid4()), message_type, sender, recipients, self.now(), package,
                              sent_by=call.client.name, sent_at=self.clock())
            for organ in recipients:
                if self._receiver_of(organ) is None:
                    message.outside_fails[organ] = self._rng.random() < self.recipient_fail_rate
            self._append(message)
        return _wrap("SendEdocResponse", _el("Status", "OK") + _el("DocId", message.doc_id))

    def get_sent_edoc_list(self, call: Call) -> str:
        doc_id = call.text("DocId")
        with self._lock:
            message = self._messages.get(doc_id)
            if message is None or message.sent_by != call.client.name:
                raise ServiceError(201, f"no message {doc_id!r} sent by this system")
            rows = []
            for organ in message.recipients:
                status, moment = self._recipient_state(message, organ)
                rows.append(f"<edoc:Recipient>{_el('OrganId', organ)}{_el('Status', status)}"
                            f"{_el('UpdatedTime', _datetime(moment))}</edoc:Recipient>")
        return _wrap("GetSentEdocListResponse", "".join(rows))

    # -- sending ------------------------------------------------------------------------------------
    def _receiver_of(self, organ: str) -> str | None:
        """The registered system that speaks for ``organ`` (it settles for itself), if any."""
        return next((name for name, c in self.runtime.clients.items() if organ in c.agencies), None)

    def _recipient_state(self, message: Message, organ: str) -> tuple[str, float]:
        receiver = self._receiver_of(organ)
        if receiver is not None:
            delivery = self._deliveries.get((receiver, message.doc_id))
            if delivery is not None and delivery.settled:
                return delivery.settled, delivery.settled_time
            return "pending", message.created
        if self.clock() - message.sent_at >= self.recipient_delay_s:
            return ("fail" if message.outside_fails[organ] else "done"), message.created + self.recipient_delay_s
        return "pending", message.created

    def _check(self, client: Client, message_type: str, root: etree._Element) -> tuple[str, tuple[str, ...]]:
        """(From/OrganId, recipients) of a package the axis accepts; ``PackageRefused`` otherwise."""
        if etree.QName(root).localname != "edXML":
            raise PackageRefused(500, f"root element is {etree.QName(root).localname!r}, expected edXML")
        header = next(root.iter("{*}MessageHeader"), None)
        if header is None:
            raise PackageRefused(200, "edXMLEnvelope/edXMLHeader/MessageHeader is missing")
        sender = _required(header, "From", "OrganId")
        if message_type == "status":
            recipients = (_required(header, "ResponseFor", "OrganId"),)
            _required(header, "ResponseFor", "DocumentId")
            code = _required(header, "StatusCode")
            if code not in STATUS_CODES:
                known = ", ".join(sorted(STATUS_CODES))
                raise PackageRefused(302, f"StatusCode {code!r} is not a QCVN 102 status code ({known})")
        else:
            recipients = self._edoc_recipients(header)
        if sender not in client.agencies:
            raise PackageRefused(106, f"From/OrganId {sender!r} is not an agency this system speaks for")
        for organ in recipients:
            if organ not in self._agencies:
                where = "ResponseFor/OrganId" if message_type == "status" else "To/OrganId"
                raise PackageRefused(106, f"{where} {organ!r} is not an agency known to the axis")
        return sender, recipients

    @staticmethod
    def _edoc_recipients(header: etree._Element) -> tuple[str, ...]:
        tos = _children(header, "To")
        if not tos:
            raise PackageRefused(200, "To is missing: a document needs at least one recipient")
        recipients = tuple(dict.fromkeys(_text(to, "OrganId") for to in tos))
        if "" in recipients:
            raise PackageRefused(200, "To/OrganId is missing or empty")
        _required(header, "Code", "CodeNumber")
        _required(header, "Code", "CodeNotation")
        _required(header, "Subject")
        return recipients


def _from_traffic(m: TrafficMessage) -> Message:
    return Message(m.doc_id, m.message_type, m.from_id, tuple(a.code102 for a in m.to), float(m.created),
                   after=m.hold_until_settled)


# -- edXML, parsed tolerantly -------------------------------------------------------------------------

def _decode(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise PackageRefused(302, "Edxml is not valid base64") from None


def _parse_package(data: bytes) -> etree._Element:
    """Parse an untrusted package: no DTD, no entities, no network (billion laughs is refused)."""
    if _DTD.search(data):
        raise PackageRefused(500, "package refused: DTDs and entity declarations are not accepted")
    try:
        root = etree.fromstring(data, _PACKAGE_PARSER)
    except etree.XMLSyntaxError as exc:
        raise PackageRefused(500, f"package is not well-formed XML: {exc}") from None
    if root is None or root.getroottree().docinfo.internalDTD is not None:
        raise PackageRefused(500, "package refused: empty, or carries a DTD")
    return root


def _children(element: etree._Element, name: str) -> list[etree._Element]:
    """Children by local name, whatever the prefix or namespace (producers differ)."""
    return [c for c in element if isinstance(c.tag, str) and etree.QName(c).localname == name]


def _text(element: etree._Element, name: str) -> str:
    found = _children(element, name)
    return (found[0].text or "").strip() if found else ""


def _required(header: etree._Element, name: str, child: str = "") -> str:
    """The text of ``name`` (or ``name/child``) in the header; ``PackageRefused`` 200 when empty."""
    found = _children(header, name)
    if not found:
        raise PackageRefused(200, f"{name} is missing")
    value = _text(found[0], child) if child else (found[0].text or "").strip()
    if not value:
        raise PackageRefused(200, f"{name}/{child} is missing or empty" if child else f"{name} is empty")
    return value


# -- SOAP answers -------------------------------------------------------------------------------------

def _el(name: str, value: object) -> str:
    return f"<edoc:{name}>{escape(str(value))}</edoc:{name}>"


def _wrap(name: str, inner: str) -> str:
    return f'<edoc:{name} xmlns:edoc="{NS}">{inner}</edoc:{name}>'


def _datetime(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), VN_TZ).isoformat()
