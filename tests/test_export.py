"""`hub export` against the machine's PostgreSQL and MariaDB, and SQLite: first export, incremental
changes, crashes and kills mid-export, refusals, masked passwords, the command line.

Snapshots are built directly with DuckDB from Arrow tables of the canonical schemas, with values
chosen to break a careless mapping: Vietnamese text in NFC and NFD, quotes, backslashes and 4-byte
characters, keys that differ only in case or a trailing space, money with 20 integer digits, moments
before 1970 in two time zones, milliseconds, empty and null lists, binary with NUL bytes. Each test
gets a scratch schema (PostgreSQL, in database ``test``) or database (MariaDB) of its own, dropped after.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import textwrap
import threading
import time as time_module
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import duckdb
import pyarrow as pa
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

import hub.export as export
from hub.cli import app
from hub.export import ExportError, export_dataset
from schemas.canonical import citizens, civil_events, documents, enterprises

PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
MARIADB_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/"
MODULES = {m.DATASET: m for m in (citizens, civil_events, enterprises, documents)}
ROWS = 40

TEXTS = ["Nguyễn Văn Ánh", "Nguye\u0302\u0303n Thi\u0323 Hoa", "Trần 'Bình' \"An\"", "back\\slash", "😀 emoji", "",
         "trailing ", "Hải Phòng, phường Lê Chân", "line\nbreak", "x" * 300]


# ------------------------------------------------------------------------------------- snapshots

def _value(kind: pa.DataType, rng: random.Random) -> Any:
    if rng.random() < 0.15:
        return None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return rng.choice(TEXTS)
    if pa.types.is_integer(kind):
        bits = kind.bit_width - 1
        return rng.choice([-(2 ** bits), 2 ** bits - 1, 0, rng.randint(-100, 100)])
    if pa.types.is_boolean(kind):
        return rng.random() < 0.5
    if pa.types.is_floating(kind):
        return rng.choice([1 / 3, 100.0, 0.1, 12.5])
    if pa.types.is_decimal(kind):
        return rng.choice([Decimal("99999999999999999999.99"), Decimal("0.01"), Decimal("1234567890123.50"),
                           Decimal("5.00")])
    if pa.types.is_date(kind):
        return date(1900, 1, 1) + timedelta(days=rng.randint(0, 130 * 365))
    if pa.types.is_timestamp(kind):
        moment = datetime(1950, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=rng.randint(0, 85 * 365 * 86400 * 1000))
        return moment.astimezone(_zone(kind.tz))
    if pa.types.is_time(kind):
        return time(rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999) * 1000)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 64))) + b"\x00\xff"
    if pa.types.is_list(kind):
        return [_value(kind.value_type, rng) for _ in range(rng.randint(0, 3))]
    if pa.types.is_struct(kind):
        return {kind.field(i).name: _value(kind.field(i).type, rng) for i in range(kind.num_fields)}
    raise AssertionError(f"no test value for {kind}")


def _zone(name: str):
    from zoneinfo import ZoneInfo
    return ZoneInfo(name)


def _key(dataset: str, i: int) -> dict[str, Any]:
    if dataset == "citizens":
        return {"personal_id": f"{31_000_000_000 + i:012d}"}
    if dataset == "civil_events":
        return {"module": civil_events.MODULES[i % 3], "record_id": i // 3}  # composite key
    if dataset == "enterprises":
        return {"enterprise_code": f"{i // 2:010d}" + (" " if i % 2 else "")}  # differ by a trailing space
    return {"doc_id": f"doc-{i // 2:04d}".upper() if i % 2 else f"doc-{i // 2:04d}"}  # differ by case


def rows_for(dataset: str, count: int = ROWS, seed: int = 1) -> dict[tuple, dict[str, Any]]:
    """``count`` rows of ``dataset`` keyed by key tuple; non-nullable columns always filled."""
    module = MODULES[dataset]
    out = {}
    for i in range(count):
        rng = random.Random(f"{dataset}-{seed}-{i}")
        row = {f.name: _value(f.type, rng) for f in module.SCHEMA}
        for f in module.SCHEMA:
            while row[f.name] is None and not f.nullable:
                row[f.name] = _value(f.type, rng)
        row.update(_key(dataset, i))
        out[tuple(row[k] for k in module.KEY)] = row
    return out


def write_snapshot(path: Path, data: dict[str, dict[tuple, dict[str, Any]]]) -> Path:
    """A published snapshot as the pipeline writes it: built aside, then moved into place."""
    built = path.with_suffix(".building")
    built.unlink(missing_ok=True)
    with duckdb.connect(str(built)) as con:
        for dataset, rows in data.items():
            table = pa.Table.from_pylist(list(rows.values()), schema=MODULES[dataset].SCHEMA)
            con.register("incoming", table)
            con.execute(f"CREATE TABLE {dataset} AS SELECT * FROM incoming")
            con.unregister("incoming")
        con.execute("CHECKPOINT")
    os.replace(built, path)
    return path


def changed_version(rows: dict[tuple, dict[str, Any]], dataset: str) -> tuple[dict[tuple, dict[str, Any]], int, int, int]:
    """A new version of ``rows``: 5 changed (each in a different kind of column), 4 added, 3 removed."""
    module = MODULES[dataset]
    new = {k: dict(v) for k, v in rows.items()}
    keys = sorted(new, key=repr)
    removed = keys[:3]
    for k in removed:
        del new[k]
    for k, column in zip(keys[3:8], _columns_to_change(module)):
        new[k][column.name] = _different(column.type, new[k][column.name])
    for k, v in rows_for(dataset, 4, seed=2).items():
        key = tuple(f"{x}-new" if isinstance(x, str) else x + 10_000 for x in k)
        v.update(dict(zip(module.KEY, key)))
        new[key] = v
    return new, 4, 5, 3


#: Kinds of column a change must be seen in, most telling first (binary enters the fingerprint by its MD5).
_KINDS = (pa.types.is_large_binary, pa.types.is_list, pa.types.is_decimal, pa.types.is_time, pa.types.is_timestamp,
          pa.types.is_date, pa.types.is_integer, pa.types.is_string)


def _columns_to_change(module) -> list[pa.Field]:
    """Five non-key columns of as many different kinds as the dataset has."""
    fields = [f for f in module.SCHEMA if f.name not in module.KEY]
    chosen = []
    for kind in _KINDS:
        chosen += [f for f in fields if kind(f.type)][:1]
    chosen += [f for f in fields if f not in chosen]
    return chosen[:5]


def _different(kind: pa.DataType, value: Any) -> Any:
    if pa.types.is_string(kind):
        return (value or "") + " (đã sửa)"
    if pa.types.is_integer(kind):
        return 1 if value != 1 else 2
    if pa.types.is_decimal(kind):
        return Decimal("0.02") if value != Decimal("0.02") else Decimal("0.03")
    if pa.types.is_timestamp(kind):
        return (value or datetime(2000, 1, 1, tzinfo=timezone.utc)) + timedelta(milliseconds=1)
    if pa.types.is_date(kind):
        return (value or date(2000, 1, 1)) + timedelta(days=1)
    if pa.types.is_time(kind):
        return time(12, 0, 0, 1000) if value != time(12, 0, 0, 1000) else time(12, 0, 0, 2000)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return (value or b"") + b"\x01"
    if pa.types.is_list(kind):
        return (value or []) + [_value(kind.value_type, random.Random(5))]
    if pa.types.is_boolean(kind):
        return not value
    if pa.types.is_floating(kind):
        return (value or 0.0) + 1.5
    raise AssertionError(kind)


# --------------------------------------------------------------------------------------- targets

@dataclass
class Target:
    kind: str
    url: str  # what `hub export --to` gets
    schema: str | None
    engine: sa.Engine  # for the test's own reads and sabotage

    def table(self, name: str) -> sa.Table:
        return sa.Table(name, sa.MetaData(schema=self.schema), autoload_with=self.engine)

    def has_table(self, name: str) -> bool:
        return sa.inspect(self.engine).has_table(name, schema=self.schema)

    def export(self, dataset: str, snapshot: Path, **kwargs) -> export.ExportResult:
        return export_dataset(dataset, self.url, snapshot=snapshot, schema=self.schema, batch_rows=7, **kwargs)


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def target(request, tmp_path: Path) -> Iterator[Target]:
    yield from _scratch(request.param, tmp_path)


def _scratch(kind: str, tmp_path: Path) -> Iterator[Target]:
    name = f"hub_export_{uuid.uuid4().hex[:12]}"
    if kind == "postgresql":
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        engine = sa.create_engine(PG_ADMIN, poolclass=sa.pool.NullPool)
        try:
            yield Target(kind, PG_ADMIN, name, engine)
        finally:
            engine.dispose()
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
            admin.dispose()
    elif kind == "mariadb":
        admin = sa.create_engine(MARIADB_ADMIN, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
        url = f"mariadb+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4"
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            yield Target(kind, url, None, engine)
        finally:
            engine.dispose()
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE `{name}`")
            admin.dispose()
    else:
        url = f"sqlite:///{tmp_path / (name + '.db')}"
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            yield Target(kind, url, None, engine)
        finally:
            engine.dispose()


# ------------------------------------------------------------------------------------ comparison

def _expected(kind: pa.DataType, value: Any) -> Any:
    """A snapshot value as the target must hold it (moments as UTC instants, JSON as parsed)."""
    if value is None:
        return None
    if pa.types.is_timestamp(kind):
        return value.astimezone(timezone.utc)
    if pa.types.is_list(kind) or pa.types.is_struct(kind):
        return json.loads(json.dumps(value, default=_json_default))
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # money inside JSON is a decimal string
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(value)


def _stored(kind: pa.DataType, value: Any) -> Any:
    """A value read back from the target, in the form of :func:`_expected`."""
    if value is None:
        return None
    if pa.types.is_timestamp(kind):
        assert isinstance(value, datetime), value
        return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if pa.types.is_list(kind) or pa.types.is_struct(kind):
        return json.loads(value) if isinstance(value, str) else value
    if pa.types.is_decimal(kind):
        assert isinstance(value, (Decimal, str)) and not isinstance(value, float), type(value)
        return Decimal(value)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def assert_target_equals(target: Target, table: str, dataset: str, rows: dict[tuple, dict[str, Any]]) -> None:
    module = MODULES[dataset]
    reflected = target.table(table)
    with target.engine.connect() as conn:
        found = [dict(r._mapping) for r in conn.execute(sa.select(reflected))]
    stored = {tuple(r[k] for k in module.KEY): r for r in found}
    assert len(found) == len(stored) == len(rows)
    assert set(stored) == set(rows)
    for key, row in rows.items():
        for f in module.SCHEMA:
            want, got = _expected(f.type, row[f.name]), _stored(f.type, stored[key][f.name])
            assert got == want, (dataset, key, f.name, got, want)
    state = target.table(f"hub_state__{table}")
    with target.engine.connect() as conn:
        remembered = conn.execute(sa.select(sa.func.count()).select_from(state)).scalar_one()
    assert remembered == len(rows)


def counts(result: export.ExportResult) -> tuple[int, int, int, int]:
    return result.inserted, result.updated, result.deleted, result.unchanged


# ------------------------------------------------------------------------------------------ tests

def test_first_export_equals_the_snapshot_and_later_ones_send_only_changes(target: Target, tmp_path: Path):
    v1 = {name: rows_for(name) for name in MODULES}
    snapshot = write_snapshot(tmp_path / "current.duckdb", v1)
    for name in MODULES:
        first = target.export(name, snapshot)
        assert counts(first) == (ROWS, 0, 0, 0) and first.mode == "first", first.summary()
        assert_target_equals(target, name, name, v1[name])
        again = target.export(name, snapshot)
        assert counts(again) == (0, 0, 0, ROWS) and again.mode == "incremental", again.summary()
    v2 = {}
    changes = {}
    for name in MODULES:
        v2[name], *changes[name] = changed_version(v1[name], name)
    write_snapshot(snapshot, v2)
    for name in MODULES:
        inserted, updated, deleted = changes[name]
        result = target.export(name, snapshot)
        assert counts(result) == (inserted, updated, deleted, ROWS - updated - deleted), (name, result.summary())
        assert_target_equals(target, name, name, v2[name])
    with target.engine.connect() as conn:
        log = {r.target_table: r for r in conn.execute(sa.select(target.table("hub_exports")))}
    assert log["enterprises"].row_count == len(v2["enterprises"]) and log["enterprises"].updated == 5


def test_an_export_for_a_client_carries_only_its_granted_fields(target: Target, tmp_path: Path, monkeypatch):
    from hub.access_policy import register_client
    from hub.audit_log import AuditSettings, load_public_key, verify

    monkeypatch.setenv("HUB_HOME", str(tmp_path / "home"))
    audit_dir = tmp_path / "home" / "audit" / "exports"

    rows = rows_for("citizens")
    snapshot = write_snapshot(tmp_path / "current.duckdb", {"citizens": rows})
    clients = tmp_path / "clients.json"
    register_client(clients, "ubnd-xa", "000.00.31.H26", {"citizens": ["family_name", "given_name", "birth_date"]},
                    ["*"], 0.0)
    register_client(clients, "so-khdt", "000.00.31.H30", {"enterprises": ["*"]}, ["*"], 0.0)
    result = target.export("citizens", snapshot, client="ubnd-xa", clients_file=clients)
    assert counts(result) == (ROWS, 0, 0, 0)
    columns = [c.name for c in target.table("citizens").columns]
    assert columns == ["personal_id", "family_name", "given_name", "birth_date"]  # no ethnicity, no religion
    with target.engine.connect() as conn:
        stored = {r.personal_id: r for r in conn.execute(sa.select(target.table("citizens")))}
    assert {k: stored[k[0]].given_name for k in rows} == {k: v["given_name"] for k, v in rows.items()}
    with pytest.raises(ExportError, match="not granted citizens"):
        target.export("citizens", snapshot, client="so-khdt", clients_file=clients, table="citizens_b")
    with pytest.raises(ExportError, match="no client 'nobody'"):
        target.export("citizens", snapshot, client="nobody", clients_file=clients, table="citizens_c")
    # The export is in the audit log: announced before any row left, then what was sent; the two
    # refusals after it once each, with nothing sent.
    report = verify(audit_dir, load_public_key(AuditSettings.from_env().public_key_path))
    assert report.ok and report.entries == 4, report.summary()
    entries = _audit_entries(audit_dir)
    assert [e["outcome"] for e in entries] == [202, 200, 403, 403]
    assert all(e["client_id"] == "ubnd-xa" and e["fields"] == columns for e in entries[:2])
    assert f"{ROWS} inserted" in entries[1]["detail"]
    assert [(e["client_id"], e["fields"]) for e in entries[2:]] == [("so-khdt", []), ("nobody", [])]
    assert not target.has_table("citizens_b") and not target.has_table("citizens_c")


def _audit_entries(directory: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for f in sorted(directory.glob("*.jsonl")) for line in f.read_text().splitlines()]
    return [e for e in lines if e.get("method") == "EXPORT"]


def _drop_given_name(module):
    """``module`` as a snapshot schema without ``given_name`` would describe it: a grant naming that
    field no longer fits the dataset."""
    from types import SimpleNamespace

    fields = [f for f in module.SCHEMA if f.name != "given_name"]
    return SimpleNamespace(DATASET=module.DATASET, KEY=module.KEY, VERSION_COLUMN=module.VERSION_COLUMN,
                           SCHEMA=pa.schema(fields, metadata=module.SCHEMA.metadata))


@pytest.mark.parametrize("case", ["unknown_client", "disabled_client", "dataset_not_granted", "field_not_in_dataset",
                                  "unreadable_clients_file"])
def test_a_refused_export_for_a_client_is_audited_with_the_reason(case: str, tmp_path: Path, monkeypatch):
    """Every export for a client is in the audit log, refused ones too: one durable entry saying why,
    naming no field (nothing was sent), and no table in the target."""
    from hub.access_policy import register_client
    from hub.audit_log import AuditSettings, load_public_key, verify

    monkeypatch.setenv("HUB_HOME", str(tmp_path / "home"))
    audit_dir = tmp_path / "home" / "audit" / "exports"
    snapshot = write_snapshot(tmp_path / "current.duckdb", {"citizens": rows_for("citizens")})
    clients = tmp_path / "clients.json"
    register_client(clients, "ubnd-xa", "000.00.31.H26", {"citizens": ["family_name", "given_name"]}, ["*"], 0.0)
    register_client(clients, "so-khdt", "000.00.31.H30", {"enterprises": ["*"]}, ["*"], 0.0)
    client, reason, outcome, agency = {
        "unknown_client": ("nobody", "no client 'nobody'", 403, ""),
        "disabled_client": ("ubnd-xa", "client ubnd-xa is disabled", 403, "000.00.31.H26"),
        "dataset_not_granted": ("so-khdt", "client so-khdt is not granted citizens", 403, "000.00.31.H30"),
        "field_not_in_dataset": ("ubnd-xa", "field(s) of citizens that the dataset does not have: given_name", 403,
                                 "000.00.31.H26"),
        "unreadable_clients_file": ("ubnd-xa", "cannot read the clients file", 500, ""),
    }[case]
    if case == "disabled_client":
        document = json.loads(clients.read_text())
        document["clients"][0]["disabled"] = True
        clients.write_text(json.dumps(document))
    if case == "field_not_in_dataset":
        monkeypatch.setitem(export.DATASET_MODULES, "citizens", _drop_given_name(citizens))
    if case == "unreadable_clients_file":
        clients.write_text("{not json")
    url = f"sqlite:///{tmp_path / 'agency.db'}"
    with pytest.raises(ExportError, match=re.escape(reason)) as refused:
        export_dataset("citizens", url, snapshot=snapshot, client=client, clients_file=clients)
    assert refused.value.exit_code == (2 if case == "unknown_client" else 1)  # as before the refusals were audited
    report = verify(audit_dir, load_public_key(AuditSettings.from_env().public_key_path))
    assert report.ok and report.entries == 1, report.summary()
    (entry,) = _audit_entries(audit_dir)
    assert (entry["client_id"], entry["agency_code"], entry["outcome"]) == (client, agency, outcome)
    assert entry["path"] == "/export/citizens" and entry["fields"] == [] and entry["record_keys"] == []
    assert entry["detail"].startswith(f"export to {url} refused: ") and reason in entry["detail"]
    engine = sa.create_engine(url)
    try:
        assert sa.inspect(engine).get_table_names() == []  # not even the catalogue: nothing was written
    finally:
        engine.dispose()


def test_a_crash_after_the_data_write_leaves_the_target_as_it_was(target: Target, tmp_path: Path, monkeypatch):
    v1 = rows_for("enterprises")
    snapshot = write_snapshot(tmp_path / "current.duckdb", {"enterprises": v1})
    target.export("enterprises", snapshot)
    v2, inserted, updated, deleted = changed_version(v1, "enterprises")
    write_snapshot(snapshot, {"enterprises": v2})

    def crash(*_args, **_kwargs):
        raise RuntimeError("injected: killed after writing the data, before the commit")

    monkeypatch.setattr(export, "_record_export", crash)
    with pytest.raises(RuntimeError, match="injected"):
        target.export("enterprises", snapshot)
    assert_target_equals(target, "enterprises", "enterprises", v1)  # data and state both rolled back
    monkeypatch.undo()
    result = target.export("enterprises", snapshot)
    assert result.mode == "incremental" and counts(result) == (inserted, updated, deleted, ROWS - updated - deleted)
    assert_target_equals(target, "enterprises", "enterprises", v2)


def test_a_crash_on_the_first_export_leaves_an_empty_table_that_the_rerun_fills(target: Target, tmp_path: Path,
                                                                               monkeypatch):
    rows = rows_for("civil_events")
    snapshot = write_snapshot(tmp_path / "current.duckdb", {"civil_events": rows})
    calls = []

    def second_batch_fails(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected mid-stream")
        return original(*args)

    original = export._write_batch
    monkeypatch.setattr(export, "_write_batch", second_batch_fails)
    with pytest.raises(RuntimeError, match="mid-stream"):
        target.export("civil_events", snapshot)
    with target.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(target.table("civil_events"))).scalar_one() == 0
    monkeypatch.undo()
    result = target.export("civil_events", snapshot)
    assert result.mode == "first" and counts(result) == (ROWS, 0, 0, 0)
    assert_target_equals(target, "civil_events", "civil_events", rows)


KILLER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import hub.export as export
    original, calls = export._write_batch, []
    def die(*args):
        calls.append(1)
        original(*args)
        if len(calls) == 2:
            os._exit(9)  # a hard kill: no rollback, no cleanup, the connection just drops
    export._write_batch = die
    export.export_dataset(sys.argv[1], sys.argv[2], snapshot=Path(sys.argv[3]), schema=sys.argv[4] or None, batch_rows=5)
    sys.exit(3)
""")


