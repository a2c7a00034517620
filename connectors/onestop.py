"""Connector for the province's one-stop-shop systems (``national-systems.md`` §6), read through SQLAlchemy.

Every system configured in ``HUB_ONESTOP_URLS`` is a PostgreSQL, MariaDB/MySQL or SQLite database with
the §6 tables ``ho_so`` and ``qua_trinh_xu_ly``. One connector reads them all into the canonical
``dossiers`` table (``schemas/canonical/dossiers.py``), one row per dossier with its steps nested. A URL
holds a password: nothing here prints, logs or raises it; errors name the system instead.

Configuration (besides ``HUB_ONESTOP_URLS``, ``name=URL,...``):

- ``HUB_ONESTOP_<NAME>_STATUS_MAP=CODE:N,...`` (``<NAME>`` upper-cased, ``-`` as ``_``): a system's own
  ``trang_thai`` codes → ``TrangThaiHoSo``, over the default map of §5 (``MOI:1`` … ``DA_TRA:10``);
- ``HUB_ONESTOP_OVERLAP_S`` (900): how far before a system's high-water mark each pass starts;
- ``HUB_ONESTOP_BATCH_SIZE`` (5000): dossiers per batch (a batch is committed with its cursor);
- ``HUB_ONESTOP_MAX_ATTEMPTS`` (8), ``HUB_ONESTOP_BACKOFF_INITIAL`` (0.2), ``HUB_ONESTOP_BACKOFF_MAX`` (30),
  ``HUB_ONESTOP_CONNECT_TIMEOUT`` (5): retries, as for the national systems (``connectors/transport.py``).

**Incremental by ``updated_at``, per system.** A dossier's version is the greatest ``updated_at`` of its
row and its steps, so a changed step re-emits its dossier. Each system keeps its own high-water mark
(the greatest version read from it, on *its* clock: clocks of different systems differ by minutes),
and each pass starts ``HUB_ONESTOP_OVERLAP_S`` before it, which catches a late commit whose
``updated_at`` is older than rows already read. The overlap would land the same dossiers again on
every run, so the cursor keeps a short fingerprint of each dossier read inside the window and skips
those unchanged (a late step changes the fingerprint even when it does not raise the version). The
canonical table keeps the latest row per key by ``version`` anyway.

**Streaming.** A pass is one query, ``ho_so LEFT JOIN qua_trinh_xu_ly`` ordered by ``ma_ho_so`` and read
through a server-side cursor (``stream_results``/``yield_per``): one statement, so a dossier and its
steps come from one snapshot, and consecutive rows are grouped into dossiers on the fly. Memory is
bounded by the batch size. A batch's cursor holds the last dossier code of the batch, so a pass killed
half-way resumes after it (``ma_ho_so > …``, in the database's own collation, the order it is read in).

**Deletions.** The cursor keeps each system's set of dossier codes, sorted and zlib-compressed (about
3 bytes a code, 4 in base64: ~0.4 MB of JSON for 10⁵ dossiers; packing costs ~0.1 s and happens only
when the set changed, unpacking ~0.03 s). Listing 10⁵ codes costs 0.15–0.5 s depending on the driver, so
a run first compares ``COUNT(*)`` with the known set grown by what the pass read (a new dossier carries
a fresh ``updated_at``, so the pass reads it): equal counts mean nothing disappeared, for milliseconds.
Only when they differ — or every ``LIST_EVERY`` runs, for a deletion exactly offset by an insert too
late for the overlap — are the codes listed. Each code gone gets a tombstone (``deleted`` true, every
data column null, ``version`` 1 ms after the system's high-water mark, so later than anything read
from it); each code present but never read (committed too late even for the overlap, or restored after
its tombstone) is read now, its version raised past the tombstones. Codes read by an unfinished pass
are kept in the cursor, so a kill loses none of them. Step rows deleted on their own do not change
their dossier's version: the dossier is landed again with its next change.

**Validation.** A dossier whose code is not a Circular 01/2018 Art. 19 code, whose channel, status
(per the system's map), applicant type, step id or step status is unknown, or whose dates are not real
or impossible (not parseable, before 2000 or after 2099, due, finished or returned before received)
goes to quarantine with a reason naming the system, the dossier and each field wrong, and the row and
its steps as JSON. Quarantined dossiers are fingerprinted too, so the overlap does not refuse them twice.

**Failures.** Connecting is retried with full-jitter back-off, and so is a pass whose connection
dropped (it resumes after its last batch); a query the database refuses (a missing table) fails at
once. A system that stays unreachable fails the run with a :class:`ConnectorError` naming it, after the
other systems have been read.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import os
import random
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from itertools import chain
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import pyarrow as pa
import sqlalchemy as sa

from connectors.base import Batch, CheckResult
from connectors.errors import ConnectorError
from connectors.transport import TransportOptions, options_from_env
from hub.config import Secret, Settings, env_number
from schemas.canonical import QUARANTINE_SCHEMA, dossiers
from schemas.identifiers import dossier_code_problem, enterprise_code_problem, is_cmnd, personal_id_problem
from schemas.timefmt import VN_TZ

SYSTEM = "onestop"

#: The systems' own status codes → the portal's ``TrangThaiHoSo`` (§5). A system whose codes differ sets
#: ``HUB_ONESTOP_<NAME>_STATUS_MAP=CODE:N,...``, entries that replace or add to these.
DEFAULT_STATUS_MAP: dict[str, int] = {
    "MOI": 1, "TIEP_NHAN": 2, "TU_CHOI": 3, "DANG_XU_LY": 4, "BO_SUNG": 5, "NVTC": 6, "RUT": 7, "DUNG": 8,
    "DA_XU_LY": 9, "DA_TRA": 10,
}
#: ``kenh`` → the portal's ``KenhThucHien``: at the counter, online, by post.
CHANNELS: dict[str, int] = {"TRUC_TIEP": 1, "TRUC_TUYEN": 2, "BUU_CHINH": 3}
APPLICANT_TYPES = frozenset({1, 2, 3, 4})  # LoaiDoiTuong: citizen, enterprise, state agency, other

DEFAULT_OVERLAP_S = 900
DEFAULT_BATCH_SIZE = 5000
#: Runs between two listings of the codes even when the counts agree (hourly runs: about once a day).
LIST_EVERY = 24
#: Fingerprints kept for the overlap window, at most (beyond, the oldest are dropped: landed again, never lost).
RECENT_LIMIT = 5000
_ROWS_PER_FETCH = 2000
_IN_CHUNK = 500
_FIRST_YEAR, _LAST_YEAR = 2000, 2100  # plausible years: no electronic one-stop dossier predates 2000

DOSSIER_COLUMNS = ("ma_ho_so", "ma_tthc", "ten_tthc", "ma_linh_vuc", "kenh", "chu_ho_so", "loai_doi_tuong",
                   "so_giay_to", "trich_yeu", "ngay_tiep_nhan", "ngay_hen_tra", "ngay_ket_thuc", "ngay_tra",
                   "trang_thai", "da_thanh_toan", "updated_at")
STEP_COLUMNS = ("id", "ma_ho_so", "nguoi_xu_ly", "chuc_danh", "phong_ban", "noi_dung", "trang_thai", "thoi_diem",
                "han_xu_ly", "updated_at")
_STEP_READ = tuple(c for c in STEP_COLUMNS if c != "ma_ho_so")
# Untyped columns: values arrive as the driver gives them (a SQLite text, a MariaDB zero date as a string),
# and are checked here rather than failing the whole pass inside a result processor.
HO_SO = sa.table("ho_so", *(sa.column(c) for c in DOSSIER_COLUMNS))
STEPS = sa.table("qua_trinh_xu_ly", *(sa.column(c) for c in STEP_COLUMNS))
_D = {name: i for i, name in enumerate(DOSSIER_COLUMNS)}
_S = {name: i for i, name in enumerate(_STEP_READ)}
_KENH, _TRANG_THAI, _UPDATED = _D["kenh"], _D["trang_thai"], _D["updated_at"]
assert [_D[c] for c in ("ngay_tiep_nhan", "ngay_hen_tra", "ngay_ket_thuc", "ngay_tra", "updated_at")] == [9, 10, 11, 12, 15]
assert [_S[c] for c in ("nguoi_xu_ly", "chuc_danh", "phong_ban", "noi_dung", "thoi_diem", "han_xu_ly", "updated_at")] \
    == [1, 2, 3, 4, 6, 7, 8]  # the positions _convert reads them at

_DRIVERS = {"postgresql": "postgresql+psycopg2", "postgres": "postgresql+psycopg2", "mysql": "mysql+pymysql",
            "mariadb": "mariadb+pymysql"}
_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)
_OFFSET_MS = 7 * 3600 * 1000  # Asia/Ho_Chi_Minh has been +07:00 since 1975


@dataclass(frozen=True)
class OnestopSystem:
    """One configured system: its name, its URL (a secret: it holds the password), its status map."""

    name: str
    url: Secret = field(repr=False)
    status_map: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_STATUS_MAP))


def status_map_variable(name: str) -> str:
    return f"HUB_ONESTOP_{name.upper().replace('-', '_')}_STATUS_MAP"


def parse_status_map(variable: str, text: str) -> dict[str, int]:
    """``CODE:N,CODE:N`` over the default map; the error names the variable and the entry."""
    mapping = dict(DEFAULT_STATUS_MAP)
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        code, _, number = (part.strip() for part in entry.partition(":"))
        if not code or not number.isdigit() or int(number) not in range(1, 11):
            raise ValueError(f"{variable}: {entry!r} is not CODE:N with N a TrangThaiHoSo from 1 to 10")
        mapping[code] = int(number)
    return mapping


def applicant_id_kind(number: str | None) -> int | None:
    """``LoaiDinhDanh`` of an applicant's document number: 1 personal ID, 2 old CMND, 3 enterprise code."""
    if not number:
        return None
    if personal_id_problem(number) is None:
        return 1
    if is_cmnd(number):
        return 2
    if enterprise_code_problem(number) is None:
        return 3
    return None


