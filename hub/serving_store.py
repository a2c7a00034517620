"""The lookup service's in-memory copy of the published snapshot, built for point lookups.

A DuckDB query costs about 0.4 ms from Python, far too much per request. So the published snapshot
(``lake/published/current.duckdb``) is read once, through a read-only connection that is closed right
after, into a shape where a lookup is a binary search and a slice:

- every row of a dataset becomes one JSON array (values in :attr:`ServedDataset.columns` order),
  rendered by DuckDB in one vectorised pass and kept in a single Arrow buffer: no Python object per
  row, so a million citizens cost a few hundred megabytes and no garbage-collector time;
- keys sit in a sorted numpy array aligned with the rows (``np.searchsorted``, about a microsecond);
- a person's civil events and a document's status messages are found through sorted secondary
  indexes of the same kind, and each dataset's change feed through its rows sorted by the moment
  their latest version reached the hub (``fetched_at``).

Values are rendered once, at load, into their JSON form: dates ``yyyy-MM-dd``, moments ISO 8601 in
+07:00 (``national-systems.md`` §0), money as decimal strings (a float would round 10¹³ VND). The raw
``edxml`` package of a document is not served.

The pipeline swaps snapshots with ``os.replace``. :class:`SnapshotStore` notices a new file by its
identity (device, inode, size, mtime), builds the new copy in a background thread while requests
keep reading the old one, then replaces one reference: a request reads the snapshot it started
with, and none fails during a swap.
"""

from __future__ import annotations

import bisect
import logging
import operator
import os
import re
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import duckdb
import numpy as np
import orjson
import pyarrow as pa

from hub.dossiers import MEASURES_SCHEMA, TIMES_SCHEMA
from schemas.canonical import citizens, civil_events, documents, enterprises
from schemas.timefmt import VN_TZ

log = logging.getLogger(__name__)

#: Decree 47/2020 Art. 41: the synchronised population copy is valid for the agreed period,
#: by convention 24 hours after its data time (``national-systems.md`` §1.3).
POPULATION_COPY_VALIDITY = timedelta(hours=24)
#: Optional table a publisher may add: ``(dataset VARCHAR, as_of TIMESTAMPTZ)``, the time the data of
#: each dataset is known to be true (for the population copy, ThoiDiemDuLieu of its last full pass).
META_TABLE = "snapshot_meta"
_ROW = "__row"
_INDEX = "__i"


@dataclass(frozen=True)
class ServedDataset:
    """What the lookup service serves of one canonical table."""

    name: str
    system: str  # the national system it comes from, reported as ``source``
    key: tuple[str, ...]
    version_column: str | None
    columns: tuple[str, ...]  # served columns, in the order of each row's JSON array
    validity: timedelta | None  # how long a copy is valid after its as-of time (None: no agreed period)


def _served(module: ModuleType, system: str, validity: timedelta | None = None,
            hidden: tuple[str, ...] = ()) -> ServedDataset:
    columns = tuple(name for name in module.SCHEMA.names if name not in hidden)
    return ServedDataset(module.DATASET, system, tuple(module.KEY), module.VERSION_COLUMN, columns, validity)


#: dataset → what is served of it. ``edxml`` is the raw package: kept in the lake, not served.
CATALOGUE: dict[str, ServedDataset] = {spec.name: spec for spec in (
    _served(citizens, "population", POPULATION_COPY_VALIDITY),
    _served(civil_events, "civil"),
    _served(enterprises, "business"),
    _served(documents, "vdxp", hidden=("edxml",)),
    # The one-stop-shop service measures the publisher derives from the dossiers (no personal data).
    ServedDataset("service_measures", "onestop", ("agency", "month"), None, tuple(MEASURES_SCHEMA.names), None),
    ServedDataset("procedure_times", "onestop", ("procedure_code",), None, tuple(TIMES_SCHEMA.names), None),
)}

#: Where a civil event names its subject (who was born, died or married) by personal ID: module,
#: role, ID column and, when the event records one, the ID-type column that must say 1 (personal ID).
EVENT_SUBJECTS: tuple[tuple[str, str, str, str | None, str, str], ...] = (
    ("KS", "child", "child_personal_id", None, "child_name", "child_birth_date"),
    ("KT", "deceased", "deceased_id_number", "deceased_id_type", "deceased_name", "deceased_birth_date"),
    ("KH", "husband", "husband_id_number", "husband_id_type", "husband_name", "husband_birth_date"),
    ("KH", "wife", "wife_id_number", "wife_id_type", "wife_name", "wife_birth_date"),
)
ROLES: tuple[str, ...] = tuple(subject[1] for subject in EVENT_SUBJECTS)


