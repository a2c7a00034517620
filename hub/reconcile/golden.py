"""Golden records: one row per person and per enterprise, each value with its provenance and history.

A golden record is what the hub holds to be true of a citizen (keyed by ``personal_id``) or an
enterprise (keyed by ``enterprise_code``) *now*, and a long table says, for every field, every value
it has had, where each came from and when it held (``valid_from`` / ``valid_to``).

Survivorship: who decides each value
------------------------------------
- **The population database is the registry of residence and identity.** Every golden person value
  (name, birth date, gender, status, death date, marital status, spouse, parents, household,
  residence) is the population copy's latest landed version. Its history is every landed version
  (the landing parts keep each one with its ``NgayCapNhat``): a field's interval starts at the
  first version that gave it a value and ends (``valid_to``) where the next version with another
  value starts; the current one has ``valid_to`` null. Versions that repeat a value extend its
  interval, so a field's intervals never overlap and follow one another without a gap.
- **The civil-status registry is the legal source of civil events.** A registered death (``KT``) and
  a registered marriage (``KH``), once their people are linked (band ``exact`` or ``match``), assert
  values of their own: status ``dead`` and the death date from the date of death; marital status
  ``2`` (married) and the spouse from the registration date. They are kept in the same long table
  with their own provenance (``source_system`` ``civil``, the record key ``KT/…``/``KH/…``) and
  ``golden`` false.
- **When the two disagree the golden record does not pick silently.** It keeps the population's
  value as the golden one (the population database is where a death or a marriage is to be
  recorded, and the hub serves its copy) *and* :mod:`hub.reconcile.conflicts` records a conflict that
  holds both values with their source keys, for an officer to resolve at the source. Nothing the
  civil registry says overwrites a population value, and nothing is dropped.
- **Enterprises:** the business registry is the only source. Each enterprise's golden values are its
  latest landed version (greatest ``last_dossier_processed_on``, ties to the later landing, as the
  canonical table picks) and the history is every landed version. Its legal representatives are
  linked to citizens through the links table (:mod:`hub.reconcile.link`): each carries the citizen
  it is (bands ``exact``/``match``), else none, with the link's band and score.

Values in the long tables are text (dates ISO 8601, codes as served), so one table holds every field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hub.reconcile.link import LINKED_BANDS
from hub.reconcile.normalize import name_key_column, name_parts, unit_key_column
from schemas.canonical import enterprises as enterprises_spec

VN_TIMESTAMP = pa.timestamp("ms", tz="Asia/Ho_Chi_Minh")
TableLike = pa.Table | str | Path | Sequence[str | Path] | None

STATUS_LABELS = {0: "alive", 1: "dead", 2: "missing"}
MARITAL_LABELS = {1: "single", 2: "married", 3: "divorced", 4: "widowed"}

#: The person fields whose history is kept, in the order they are listed.
PERSON_FIELDS = ("name", "name_served", "cmnd", "birth_date", "gender", "status", "death_date", "marital_status",
                 "spouse_personal_id", "father_personal_id", "mother_personal_id", "household_head_id",
                 "permanent_unit_key", "permanent_province_code", "permanent_address", "current_unit_key",
                 "current_address")
#: The enterprise fields whose history is kept.
ENTERPRISE_FIELDS = ("name", "name_foreign", "name_short", "type_code", "status_code", "founding_date",
                     "hq_unit_key", "hq_address", "capital", "legal_representatives", "source_variant")


def fields_schema(key: str) -> pa.Schema:
    """The long provenance/history table of golden persons (``key`` ``personal_id``) or enterprises."""
    return pa.schema([
        pa.field(key, pa.string(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("value", pa.string()),
        pa.field("source_system", pa.string(), nullable=False),
        pa.field("source_dataset", pa.string(), nullable=False),
        pa.field("source_record_key", pa.string(), nullable=False),
        pa.field("source_request_id", pa.string()),
        pa.field("valid_from", VN_TIMESTAMP),
        pa.field("valid_to", VN_TIMESTAMP),
        pa.field("golden", pa.bool_(), nullable=False),
    ])


PERSON_FIELDS_SCHEMA = fields_schema("personal_id")
"""``golden_person_fields``: one row per value a field of a person has had, or a civil event asserts.

