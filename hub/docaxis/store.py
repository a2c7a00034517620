"""The provincial document store: every message the province received or sent, in SQLite, with its
package and attachments as content-addressed files (:mod:`hub.docaxis.blobs`).

Why SQLite: the store is written by the pipeline (what arrived) and by the API (what local systems
did with it) at once, and read by both; SQLite in WAL mode lets many readers work while one writer
commits, across processes, and ``synchronous=FULL`` makes each commit durable before it returns.
Every change is one short ``BEGIN IMMEDIATE`` transaction; whatever a change causes on the axis (a
status package, an outgoing document) is queued in the *outbox* in that same transaction, so a
crash never leaves a change without its message or a message without its change.

Tables (times are ISO-8601 UTC, dates ``YYYY-MM-DD``):

- ``messages``: one row per axis message taken in (``doc_id`` is the axis DocId, so a redelivery
  is the same row); ``thread`` is the edXML DocumentId of the document it belongs to.
- ``attachments``: the files of each message (``sha256`` names the file in ``blobs/``).
- ``documents``: one row per received document (thread) with its state (:mod:`hub.docaxis.lifecycle`).
- ``deliveries``: one row per (message, province agency it is addressed to): the delivery state
  machine and the agency's last status.
- ``trail``: every status about a document, either way: given by a province agency (``sent``: the
  hub's automatic 01, or what a local system posted) or received from the axis (``received``).
- ``outbox``: status packages and documents to send; ``outgoing`` and ``outgoing_recipients``:
  documents the province's agencies sent through the hub and where each recipient stands.
- ``quarantine``: packages the axis delivered that were refused, with the reason.
- ``agencies``: the axis directory (both code forms); ``ingested_parts``: landing parts taken in.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from hub.docaxis import lifecycle
from hub.docaxis.blobs import BlobStore
from hub.docaxis.settings import DocaxisSettings
from schemas.timefmt import VN_TZ

SCHEMA_VERSION = 1
#: Files no row refers to are removed once this old (``hub docaxis clean``), and never younger than the minimum.
ORPHAN_GRACE = timedelta(days=1)
MIN_ORPHAN_GRACE = timedelta(hours=1)
#: Every column that names a file of ``blobs/`` (each indexed, for the removal's look-ups).
_FILE_COLUMNS = (("messages", "edxml_sha256"), ("attachments", "sha256"), ("quarantine", "raw_sha256"),
                 ("outbox", "package_sha256"), ("outgoing", "package_sha256"))
_LEGACY = re.compile(r"\d{3}\.\d{2}\.\d{2}\.([A-Z]\d{2})")

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS agencies (
  code TEXT PRIMARY KEY, code102 TEXT NOT NULL, name TEXT NOT NULL, parent_code TEXT NOT NULL,
  ours INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS agencies_code102 ON agencies(code102);
CREATE TABLE IF NOT EXISTS messages (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  doc_id TEXT NOT NULL UNIQUE,
  message_type TEXT NOT NULL CHECK (message_type IN ('edoc', 'status')),
  thread TEXT,
  document_id TEXT,
  business_type INTEGER,
  business_target TEXT,
  from_organ_id TEXT NOT NULL,
  from_name TEXT NOT NULL,
  to_organ_ids TEXT NOT NULL,
  code_number TEXT, code_notation TEXT, subject TEXT, promulgation_date TEXT, due_date TEXT,
  document_type TEXT, priority INTEGER,
  receivers TEXT NOT NULL DEFAULT '[]',
  status_code TEXT, status_description TEXT, status_time TEXT,
  signature TEXT NOT NULL, signature_subject TEXT NOT NULL, signature_reason TEXT NOT NULL,
  edxml_sha256 TEXT NOT NULL, edxml_size INTEGER NOT NULL,
  received_at TEXT, delivery_count INTEGER, stored_at TEXT NOT NULL, landing_part TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS messages_thread ON messages(thread);
CREATE INDEX IF NOT EXISTS messages_document ON messages(document_id);
CREATE INDEX IF NOT EXISTS messages_target ON messages(business_target);
CREATE TABLE IF NOT EXISTS attachments (
  doc_id TEXT NOT NULL, position INTEGER NOT NULL, name TEXT NOT NULL, mime TEXT NOT NULL,
  size INTEGER NOT NULL, sha256 TEXT NOT NULL, zipped INTEGER NOT NULL, description TEXT NOT NULL,
  PRIMARY KEY (doc_id, position));
CREATE TABLE IF NOT EXISTS documents (
  thread TEXT PRIMARY KEY, origin_doc_id TEXT, current_doc_id TEXT NOT NULL, state TEXT NOT NULL,
  changed_by TEXT, updates INTEGER NOT NULL, subject TEXT, from_organ_id TEXT, due_date TEXT,
  updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS documents_due ON documents(state, due_date);
CREATE TABLE IF NOT EXISTS deliveries (
  doc_id TEXT NOT NULL, agency TEXT NOT NULL, organ_id TEXT NOT NULL, organ_name TEXT NOT NULL, thread TEXT,
  state TEXT NOT NULL CHECK (state IN ('received', 'delivered', 'acknowledged')),
  withdrawn INTEGER NOT NULL DEFAULT 0,
  received_at TEXT NOT NULL, delivered_at TEXT, acknowledged_at TEXT,
  last_status TEXT, last_status_at TEXT,
  PRIMARY KEY (doc_id, agency));
CREATE INDEX IF NOT EXISTS deliveries_agency ON deliveries(agency, state);
CREATE INDEX IF NOT EXISTS deliveries_thread ON deliveries(thread, agency);
CREATE TABLE IF NOT EXISTS trail (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  thread TEXT NOT NULL,
  document_id TEXT NOT NULL,
  doc_id TEXT,
  outgoing_id TEXT,
  direction TEXT NOT NULL CHECK (direction IN ('sent', 'received')),
  organ_id TEXT NOT NULL,
  agency TEXT,
  code TEXT NOT NULL,
  description TEXT NOT NULL,
  status_time TEXT NOT NULL,
  recorded_at TEXT NOT NULL,
  source TEXT NOT NULL CHECK (source IN ('hub', 'dms', 'axis')),
  message_doc_id TEXT UNIQUE,
  outbox_id INTEGER);
CREATE INDEX IF NOT EXISTS trail_thread ON trail(thread, agency);
CREATE INDEX IF NOT EXISTS trail_outgoing ON trail(outgoing_id);
CREATE UNIQUE INDEX IF NOT EXISTS trail_given_once ON trail(doc_id, agency, code)
  WHERE direction = 'sent' AND doc_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL CHECK (kind IN ('status', 'edoc')),
  dedupe TEXT NOT NULL UNIQUE,
  from_organ_id TEXT NOT NULL,
  to_organ_ids TEXT NOT NULL,
  spec TEXT,
  package_sha256 TEXT,
  state TEXT NOT NULL CHECK (state IN ('pending', 'claimed', 'sending', 'sent', 'refused', 'unknown')),
  claim TEXT, claimed_at TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  axis_doc_id TEXT,
  outgoing_id TEXT,
  created_at TEXT NOT NULL,
  sent_at TEXT);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox(state);
CREATE TABLE IF NOT EXISTS outgoing (
  id TEXT PRIMARY KEY,
  agency TEXT NOT NULL, organ_id TEXT NOT NULL, client_id TEXT NOT NULL, request_id TEXT NOT NULL,
  document_id TEXT NOT NULL UNIQUE,
  business_type INTEGER NOT NULL, business_target TEXT,
  code_number TEXT NOT NULL, code_notation TEXT NOT NULL, subject TEXT NOT NULL,
  promulgation_date TEXT NOT NULL, due_date TEXT,
  attachments TEXT NOT NULL,
  package_sha256 TEXT NOT NULL,
  created_at TEXT NOT NULL,
  UNIQUE (agency, request_id));
CREATE TABLE IF NOT EXISTS outgoing_recipients (
  outgoing_id TEXT NOT NULL, organ_id TEXT NOT NULL, agency TEXT,
  delivery TEXT NOT NULL CHECK (delivery IN ('queued', 'pending', 'done', 'fail')),
  delivery_at TEXT, last_status TEXT, last_status_at TEXT,
  PRIMARY KEY (outgoing_id, organ_id));
CREATE TABLE IF NOT EXISTS quarantine (
  doc_id TEXT PRIMARY KEY, reason TEXT NOT NULL, position TEXT NOT NULL, raw_sha256 TEXT NOT NULL,
  raw_size INTEGER NOT NULL, fetched_at TEXT, recorded_at TEXT NOT NULL, landing_part TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ingested_parts (
  identity TEXT PRIMARY KEY, name TEXT NOT NULL, messages INTEGER NOT NULL, ingested_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS messages_file ON messages(edxml_sha256);
CREATE INDEX IF NOT EXISTS attachments_file ON attachments(sha256);
CREATE INDEX IF NOT EXISTS quarantine_file ON quarantine(raw_sha256);
CREATE INDEX IF NOT EXISTS outbox_file ON outbox(package_sha256);
CREATE INDEX IF NOT EXISTS outgoing_file ON outgoing(package_sha256);
"""


