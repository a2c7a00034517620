"""One pass of the provincial axis after a landing: refresh the directory, take in what landed,
send the outbox (01s, local statuses, outgoing documents), follow sent documents to their recipients.

The axis being unreachable does not fail the pass: what could not be sent stays queued, and the
report says why. What has landed is always taken in, so a failed send never holds up delivery to
local systems.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from connectors.document_exchange import DocumentExchangeConnector
from hub.docaxis.receiver import IngestReport, take_in_landing
from hub.docaxis.sender import SendReport, TrackReport, refresh_directory, send_outbox, track_sent
from hub.docaxis.settings import DocaxisSettings
from hub.docaxis.signing import load_signer
from hub.docaxis.store import DocumentStore


@dataclass
class ExchangeReport:
    directory: int | str  # agencies refreshed, or why not
    ingest: IngestReport
    send: SendReport
    track: TrackReport
    counts: dict[str, int] = field(default_factory=dict)
    outbox: dict[str, int] = field(default_factory=dict)
    volumes: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        i, s, t = self.ingest, self.send, self.track
        return [
            f"taken in: {i.stored} new messages from {i.parts} landing parts ({i.redelivered} already stored), "
            f"{i.deliveries} deliveries, {i.statuses_queued} status 01 queued, {i.quarantined} quarantined",
            f"sent: {s.sent} packages, {s.refused} refused by the axis, {s.unknown} of unknown outcome, "
            f"{s.retry_later} left for later" + (f" ({s.errors[0]})" if s.errors else ""),
            f"tracked: {t.documents} sent documents, {t.settled} recipients settled",
            f"store: {self.counts.get('messages', 0)} messages, {self.counts.get('pending_deliveries', 0)} deliveries "
            f"pending, {self.counts.get('quarantined', 0)} quarantined; outbox {self.outbox or '{}'}",
        ]


def exchange(settings: DocaxisSettings, lake: Any, connector: DocumentExchangeConnector | None,
             today: date | None = None) -> ExchangeReport:
    """``lake``: a ``pipelines.lake.HubLake``; ``connector``: None when the axis is not configured
    (what landed is still taken in; nothing is sent)."""
    started = time.monotonic()
    store = DocumentStore.open(settings)
    directory: int | str = "the axis is not configured" if connector is None else refresh_directory(store, connector)
    ingest = take_in_landing(store, lake, settings.ca_bundle)
    sent, tracked = SendReport(), TrackReport()
    if connector is not None:
        sent = send_outbox(store, connector, lambda: load_signer(settings))  # the key is read only to sign
        tracked = track_sent(store, connector)
    return ExchangeReport(directory, ingest, sent, tracked, store.counts(), store.outbox_summary(),
                          store.volumes(today), time.monotonic() - started)