class _Unreachable(Exception):
    """Connecting to a system failed (worth another attempt)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class OnestopConnector:
    system = SYSTEM
    dataset = dossiers.DATASET
    schema = dossiers.SCHEMA
    key = dossiers.KEY
    version_column = dossiers.VERSION_COLUMN

    def __init__(self, systems: Sequence[OnestopSystem], *, overlap_s: float = DEFAULT_OVERLAP_S,
                 batch_size: int = DEFAULT_BATCH_SIZE, options: TransportOptions | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.systems = tuple(systems)
        self.overlap = timedelta(seconds=overlap_s)
        self.batch_size = batch_size
        self.options = options or TransportOptions()
        self._sleep = sleep
        self._engines = {s.name: self._engine(s) for s in self.systems}

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str]) -> "OnestopConnector":
        systems = [OnestopSystem(name, url, parse_status_map(status_map_variable(name),
                                                             environ.get(status_map_variable(name), "")))
                   for name, url in settings.onestop_urls]
        overlap = env_number(environ, "HUB_ONESTOP_OVERLAP_S", DEFAULT_OVERLAP_S, low=0)
        batch_size = env_number(environ, "HUB_ONESTOP_BATCH_SIZE", DEFAULT_BATCH_SIZE, kind=int, low=1)
        return cls(systems, overlap_s=overlap, batch_size=batch_size, options=options_from_env(SYSTEM, environ))

    def __repr__(self) -> str:
        return f"OnestopConnector(systems={[s.name for s in self.systems]})"

    @staticmethod
    def cursor_summary(cursor: Mapping[str, Any] | None) -> dict[str, Any]:
        """The cursor without its key sets and fingerprints (hundreds of kB at 10⁵ dossiers), for run metadata."""
        systems = (cursor or {}).get("systems", {})
        return {name: {"hwm": state["hwm"], "dossiers": state["count"],
                       "pass_after": (state["pass"] or {}).get("after")} for name, state in systems.items()}

    # -- connections --------------------------------------------------------------------------------
    def _engine(self, system: OnestopSystem) -> sa.Engine:
        """The system's engine (no connection yet); a malformed URL is refused naming the system only."""
        try:
            url = sa.make_url(system.url.reveal())
        except (sa.exc.ArgumentError, ValueError):
            raise ValueError(f"HUB_ONESTOP_URLS: the URL of {system.name!r} is not a valid database URL") from None
        url = url.set(drivername=_DRIVERS.get(url.drivername, url.drivername))
        backend = url.get_backend_name()
        timeout = max(1, math.ceil(self.options.connect_timeout_s))
        connect_args: dict[str, Any] = {}
        if backend == "postgresql":
            connect_args["connect_timeout"] = timeout
        elif backend in ("mysql", "mariadb"):
            connect_args["connect_timeout"] = timeout
            if "charset" not in url.query:
                url = url.update_query_dict({"charset": "utf8mb4"})
        elif backend != "sqlite":
            raise ValueError(f"HUB_ONESTOP_URLS: {system.name!r} is a {backend} database; the hub reads "
                             f"PostgreSQL, MariaDB/MySQL or SQLite")
        try:
            return sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=connect_args)
        except (sa.exc.NoSuchModuleError, ImportError) as exc:
            raise ValueError(f"HUB_ONESTOP_URLS: the database driver of {system.name!r} is not installed "
                             f"({type(exc).__name__})") from None

    def _connect(self, system: OnestopSystem) -> sa.Connection:
        engine = self._engines[system.name]
        database = engine.url.database
        if engine.url.get_backend_name() == "sqlite" and database and database != ":memory:" \
                and not database.startswith("file:") and not os.path.exists(database):
            # SQLite would create an empty file and then report missing tables.
            raise _Unreachable(FileNotFoundError("the SQLite database file does not exist"))
        try:
            return engine.connect()
        except sa.exc.DBAPIError as exc:
            raise _Unreachable(exc) from None

    def _message(self, system: OnestopSystem, exc: BaseException) -> str:
        """A database error's first line, with the system's password (or URL) masked wherever it shows."""
        origin = exc.cause if isinstance(exc, _Unreachable) else exc
        origin = getattr(origin, "orig", None) or origin
        lines = [line.strip() for line in str(origin).splitlines() if line.strip()]
        text = lines[0] if lines else type(origin).__name__
        url = self._engines[system.name].url
        for secret in (system.url.reveal(), url.password):
            if secret and len(str(secret)) >= 3:
                text = text.replace(str(secret), "***")
        return text

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.options.backoff_max_s, self.options.backoff_initial_s * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)

    def _with_retries(self, system: OnestopSystem, attempts: int, run: Callable[[], Iterator[Any]]) -> Iterator[Any]:
        """Run the generator ``run()`` to its end, starting it again after a connection failure (the
        state it keeps lets it resume) up to ``attempts`` times; then fail naming the system."""
        failures = 0
        while True:
            try:
                yield from run()
                return
            except (_Unreachable, sa.exc.DBAPIError) as exc:
                dropped = isinstance(exc, _Unreachable) or getattr(exc, "connection_invalidated", False)
                if not dropped:
                    raise ConnectorError(SYSTEM, system.name, "", f"query failed: {self._message(system, exc)}") \
                        from None
                failures += 1
                if failures >= attempts:
                    raise ConnectorError(SYSTEM, system.name, "", f"cannot reach the database after {failures} "
                                         f"attempts: {self._message(system, exc)}") from None
                self._sleep(self._backoff(failures))

    # -- the connector protocol -------------------------------------------------------------------------
    def check(self) -> CheckResult:
        if not self.systems:
            return CheckResult(True, "no one-stop-shop systems configured (HUB_ONESTOP_URLS is empty)")
        verdicts, ok = [], True
        for system in self.systems:
            try:
                counted = list(self._with_retries(system, min(2, self.options.max_attempts),
                                                  lambda s=system: self._count(s)))
                verdicts.append(f"{system.name} OK ({self._engines[system.name].dialect.name}, "
                                f"{counted[0]:,} dossiers)")
            except ConnectorError as exc:
                ok = False
                verdicts.append(f"{system.name} FAILED ({exc.detail})")
        return CheckResult(ok, "; ".join(verdicts))

    def _count(self, system: OnestopSystem) -> Iterator[int]:
        with self._connect(system) as conn:
            dossier_count = conn.execute(sa.select(sa.func.count()).select_from(HO_SO)).scalar_one()
            conn.execute(sa.select(STEPS.c.id).limit(1)).all()
        yield dossier_count

    def read(self, cursor: dict[str, Any] | None) -> Iterator[Batch]:
        cursor = copy.deepcopy(cursor) if cursor else {"systems": {}}
        failures: list[ConnectorError] = []
        for system in self.systems:
            state = cursor["systems"].setdefault(system.name, _new_state())
            try:
                for records, rejected, progress in self._with_retries(
                        system, self.options.max_attempts, lambda s=system, st=state: self._read_system(s, st)):
                    yield Batch(records, _snapshot(cursor), rejected, progress=progress)
            except ConnectorError as exc:  # the other systems are still read; the run fails at the end
                failures.append(exc)
        if len(failures) == 1:
            raise failures[0]
        if failures:
            raise ConnectorError(SYSTEM, "read", "", "; ".join(str(f) for f in failures))

    # -- one system ---------------------------------------------------------------------------------------
    def _read_system(self, system: OnestopSystem, state: dict[str, Any]) -> Iterator[tuple[pa.Table, pa.Table, int]]:
        """One pass over what changed, then the deletion check; ``state`` is updated before each yield,
        so whatever is yielded can be committed with it, and a new call resumes where it stopped."""
        if state["pass"] is None:
            since = _parse_moment(state["hwm"]) - self.overlap if state["hwm"] else None
            state["pass"] = {"since": _render(since), "after": None, "max": None, "seen": [], "settled": False}
        current = state["pass"]
        with self._connect(system) as conn:
            if not current["settled"]:
                yield from self._stream(system, state, conn, since=_parse_moment(current["since"]), resumable=True)
                current["settled"] = True  # the pass is read; what follows is the deletion check
            yield from self._reconcile_keys(system, state, conn)

    def _stream(self, system: OnestopSystem, state: dict[str, Any], conn: sa.Connection, *,
                since: datetime | None = None, codes: list[str] | None = None, resumable: bool = False,
                version_floor: datetime | None = None) -> Iterator[tuple[pa.Table, pa.Table, int]]:
        """Read, in batches, the dossiers changed ``since`` or named in ``codes`` (all when neither is
        given); a resumable read continues after the last dossier of its last batch."""
        after = state["pass"]["after"] if resumable else None
        query = _dossier_query(since=since, codes=codes, after=after)
        builder = _Builder(system, str(uuid.uuid4()), version_floor)
        result = conn.execution_options(stream_results=True, yield_per=_ROWS_PER_FETCH).execute(query)
        read: list[str] = []
        for head, steps in _grouped(chain.from_iterable(result.partitions())):
            read.append(str(head[0]))
            builder.add(head, steps, state["recent"])
            if len(read) >= self.batch_size:
                yield self._flush(state, builder, read, resumable)
                builder, read = _Builder(system, builder.request_id, version_floor), []
        if read:
            yield self._flush(state, builder, read, resumable)

    def _flush(self, state: dict[str, Any], builder: "_Builder", codes: list[str],
               resumable: bool) -> tuple[pa.Table, pa.Table, int]:
        current = state["pass"]
        current["seen"].append(_pack(codes))
        if resumable:
            current["after"] = codes[-1]
        if builder.max_version is not None:
            current["max"] = _render(max(builder.max_version, _parse_moment(current["max"]) or builder.max_version))
        state["recent"].update(builder.fingerprints)
        # Nothing older than the overlap before the greatest version read can be read again next time.
        mark = max(filter(None, (_parse_moment(state["hwm"]), _parse_moment(current["max"]))), default=None)
        _prune(state["recent"], mark - self.overlap if mark else None)
        return builder.records(), builder.rejected(), len(codes)

    def _reconcile_keys(self, system: OnestopSystem, state: dict[str, Any],
                        conn: sa.Connection) -> Iterator[tuple[pa.Table, pa.Table, int]]:
        """Tombstones for the codes gone from the system, and a read of codes present but never read;
        then the pass is over: the high-water mark moves and the known set is replaced."""
        current = state["pass"]
        known = _unpack(state["keys"])
        size_before = len(known)
        for blob in current["seen"]:
            known |= _unpack(blob)
        grew = len(known) != size_before
        count = conn.execute(sa.select(sa.func.count()).select_from(HO_SO)).scalar_one()
        state["runs_since_listing"] += 1
        present = known
        if count != len(known) or state["runs_since_listing"] >= LIST_EVERY:
            listed = conn.execution_options(stream_results=True, yield_per=20_000).execute(
                sa.select(HO_SO.c.ma_ho_so))
            present = set()
            for codes in listed.scalars().partitions():
                present.update(codes)
            if any(code.__class__ is not str for code in present):  # a system with numeric codes
                present = {str(code) for code in present}
            state["runs_since_listing"] = 0
            # Present but never read: committed too late for the overlap, or restored after a tombstone.
            # Their versions are raised past the tombstones so far, so that a restored dossier wins.
            never_read = sorted(present - known)
            floor = max(filter(None, (_parse_moment(state["hwm"]), _parse_moment(current["max"]))), default=None)
            for start in range(0, len(never_read), self.batch_size):
                chunk = never_read[start:start + self.batch_size]
                yield from self._stream(system, state, conn, codes=chunk,
                                        version_floor=floor + 2 * _MS if floor else None)
                known |= set(chunk)
        gone = sorted(code for code in known - present if dossier_code_problem(code) is None)
        hwm = max(filter(None, (_parse_moment(state["hwm"]), _parse_moment(current["max"]))), default=None)
        if present != known or grew:
            state["keys"] = _pack(present)
        state["count"] = len(present)
        state["hwm"] = _render(hwm)
        state["pass"] = None
        _prune(state["recent"], hwm - self.overlap if hwm else None)
        tombstone_version = (hwm or datetime.now(VN_TZ).replace(tzinfo=None)) + _MS
        yield _tombstones(system, gone, tombstone_version), QUARANTINE_SCHEMA.empty_table(), len(gone)