# The rows of overdue(): ``?`` are the day (ISO date), then the agency twice (None: every agency).
# Received: one row per (document, owing agency); sent: one per (document, recipient).
_OVERDUE_RECEIVED = (
    "FROM documents doc JOIN deliveries d ON d.thread = doc.thread "
    "WHERE doc.state = 'active' AND doc.due_date IS NOT NULL AND doc.due_date < ? AND d.withdrawn = 0 "
    "AND (? IS NULL OR d.agency = ?) "
    "AND NOT EXISTS (SELECT 1 FROM trail t WHERE t.thread = doc.thread AND t.agency = d.agency "
    "                AND t.direction = 'sent' AND t.code IN ('02', '06')) ")
_OVERDUE_SENT = (
    "FROM outgoing o JOIN outgoing_recipients r ON r.outgoing_id = o.id "
    "WHERE o.due_date IS NOT NULL AND o.due_date < ? AND r.delivery != 'fail' AND o.business_type != 1 "
    "AND NOT EXISTS (SELECT 1 FROM outgoing x WHERE x.business_type IN (1, 3) "
    "                AND x.business_target = o.document_id) "
    "AND (? IS NULL OR o.agency = ?) "
    "AND NOT EXISTS (SELECT 1 FROM trail t WHERE t.thread = o.document_id AND t.direction = 'received' "
    "                AND t.code IN ('02', '06') AND (t.organ_id = r.organ_id OR t.agency = r.agency)) ")


