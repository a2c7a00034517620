"""The province's one-stop-shop systems (Hệ thống một cửa điện tử, ``national-systems.md`` §6).

Each system is a real relational database holding exactly the §6 schema (``ho_so`` and
``qua_trinh_xu_ly``), filled with the dossiers of :mod:`sandbox.onestop_dossiers` and kept changing
while the sandbox runs. By default there are three: a district people's committee on a SQLite file
under ``$HUB_HOME/sandbox/onestop/`` (always served), a department on the machine's PostgreSQL and one
on its MariaDB (each in a dedicated database ``lgsp_onestop_<name>``). A server that does not answer
is reported on stderr once and left out; the SQLite system needs no server.

Times are stored as naive ``DATETIME`` (PostgreSQL ``TIMESTAMP WITHOUT TIME ZONE``) in
Asia/Ho_Chi_Minh local time (+07:00), as the province's systems keep them. Each system has its own
clock offset (up to :data:`MAX_CLOCK_OFFSET_S` either way, drawn from the seed unless configured):
every time it stamps on a live change is its own clock's, the way real systems' clocks drift apart.
``updated_at`` moves forward on every change of a row.

The generated history is deterministic from the sandbox seed: opening the systems again drops the
tables and recreates the same rows. While serving, a background thread (:meth:`OneStopSystems.start`)
advances open dossiers, receives new ones and now and then deletes one entered by mistake; tests and
benchmarks call :meth:`OneStopSystems.advance` and :meth:`OneStopSystems.delete` instead.

The hub reads with a read-only account: on PostgreSQL and MariaDB the sandbox creates one per
database (``<database>_ro``, password drawn at every start) and hands out its URL; SQLite has no
accounts, so its file URL is handed out as it is.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from sandbox import names
from sandbox.agencies import Agency, _DEPARTMENTS, agencies
from sandbox.business import EnterpriseRegistry
from sandbox.ground_truth import GroundTruth
from sandbox.onestop_dossiers import (
    CHANNELS, COUNTER, DAY, HO_SO_COLUMNS, LEADERS, LOCAL, MAX_STEPS, PORTAL, REFUSED, STEP_COLUMNS, TERMINAL,
    Applicant, ApplicantDrawer, Dossiers, Shares, Staff, dossier_code, generate, local_day, system_rng)
from sandbox.procedures import Procedure, for_level
from sandbox.province import Residents

MAX_CLOCK_OFFSET_S = 180
MONTH_DAYS = 30  # the history reaches back ``months`` of 30 days from as_of
BATCH_ROWS = 20_000  # rows per INSERT batch (one transaction each)
CONNECT_TIMEOUT_S = 3
PG_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/"
MARIADB_SERVER = "mysql+pymysql://root@127.0.0.1:3306/"
#: The default systems: (name, where it lives). ``sqlite`` is a file under the sandbox's directory.
DEFAULT_SYSTEMS = (("quan-hong-bang", "sqlite"), ("so-tu-phap", "postgresql"), ("so-cong-thuong", "mariadb"))
_DRIVERS = {"postgresql": "postgresql+psycopg2", "postgres": "postgresql+psycopg2", "mysql": "mysql+pymysql",
            "mariadb": "mariadb+pymysql"}
_BACKENDS = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # what hub.config.parse_onestop_urls accepts
_DATABASE = re.compile(r"[A-Za-z0-9_]{1,60}")
_OPEN = ("MOI", "TIEP_NHAN", "DANG_XU_LY", "BO_SUNG", "NVTC", "DA_XU_LY")
_STREAM_LIVE = 7


class OneStopError(ValueError):
    """A one-stop-shop system configured wrongly; the message names the system and what is wrong."""


# ------------------------------------------------------------------------------------------ schema

METADATA = sa.MetaData()
HO_SO = sa.Table(
    "ho_so", METADATA,
    sa.Column("ma_ho_so", sa.String(40), primary_key=True),
    sa.Column("ma_tthc", sa.String(20), nullable=False),
    sa.Column("ten_tthc", sa.String(255), nullable=False),
    sa.Column("ma_linh_vuc", sa.String(20), nullable=False),
    sa.Column("kenh", sa.String(12), nullable=False),
    sa.Column("chu_ho_so", sa.String(255), nullable=False),
    sa.Column("loai_doi_tuong", sa.SmallInteger, nullable=False),
    sa.Column("so_giay_to", sa.String(20), nullable=False),
    sa.Column("trich_yeu", sa.String(500), nullable=False),
    sa.Column("ngay_tiep_nhan", sa.DateTime, nullable=False),
    sa.Column("ngay_hen_tra", sa.DateTime, nullable=False),
    sa.Column("ngay_ket_thuc", sa.DateTime),
    sa.Column("ngay_tra", sa.DateTime),
    sa.Column("trang_thai", sa.String(12), nullable=False),
    sa.Column("da_thanh_toan", sa.Boolean, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Index("ix_ho_so_updated_at", "updated_at"),
)
QUA_TRINH_XU_LY = sa.Table(
    "qua_trinh_xu_ly", METADATA,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ma_ho_so", sa.String(40), nullable=False),
    sa.Column("nguoi_xu_ly", sa.String(255), nullable=False),
    sa.Column("chuc_danh", sa.String(255), nullable=False),
    sa.Column("phong_ban", sa.String(255), nullable=False),
    sa.Column("noi_dung", sa.String(500), nullable=False),
    sa.Column("trang_thai", sa.String(12), nullable=False),
    sa.Column("thoi_diem", sa.DateTime, nullable=False),
    sa.Column("han_xu_ly", sa.DateTime),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Index("ix_qua_trinh_xu_ly_ma_ho_so", "ma_ho_so"),
    sa.Index("ix_qua_trinh_xu_ly_updated_at", "updated_at"),
)
_TIME_COLUMNS = {"ngay_tiep_nhan", "ngay_hen_tra", "ngay_ket_thuc", "ngay_tra", "updated_at", "thoi_diem", "han_xu_ly"}


def local_time(epoch: int) -> datetime:
    """Epoch seconds as the naive Asia/Ho_Chi_Minh time the databases store."""
    return datetime(1970, 1, 1) + timedelta(seconds=int(epoch) + LOCAL)


def epoch_of(moment: datetime) -> int:
    """The inverse of :func:`local_time`."""
    return int((moment - datetime(1970, 1, 1)).total_seconds()) - LOCAL


# ------------------------------------------------------------------------------------------ config

def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", names.strip_diacritics(text).lower()).strip("-")


def known_systems() -> dict[str, tuple[Agency, str]]:
    """Every system the sandbox can run: name → (agency, level). Districts are named after the
    district (``quan-hong-bang``), departments after the department (``so-tu-phap``); only departments
    that handle a procedure of the catalogue have one."""
    out: dict[str, tuple[Agency, str]] = {}
    for agency in agencies():
        if not agency.in_province:
            continue
        if agency.name.startswith("Ủy ban nhân dân ") and agency.parent_code:
            out[slug(agency.name.removeprefix("Ủy ban nhân dân "))] = (agency, "district")
        elif agency.name in _DEPARTMENTS:
            level = str(_DEPARTMENTS.index(agency.name) + 1)
            if for_level(level):
                out[slug(agency.name)] = (agency, level)
    return out


def parse_system(text: str) -> tuple[str, str]:
    """``name=URL`` (the ``--onestop`` option) → (name, URL); ``OneStopError`` saying what is wrong."""
    name, sep, url = text.partition("=")
    name, url = name.strip(), url.strip()
    if not sep or not name:
        raise OneStopError(f"one-stop-shop system {text!r} must be given as name=URL")
    if name not in known_systems():
        raise OneStopError(f"unknown one-stop-shop system {name!r}; choose one of {', '.join(sorted(known_systems()))}")
    database_url(name, url)  # validates
    return name, url


def database_url(name: str, text: str) -> sa.URL:
    """The SQLAlchemy URL of system ``name`` with this project's driver filled in."""
    try:
        url = sa.make_url(text)
    except (sa.exc.ArgumentError, ValueError):
        raise OneStopError(f"one-stop-shop system {name!r}: not a database URL (e.g. sqlite:///path.sqlite, "
                           "postgresql://user@host:5432/db, mariadb://user@host:3306/db)") from None
    url = url.set(drivername=_DRIVERS.get(url.drivername, url.drivername))
    backend = url.get_backend_name()
    if backend not in _BACKENDS:
        raise OneStopError(f"one-stop-shop system {name!r}: PostgreSQL, MariaDB/MySQL or SQLite, not {backend!r}")
    if _BACKENDS[backend] == "sqlite":
        if not url.database or url.database == ":memory:":
            raise OneStopError(f"one-stop-shop system {name!r}: a SQLite system needs a file (sqlite:///path)")
    elif not url.database or not _DATABASE.fullmatch(url.database):
        raise OneStopError(f"one-stop-shop system {name!r}: the URL must name its database "
                           "(letters, digits and _), e.g. .../lgsp_onestop_so_tu_phap")
    return url