class RowTable:
    """Rows as JSON arrays in Arrow buffers; rows are ordered by key, and keys are searchable.

    The rows stay in the chunks DuckDB produced (found by a bisection over the chunks' first rows):
    combining them would copy the whole table once more at every load."""

    def __init__(self, columns: tuple[str, ...], rows: pa.ChunkedArray, keys: np.ndarray | None) -> None:
        chunks = [c if c.type == pa.large_string() else c.cast(pa.large_string()) for c in rows.chunks if len(c)]
        self.columns = columns
        self.position = {name: i for i, name in enumerate(columns)}
        self._chunks = chunks  # owns the buffers the views below point into
        # int64 offsets as a memoryview: indexing it gives Python ints, without a numpy scalar each time
        self._offsets = [memoryview(c.buffers()[1])[8 * c.offset:8 * (c.offset + len(c) + 1)].cast("q")
                         for c in chunks]
        self._data = [memoryview(c.buffers()[2] or b"") for c in chunks]
        self._starts = [0]
        for chunk in chunks:
            self._starts.append(self._starts[-1] + len(chunk))
        self._keys = keys
        self._key_width = keys.dtype.itemsize // 4 if keys is not None else 0  # characters of a U<n> key
        self._int_keys = _digit_keys(keys)
        self._pickers: dict[tuple[str, ...], Callable[[list[Any]], tuple[Any, ...]]] = {}
        self._projectors: dict[tuple[str, ...], Callable[[list[Any]], dict[str, Any]]] = {}

    def __len__(self) -> int:
        return self._starts[-1]

    def values(self, index: int) -> list[Any]:
        """Every served value of row ``index``, in :attr:`columns` order."""
        if len(self._offsets) == 1:
            chunk, local = 0, index
        else:
            chunk = bisect.bisect_right(self._starts, index) - 1
            local = index - self._starts[chunk]
        offsets = self._offsets[chunk]
        return orjson.loads(self._data[chunk][offsets[local]:offsets[local + 1]])

    def picker(self, names: tuple[str, ...]) -> Callable[[list[Any]], tuple[Any, ...]]:
        """``values`` → the values of ``names``, as a tuple, in one C call (made once per name list)."""
        pick = self._pickers.get(names)
        if pick is None:
            positions = [self.position[name] for name in names]  # KeyError: not a served column
            if len(positions) == 1:
                (only,) = positions
                pick = lambda values: (values[only],)  # noqa: E731 - itemgetter of one gives no tuple
            else:
                pick = operator.itemgetter(*positions)
            if len(self._pickers) >= _MADE_MAX:
                self._pickers.clear()
            self._pickers[names] = pick
        return pick

    def projector(self, fields: tuple[str, ...]) -> Callable[[list[Any]], dict[str, Any]]:
        """``values`` → ``{field: value}`` for ``fields``, in their order (made once per field list)."""
        project = self._projectors.get(fields)
        if project is None:
            if fields:
                pick = self.picker(fields)
                project = lambda values: dict(zip(fields, pick(values)))  # noqa: E731
            else:
                project = lambda values: {}  # noqa: E731
            if len(self._projectors) >= _MADE_MAX:
                self._projectors.clear()
            self._projectors[fields] = project
        return project

    def find(self, key: str) -> int | None:
        """The row of ``key``, or ``None``. Keys are unique (one row per key), so one binary search
        and one comparison decide; a key longer than the array's fixed width is never in it (a longer
        key must not match a truncated prefix)."""
        keys = self._keys
        if keys is None or len(key) > self._key_width:
            return None
        numbers = self._int_keys
        if numbers is not None:  # every key is _key_width ASCII digits: search their values
            if len(key) != self._key_width or not (key.isascii() and key.isdigit()):
                return None
            value = int(key)
            top, values = numbers
            block = bisect.bisect_right(top, value) - 1
            if block < 0:
                return None
            low = block * _BLOCK
            high = min(low + _BLOCK, len(values))
            found = bisect.bisect_left(values, value, low, high)
            return found if found < high and values[found] == value else None
        low = int(keys.searchsorted(key))
        return low if low < len(keys) and keys[low] == key else None

    def key_at(self, index: int) -> str | None:
        return str(self._keys[index]) if self._keys is not None else None