- ``value``: the value as text (null: the source left it empty); ``field`` one of :data:`PERSON_FIELDS`.
- ``source_system``/``source_dataset``/``source_record_key``: ``population``/``citizens``/the personal
  ID for the population's versions; ``civil``/``civil_events``/``KT/<id>`` or ``KH/<id>`` for what a
  registered death or marriage asserts. ``source_request_id``: the exchange that landed the version.
- ``valid_from``/``valid_to``: when the value held (``valid_to`` null: it still does). For population
  rows, ``valid_from`` is the version's ``NgayCapNhat``; for an event, the date of death or of marriage.
- ``golden``: true for the population's values (the golden line), false for events' assertions.
"""
ENTERPRISE_FIELDS_SCHEMA = fields_schema("enterprise_code")
"""``golden_enterprise_fields``: as :data:`PERSON_FIELDS_SCHEMA`, per enterprise, from the business
registry's landed versions (``valid_from`` the version's ``last_dossier_processed_on``)."""

PERSON_SCHEMA = pa.schema([
    pa.field("personal_id", pa.string(), nullable=False),
    pa.field("cmnd", pa.string()),
    pa.field("name", pa.string()),  # normalised (hub.reconcile.normalize)
    pa.field("name_served", pa.string()),  # as the population database serves it
    pa.field("name_key", pa.string()),
    pa.field("family_name", pa.string()),
    pa.field("middle_name", pa.string()),
    pa.field("given_name", pa.string()),
    pa.field("birth_date", pa.date32()),
    pa.field("birth_year", pa.int16()),
    pa.field("gender", pa.int8()),
    pa.field("status", pa.string()),  # alive / dead / missing
    pa.field("death_date", pa.date32()),
    pa.field("marital_status", pa.int8()),
    pa.field("marital_status_label", pa.string()),
    pa.field("spouse_personal_id", pa.string()),  # as the population record names them
    pa.field("spouse_linked_personal_id", pa.string()),  # the citizen the named spouse was linked to
    pa.field("father_personal_id", pa.string()),
    pa.field("mother_personal_id", pa.string()),
    pa.field("household_head_id", pa.string()),
    pa.field("permanent_unit_key", pa.string()),  # 2025 commune code
    pa.field("permanent_province_code", pa.string()),  # as served (either code set)
    pa.field("permanent_address", pa.string()),
    pa.field("current_unit_key", pa.string()),
    pa.field("current_address", pa.string()),
    pa.field("registered_deaths", pa.list_(pa.string())),  # KT/<id> of linked death registrations
    pa.field("registered_marriages", pa.list_(pa.string())),  # KH/<id> of linked marriage registrations
    pa.field("updated_at", VN_TIMESTAMP),  # NgayCapNhat of the version the values come from
    pa.field("source_request_id", pa.string()),
])
"""``golden_persons``: one row per citizen, the current golden values (see the module docstring)."""

REPRESENTATIVE = pa.struct([
    pa.field("position", pa.int16()),
    pa.field("name", pa.string()),  # as served
    pa.field("name_normalised", pa.string()),
    pa.field("id_type", pa.string()),
    pa.field("id_number", pa.string()),
    pa.field("personal_id", pa.string()),  # the linked citizen (bands exact/match), else null
    pa.field("link_band", pa.string()),
    pa.field("link_score", pa.float64()),
    pa.field("link_method", pa.string()),
])
ENTERPRISE_SCHEMA = pa.schema([
    pa.field("enterprise_code", pa.string(), nullable=False),
    pa.field("name", pa.string()),
    pa.field("name_foreign", pa.string()),
    pa.field("name_short", pa.string()),
    pa.field("type_code", pa.string()),
    pa.field("status_code", pa.string()),
    pa.field("status_name", pa.string()),
    pa.field("founding_date", pa.date32()),
    pa.field("hq_unit_key", pa.string()),
    pa.field("hq_address", pa.string()),
    pa.field("capital", enterprises_spec.MONEY),
    pa.field("legal_representatives", pa.list_(REPRESENTATIVE)),
    pa.field("representative_personal_ids", pa.list_(pa.string())),
    pa.field("source_variant", pa.string()),
    pa.field("last_dossier_processed_on", pa.date32()),
    pa.field("source_request_id", pa.string()),
])
"""``golden_enterprises``: one row per enterprise code, current values and linked representatives."""


@dataclass
class GoldenPersons:
    persons: pa.Table  # PERSON_SCHEMA
    fields: pa.Table  # PERSON_FIELDS_SCHEMA
    versions: int  # population versions read (after removing repeats of one version)


@dataclass
class GoldenEnterprises:
    enterprises: pa.Table  # ENTERPRISE_SCHEMA
    fields: pa.Table  # ENTERPRISE_FIELDS_SCHEMA
    versions: int


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def read_table(source: TableLike, columns: Sequence[str] | None = None) -> pa.Table | None:
    """An Arrow table from a table, a Parquet path, or a list of Parquet paths (their rows in order,
    each row numbered by file and row so later landings can win ties); None for None."""
    if source is None:
        return None
    if isinstance(source, pa.Table):
        table = source
        file_no = np.zeros(table.num_rows, np.int64)
    else:
        paths = [source] if isinstance(source, (str, Path)) else list(source)
        pieces, numbers = [], []
        for i, path in enumerate(paths):
            present = set(pq.read_schema(path).names)
            piece = pq.read_table(path, columns=[c for c in columns if c in present] if columns else None)
            pieces.append(piece)
            numbers.append(np.full(piece.num_rows, i, np.int64))
        if not pieces:
            return None
        table = pa.concat_tables(pieces, promote_options="permissive")
        file_no = np.concatenate(numbers) if numbers else np.zeros(0, np.int64)
    if columns:
        for name in columns:
            if name not in table.column_names:
                table = table.append_column(name, pa.nulls(table.num_rows))
        table = table.select(list(columns))
    return table.append_column("_file", pa.array(file_no)).append_column(
        "_row", pa.array(np.arange(table.num_rows, dtype=np.int64)))


def _column(table: pa.Table, name: str) -> pa.Array:
    column = table[name]
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _blank(array: pa.Array) -> pa.Array:
    """Empty or blank text as null: a source that leaves a field empty says nothing about it."""
    text = array.cast(pa.string())
    return pc.if_else(pc.equal(pc.utf8_trim_whitespace(text), ""), pa.scalar(None, pa.string()), text)


def _text(array: pa.Array) -> pa.Array:
    return _blank(array.cast(pa.string()))


# ---------------------------------------------------------------------------------------------
# Persons
# ---------------------------------------------------------------------------------------------

CITIZEN_COLUMNS = ("personal_id", "cmnd", "family_name", "middle_name", "given_name", "gender", "birth_year",
                   "birth_date", "status", "death_date", "marital_status", "spouse_personal_id", "father_personal_id",
                   "mother_personal_id", "household_head_id", "permanent_province_code", "permanent_district_code",
                   "permanent_ward_code", "permanent_address", "current_province_code", "current_district_code",
                   "current_ward_code", "current_address", "updated_at", "request_id")


def _person_values(table: pa.Table) -> dict[str, pa.Array]:
    """The golden columns of citizen versions (the canonical table's rows or landed ones)."""
    family, middle, given = (_column(table, c).to_pylist() for c in ("family_name", "middle_name", "given_name"))
    parts = {}
    split = []
    for key in zip(family, middle, given):
        found = parts.get(key)
        if found is None:
            found = parts[key] = name_parts(*key)
        split.append(found)
    name = pa.array([" ".join(p for p in s if p) or None for s in split], pa.string())
    served = pa.array([" ".join(p.strip() for p in key if p and p.strip()) or None
                       for key in zip(family, middle, given)], pa.string())
    status = _column(table, "status").cast(pa.int8())
    marital = _column(table, "marital_status").cast(pa.int8())
    return {
        "personal_id": _column(table, "personal_id"),
        "cmnd": _text(_column(table, "cmnd")),
        "name": name,
        "name_served": served,
        "name_key": name_key_column(name),
        "family_name": pa.array([s[0] or None for s in split], pa.string()),
        "middle_name": pa.array([s[1] or None for s in split], pa.string()),
        "given_name": pa.array([s[2] or None for s in split], pa.string()),
        "birth_date": _column(table, "birth_date").cast(pa.date32()),
        "birth_year": _column(table, "birth_year").cast(pa.int16()),
        "gender": _column(table, "gender").cast(pa.int8()),
        "status": _labels(status, STATUS_LABELS),
        "death_date": _column(table, "death_date").cast(pa.date32()),
        "marital_status": marital,
        "marital_status_label": _labels(marital, MARITAL_LABELS),
        "spouse_personal_id": _text(_column(table, "spouse_personal_id")),
        "father_personal_id": _text(_column(table, "father_personal_id")),
        "mother_personal_id": _text(_column(table, "mother_personal_id")),
        "household_head_id": _text(_column(table, "household_head_id")),
        "permanent_unit_key": unit_key_column(*(_column(table, f"permanent_{p}_code")
                                                for p in ("ward", "district", "province"))),
        "permanent_province_code": _text(_column(table, "permanent_province_code")),
        "permanent_address": _text(_column(table, "permanent_address")),
        "current_unit_key": unit_key_column(*(_column(table, f"current_{p}_code")
                                              for p in ("ward", "district", "province"))),
        "current_address": _text(_column(table, "current_address")),
        "updated_at": _column(table, "updated_at").cast(VN_TIMESTAMP),
        "source_request_id": _column(table, "request_id"),
    }


def _labels(codes: pa.Array, labels: dict[int, str]) -> pa.Array:
    return pa.array([labels.get(c, str(c)) if c is not None else None for c in codes.to_pylist()], pa.string())


def _history(con: duckdb.DuckDBPyConnection, wide: pa.Table, key: str, fields: Sequence[str], system: str,
             dataset: str, version: str) -> pa.Table:
    """The long history of ``fields`` from versions in ``wide`` (one row per key and version, with
    ``_file``/``_row`` saying which landed last): runs of equal values merged into one interval."""
    con.register("wide_in", wide)
    casts = ", ".join(f'CAST("{f}" AS VARCHAR) AS "{f}"' for f in fields)
    names = ", ".join(f'"{f}"' for f in fields)
    sql = f"""
        WITH v AS (
            SELECT "{key}", "{version}" AS version, source_request_id, {casts} FROM wide_in
            QUALIFY row_number() OVER (PARTITION BY "{key}", "{version}" ORDER BY _file DESC, _row DESC) = 1),
        long AS (SELECT * FROM v UNPIVOT INCLUDE NULLS (value FOR field IN ({names}))),
        marked AS (
            SELECT *, row_number() OVER w = 1 OR (lag(value) OVER w) IS DISTINCT FROM value AS starts
            FROM long WINDOW w AS (PARTITION BY "{key}", field ORDER BY version))
        SELECT "{key}", field, value, '{system}' AS source_system, '{dataset}' AS source_dataset,
               "{key}" AS source_record_key, source_request_id,
               version AS valid_from, lead(version) OVER (PARTITION BY "{key}", field ORDER BY version) AS valid_to,
               true AS golden
        FROM marked WHERE starts
        ORDER BY "{key}", field, valid_from"""
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.unregister("wide_in")


def build_golden_persons(citizens: TableLike, citizen_versions: TableLike = None, civil_events: TableLike = None,
                         links: pa.Table | None = None) -> GoldenPersons:
    """Golden persons and their fields table.

    ``citizens`` is the canonical table (latest version per personal ID); ``citizen_versions`` every
    landed version (the population landing parts, in commit order; default: ``citizens`` alone, so
    each field has one interval); ``civil_events`` and ``links`` (:data:`~hub.reconcile.link.LINK_SCHEMA`)
    add what registered deaths and marriages assert.
    """
    current = read_table(citizens, CITIZEN_COLUMNS)
    if current is None or current.num_rows == 0:
        raise ValueError("golden persons need a non-empty citizens table")
    versions = read_table(citizen_versions, CITIZEN_COLUMNS) if citizen_versions is not None else current
    wide_now = pa.table(_person_values(current))
    events = _event_assertions(civil_events, links)
    linked_spouse = _linked_relative(links, "spouse")
    with duckdb.connect() as con:
        history_in = pa.table({**_person_values(versions), "_file": versions["_file"], "_row": versions["_row"]})
        history = _history(con, history_in, "personal_id", PERSON_FIELDS, "population", "citizens", "updated_at")
        n_versions = con.execute("SELECT count(*) FROM (SELECT DISTINCT personal_id, updated_at FROM history_in)").fetchall()[0][0]
        con.register("now_in", wide_now)
        con.register("events", events)
        con.register("spouse_links", linked_spouse)
        persons = con.sql("""
            WITH d AS (SELECT personal_id, list(source_record_key ORDER BY source_record_key) AS keys FROM events
                       WHERE field = 'status' GROUP BY ALL),
                 m AS (SELECT personal_id, list(DISTINCT source_record_key ORDER BY source_record_key) AS keys
                       FROM events WHERE field = 'marital_status' GROUP BY ALL)
            SELECT n.* EXCLUDE (updated_at, source_request_id), s.linked AS spouse_linked_personal_id,
                   coalesce(d.keys, []) AS registered_deaths, coalesce(m.keys, []) AS registered_marriages,
                   n.updated_at, n.source_request_id
            FROM now_in n LEFT JOIN d USING (personal_id) LEFT JOIN m USING (personal_id)
            LEFT JOIN spouse_links s ON s.record_key = n.personal_id
            ORDER BY n.personal_id""").to_arrow_table()
        known = set(wide_now["personal_id"].to_pylist())
        events = events.filter(pc.is_in(events["personal_id"], pa.array(sorted(known), pa.string())))
    persons = _conform(persons, PERSON_SCHEMA)
    fields = pa.concat_tables([_conform(history, PERSON_FIELDS_SCHEMA), _conform(events, PERSON_FIELDS_SCHEMA)])
    fields = fields.sort_by([("personal_id", "ascending"), ("field", "ascending"), ("golden", "descending"),
                             ("valid_from", "ascending")])
    return GoldenPersons(persons, fields, n_versions)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return pa.table({f.name: table[f.name].cast(f.type) for f in schema}, schema=schema)


def _linked(links: pa.Table | None) -> pa.Table:
    if links is None or links.num_rows == 0:
        return pa.table({"dataset": pa.array([], pa.string()), "record_key": pa.array([], pa.string()),
                         "role": pa.array([], pa.string()), "position": pa.array([], pa.int16()),
                         "personal_id": pa.array([], pa.string())})
    keep = pc.is_in(links["band"], pa.array(list(LINKED_BANDS)))
    return links.filter(keep).select(["dataset", "record_key", "role", "position", "personal_id"])


def _linked_relative(links: pa.Table | None, role: str) -> pa.Table:
    linked = _linked(links)
    rows = pc.and_(pc.equal(linked["dataset"], "citizens"), pc.equal(linked["role"], role))
    chosen = linked.filter(rows)
    return pa.table({"record_key": chosen["record_key"], "linked": chosen["personal_id"]})


def _event_assertions(civil_events: TableLike, links: pa.Table | None) -> pa.Table:
    """What each valid registered death and marriage asserts of the citizens it was linked to."""
    civil = read_table(civil_events, ("module", "record_id", "status", "registered_on", "death_date",
                                      "husband_id_number", "wife_id_number", "request_id"))
    empty = PERSON_FIELDS_SCHEMA.empty_table()
    if civil is None or civil.num_rows == 0:
        return empty
    with duckdb.connect() as con:
        con.register("civil", civil)
        con.register("linked", _linked(links))
        asserted = con.sql("""
            WITH c AS (
                SELECT module || '/' || CAST(record_id AS VARCHAR) AS record_key, * FROM civil
                WHERE coalesce(status, 1) = 1),
            dead AS (
                SELECT l.personal_id, c.* FROM c JOIN linked l
                  ON l.dataset = 'civil_events' AND l.record_key = c.record_key AND l.role = 'deceased'
                WHERE c.module = 'KT'),
            wed AS (
                SELECT l.personal_id, l.role, c.*,
                       (SELECT o.personal_id FROM linked o WHERE o.dataset = 'civil_events'
                          AND o.record_key = c.record_key AND o.role = CASE l.role WHEN 'husband' THEN 'wife'
                                                                                     ELSE 'husband' END) AS other
                FROM c JOIN linked l ON l.dataset = 'civil_events' AND l.record_key = c.record_key
                                     AND l.role IN ('husband', 'wife')
                WHERE c.module = 'KH')
            SELECT personal_id, 'status' AS field, 'dead' AS value, record_key, request_id,
                   CAST(coalesce(death_date, registered_on) AS TIMESTAMP) AT TIME ZONE 'Asia/Ho_Chi_Minh' AS valid_from
            FROM dead
            UNION ALL
            SELECT personal_id, 'death_date', CAST(death_date AS VARCHAR), record_key, request_id,
                   CAST(coalesce(death_date, registered_on) AS TIMESTAMP) AT TIME ZONE 'Asia/Ho_Chi_Minh'
            FROM dead
            UNION ALL
            SELECT personal_id, 'marital_status', '2', record_key, request_id,
                   CAST(registered_on AS TIMESTAMP) AT TIME ZONE 'Asia/Ho_Chi_Minh' FROM wed
            UNION ALL
            SELECT personal_id, 'spouse_personal_id',
                   coalesce(other, nullif(trim(CASE role WHEN 'husband' THEN wife_id_number ELSE husband_id_number END), '')),
                   record_key, request_id, CAST(registered_on AS TIMESTAMP) AT TIME ZONE 'Asia/Ho_Chi_Minh' FROM wed
        """).to_arrow_table()
    return _as_event_rows(asserted)


def _as_event_rows(table: pa.Table) -> pa.Table:
    n = table.num_rows
    return pa.table({
        "personal_id": table["personal_id"], "field": table["field"], "value": table["value"],
        "source_system": pa.array(["civil"] * n, pa.string()),
        "source_dataset": pa.array(["civil_events"] * n, pa.string()),
        "source_record_key": table["record_key"], "source_request_id": table["request_id"],
        "valid_from": table["valid_from"].cast(VN_TIMESTAMP), "valid_to": pa.nulls(n, VN_TIMESTAMP),
        "golden": pa.array(np.zeros(n, bool)),
    }, schema=PERSON_FIELDS_SCHEMA)


# ---------------------------------------------------------------------------------------------
# Enterprises
# ---------------------------------------------------------------------------------------------

ENTERPRISE_COLUMNS = ("enterprise_code", "name", "name_foreign", "name_short", "type_code", "status_code",
                      "status_name", "founding_date", "hq_province_code", "hq_district_code", "hq_ward_code",
                      "hq_address", "capital", "legal_representatives", "source_variant",
                      "last_dossier_processed_on", "request_id")


def _enterprise_values(table: pa.Table) -> dict[str, pa.Array]:
    reps = _column(table, "legal_representatives")
    shown = []
    for people in reps.to_pylist():
        if people is None:
            shown.append(None)
            continue
        shown.append("; ".join(
            (p.get("name") or "").strip() + (f" [{p.get('id_type') or '?'}:{p['id_number']}]" if p.get("id_number") else "")
            for p in people))
    return {
        "enterprise_code": _column(table, "enterprise_code"),
        "name": _text(_column(table, "name")),
        "name_foreign": _text(_column(table, "name_foreign")),
        "name_short": _text(_column(table, "name_short")),
        "type_code": _text(_column(table, "type_code")),
        "status_code": _text(_column(table, "status_code")),
        "status_name": _text(_column(table, "status_name")),
        "founding_date": _column(table, "founding_date").cast(pa.date32()),
        "hq_unit_key": unit_key_column(*(_column(table, f"hq_{p}_code") for p in ("ward", "district", "province"))),
        "hq_address": _text(_column(table, "hq_address")),
        "capital": _column(table, "capital").cast(enterprises_spec.MONEY),
        "legal_representatives": pa.array(shown, pa.string()),
        "source_variant": _column(table, "source_variant"),
        "last_dossier_processed_on": _column(table, "last_dossier_processed_on").cast(pa.date32()),
        "source_request_id": _column(table, "request_id"),
    }


def build_golden_enterprises(enterprises: TableLike, enterprise_versions: TableLike = None,
                             links: pa.Table | None = None) -> GoldenEnterprises:
    """Golden enterprises and their fields table: ``enterprises`` is the canonical table,
    ``enterprise_versions`` every landed version (the business landing parts; default the table
    alone), ``links`` the links table that says which citizen each legal representative is."""
    current = read_table(enterprises, ENTERPRISE_COLUMNS)
    if current is None:
        raise ValueError("golden enterprises need the enterprises table")
    versions = read_table(enterprise_versions, ENTERPRISE_COLUMNS) if enterprise_versions is not None else current
    values = _enterprise_values(versions)
    history_in = pa.table({**values, "_file": versions["_file"], "_row": versions["_row"]})
    reps = _representatives(current, links)
    with duckdb.connect() as con:
        # A day is a coarse version: two versions of one day are one, the later landing winning.
        history_in = _day_start(history_in)
        history = _history(con, history_in, "enterprise_code", ENTERPRISE_FIELDS, "business", "enterprises",
                           "valid_from")
        n_versions = con.execute(
            "SELECT count(*) FROM (SELECT DISTINCT enterprise_code, valid_from FROM history_in)").fetchall()[0][0]
        now = pa.table(_enterprise_values(current)).drop_columns(["legal_representatives"])
        now = now.append_column("_file", current["_file"]).append_column("_row", current["_row"])
        con.register("now_in", now)
        con.register("reps", reps)
        golden = con.sql("""
            WITH n AS (SELECT * FROM now_in QUALIFY row_number() OVER (
                           PARTITION BY enterprise_code ORDER BY last_dossier_processed_on DESC NULLS LAST,
                                                                 _file DESC, _row DESC) = 1),
                 r AS (SELECT enterprise_code, list(rep ORDER BY rep.position) AS legal_representatives,
                              list(rep.personal_id ORDER BY rep.position) FILTER (WHERE rep.personal_id IS NOT NULL)
                                  AS representative_personal_ids
                       FROM reps GROUP BY ALL)
            SELECT n.* EXCLUDE (_file, _row), coalesce(r.legal_representatives, []) AS legal_representatives,
                   coalesce(r.representative_personal_ids, []) AS representative_personal_ids
            FROM n LEFT JOIN r USING (enterprise_code) ORDER BY enterprise_code""").to_arrow_table()
    return GoldenEnterprises(_conform(golden, ENTERPRISE_SCHEMA), _conform(history, ENTERPRISE_FIELDS_SCHEMA),
                             n_versions)


def _day_start(table: pa.Table) -> pa.Table:
    """``valid_from`` of a dated version: the start of its day in Asia/Ho_Chi_Minh."""
    days = _column(table, "last_dossier_processed_on").cast(pa.date32())
    with duckdb.connect() as con:
        con.register("d", pa.table({"day": days}))
        start = con.sql("SELECT CAST(day AS TIMESTAMP) AT TIME ZONE 'Asia/Ho_Chi_Minh' AS s FROM d").to_arrow_table()["s"]
    return table.append_column("valid_from", start.cast(VN_TIMESTAMP))


def _representatives(current: pa.Table, links: pa.Table | None) -> pa.Table:
    """One row per (enterprise, representative) of the current versions, with its link."""
    codes = _column(current, "enterprise_code")
    lists = _column(current, "legal_representatives")
    rows: dict[str, list] = {k: [] for k in ("enterprise_code", "position", "name", "id_type", "id_number")}
    for code, people in zip(codes.to_pylist(), lists.to_pylist()):
        for position, person in enumerate(people or []):
            rows["enterprise_code"].append(code)
            rows["position"].append(position)
            rows["name"].append(person.get("name"))
            rows["id_type"].append(person.get("id_type"))
            rows["id_number"].append(person.get("id_number"))
    flat = pa.table({"enterprise_code": pa.array(rows["enterprise_code"], pa.string()),
                     "position": pa.array(rows["position"], pa.int16()),
                     "name": pa.array(rows["name"], pa.string()), "id_type": pa.array(rows["id_type"], pa.string()),
                     "id_number": pa.array(rows["id_number"], pa.string())})
    normalised = pa.array([" ".join(p for p in name_parts("", "", n) if p) if n else None
                           for n in flat["name"].to_pylist()], pa.string())
    flat = flat.append_column("name_normalised", normalised)
    if links is None:
        links = pa.table({"dataset": pa.array([], pa.string()), "record_key": pa.array([], pa.string()),
                          "role": pa.array([], pa.string()), "position": pa.array([], pa.int16()),
                          "personal_id": pa.array([], pa.string()), "band": pa.array([], pa.string()),
                          "score": pa.array([], pa.float64()), "method": pa.array([], pa.string())})
    with duckdb.connect() as con:
        con.register("flat", flat)
        con.register("links_in", links.select(["dataset", "record_key", "role", "position", "personal_id", "band",
                                               "score", "method"]))
        bands = ", ".join(f"'{b}'" for b in LINKED_BANDS)
        return con.sql(f"""
            SELECT f.enterprise_code,
                   struct_pack(position := f.position, name := f.name, name_normalised := f.name_normalised,
                               id_type := f.id_type, id_number := f.id_number,
                               personal_id := CASE WHEN l.band IN ({bands}) THEN l.personal_id END,
                               link_band := l.band, link_score := l.score, link_method := l.method) AS rep
            FROM flat f LEFT JOIN links_in l
              ON l.dataset = 'enterprises' AND l.role = 'legal_representative' AND l.record_key = f.enterprise_code
             AND l.position = f.position""").to_arrow_table()


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def write_parquet(table: pa.Table, path: str | Path) -> Path:
    """Write ``table`` to ``path`` atomically (fsynced temporary file, then rename)."""
    from connectors.extract import atomic_path

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as temp:
        pq.write_table(table, temp, compression="zstd")
    return target
