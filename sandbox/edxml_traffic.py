"""Synthetic traffic on the document axis (``national-systems.md`` §4, §7): edXML packages for the province.

Outside agencies (ministries, other provinces) send documents in every business type to the
province's agencies, and answer documents the province sent earlier with status packages. The
packages follow the layout of the real samples in ``reference/samples/`` but vary the way real
producers do (§4 "parse tolerantly"): the ``edXML:`` prefix, no prefix or another prefix; the order
of ``MessageHeader`` children; ``Signature`` in the edXML or the XML-DSig namespace or absent;
attachments as raw base64 with their real MIME type or as a zip in base64.

Deterministic from ``(seed, residents.n, residents.as_of, data faults, attachment_size)``: the
message list is drawn once from ``default_rng([seed, STREAM])``; each package is rendered on demand
from its own stream ``[seed, STREAM, index]``, so a 5 MB attachment costs memory only while served.
Everything is written to the ground truth by :meth:`EdxmlTraffic.record_truth`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import uuid
import zipfile
from dataclasses import dataclass
from datetime import datetime
from xml.sax.saxutils import escape

import numpy as np
import pyarrow as pa

from sandbox import names
from sandbox.agencies import Agency, agencies
from sandbox.ground_truth import GroundTruth
from sandbox.province import VN_TZ, Residents
from schemas import timefmt

EDXML_NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
SYSTEM = "vdxp"
STREAM = 41  # this generator's numpy stream: default_rng([seed, STREAM])
DEFAULT_ATTACHMENT_SIZE = 4096
NEW, REVOKE, UPDATE, REPLACE = 0, 1, 2, 3
BUSINESS_REASON = {NEW: "Văn bản điện tử mới", REVOKE: "Thu hồi văn bản điện tử",
                   UPDATE: "Cập nhật văn bản điện tử", REPLACE: "Văn bản thay thế"}
STATUS_DESCRIPTION = {
    "01": "Văn thư - Phòng Văn thư - Lưu trữ: Đã đến - Phần mềm QLVB đã nhận nhưng văn thư chưa xử lý",
    "02": "Từ chối tiếp nhận văn bản", "03": "Đã tiếp nhận văn bản", "04": "Đã phân công xử lý",
    "05": "Đang xử lý văn bản đến", "06": "Đã xử lý xong văn bản", "13": "Lấy lại văn bản",
    "15": "Đồng ý lấy lại/cập nhật văn bản", "16": "Từ chối lấy lại/cập nhật văn bản",
}
#: What a recipient answers over time to one document the province sent (§1.6 status codes).
STATUS_CHAINS = (("01", "03", "04", "05", "06"), ("01", "02"), ("01", "03", "13", "15"), ("01", "03", "16"))
_PLACE = {"H22": ("Hạ Long, Quảng Ninh", "Quảng Ninh"), "H31": ("Hồng Bàng, Hải Phòng", "Hải Phòng")}
_DOC_NAMESPACE = uuid.UUID("0b7d3c52-5f43-4a52-9a0e-6c1d2f0e3a11")
_DAY = 86_400
_NOTATION = {"G22": "VPCP-KSTT", "G12": "BTP-HTQTCT", "G06": "BCA-C06", "G01": "BTC-NSNN",
             "H01": "UBND-KGVX", "H22": "UBND-TH", "H31": "UBND-VP"}
_SUBJECTS = (
    "V/v triển khai thực hiện Nghị định số {n}/{y}/NĐ-CP",
    "V/v báo cáo tình hình kết nối, chia sẻ dữ liệu dân cư quý {q}/{y}",
    "V/v đôn đốc thực hiện Đề án 06 trên địa bàn",
    "V/v cung cấp thông tin phục vụ thanh tra công vụ năm {y}",
    "V/v hướng dẫn đăng ký hộ tịch trực tuyến toàn trình",
    "V/v tổ chức hội nghị trực tuyến về chuyển đổi số",
    "V/v góp ý dự thảo Thông tư quy định về cơ sở dữ liệu chuyên ngành",
    "V/v kiểm tra công tác cải cách thủ tục hành chính năm {y}",
    "V/v rà soát, cập nhật thông tin doanh nghiệp trên Hệ thống thông tin quốc gia",
    "V/v phối hợp xác minh thông tin công dân (lần {q})",
)
_DOC_TYPES = ((2, 18, "Công văn"), (2, 7, "Thông báo"), (2, 2, "Quyết định"), (2, 25, "Giấy mời"),
              (2, 8, "Hướng dẫn"), (1, 0, "Công văn"), (1, 9, "Thông tư"))
_SIGNERS = (("KT. BỘ TRƯỞNG", "Thứ trưởng"), ("TL. BỘ TRƯỞNG", "Cục trưởng"), ("KT. CHỦ TỊCH", "Phó Chủ tịch"),
            ("TM. ỦY BAN NHÂN DÂN", "Chủ tịch"), ("", "Chánh Văn phòng"))
_FILES = (("application/pdf", "pdf"), ("application/msword", "doc"), ("text/plain", "txt"))
_PREFIXES = ("edXML", "", "ns2", "qcvn")
_ZIP_SHARE = 0.45


@dataclass(frozen=True)
class Attachment:
    """One attached file: ``zipped`` files travel as ``application/zip`` (a zip in base64)."""

    name: str
    mime: str  # the file's real MIME type
    zipped: bool
    size: int  # bytes of the file before zipping and encoding

    @property
    def content_type(self) -> str:
        return "application/zip" if self.zipped else self.mime

    @property
    def encoding(self) -> str:
        return "zip" if self.zipped else "base64"


@dataclass(frozen=True)
class Layout:
    """How one producer writes its packages (the variations a tolerant parser must accept)."""

    prefix: str  # prefix of envelope elements: "edXML" as the SDK, "" (default namespace) or another
    order: int  # index into the MessageHeader orders
    signature: str  # "edxml" (SDK: Signature left in the edXML namespace), "xmldsig" or "none"
    pretty: bool  # one element a line, as the SDK writes
    wrap: bool = False  # attachment base64 in 76-column lines (MIME style) rather than one line


@dataclass(frozen=True)
class DocRef:
    """A document another package points at (``ResponseFor``, a revoked or replaced document)."""

    organ_id: str
    number: str
    notation: str
    date: int  # promulgation, epoch seconds
    document_id: str
    doc_id: str = ""  # axis DocId when the document travelled in this traffic


@dataclass(frozen=True)
class SentDocument:
    """A document the province sent earlier to an outside agency (what status packages answer)."""

    sender: Agency
    to: Agency
    ref: DocRef
    subject: str


@dataclass(frozen=True)
class TrafficMessage:
    """One message waiting on the axis for the province, with everything needed to render it."""

    index: int
    doc_id: str
    message_type: str  # "edoc" | "status"
    sender: Agency
    to: tuple[Agency, ...]  # every recipient (status: the sender of the answered document)
    created: int  # epoch seconds the message reached the axis
    document_id: str  # MessageHeader/DocumentId (status: ResponseFor/DocumentId)
    layout: Layout
    business: int = -1  # BussinessDocType, -1 for status packages
    number: str = ""
    notation: str = ""
    promulgated: int = 0
    due: int = 0
    subject: str = ""
    doc_type: tuple[int, int, str] = (2, 18, "Công văn")
    signer: tuple[str, str, str] = ("", "", "")
    priority: int = 0
    steering: int = 1
    response_for: DocRef | None = None
    target: DocRef | None = None  # revoked / updated / replaced document
    receiver_changes: tuple[tuple[str, int], ...] = ()  # (OrganId, ReceiverType) of an update
    attachments: tuple[Attachment, ...] = ()
    status_code: str = ""
    staff: str = ""
    hold_until_settled: str = ""  # DocId the receiver must settle first (revoked after delivery)

    @property
    def from_id(self) -> str:
        return self.sender.code102

    def delivered_to(self) -> tuple[str, ...]:
        """The recipients that are the province's own agencies (whom the axis delivers it to here)."""
        return tuple(a.code102 for a in self.to if a.in_province)