#: Distinct name lists a table keeps a picker or projector for (a handful in practice: the grants).
_MADE_MAX = 256
#: Keys per block of the two-level search in :func:`_digit_keys`: 512 bytes of int64, eight cache lines.
_BLOCK = 64


def _digit_keys(keys: np.ndarray | None) -> tuple[memoryview, memoryview] | None:
    """When every key is the same number (at most 18) of ASCII digits, as personal IDs are: the keys
    as int64 (in the same order, since equal-length digit strings sort as their values do), for a
    search in two levels with ``bisect`` over views that read Python ints: the first key of every
    block of :data:`_BLOCK` (a small array, 128 KB for a million keys, that stays in the CPU's
    cache), then the one block. That touches a few cache lines where a binary search over the whole
    array touches twenty scattered ones, and it runs no numpy code per lookup."""
    if keys is None or not len(keys) or keys.dtype.kind != "U" or not 0 < keys.dtype.itemsize // 4 <= 18:
        return None
    points = keys.view(np.uint32)
    if not bool(((points >= 48) & (points <= 57)).all()):  # also rules out a shorter key (NUL-padded)
        return None
    numbers = keys.astype(np.int64)
    top = np.ascontiguousarray(numbers[::_BLOCK])
    return memoryview(top).cast("B").cast("q"), memoryview(numbers).cast("B").cast("q")


class MultiIndex:
    """Sorted (key → row, tag) pairs: every row of a key by two binary searches."""

    def __init__(self, keys: np.ndarray, rows: np.ndarray, tags: np.ndarray) -> None:
        self._keys, self._rows, self._tags = keys, rows, tags

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, key: str) -> list[tuple[int, int]]:
        """(row, tag) of every entry of ``key``, in index order."""
        low, high = _search(self._keys, key)
        return list(zip(self._rows[low:high].tolist(), self._tags[low:high].tolist()))


class ChangeLog:
    """Rows in the order their latest version reached the hub (``fetched_at``, then key): what changed
    since a cursor is a binary search and a slice. A cursor is (moment in epoch ms, key) of the last
    row a client received; rows that share the moment are in key order, so the cursor's key says how
    far into them the client got."""

    def __init__(self, moments: np.ndarray, rows: np.ndarray) -> None:
        self._moments, self._rows = moments, rows

    def __len__(self) -> int:
        return len(self._rows)

    def page(self, since: tuple[int, tuple] | None, limit: int,
             key_of: Callable[[int], tuple]) -> tuple[list[int], tuple[int, tuple] | None]:
        """Up to ``limit`` rows after ``since``, and the cursor after the last of them (``since``
        itself when nothing changed)."""
        start = 0 if since is None else self._start(since, key_of)
        rows = self._rows[start:start + limit].tolist()
        if not rows:
            return [], since
        return rows, (int(self._moments[start + len(rows) - 1]), key_of(rows[-1]))

    def _start(self, since: tuple[int, tuple], key_of: Callable[[int], tuple]) -> int:
        moment, key = since
        low = int(np.searchsorted(self._moments, moment, "left"))
        high = int(np.searchsorted(self._moments, moment, "right"))
        return bisect.bisect_right(self._rows, key, low, high, key=lambda row: key_of(int(row)))


def _search(keys: np.ndarray, key: str) -> tuple[int, int]:
    """[low, high) of ``key`` in sorted ``keys``; empty unless an entry equals ``key`` exactly (a
    longer key must not match a truncated prefix of the array's fixed width)."""
    if not len(keys) or len(key) > keys.dtype.itemsize // 4:
        return 0, 0
    low = int(np.searchsorted(keys, key, "left"))
    if low >= len(keys) or keys[low] != key:
        return 0, 0
    return low, int(np.searchsorted(keys, key, "right"))


