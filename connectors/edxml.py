"""edXML packages (QCVN 102:2016/BTTTT): tolerant reading, building, XML-DSig signing and checking.

Producers on the axis disagree about almost everything but the element names (national-systems.md
§4, vn-egov-standards.md §1): the ``edXML:`` prefix may be there, absent or another one; the order of
``MessageHeader`` children varies; ``Bussiness`` is spelled with a double "s" (the single-s spelling
is accepted too); ``Signature`` sits in the XML-DSig or the edXML namespace; attachments travel as
raw base64 with their real MIME type or as a zip in base64. So elements are found by local name,
never by position or prefix, and everything a package says is returned as a typed :class:`Package`.

Packages are untrusted input: a DTD or an entity declaration is refused outright (billion laughs,
XXE), the parser never loads anything from the network or the disk, and a zipped attachment is
unpacked only up to a size bound (zip bombs).

What the hub sends is built in the layout of the VNPT/VPCP SDK sample
(``samples/edxml_new_document_sample.edxml``): every envelope element with the explicit ``edXML:``
prefix (the VPCP side has refused unprefixed ones), ``AttachmentEncoded`` unprefixed. It is signed
with an enveloped XML-DSig, RSA-SHA256; legacy RSA-SHA1 signatures are reported, not trusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import mimetypes
import re
import zipfile
from dataclasses import dataclass
from datetime import date, datetime
from typing import Sequence
from xml.sax.saxutils import escape

from cryptography import x509
from lxml import etree

from schemas.timefmt import VN_TZ

EDXML_NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
ZIP_MIME = "application/zip"
BUSINESS_TYPES = {0: "new", 1: "revoke", 2: "update", 3: "replace"}
BUSINESS_REASONS = {0: "Văn bản điện tử mới", 1: "Thu hồi văn bản điện tử", 2: "Cập nhật văn bản điện tử",
                    3: "Văn bản thay thế"}
STATUS_CODES = {"01": "arrived", "02": "refused", "03": "accepted", "04": "assigned", "05": "processing",
                "06": "finished", "13": "recall", "15": "recall/update accepted", "16": "recall/update refused"}
#: Unzipped attachments larger than this are refused (a zip bomb, not a government document).
MAX_UNZIPPED = 512 << 20

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                          huge_tree=True, remove_comments=False)
_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_DAY_FORMATS = ("%Y/%m/%d", "%Y-%m-%d", "%d/%m/%Y")
_MOMENT_FORMATS = ("%Y/%m/%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M:%S")


class EdxmlError(ValueError):
    """The package cannot be accepted; the message says why in words an operator can act on."""


class UnsafeXml(EdxmlError):
    """The package declares a DTD or entities: refused before any expansion can happen."""


# -- the typed package ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Organ:
    """A sending or receiving agency (``From``, ``To``)."""

    organ_id: str
    name: str = ""
    organization_in_charge: str = ""
    address: str = ""
    email: str = ""
    telephone: str = ""
    fax: str = ""
    website: str = ""


@dataclass(frozen=True)
class DocumentRef:
    """A document another package points at (``ResponseFor``)."""

    organ_id: str
    code: str  # "number/notation"
    promulgation_date: date | None
    document_id: str


@dataclass(frozen=True)
class Staff:
    department: str = ""
    staff: str = ""
    mobile: str = ""
    email: str = ""


@dataclass(frozen=True)
class Receiver:
    """A recipient change of an update: ``receiver_type`` 1 added, 0 removed."""

    organ_id: str
    receiver_type: int


@dataclass(frozen=True)
class Replacement:
    """What a replacing document replaces, and for whom."""

    document_id: str
    organ_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Business:
    """``TraceHeaderList/Bussiness``: what this document does to an earlier one (0 new … 3 replace)."""

    doc_type: int
    reason: str = ""
    document_id: str = ""  # the revoked / updated / replaced document
    document_info_changed: bool = False  # update: the metadata changed
    receivers_changed: bool = False  # update: the recipient list changed
    receivers: tuple[Receiver, ...] = ()
    replacements: tuple[Replacement, ...] = ()
    staff: Staff | None = None
    paper: str = ""

    @property
    def name(self) -> str:
        return BUSINESS_TYPES[self.doc_type]


@dataclass(frozen=True)
class Trace:
    organ_id: str
    timestamp: datetime | None


@dataclass(frozen=True)
class Attachment:
    """One attached file, decoded. ``zipped``: it travelled as a zip in base64 and ``data`` is unzipped.

    ``error`` is set (and ``data`` is None) when the content cannot be decoded: the package still
    parses, so an operator can see what arrived, but the hub does not store it as a document.
    """

    name: str
    mime: str
    data: bytes | None
    zipped: bool = False
    description: str = ""
    content_id: str = ""
    error: str = ""

    @property
    def content_type(self) -> str:
        return ZIP_MIME if self.zipped else self.mime

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else 0

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest() if self.data is not None else ""


@dataclass(frozen=True)
class Status:
    """The status-package fields (§1.6): the answer of a recipient to a document it received."""

    code: str
    description: str = ""
    timestamp: datetime | None = None
    staff: Staff | None = None


@dataclass(frozen=True)
class Package:
    """Everything an edXML package says; ``kind`` is ``edoc`` (a document) or ``status``."""

    kind: str
    sender: Organ
    recipients: tuple[Organ, ...] = ()
    document_id: str = ""
    code_number: str = ""
    code_notation: str = ""
    place: str = ""
    promulgation_date: date | None = None
    document_type: str = ""  # Type
    document_type_detail: str = ""  # TypeDetail
    document_type_name: str = ""  # TypeName
    subject: str = ""
    content: str = ""
    signer_competence: str = ""
    signer_position: str = ""
    signer_name: str = ""
    due_date: date | None = None
    to_places: tuple[str, ...] = ()
    priority: int | None = None
    steering_type: int | None = None
    response_for: tuple[DocumentRef, ...] = ()
    traces: tuple[Trace, ...] = ()
    business: Business | None = None
    status: Status | None = None
    attachments: tuple[Attachment, ...] = ()
    signed: bool = False  # a Signature element is present (see :func:`verify` for whether it holds)

    @property
    def attachment_errors(self) -> list[str]:
        return [f"attachment {a.name!r}: {a.error}" for a in self.attachments if a.error]


# -- safe parsing -------------------------------------------------------------------------------------

def parse_xml(data: bytes) -> etree._Element:
    """Parse untrusted XML: no DTD, no entity, no network, large text nodes allowed (attachments)."""
    if _DTD.search(data):
        raise UnsafeXml("DTDs and entity declarations are refused (entity expansion / external entities)")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise EdxmlError(f"not well-formed XML: {exc}") from None
    if root is None:
        raise EdxmlError("empty document")
    info = root.getroottree().docinfo
    if info.internalDTD is not None or info.externalDTD is not None or info.doctype:
        raise UnsafeXml("DTDs are refused")
    return root


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _kids(element: etree._Element | None, *names: str) -> list[etree._Element]:
    """Children by local name, whatever their prefix or namespace."""
    if element is None:
        return []
    return [c for c in element if isinstance(c.tag, str) and _local(c) in names]


def _kid(element: etree._Element | None, *names: str) -> etree._Element | None:
    found = _kids(element, *names)
    return found[0] if found else None


def _text(element: etree._Element | None, *names: str) -> str:
    node = _kid(element, *names) if names else element
    return (node.text or "").strip() if node is not None else ""


def _find(root: etree._Element, name: str) -> etree._Element | None:
    return next(root.iter(f"{{*}}{name}"), None)


def _day(value: str, what: str) -> date | None:
    if not value:
        return None
    for fmt in _DAY_FORMATS:
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise EdxmlError(f"{what} {value!r} is not a date (yyyy/MM/dd)")


def _moment(value: str, what: str) -> datetime | None:
    if not value:
        return None
    for fmt in _MOMENT_FORMATS:
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=VN_TZ)
        except ValueError:
            continue
    raise EdxmlError(f"{what} {value!r} is not a time (yyyy/MM/dd HH:mm:ss)")


def _int(value: str) -> int | None:
    """A loosely typed number (priority, steering type): producers disagree, so junk becomes None."""
    try:
        return int(value)
    except ValueError:
        return None


# -- reading ------------------------------------------------------------------------------------------

def parse(data: bytes) -> Package:
    """Read a package tolerantly; :class:`EdxmlError` when it is not an edXML package at all.

    A document needs ``From/OrganId``; a status package also ``StatusCode``. Which fields a
    consumer further requires is its own decision (see the connector's checks).
    """
    root = parse_xml(data)
    if _local(root) != "edXML":
        raise EdxmlError(f"root element is {_local(root) or root.tag!r}, expected edXML")
    header = _find(root, "MessageHeader")
    if header is None:
        raise EdxmlError("edXMLEnvelope/edXMLHeader/MessageHeader is missing")
    sender = _organ(_kid(header, "From"))
    if not sender.organ_id:
        raise EdxmlError("From/OrganId is missing")
    common = dict(sender=sender, response_for=tuple(_ref(r) for r in _kids(header, "ResponseFor")),
                  signed=_signature(root) is not None)
    if _kid(header, "StatusCode") is not None:
        return _status_package(header, common)
    return _document_package(root, header, common)


def _organ(node: etree._Element | None) -> Organ:
    return Organ(_text(node, "OrganId"), _text(node, "OrganName"), _text(node, "OrganizationInCharge"),
                 _text(node, "OrganAdd"), _text(node, "Email"), _text(node, "Telephone"), _text(node, "Fax"),
                 _text(node, "Website"))


def _ref(node: etree._Element) -> DocumentRef:
    return DocumentRef(_text(node, "OrganId"), _text(node, "Code"),
                       _day(_text(node, "PromulgationDate"), "ResponseFor/PromulgationDate"),
                       _text(node, "DocumentId"))


def _staff(node: etree._Element | None) -> Staff | None:
    if node is None:
        return None
    return Staff(_text(node, "Department"), _text(node, "Staff"), _text(node, "Mobile"), _text(node, "Email"))


def _status_package(header: etree._Element, common: dict) -> Package:
    code = _text(header, "StatusCode")
    if not code:
        raise EdxmlError("StatusCode is empty")
    status = Status(code, _text(header, "Description"), _moment(_text(header, "Timestamp"), "Timestamp"),
                    _staff(_kid(header, "StaffInfo")))
    return Package(kind="status", status=status, **common)


def _document_package(root: etree._Element, header: etree._Element, common: dict) -> Package:
    code, info = _kid(header, "Code"), _kid(header, "PromulgationInfo")
    kind, signer = _kid(header, "DocumentType"), _kid(header, "SignerInfo")
    other = _kid(header, "OtherInfo")
    return Package(
        kind="edoc", recipients=tuple(_organ(to) for to in _kids(header, "To")),
        document_id=_text(header, "DocumentId"), code_number=_text(code, "CodeNumber"),
        code_notation=_text(code, "CodeNotation"), place=_text(info, "Place"),
        promulgation_date=_day(_text(info, "PromulgationDate"), "PromulgationDate"),
        document_type=_text(kind, "Type"), document_type_detail=_text(kind, "TypeDetail"),
        document_type_name=_text(kind, "TypeName"), subject=_text(header, "Subject"),
        content=_text(header, "Content"), signer_competence=_text(signer, "Competence"),
        signer_position=_text(signer, "Position"), signer_name=_text(signer, "FullName"),
        due_date=_day(_text(header, "DueDate"), "DueDate"),
        to_places=tuple(_text(p) for p in _kids(_kid(header, "ToPlaces"), "Place")),
        priority=_int(_text(other, "Priority")), steering_type=_int(_text(header, "SteeringType")),
        traces=_traces(root), business=_business(root), attachments=_attachments(root), **common)


def _traces(root: etree._Element) -> tuple[Trace, ...]:
    traces = _kids(_find(root, "TraceHeaderList"), "TraceHeader")
    return tuple(Trace(_text(t, "OrganId"), _moment(_text(t, "Timestamp"), "TraceHeader/Timestamp")) for t in traces)


def _business(root: etree._Element) -> Business | None:
    node = _kid(_find(root, "TraceHeaderList"), "Bussiness", "Business")
    if node is None:
        return None
    raw = _text(node, "BussinessDocType", "BusinessDocType")
    doc_type = _int(raw)
    if doc_type not in BUSINESS_TYPES:
        raise EdxmlError(f"BussinessDocType {raw!r} is not one of 0 new, 1 revoke, 2 update, 3 replace")
    info = _kid(node, "BussinessDocumentInfo", "BusinessDocumentInfo")
    receivers = tuple(Receiver(_text(r, "OrganId"), _int(_text(r, "ReceiverType")) or 0)
                      for r in _kids(_kid(info, "ReceiverList"), "Receiver"))
    replacements = tuple(
        Replacement(_text(r, "DocumentId"), tuple(_text(o) for o in _kids(_kid(r, "OrganIdList"), "OrganId")))
        for r in _kids(_kid(node, "ReplacementInfoList"), "ReplacementInfo"))
    return Business(doc_type, _text(node, "BussinessDocReason", "BusinessDocReason"), _text(node, "DocumentId"),
                    _text(info, "DocumentInfo") == "1", _text(info, "DocumentReceiver") == "1", receivers,
                    replacements, _staff(_kid(node, "StaffInfo")), _text(node, "Paper"))


def _attachments(root: etree._Element) -> tuple[Attachment, ...]:
    out = []
    for encoded in root.iter("{*}AttachmentEncoded"):
        out.extend(_attachment(node) for node in _kids(encoded, "Attachment"))
    return tuple(out)


def _attachment(node: etree._Element) -> Attachment:
    name, content_type = _text(node, "AttachmentName"), _text(node, "ContentType")
    meta = dict(description=_text(node, "Description"), content_id=_text(node, "ContentId"))
    try:
        raw = base64.b64decode("".join(_text(node, "ContentTransferEncoded").split()), validate=True)
    except (binascii.Error, ValueError):
        return Attachment(name, content_type, None, error="content is not valid base64", **meta)
    if not _travels_zipped(name, content_type, raw):
        return Attachment(name, content_type or _guess(name), raw, **meta)
    try:
        inner_name, data = _unzip(raw)
    except EdxmlError as exc:
        return Attachment(name, _guess(name), None, zipped=True, error=str(exc), **meta)
    return Attachment(name or inner_name, _guess(name or inner_name), data, zipped=True, **meta)


def _travels_zipped(name: str, content_type: str, raw: bytes) -> bool:
    """A zip wrapping one file (the SDK's way), as opposed to a file that is itself a zip archive."""
    if name.lower().endswith(".zip"):
        return False
    return content_type.lower() in (ZIP_MIME, "application/x-zip-compressed") or raw[:4] == b"PK\x03\x04"


def _unzip(raw: bytes) -> tuple[str, bytes]:
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            entries = [e for e in archive.infolist() if not e.is_dir()]
            if len(entries) != 1:
                raise EdxmlError(f"zip holds {len(entries)} files, expected the one attached file")
            return entries[0].filename, _read_bounded(archive, entries[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise EdxmlError(f"content is not a readable zip: {exc}") from None


def _read_bounded(archive: zipfile.ZipFile, entry: zipfile.ZipInfo) -> bytes:
    """Unzip at most :data:`MAX_UNZIPPED` bytes, whatever the header claims (zip bombs lie)."""
    with archive.open(entry) as stream:
        data = stream.read(MAX_UNZIPPED + 1)
    if len(data) > MAX_UNZIPPED:
        raise EdxmlError(f"unzipped content exceeds {MAX_UNZIPPED} bytes")
    return data


def _guess(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def _signature(root: etree._Element) -> etree._Element | None:
    """The package's ``Signature``, in the XML-DSig or the edXML namespace (SDKs differ)."""
    for node in root.iter(f"{{{DSIG_NS}}}Signature", f"{{{EDXML_NS}}}Signature", "Signature"):
        return node
    return None


# -- building -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Node:
    """An element to write; ``children`` are nodes, or ``text`` is the content."""

    name: str
    children: tuple["_Node", ...] = ()
    text: str | None = None
    attrs: str = ""


def _leaf(name: str, value: object) -> _Node | None:
    return None if value is None or value == "" else _Node(name, text=str(value))


def _node(name: str, *children: _Node | None, attrs: str = "") -> _Node | None:
    kept = tuple(c for c in children if c is not None)
    return _Node(name, kept, attrs=attrs) if kept else None


def _write(node: _Node, prefix: str, depth: int, out: list[str]) -> None:
    pad = "  " * depth
    tag = f"{prefix}{node.name}"
    if node.text is not None:
        out.append(f"{pad}<{tag}{node.attrs}>{escape(node.text)}</{tag}>")
        return
    out.append(f"{pad}<{tag}{node.attrs}>")
    for child in node.children:
        _write(child, prefix, depth + 1, out)
    out.append(f"{pad}</{tag}>")


def _fmt_day(value: date | None) -> str | None:
    return value.strftime("%Y/%m/%d") if value else None


def _fmt_moment(value: datetime | None) -> str | None:
    return value.astimezone(VN_TZ).strftime("%Y/%m/%d %H:%M:%S") if value else None


def _organ_node(tag: str, organ: Organ) -> _Node:
    return _Node(tag, tuple(filter(None, (
        _leaf("OrganId", organ.organ_id), _leaf("OrganizationInCharge", organ.organization_in_charge),
        _leaf("OrganName", organ.name), _leaf("OrganAdd", organ.address), _leaf("Email", organ.email),
        _leaf("Telephone", organ.telephone), _leaf("Fax", organ.fax), _leaf("Website", organ.website)))))


def _ref_node(ref: DocumentRef) -> _Node | None:
    return _node("ResponseFor", _leaf("OrganId", ref.organ_id), _leaf("Code", ref.code),
                 _leaf("PromulgationDate", _fmt_day(ref.promulgation_date)), _leaf("DocumentId", ref.document_id))


def _staff_node(staff: Staff | None) -> _Node | None:
    if staff is None:
        return None
    return _node("StaffInfo", _leaf("Department", staff.department), _leaf("Staff", staff.staff),
                 _leaf("Email", staff.email), _leaf("Mobile", staff.mobile))


def _document_header(p: Package) -> _Node:
    return _Node("MessageHeader", tuple(filter(None, (
        _organ_node("From", p.sender), *(_organ_node("To", r) for r in p.recipients),
        _leaf("DocumentId", p.document_id),
        _node("Code", _leaf("CodeNumber", p.code_number), _leaf("CodeNotation", p.code_notation)),
        _node("PromulgationInfo", _leaf("Place", p.place), _leaf("PromulgationDate", _fmt_day(p.promulgation_date))),
        _node("DocumentType", _leaf("Type", p.document_type), _leaf("TypeDetail", p.document_type_detail),
              _leaf("TypeName", p.document_type_name)),
        _leaf("Subject", p.subject), _leaf("Content", p.content),
        _node("SignerInfo", _leaf("Competence", p.signer_competence), _leaf("Position", p.signer_position),
              _leaf("FullName", p.signer_name)),
        _leaf("DueDate", _fmt_day(p.due_date)),
        _node("OtherInfo", _leaf("Priority", p.priority)),
        *(_ref_node(r) for r in p.response_for),
        _leaf("SteeringType", p.steering_type),
        _node("ToPlaces", *(_leaf("Place", place) for place in p.to_places))))))


def _business_node(b: Business) -> _Node | None:
    receivers = (_node("Receiver", _leaf("OrganId", r.organ_id), _leaf("ReceiverType", r.receiver_type))
                 for r in b.receivers)
    info = None
    if b.doc_type == 2:
        info = _node("BussinessDocumentInfo", _leaf("DocumentInfo", int(b.document_info_changed)),
                     _leaf("DocumentReceiver", int(b.receivers_changed)), _node("ReceiverList", *receivers))
    replacements = (_node("ReplacementInfo", _leaf("DocumentId", r.document_id),
                          _node("OrganIdList", *(_leaf("OrganId", o) for o in r.organ_ids))) for r in b.replacements)
    return _node("Bussiness", _leaf("DocumentId", b.document_id), _leaf("BussinessDocType", b.doc_type),
                 _leaf("BussinessDocReason", b.reason or BUSINESS_REASONS[b.doc_type]), _leaf("Paper", b.paper or "0"),
                 info, _staff_node(b.staff), _node("ReplacementInfoList", *replacements))


def _trace_list(p: Package) -> _Node | None:
    traces = (_node("TraceHeader", _leaf("OrganId", t.organ_id), _leaf("Timestamp", _fmt_moment(t.timestamp)))
              for t in p.traces)
    return _node("TraceHeaderList", *traces, _business_node(p.business) if p.business else None)


def _status_header(p: Package) -> _Node:
    assert p.status is not None
    s = p.status
    return _Node("MessageHeader", tuple(filter(None, (
        _organ_node("From", p.sender), *(_ref_node(r) for r in p.response_for), _staff_node(s.staff),
        _leaf("StatusCode", s.code), _leaf("Description", s.description),
        _leaf("Timestamp", _fmt_moment(s.timestamp))))))


def _manifest(attachments: Sequence[Attachment]) -> _Node:
    refs = (_node("Reference", _leaf("ContentId", a.content_id or f"cid:{k + 1}"),
                  _leaf("ContentType", a.content_type), _leaf("Description", a.description or a.name),
                  _leaf("AttachmentName", a.name)) for k, a in enumerate(attachments))
    return _Node("edXMLBody", (_Node("edXMLManifest", tuple(filter(None, refs)), attrs=' version="1.0"'),))


def _encoded(attachment: Attachment, number: int) -> str:
    data = attachment.data or b""
    if attachment.zipped:
        data = _zip(attachment.name, data)
    fields = [("ContentId", attachment.content_id or f"cid:{number}"), ("AttachmentName", attachment.name),
              ("Description", attachment.description or attachment.name), ("ContentType", attachment.content_type)]
    inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields)
    content = base64.b64encode(data).decode()
    return (f"    <Attachment>{inner}<edXML:ContentTransferEncoded xmlns:edXML=\"{EDXML_NS}\">{content}"
            "</edXML:ContentTransferEncoded></Attachment>")


def _zip(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo(name or "attachment", date_time=(2020, 1, 1, 0, 0, 0)), data,
                         compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def build(package: Package) -> bytes:
    """The package as bytes, in the SDK sample's layout (document or status by ``package.kind``).

    The result is unsigned; pass it to :func:`sign`. Fields left empty are left out, as producers do.
    """
    if package.kind == "status":
        header = _Node("edXMLHeader", (_status_header(package),))
        body: _Node | None = None
    else:
        header = _Node("edXMLHeader", tuple(filter(None, (_document_header(package), _trace_list(package)))))
        body = _manifest(package.attachments) if package.attachments else None
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f'<edXML xmlns="{EDXML_NS}">',
             f'  <edXML:edXMLEnvelope xmlns:edXML="{EDXML_NS}">']
    for part in filter(None, (header, body)):
        _write(part, "edXML:", 2, lines)
    lines.append("  </edXML:edXMLEnvelope>")
    if package.kind != "status" and package.attachments:
        lines.append("  <AttachmentEncoded>")
        lines.extend(_encoded(a, k + 1) for k, a in enumerate(package.attachments))
        lines.append("  </AttachmentEncoded>")
    lines.append("</edXML>")
    return ("\n".join(lines) + "\n").encode("utf-8")


# -- signing and verifying ------------------------------------------------------------------------------

VALID, INVALID, UNSIGNED, UNSUPPORTED = "valid", "invalid", "unsigned", "unsupported-algorithm"
_SUPPORTED_SIGNATURES = frozenset(f"http://www.w3.org/2001/04/xmldsig-more#{m}" for m in (
    "rsa-sha256", "rsa-sha384", "rsa-sha512", "ecdsa-sha256", "ecdsa-sha384", "ecdsa-sha512"))
_SUPPORTED_DIGESTS = frozenset({"http://www.w3.org/2001/04/xmlenc#sha256",
                                "http://www.w3.org/2001/04/xmldsig-more#sha384",
                                "http://www.w3.org/2001/04/xmlenc#sha512"})


@dataclass(frozen=True)
class Verdict:
    """What the signature of a package is worth.

    ``valid`` means the package is unchanged since it was signed with the key of the certificate it
    carries (and, when a CA file was given, that the certificate chains to it); whether that signer
    may speak for the sending agency is a policy decision above this module.
    """

    status: str  # valid | invalid | unsigned | unsupported-algorithm
    subject: str = ""  # the signing certificate's subject (RFC 4514), or X509SubjectName
    algorithm: str = ""  # SignatureMethod/@Algorithm
    reason: str = ""


def sign(package: bytes, key_pem: bytes, cert_pem: bytes | Sequence[bytes]) -> bytes:
    """Sign ``package`` with an enveloped XML-DSig (RSA-SHA256, SHA-256, exclusive c14n) placed where
    the SDK puts it, last in ``edXMLHeader``; any earlier signature is replaced."""
    from signxml import XMLSigner  # imported here: reading packages needs no signing machinery
    from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod

    root = parse_xml(package)
    header = _find(root, "edXMLHeader")
    if header is None:
        raise EdxmlError("edXMLHeader is missing: nothing to sign")
    for old in list(header.iter(f"{{{DSIG_NS}}}Signature", f"{{{EDXML_NS}}}Signature", "Signature")):
        old.getparent().remove(old)
    etree.SubElement(header, f"{{{DSIG_NS}}}Signature", Id="placeholder", nsmap={"ds": DSIG_NS})
    certs = [cert_pem] if isinstance(cert_pem, bytes) else list(cert_pem)
    signer = XMLSigner(signature_algorithm=SignatureMethod.RSA_SHA256, digest_algorithm=DigestAlgorithm.SHA256,
                       c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0)
    signed = signer.sign(root, key=key_pem, cert=[c.decode() for c in certs])
    return etree.tostring(signed, xml_declaration=True, encoding="UTF-8")


def verify(package: bytes, ca_pem_file: str | None = None) -> Verdict:
    """Check the package's signature; never raises for a bad signature, only reports it.

    Legacy RSA-SHA1 (the SDK samples') is reported as ``unsupported-algorithm``: SHA-1 signatures
    can be forged, so their verdict would mean nothing.
    """
    root = parse_xml(package)
    signature = _signature(root)
    if signature is None:
        return Verdict(UNSIGNED)
    algorithm = _algorithm(signature, "SignatureMethod")
    digest = _algorithm(signature, "DigestMethod")
    subject, cert = _signer(signature)
    unsupported = _unsupported(algorithm, digest)
    if unsupported:
        return Verdict(UNSUPPORTED, subject, algorithm, unsupported)
    if signature.tag != f"{{{DSIG_NS}}}Signature":
        return Verdict(INVALID, subject, algorithm, "Signature is not in the XML-DSig namespace")
    if cert is None:
        return Verdict(INVALID, subject, algorithm, "KeyInfo carries no X509Certificate")
    return _check(root, subject, algorithm, cert, ca_pem_file)


def _algorithm(signature: etree._Element, name: str) -> str:
    node = next(signature.iter(f"{{*}}{name}"), None)
    return (node.get("Algorithm") or "").strip() if node is not None else ""


def _unsupported(algorithm: str, digest: str) -> str:
    if algorithm.endswith("rsa-sha1") or digest.endswith("#sha1"):
        return "legacy RSA-SHA1 signature: SHA-1 is no longer accepted"
    if algorithm not in _SUPPORTED_SIGNATURES:
        return f"signature algorithm {algorithm or '(none)'} is not supported"
    if digest not in _SUPPORTED_DIGESTS:
        return f"digest algorithm {digest or '(none)'} is not supported"
    return ""


def _signer(signature: etree._Element) -> tuple[str, x509.Certificate | None]:
    """(subject, certificate) from ``KeyInfo/X509Data``; a truncated certificate gives the name only."""
    name_node = next(signature.iter("{*}X509SubjectName"), None)
    named = (name_node.text or "").strip() if name_node is not None else ""
    for node in signature.iter("{*}X509Certificate"):
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode("".join((node.text or "").split())))
        except (ValueError, binascii.Error):
            continue
        return cert.subject.rfc4514_string(), cert
    return named, None


def _check(root: etree._Element, subject: str, algorithm: str, cert: x509.Certificate,
           ca_pem_file: str | None) -> Verdict:
    from signxml import SignatureConfiguration, XMLVerifier
    from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature

    references = [r.get("URI") for r in root.iter(f"{{{DSIG_NS}}}Reference")]
    if references != [""]:
        return Verdict(INVALID, subject, algorithm, "the signature does not cover the whole package (Reference URI)")
    config = SignatureConfiguration(require_x509=True, expect_references=1)
    trust = {"ca_pem_file": ca_pem_file} if ca_pem_file else {"x509_cert": cert}
    try:
        XMLVerifier().verify(root, expect_config=config, parser=_PARSER, **trust)
    except InvalidDigest as exc:
        return Verdict(INVALID, subject, algorithm, f"the package was changed after signing: {exc}")
    except (InvalidSignature, InvalidCertificate, InvalidInput) as exc:
        return Verdict(INVALID, subject, algorithm, str(exc))
    return Verdict(VALID, subject, algorithm)


