"""The province's document axis in Dagster: the provincial document store, the overdue check, and
the sensor that keeps them moving (``hub.docaxis``).

- ``docaxis/store`` follows ``landing/vdxp``: it takes every committed landing part into the store
  (packages, attachments, metadata, document states, deliveries), sends the outbox (the automatic
  01s, the statuses local systems posted, their outgoing documents) and follows sent documents to
  their recipients. Only parts it has not taken in are read; with nothing new and nothing to send a
  run reads no part and writes nothing to the store. Its metadata is what the UI plots: per agency,
  documents received, sent, refused and overdue.
- ``docaxis/overdue`` is the list of documents past their due date without status 06, a live view
  of the store. It is not materialised by a run: it changes with the calendar alone (a document
  becomes overdue at midnight), so it is declared as an external asset and its check,
  ``overdue_documents`` (severity WARN: it never blocks anything), evaluates the view whenever it
  runs: after every exchange, and once a day.
- ``docaxis_inbox`` polls every 30 s: documents waiting on the axis, landing parts the store has not
  taken in (a ``sync_all`` may have landed them), outbox entries to send or sent documents to
  follow; any of them launches ``docaxis_exchange``. It also launches ``docaxis_oversight`` (the
  check alone) once per day. Its peek at the axis hides the message it lists for the visibility
  timeout, so it never peeks twice within one: it launches a follow-up run once the message is
  visible again (see :func:`inbox_reasons`).

``docaxis_exchange`` runs the landing, the canonical documents, the store and the overdue check; the
landing steps of it and of ``sync_all`` share the ``api_vdxp`` pool.
"""


import json
import time
from datetime import datetime
from typing import Callable

import dagster as dg

from connectors.errors import ConnectorError
from hub.docaxis.exchange import exchange
from hub.docaxis.receiver import DATASET, SYSTEM, part_identity
from hub.docaxis.settings import DocaxisSettings
from hub.docaxis.store import DocumentStore
from pipelines.lake import HubLake
from pipelines.sources import OWNERS
from schemas.timefmt import VN_TZ

STORE = dg.AssetKey(["docaxis", "store"])
OVERDUE = dg.AssetKey(["docaxis", "overdue"])
LANDING = dg.AssetKey(["landing", SYSTEM])
METRICS = ("received", "sent", "refused", "sent_refused", "overdue", "sent_overdue")
LISTED = 50  # overdue documents listed in the check's metadata (all are counted)


@dg.asset(key=STORE, deps=[LANDING], group_name="docaxis", kinds={"sqlite", "edxml"}, owners=OWNERS, pool="api_vdxp",
          description="The provincial document axis: every document and status package received for the province's "
                      "agencies (package, attachments, metadata, QCVN 102 state), their delivery to local "
                      "document-management systems, the status trail both ways, and the outbox of status packages "
                      "and outgoing documents, sent signed (RSA-SHA256) through the national axis.")