@dataclass(frozen=True)
class OneStopConfig:
    """What one-stop-shop systems the sandbox runs and what they hold."""

    systems: tuple[tuple[str, str], ...] | None = None  # (name, URL); None: DEFAULT_SYSTEMS
    sqlite_only: bool = False  # leave out every system that is not on SQLite
    directory: Path | None = None  # SQLite files of the default systems; None: $HUB_HOME/sandbox/onestop
    dossiers_per_month: int = 10_000  # across all configured systems
    months: int = 3  # history before as_of
    clock_offsets: tuple[tuple[str, int], ...] = ()  # (name, seconds); the others drawn from the seed
    change_interval_s: float = 5.0  # the background changer's period; 0: off
    changes_per_tick: int = 5
    read_only_users: bool = True  # hand out a read-only account on PostgreSQL and MariaDB
    shares: Shares = field(default_factory=Shares)

    def __post_init__(self) -> None:
        if self.dossiers_per_month < 0 or self.months < 0:
            raise OneStopError("one-stop-shop dossiers per month and months must not be negative")
        if self.change_interval_s < 0 or self.changes_per_tick < 1:
            raise OneStopError("one-stop-shop change interval must be >= 0 and changes per tick >= 1")
        seen = set()
        for name, url in self.systems or ():
            if name in seen:
                raise OneStopError(f"one-stop-shop system {name!r} is configured twice")
            if name not in known_systems():
                raise OneStopError(f"unknown one-stop-shop system {name!r}; "
                                   f"choose one of {', '.join(sorted(known_systems()))}")
            seen.add(name)
            database_url(name, url)
        for name, offset in self.clock_offsets:
            if abs(offset) > 3600:
                raise OneStopError(f"one-stop-shop system {name!r}: clock offset {offset} s is over an hour")

    def resolved(self) -> list[tuple[str, str]]:
        """The (name, URL) list to run, defaults filled in and ``sqlite_only`` applied."""
        directory = self.directory or Path(os.environ.get("HUB_HOME", ".hub")) / "sandbox" / "onestop"
        if self.systems is None:
            where = {"sqlite": lambda n: f"sqlite:///{directory / (n + '.sqlite')}",
                     "postgresql": lambda n: PG_SERVER + database_name(n),
                     "mariadb": lambda n: MARIADB_SERVER + database_name(n) + "?charset=utf8mb4"}
            pairs = [(name, where[kind](name)) for name, kind in DEFAULT_SYSTEMS]
        else:
            pairs = list(self.systems)
        if self.sqlite_only:
            pairs = [(n, u) for n, u in pairs if database_url(n, u).get_backend_name() == "sqlite"]
        return pairs