class StoreError(Exception):
    """A request the store refuses: ``status`` is the HTTP status the API answers with, ``error`` a
    stable code, the message says what and where."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _day(value: date | None) -> str | None:
    return value.isoformat() if value else None


# -- what the receiver hands over --------------------------------------------------------------------

@dataclass(frozen=True)
class IncomingAttachment:
    name: str
    mime: str
    size: int
    sha256: str
    zipped: bool
    description: str = ""


@dataclass(frozen=True)
class Incoming:
    """One message as the receiver took it in: landing metadata, the parsed package, stored files."""

    doc_id: str
    message_type: str
    from_organ_id: str
    from_name: str
    to_organs: tuple[tuple[str, str], ...]  # (OrganId, OrganName) of each recipient (status: ResponseFor)
    document_id: str | None
    business_type: int | None
    business_target: str | None
    code_number: str | None
    code_notation: str | None
    subject: str | None
    promulgation_date: date | None
    due_date: date | None
    document_type: str | None
    priority: int | None
    receivers: tuple[tuple[str, int], ...]
    status_code: str | None
    status_description: str | None
    status_time: datetime | None
    signature: str
    signature_subject: str
    signature_reason: str
    edxml_sha256: str
    edxml_size: int
    received_at: datetime | None
    delivery_count: int | None
    attachments: tuple[IncomingAttachment, ...] = ()


@dataclass(frozen=True)
class Refused:
    doc_id: str
    reason: str
    position: str
    raw_sha256: str
    raw_size: int
    fetched_at: datetime | None


@dataclass
class OrphanReport:
    removed: int = 0  # files removed (dry run: that would be)
    bytes: int = 0
    temporaries: int = 0
    kept: int = 0  # old files that rows refer to


@dataclass
class PartResult:
    stored: int = 0  # new messages
    redelivered: int = 0  # already in the store: absorbed
    deliveries: int = 0
    statuses_queued: int = 0
    quarantined: int = 0


# -- the store --------------------------------------------------------------------------------------

class DocumentStore:
    """One store directory: ``store.sqlite3`` and ``blobs/``. Cheap to construct; connections are
    opened per operation (never held across network calls)."""

    def __init__(self, directory: Path, agency_root: str, clock: Callable[[], datetime] = utc_now) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.database = directory / "store.sqlite3"
        self.blobs = BlobStore(directory / "blobs")
        self.agency_root = agency_root
        self.clock = clock
        with self._connect() as con:
            con.executescript(_DDL)
            found = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if found is None:
                con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(found[0]) != SCHEMA_VERSION:
                raise RuntimeError(f"{self.database} has schema version {found[0]}, this hub reads {SCHEMA_VERSION}")

    @classmethod
    def open(cls, settings: DocaxisSettings, clock: Callable[[], datetime] = utc_now) -> "DocumentStore":
        return cls(settings.directory, settings.agency_root, clock)

    # connections ------------------------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.database, timeout=30, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = FULL")
            con.execute("PRAGMA foreign_keys = ON")
            yield con
        finally:
            con.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One durable transaction; files put since the last sync are made durable before it commits."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                self.blobs.sync()
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                self.blobs.forget()  # what this change put is an orphan now, not a file the next change needs
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as con:
            yield con

    def _now(self) -> str:
        return _iso(self.clock())

    def today(self) -> date:
        return self.clock().astimezone(VN_TZ).date()

    # agencies ---------------------------------------------------------------------------------------

    def is_province_code(self, organ_id: str) -> bool:
        """An organ id (either code form) under the province's level-1 code, by its shape alone."""
        root = self.agency_root
        legacy = _LEGACY.fullmatch(organ_id)
        return organ_id == root or organ_id.startswith(root + ".") or bool(legacy and legacy.group(1) == root)

    def refresh_agencies(self, agencies: Iterable[Any]) -> int:
        """Replace the directory with the axis's (``connectors.document_exchange.Agency`` rows)."""
        rows = [(a.code, a.code102, a.name, a.parent_code,
                 int(self.is_province_code(a.code) or self.is_province_code(a.code102))) for a in agencies if a.code]
        if not rows:
            return 0
        with self._read() as con:
            held = {tuple(r) for r in con.execute("SELECT code, code102, name, parent_code, ours FROM agencies")}
        if held == set(rows):
            # The same directory: nothing to write, and nothing to re-key (every row written since the
            # last refresh was keyed with this directory already).
            return len(rows)
        with self._write() as con:
            con.execute("DELETE FROM agencies")
            con.executemany("INSERT OR REPLACE INTO agencies VALUES (?, ?, ?, ?, ?)", rows)
            # Rows keyed before the directory was known carry the code as written (the QCVN 102 form,
            # say): key them by the Decision 20/2020 code now, so one agency is one key.
            for code, code102, *_ in (r for r in rows if r[4] and r[0] != r[1]):
                for table in ("deliveries", "trail", "outgoing", "outgoing_recipients"):
                    con.execute(f"UPDATE OR IGNORE {table} SET agency = ? WHERE agency = ?", (code, code102))
        return len(rows)

    def resolve(self, organ_id: str, con: sqlite3.Connection | None = None) -> str | None:
        """The province agency an organ id (either code form) stands for, as its Decision 20/2020 code
        when the directory knows it (else as written); None when it is not one of the province's."""
        if not organ_id:
            return None
        if con is None:
            with self._read() as own:
                return self.resolve(organ_id, own)
        row = con.execute("SELECT code, ours FROM agencies WHERE code = ? OR code102 = ? LIMIT 1",
                          (organ_id, organ_id)).fetchone()
        if row is not None:
            return row["code"] if row["ours"] else None
        return organ_id if self.is_province_code(organ_id) else None

    def directory_entry(self, agency: str, con: sqlite3.Connection | None = None) -> dict[str, str] | None:
        if con is None:
            with self._read() as own:
                return self.directory_entry(agency, own)
        row = con.execute("SELECT * FROM agencies WHERE code = ? OR code102 = ? LIMIT 1", (agency, agency)).fetchone()
        return dict(row) if row is not None else None

    def known_to_axis(self, organ_id: str) -> bool | None:
        """Whether the directory lists the organ; None when no directory was fetched yet."""
        with self._read() as con:
            if con.execute("SELECT 1 FROM agencies LIMIT 1").fetchone() is None:
                return None
            return con.execute("SELECT 1 FROM agencies WHERE code = ? OR code102 = ?",
                               (organ_id, organ_id)).fetchone() is not None

    # taking in what arrived -------------------------------------------------------------------------

    def ingested_identities(self) -> set[str]:
        with self._read() as con:
            return {r[0] for r in con.execute("SELECT identity FROM ingested_parts")}

    def known(self, doc_ids: Iterable[str]) -> set[str]:
        ids = list(doc_ids)
        found: set[str] = set()
        with self._read() as con:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                found |= {r[0] for r in con.execute(f"SELECT doc_id FROM messages WHERE doc_id IN ({marks})", chunk)}
                found |= {r[0] for r in con.execute(f"SELECT doc_id FROM quarantine WHERE doc_id IN ({marks})", chunk)}
        return found

    def take_in(self, identity: str, name: str, incoming: Sequence[Incoming], refused: Sequence[Refused]) -> PartResult:
        """Record one landing part in one transaction: its messages (those not already stored), their
        deliveries, the 01 of each delivery in the outbox, the trail of status packages, the states
        of the documents touched; and the part as taken in. Files must already be put."""
        result = PartResult()
        now = self._now()
        with self._write() as con:
            if con.execute("SELECT 1 FROM ingested_parts WHERE identity = ?", (identity,)).fetchone():
                return result
            touched: set[str] = set()
            for message in incoming:
                if con.execute("SELECT 1 FROM messages WHERE doc_id = ?", (message.doc_id,)).fetchone():
                    result.redelivered += 1
                    continue
                self._insert_message(con, message, name, now)
                result.stored += 1
                if message.message_type == "edoc":
                    thread = _thread(message)
                    touched.add(thread)
                    if message.business_type == lifecycle.REPLACE and message.business_target:
                        touched.add(message.business_target)
                    made, queued = self._deliver(con, message, thread, now)
                    result.deliveries += made
                    result.statuses_queued += queued
                else:
                    self._record_received_status(con, message, now)
            for thread in touched:
                self._refresh_thread(con, thread, now)
            for item in refused:
                cursor = con.execute("INSERT OR IGNORE INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                     (item.doc_id, item.reason, item.position, item.raw_sha256, item.raw_size,
                                      _iso(item.fetched_at), now, name))
                result.quarantined += cursor.rowcount
            con.execute("INSERT INTO ingested_parts VALUES (?, ?, ?, ?)",
                        (identity, name, len(incoming) + len(refused), now))
        return result

    def _insert_message(self, con: sqlite3.Connection, m: Incoming, part: str, now: str) -> None:
        thread = _thread(m) if m.message_type == "edoc" else self._status_thread(con, m.document_id)
        con.execute(
            "INSERT INTO messages (doc_id, message_type, thread, document_id, business_type, business_target, "
            "from_organ_id, from_name, to_organ_ids, code_number, code_notation, subject, promulgation_date, "
            "due_date, document_type, priority, receivers, status_code, status_description, status_time, signature, "
            "signature_subject, signature_reason, edxml_sha256, edxml_size, received_at, delivery_count, stored_at, "
            "landing_part) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (m.doc_id, m.message_type, thread, m.document_id, m.business_type, m.business_target, m.from_organ_id,
             m.from_name, json.dumps([o for o, _ in m.to_organs]), m.code_number, m.code_notation, m.subject,
             _day(m.promulgation_date), _day(m.due_date), m.document_type, m.priority,
             json.dumps([list(r) for r in m.receivers]), m.status_code, m.status_description, _iso(m.status_time),
             m.signature, m.signature_subject, m.signature_reason, m.edxml_sha256, m.edxml_size, _iso(m.received_at),
             m.delivery_count, now, part))
        con.executemany("INSERT INTO attachments VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [(m.doc_id, k, a.name, a.mime, a.size, a.sha256, int(a.zipped), a.description)
                         for k, a in enumerate(m.attachments, start=1)])

    def _status_thread(self, con: sqlite3.Connection, document_id: str | None) -> str:
        """The document a status package is about: a received document's thread when it names one of
        its messages (an update carries the DocumentId of what it updates), else the DocumentId."""
        if not document_id:
            return ""
        row = con.execute("SELECT thread FROM messages WHERE message_type = 'edoc' AND document_id = ? "
                          "ORDER BY seq LIMIT 1", (document_id,)).fetchone()
        return row["thread"] if row is not None and row["thread"] else document_id

    def _deliver(self, con: sqlite3.Connection, m: Incoming, thread: str, now: str) -> tuple[int, int]:
        """A delivery for each province agency the message is addressed to, and its 01 queued."""
        made = queued = 0
        seen: set[str] = set()
        for organ, organ_name in m.to_organs:
            agency = self.resolve(organ, con)
            if agency is None or agency in seen:
                continue
            seen.add(agency)
            con.execute("INSERT INTO deliveries (doc_id, agency, organ_id, organ_name, thread, state, received_at) "
                        "VALUES (?, ?, ?, ?, ?, 'received', ?)", (m.doc_id, agency, organ, organ_name, thread, now))
            made += 1
            if self._give_status(con, m.doc_id, agency, "01", lifecycle.DESCRIPTIONS["01"], None, "hub", now):
                queued += 1
        return made, queued

    def _record_received_status(self, con: sqlite3.Connection, m: Incoming, now: str) -> None:
        """A status package from the axis: into the trail of the document it answers, and onto the
        recipient's row when the document is one the province sent through the hub."""
        document_id = m.document_id or ""
        thread = self._status_thread(con, document_id)
        outgoing = con.execute("SELECT id FROM outgoing WHERE document_id = ?", (document_id,)).fetchone()
        outgoing_id = outgoing["id"] if outgoing is not None else None
        moment = _iso(m.status_time) or now
        con.execute("INSERT OR IGNORE INTO trail (thread, document_id, doc_id, outgoing_id, direction, organ_id, agency, "
                    "code, description, status_time, recorded_at, source, message_doc_id) "
                    "VALUES (?, ?, NULL, ?, 'received', ?, ?, ?, ?, ?, ?, 'axis', ?)",
                    (thread, document_id, outgoing_id, m.from_organ_id, self.resolve(m.from_organ_id, con),
                     m.status_code or "", m.status_description or "", moment, now, m.doc_id))
        if outgoing_id is not None:
            for row in con.execute("SELECT organ_id FROM outgoing_recipients WHERE outgoing_id = ?", (outgoing_id,)):
                if self._same_organ(con, row["organ_id"], m.from_organ_id):
                    con.execute("UPDATE outgoing_recipients SET last_status = ?, last_status_at = ? "
                                "WHERE outgoing_id = ? AND organ_id = ? AND (last_status_at IS NULL OR last_status_at <= ?)",
                                (m.status_code, moment, outgoing_id, row["organ_id"], moment))

    @staticmethod
    def _same_organ(con: sqlite3.Connection, a: str, b: str) -> bool:
        if a == b:
            return True
        row = con.execute("SELECT 1 FROM agencies WHERE (code = ? AND code102 = ?) OR (code102 = ? AND code = ?)",
                          (a, b, a, b)).fetchone()
        return row is not None

    def _refresh_thread(self, con: sqlite3.Connection, thread: str, now: str) -> None:
        """Recompute one document's state from all its messages (order of arrival cannot matter)."""
        rows = con.execute("SELECT doc_id, business_type, receivers, subject, from_organ_id, due_date FROM messages "
                           "WHERE thread = ? AND message_type = 'edoc' ORDER BY seq", (thread,)).fetchall()
        if not rows:
            return
        messages = [lifecycle.ThreadMessage(r["doc_id"], r["business_type"] if r["business_type"] is not None else 0,
                                            tuple((o, int(k)) for o, k in json.loads(r["receivers"])))
                    for r in rows]
        replacing = [r["doc_id"] for r in con.execute(
            "SELECT doc_id FROM messages WHERE business_type = ? AND business_target = ? AND thread != ? ORDER BY seq",
            (lifecycle.REPLACE, thread, thread))]
        state = lifecycle.thread_state(messages, replacing)
        current = next(r for r in rows if r["doc_id"] == state.current_doc_id)
        con.execute("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(thread) DO UPDATE SET "
                    "origin_doc_id = excluded.origin_doc_id, current_doc_id = excluded.current_doc_id, "
                    "state = excluded.state, changed_by = excluded.changed_by, updates = excluded.updates, "
                    "subject = excluded.subject, from_organ_id = excluded.from_organ_id, due_date = excluded.due_date, "
                    "updated_at = excluded.updated_at",
                    (thread, state.origin_doc_id, state.current_doc_id, state.state, state.changed_by, state.updates,
                     current["subject"], current["from_organ_id"], current["due_date"], now))
        removed = {a for a in (self.resolve(o, con) for o in state.removed) if a}
        for row in con.execute("SELECT DISTINCT agency FROM deliveries WHERE thread = ?", (thread,)).fetchall():
            con.execute("UPDATE deliveries SET withdrawn = ? WHERE thread = ? AND agency = ?",
                        (int(row["agency"] in removed), thread, row["agency"]))

    # statuses a province agency gives ---------------------------------------------------------------

    def _give_status(self, con: sqlite3.Connection, doc_id: str, agency: str, code: str, description: str,
                     staff: dict | None, source: str, now: str) -> int | None:
        """Trail and outbox rows for a status the agency gives on a message; the outbox id, or None
        when the agency already gave this code on it (recorded once)."""
        delivery = con.execute("SELECT organ_id, organ_name FROM deliveries WHERE doc_id = ? AND agency = ?",
                               (doc_id, agency)).fetchone()
        message = con.execute("SELECT * FROM messages WHERE doc_id = ?", (doc_id,)).fetchone()
        dedupe = f"status:{doc_id}:{agency}:{code}"
        if con.execute("SELECT 1 FROM outbox WHERE dedupe = ?", (dedupe,)).fetchone():
            return None
        code_text = "/".join(p for p in (message["code_number"], message["code_notation"]) if p)
        spec = {"code": code, "description": description, "timestamp": now,
                "from": {"organ_id": delivery["organ_id"], "name": delivery["organ_name"]},
                "response_for": {"organ_id": message["from_organ_id"], "code": code_text,
                                 "promulgation_date": message["promulgation_date"],
                                 "document_id": message["document_id"] or ""},
                "staff": staff}
        cursor = con.execute("INSERT INTO outbox (kind, dedupe, from_organ_id, to_organ_ids, spec, state, created_at) "
                             "VALUES ('status', ?, ?, ?, ?, 'pending', ?)",
                             (dedupe, delivery["organ_id"], json.dumps([message["from_organ_id"]]), json.dumps(spec),
                              now))
        outbox_id = cursor.lastrowid
        con.execute("INSERT INTO trail (thread, document_id, doc_id, direction, organ_id, agency, code, description, "
                    "status_time, recorded_at, source, outbox_id) VALUES (?, ?, ?, 'sent', ?, ?, ?, ?, ?, ?, ?, ?)",
                    (message["thread"] or message["document_id"] or "", message["document_id"] or "", doc_id,
                     delivery["organ_id"], agency, code, description, now, now, source, outbox_id))
        con.execute("UPDATE deliveries SET last_status = ?, last_status_at = ? WHERE doc_id = ? AND agency = ?",
                    (code, now, doc_id, agency))
        return outbox_id

    def post_status(self, doc_id: str, agency: str, code: str, description: str = "",
                    staff: dict | None = None) -> dict[str, Any]:
        """A local system's status on a message its agency received: checked against the document's
        business (lifecycle), recorded in the trail and queued as a status package, atomically."""
        now = self._now()
        with self._write() as con:
            delivery = self._delivery(con, doc_id, agency)
            message = con.execute("SELECT business_type, thread FROM messages WHERE doc_id = ?", (doc_id,)).fetchone()
            given = [r["code"] for r in con.execute(
                "SELECT code FROM trail WHERE thread = ? AND agency = ? AND direction = 'sent'",
                (delivery["thread"], agency))]
            recall = con.execute("SELECT 1 FROM trail WHERE thread = ? AND direction = 'received' AND code = '13'",
                                 (delivery["thread"],)).fetchone() is not None
            problem = lifecycle.receiver_status_refusal(code, message["business_type"], given, recall)
            if problem:
                raise StoreError(409 if code in lifecycle.RECEIVER_CODES else 400,
                                 "status_not_allowed" if code in lifecycle.RECEIVER_CODES else "invalid_status", problem)
            outbox_id = self._give_status(con, doc_id, agency, code, description or lifecycle.DESCRIPTIONS[code], staff,
                                          "dms", now)
            created = outbox_id is not None
            row = con.execute("SELECT t.id, t.recorded_at, o.id AS outbox_id, o.state FROM trail t "
                              "JOIN outbox o ON o.id = t.outbox_id WHERE t.doc_id = ? AND t.agency = ? AND t.code = ? "
                              "AND t.direction = 'sent'", (doc_id, agency, code)).fetchone()
        return {"doc_id": doc_id, "agency": agency, "code": code, "created": created, "trail_id": row["id"],
                "recorded_at": row["recorded_at"], "outbox_id": row["outbox_id"], "outbox_state": row["state"]}

    # delivering to local systems --------------------------------------------------------------------

    def _delivery(self, con: sqlite3.Connection, doc_id: str, agency: str) -> sqlite3.Row:
        row = con.execute("SELECT * FROM deliveries WHERE doc_id = ? AND agency = ?", (doc_id, agency)).fetchone()
        if row is None:
            raise StoreError(404, "not_found", f"no document {doc_id} for agency {agency}")
        return row

    def pending(self, agency: str, after: int = 0, limit: int = 100) -> tuple[list[dict[str, Any]], int | None]:
        """Messages delivered to ``agency`` that its system has not acknowledged, oldest first, after
        the position ``after``; and the position to continue from (None: nothing more)."""
        with self._read() as con:
            rows = con.execute(
                "SELECT m.seq, m.doc_id, m.document_id, m.thread, m.business_type, m.business_target, m.subject, "
                "m.from_organ_id, m.from_name, m.code_number, m.code_notation, m.promulgation_date, m.due_date, "
                "m.received_at, m.signature, d.state, d.withdrawn, d.received_at AS stored_at, d.last_status, "
                "doc.state AS document_state, (SELECT count(*) FROM attachments a WHERE a.doc_id = m.doc_id) AS files "
                "FROM deliveries d JOIN messages m ON m.doc_id = d.doc_id LEFT JOIN documents doc ON doc.thread = d.thread "
                "WHERE d.agency = ? AND d.state != 'acknowledged' AND m.seq > ? ORDER BY m.seq LIMIT ?",
                (agency, after, limit + 1)).fetchall()
        items = [_summary(r) for r in rows[:limit]]
        return items, (rows[limit - 1]["seq"] if len(rows) > limit else None)

    def document(self, doc_id: str, agency: str, fetched: bool = True) -> dict[str, Any]:
        """One message for one agency, with its attachments, its document's state and trail (the
        agency's own statuses and what the axis brought about the document; other recipients'
        statuses are theirs); marks the delivery ``delivered`` unless ``fetched`` is false."""
        now = self._now()
        with self._write() as con:
            delivery = self._delivery(con, doc_id, agency)
            if fetched and delivery["state"] == lifecycle.RECEIVED:
                con.execute("UPDATE deliveries SET state = 'delivered', delivered_at = ? WHERE doc_id = ? AND agency = ?",
                            (now, doc_id, agency))
            delivery = self._delivery(con, doc_id, agency)
            message = con.execute("SELECT * FROM messages WHERE doc_id = ?", (doc_id,)).fetchone()
            files = con.execute("SELECT * FROM attachments WHERE doc_id = ? ORDER BY position", (doc_id,)).fetchall()
            document = con.execute("SELECT * FROM documents WHERE thread = ?", (message["thread"],)).fetchone()
            trail = con.execute("SELECT * FROM trail WHERE thread = ? AND (agency = ? OR direction = 'received') "
                                "ORDER BY status_time, id", (message["thread"], agency)).fetchall()
            versions = con.execute("SELECT doc_id, business_type, stored_at FROM messages WHERE thread = ? "
                                   "AND message_type = 'edoc' ORDER BY seq", (message["thread"],)).fetchall()
        return {
            "doc_id": doc_id, "agency": agency, "delivery": _delivery_view(delivery),
            "message": _message_view(message),
            "attachments": [{"position": f["position"], "name": f["name"], "mime": f["mime"], "size": f["size"],
                             "sha256": f["sha256"], "zipped": bool(f["zipped"]), "description": f["description"]}
                            for f in files],
            "document": _document_view(document) if document is not None else None,
            "versions": [{"doc_id": v["doc_id"], "business": lifecycle.BUSINESS_NAMES.get(v["business_type"], "new"),
                          "stored_at": v["stored_at"]} for v in versions],
            "trail": [_trail_view(t) for t in trail],
        }

    def package_of(self, doc_id: str, agency: str) -> tuple[str, int]:
        with self._read() as con:
            self._delivery(con, doc_id, agency)
            row = con.execute("SELECT edxml_sha256, edxml_size FROM messages WHERE doc_id = ?", (doc_id,)).fetchone()
        return row["edxml_sha256"], row["edxml_size"]

    def attachment_of(self, doc_id: str, agency: str, position: int) -> dict[str, Any]:
        with self._read() as con:
            self._delivery(con, doc_id, agency)
            row = con.execute("SELECT * FROM attachments WHERE doc_id = ? AND position = ?", (doc_id, position)).fetchone()
        if row is None:
            raise StoreError(404, "not_found", f"document {doc_id} has no attachment {position}")
        return dict(row)

    def acknowledge(self, doc_id: str, agency: str) -> dict[str, Any]:
        """The agency's system holds the message: ``acknowledged`` (again: the same answer)."""
        now = self._now()
        with self._write() as con:
            delivery = self._delivery(con, doc_id, agency)
            if delivery["state"] != lifecycle.ACKNOWLEDGED:
                con.execute("UPDATE deliveries SET state = 'acknowledged', acknowledged_at = ?, "
                            "delivered_at = coalesce(delivered_at, ?) WHERE doc_id = ? AND agency = ?",
                            (now, now, doc_id, agency))
            return _delivery_view(self._delivery(con, doc_id, agency))

    # sending for the province's agencies ------------------------------------------------------------

    def submit_outgoing(self, *, agency: str, organ_id: str, client_id: str, request_id: str, document_id: str,
                        business_type: int, business_target: str | None, code_number: str, code_notation: str,
                        subject: str, promulgation_date: date, due_date: date | None,
                        recipients: Sequence[str], attachments: Sequence[dict[str, Any]],
                        package_sha256: str) -> tuple[dict[str, Any], bool]:
        """Record an outgoing document and queue its package (already built, signed and put) in one
        transaction; (the outgoing document, True) — or the one this ``request_id`` already created
        and False, so a client that retries after a lost answer sends nothing twice."""
        now = self._now()
        with self._write() as con:
            again = con.execute("SELECT id, document_id FROM outgoing WHERE agency = ? AND request_id = ?",
                                (agency, request_id)).fetchone()
            if again is not None:
                if again["document_id"] != document_id:
                    raise StoreError(409, "request_id_reused",
                                     f"request_id {request_id} was used for document {again['document_id']}")
                return self._outgoing(con, again["id"]), False
            clash = con.execute("SELECT id FROM outgoing WHERE document_id = ?", (document_id,)).fetchone()
            if clash is not None:
                raise StoreError(409, "document_exists", f"document {document_id} was already sent (outgoing "
                                                         f"{clash['id']}); a new one needs a new number")
            outgoing_id = str(uuid.uuid4())
            con.execute("INSERT INTO outgoing VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (outgoing_id, agency, organ_id, client_id, request_id, document_id, business_type,
                         business_target, code_number, code_notation, subject, _day(promulgation_date),
                         _day(due_date), json.dumps(list(attachments)), package_sha256, now))
            con.executemany("INSERT INTO outgoing_recipients (outgoing_id, organ_id, agency, delivery) "
                            "VALUES (?, ?, ?, 'queued')",
                            [(outgoing_id, organ, self.resolve(organ, con)) for organ in recipients])
            con.execute("INSERT INTO outbox (kind, dedupe, from_organ_id, to_organ_ids, package_sha256, state, "
                        "outgoing_id, created_at) VALUES ('edoc', ?, ?, ?, ?, 'pending', ?, ?)",
                        (f"edoc:{outgoing_id}", organ_id, json.dumps(list(recipients)), package_sha256, outgoing_id,
                         now))
            return self._outgoing(con, outgoing_id), True

    def recall(self, outgoing_id: str, agency: str, description: str = "", staff: dict | None = None) -> dict[str, Any]:
        """Status 13 on a document the agency sent: one status package to each recipient, queued."""
        now = self._now()
        with self._write() as con:
            outgoing = self._outgoing_row(con, outgoing_id, agency)
            created = []
            text = description or lifecycle.DESCRIPTIONS["13"]
            for recipient in con.execute("SELECT organ_id FROM outgoing_recipients WHERE outgoing_id = ?",
                                         (outgoing_id,)).fetchall():
                organ = recipient["organ_id"]
                dedupe = f"recall:{outgoing_id}:{organ}"
                if con.execute("SELECT 1 FROM outbox WHERE dedupe = ?", (dedupe,)).fetchone():
                    continue
                spec = {"code": "13", "description": text, "timestamp": now,
                        "from": {"organ_id": outgoing["organ_id"], "name": self._name(con, outgoing["agency"])},
                        "response_for": {"organ_id": organ,
                                         "code": f"{outgoing['code_number']}/{outgoing['code_notation']}",
                                         "promulgation_date": outgoing["promulgation_date"],
                                         "document_id": outgoing["document_id"]},
                        "staff": staff}
                cursor = con.execute("INSERT INTO outbox (kind, dedupe, from_organ_id, to_organ_ids, spec, state, "
                                     "outgoing_id, created_at) VALUES ('status', ?, ?, ?, ?, 'pending', ?, ?)",
                                     (dedupe, outgoing["organ_id"], json.dumps([organ]), json.dumps(spec), outgoing_id,
                                      now))
                con.execute("INSERT INTO trail (thread, document_id, outgoing_id, direction, organ_id, agency, code, "
                            "description, status_time, recorded_at, source, outbox_id) "
                            "VALUES (?, ?, ?, 'sent', ?, ?, '13', ?, ?, ?, 'dms', ?)",
                            (outgoing["document_id"], outgoing["document_id"], outgoing_id, outgoing["organ_id"],
                             agency, text, now, now, cursor.lastrowid))
                created.append(organ)
            return {**self._outgoing(con, outgoing_id), "recalled_from": created}

    def _name(self, con: sqlite3.Connection, agency: str) -> str:
        row = con.execute("SELECT name FROM agencies WHERE code = ? OR code102 = ?", (agency, agency)).fetchone()
        return row["name"] if row is not None else ""

    def _outgoing_row(self, con: sqlite3.Connection, outgoing_id: str, agency: str | None) -> sqlite3.Row:
        row = con.execute("SELECT * FROM outgoing WHERE id = ?", (outgoing_id,)).fetchone()
        if row is None or (agency is not None and row["agency"] != agency):
            raise StoreError(404, "not_found", f"no outgoing document {outgoing_id} of agency {agency}")
        return row

    def _outgoing(self, con: sqlite3.Connection, outgoing_id: str) -> dict[str, Any]:
        row = self._outgoing_row(con, outgoing_id, None)
        recipients = con.execute("SELECT * FROM outgoing_recipients WHERE outgoing_id = ? ORDER BY organ_id",
                                 (outgoing_id,)).fetchall()
        outbox = con.execute("SELECT state, attempts, last_error, axis_doc_id, sent_at FROM outbox "
                             "WHERE dedupe = ?", (f"edoc:{outgoing_id}",)).fetchone()
        trail = con.execute("SELECT * FROM trail WHERE outgoing_id = ? OR (thread = ? AND direction = 'received') "
                            "ORDER BY status_time, id", (outgoing_id, row["document_id"])).fetchall()
        return {
            "id": row["id"], "agency": row["agency"], "organ_id": row["organ_id"], "request_id": row["request_id"],
            "document_id": row["document_id"], "business": lifecycle.BUSINESS_NAMES[row["business_type"]],
            "business_target": row["business_target"], "code_number": row["code_number"],
            "code_notation": row["code_notation"], "subject": row["subject"],
            "promulgation_date": row["promulgation_date"], "due_date": row["due_date"],
            "attachments": json.loads(row["attachments"]), "created_at": row["created_at"],
            "package_sha256": row["package_sha256"],
            "sending": dict(outbox) if outbox is not None else None,
            "recipients": [{"organ_id": r["organ_id"], "agency": r["agency"], "delivery": r["delivery"],
                            "delivery_at": r["delivery_at"], "last_status": r["last_status"],
                            "last_status_at": r["last_status_at"]} for r in recipients],
            "trail": [_trail_view(t) for t in trail],
        }

    def outgoing(self, outgoing_id: str, agency: str | None = None) -> dict[str, Any]:
        with self._read() as con:
            self._outgoing_row(con, outgoing_id, agency)
            return self._outgoing(con, outgoing_id)

    def outgoing_list(self, agency: str, limit: int = 100) -> list[dict[str, Any]]:
        with self._read() as con:
            ids = [r["id"] for r in con.execute("SELECT id FROM outgoing WHERE agency = ? ORDER BY created_at DESC "
                                                "LIMIT ?", (agency, limit))]
            return [self._outgoing(con, i) for i in ids]

    # the outbox -------------------------------------------------------------------------------------

    def claim_outbox(self, claim: str, abandoned: Callable[[str], bool], limit: int = 500) -> list[dict[str, Any]]:
        """Entries this sender may send now, marked ``claimed`` by it (see :mod:`hub.docaxis.sender`).
        Entries another sender left (``abandoned(claim)``: its process is gone) are taken back first:
        ``claimed`` ones were never attempted and are pending again; a ``sending`` status package is
        sent again (a duplicate status does no harm); a ``sending`` document becomes ``unknown`` (it
        may have reached the axis, and sending it again could deliver it twice)."""
        now = self._now()
        with self._read() as con:  # an empty outbox takes no write lock (a run with nothing to send writes nothing)
            waiting = con.execute("SELECT 1 FROM outbox WHERE state IN ('pending', 'claimed', 'sending') LIMIT 1")
            if waiting.fetchone() is None:
                return []
        with self._write() as con:
            for row in con.execute("SELECT id, kind, state, claim FROM outbox WHERE state IN ('claimed', 'sending')"
                                   ).fetchall():
                if row["claim"] == claim or not abandoned(row["claim"] or ""):
                    continue
                if row["state"] == "claimed" or row["kind"] == "status":
                    con.execute("UPDATE outbox SET state = 'pending', claim = NULL WHERE id = ?", (row["id"],))
                else:
                    con.execute("UPDATE outbox SET state = 'unknown', claim = NULL, last_error = ? WHERE id = ?",
                                ("the sender stopped after sending began; the document may or may not have reached "
                                 "the axis, so it is not sent again by itself", row["id"]))
            rows = con.execute("SELECT * FROM outbox WHERE state = 'pending' ORDER BY id LIMIT ?", (limit,)).fetchall()
            con.executemany("UPDATE outbox SET state = 'claimed', claim = ?, claimed_at = ? WHERE id = ?",
                            [(claim, now, r["id"]) for r in rows])
        return [dict(r) for r in rows]

    def outbox_begin(self, outbox_id: int, package_sha256: str) -> None:
        """An attempt is about to start with these exact bytes (durable before any byte is sent)."""
        with self._write() as con:
            con.execute("UPDATE outbox SET state = 'sending', package_sha256 = ?, attempts = attempts + 1 WHERE id = ?",
                        (package_sha256, outbox_id))

    def release(self, claim: str) -> int:
        """Entries this sender claimed but did not attempt, back to ``pending``."""
        with self._write() as con:
            return con.execute("UPDATE outbox SET state = 'pending', claim = NULL WHERE claim = ? AND state = 'claimed'",
                               (claim,)).rowcount

    def outbox_sent(self, outbox_id: int, axis_doc_id: str) -> None:
        now = self._now()
        with self._write() as con:
            row = con.execute("SELECT kind, outgoing_id FROM outbox WHERE id = ?", (outbox_id,)).fetchone()
            con.execute("UPDATE outbox SET state = 'sent', axis_doc_id = ?, sent_at = ?, claim = NULL, last_error = NULL "
                        "WHERE id = ?", (axis_doc_id, now, outbox_id))
            if row["kind"] == "edoc":
                con.execute("UPDATE outgoing_recipients SET delivery = 'pending', delivery_at = ? "
                            "WHERE outgoing_id = ? AND delivery = 'queued'", (now, row["outgoing_id"]))

    def outbox_failed(self, outbox_id: int, state: str, error: str) -> None:
        """``refused`` (the axis said no, for good), ``unknown`` (a lost answer) or ``pending`` (try again)."""
        if state not in ("refused", "unknown", "pending"):
            raise ValueError(state)
        now = self._now()
        with self._write() as con:
            con.execute("UPDATE outbox SET state = ?, last_error = ?, claim = NULL WHERE id = ?", (state, error, outbox_id))
            row = con.execute("SELECT kind, outgoing_id FROM outbox WHERE id = ?", (outbox_id,)).fetchone()
            if state == "refused" and row["kind"] == "edoc":
                con.execute("UPDATE outgoing_recipients SET delivery = 'fail', delivery_at = ? WHERE outgoing_id = ?",
                            (now, row["outgoing_id"]))

    def retry_unknown(self, outbox_id: int) -> None:
        """An operator decided a document whose sending outcome was lost may be sent again."""
        with self._write() as con:
            cursor = con.execute("UPDATE outbox SET state = 'pending', last_error = NULL WHERE id = ? "
                                 "AND state IN ('unknown', 'refused')", (outbox_id,))
            if not cursor.rowcount:
                raise StoreError(409, "not_retryable", f"outbox entry {outbox_id} is not unknown or refused")

    def outbox_summary(self) -> dict[str, int]:
        with self._read() as con:
            return {r["state"]: r["n"] for r in con.execute("SELECT state, count(*) AS n FROM outbox GROUP BY state")}

    def outbox_entries(self, states: Sequence[str] = ("pending", "claimed", "sending", "refused", "unknown")) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(states))
        with self._read() as con:
            return [dict(r) for r in con.execute(
                f"SELECT id, kind, dedupe, from_organ_id, to_organ_ids, state, attempts, last_error, axis_doc_id, "
                f"outgoing_id, created_at, sent_at FROM outbox WHERE state IN ({marks}) ORDER BY id", list(states))]

    def to_track(self) -> list[tuple[str, str]]:
        """(outgoing id, axis DocId) of sent documents some recipient of which has not settled."""
        with self._read() as con:
            return [(r["outgoing_id"], r["axis_doc_id"]) for r in con.execute(
                "SELECT DISTINCT o.outgoing_id, o.axis_doc_id FROM outbox o JOIN outgoing_recipients r "
                "ON r.outgoing_id = o.outgoing_id WHERE o.kind = 'edoc' AND o.state = 'sent' AND r.delivery = 'pending'")]

    def record_deliveries(self, outgoing_id: str, states: Iterable[tuple[str, str, datetime | None]]) -> int:
        """Each recipient's delivery as the axis reports it (``pending``/``done``/``fail``)."""
        changed = 0
        with self._write() as con:
            recipients = [r["organ_id"] for r in con.execute(
                "SELECT organ_id FROM outgoing_recipients WHERE outgoing_id = ?", (outgoing_id,))]
            for organ, status, moment in states:
                if status not in ("done", "fail"):
                    continue
                for recipient in recipients:
                    if self._same_organ(con, recipient, organ):
                        cursor = con.execute("UPDATE outgoing_recipients SET delivery = ?, delivery_at = ? "
                                             "WHERE outgoing_id = ? AND organ_id = ? AND delivery = 'pending'",
                                             (status, _iso(moment) or self._now(), outgoing_id, recipient))
                        changed += cursor.rowcount
        return changed

    def status_spec(self, outbox_id: int) -> dict[str, Any]:
        with self._read() as con:
            row = con.execute("SELECT spec FROM outbox WHERE id = ?", (outbox_id,)).fetchone()
        return json.loads(row["spec"])

    # oversight ---------------------------------------------------------------------------------------

    def overdue(self, today: date | None = None, agency: str | None = None) -> list[dict[str, Any]]:
        """Documents past their due date that still stand and that the agency owing them has neither
        finished (06) nor refused (02): received ones (the province's agency owes the status) and sent
        ones (an outside or local recipient owes it to the province's agency)."""
        day = (today or self.today()).isoformat()
        with self._read() as con:
            received = con.execute(
                "SELECT doc.thread AS document_id, d.agency, doc.due_date, doc.subject, doc.from_organ_id AS counterpart, "
                "min(d.doc_id) AS doc_id, max(d.last_status) AS last_status " + _OVERDUE_RECEIVED +
                "GROUP BY doc.thread, d.agency ORDER BY doc.due_date, doc.thread, d.agency",
                (day, agency, agency)).fetchall()
            sent = con.execute(
                "SELECT o.document_id, o.agency, o.due_date, o.subject, r.organ_id AS counterpart, o.id AS outgoing_id, "
                "r.last_status " + _OVERDUE_SENT + "ORDER BY o.due_date, o.document_id", (day, agency, agency)).fetchall()
        out = [{"direction": "received", "owed_by": r["agency"], **dict(r)} for r in received]
        out += [{"direction": "sent", "owed_by": r["counterpart"], **dict(r)} for r in sent]
        return out

    def volumes(self, today: date | None = None) -> dict[str, dict[str, int]]:
        """Per province agency: documents received, sent, refused (by the agency: 02), sent ones
        refused by their recipients (02, or refused by the axis), overdue (owed by the agency) and
        sent overdue (owed to it)."""
        zero = {"received": 0, "sent": 0, "refused": 0, "sent_refused": 0, "overdue": 0, "sent_overdue": 0}
        out: dict[str, dict[str, int]] = {}

        def add(agency: str | None, key: str, n: int = 1) -> None:
            if agency:
                out.setdefault(agency, dict(zero))[key] += n

        with self._read() as con:
            for r in con.execute("SELECT d.agency, count(*) AS n FROM deliveries d GROUP BY d.agency"):
                add(r["agency"], "received", r["n"])
            for r in con.execute("SELECT agency, count(*) AS n FROM outgoing GROUP BY agency"):
                add(r["agency"], "sent", r["n"])
            for r in con.execute("SELECT agency, count(DISTINCT thread) AS n FROM trail WHERE direction = 'sent' "
                                 "AND code = '02' AND doc_id IS NOT NULL GROUP BY agency"):
                add(r["agency"], "refused", r["n"])
            for r in con.execute(
                    "SELECT o.agency, count(DISTINCT o.id) AS n FROM outgoing o JOIN outgoing_recipients r "
                    "ON r.outgoing_id = o.id WHERE r.delivery = 'fail' OR EXISTS (SELECT 1 FROM trail t "
                    "WHERE t.thread = o.document_id AND t.direction = 'received' AND t.code = '02') GROUP BY o.agency"):
                add(r["agency"], "sent_refused", r["n"])
            # What overdue() lists, counted per agency in SQL (as many rows as it would list).
            day = (today or self.today()).isoformat()
            for r in con.execute("SELECT d.agency, count(DISTINCT doc.thread) AS n " + _OVERDUE_RECEIVED +
                                 "GROUP BY d.agency", (day, None, None)):
                add(r["agency"], "overdue", r["n"])
            for r in con.execute("SELECT o.agency, count(*) AS n " + _OVERDUE_SENT + "GROUP BY o.agency",
                                 (day, None, None)):
                add(r["agency"], "sent_overdue", r["n"])
        return dict(sorted(out.items()))

    def counts(self) -> dict[str, int]:
        with self._read() as con:
            one = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731 - tiny local helper
            return {"messages": one("SELECT count(*) FROM messages"),
                    "documents": one("SELECT count(*) FROM messages WHERE message_type = 'edoc'"),
                    "status_packages": one("SELECT count(*) FROM messages WHERE message_type = 'status'"),
                    "deliveries": one("SELECT count(*) FROM deliveries"),
                    "pending_deliveries": one("SELECT count(*) FROM deliveries WHERE state != 'acknowledged'"),
                    "attachments": one("SELECT count(*) FROM attachments"),
                    "quarantined": one("SELECT count(*) FROM quarantine"),
                    "outgoing": one("SELECT count(*) FROM outgoing"),
                    "revoked": one("SELECT count(*) FROM documents WHERE state = 'revoked'"),
                    "replaced": one("SELECT count(*) FROM documents WHERE state = 'replaced'")}

    def remove_orphan_files(self, grace: timedelta = ORPHAN_GRACE, dry_run: bool = False) -> OrphanReport:
        """Remove the files of ``blobs/`` no row refers to and not written (nor reused) for ``grace``:
        what a change that failed after putting its files left. Candidates are found without a lock;
        each is checked again and removed under the store's write lock, so no change commits a
        reference to it meanwhile (one that put it just before finds it gone and commits nothing:
        :class:`~hub.docaxis.blobs.BlobMissing`). Temporary files of killed puts older than ``grace``
        go too. ``dry_run``: count, remove nothing."""
        if grace < MIN_ORPHAN_GRACE:
            raise ValueError(f"the grace period must be at least {MIN_ORPHAN_GRACE} (a change in progress may have "
                             f"put its files and not committed yet), got {grace}")
        cutoff = time.time() - grace.total_seconds()
        report = OrphanReport()
        old = {digest: found.st_size for digest, found in self.blobs.files() if found.st_mtime < cutoff}
        used = self._referenced(old)
        report.kept = len(used)
        candidates = {d: n for d, n in old.items() if d not in used}
        if dry_run:
            report.removed, report.bytes = len(candidates), sum(candidates.values())
            return report
        with self._write() as con:
            self.blobs.sync()  # what this thread put before is checked now, not against its own removals
            referenced = self._referenced(candidates, con)
            for digest in sorted(candidates):
                path = self.blobs.path(digest)
                try:
                    if digest in referenced or path.stat().st_mtime >= cutoff:
                        continue
                    path.unlink()
                except FileNotFoundError:
                    continue
                report.removed += 1
                report.bytes += candidates[digest]
        for path, found in self.blobs.temporaries():
            if found.st_mtime < cutoff:
                path.unlink(missing_ok=True)
                report.temporaries += 1
        return report

    def _referenced(self, digests: Iterable[str], con: sqlite3.Connection | None = None) -> set[str]:
        """Those of ``digests`` some row refers to (a package, an attachment, a quarantined payload,
        an outbox or outgoing package)."""
        if con is None:
            with self._read() as own:
                return self._referenced(digests, own)
        ids = list(digests)
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for table, column in _FILE_COLUMNS:
                found |= {r[0] for r in con.execute(f"SELECT {column} FROM {table} WHERE {column} IN ({marks})", chunk)}
        return found

    def quarantined(self) -> list[dict[str, Any]]:
        with self._read() as con:
            return [dict(r) for r in con.execute("SELECT * FROM quarantine ORDER BY recorded_at, doc_id")]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Read-only SQL over the store, for operators' tools and tests."""
        with self._read() as con:
            con.execute("PRAGMA query_only = ON")
            return [dict(r) for r in con.execute(sql, params)]