class EdxmlTraffic:
    """The generated messages, the province's earlier sent documents, and their rendering."""

    def __init__(self, seed: int, messages: list[TrafficMessage], sent: list[SentDocument]) -> None:
        self.seed = seed
        self.messages = messages
        self.sent = sent
        self.by_doc_id = {m.doc_id: m for m in messages}

    def render(self, message: TrafficMessage) -> bytes:
        """The edXML package of ``message``, identical at every call (own seeded stream)."""
        rng = np.random.default_rng([self.seed, STREAM, message.index])
        return _render(message, rng)

    def counts(self) -> dict[str, int]:
        """Message counts by kind, for reports and the benchmarks."""
        out: dict[str, int] = {"edoc": 0, "status": 0, "revoked_after_delivery": 0, "sent_documents": len(self.sent)}
        for m in self.messages:
            out[m.message_type] += 1
            if m.message_type == "edoc":
                key = f"business_{m.business}"
                out[key] = out.get(key, 0) + 1
            else:
                out[f"status_{m.status_code}"] = out.get(f"status_{m.status_code}", 0) + 1
            out["revoked_after_delivery"] += bool(m.hold_until_settled)
        return out

    def record_truth(self, truth: GroundTruth) -> None:
        """Truth rows, the revoked-after-delivery anomalies and the ``documents`` tables."""
        for m in self.messages:
            truth.record(SYSTEM, m.message_type, m.doc_id, "document", "document", m.document_id)
            if m.business == REPLACE and m.target is not None:
                truth.record(SYSTEM, m.message_type, m.doc_id, "replaces", "document", m.target.document_id)
        held = [m for m in self.messages if m.hold_until_settled]
        truth.anomaly_many(SYSTEM, "edoc", [m.hold_until_settled for m in held], "BussinessDocType",
                           "document_revoked_after_delivery", ["revoked"] * len(held), ["delivered"] * len(held))
        truth.add_table("documents", self.documents_table())
        truth.add_table("sent_documents", self.sent_table())

    def documents_table(self) -> pa.Table:
        ms = self.messages
        return pa.table({
            "doc_id": pa.array([m.doc_id for m in ms], pa.string()),
            "message_type": pa.array([m.message_type for m in ms], pa.string()),
            "business_type": pa.array([m.business for m in ms], pa.int8()),
            "status_code": pa.array([m.status_code for m in ms], pa.string()),
            "from_organ_id": pa.array([m.from_id for m in ms], pa.string()),
            "to_organ_ids": pa.array([[a.code102 for a in m.to] for m in ms], pa.list_(pa.string())),
            "delivered_to": pa.array([list(m.delivered_to()) for m in ms], pa.list_(pa.string())),
            "document_id": pa.array([m.document_id for m in ms], pa.string()),
            "target_document_id": pa.array([m.target.document_id if m.target else "" for m in ms], pa.string()),
            "target_doc_id": pa.array([m.target.doc_id if m.target else "" for m in ms], pa.string()),
            "attachment_count": pa.array([len(m.attachments) for m in ms], pa.int32()),
            "attachment_encodings": pa.array([[a.encoding for a in m.attachments] for m in ms], pa.list_(pa.string())),
            "attachment_types": pa.array([[a.mime for a in m.attachments] for m in ms], pa.list_(pa.string())),
            "created": pa.array([m.created for m in ms], pa.int64()),
            "revoked_after_delivery": pa.array([bool(m.hold_until_settled) for m in ms], pa.bool_()),
            "prefix": pa.array([m.layout.prefix for m in ms], pa.string()),
            "header_order": pa.array([m.layout.order for m in ms], pa.int8()),
            "signature": pa.array([m.layout.signature for m in ms], pa.string()),
        })

    def sent_table(self) -> pa.Table:
        s = self.sent
        return pa.table({
            "document_id": pa.array([d.ref.document_id for d in s], pa.string()),
            "from_organ_id": pa.array([d.sender.code102 for d in s], pa.string()),
            "to_organ_id": pa.array([d.to.code102 for d in s], pa.string()),
            "code": pa.array([f"{d.ref.number}/{d.ref.notation}" for d in s], pa.string()),
            "promulgation_date": pa.array([timefmt.render(d.ref.date, timefmt.EDXML_DAY) for d in s], pa.string()),
        })