@dataclass(frozen=True)
class DatasetCopy:
    """One dataset of a loaded snapshot, and how fresh it is."""

    spec: ServedDataset
    rows: RowTable
    as_of: datetime | None
    as_of_basis: str  # where ``as_of`` came from: the metadata table or max(fetched_at)
    changes: ChangeLog

    def key_of(self, row: int) -> tuple:
        """The key of a row, as a tuple of its key columns' values."""
        if len(self.spec.key) == 1:
            return (self.rows.key_at(row),)
        values = self.rows.values(row)
        return tuple(values[self.rows.position[name]] for name in self.spec.key)

    @cached_property
    def valid_until(self) -> datetime | None:
        if self.as_of is None or self.spec.validity is None:
            return None
        return self.as_of + self.spec.validity

    @cached_property
    def as_of_text(self) -> str | None:
        """``as_of`` as every answer carries it (ISO 8601, +07:00), rendered once per snapshot."""
        return iso_moment(self.as_of)

    @cached_property
    def valid_until_text(self) -> str | None:
        return iso_moment(self.valid_until)

    def expired(self, now: datetime) -> bool:
        """Past its legal validity (always False for datasets without an agreed period)."""
        until = self.valid_until
        return until is not None and now > until

    @cached_property
    def valid_until_epoch(self) -> float | None:
        """``valid_until`` in POSIX seconds, for :meth:`expired_now`."""
        until = self.valid_until
        return until.timestamp() if until is not None else None

    def expired_now(self) -> bool:
        """:meth:`expired` at this moment: a float comparison, without making a datetime per request."""
        until = self.valid_until_epoch
        return until is not None and time.time() > until