def _thread(m: Incoming) -> str:
    """The document an incoming edoc belongs to; a package without any DocumentId is a document of
    its own, named by its axis DocId (DocumentIds have commas, DocIds never do)."""
    return lifecycle.thread_of(m.business_type, m.document_id, m.business_target) or m.doc_id


# -- views ------------------------------------------------------------------------------------------

def _business(value: int | None) -> str | None:
    return lifecycle.BUSINESS_NAMES.get(value) if value is not None else None


def _summary(r: sqlite3.Row) -> dict[str, Any]:
    return {"doc_id": r["doc_id"], "position": r["seq"], "document_id": r["document_id"], "thread": r["thread"],
            "business": _business(r["business_type"]), "business_target": r["business_target"],
            "document_state": r["document_state"], "subject": r["subject"],
            "from": {"organ_id": r["from_organ_id"], "name": r["from_name"]},
            "code": "/".join(p for p in (r["code_number"], r["code_notation"]) if p) or None,
            "promulgation_date": r["promulgation_date"], "due_date": r["due_date"], "received_at": r["received_at"],
            "stored_at": r["stored_at"], "signature": r["signature"], "attachments": r["files"],
            "delivery": r["state"], "withdrawn": bool(r["withdrawn"]), "last_status": r["last_status"]}