def test_a_killed_export_is_rerun_to_exactly_the_dataset(target: Target, tmp_path: Path):
    v1 = rows_for("documents")
    snapshot = write_snapshot(tmp_path / "current.duckdb", {"documents": v1})
    target.export("documents", snapshot)
    v2, inserted, updated, deleted = changed_version(v1, "documents")
    write_snapshot(snapshot, {"documents": v2})
    killed = subprocess.run([sys.executable, "-c", KILLER, "documents", target.url, str(snapshot), target.schema or ""],
                            capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert killed.returncode == 9, killed.stderr
    assert_target_equals(target, "documents", "documents", v1)
    result = target.export("documents", snapshot)
    assert counts(result) == (inserted, updated, deleted, ROWS - updated - deleted), result.summary()
    assert_target_equals(target, "documents", "documents", v2)


def test_an_existing_table_that_does_not_fit_is_refused_naming_the_column(target: Target, tmp_path: Path):
    snapshot = write_snapshot(tmp_path / "current.duckdb", {"enterprises": rows_for("enterprises")})
    backend = "mysql" if target.kind == "mariadb" else target.kind
    schema = enterprises.SCHEMA

    def create(name: str, skip: str = "", override: dict[str, sa.types.TypeEngine] | None = None,
               extra: tuple[sa.Column, ...] = ()) -> None:
        columns = [sa.Column(f.name, (override or {}).get(f.name) or
                             export.column_type(f.type, backend, f.name in enterprises.KEY).ddl,
                             primary_key=f.name in enterprises.KEY) for f in schema if f.name != skip]
        sa.Table(name, sa.MetaData(schema=target.schema), *columns, *extra).create(target.engine)

    create("without_address", skip="hq_address")
    with pytest.raises(ExportError, match="without column hq_address"):
        target.export("enterprises", snapshot, table="without_address")
    create("float_money", override={"capital": sa.Double()})
    with pytest.raises(ExportError, match="column capital is .*cannot hold enterprises.capital exactly"):
        target.export("enterprises", snapshot, table="float_money")
    with target.engine.connect() as conn:  # refused before anything was written
        assert conn.execute(sa.select(sa.func.count()).select_from(target.table("float_money"))).scalar_one() == 0
    create("must_fill", extra=(sa.Column("checked_by", sa.String(20), nullable=False),))
    with pytest.raises(ExportError, match="has column checked_by, NOT NULL without a default"):
        target.export("enterprises", snapshot, table="must_fill")
    # the agency's own columns, nullable or with a default, are allowed and left alone
    create("annotated", extra=(sa.Column("checked_by", sa.String(20), nullable=False, server_default="nobody"),
                               sa.Column("remark", sa.String(200))))
    assert counts(target.export("enterprises", snapshot, table="annotated")) == (ROWS, 0, 0, 0)
    with target.engine.connect() as conn:
        assert set(conn.execute(sa.select(target.table("annotated").c.checked_by)).scalars()) == {"nobody"}


def test_a_foreign_table_is_taken_over_only_with_full_and_drift_is_repaired(target: Target, tmp_path: Path):
    rows = rows_for("citizens")
    snapshot = write_snapshot(tmp_path / "current.duckdb", {"citizens": rows})
    target.export("citizens", snapshot, table="people")
    data, state, log = target.table("people"), target.table("hub_state__people"), target.table("hub_exports")
    stranger = dict(next(iter(rows.values())), personal_id="079000000001")
    with target.engine.begin() as conn:  # the hub forgets it wrote the table, and someone adds a row
        conn.execute(state.delete())
        conn.execute(log.delete())
        conn.execute(data.insert().values(personal_id=stranger["personal_id"], family_name="Lạ"))
    with pytest.raises(ExportError, match="already holds 41 rows that hub export did not write; --full"):
        target.export("citizens", snapshot, table="people")
    taken = target.export("citizens", snapshot, table="people", full=True)
    assert taken.mode == "full" and counts(taken) == (0, ROWS, 1, 0), taken.summary()
    assert_target_equals(target, "people", "citizens", rows)
    with target.engine.begin() as conn:  # drift: a row deleted behind the hub's back
        conn.execute(data.delete().where(data.c.personal_id == min(k[0] for k in rows)))
    repaired = target.export("citizens", snapshot, table="people")
    assert repaired.mode == "full" and "the table holds 39 rows, the last export left 40" in repaired.reason
    assert counts(repaired) == (1, ROWS - 1, 0, 0)
    assert_target_equals(target, "people", "citizens", rows)
    assert counts(target.export("citizens", snapshot, table="people")) == (0, 0, 0, ROWS)


def test_a_dry_run_counts_and_writes_nothing(target: Target, tmp_path: Path):
    rows = rows_for("enterprises")
    snapshot = write_snapshot(tmp_path / "current.duckdb", {"enterprises": rows})
    dry = target.export("enterprises", snapshot, dry_run=True)
    assert dry.dry_run and counts(dry) == (ROWS, 0, 0, 0) and "dry run" in dry.summary()
    assert not target.has_table("enterprises") and not target.has_table("hub_exports")
    target.export("enterprises", snapshot)
    v2, inserted, updated, deleted = changed_version(rows, "enterprises")
    write_snapshot(snapshot, {"enterprises": v2})
    dry = target.export("enterprises", snapshot, dry_run=True)
    assert counts(dry) == (inserted, updated, deleted, ROWS - updated - deleted)
    assert_target_equals(target, "enterprises", "enterprises", rows)


def test_the_same_table_is_refused_for_another_dataset(target: Target, tmp_path: Path):
    snapshot = write_snapshot(tmp_path / "current.duckdb", {n: rows_for(n, 5) for n in MODULES})
    target.export("documents", snapshot, table="shared")
    with pytest.raises(ExportError, match="shared exists without column"):
        target.export("enterprises", snapshot, table="shared")


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_concurrent_exports_of_a_table_are_serialised(kind: str, tmp_path: Path, monkeypatch):
    """B starts while A holds its lock: B waits, then sees A's committed export and changes nothing.
    (Without the lock B would diff against the state A is replacing and send A's changes again.)"""
    scratch = _scratch(kind, tmp_path)
    target = next(scratch)
    release = threading.Event()
    try:
        v1 = rows_for("citizens")
        snapshot = write_snapshot(tmp_path / "current.duckdb", {"citizens": v1})
        target.export("citizens", snapshot)
        rows, inserted, updated, deleted = changed_version(v1, "citizens")
        write_snapshot(snapshot, {"citizens": rows})
        locked, results = threading.Event(), {}
        original = export._previous

        def held(*args):  # A has taken its lock (in _lock) and now pauses before reading the state
            if threading.current_thread().name == "A":
                locked.set()
                assert release.wait(60)
            return original(*args)

        monkeypatch.setattr(export, "_previous", held)

        def run(name: str) -> None:
            try:
                results[name] = target.export("citizens", snapshot)
            except BaseException as exc:  # reported below
                results[name] = exc

        a = threading.Thread(target=run, args=("A",), name="A")
        a.start()
        assert locked.wait(30)
        b = threading.Thread(target=run, args=("B",), name="B")
        b.start()
        deadline = time_module.monotonic() + 30
        while not _waiting_for_a_lock(target):  # B is queued behind A's lock
            assert b.is_alive() and time_module.monotonic() < deadline, results
        release.set()
        a.join(60)
        b.join(60)
        assert counts(results["A"]) == (inserted, updated, deleted, ROWS - updated - deleted), results
        assert counts(results["B"]) == (0, 0, 0, len(rows)), results
        assert_target_equals(target, "citizens", "citizens", rows)
    finally:
        release.set()
        scratch.close()


def _waiting_for_a_lock(target: Target) -> bool:
    with target.engine.connect() as conn:
        if target.kind == "postgresql":
            query = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hub export' "
                     "AND wait_event_type = 'Lock' AND datname = current_database()")
        else:  # a statement on hub_exports still running while A holds its row
            query = ("SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
                     "AND COMMAND = 'Query' AND INFO LIKE :pattern AND ID <> CONNECTION_ID()")
        return conn.execute(sa.text(query), {"pattern": "%hub_exports%"} if target.kind == "mariadb" else {}
                            ).scalar_one() > 0


