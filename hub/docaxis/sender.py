"""Sending the outbox through the axis, and following each sent document to its recipients.

An outbox entry moves ``pending`` → ``claimed`` (a sender took it) → ``sending`` (the exact bytes
are recorded and the attempt is about to start; durable before any byte leaves) → ``sent`` (with
the axis DocId) or ``refused`` (the axis said FAIL: for good, with its code and reason).

What a crash or a lost answer leaves behind, and what happens to it:

- ``claimed`` by a sender that is gone: nothing was sent; back to ``pending``.
- ``sending`` left by a sender that is gone, or a ``SendEdoc`` answer lost: the package may have
  reached the axis. A status package is sent again (a second copy of a status does no harm: the
  trail records a code once). A document becomes ``unknown`` and is not sent again by itself, since
  it would reach its recipients twice; ``hub docaxis outbox retry ID`` sends it again knowingly.
- The axis unreachable (retries exhausted): the entry goes back to ``pending`` with the error, and
  the rest of the batch is released untouched for the next run.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

from connectors.document_exchange import DocumentExchangeConnector, SendOutcomeUnknown, SendRefused
from connectors.errors import ConnectorError
from hub.docaxis.packages import status_package
from hub.docaxis.signing import Signer
from hub.docaxis.store import DocumentStore
from hub.orchestration import this_process

log = logging.getLogger(__name__)


@dataclass
class SendReport:
    sent: int = 0
    refused: int = 0
    unknown: int = 0
    retry_later: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def claim_abandoned(claim: str) -> bool:
    """A claim (``host:pid:start``) whose process is gone. A claim of another host cannot be judged
    from here: it is left alone (an operator releases it once that host is known to be down)."""
    if not claim:
        return True
    host, _, rest = claim.partition(":")
    if host != socket.gethostname():
        return False
    pid = rest.partition(":")[0]
    return not pid.isdigit() or this_process(int(pid)) != claim


def send_outbox(store: DocumentStore, connector: DocumentExchangeConnector, signer: Signer | Callable[[], Signer], *,
                claim: str | None = None, limit: int = 500) -> SendReport:
    """Send what the outbox holds, ``limit`` entries per claim, until it is empty: a backlog (the
    01s of a large take-in) leaves with the run that queued it, not one batch per later run. It
    stops early when the axis is unreachable or an answer was lost (those entries wait for the next
    run). ``signer`` may be a function that loads it: it is called once, and only if a package needs
    signing."""
    report = SendReport()
    started = time.monotonic()
    claim = claim or this_process() or f"{socket.gethostname()}:0:0"
    loaded: list[Signer] = [signer] if isinstance(signer, Signer) else []

    def signer_now() -> Signer:
        if not loaded:
            loaded.append(signer())  # type: ignore[operator]  # a factory, called once
        return loaded[0]

    while True:
        entries = store.claim_outbox(claim, claim_abandoned, limit)
        stalled = _send_batch(store, connector, signer_now, claim, entries, report)
        if stalled or len(entries) < limit:
            break
    report.seconds = time.monotonic() - started
    return report


def _send_batch(store: DocumentStore, connector: DocumentExchangeConnector, signer: Callable[[], Signer], claim: str,
                entries: list[dict], report: SendReport) -> bool:
    """Send one claimed batch; True when the run should stop sending (the axis unreachable, or some
    entry left pending for later)."""
    later = report.retry_later
    for position, entry in enumerate(entries):
        if not entry["package_sha256"]:
            try:
                signer()  # loaded here, not in _package: a key that cannot be read refuses no package
            except Exception:
                store.release(claim)
                raise
        try:
            package = _package(store, signer, entry)
        except Exception as exc:  # a package that cannot be built will not build next time either
            store.outbox_failed(entry["id"], "refused", f"the package could not be built: {exc}")
            report.refused += 1
            continue
        try:
            axis_doc_id = connector.send(package, entry["kind"])
        except SendRefused as exc:
            store.outbox_failed(entry["id"], "refused", f"the axis refused it: {exc.error_code} {exc.error_desc}")
            report.refused += 1
        except SendOutcomeUnknown as exc:
            again = entry["kind"] == "status"
            store.outbox_failed(entry["id"], "pending" if again else "unknown", str(exc))
            report.retry_later += again
            report.unknown += not again
        except ConnectorError as exc:
            store.outbox_failed(entry["id"], "pending", str(exc))
            store.release(claim)
            report.retry_later += len(entries) - position
            report.errors.append(str(exc))
            log.warning("docaxis: the axis is unreachable, %d outbox entries left for the next run: %s",
                        len(entries) - position, exc)
            return True
        else:
            store.outbox_sent(entry["id"], axis_doc_id)
            report.sent += 1
    return report.retry_later > later


def _package(store: DocumentStore, signer: Callable[[], Signer], entry: dict) -> bytes:
    """The bytes to send, recorded (``sending``) before the attempt: built and signed on the first
    attempt of a status package, the stored bytes otherwise (a document is built when submitted)."""
    if entry["package_sha256"]:
        store.outbox_begin(entry["id"], entry["package_sha256"])
        return store.blobs.read(entry["package_sha256"])
    package = signer().sign(status_package(json.loads(entry["spec"])))
    store.outbox_begin(entry["id"], store.blobs.put(package))
    return package


@dataclass
class TrackReport:
    documents: int = 0
    settled: int = 0
    errors: list[str] = field(default_factory=list)


def track_sent(store: DocumentStore, connector: DocumentExchangeConnector) -> TrackReport:
    """Ask the axis where each sent document stands at the recipients that have not settled yet."""
    report = TrackReport()
    for outgoing_id, axis_doc_id in store.to_track():
        try:
            recipients = connector.sent_status(axis_doc_id)
        except ConnectorError as exc:
            report.errors.append(f"{outgoing_id}: {exc}")
            if exc.code != "201":
                break
            continue
        report.documents += 1
        report.settled += store.record_deliveries(outgoing_id, [(r.organ_id, r.status, r.updated) for r in recipients])
    return report


def refresh_directory(store: DocumentStore, connector: DocumentExchangeConnector) -> int | str:
    """The axis directory into the store (both code forms); the error text when the axis cannot say."""
    try:
        return store.refresh_agencies(connector.agencies())
    except ConnectorError as exc:
        log.warning("docaxis: the agency directory could not be refreshed, keeping the last one: %s", exc)
        return str(exc)
