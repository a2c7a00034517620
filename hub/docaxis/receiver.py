"""Taking what the axis delivered into the provincial store, from the committed landing parts.

The landing (``landing/vdxp``, ``connectors.document_exchange``) is the only consumer of the
province's queue on the axis: it fetches each package, writes it with its parsed metadata to an
immutable Parquet part (fsynced, committed together with the cursor) and only then settles it on the
axis. A second consumer of the same queue would take messages away from the first, so the store
does not read the axis itself: it takes in every committed part it has not taken in yet, in commit
order. A part is taken in whole in one transaction (files first, fsynced), so a crash leaves it
either taken in or not, and taking it in again adds nothing (messages are keyed by the axis DocId).
Nothing is lost if the store falls behind: the parts stay until it has them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from connectors import edxml
from hub.docaxis.store import DocumentStore, Incoming, IncomingAttachment, Refused

SYSTEM, DATASET = "vdxp", "documents"


@dataclass
class IngestReport:
    parts: int = 0
    stored: int = 0
    redelivered: int = 0
    deliveries: int = 0
    statuses_queued: int = 0
    quarantined: int = 0
    bytes: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def part_identity(path: Path) -> str:
    """A part's name is its commit sequence; with its size and time it also tells a lake that was
    wiped and landed again (sequences restart) from the parts already taken in."""
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def take_in_landing(store: DocumentStore, lake, ca_bundle: Path | None = None) -> IngestReport:
    """Take every committed landing part of the axis not taken in yet (``lake``: a ``HubLake``)."""
    records, quarantine = lake.committed_files(SYSTEM, DATASET)
    return take_in_parts(store, sorted(records + quarantine, key=lambda p: p.name), ca_bundle)


def take_in_parts(store: DocumentStore, parts: Iterable[Path], ca_bundle: Path | None = None) -> IngestReport:
    report = IngestReport()
    started = time.monotonic()
    taken = store.ingested_identities()
    for path in parts:
        identity = part_identity(path)
        if identity in taken:
            continue
        if path.name.endswith(".quarantine.parquet"):
            incoming, refused = [], _refused(store, path)
        else:
            incoming, refused, skipped = _incoming(store, path, ca_bundle, report)
            report.redelivered += skipped
        result = store.take_in(identity, path.name, incoming, refused)
        report.parts += 1
        report.stored += result.stored
        report.redelivered += result.redelivered
        report.deliveries += result.deliveries
        report.statuses_queued += result.statuses_queued
        report.quarantined += result.quarantined
    report.seconds = time.monotonic() - started
    return report


def _read_part(path: Path) -> pa.Table:
    """A landing part, whole (only parts not taken in yet are ever read)."""
    return pq.read_table(path)


def _incoming(store: DocumentStore, path: Path, ca_bundle: Path | None,
              report: IngestReport) -> tuple[list[Incoming], list[Refused], int]:
    table = _read_part(path)
    meta = table.drop_columns(["edxml"]).to_pylist()
    known = store.known(row["doc_id"] for row in meta)
    packages = table.column("edxml")
    incoming: list[Incoming] = []
    refused: list[Refused] = []
    skipped = 0
    for k, row in enumerate(meta):
        if row["doc_id"] in known:
            skipped += 1
            continue
        data = packages[k].as_py()
        report.bytes += len(data)
        try:
            incoming.append(_message(store, row, data, ca_bundle))
        except edxml.EdxmlError as exc:  # the landing accepted it; a store that cannot read it says why
            refused.append(Refused(row["doc_id"], f"package refused by the store: {exc}", f"{path.name} row {k + 1}",
                                   store.blobs.put(data), len(data), row.get("fetched_at")))
            report.problems.append(f"{row['doc_id']}: {exc}")
    return incoming, refused, skipped


def _message(store: DocumentStore, row: dict, data: bytes, ca_bundle: Path | None) -> Incoming:
    package = edxml.parse(data)
    broken = package.attachment_errors
    if broken:
        raise edxml.EdxmlError("; ".join(broken))
    files = tuple(IncomingAttachment(a.name, a.mime, a.size, store.blobs.put(a.data), a.zipped, a.description)
                  for a in package.attachments)
    verdict = _verdict(data, row["signature_verdict"], package.signed, ca_bundle)
    is_status = row["message_type"] == "status"
    to_organs = (tuple((r.organ_id, "") for r in package.response_for) if is_status
                 else tuple((r.organ_id, r.name) for r in package.recipients))
    status = package.status
    business = package.business
    return Incoming(
        doc_id=row["doc_id"], message_type=row["message_type"], from_organ_id=row["from_organ_id"],
        from_name=package.sender.name, to_organs=to_organs,
        document_id=(row["response_for_doc_id"] if is_status else row["edxml_document_id"]),
        business_type=row["business_type"], business_target=row["business_reference_doc_id"],
        code_number=row["code_number"], code_notation=row["code_notation"], subject=row["subject"],
        promulgation_date=row["promulgation_date"], due_date=row["due_date"], document_type=row["document_type"],
        priority=package.priority,
        receivers=tuple((r.organ_id, r.receiver_type) for r in business.receivers) if business else (),
        status_code=status.code if status else None, status_description=status.description if status else None,
        status_time=status.timestamp if status else None,
        signature=verdict.status, signature_subject=verdict.subject, signature_reason=verdict.reason,
        edxml_sha256=store.blobs.put(data), edxml_size=len(data), received_at=row["received_at"],
        delivery_count=row["delivery_count"], attachments=files)


def _verdict(data: bytes, landed: str, signed: bool, ca_bundle: Path | None) -> edxml.Verdict:
    """The signature's verdict with its signer and reason; against the CA bundle when one is set."""
    if not signed:
        return edxml.Verdict(edxml.UNSIGNED)
    try:
        return edxml.verify(data, str(ca_bundle) if ca_bundle else None)
    except edxml.EdxmlError as exc:
        return edxml.Verdict(edxml.INVALID, reason=str(exc))


def _refused(store: DocumentStore, path: Path) -> list[Refused]:
    out = []
    for row in _read_part(path).to_pylist():
        raw = (row.get("raw") or "").encode("utf-8")
        out.append(Refused(row["record_key"], row["reason"], row.get("position") or "", store.blobs.put(raw), len(raw),
                           row.get("fetched_at")))
    return out
