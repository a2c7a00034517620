"""The packages the hub sends for the province's agencies, in the SDK layout of ``connectors.edxml``.

- A status package (§1.6) answers a document: ``From`` the answering agency, ``ResponseFor`` the
  document (its sender, "number/notation", promulgation date, DocumentId), ``StatusCode``,
  ``Description``, ``Timestamp`` (when the agency gave the status, so rebuilding it gives the same
  bytes) and the staff who gave it. The axis routes it to ``ResponseFor/OrganId``; a recall (13)
  goes to each recipient of the recalled document, so its ``ResponseFor/OrganId`` is that recipient
  (the public record does not say how 13 is routed; this follows the axis's routing rule).
- A document package (§1.3–1.4): the metadata a local system submitted, its files zipped as the SDK
  does (or raw base64 when asked), a trace header, and the business type (new, or a revoke, update
  or replacement of a document the agency sent before).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Mapping, Sequence

from connectors import edxml
from schemas.timefmt import VN_TZ


def status_package(spec: Mapping[str, Any]) -> bytes:
    """The unsigned status package of an outbox entry's ``spec`` (see ``DocumentStore._give_status``)."""
    answered = spec["response_for"]
    staff = spec.get("staff") or {}
    promulgated = answered.get("promulgation_date")
    package = edxml.Package(
        kind="status", sender=edxml.Organ(spec["from"]["organ_id"], spec["from"].get("name", "")),
        response_for=(edxml.DocumentRef(answered["organ_id"], answered.get("code", ""),
                                        date.fromisoformat(promulgated) if promulgated else None,
                                        answered.get("document_id", "")),),
        status=edxml.Status(spec["code"], spec.get("description", ""),
                            datetime.fromisoformat(spec["timestamp"]).astimezone(VN_TZ),
                            edxml.Staff(staff.get("department", ""), staff.get("name", ""), staff.get("mobile", ""),
                                        staff.get("email", "")) if staff else None))
    return edxml.build(package)


@dataclass(frozen=True)
class OutgoingFile:
    name: str
    mime: str
    data: bytes
    zipped: bool = True
    description: str = ""


@dataclass(frozen=True)
class Outgoing:
    """A document a province agency sends, as its local system described it."""

    sender: edxml.Organ
    recipients: tuple[edxml.Organ, ...]
    code_number: str
    code_notation: str
    subject: str
    promulgation_date: date
    place: str = ""
    content: str = ""
    document_type: tuple[str, str, str] = ("", "", "")  # Type, TypeDetail, TypeName
    signer: tuple[str, str, str] = ("", "", "")  # Competence, Position, FullName
    due_date: date | None = None
    priority: int | None = None
    steering_type: int | None = None
    to_places: tuple[str, ...] = ()
    business_type: int = 0
    business_target: str = ""  # the revoked, updated or replaced DocumentId
    business_reason: str = ""
    receiver_changes: tuple[tuple[str, int], ...] = ()  # update: (OrganId, 1 added / 0 removed)
    staff: edxml.Staff | None = None
    files: tuple[OutgoingFile, ...] = ()
    sent_at: datetime | None = None

    @property
    def document_id(self) -> str:
        """``{sender OrganId},{yyyy/MM/dd},{number}/{notation}`` (the samples' form)."""
        return f"{self.sender.organ_id},{self.promulgation_date:%Y/%m/%d},{self.code_number}/{self.code_notation}"


def document_package(doc: Outgoing) -> bytes:
    """The unsigned document package of ``doc``."""
    business = edxml.Business(
        doc.business_type, doc.business_reason, doc.business_target if doc.business_type else doc.document_id,
        document_info_changed=doc.business_type == 2, receivers_changed=bool(doc.receiver_changes),
        receivers=tuple(edxml.Receiver(o, k) for o, k in doc.receiver_changes),
        replacements=((edxml.Replacement(doc.business_target, tuple(r.organ_id for r in doc.recipients)),)
                      if doc.business_type == 3 else ()),
        staff=doc.staff, paper="0")
    kind, detail, name = doc.document_type
    competence, position, signer = doc.signer
    package = edxml.Package(
        kind="edoc", sender=doc.sender, recipients=doc.recipients, document_id=doc.document_id,
        code_number=doc.code_number, code_notation=doc.code_notation, place=doc.place,
        promulgation_date=doc.promulgation_date, document_type=kind, document_type_detail=detail,
        document_type_name=name, subject=doc.subject, content=doc.content, signer_competence=competence,
        signer_position=position, signer_name=signer, due_date=doc.due_date, to_places=doc.to_places,
        priority=doc.priority, steering_type=doc.steering_type,
        traces=(edxml.Trace(doc.sender.organ_id, doc.sent_at),), business=business,
        attachments=tuple(edxml.Attachment(f.name, f.mime, f.data, zipped=f.zipped, description=f.description,
                                           content_id=f"cid:{k}") for k, f in enumerate(doc.files, start=1)))
    return edxml.build(package)


def files_summary(files: Sequence[OutgoingFile]) -> list[dict[str, Any]]:
    return [{"name": f.name, "mime": f.mime, "size": len(f.data), "zipped": f.zipped,
             "sha256": hashlib.sha256(f.data).hexdigest()} for f in files]