# -- queries ------------------------------------------------------------------------------------------

def _dossier_query(*, since: datetime | None = None, codes: list[str] | None = None,
                   after: str | None = None) -> sa.Select:
    """Dossier rows with their steps (one row per step, or one with null step columns), ordered by
    dossier code then step id, so a dossier's rows are consecutive whatever the collation.

    ``since`` selects the dossiers whose row or one of whose steps has ``updated_at`` at or after it:
    a derived table of their codes (a UNION over both tables' ``updated_at`` indexes) joined to
    ``ho_so`` by its key. Written as ``… OR ma_ho_so IN (subquery)`` instead, MariaDB scans every dossier."""
    columns = [HO_SO.c[c] for c in DOSSIER_COLUMNS] + [STEPS.c[c].label(f"step_{c}") for c in _STEP_READ]
    dossiers_from: sa.FromClause = HO_SO
    if since is not None:
        moment = sa.bindparam("since", since, type_=sa.DateTime())
        rows, steps = HO_SO.alias("changed_rows"), STEPS.alias("changed_steps")
        changed = sa.union(sa.select(rows.c.ma_ho_so.label("code")).where(rows.c.updated_at >= moment),
                           sa.select(steps.c.ma_ho_so.label("code")).where(steps.c.updated_at >= moment)
                           ).subquery("changed")
        dossiers_from = changed.join(HO_SO, HO_SO.c.ma_ho_so == changed.c.code)
    query = sa.select(*columns).select_from(dossiers_from.outerjoin(STEPS, STEPS.c.ma_ho_so == HO_SO.c.ma_ho_so))
    if codes:
        query = query.where(sa.or_(*(HO_SO.c.ma_ho_so.in_(codes[i:i + _IN_CHUNK])
                                     for i in range(0, len(codes), _IN_CHUNK))))
    if after is not None:
        query = query.where(HO_SO.c.ma_ho_so > sa.bindparam("after", after, type_=sa.String()))
    return query.order_by(HO_SO.c.ma_ho_so, STEPS.c.id)


