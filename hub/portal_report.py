"""Reporting the one-stop-shop dossiers to the national portal, each dossier and each step once.

One pass (:func:`report_pass`) takes the dossiers as the province's one-stop-shop systems hold them
(canonical rows of ``dossiers``, steps nested) and brings the portal level with them:

- a dossier the portal has not confirmed is sent with ``DongBoHoSoMC``: as new, or as an update once the
  portal is known to have it. ``"3"`` (it exists) turns a new one into an update; ``"201"`` (unknown)
  turns an update into a new one;
- a dossier whose fields changed since the portal confirmed them is sent again as an update;
- each progress step not yet on the portal is sent with ``CapNhatTienDoHoSoMC``, after its dossier.

**Exactly once.** The portal does not deduplicate steps, so the state file (SQLite, ``--state``) records
what is *in flight* before each write and what is *confirmed* after it, in transactions of its own. A
write whose answer was lost (:class:`~connectors.portal.WriteOutcomeUnknown`), and everything a killed
pass left in flight, is settled by looking the dossiers up (``TraCuuHoSo``) before anything is sent
again: a step the portal shows is marked sent, one it lacks is sent. Nothing is therefore sent twice
and nothing is skipped, whatever moment a pass is killed at.

**Refusals.** A write of several items is all or nothing, so a refused batch is split in halves until
the refused dossier (or step) stands alone; it is kept in the state with the portal's code and message
for an operator (:func:`refusals`) and tried again only once its content changes at the source. Its
steps wait for it.

**Deletions.** The portal has no call to delete a dossier. A dossier deleted at the source after it
was reported stays on the portal; the state lists it (:func:`orphans`) for an operator to deal with.
A step changed at the source after it was reported cannot be corrected either; it is counted.

Passes are serialised by an exclusive lock on the state file, so the Dagster asset and
``hub report portal`` never interleave.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import sqlite3
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import duckdb
import pyarrow as pa

from connectors.portal import ALREADY_EXISTS, NOT_FOUND, PortalClient, PortalRefusal, WriteOutcomeUnknown
from schemas import timefmt

log = logging.getLogger(__name__)

_HELD = pa.schema([pa.field("code", pa.string()), pa.field("version", pa.int64())])
#: Rounds of look-up-and-resend after unknown outcomes before a pass gives up (the state stays exact).
MAX_ROUNDS = 6

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dossiers (
    code TEXT PRIMARY KEY,          -- MaHoSo
    agency TEXT NOT NULL,           -- madonvi the dossier is reported under
    on_portal INTEGER NOT NULL DEFAULT 0,
    confirmed_fp TEXT,              -- fingerprint of the fields the portal is known to hold
    inflight_fp TEXT,               -- a DongBoHoSoMC carrying this content is (or was) under way
    refused_fp TEXT, refused_code TEXT, refused_message TEXT, refused_at TEXT,
    deleted_at_source TEXT,         -- set when the source deleted a dossier the portal keeps
    reported_version INTEGER,       -- the source version (epoch ms) whose dossier and steps the portal fully holds
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    code TEXT NOT NULL,             -- MaHoSo
    moment TEXT NOT NULL,           -- ThoiDiemXuLy: with MaHoSo, what identifies a step on the portal
    fp TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('inflight', 'sent', 'refused')),
    refused_code TEXT, refused_message TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (code, moment)
);
CREATE TABLE IF NOT EXISTS passes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL, finished_at TEXT, outcome TEXT, figures TEXT
);
"""


class ReportError(RuntimeError):
    """A pass could not finish; the state is exact, and the next pass continues from it."""


# -- what the portal is sent ------------------------------------------------------------------------------