# ------------------------------------------------------------------------- errors and the command

SECRET = "s3cr3t-Passw0rd"


@pytest.mark.parametrize("url", [
    f"postgresql://postgres:{SECRET}@127.0.0.1:1/test",  # nothing listens on port 1
    f"mariadb://root:{SECRET}@127.0.0.1:3306/test",  # root has no password: access denied
    f"mysql+pymysql://root:{SECRET}@127.0.0.1:1/test",
])
def test_connection_failures_are_one_line_and_never_show_the_password(url: str, tmp_path: Path):
    snapshot = write_snapshot(tmp_path / "current.duckdb", {"citizens": rows_for("citizens", 3)})
    with pytest.raises(ExportError) as failure:
        export_dataset("citizens", url, snapshot=snapshot)
    message = str(failure.value)
    assert SECRET not in message and "***" in message and "\n" not in message, message
    assert message.startswith("cannot connect to") and failure.value.exit_code == 1
    result = CliRunner().invoke(app, ["export", "citizens", "--to", url, "--snapshot", str(snapshot)])
    assert result.exit_code == 1 and SECRET not in result.output and "Traceback" not in result.output


def test_the_command_line(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HUB_CONFIG", raising=False)
    monkeypatch.delenv("HUB_EXPORT_URL", raising=False)
    runner = CliRunner()
    url = f"sqlite:///{tmp_path / 'agency.db'}"

    missing = runner.invoke(app, ["export", "citizens", "--to", url])
    assert missing.exit_code == 1 and "no published snapshot at" in missing.output
    assert len(missing.output.strip().splitlines()) == 1

    published = tmp_path / "home" / "lake" / "published"
    published.mkdir(parents=True)
    rows = rows_for("citizens", 12)
    write_snapshot(published / "current.duckdb", {"citizens": rows})
    done = runner.invoke(app, ["export", "citizens", "--to", url, "--table", "cong_dan"])
    assert done.exit_code == 0, done.output
    line, = done.output.strip().splitlines()
    assert line.startswith("citizens → sqlite:///") and "table cong_dan: 12 inserted, 0 updated, 0 deleted, 0 unchanged" in line
    monkeypatch.setenv("HUB_EXPORT_URL", url)  # the URL may come from the environment, out of `ps`
    again = runner.invoke(app, ["export", "citizens", "--table", "cong_dan"])
    assert again.exit_code == 0 and "0 inserted, 0 updated, 0 deleted, 12 unchanged" in again.output

    broken = tmp_path / "broken.duckdb"
    broken.write_bytes(b"this is not a DuckDB file" * 100)
    unreadable = runner.invoke(app, ["export", "citizens", "--to", url, "--snapshot", str(broken)])
    assert unreadable.exit_code == 1 and "cannot read the snapshot" in unreadable.output
    assert len(unreadable.output.strip().splitlines()) == 1 and "Traceback" not in unreadable.output

    for args, code, text in [
        (["export", "people", "--to", url], 2, "unknown dataset 'people'; choose one of citizens, civil_events"),
        (["export", "citizens", "--to", "not a url"], 2, "--to is not a database URL"),
        (["export", "citizens", "--to", "oracle://u:pw@h/db"], 2, "PostgreSQL, MariaDB/MySQL or SQLite, not 'oracle'"),
        (["export", "citizens", "--to", url, "--schema", "x"], 2, "--schema is not supported for SQLite"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == code, (args, result.output)
        assert text in result.output and len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_the_command_line_against_postgresql_with_a_driverless_url(tmp_path: Path):
    scratch = _scratch("postgresql", tmp_path)
    target = next(scratch)
    try:
        snapshot = write_snapshot(tmp_path / "current.duckdb", {"civil_events": rows_for("civil_events")})
        result = CliRunner().invoke(app, ["export", "civil_events", "--to", "postgresql://postgres@127.0.0.1:5432/test",
                                          "--schema", target.schema, "--snapshot", str(snapshot), "--full"])
        assert result.exit_code == 0, result.output
        assert f"table {target.schema}.civil_events: {ROWS} inserted" in result.output and "full re-sync: --full" in result.output
        assert_target_equals(target, "civil_events", "civil_events", rows_for("civil_events"))
        absent = CliRunner().invoke(app, ["export", "civil_events", "--to", "postgresql://postgres@127.0.0.1:5432/test",
                                          "--schema", "no_such_schema_here", "--snapshot", str(snapshot)])
        assert absent.exit_code == 1 and "schema 'no_such_schema_here' does not exist" in absent.output
    finally:
        scratch.close()