def _grouped(rows: Iterable[Sequence[Any]]) -> Iterator[tuple[tuple, list[tuple]]]:
    """(dossier columns, [step columns, ...]) from the joined rows."""
    width = len(DOSSIER_COLUMNS)
    head: tuple | None = None
    steps: list[tuple] = []
    for row in rows:
        if head is None or row[0] != head[0]:
            if head is not None:
                yield head, steps
            head, steps = tuple(row[:width]), []
        if row[width] is not None:
            steps.append(tuple(row[width:]))
    if head is not None:
        yield head, steps


# -- values ---------------------------------------------------------------------------------------------
# Each converter takes the column's name, the value and the dossier's list of problems: a value it cannot
# accept becomes a problem naming the column (and None), so every problem of a dossier is reported at once.

def _moment(column: str, value: Any, problems: list[str]) -> datetime | None:
    """A naive local time from what a driver returned: a datetime, a date, or text (SQLite, and a date
    MariaDB could not convert, such as ``0000-00-00``)."""
    kind = value.__class__
    if kind is datetime and value.tzinfo is None:  # the usual cases first
        moment = value
    elif kind is str:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            if not value.strip():
                return None
            try:
                moment = datetime.fromisoformat(value.strip())
            except ValueError:
                problems.append(f"{column} {value!r} is not a real date and time")
                return None
        if moment.tzinfo:
            moment = moment.astimezone(VN_TZ).replace(tzinfo=None)
    elif value is None:
        return None
    elif isinstance(value, datetime):
        moment = value.astimezone(VN_TZ).replace(tzinfo=None) if value.tzinfo else value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    else:
        problems.append(f"{column} {value!r} is not a date and time")
        return None
    if not _FIRST_YEAR <= moment.year < _LAST_YEAR:
        problems.append(f"{column} {value!r} is not a plausible date (year {moment.year})")
        return None
    return moment


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - _EPOCH) // _MS - _OFFSET_MS