def _moment(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        v = value.astimezone(timefmt.VN_TZ)
        return f"{v.year:04d}{v.month:02d}{v.day:02d}{v.hour:02d}{v.minute:02d}{v.second:02d}"
    return str(value)


def agency_of(code: str) -> str:
    """The agency part of a dossier code (Circular 01/2018 Art. 19): what the dossier is reported under."""
    return code.rsplit("-", 2)[0]


def dossier_payload(row: Mapping[str, Any], field_names: Mapping[str, str]) -> dict[str, Any]:
    """The portal's dossier (§5 field names) for one canonical row; ``field_names`` maps MaLinhVuc to
    TenLinhVuc from the portal's own catalogue."""
    kind = row.get("applicant_id_kind")
    identifiers = [{"LoaiDinhDanh": str(kind), "SoDinhDanh": row["applicant_id"]}] if kind and row.get("applicant_id") else []
    return {
        "MaHoSo": row["dossier_code"],
        "MaTTHC": row["procedure_code"],
        "TenTTHC": row["procedure_name"],
        "MaLinhVuc": row["field_code"],
        "TenLinhVuc": field_names.get(row["field_code"], row["field_code"]),
        "KenhThucHien": str(row["channel"]),
        "ChuHoSo": row["applicant_name"],
        "LoaiDoiTuong": str(row["applicant_type"]),
        "DinhDanhCHS": identifiers,
        "TrichYeuHoSo": row["summary"] or "",
        "NgayTiepNhan": _moment(row["received_at"]),
        "NgayHenTra": _moment(row["due_at"]),
        "TrangThaiHoSo": str(row["status"]),
        "NgayKetThucXuLy": _moment(row["finished_at"]),
        "NgayTra": _moment(row["returned_at"]),
        "DonViXuLy": agency_of(row["dossier_code"]),
        "DuocThanhToanTrucTuyen": "1" if row["paid_online"] else "0",
    }


def step_payloads(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The portal's progress steps of one canonical row, in the order they happened."""
    steps = [{
        "MaHoSo": row["dossier_code"],
        "NguoiXuLy": step["handler"],
        "ChucDanh": step["handler_title"] or "",
        "ThoiDiemXuLy": _moment(step["processed_at"]),
        "PhongBanXuLy": step["department"] or "",
        "NoiDungXuLy": step["content"] or "",
        "TrangThai": str(step["status"]),
        "NgayBatDau": _moment(step["processed_at"]),
        "NgayKetThucTheoQuyDinh": _moment(step["due_at"]),
    } for step in row["steps"] or ()]
    return sorted(steps, key=lambda s: s["ThoiDiemXuLy"] or "")


def version_key(version: datetime) -> int:
    """A canonical row's ``version`` as the state keeps it: epoch milliseconds (DuckDB's ``epoch_ms``)."""
    return round(version.timestamp() * 1000)


def reported_versions(state_path: Path) -> dict[str, int]:
    """code → the version (:func:`version_key`) the portal holds in full, for a caller that wants to
    leave those rows out before it reads them (the Dagster asset does, in DuckDB)."""
    if not Path(state_path).exists():
        return {}
    state = ReportState(state_path)
    try:
        return {code: version for code, version in
                state.db.execute("SELECT code, reported_version FROM dossiers WHERE reported_version IS NOT NULL")}
    finally:
        state.close()


def rows_to_report(relation: str, state_path: Path) -> tuple[list[dict[str, Any]], int]:
    """The rows of ``relation`` (the canonical ``dossiers``, as DuckDB SQL) a pass must look at, as Python
    rows, and how many were left out because the portal holds their version in full (:func:`report_pass`'s
    ``left_out``). The leaving out happens in DuckDB: turning a whole table of nested steps into Python
    rows would cost more than a pass with nothing to send."""
    held = reported_versions(state_path)
    with duckdb.connect() as con:
        con.register("held", pa.table({"code": list(held), "version": list(held.values())}, schema=_HELD))
        match = "d.dossier_code = h.code AND epoch_ms(d.version) = h.version"
        left_out = con.execute(f"SELECT count(*) FROM {relation} d JOIN held h ON {match} AND NOT d.deleted").fetchall()[0][0]
        rows = con.sql(f"SELECT d.* FROM {relation} d ANTI JOIN held h ON {match} ORDER BY d.dossier_code")
        return rows.to_arrow_table().to_pylist(), left_out


def fingerprint(payload: Mapping[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _portal_fields(dossier: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dossier.items() if k != "QuaTrinhXuLy"}


# -- the state --------------------------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(timefmt.VN_TZ).isoformat(timespec="seconds")


class ReportState:
    """What the portal is known to hold, and what may be in flight; one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def dossiers(self) -> dict[str, tuple]:
        """code → (on_portal, confirmed_fp, refused_fp, deleted_at_source, reported_version)."""
        rows = self.db.execute("SELECT code, on_portal, confirmed_fp, refused_fp, deleted_at_source, reported_version "
                               "FROM dossiers")
        return {code: (bool(on), confirmed, refused, deleted, version)
                for code, on, confirmed, refused, deleted, version in rows}

    def steps(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(code, moment) → (state, fp) of every step the state knows."""
        return {(c, m): (s, fp) for c, m, s, fp in self.db.execute("SELECT code, moment, state, fp FROM steps")}

    def in_flight(self) -> set[str]:
        rows = self.db.execute("SELECT code FROM dossiers WHERE inflight_fp IS NOT NULL "
                               "UNION SELECT code FROM steps WHERE state = 'inflight'")
        return {code for (code,) in rows}


# -- one pass ---------------------------------------------------------------------------------------------

@dataclass
class PassResult:
    dossiers_seen: int = 0
    dossiers_new: int = 0
    dossiers_updated: int = 0
    dossiers_unchanged: int = 0
    steps_sent: int = 0
    refused_dossiers: int = 0
    refused_steps: int = 0
    still_refused: int = 0  # refused before, unchanged since: not sent again
    waiting_steps: int = 0  # steps of dossiers the portal does not have (refused)
    deleted_at_source: int = 0  # deleted at the source after being reported: still on the portal
    steps_changed_after_report: int = 0
    unknown_outcomes: int = 0
    lookups: int = 0
    write_calls: int = 0
    seconds: float = 0.0
    refusals: list[dict[str, str]] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "refusals"}

    def summary(self) -> str:
        return (f"{self.dossiers_seen:,} dossiers: {self.dossiers_new:,} new, {self.dossiers_updated:,} updated, "
                f"{self.dossiers_unchanged:,} unchanged; {self.steps_sent:,} steps sent; "
                f"{self.refused_dossiers + self.refused_steps:,} refused now ({self.still_refused:,} still refused); "
                f"{self.deleted_at_source:,} deleted at the source but kept by the portal; "
                f"{self.unknown_outcomes:,} unknown outcomes settled with {self.lookups:,} look-ups; {self.seconds:.1f} s")


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold the state's lock for a pass; a second pass waits for it, never interleaves."""
    lock_path = Path(str(path) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Pass:
    def __init__(self, client: PortalClient, state: ReportState, batch_size: int, step_batch_size: int) -> None:
        self.client = client
        self.state = state
        self.batch_size = batch_size
        self.step_batch_size = step_batch_size
        self.result = PassResult()
        self.settled = False  # whether a look-up recorded steps the pass did not know when it started

    # Settling what may be on the portal: the one place that reads the portal to decide what to send.

    def settle(self, codes: Iterable[str]) -> dict[str, dict | None]:
        """Look ``codes`` up and record what the portal holds: whether it has each dossier and with which
        fields, and which of its steps (those in flight become sent or are forgotten, so they are sent
        again; those the state did not know, e.g. after a lost state file, are recorded as sent)."""
        answers: dict[str, dict | None] = {}
        for code in sorted(set(codes)):
            answers[code] = self.client.lookup(agency_of(code), code)
            self.result.lookups += 1
        self.settled = True
        now = _now()
        with self.state.transaction() as db:
            for code, dossier in answers.items():
                if dossier is None:
                    db.execute("UPDATE dossiers SET on_portal = 0, confirmed_fp = NULL, inflight_fp = NULL, "
                               "reported_version = NULL, updated_at = ? WHERE code = ?", (now, code))
                    db.execute("DELETE FROM steps WHERE code = ? AND state = 'inflight'", (code,))
                    continue
                db.execute("INSERT INTO dossiers (code, agency, updated_at) VALUES (?, ?, ?) ON CONFLICT (code) DO NOTHING",
                           (code, agency_of(code), now))
                db.execute("UPDATE dossiers SET on_portal = 1, confirmed_fp = ?, inflight_fp = NULL, reported_version = NULL, "
                           "updated_at = ? WHERE code = ?", (fingerprint(_portal_fields(dossier)), now, code))
                shown = {str(step.get("ThoiDiemXuLy")): fingerprint(step) for step in dossier.get("QuaTrinhXuLy") or ()}
                db.executemany("INSERT INTO steps (code, moment, fp, state, updated_at) VALUES (?, ?, ?, 'sent', ?) "
                               "ON CONFLICT (code, moment) DO UPDATE SET state = 'sent', updated_at = excluded.updated_at "
                               "WHERE steps.state = 'inflight'", [(code, m, fp, now) for m, fp in shown.items()])
                db.execute("DELETE FROM steps WHERE code = ? AND state = 'inflight'", (code,))
        return answers

    def resend(self, agency: str, batch: list[tuple[dict, str]], depth: int, why: Exception) -> None:
        """Look the batch's dossiers up, then send what the portal lacks: new where it has no such
        dossier, an update where its fields differ."""
        answers = self.settle(payload["MaHoSo"] for payload, _ in batch)
        missing = [item for item in batch if answers[item[0]["MaHoSo"]] is None]
        differ = [item for item in batch if answers[item[0]["MaHoSo"]] is not None
                  and fingerprint(_portal_fields(answers[item[0]["MaHoSo"]])) != item[1]]
        same = [item for item in batch if item not in missing and item not in differ]
        self._confirmed(same, updating=True)
        if (missing or differ) and depth >= MAX_ROUNDS:
            raise ReportError(f"gave up on {len(missing) + len(differ)} dossiers of {agency}: {why}")
        self.send_dossiers(agency, missing, False, depth + 1)
        self.send_dossiers(agency, differ, True, depth + 1)

    # Dossiers.

    def send_dossiers(self, agency: str, batch: list[tuple[dict, str]], updating: bool, depth: int = 0) -> None:
        """Send ``batch`` of (payload, fingerprint) as new or as updates; split it on refusals."""
        if not batch:
            return
        codes = [payload["MaHoSo"] for payload, _ in batch]
        with self.state.transaction() as db:
            db.executemany("UPDATE dossiers SET inflight_fp = ?, updated_at = ? WHERE code = ?",
                           [(fp, _now(), payload["MaHoSo"]) for payload, fp in batch])
        self.result.write_calls += 1
        try:
            self.client.sync_dossiers(agency, [payload for payload, _ in batch], updating)
        except PortalRefusal as refusal:
            self._clear_inflight(codes)
            if refusal.code == ALREADY_EXISTS and not updating:  # the portal has some: which, and with what?
                return self.resend(agency, batch, depth, refusal)
            if refusal.code == NOT_FOUND and updating and len(batch) == 1:
                return self.send_dossiers(agency, batch, False, depth + 1)
            if len(batch) == 1 or depth > 64:
                return self._refuse_dossier(batch[0], refusal)
            middle = len(batch) // 2
            self.send_dossiers(agency, batch[:middle], updating, depth + 1)
            self.send_dossiers(agency, batch[middle:], updating, depth + 1)
            return
        except WriteOutcomeUnknown as unknown:
            self.result.unknown_outcomes += 1
            log.info("%s; looking the %d dossiers up", unknown, len(batch))
            return self.resend(agency, batch, depth, unknown)
        self._confirmed(batch, updating)

    def _confirmed(self, batch: list[tuple[dict, str]], updating: bool) -> None:
        with self.state.transaction() as db:
            db.executemany("UPDATE dossiers SET on_portal = 1, confirmed_fp = ?, inflight_fp = NULL, refused_fp = NULL, "
                           "refused_code = NULL, refused_message = NULL, refused_at = NULL, updated_at = ? WHERE code = ?",
                           [(fp, _now(), payload["MaHoSo"]) for payload, fp in batch])
        if updating:
            self.result.dossiers_updated += len(batch)
        else:
            self.result.dossiers_new += len(batch)

    def _clear_inflight(self, codes: list[str]) -> None:
        with self.state.transaction() as db:
            db.executemany("UPDATE dossiers SET inflight_fp = NULL WHERE code = ?", [(c,) for c in codes])

    def _refuse_dossier(self, item: tuple[dict, str], refusal: PortalRefusal) -> None:
        payload, fp = item
        with self.state.transaction() as db:
            db.execute("UPDATE dossiers SET refused_fp = ?, refused_code = ?, refused_message = ?, refused_at = ?, "
                       "updated_at = ? WHERE code = ?", (fp, refusal.code, refusal.message, _now(), _now(), payload["MaHoSo"]))
        self.result.refused_dossiers += 1
        self.result.refusals.append({"MaHoSo": payload["MaHoSo"], "service": refusal.service, "error_code": refusal.code,
                                     "message": refusal.message})

    # Steps.

    def send_steps(self, agency: str, batch: list[tuple[dict, str]], depth: int = 0) -> None:
        if not batch:
            return
        keys = [(step["MaHoSo"], step["ThoiDiemXuLy"]) for step, _ in batch]
        with self.state.transaction() as db:
            db.executemany("INSERT INTO steps (code, moment, fp, state, updated_at) VALUES (?, ?, ?, 'inflight', ?) "
                           "ON CONFLICT (code, moment) DO UPDATE SET fp = excluded.fp, state = 'inflight', "
                           "updated_at = excluded.updated_at", [(c, m, fp, _now()) for (c, m), (_, fp) in zip(keys, batch)])
        self.result.write_calls += 1
        try:
            self.client.add_steps(agency, [step for step, _ in batch])
        except PortalRefusal as refusal:
            with self.state.transaction() as db:
                db.executemany("DELETE FROM steps WHERE code = ? AND moment = ?", keys)
            if len(batch) == 1 or depth > 64:
                return self._refuse_step(batch[0], refusal)
            middle = len(batch) // 2
            self.send_steps(agency, batch[:middle], depth + 1)
            self.send_steps(agency, batch[middle:], depth + 1)
            return
        except WriteOutcomeUnknown as unknown:
            self.result.unknown_outcomes += 1
            log.info("%s; looking %d dossiers up", unknown, len({c for c, _ in keys}))
            self.settle({c for c, _ in keys})
            sent = self._sent(keys)
            remaining = [item for key, item in zip(keys, batch) if key not in sent]
            if depth >= MAX_ROUNDS and remaining:
                raise ReportError(f"gave up on {len(remaining)} steps of {agency}: {unknown}") from None
            self.result.steps_sent += len(batch) - len(remaining)
            return self.send_steps(agency, remaining, depth + 1)
        with self.state.transaction() as db:
            db.executemany("UPDATE steps SET state = 'sent', updated_at = ? WHERE code = ? AND moment = ?",
                           [(_now(), c, m) for c, m in keys])
        self.result.steps_sent += len(batch)

    def _sent(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        rows = (self.state.db.execute("SELECT state FROM steps WHERE code = ? AND moment = ?", key).fetchone() for key in keys)
        return {key for key, row in zip(keys, rows) if row is not None and row[0] == "sent"}

    def _refuse_step(self, item: tuple[dict, str], refusal: PortalRefusal) -> None:
        step, fp = item
        with self.state.transaction() as db:
            db.execute("INSERT INTO steps (code, moment, fp, state, refused_code, refused_message, updated_at) "
                       "VALUES (?, ?, ?, 'refused', ?, ?, ?) ON CONFLICT (code, moment) DO UPDATE SET fp = excluded.fp, "
                       "state = 'refused', refused_code = excluded.refused_code, refused_message = excluded.refused_message, "
                       "updated_at = excluded.updated_at",
                       (step["MaHoSo"], step["ThoiDiemXuLy"], fp, refusal.code, refusal.message, _now()))
        self.result.refused_steps += 1
        self.result.refusals.append({"MaHoSo": step["MaHoSo"], "ThoiDiemXuLy": step["ThoiDiemXuLy"],
                                     "service": refusal.service, "error_code": refusal.code, "message": refusal.message})


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def report_pass(rows: Iterable[Mapping[str, Any]], client: PortalClient, state_path: Path, *,
                batch_size: int = 200, step_batch_size: int = 500, left_out: int = 0) -> PassResult:
    """Bring the portal level with ``rows`` (canonical ``dossiers`` rows, steps nested, tombstones
    included). ``left_out`` counts rows the caller did not pass because :func:`reported_versions` says
    the portal holds them (they count as unchanged). Raises :class:`ReportError` if the portal keeps
    failing; the state is exact either way."""
    started = time.monotonic()
    with exclusive(state_path):
        state = ReportState(state_path)
        try:
            return _run(rows, client, state, batch_size, step_batch_size, started, left_out)
        finally:
            state.close()


def _run(rows: Iterable[Mapping[str, Any]], client: PortalClient, state: ReportState, batch_size: int,
         step_batch_size: int, started: float, left_out: int) -> PassResult:
    work = _Pass(client, state, batch_size, step_batch_size)
    result = work.result
    result.dossiers_seen = result.dossiers_unchanged = left_out
    with state.transaction() as db:
        cursor = db.execute("INSERT INTO passes (started_at) VALUES (?)", (_now(),))
        pass_id = cursor.lastrowid
    try:
        # 1. Whatever a killed pass left in flight is settled against the portal first.
        pending = state.in_flight()
        if pending:
            log.info("settling %d dossiers a previous pass left in flight", len(pending))
            work.settle(pending)
        known = state.dossiers()
        known_steps = state.steps()
        field_names: dict[str, str] = {}
        catalogue_agency = ""

        # 2. What must be sent.
        dossiers_out: dict[str, list[tuple[dict, str]]] = defaultdict(list)
        updates_out: dict[str, list[tuple[dict, str]]] = defaultdict(list)
        steps_of: dict[str, list[tuple[dict, str]]] = {}
        fresh: list[tuple[str, str]] = []
        deleted: list[str] = []
        candidates: list[tuple[str, int, str, list[str]]] = []  # (code, version, fp, step moments) sent this pass
        for row in rows:
            code = row["dossier_code"]
            agency = agency_of(code)
            entry = known.get(code)
            if row["deleted"]:
                if entry is not None and entry[0] and not entry[3]:
                    deleted.append(code)
                continue
            result.dossiers_seen += 1
            version = version_key(row["version"])
            if entry is not None and entry[4] == version:  # this very version is on the portal, steps and all
                result.dossiers_unchanged += 1
                continue
            if not catalogue_agency:
                catalogue_agency = agency
                field_names = {str(p.get("MaLinhVuc")): str(p.get("TenLinhVuc")) for p in client.procedures(agency)
                               if p.get("MaLinhVuc")}
            payload = dossier_payload(row, field_names)
            fp = fingerprint(payload)
            steps = []
            for step in step_payloads(row):
                step_fp = fingerprint(step)
                seen = known_steps.get((code, step["ThoiDiemXuLy"]))
                if seen is None:
                    steps.append((step, step_fp))
                elif seen[1] != step_fp and seen[0] == "sent":
                    result.steps_changed_after_report += 1
                elif seen[0] == "refused" and seen[1] != step_fp:
                    steps.append((step, step_fp))  # changed since the portal refused it: try again
            if steps:
                steps_of[code] = steps
            candidates.append((code, version, fp, [s["ThoiDiemXuLy"] for s, _ in steps]))
            if entry is None:
                fresh.append((code, agency))
            if entry is not None and entry[1] == fp:
                result.dossiers_unchanged += 1
                continue
            if entry is not None and entry[2] == fp:
                result.still_refused += 1
                continue
            (updates_out if entry is not None and entry[0] else dossiers_out)[agency].append((payload, fp))
        if fresh:
            with state.transaction() as db:
                db.executemany("INSERT OR IGNORE INTO dossiers (code, agency, updated_at) VALUES (?, ?, ?)",
                               [(code, agency, _now()) for code, agency in fresh])
        if deleted:
            with state.transaction() as db:
                db.executemany("UPDATE dossiers SET deleted_at_source = ?, updated_at = ? WHERE code = ?",
                               [(_now(), _now(), code) for code in deleted])
        result.deleted_at_source = len(deleted)

        # 3. Dossiers, then the steps of those the portal now holds.
        for agency, items in sorted(dossiers_out.items()):
            for batch in _batches(items, batch_size):
                work.send_dossiers(agency, batch, updating=False)
        for agency, items in sorted(updates_out.items()):
            for batch in _batches(items, batch_size):
                work.send_dossiers(agency, batch, updating=True)
        on_portal = {code for code, entry in state.dossiers().items() if entry[0]}
        known_now = state.steps() if work.settled else known_steps
        steps_out: dict[str, list[tuple[dict, str]]] = defaultdict(list)
        for code, steps in steps_of.items():
            if code in on_portal:
                for item in steps:
                    known = known_now.get((code, item[0]["ThoiDiemXuLy"]))
                    if known is None or known[0] == "refused":  # a look-up may have shown it on the portal
                        steps_out[agency_of(code)].append(item)
            else:
                result.waiting_steps += len(steps)
        for agency, items in sorted(steps_out.items()):
            for batch in _batches(items, step_batch_size):
                work.send_steps(agency, batch)
        _remember_versions(state, candidates)
        result.seconds = time.monotonic() - started
        _finish(state, pass_id, "ok", result)
        return result
    except BaseException as exc:
        result.seconds = time.monotonic() - started
        _finish(state, pass_id, f"failed: {exc}"[:500], result)
        raise


def _remember_versions(state: ReportState, candidates: list[tuple[str, int, str, list[str]]]) -> None:
    """Record, for each dossier whose fields and every step the portal now holds, the source version
    that was: the next pass skips it without building its payload while that version stands."""
    if not candidates:
        return
    confirmed = {code: entry[1] for code, entry in state.dossiers().items()}
    steps = state.steps()
    done = [(version, code) for code, version, fp, moments in candidates
            if confirmed.get(code) == fp and all(steps.get((code, m), ("",))[0] == "sent" for m in moments)]
    with state.transaction() as db:
        db.executemany("UPDATE dossiers SET reported_version = ? WHERE code = ?", done)


def _finish(state: ReportState, pass_id: int, outcome: str, result: PassResult) -> None:
    with state.transaction() as db:
        db.execute("UPDATE passes SET finished_at = ?, outcome = ?, figures = ? WHERE id = ?",
                   (_now(), outcome, json.dumps(result.figures()), pass_id))


def refusals(state_path: Path) -> list[dict[str, Any]]:
    """Dossiers and steps the portal refused and that have not been accepted since, with its message."""
    state = ReportState(state_path)
    try:
        out = [{"MaHoSo": c, "error_code": code, "message": msg, "at": at} for c, code, msg, at in state.db.execute(
            "SELECT code, refused_code, refused_message, refused_at FROM dossiers WHERE refused_fp IS NOT NULL ORDER BY code")]
        out += [{"MaHoSo": c, "ThoiDiemXuLy": m, "error_code": code, "message": msg, "at": at} for c, m, code, msg, at in
                state.db.execute("SELECT code, moment, refused_code, refused_message, updated_at FROM steps "
                                 "WHERE state = 'refused' ORDER BY code, moment")]
        return out
    finally:
        state.close()


def orphans(state_path: Path) -> list[str]:
    """Dossiers deleted at the source after the portal received them."""
    state = ReportState(state_path)
    try:
        return [c for (c,) in state.db.execute("SELECT code FROM dossiers WHERE deleted_at_source IS NOT NULL ORDER BY code")]
    finally:
        state.close()