def document_store(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
    settings = DocaxisSettings.from_env()
    try:
        connector = lake.connector(SYSTEM)
    except ValueError as exc:  # the axis is not configured: still take in what landed
        context.log.warning(f"docaxis: nothing is sent: {exc}")
        connector = None
    report = exchange(settings, lake, connector)
    for line in report.lines():
        context.log.info(line)
    return dg.MaterializeResult(metadata=store_metadata(report))


def store_metadata(report) -> dict:
    i, s = report.ingest, report.send
    totals = {m: sum(v[m] for v in report.volumes.values()) for m in METRICS}
    metadata: dict = {
        "rows": dg.MetadataValue.int(i.stored),
        "messages": dg.MetadataValue.int(report.counts.get("messages", 0)),
        "redelivered": dg.MetadataValue.int(i.redelivered),
        "quarantined": dg.MetadataValue.int(report.counts.get("quarantined", 0)),
        "pending_deliveries": dg.MetadataValue.int(report.counts.get("pending_deliveries", 0)),
        "status_01_queued": dg.MetadataValue.int(i.statuses_queued),
        "packages_sent": dg.MetadataValue.int(s.sent),
        "packages_refused": dg.MetadataValue.int(s.refused),
        "packages_unknown": dg.MetadataValue.int(s.unknown),
        "outbox_pending": dg.MetadataValue.int(report.outbox.get("pending", 0) + report.outbox.get("claimed", 0)),
        "bytes": dg.MetadataValue.int(i.bytes),
        "seconds": dg.MetadataValue.float(report.seconds),
        "directory": dg.MetadataValue.text(str(report.directory)),
        **{m: dg.MetadataValue.int(totals[m]) for m in METRICS},
        "by_agency": dg.MetadataValue.md(_table(report.volumes)),
    }
    for agency, numbers in report.volumes.items():
        for metric in ("received", "sent", "refused", "overdue"):
            metadata[f"{agency} {metric}"] = dg.MetadataValue.int(numbers[metric])
    return metadata


def _table(volumes: dict[str, dict[str, int]]) -> str:
    head = "| agency | " + " | ".join(METRICS) + " |\n|---|" + "---:|" * len(METRICS) + "\n"
    return head + "".join(f"| {a} | " + " | ".join(str(v[m]) for m in METRICS) + " |\n" for a, v in volumes.items())


overdue_view = dg.AssetSpec(
    OVERDUE, deps=[STORE], group_name="docaxis", kinds={"sqlite"}, owners=OWNERS,
    description="Documents past their due date that still stand (not revoked or replaced) and that the agency "
                "owing them has neither finished (status 06) nor refused (02): received ones the province's agencies "
                "owe, and sent ones their recipients owe. A live view of the document store, changing with the "
                "calendar; the overdue_documents check lists it.")


@dg.asset_check(asset=OVERDUE, blocking=False, additional_deps=[STORE],  # in a run with the store: after it
                description="No document is overdue. WARN when some are: metadata counts them per agency and lists "
                            f"the first {LISTED} (GET /v1/overdue lists all for one agency).")
def overdue_documents() -> dg.AssetCheckResult:
    store = DocumentStore.open(DocaxisSettings.from_env())
    items = store.overdue()
    per_agency: dict[str, int] = {}
    for item in items:
        key = item["owed_by"] if item["direction"] == "received" else item["agency"]
        per_agency[key] = per_agency.get(key, 0) + 1
    rows = "".join(f"| {i['direction']} | {i['agency']} | {i['owed_by']} | {i['due_date']} | {i['document_id']} | "
                   f"{(i['subject'] or '').replace('|', '/')[:80]} | {i['last_status'] or '-'} |\n"
                   for i in items[:LISTED])
    listing = ("| direction | agency | owed by | due | document | subject | last status |\n"
               "|---|---|---|---|---|---|---|\n" + rows) if items else "nothing is overdue"
    return dg.AssetCheckResult(
        passed=not items, severity=dg.AssetCheckSeverity.WARN,
        metadata={"overdue": dg.MetadataValue.int(len(items)),
                  "owed_by_province": dg.MetadataValue.int(sum(i["direction"] == "received" for i in items)),
                  "owed_to_province": dg.MetadataValue.int(sum(i["direction"] == "sent" for i in items)),
                  "today": dg.MetadataValue.text(store.today().isoformat()),
                  "per_agency": dg.MetadataValue.json(dict(sorted(per_agency.items()))),
                  "documents": dg.MetadataValue.md(listing)})


docaxis_exchange = dg.define_asset_job(
    "docaxis_exchange",
    selection=(dg.AssetSelection.assets(LANDING, dg.AssetKey(["canonical", DATASET]), STORE)
               | dg.AssetSelection.checks_for_assets(OVERDUE)),
    description="Receive what the axis holds for the province, store it, settle it; take it into the document "
                "store, send the outbox (status 01, local statuses, outgoing documents) and follow sent documents; "
                "list what is overdue.")

docaxis_oversight = dg.define_asset_job(
    "docaxis_oversight", selection=dg.AssetSelection.checks_for_assets(OVERDUE),
    description="List the documents past their due date without status 06 (the overdue_documents check).")


def pending_work(lake: HubLake, settings: DocaxisSettings) -> list[str]:
    """What the store has to do without asking the axis: parts landed and not taken in, outbox
    entries to send, sent documents some recipient of which has not settled."""
    store = DocumentStore.open(settings)
    reasons = []
    records, quarantine = lake.committed_files(SYSTEM, DATASET)
    taken = store.ingested_identities()
    behind = sum(1 for part in records + quarantine if part_identity(part) not in taken)
    if behind:
        reasons.append(f"{behind} landing parts not taken in")
    outbox = store.outbox_summary()
    if outbox.get("pending"):
        reasons.append(f"{outbox['pending']} outbox entries to send")
    tracked = len(store.to_track())
    if tracked:
        reasons.append(f"{tracked} sent documents to follow")
    return reasons


#: Seconds past a peeked message's visibility timeout before the follow-up run (clocks differ a little).
PEEK_MARGIN_S = 2.0
_clock = time.time  # the sensor's clock (tests move it instead of waiting)


def inbox_reasons(state: dict, now: float, work: list[str], peek: Callable[[], int], hidden_for: float) -> list[str]:
    """Why a run is due now (empty: none), updating ``state["peeked_at"]``.

    Peeking (``GetReceivedEdocList``, limit 1) hides what it lists for the visibility timeout, so the
    run it launches cannot receive that message; peeking again before the timeout has passed would
    hide it again, and a lone message would never reach a run. So after a peek that saw something the
    sensor does not peek again: once the peeked message is visible again it launches a follow-up run,
    which lists it. ``work``: what the store has to do anyway (the run it launches lists the axis too).
    """
    reasons = list(work)
    peeked = state.get("peeked_at")
    if peeked is not None:
        if now >= peeked + hidden_for + PEEK_MARGIN_S:
            state["peeked_at"] = None
            reasons.append("a message seen on the axis is visible again")
        return reasons
    if not reasons and peek():
        state["peeked_at"] = now
        reasons.append("messages waiting on the axis")
    return reasons


@dg.sensor(jobs=[docaxis_exchange, docaxis_oversight], minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Launches docaxis_exchange when documents wait on the national axis, landed parts wait for the "
                       "document store, or the outbox has packages to send; docaxis_oversight once a day.")
def docaxis_inbox(context: dg.SensorEvaluationContext, lake: HubLake):
    state = {"tick": 0, "day": "", "peeked_at": None, **(json.loads(context.cursor) if context.cursor else {})}
    settings = DocaxisSettings.from_env()
    connector = None
    try:
        connector = lake.connector(SYSTEM)
    except ValueError as exc:
        context.log.info(f"docaxis: the axis is not configured: {exc}")

    def peek() -> int:
        if connector is None:
            return 0
        try:
            return sum(len(connector.list_received(kind, 1)[0]) for kind in ("edoc", "status"))
        except ConnectorError as exc:
            context.log.info(f"docaxis: the axis cannot be asked: {exc}")
            return 0

    hidden_for = connector.visibility_timeout_s if connector is not None else 0.0
    reasons = inbox_reasons(state, _clock(), pending_work(lake, settings), peek, hidden_for)
    requests = []
    if reasons:
        state["tick"] += 1
        requests.append(dg.RunRequest(job_name="docaxis_exchange", run_key=f"exchange-{state['tick']}",
                                      tags={"hub/trigger": "; ".join(reasons)[:200]}))
    today = datetime.now(VN_TZ).date().isoformat()
    if state["day"] != today:
        state["day"] = today
        requests.append(dg.RunRequest(job_name="docaxis_oversight", run_key=f"oversight-{today}"))
    if not requests:
        waiting = " (a peeked message is hidden until its visibility timeout)" if state["peeked_at"] else ""
        return dg.SensorResult(skip_reason=f"nothing to receive, take in or send{waiting}", cursor=json.dumps(state))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(state))


docaxis_assets = [document_store, overdue_view]
docaxis_checks = [overdue_documents]
docaxis_jobs = [docaxis_exchange, docaxis_oversight]
docaxis_sensors = [docaxis_inbox]