@dataclass(frozen=True)
class FileIdentity:
    """Enough of ``stat`` to tell that ``os.replace`` put another file at the same path."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> "FileIdentity | None":
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class Snapshot:
    """A published snapshot as the API reads it; immutable, so requests share it without locks."""

    identity: FileIdentity
    published_at: datetime
    loaded_at: datetime
    datasets: dict[str, DatasetCopy]
    person_events: MultiIndex  # personal ID → (civil_events row, index into ROLES)
    document_statuses: MultiIndex  # edXML DocumentId → (documents row of a status package, 0)
    load_seconds: float = 0.0


def read_snapshot(path: Path) -> Snapshot:
    """Read the snapshot at ``path`` into memory; the DuckDB connection is closed before returning."""
    started = time.monotonic()
    identity = FileIdentity.of(path)
    if identity is None:
        raise FileNotFoundError(f"no published snapshot at {path}")
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("SET enable_progress_bar = false")  # a server's stdout is not a terminal
        con.execute("SET TimeZone = 'Asia/Ho_Chi_Minh'")
        con.execute("SET arrow_large_buffer_size = true")
        tables = _tables(con)
        meta = _read_meta(con) if META_TABLE in tables else {}
        copies = {name: _read_dataset(con, spec, meta) for name, spec in CATALOGUE.items() if name in tables}
        persons = _person_index(con) if "civil_events" in copies else _empty_index()
        statuses = _status_index(con) if "documents" in copies else _empty_index()
    finally:
        con.close()
    published = datetime.fromtimestamp(identity.mtime_ns / 1e9, VN_TZ)
    return Snapshot(identity, published, datetime.now(VN_TZ), copies, persons, statuses,
                    round(time.monotonic() - started, 3))


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    return {row[0]: row[1] for row in con.execute(f"DESCRIBE {_quote(table)}").fetchall()}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _latest(con: duckdb.DuckDBPyConnection, spec: ServedDataset, present: dict[str, str]) -> str:
    """A CTE ``latest`` of one row per key. Canonical tables hold one already (a blocking check sees
    to it), and then the table is read as it is; only if a key repeats is the newest row of each
    picked, which costs a window over the wide rows."""
    keys = ", ".join(_quote(k) for k in spec.key)
    table = _quote(spec.name)
    total, distinct = con.execute(f"SELECT count(*), count(DISTINCT ({keys})) FROM {table}").fetchall()[0]
    if total == distinct:
        return f"WITH latest AS (SELECT * FROM {table}) "
    log.warning("%s: %d rows for %d keys in the snapshot; serving the newest row of each", spec.name, total, distinct)
    newest = [f"{_quote(spec.version_column)} DESC NULLS LAST"] if spec.version_column in present else []
    if "fetched_at" in present:
        newest.append('"fetched_at" DESC NULLS LAST')
    tie = ", ".join(newest) or keys
    return (f"WITH latest AS (SELECT * FROM {table} "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {tie}) = 1) ")


def _numbered(latest: str, spec: ServedDataset) -> str:
    """``latest`` numbered in key order, the order of the rows: what secondary indexes point with."""
    keys = ", ".join(_quote(k) for k in spec.key)
    return f"{latest}, numbered AS (SELECT row_number() OVER (ORDER BY {keys}) - 1 AS {_INDEX}, * FROM latest) "


_DECIMAL = re.compile(r"DECIMAL\(\d+,\s*\d+\)")


def _json_value(column: str, duck_type: str | None) -> str:
    """SQL rendering one column as its JSON value (see the module docstring for the forms)."""
    if duck_type is None:
        return "NULL"  # a column the canonical schema has and this snapshot lacks
    name = _quote(column)
    if duck_type == "TIMESTAMP WITH TIME ZONE":
        return f"strftime({name} AT TIME ZONE 'Asia/Ho_Chi_Minh', '%Y-%m-%dT%H:%M:%S.%g+07:00')"
    if duck_type.startswith("DECIMAL"):
        return f"CAST({name} AS VARCHAR)"
    if "DECIMAL" in duck_type or "TIMESTAMP WITH TIME ZONE" in duck_type:
        nested = _DECIMAL.sub("VARCHAR", duck_type).replace("TIMESTAMP WITH TIME ZONE", "VARCHAR")
        return f"CAST({name} AS {nested})"
    return name


def _read_dataset(con: duckdb.DuckDBPyConnection, spec: ServedDataset,
                  meta: dict[str, datetime]) -> DatasetCopy:
    present = _columns(con, spec.name)
    values = ", ".join(_json_value(column, present.get(column)) for column in spec.columns)
    key_columns = "".join(f"{_quote(k)}, " for k in spec.key) if len(spec.key) == 1 else ""
    order = ", ".join(_quote(k) for k in spec.key)  # keys are unique in ``latest``: a total order
    table = con.sql(f"{_latest(con, spec, present)}SELECT {key_columns}json_array({values}) AS {_ROW} "
                    f"FROM latest ORDER BY {order}").to_arrow_table()
    keys = _key_array(table.column(spec.key[0])) if key_columns else None
    rows = table.column(_ROW)
    as_of, basis = _as_of(con, spec, present, meta)
    return DatasetCopy(spec, RowTable(spec.columns, rows, keys), as_of, basis, _change_log(con, spec, present))


def _change_log(con: duckdb.DuckDBPyConnection, spec: ServedDataset, present: dict[str, str]) -> ChangeLog:
    if "fetched_at" not in present:
        return ChangeLog(np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    query = (f"{_numbered(_latest(con, spec, present), spec)}SELECT epoch_ms(fetched_at) AS t, {_INDEX} AS i "
             f"FROM numbered WHERE fetched_at IS NOT NULL ORDER BY t, i")
    table = con.sql(query).to_arrow_table()
    return ChangeLog(table.column(0).to_numpy().astype(np.int64), table.column(1).to_numpy().astype(np.int64))


def _key_array(column: pa.ChunkedArray) -> np.ndarray:
    keys = column.to_pylist()
    return np.array(keys, dtype=str) if keys else np.array([], dtype="U1")


def _as_of(con: duckdb.DuckDBPyConnection, spec: ServedDataset, present: dict[str, str],
           meta: dict[str, datetime]) -> tuple[datetime | None, str]:
    """The data time of a dataset: the publisher's metadata when it wrote some, else the moment the
    hub last received a row from the source (max ``fetched_at``). ``updated_at`` is not used: it is
    when a record last changed, and a quiet day would make a copy synchronised minutes ago look a
    day old."""
    if spec.name in meta:
        return meta[spec.name], META_TABLE
    if "fetched_at" not in present:
        return None, "unknown"
    found = con.execute(f"SELECT max(fetched_at) FROM {_quote(spec.name)}").fetchall()[0][0]
    return (_to_vn(found), "max(fetched_at)") if found is not None else (None, "empty")


def _read_meta(con: duckdb.DuckDBPyConnection) -> dict[str, datetime]:
    try:
        rows = con.execute(f"SELECT dataset, max(as_of) FROM {META_TABLE} GROUP BY dataset").fetchall()
    except duckdb.Error as exc:
        log.warning("ignoring %s: %s", META_TABLE, exc)
        return {}
    return {str(name): _to_vn(moment) for name, moment in rows if moment is not None}


def iso_moment(moment: datetime | None) -> str | None:
    """A moment as answers carry it: ISO 8601 with milliseconds and the offset."""
    return moment.isoformat(timespec="milliseconds") if moment is not None else None


def _to_vn(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(VN_TZ)


def _person_index(con: duckdb.DuckDBPyConnection) -> MultiIndex:
    spec = CATALOGUE["civil_events"]
    present = _columns(con, spec.name)
    parts = []
    for role, (module, _, id_column, type_column, _, _) in enumerate(EVENT_SUBJECTS):
        if id_column not in present:
            continue
        personal = f" AND coalesce({_quote(type_column)}, 1) = 1" if type_column in present else ""
        parts.append(f"SELECT {_quote(id_column)} AS pid, {role} AS role, {_INDEX} AS i FROM numbered "
                     f"WHERE module = '{module}'{personal}")
    if not parts:
        return _empty_index()
    query = (f"{_numbered(_latest(con, spec, present), spec)}SELECT pid, i, role FROM ({' UNION ALL '.join(parts)}) "
             r"WHERE regexp_full_match(pid, '\d{12}') ORDER BY pid, i, role")
    return _multi_index(con.sql(query).to_arrow_table())


def _status_index(con: duckdb.DuckDBPyConnection) -> MultiIndex:
    spec = CATALOGUE["documents"]
    present = _columns(con, spec.name)
    if not {"response_for_doc_id", "message_type"} <= present.keys():
        return _empty_index()
    moment = '"received_at"' if "received_at" in present else _INDEX
    query = (f"{_numbered(_latest(con, spec, present), spec)}"
             f"SELECT response_for_doc_id AS ref, {_INDEX} AS i, 0 AS tag "
             f"FROM numbered WHERE message_type = 'status' AND response_for_doc_id IS NOT NULL "
             f"ORDER BY ref, {moment} NULLS FIRST, {_INDEX}")
    return _multi_index(con.sql(query).to_arrow_table())


def _multi_index(table: pa.Table) -> MultiIndex:
    columns = table.columns
    return MultiIndex(_key_array(columns[0]), columns[1].to_numpy().astype(np.int64),
                      columns[2].to_numpy().astype(np.int8))


def _empty_index() -> MultiIndex:
    return MultiIndex(np.array([], dtype="U1"), np.array([], dtype=np.int64), np.array([], dtype=np.int8))


@dataclass
class SnapshotStore:
    """The current :class:`Snapshot`, replaced when the pipeline publishes a new file.

    :meth:`poll` is cheap (a clock read; a ``stat`` at most every ``check_interval`` seconds) and is
    called on every request; a rebuild runs in a background thread, so requests never wait for one.
    """

    path: Path
    check_interval: float = 1.0
    _current: Snapshot | None = None
    _next_check: float = 0.0
    _building: bool = False
    _failed: FileIdentity | None = None  # a file that could not be read: not retried until it changes
    last_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def current(self) -> Snapshot | None:
        return self._current

    def load(self) -> Snapshot | None:
        """Build the store now (start-up, tests) when the file is new; returns the current snapshot."""
        identity = FileIdentity.of(self.path)
        if identity is not None and self._wanted(identity):
            self._build()
        return self._current

    def poll(self) -> None:
        """Start a background rebuild when ``current.duckdb`` is another file than the one loaded."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.check_interval
        identity = FileIdentity.of(self.path)
        if identity is None or not self._wanted(identity):
            return
        with self._lock:
            if self._building:
                return
            self._building = True
        threading.Thread(target=self._build, name="snapshot-load", daemon=True).start()

    def _wanted(self, identity: FileIdentity) -> bool:
        loaded = self._current.identity if self._current is not None else None
        return identity != loaded and identity != self._failed

    def _build(self) -> None:
        try:
            snapshot = read_snapshot(self.path)
        except Exception as exc:  # a broken file must not take the service down: keep the old copy
            self._failed = FileIdentity.of(self.path)
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("cannot load snapshot %s: %s", self.path, self.last_error)
        else:
            self._current = snapshot  # the swap: one reference, read by each request once
            self.last_error = None
            log.info("loaded snapshot %s in %.2f s", self.path, snapshot.load_seconds)
        finally:
            with self._lock:
                self._building = False