def _message_view(m: sqlite3.Row) -> dict[str, Any]:
    return {"doc_id": m["doc_id"], "message_type": m["message_type"], "document_id": m["document_id"],
            "thread": m["thread"], "business": _business(m["business_type"]), "business_target": m["business_target"],
            "from": {"organ_id": m["from_organ_id"], "name": m["from_name"]}, "to": json.loads(m["to_organ_ids"]),
            "code_number": m["code_number"], "code_notation": m["code_notation"], "subject": m["subject"],
            "promulgation_date": m["promulgation_date"], "due_date": m["due_date"], "document_type": m["document_type"],
            "priority": m["priority"], "receiver_changes": [{"organ_id": o, "receiver_type": k}
                                                             for o, k in json.loads(m["receivers"])],
            "signature": {"verdict": m["signature"], "subject": m["signature_subject"], "reason": m["signature_reason"]},
            "edxml": {"sha256": m["edxml_sha256"], "size": m["edxml_size"]}, "received_at": m["received_at"],
            "stored_at": m["stored_at"], "delivery_count": m["delivery_count"]}


def _document_view(d: sqlite3.Row) -> dict[str, Any]:
    return {"document_id": d["thread"], "state": d["state"], "origin_doc_id": d["origin_doc_id"],
            "current_doc_id": d["current_doc_id"], "changed_by": d["changed_by"], "updates": d["updates"],
            "subject": d["subject"], "due_date": d["due_date"]}


def _delivery_view(d: sqlite3.Row) -> dict[str, Any]:
    return {"state": d["state"], "organ_id": d["organ_id"], "withdrawn": bool(d["withdrawn"]),
            "received_at": d["received_at"], "delivered_at": d["delivered_at"],
            "acknowledged_at": d["acknowledged_at"], "last_status": d["last_status"],
            "last_status_at": d["last_status_at"]}


def _trail_view(t: sqlite3.Row) -> dict[str, Any]:
    return {"code": t["code"], "description": t["description"], "direction": t["direction"], "organ_id": t["organ_id"],
            "agency": t["agency"], "document_id": t["document_id"], "doc_id": t["doc_id"], "at": t["status_time"],
            "recorded_at": t["recorded_at"], "source": t["source"]}