def _flag(column: str, value: Any, problems: list[str]) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "t"):
        return True
    if text in ("0", "false", "f"):
        return False
    problems.append(f"{column} {value!r} is not a boolean")
    return None


def _small_int(column: str, value: Any, allowed: frozenset[int], problems: list[str]) -> int | None:
    if value is None or (value.__class__ is int and value in allowed):
        return value
    if isinstance(value, str) and not value.strip():
        return None
    text = str(value).strip()
    if text.isdigit() and int(text) in allowed:
        return int(text)
    problems.append(f"{column} {value!r} is not one of {', '.join(map(str, sorted(allowed)))}")
    return None


def _integer(column: str, value: Any, problems: list[str]) -> int | None:
    if value.__class__ is int:
        return value
    text = str(value).strip()
    if not text.isdigit():
        problems.append(f"{column} {value!r} is not an integer")
        return None
    return int(text)


def _text(value: Any) -> str | None:
    """Text as stored (an empty string is no value)."""
    if value.__class__ is str:
        return value or None
    return None if value is None else str(value) or None


class _Builder:
    """Accepted rows, refused rows and the overlap fingerprints of one batch of one system."""

    def __init__(self, system: OnestopSystem, request_id: str, version_floor: datetime | None = None) -> None:
        self.system = system
        self.request_id = request_id
        self.version_floor = version_floor  # versions are raised to this (dossiers found by the key listing)
        self.fetched_at = datetime.now(timezone.utc)
        self.rows: list[tuple] = []
        self.hashes: list[str] = []
        self.steps: list[tuple] = []
        self.offsets: list[int] = [0]
        self.refused: list[tuple[str, str, str]] = []  # code, reason, raw
        self.fingerprints: dict[str, list] = {}
        self.max_version: datetime | None = None

    def add(self, head: tuple, steps: list[tuple], recent: Mapping[str, list]) -> None:
        code = head[0]
        digest = hashlib.sha256(repr((head, steps)).encode()).hexdigest()
        problems: list[str] = []
        row, step_rows, version = self._convert(head, steps, problems)
        if version is not None and self.version_floor is not None and version < self.version_floor:
            version = self.version_floor
            row = (*row[:-1], _ms(version))
        if version is not None:
            self.max_version = version if self.max_version is None else max(self.max_version, version)
            fingerprint = [_ms(version), digest[:16]]
            if recent.get(code) == fingerprint:
                return  # read again in the overlap, unchanged since it was landed
            self.fingerprints[code] = fingerprint
        if problems:
            reason = f"{self.system.name} dossier {code}: " + "; ".join(problems)
            self.refused.append((code, reason, _raw(head, steps)))
            return
        self.rows.append(row)
        self.hashes.append(digest)
        self.steps.extend(step_rows)
        self.offsets.append(len(self.steps))

    def _convert(self, head: tuple, steps: list[tuple], problems: list[str]) -> tuple[tuple, list[tuple], datetime | None]:
        """The canonical row (without steps), its step rows and its version; ``problems`` gets what is wrong."""
        status_map = self.system.status_map
        code = head[0]
        problem = dossier_code_problem(code if code.__class__ is str else str(code))
        if problem:
            problems.append(f"ma_ho_so: {problem}")
        kenh = head[_KENH]
        channel = CHANNELS.get(kenh.strip() if kenh.__class__ is str else kenh)
        if channel is None:
            problems.append(f"kenh {kenh!r} is not one of {', '.join(CHANNELS)}")
        source_status = _text(head[_TRANG_THAI])
        status = status_map.get(source_status.strip()) if source_status else None
        if status is None:
            problems.append(f"trang_thai {head[_TRANG_THAI]!r} is not a status code of this system "
                            f"({', '.join(status_map)})")
        received = _moment("ngay_tiep_nhan", head[9], problems)
        due = _moment("ngay_hen_tra", head[10], problems)
        finished = _moment("ngay_ket_thuc", head[11], problems)
        returned = _moment("ngay_tra", head[12], problems)
        updated = _moment("updated_at", head[15], problems)
        if received is not None:
            for later, value in (("ngay_hen_tra", due), ("ngay_ket_thuc", finished), ("ngay_tra", returned)):
                if value is not None and value < received:
                    problems.append(f"{later} {value} is before ngay_tiep_nhan {received}")
        if updated is None and _text(head[_UPDATED]) is None:
            problems.append("updated_at is missing")
        applicant_type = _small_int("loai_doi_tuong", head[_D["loai_doi_tuong"]], APPLICANT_TYPES, problems)
        paid = _flag("da_thanh_toan", head[_D["da_thanh_toan"]], problems)
        version = updated
        step_rows = []
        for step in steps:
            step_id = step[0]
            where = f"qua_trinh_xu_ly id {step_id}"
            processed = _moment(f"{where} thoi_diem", step[6], problems)
            step_due = _moment(f"{where} han_xu_ly", step[7], problems)
            step_updated = _moment(f"{where} updated_at", step[8], problems)
            if step_updated is not None and version is not None and step_updated > version:
                version = step_updated
            step_source = _text(step[_S["trang_thai"]])
            step_status = status_map.get(step_source.strip()) if step_source else None
            if step_source and step_status is None:
                problems.append(f"{where} trang_thai {step_source!r} is not a status code of this system")
            step_rows.append((_integer(f"{where} id", step_id, problems), _text(step[1]), _text(step[2]),
                              _text(step[3]), _text(step[4]), step_status, step_source,
                              _ms(processed), _ms(step_due), _ms(step_updated)))
        applicant_id = _text(head[_D["so_giay_to"]])
        applicant_id = applicant_id.strip() or None if applicant_id else None
        row = (self.system.name, code, _text(head[1]), _text(head[2]), _text(head[3]), channel, _text(head[5]),
               applicant_type, applicant_id, applicant_id_kind(applicant_id), _text(head[_D["trich_yeu"]]),
               _ms(received), _ms(due), _ms(finished), _ms(returned), status, source_status, paid, _ms(updated),
               False, _ms(version))
        return row, step_rows, version

    def records(self) -> pa.Table:
        columns = list(zip(*self.rows)) if self.rows else [()] * len(_ROW_FIELDS)
        arrays = {name: pa.array(values, dossiers.SCHEMA.field(name).type) for name, values in zip(_ROW_FIELDS, columns)}
        step_columns = list(zip(*self.steps)) if self.steps else [()] * dossiers.STEP.num_fields
        values = pa.StructArray.from_arrays(
            [pa.array(v, f.type) for v, f in zip(step_columns, dossiers.STEP)], fields=list(dossiers.STEP))
        arrays["steps"] = pa.ListArray.from_arrays(pa.array(self.offsets, pa.int32()), values,
                                                   type=dossiers.SCHEMA.field("steps").type)
        n = len(self.rows)
        return _with_provenance(arrays, n, self.request_id, self.fetched_at, self.hashes)

    def rejected(self) -> pa.Table:
        n = len(self.refused)
        return pa.table({
            "source_system": [SYSTEM] * n,
            "dataset": [dossiers.DATASET] * n,
            "operation": [f"{self.system.name} ho_so"] * n,
            "request_id": [self.request_id] * n,
            "position": [f"system {self.system.name}, dossier {code}" for code, _, _ in self.refused],
            "record_key": [code if code is not None else None for code, _, _ in self.refused],
            "reason": [reason for _, reason, _ in self.refused],
            "raw": [raw for _, _, raw in self.refused],
            "fetched_at": pa.repeat(pa.scalar(self.fetched_at, pa.timestamp("ms", tz="UTC")), n),
        }, schema=QUARANTINE_SCHEMA)