# -- generation -----------------------------------------------------------------------------------

def message_counts(residents: int) -> tuple[int, int]:
    """(documents, status packages) for a province of ``residents``: about one document per 50."""
    documents = max(30, round(residents / 50))
    return documents, max(16, documents // 4)


def generate_traffic(residents: Residents, seed: int = 0,
                     attachment_size: int = DEFAULT_ATTACHMENT_SIZE) -> EdxmlTraffic:
    """Draw the axis traffic of the province deterministically (no wall clock: times from ``as_of``)."""
    if attachment_size < 64:
        raise ValueError("attachment_size must be at least 64 bytes")
    gen = _Generator(residents, seed, attachment_size)
    n_docs, n_status = message_counts(residents.n)
    rate = float(residents.data_faults.get("document_revoked_after_delivery", 0.05))
    sent = [gen.sent_document() for _ in range(max(6, n_status // 3))]
    docs = gen.documents(n_docs, rate, sent)
    statuses = gen.statuses(sent, n_status)  # answers the first sent documents, adds more if needed
    messages = sorted(docs + statuses, key=lambda m: (m.created, m.doc_id))
    return EdxmlTraffic(seed, messages, sent)


class _Generator:
    """The drawing state: one numpy stream, per-sender document counters, the agencies."""

    def __init__(self, residents: Residents, seed: int, attachment_size: int) -> None:
        self.rng = np.random.default_rng([seed, STREAM])
        self.seed = seed
        self.as_of = residents.as_of
        self.size = attachment_size
        self.outside = tuple(a for a in agencies() if not a.in_province)
        self.province = tuple(a for a in agencies() if a.in_province)
        self.numbers: dict[str, int] = {}
        self.index = 0

    def _pick(self, items: tuple, p: list[float] | None = None):
        """One item, uniformly or by weights (a cumulative search: ``rng.choice`` with ``p`` is slow)."""
        if p is None:
            return items[int(self.rng.integers(len(items)))]
        edges = np.cumsum(p)
        return items[min(int(np.searchsorted(edges, self.rng.random() * edges[-1], "right")), len(items) - 1)]

    def _number(self, agency: Agency) -> str:
        current = self.numbers.get(agency.code) or int(self.rng.integers(100, 3000))
        self.numbers[agency.code] = current + 1 + int(self.rng.integers(0, 5))
        return str(current)

    def _doc_id(self, kind: str) -> tuple[int, str]:
        self.index += 1
        return self.index, str(uuid.uuid5(_DOC_NAMESPACE, f"{self.seed}:{kind}:{self.index}"))

    def _ref(self, sender: Agency, moment: int, doc_id: str = "") -> DocRef:
        number, notation = self._number(sender), _notation(sender)
        day = timefmt.render(moment, timefmt.EDXML_DAY)
        return DocRef(sender.code102, number, notation, _midnight(moment),
                      f"{sender.code102},{day},{number}/{notation}", doc_id)

    def _layout(self) -> Layout:
        prefix = self._pick(_PREFIXES, [0.55, 0.25, 0.12, 0.08])
        signature = self._pick(("edxml", "xmldsig", "none"), [0.5, 0.2, 0.3])
        wrap = prefix != "edXML" and bool(self.rng.random() < 0.4)
        return Layout(prefix, int(self.rng.integers(0, 3)), signature, prefix == "edXML", wrap)

    def _subject(self, moment: int) -> str:
        year = timefmt.render(moment, "%Y")
        template = self._pick(_SUBJECTS)
        return template.format(n=int(self.rng.integers(10, 300)), y=year, q=int(self.rng.integers(1, 5)))

    def _person(self) -> str:
        g = int(self.rng.integers(0, 2))
        return names.full_name(self._pick(names.FAMILY, list(names.FAMILY_P)),
                               self._pick(names.MIDDLE[g], list(names.MIDDLE_P[g])),
                               self._pick(names.GIVEN[g], list(names.GIVEN_P[g])))

    def _recipients(self) -> tuple[Agency, ...]:
        k = self._pick((1, 2, 3), [0.7, 0.2, 0.1])
        picks = self.rng.choice(len(self.province), size=k, replace=False)
        return tuple(self.province[int(i)] for i in sorted(picks))

    def _attachments(self, low: int, high: int, stem: str) -> tuple[Attachment, ...]:
        out = []
        for k in range(int(self.rng.integers(low, high + 1))):
            mime, ext = self._pick(_FILES, [0.5, 0.3, 0.2])
            size = max(64, int(self.size * self.rng.uniform(0.5, 1.5)))
            name = f"{stem}.{ext}" if k == 0 else f"{stem}_phu_luc_{k:02d}.{ext}"
            out.append(Attachment(name, mime, bool(self.rng.random() < _ZIP_SHARE), size))
        return tuple(out)

    # -- the province's own earlier documents -----------------------------------------------------
    def sent_document(self) -> SentDocument:
        """A document the province sent to an outside agency some weeks before ``as_of``."""
        sender, to = self._pick(self.province), self._pick(self.outside)
        moment = self.as_of - int(self.rng.integers(12 * _DAY, 45 * _DAY))
        return SentDocument(sender, to, self._ref(sender, moment), self._subject(moment))

    # -- documents to the province ------------------------------------------------------------------
    def documents(self, n: int, revoked_rate: float, sent: list[SentDocument]) -> list[TrafficMessage]:
        n_update, n_replace, n_revoke = max(1, round(0.08 * n)), max(1, round(0.05 * n)), max(1, round(0.02 * n))
        base = n - n_update - n_replace - n_revoke
        n_held = max(1, round(revoked_rate * base)) if revoked_rate > 0 else 0
        answerable: dict[str, list[DocRef]] = {}
        for document in sent:
            answerable.setdefault(document.to.code, []).append(document.ref)
        news = [self._new(answerable) for _ in range(base - n_held)]
        targets = [news[int(i)] for i in self.rng.permutation(len(news))[: n_update + n_replace + n_revoke + n_held]]
        kinds = [UPDATE] * n_update + [REPLACE] * n_replace + [REVOKE] * n_revoke + [-REVOKE] * n_held
        derived = [self._derived(kind, target) for kind, target in zip(kinds, targets)]
        return news + derived

    def _new(self, answerable: dict[str, list[DocRef]]) -> TrafficMessage:
        """A new document; some answer (``ResponseFor``) a document the province sent to its sender."""
        index, doc_id = self._doc_id("edoc")
        sender = self._pick(self.outside)
        created = self.as_of - int(self.rng.integers(2 * _DAY, 30 * _DAY))
        ref = self._ref(sender, created - int(self.rng.integers(0, 3)) * _DAY, doc_id)
        to = self._recipients()
        if self.rng.random() < 0.12:
            peer = self._pick(tuple(a for a in self.outside if a != sender))
            to = (*to, peer)
        answered = answerable.get(sender.code, [])
        response_for = None
        if answered and self.rng.random() < 0.15:
            response_for = answered[int(self.rng.integers(len(answered)))]
        competence, position = self._pick(_SIGNERS)
        return TrafficMessage(
            index=index, doc_id=doc_id, message_type="edoc", sender=sender, to=to, created=created,
            document_id=ref.document_id, layout=self._layout(), business=NEW, number=ref.number,
            notation=ref.notation, promulgated=ref.date, due=ref.date + int(self.rng.integers(7, 31)) * _DAY,
            subject=self._subject(created), doc_type=self._pick(_DOC_TYPES),
            signer=(competence, position, self._person()),
            priority=self._pick((0, 1, 2, 3, 4), [0.7, 0.15, 0.08, 0.05, 0.02]),
            steering=int(self.rng.integers(0, 4)), response_for=response_for, staff=self._person(),
            attachments=self._attachments(1, 3, f"{ref.number}_{ref.notation.replace('-', '_')}"))

    def _derived(self, kind: int, target: TrafficMessage) -> TrafficMessage:
        """A revoke, update or replace of ``target`` (``-REVOKE``: revoked after it was delivered)."""
        index, doc_id = self._doc_id("edoc")
        late = kind == -REVOKE
        lag = int(self.rng.integers(2 * _DAY, 9 * _DAY)) if late else int(self.rng.integers(3600, _DAY))
        created = min(target.created + lag, self.as_of - 60)
        ref = DocRef(target.from_id, target.number, target.notation, target.promulgated, target.document_id,
                     target.doc_id)
        common = dict(index=index, doc_id=doc_id, message_type="edoc", sender=target.sender, created=created,
                      layout=self._layout(), doc_type=target.doc_type, signer=target.signer, target=ref,
                      staff=self._person(), due=target.due, priority=target.priority, steering=target.steering)
        if kind in (REVOKE, -REVOKE):
            return TrafficMessage(**common, to=target.to, document_id=target.document_id, business=REVOKE,
                                  number=target.number, notation=target.notation, promulgated=target.promulgated,
                                  subject=target.subject, hold_until_settled=target.doc_id if late else "")
        if kind == UPDATE:
            return self._update(common, target)
        new = self._ref(target.sender, created, doc_id)
        return TrafficMessage(**common, to=target.to, document_id=new.document_id, business=REPLACE,
                              number=new.number, notation=new.notation, promulgated=new.date,
                              subject=f"{target.subject} (thay thế văn bản số {target.number}/{target.notation})",
                              attachments=self._attachments(1, 2, f"{new.number}_{new.notation.replace('-', '_')}"))

    def _update(self, common: dict, target: TrafficMessage) -> TrafficMessage:
        others = tuple(a for a in self.province if a not in target.to)
        added = self._pick(others)
        changes = [(added.code102, 1)]
        inside = [a for a in target.to if a.in_province]
        if len(inside) > 1 and self.rng.random() < 0.5:
            changes.append((inside[-1].code102, 0))
        stem = f"{target.number}_{target.notation.replace('-', '_')}_cap_nhat"
        return TrafficMessage(**common, to=(*target.to, added), document_id=target.document_id, business=UPDATE,
                              number=target.number, notation=target.notation, promulgated=target.promulgated,
                              subject=target.subject, receiver_changes=tuple(changes),
                              attachments=self._attachments(0, 1, stem))

    # -- status packages --------------------------------------------------------------------------
    def statuses(self, sent: list[SentDocument], n: int) -> list[TrafficMessage]:
        """``n`` answers to the province's documents (``sent`` grows as needed); every chain of codes
        appears at least once, the rest are drawn and may stop part way (still in progress)."""
        out: list[TrafficMessage] = []
        k = 0
        while len(out) < n:
            if k >= len(sent):
                sent.append(self.sent_document())
            chain = STATUS_CHAINS[k] if k < len(STATUS_CHAINS) else self._pick(STATUS_CHAINS, [0.6, 0.15, 0.15, 0.1])
            if k >= len(STATUS_CHAINS):
                chain = chain[: int(self.rng.integers(1, len(chain) + 1))]
            document = sent[k]
            moment = document.ref.date + int(self.rng.integers(3600, _DAY))
            for code in chain[: n - len(out)]:
                out.append(self._status(document, code, moment))
                moment = min(moment + int(self.rng.integers(3600, 3 * _DAY)), self.as_of - 60)
            k += 1
        return out

    def _status(self, document: SentDocument, code: str, moment: int) -> TrafficMessage:
        index, doc_id = self._doc_id("status")
        layout = Layout(self._layout().prefix, int(self.rng.integers(0, 2)), "none", bool(self.rng.random() < 0.5))
        return TrafficMessage(index, doc_id, "status", document.to, (document.sender,), moment,
                              document.ref.document_id, layout, response_for=document.ref, status_code=code,
                              staff=self._person())


def _notation(agency: Agency) -> str:
    if agency.code in _NOTATION:
        return _NOTATION[agency.code]
    if agency.name.startswith("Sở") or agency.name.startswith("Công an"):
        initials = "".join(w[0] for w in agency.name.replace(",", "").split() if w != "và").upper()
        return f"{initials}-VP"
    return "UBND-VP"


def _midnight(epoch: int) -> int:
    return (epoch + 7 * 3600) // _DAY * _DAY - 7 * 3600


# -- rendering --------------------------------------------------------------------------------------

class _Writer:
    """Writes elements with one producer's prefix (``edXML:``, none, or another)."""

    def __init__(self, layout: Layout) -> None:
        self.p = f"{layout.prefix}:" if layout.prefix else ""
        self.sep = "\n" if layout.pretty else ""

    def leaf(self, name: str, text: object) -> str:
        return f"<{self.p}{name}>{escape(str(text))}</{self.p}{name}>"

    def node(self, name: str, *children: str, attrs: str = "") -> str:
        inner = self.sep.join(c for c in children if c)
        if not inner:
            return f"<{self.p}{name}{attrs}/>"
        return f"<{self.p}{name}{attrs}>{self.sep}{inner}{self.sep}</{self.p}{name}>"


def _moment(epoch: int) -> str:
    return timefmt.render(epoch, timefmt.EDXML_MOMENT)


def _day(epoch: int) -> str:
    return timefmt.render(epoch, timefmt.EDXML_DAY)


def _place(agency: Agency) -> tuple[str, str]:
    """(street area, city) where an agency sits: the province's in Hải Phòng, ministries in Hà Nội."""
    return _PLACE.get(agency.code[:3], ("Ba Đình, Hà Nội", "Hà Nội"))


def _contact(agency: Agency) -> tuple[str, str, str, str]:
    """(address, email, telephone, website) of an agency, stable per code."""
    slug = agency.code.lower().replace(".", "")
    digest = int(hashlib.sha1(agency.code.encode()).hexdigest()[:8], 16)
    address = f"Số {digest % 90 + 1}, {_place(agency)[0]}"
    if agency.in_province:
        return address, f"{slug}@haiphong.gov.vn", f"0225 3{digest % 1_000_000:06d}", "www.haiphong.gov.vn"
    return address, f"vanthu.{slug}@gov.vn", f"024 3{digest % 1_000_000:06d}", f"www.{slug}.gov.vn"


def _organ(w: _Writer, tag: str, agency: Agency) -> str:
    address, email, phone, website = _contact(agency)
    parent = next((a.name for a in agencies() if a.code == agency.parent_code), agency.name)
    return w.node(tag, w.leaf("OrganId", agency.code102), w.leaf("OrganizationInCharge", parent),
                  w.leaf("OrganName", agency.name), w.leaf("OrganAdd", address), w.leaf("Email", email),
                  w.leaf("Telephone", phone), w.leaf("Fax", phone), w.leaf("Website", website))


def _ref_node(w: _Writer, ref: DocRef) -> str:
    return w.node("ResponseFor", w.leaf("OrganId", ref.organ_id), w.leaf("Code", f"{ref.number}/{ref.notation}"),
                  w.leaf("PromulgationDate", _day(ref.date)), w.leaf("DocumentId", ref.document_id))


def _staff(w: _Writer, name: str, agency: Agency) -> str:
    return w.node("StaffInfo", w.leaf("Department", "Văn thư văn phòng"), w.leaf("Staff", name),
                  w.leaf("Mobile", "0912000001"), w.leaf("Email", _contact(agency)[1]))


_EDOC_ORDERS = (
    ("From", "To", "DocumentId", "Code", "PromulgationInfo", "DocumentType", "Subject", "Content", "SignerInfo",
     "DueDate", "OtherInfo", "ResponseFor", "SteeringType", "ToPlaces"),
    ("DocumentId", "From", "To", "Code", "PromulgationInfo", "DocumentType", "Subject", "Content", "SignerInfo",
     "DueDate", "ToPlaces", "OtherInfo", "ResponseFor", "SteeringType"),
    ("From", "To", "Code", "PromulgationInfo", "DocumentType", "Subject", "Content", "SignerInfo", "DueDate",
     "ToPlaces", "SteeringType", "ResponseFor", "OtherInfo", "DocumentId"),
)
_STATUS_ORDERS = (("From", "ResponseFor", "StaffInfo", "StatusCode", "Description", "Timestamp"),
                  ("ResponseFor", "From", "StatusCode", "Description", "Timestamp", "StaffInfo"))


def _edoc_header(w: _Writer, m: TrafficMessage) -> str:
    competence, position, signer = m.signer
    parts = {
        "From": _organ(w, "From", m.sender),
        "To": w.sep.join(_organ(w, "To", a) for a in m.to),
        "DocumentId": w.leaf("DocumentId", m.document_id),
        "Code": w.node("Code", w.leaf("CodeNumber", m.number), w.leaf("CodeNotation", m.notation)),
        "PromulgationInfo": w.node("PromulgationInfo", w.leaf("Place", _place(m.sender)[1]),
                                   w.leaf("PromulgationDate", _day(m.promulgated))),
        "DocumentType": w.node("DocumentType", *(w.leaf(k, v) for k, v in
                                                 zip(("Type", "TypeDetail", "TypeName"), m.doc_type))),
        "Subject": w.leaf("Subject", m.subject),
        "Content": w.leaf("Content", m.subject),
        "SignerInfo": w.node("SignerInfo", w.leaf("Competence", competence), w.leaf("Position", position),
                             w.leaf("FullName", signer)),
        "DueDate": w.leaf("DueDate", _day(m.due)) if m.due else "",
        "OtherInfo": w.node("OtherInfo", w.leaf("Priority", m.priority),
                            w.leaf("SphereOfPromulgation", "Liên thông văn bản quốc gia"),
                            w.leaf("TyperNotation", "VT"), w.leaf("PromulgationAmount", 1 + m.index % 5),
                            w.leaf("PageAmount", 1 + m.index % 12)),
        "ResponseFor": _ref_node(w, m.response_for) if m.response_for else "",
        "SteeringType": w.leaf("SteeringType", m.steering),
        "ToPlaces": w.node("ToPlaces", w.leaf("Place", "Như trên"), w.leaf("Place", "Lưu: VT")),
    }
    return w.node("MessageHeader", *(parts[k] for k in _EDOC_ORDERS[m.layout.order]))


def _status_header(w: _Writer, m: TrafficMessage) -> str:
    assert m.response_for is not None
    parts = {
        "From": _organ(w, "From", m.sender),
        "ResponseFor": _ref_node(w, m.response_for),
        "StaffInfo": _staff(w, m.staff, m.sender),
        "StatusCode": w.leaf("StatusCode", m.status_code),
        "Description": w.leaf("Description", STATUS_DESCRIPTION[m.status_code]),
        "Timestamp": w.leaf("Timestamp", _moment(m.created)),
    }
    return w.node("MessageHeader", *(parts[k] for k in _STATUS_ORDERS[m.layout.order % 2]))


def _business(w: _Writer, m: TrafficMessage) -> str:
    target = m.target.document_id if m.target else m.document_id
    extra = ""
    if m.business == UPDATE:
        receivers = (w.node("Receiver", w.leaf("OrganId", organ), w.leaf("ReceiverType", kind))
                     for organ, kind in m.receiver_changes)
        extra = w.node("BussinessDocumentInfo", w.leaf("DocumentInfo", "1"), w.leaf("DocumentReceiver", "1"),
                       w.node("ReceiverList", *receivers))
    replacement = ""
    if m.business == REPLACE and m.target is not None:
        organs = (w.leaf("OrganId", a.code102) for a in m.to)
        replacement = w.node("ReplacementInfoList", w.node("ReplacementInfo", w.leaf("DocumentId", target),
                                                           w.node("OrganIdList", *organs)))
    head = (w.leaf("DocumentId", target), w.leaf("BussinessDocType", m.business))
    if m.layout.order == 2:
        head = head[::-1]
    body = w.node("Bussiness", *head, w.leaf("BussinessDocReason", BUSINESS_REASON[m.business]),
                  w.leaf("Paper", "0"), extra, _staff(w, m.staff, m.sender), replacement)
    trace = w.node("TraceHeader", w.leaf("OrganId", m.from_id), w.leaf("Timestamp", _moment(m.created)))
    return w.node("TraceHeaderList", trace, body)


def _signature(m: TrafficMessage) -> str:
    """A dummy enveloped signature like the SDK samples' (values are placeholders, never valid)."""
    if m.layout.signature == "none":
        return ""
    xmlns = f' xmlns="{DSIG_NS}"' if m.layout.signature == "xmldsig" else ""
    digest = base64.b64encode(hashlib.sha1(m.doc_id.encode()).digest()).decode()
    value = base64.b64encode(hashlib.sha512(m.doc_id.encode()).digest() * 4).decode()
    return (f"<Signature{xmlns}><SignedInfo>"
            '<CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"/>'
            f'<SignatureMethod Algorithm="{DSIG_NS}rsa-sha1"/><Reference URI=""><Transforms>'
            f'<Transform Algorithm="{DSIG_NS}enveloped-signature"/>'
            '<Transform Algorithm="http://www.w3.org/TR/xml-exc-c14n#"/></Transforms>'
            f'<DigestMethod Algorithm="{DSIG_NS}sha1"/><DigestValue>{digest}</DigestValue></Reference>'
            f"</SignedInfo><SignatureValue>{value}</SignatureValue><KeyInfo><X509Data>"
            f"<X509SubjectName>CN={escape(m.sender.name)}</X509SubjectName>"
            "<X509Certificate>MIIFqTCCBJG</X509Certificate></X509Data></KeyInfo></Signature>")


def attachment_payload(attachment: Attachment, rng: np.random.Generator, subject: str = "") -> bytes:
    """The file itself: a PDF-like or Word-like binary, or Vietnamese text, of about ``size`` bytes."""
    size = attachment.size
    if attachment.mime == "application/pdf":
        head = (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
                b"4 0 obj\n<< /Filter /FlateDecode >>\nstream\n")
        tail = b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
        return head + rng.bytes(max(0, size - len(head) - len(tail))) + tail
    if attachment.mime == "application/msword":
        magic = bytes.fromhex("d0cf11e0a1b11ae1")
        return magic + rng.bytes(max(0, size - len(magic)))
    line = f"{subject or 'Văn bản điện tử'} - nội dung chi tiết kèm theo.\n".encode()
    return (line * (size // len(line) + 1))[:size].decode("utf-8", "ignore").encode()


def _zip(name: str, data: bytes, moment: int) -> bytes:
    buffer = io.BytesIO()
    stamp = datetime.fromtimestamp(moment, VN_TZ).timetuple()[:6]
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo(name, date_time=stamp)
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, data)
    return buffer.getvalue()


def _b64(data: bytes, wrap: bool) -> str:
    return (base64.encodebytes(data) if wrap else base64.b64encode(data)).decode().strip()


def _attachments(w: _Writer, m: TrafficMessage, rng: np.random.Generator) -> tuple[str, str]:
    """(manifest references, AttachmentEncoded block) — the block unprefixed, as the SDK writes it."""
    refs, blocks = [], []
    inner_prefix = w.p if w.p == "edXML:" else ""
    decl = f' xmlns:edXML="{EDXML_NS}"' if inner_prefix else ""
    for k, a in enumerate(m.attachments):
        cid = f"cid:{m.index * 10 + k}"
        refs.append(w.node("Reference", w.leaf("ContentId", cid), w.leaf("ContentType", a.content_type),
                           w.leaf("Description", a.name), w.leaf("AttachmentName", a.name)))
        data = attachment_payload(a, rng, m.subject)
        if a.zipped:
            data = _zip(a.name, data, m.created)
        blocks.append(f"<Attachment><ContentId>{cid}</ContentId><AttachmentName>{escape(a.name)}</AttachmentName>"
                      f"<Description>{escape(a.name)}</Description><ContentType>{a.content_type}</ContentType>"
                      f"<{inner_prefix}ContentTransferEncoded{decl}>{_b64(data, m.layout.wrap)}"
                      f"</{inner_prefix}ContentTransferEncoded></Attachment>")
    encoded = f"<AttachmentEncoded>{w.sep.join(blocks)}</AttachmentEncoded>" if blocks else ""
    return w.sep.join(refs), encoded


def _render(m: TrafficMessage, rng: np.random.Generator) -> bytes:
    w = _Writer(m.layout)
    decl = f' xmlns:{m.layout.prefix}="{EDXML_NS}"' if m.layout.prefix else ""
    if m.message_type == "status":
        header = w.node("edXMLHeader", _status_header(w, m))
        body, encoded = "", ""
    else:
        header = w.node("edXMLHeader", _edoc_header(w, m), _business(w, m), _signature(m))
        refs, encoded = _attachments(w, m, rng)
        body = w.node("edXMLBody", w.node("edXMLManifest", refs, attrs=' version="1.0"'))
    envelope = w.node("edXMLEnvelope", header, body, attrs=decl)
    text = (f'<?xml version="1.0" encoding="UTF-8"?>\n<edXML xmlns="{EDXML_NS}">{w.sep}{envelope}{w.sep}'
            f"{encoded}{w.sep}</edXML>\n")
    return text.encode("utf-8")