def database_name(system: str) -> str:
    return "lgsp_onestop_" + system.replace("-", "_")


# ------------------------------------------------------------------------------------------ one system

@dataclass(frozen=True)
class Change:
    """One change a system made: ``kind`` is ``received``, ``progressed`` or ``deleted``."""

    system: str
    kind: str
    ma_ho_so: str
    trang_thai: str  # the dossier's status after the change ('' when deleted)
    steps_added: int
    at: datetime  # the system's clock, naive local time


@dataclass(slots=True)
class _Open:
    """What the changer needs to know of a dossier that is not closed yet."""

    procedure: Procedure
    status: str
    channel: int
    applicant: str
    due: int
    last_step: int
    updated: int
    steps: int


class OneStopSystem:
    """One system: its agency, its generated dossiers, its database and its live state."""

    def __init__(self, name: str, url: str, agency: Agency, level: str, offset_s: int, dossiers: Dossiers,
                 staff: Staff) -> None:
        self.name, self.agency, self.level, self.offset_s = name, agency, level, offset_s
        self.url = database_url(name, url)
        self.backend = _BACKENDS[self.url.get_backend_name()]
        self.dossiers, self.staff = dossiers, staff
        self.procedures = for_level(level)
        self.engine: sa.Engine | None = None
        self.served_url: str = ""
        self._reached = False  # the server answered once: drop() must then succeed
        self._reset_state()

    def __repr__(self) -> str:
        return f"OneStopSystem({self.name!r}, {masked(self.url)})"

    def _reset_state(self) -> None:
        """The live state as the generated history leaves it (again after every reload)."""
        by_code = {p.code: p for p in self.procedures}
        counts: dict[str, int] = {}
        last: dict[str, int] = {}
        for row in self.dossiers.steps:
            counts[row[1]] = counts.get(row[1], 0) + 1
            last[row[1]] = row[7]
        self.codes: dict[str, None] = dict.fromkeys(row[0] for row in self.dossiers.ho_so)
        self.pending: dict[str, _Open] = {}  # the dossiers not closed yet
        self._pending_keys: list[str] = []  # the same, to draw one from in O(1)
        self._pending_at: dict[str, int] = {}
        for row in self.dossiers.ho_so:
            d = dict(zip(HO_SO_COLUMNS, row))
            if d["trang_thai"] not in TERMINAL:
                code = d["ma_ho_so"]
                self._pend(code, _Open(by_code[d["ma_tthc"]], d["trang_thai"], CHANNELS.index(d["kenh"]),
                                       d["chu_ho_so"], d["ngay_hen_tra"], last[code], d["updated_at"], counts[code]))
        self.last_seq = dict(self.dossiers.last_seq)
        self.next_step_id = len(self.dossiers.steps) + 1

    def _pend(self, code: str, state: _Open) -> None:
        self.pending[code] = state
        self._pending_at[code] = len(self._pending_keys)
        self._pending_keys.append(code)

    def _unpend(self, code: str) -> None:
        if self.pending.pop(code, None) is None:
            return
        at, last = self._pending_at.pop(code), self._pending_keys.pop()
        if last != code:
            self._pending_keys[at] = last
            self._pending_at[last] = at

    @property
    def shown_url(self) -> str:
        """The URL handed to the hub, password masked (for logs and the console)."""
        return masked(sa.make_url(self.served_url)) if self.served_url else ""

    def clock(self, now: float | None = None) -> int:
        """This system's clock: the real one (or ``now``) plus its offset, in epoch seconds."""
        return int(time.time() if now is None else now) + self.offset_s

    # -- database ---------------------------------------------------------------------------------
    def open_database(self, read_only_user: bool, err: TextIO) -> bool:
        """Create (or recreate) the tables and load the dossiers; False when the server is unreachable."""
        self.close()
        engine = None
        try:
            self._create_database()
            self._reached = True
            engine = _engine(self.url)
            load(engine, self.backend, self.dossiers)
        except (sa.exc.DBAPIError, OSError) as exc:
            if engine is not None:
                engine.dispose()
            where = (f"the SQLite file {self.url.database}" if self.backend == "sqlite"
                     else f"the {self.backend} server at {self.url.host}:{self.url.port}")
            print(f"one-stop-shop system {self.name}: {where} cannot be used ({_db_message(exc, self.url)}); "
                  "serving without it", file=err)
            return False
        self.engine = engine
        self._reset_state()
        self.served_url = self.url.render_as_string(hide_password=False)
        if read_only_user and self.backend != "sqlite":
            try:
                self.served_url = self._read_only_account()
            except sa.exc.DBAPIError as exc:
                print(f"one-stop-shop system {self.name}: could not create a read-only account "
                      f"({_db_message(exc, self.url)}); handing out the sandbox's own", file=err)
        return True

    def _create_database(self) -> None:
        if self.backend == "sqlite":
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            return
        database = self.url.database
        admin = _engine(_server_url(self.url), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                if self.backend == "postgresql":
                    found = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"),
                                         {"d": database}).first()
                    if not found:
                        conn.exec_driver_sql(f'CREATE DATABASE "{database}" ENCODING \'UTF8\' TEMPLATE template0')
                else:
                    conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS `{database}` "
                                         "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        finally:
            admin.dispose()

    def _read_only_account(self) -> str:
        """Create (or reset) the ``<database>_ro`` account with SELECT on both tables; its URL."""
        user, password = f"{self.url.database}_ro", secrets.token_urlsafe(18)
        assert self.engine is not None
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if self.backend == "postgresql":
                conn.exec_driver_sql(f"DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{user}') "
                                     f'THEN CREATE ROLE "{user}" LOGIN; END IF; END$$')
                conn.exec_driver_sql(f"ALTER ROLE \"{user}\" WITH LOGIN PASSWORD '{password}'")
                conn.exec_driver_sql(f'GRANT CONNECT ON DATABASE "{self.url.database}" TO "{user}"')
                conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA public TO "{user}"')
                conn.exec_driver_sql(f'GRANT SELECT ON ho_so, qua_trinh_xu_ly TO "{user}"')
            else:
                conn.exec_driver_sql(f"CREATE USER IF NOT EXISTS '{user}'@'%%' IDENTIFIED BY '{password}'")
                conn.exec_driver_sql(f"ALTER USER '{user}'@'%%' IDENTIFIED BY '{password}'")
                conn.exec_driver_sql(f"GRANT SELECT ON `{self.url.database}`.* TO '{user}'@'%%'")
        url = self.url.set(username=user, password=password)
        probe = _engine(url)
        try:
            with probe.connect() as conn:
                conn.execute(sa.select(sa.func.count()).select_from(HO_SO)).scalar()
        finally:
            probe.dispose()
        return url.render_as_string(hide_password=False)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None
            self.served_url = ""

    def drop(self) -> None:
        """Remove the system's database (and its read-only account) or SQLite file. For tests."""
        self.close()
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(self.url.database + suffix).unlink(missing_ok=True)
            return
        database, user = self.url.database, f"{self.url.database}_ro"
        admin = _engine(_server_url(self.url), isolation_level="AUTOCOMMIT")
        try:
            try:
                conn = admin.connect()
            except sa.exc.OperationalError:
                if self._reached:
                    raise
                return  # a server this process never reached holds nothing of ours
            with conn:
                if self.backend == "postgresql":
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                    conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{user}"')
                else:
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{database}`")
                    conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'%%'")
        finally:
            admin.dispose()

    # -- live changes -----------------------------------------------------------------------------
    def receive(self, rng: np.random.Generator, drawer: ApplicantDrawer, shares: Shares,
                now: float | None) -> tuple[Change, Applicant]:
        """A new dossier received now: two steps (online: submission and acknowledgement)."""
        weights = np.array([p.weight for p in self.procedures])
        p = self.procedures[int(rng.choice(len(self.procedures), p=weights / weights.sum()))]
        u = rng.random()
        channel = 1 if u < shares.online else 2 if u < shares.online + shares.post else 0
        applicant = drawer.draw(rng, np.array([p.applicant]))[0]
        t = self.clock(now)
        day = int(local_day(t))
        seq = self.last_seq.get(day, 0) + 1
        code = dossier_code(self.agency.code102, day, seq)
        due = t + p.days * DAY
        clerk = self.staff.counter[int(rng.integers(len(self.staff.counter)))]
        if channel == 1:
            steps = [(t, "MOI", applicant.name, "Người nộp hồ sơ", PORTAL, "Nộp hồ sơ trực tuyến"),
                     (t + 1, "MOI", "Hệ thống một cửa điện tử", "", PORTAL,
                      "Thông báo đã nhận hồ sơ trực tuyến, chờ kiểm tra")]
        else:
            how = "qua dịch vụ bưu chính" if channel == 2 else "tại Bộ phận Một cửa"
            steps = [(t, "TIEP_NHAN", clerk, "Cán bộ tiếp nhận", COUNTER, f"Tiếp nhận hồ sơ {how}"),
                     (t + 1, "DANG_XU_LY", clerk, "Cán bộ tiếp nhận", COUNTER, "Chuyển hồ sơ đến phòng chuyên môn")]
        status, updated = steps[-1][1], t + 1
        row = dict(zip(HO_SO_COLUMNS, (
            code, p.code, p.name, p.field_code, CHANNELS[channel], applicant.name, applicant.kind, applicant.document,
            f"{p.name}: {applicant.name}", local_time(t), local_time(due), None, None, status,
            bool(channel == 1 and rng.random() < 0.6), local_time(updated))))
        assert self.engine is not None
        with self.engine.begin() as conn:
            conn.execute(HO_SO.insert(), row)
            conn.execute(QUA_TRINH_XU_LY.insert(), [self._step_row(self.next_step_id + k, code, step, due, updated)
                                                    for k, step in enumerate(steps)])
        self.next_step_id += len(steps)
        self.last_seq[day] = seq
        self.codes[code] = None
        self._pend(code, _Open(p, status, channel, applicant.name, due, steps[-1][0], updated, len(steps)))
        return Change(self.name, "received", code, status, len(steps), local_time(updated)), applicant

    def progress(self, rng: np.random.Generator, now: float | None) -> Change | None:
        """Move one open dossier to its next status (one or two new steps)."""
        if not self.pending:
            return None
        code = self._pending_keys[int(rng.integers(len(self._pending_keys)))]
        d = self.pending[code]
        t = max(self.clock(now), d.last_step + 1, d.updated + 1)
        steps = self._next_steps(d, rng, t)
        status = steps[-1][1]
        values: dict[str, object] = {"trang_thai": status, "updated_at": local_time(steps[-1][0])}
        for step in steps:
            if step[1] in ("DA_XU_LY", "TU_CHOI", "RUT", "DUNG"):
                values["ngay_ket_thuc"] = local_time(step[0])
            if step[1] == "DA_TRA":
                values["ngay_tra"] = local_time(step[0])
        updated = steps[-1][0]
        assert self.engine is not None
        with self.engine.begin() as conn:
            conn.execute(QUA_TRINH_XU_LY.insert(), [self._step_row(self.next_step_id + k, code, step, d.due, updated)
                                                    for k, step in enumerate(steps)])
            conn.execute(HO_SO.update().where(HO_SO.c.ma_ho_so == code).values(**values))
        self.next_step_id += len(steps)
        d.status, d.last_step, d.updated, d.steps = status, updated, updated, d.steps + len(steps)
        if status in TERMINAL:
            self._unpend(code)
        return Change(self.name, "progressed", code, status, len(steps), local_time(updated))

    def _next_steps(self, d: _Open, rng: np.random.Generator, t: int) -> list[tuple[int, str, str, str, str, str]]:
        clerk = self.staff.counter[int(rng.integers(len(self.staff.counter)))]
        specialist = self.staff.specialists[int(rng.integers(len(self.staff.specialists)))]
        office = "phòng chuyên môn"
        u = rng.random()
        room = MAX_STEPS - d.steps
        if d.status == "MOI":
            if u < 0.1:
                return [(t, "TU_CHOI", clerk, "Cán bộ tiếp nhận", COUNTER, REFUSED)]
            return [(t, "TIEP_NHAN", clerk, "Cán bộ tiếp nhận", COUNTER, "Tiếp nhận hồ sơ trực tuyến")]
        if d.status in ("TIEP_NHAN", "BO_SUNG", "NVTC"):
            if d.status == "BO_SUNG" and u < 0.1:
                return [(t, "RUT", clerk, "Cán bộ tiếp nhận", COUNTER, "Công dân rút hồ sơ theo đề nghị")]
            text = {"TIEP_NHAN": f"Chuyển hồ sơ đến {office}", "BO_SUNG": "Tiếp nhận hồ sơ bổ sung",
                    "NVTC": "Đã hoàn thành nghĩa vụ tài chính"}[d.status]
            return [(t, "DANG_XU_LY", clerk, "Cán bộ tiếp nhận", COUNTER, text)]
        if d.status == "DANG_XU_LY":
            if u < 0.15 and room >= 4:
                return [(t, "BO_SUNG", specialist, "Chuyên viên", office, "Yêu cầu bổ sung, hoàn thiện hồ sơ")]
            if u < 0.2 and room >= 4:
                return [(t, "NVTC", specialist, "Chuyên viên", office, "Thông báo nghĩa vụ tài chính")]
            if u < 0.23 and room >= 1:
                return [(t, "RUT", clerk, "Cán bộ tiếp nhận", COUNTER, "Công dân rút hồ sơ theo đề nghị")]
            if u < 0.25 and room >= 1:
                return [(t, "DUNG", self.staff.leader, self.staff.leader_title, LEADERS, "Dừng xử lý hồ sơ")]
            if room >= 2:
                return [(t, "DA_XU_LY", self.staff.leader, self.staff.leader_title, LEADERS,
                         "Phê duyệt kết quả giải quyết")]
            return [(t, "DUNG", self.staff.leader, self.staff.leader_title, LEADERS, "Dừng xử lý hồ sơ")]
        return [(t, "DA_TRA", clerk, "Cán bộ tiếp nhận", COUNTER, "Trả kết quả cho người nộp hồ sơ")]  # DA_XU_LY

    def _step_row(self, step_id: int, code: str, step: tuple, due: int, updated: int) -> dict[str, object]:
        t, status, person, title, office, content = step
        return dict(zip(STEP_COLUMNS, (step_id, code, person, title, office, content, status, local_time(t),
                                       None if status in TERMINAL else local_time(due), local_time(updated))))

    def delete(self, code: str) -> bool:
        """Delete dossier ``code`` and its steps (entered by mistake); False if it does not exist."""
        assert self.engine is not None
        with self.engine.begin() as conn:
            conn.execute(QUA_TRINH_XU_LY.delete().where(QUA_TRINH_XU_LY.c.ma_ho_so == code))
            found = conn.execute(HO_SO.delete().where(HO_SO.c.ma_ho_so == code)).rowcount
        self.codes.pop(code, None)
        self._unpend(code)
        return bool(found)

    def recent(self, count: int) -> list[str]:
        """The ``count`` dossiers received last (what an officer would delete as entered by mistake)."""
        out = []
        for code in reversed(self.codes):
            out.append(code)
            if len(out) == count:
                break
        return out


# ------------------------------------------------------------------------------------------ all systems

class OneStopSystems:
    """The province's one-stop-shop systems. Their history is drawn when first needed (:meth:`generate`,
    which also writes it to the ground truth; :meth:`open` calls it), so a sandbox that never serves
    them pays nothing; :meth:`open` puts it in the databases, :meth:`start` / :meth:`advance` change it."""

    def __init__(self, config: OneStopConfig, residents: Residents, enterprises: EnterpriseRegistry,
                 truth: GroundTruth, seed: int) -> None:
        self.config, self.seed, self.truth = config, seed, truth
        self._residents, self._enterprises = residents, enterprises
        self._systems: dict[str, OneStopSystem] | None = None
        self.drawer: ApplicantDrawer  # set by generate()
        self._live_applicants: list[tuple[str, str, Applicant]] = []
        self._generating = threading.RLock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing: set[str] = set()

    @property
    def systems(self) -> dict[str, OneStopSystem]:
        """name → system, in configuration order (drawn on first access)."""
        return self.generate()

    def generate(self) -> dict[str, OneStopSystem]:
        """Draw every system's history and record it in the ground truth, once."""
        with self._generating:
            if self._systems is None:
                self._systems = self._draw()
                self._record_truth()
            return self._systems

    def _draw(self) -> dict[str, OneStopSystem]:
        config, residents, seed = self.config, self._residents, self.seed
        self.drawer = ApplicantDrawer(residents, self._enterprises, config.shares)
        as_of = residents.as_of
        start = as_of - config.months * MONTH_DAYS * DAY
        pairs = config.resolved()
        known = known_systems()
        weights = np.array([4.0 if known[name][1] == "district" else 1.0 for name, _ in pairs])
        total = config.dossiers_per_month * config.months
        counts = np.round(total * weights / weights.sum()).astype(int) if len(pairs) else []
        offsets = dict(config.clock_offsets)
        systems: dict[str, OneStopSystem] = {}
        for (name, url), count in zip(pairs, counts):
            agency, level = known[name]
            drawn = int(system_rng(seed, name, 1).integers(-MAX_CLOCK_OFFSET_S, MAX_CLOCK_OFFSET_S + 1))
            dossiers, staff = generate(name, agency, level, int(count), start, as_of, seed, self.drawer, residents,
                                       config.shares)
            systems[name] = OneStopSystem(name, url, agency, level, int(offsets.get(name, drawn)), dossiers, staff)
        return systems

    def __repr__(self) -> str:
        return f"OneStopSystems({', '.join(map(repr, (self._systems or {}).values()))})"

    # -- ground truth -----------------------------------------------------------------------------
    def _record_truth(self) -> None:
        systems = self._systems or {}
        for name, system in systems.items():
            codes, applicants = system.dossiers.column("ma_ho_so"), system.dossiers.applicants
            known = [(c, a) for c, a in zip(codes, applicants) if a.entity]
            for kind, label in ((1, "person"), (2, "enterprise")):
                chosen = [(c, a.entity) for c, a in known if a.kind == kind]
                self.truth.record_many(name, "ho_so", [c for c, _ in chosen], "applicant", label,
                                       [e for _, e in chosen])
            bad = system.dossiers.malformed
            for fault in sorted({f for _, _, f in bad}):
                rows = [(served, true) for served, true, f in bad if f == fault]
                self.truth.anomaly_many(name, "ho_so", [s for s, _ in rows], "ma_ho_so", f"dossier_code_{fault}",
                                        [t for _, t in rows], [s for s, _ in rows])
        self.truth.add_table("onestop_systems", pa.table({
            "system": [s.name for s in systems.values()],
            "agency_code": [s.agency.code for s in systems.values()],
            "agency_code102": [s.agency.code102 for s in systems.values()],
            "agency_name": [s.agency.name for s in systems.values()],
            "backend": [s.backend for s in systems.values()],
            "clock_offset_s": pa.array([s.offset_s for s in systems.values()], pa.int32()),
            "dossiers": pa.array([len(s.dossiers) for s in systems.values()], pa.int64()),
        }))
        self._applicant_table()

    def _applicant_table(self) -> None:
        systems = self._systems or {}
        rows = [(name, code, a) for name, s in systems.items()
                for code, a in zip(s.dossiers.column("ma_ho_so"), s.dossiers.applicants)] + self._live_applicants
        self.truth.add_table("dossier_applicants", pa.table({
            "system": pa.array([r[0] for r in rows], pa.string()),
            "ma_ho_so": pa.array([r[1] for r in rows], pa.string()),
            "loai_doi_tuong": pa.array([r[2].kind for r in rows], pa.int8()),
            "so_giay_to": pa.array([r[2].document for r in rows], pa.string()),
            "chu_ho_so": pa.array([r[2].name for r in rows], pa.string()),
            "fault": pa.array([r[2].fault for r in rows], pa.string()),
            "entity_kind": pa.array([("person" if r[2].kind == 1 else "enterprise") if r[2].entity else ""
                                     for r in rows], pa.string()),
            "entity_id": pa.array([r[2].entity for r in rows], pa.string()),
        }))

    # -- databases --------------------------------------------------------------------------------
    def open(self, err: TextIO = sys.stderr) -> list[str]:
        """Create and fill every system's database (again: same seed, same rows, the live changes
        gone); the names served. Call it before :meth:`start`."""
        systems = self.systems
        with self._lock:
            self._live_applicants.clear()
            self._applicant_table()
            return [name for name, system in systems.items() if system.open_database(self.config.read_only_users, err)]

    def served(self) -> list[OneStopSystem]:
        """The systems whose database is open (none before :meth:`open`)."""
        return [s for s in (self._systems or {}).values() if s.engine is not None]

    def urls(self) -> dict[str, str]:
        """name → the URL the hub reads with, for every system being served."""
        return {s.name: s.served_url for s in self.served()}

    def environment_value(self) -> str:
        """``HUB_ONESTOP_URLS``: ``name=URL`` pairs, comma-separated ('' when none is served)."""
        return ",".join(f"{name}={url}" for name, url in self.urls().items())

    def environment(self) -> dict[str, str]:
        """``{"HUB_ONESTOP_URLS": …}`` for the sandbox's environment, or nothing when none is served."""
        value = self.environment_value()
        return {"HUB_ONESTOP_URLS": value} if value else {}

    def close(self) -> None:
        self.stop()
        for system in (self._systems or {}).values():
            system.close()

    def drop(self) -> None:
        """Drop every system's database, account or file (tests clean up with this)."""
        self.stop()
        for system in (self._systems or {}).values():
            system.drop()

    # -- changes ----------------------------------------------------------------------------------
    def advance(self, n_changes: int, seed: int = 0, now: float | None = None) -> list[Change]:
        """Make ``n_changes`` changes across the served systems, drawn from ``seed``: mostly open
        dossiers moving on, new ones received, now and then one deleted. Times come from each
        system's clock (``now`` instead of the real time, if given). Returns what changed."""
        rng = np.random.default_rng([self.seed, _STREAM_LIVE, seed])
        changes: list[Change] = []
        with self._lock:
            systems = self.served()
            if not systems:
                return changes
            for _ in range(n_changes):
                system = systems[int(rng.integers(len(systems)))]
                u = rng.random()
                if u < 0.02 and system.codes:
                    code = system.recent(20)[int(rng.integers(min(20, len(system.codes))))]
                    system.delete(code)
                    changes.append(Change(system.name, "deleted", code, "", 0, local_time(system.clock(now))))
                    continue
                change = system.progress(rng, now) if u >= 0.3 else None
                if change is None:
                    change, applicant = system.receive(rng, self.drawer, self.config.shares, now)
                    self._live_applicants.append((system.name, change.ma_ho_so, applicant))
                changes.append(change)
            if any(c.kind == "received" for c in changes):
                self._applicant_table()
        return changes

    def delete(self, system: str, ma_ho_so: str) -> bool:
        """Delete one dossier and its steps from ``system``; False if it had no such dossier."""
        with self._lock:
            target = self.systems.get(system)
            if target is None or target.engine is None:
                raise OneStopError(f"one-stop-shop system {system!r} is not being served")
            return target.delete(ma_ho_so)

    def start(self, err: TextIO = sys.stderr) -> None:
        """Start the background changer (a change every ``change_interval_s``), if it is on."""
        if self.config.change_interval_s <= 0 or self._thread is not None or not self.served():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(err,), daemon=True, name="onestop-changer")
        self._thread.start()

    def stop(self) -> None:
        """Stop the background changer and wait for it (a change in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self, err: TextIO) -> None:
        tick = 0
        while not self._stop.wait(self.config.change_interval_s):
            tick += 1
            try:
                self.advance(self.config.changes_per_tick, seed=tick)
                self._failing.clear()
            except Exception as exc:  # noqa: BLE001 - a server went away: say so once, keep trying
                message = _db_message(exc, *(s.url for s in self.served()))
                if message not in self._failing:
                    self._failing.add(message)
                    print(f"one-stop-shop changer: a change failed ({message}); will keep trying", file=err)


# ------------------------------------------------------------------------------------------ bulk load

def masked(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


def _db_message(exc: BaseException, *urls: sa.URL) -> str:
    """A database error's first line: no statement, no parameters, no password of ``urls``."""
    origin = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(origin).splitlines() if line.strip()]
    text = lines[0] if lines else type(origin).__name__
    for url in urls:
        if url.password:
            text = text.replace(str(url.password), "***")
    return text


def _server_url(url: sa.URL) -> sa.URL:
    """Where the sandbox creates and drops ``url``'s database: PostgreSQL's ``postgres``, MariaDB's none."""
    return sa.URL.create(url.drivername, url.username, url.password, url.host, url.port,
                         "postgres" if _BACKENDS[url.get_backend_name()] == "postgresql" else None, url.query)


def _engine(url: sa.URL, local_infile: bool = False, **kwargs) -> sa.Engine:
    backend = _BACKENDS[url.get_backend_name()]
    if backend == "postgresql":
        args = {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "sandbox onestop"}
    elif backend == "mysql":
        args = {"connect_timeout": CONNECT_TIMEOUT_S, "local_infile": local_infile}
        if "charset" not in url.query:
            url = url.update_query_dict({"charset": "utf8mb4"})
    else:
        args = {"timeout": 30}
    return sa.create_engine(url, connect_args=args, pool_pre_ping=backend != "sqlite", **kwargs)


def load(engine: sa.Engine, backend: str, dossiers: Dossiers) -> None:
    """Drop and recreate both tables, then insert every row in batches, one transaction each:
    ``COPY`` on PostgreSQL, ``LOAD DATA LOCAL INFILE`` on MariaDB (multi-row ``INSERT`` where the
    server refuses it), ``executemany`` on SQLite. The secondary indexes are built after the rows."""
    with engine.begin() as conn:
        METADATA.drop_all(conn)
        for table in METADATA.sorted_tables:
            conn.execute(sa.schema.CreateTable(table))
    if backend == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")  # readers keep reading while the changer writes
    loader = _engine(engine.url, local_infile=True) if backend == "mysql" else engine
    try:
        for table, rows in ((HO_SO, dossiers.ho_so), (QUA_TRINH_XU_LY, dossiers.steps)):
            names = [c.name for c in table.columns]
            for lo in range(0, len(rows), BATCH_ROWS):
                with loader.begin() as conn:
                    _insert(conn, backend, table.name, names, rows[lo:lo + BATCH_ROWS])
    finally:
        if loader is not engine:
            loader.dispose()
    with engine.begin() as conn:
        for table in METADATA.sorted_tables:
            for index in table.indexes:
                index.create(conn)


def _insert(conn: sa.Connection, backend: str, table: str, names: list[str], rows: list[tuple]) -> None:
    cursor = conn.connection.cursor()
    columns = ", ".join(names)
    try:
        if backend == "postgresql":
            cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN", io.StringIO(_tsv(names, rows)))
        elif backend == "mysql" and _local_infile(conn):
            with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".tsv") as handle:
                handle.write(_tsv(names, rows))
                handle.flush()
                path = handle.name.replace("\\", "/").replace("'", "")
                cursor.execute(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {table} CHARACTER SET utf8mb4 "
                               f"FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({columns})")
                if cursor.rowcount != len(rows):
                    raise RuntimeError(f"LOAD DATA into {table} took {cursor.rowcount} of {len(rows)} rows")
        else:
            mark = "?" if backend == "sqlite" else "%s"
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({', '.join([mark] * len(names))})",
                               _params(names, rows, backend))
    finally:
        cursor.close()


def _local_infile(conn: sa.Connection) -> bool:
    return str(conn.exec_driver_sql("SELECT @@GLOBAL.local_infile").scalar()) in ("1", "ON")


def _times(values: tuple, sqlite: bool, null: str | None) -> list:
    """Epoch seconds as local-time text (-1: ``null``); SQLite gets SQLAlchemy's own layout."""
    epochs = np.asarray(values, np.int64)
    text = np.datetime_as_string((epochs + LOCAL).astype("datetime64[s]"), unit="s").tolist()
    if sqlite:
        text = [t.replace("T", " ") + ".000000" for t in text]
    for i in np.flatnonzero(epochs < 0).tolist():
        text[i] = null
    return text


def _params(names: list[str], rows: list[tuple], backend: str) -> list[tuple]:
    """Rows as ``executemany`` takes them: times as local-time text or NULL, booleans as 0/1."""
    out = []
    for name, values in zip(names, zip(*rows)):
        if name in _TIME_COLUMNS:
            out.append(_times(values, backend == "sqlite", None))
        elif name == "da_thanh_toan":
            out.append([int(v) for v in values])
        else:
            out.append(values)
    return list(zip(*out))


def _tsv(names: list[str], rows: list[tuple]) -> str:
    """Rows in the tab-separated text both ``COPY`` and ``LOAD DATA`` read (``\\N`` for NULL)."""
    out = []
    for name, values in zip(names, zip(*rows)):
        if name in _TIME_COLUMNS:
            out.append(_times(values, False, "\\N"))
        elif name == "da_thanh_toan":
            out.append(["1" if v else "0" for v in values])
        elif values and isinstance(values[0], str):
            joined = "".join(values)
            if "\\" in joined or "\t" in joined or "\n" in joined or "\r" in joined:
                values = tuple(v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                               .replace("\r", "\\r") for v in values)
            out.append(values)
        else:
            out.append([str(v) for v in values])
    return "".join("\t".join(row) + "\n" for row in zip(*out))