#: The canonical columns a row tuple holds, in order (``steps`` and the provenance are added apart).
_ROW_FIELDS = tuple(f.name for f in dossiers.SCHEMA
                    if f.name != "steps" and f.name not in ("source_system", "request_id", "fetched_at",
                                                             "payload_sha256"))


def _with_provenance(arrays: dict[str, pa.Array], n: int, request_id: str, fetched_at: datetime,
                     hashes: list[str]) -> pa.Table:
    arrays.update({
        "source_system": pa.repeat(pa.scalar(SYSTEM), n),
        "request_id": pa.repeat(pa.scalar(request_id), n),
        "fetched_at": pa.repeat(pa.scalar(fetched_at, pa.timestamp("ms", tz="UTC")), n),
        "payload_sha256": pa.array(hashes, pa.string()),
    })
    return pa.table({f.name: arrays[f.name] for f in dossiers.SCHEMA}).cast(dossiers.SCHEMA)


def _tombstones(system: OnestopSystem, codes: list[str], version: datetime) -> pa.Table:
    """One row per vanished dossier: its key, ``deleted`` and a version after anything read from its system."""
    n = len(codes)
    arrays = {name: pa.nulls(n, dossiers.SCHEMA.field(name).type) for name in _ROW_FIELDS}
    arrays["system"] = pa.array([system.name] * n, pa.string())
    arrays["dossier_code"] = pa.array(codes, pa.string())
    arrays["deleted"] = pa.array([True] * n, pa.bool_())
    arrays["version"] = pa.array([_ms(version)] * n, dossiers.SCHEMA.field("version").type)
    arrays["steps"] = pa.nulls(n, dossiers.SCHEMA.field("steps").type)
    hashes = [hashlib.sha256(f"deleted {system.name} {code}".encode()).hexdigest() for code in codes]
    return _with_provenance(arrays, n, f"deletions-{uuid.uuid4()}", datetime.now(timezone.utc), hashes)


def _raw(head: tuple, steps: list[tuple]) -> str:
    """The dossier as read, for an operator: its row and its steps as JSON."""
    return json.dumps({"ho_so": dict(zip(DOSSIER_COLUMNS, head)),
                       "qua_trinh_xu_ly": [dict(zip(_STEP_READ, step)) for step in steps]},
                      ensure_ascii=False, default=str)


# -- the cursor -----------------------------------------------------------------------------------------

def _new_state() -> dict[str, Any]:
    """A system's cursor: its high-water mark (its own clock, naive local time), the pass in progress,
    the overlap fingerprints, and its known dossier codes."""
    return {"hwm": None, "pass": None, "recent": {}, "keys": _pack(()), "count": 0, "runs_since_listing": 0}


def _snapshot(cursor: dict[str, Any]) -> dict[str, Any]:
    """A copy of the cursor that later changes do not reach. Its leaves (strings, numbers, the
    fingerprint pairs) are replaced, never changed in place, so copying the containers is enough,
    and far cheaper than a deep copy of thousands of fingerprints per batch."""
    systems = {}
    for name, state in cursor["systems"].items():
        current = state["pass"]
        systems[name] = {**state, "recent": dict(state["recent"]),
                         "pass": None if current is None else {**current, "seen": list(current["seen"])}}
    return {**cursor, "systems": systems}


def _render(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="microseconds")


def _parse_moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _pack(codes: Iterable[str]) -> str:
    """A set of codes, sorted (neighbours share long prefixes), newline-joined, zlib, base64."""
    return base64.b64encode(zlib.compress("\n".join(sorted(codes)).encode(), 6)).decode("ascii")


def _unpack(blob: str) -> set[str]:
    text = zlib.decompress(base64.b64decode(blob)).decode()
    return set(text.split("\n")) if text else set()


def _prune(recent: dict[str, list], floor: datetime | None) -> None:
    """Drop the fingerprints older than the next pass's overlap window, and keep at most RECENT_LIMIT."""
    if floor is not None:
        limit = _ms(floor)
        for code in [c for c, (version, _) in recent.items() if version < limit]:
            del recent[code]
    if len(recent) > RECENT_LIMIT:
        for code, _ in sorted(recent.items(), key=lambda item: item[1][0])[:len(recent) - RECENT_LIMIT]:
            del recent[code]
