"""Conflicts: every disagreement between the national registries about a person or an enterprise.

The golden records (:mod:`hub.reconcile.golden`) keep the population database's values; each place
where another registry says otherwise becomes a row here, holding the value in each system with the
record that says it, so that nothing is overwritten silently and an officer can resolve it where it
belongs (at the registry that is behind).

Kinds
-----
- ``death_not_in_population``: a valid death registration (``KT``, ``trangThai`` 1 or absent) whose
  deceased is linked to a citizen (band ``exact``/``match``) whose population status is not *dead*.
- ``marriage_not_in_population``: a valid marriage registration (``KH``) of a linked husband or wife
  whose population marital status is 1 (single, never married). The reverse — married in the
  population but no registration — is no conflict: the civil registry holds only its last years, and
  older marriages are simply not in it. Divorced (3) and widowed (4) agree with a past marriage.
- ``moved_out``: the population copy places the citizen's permanent residence outside the province
  (``HUB_PROVINCE``) although the copy is of the province's residents: the registry keeps serving a
  resident who left (it shows them leaving) and the province's other records still count them. The
  residence is taken in its own code set: a 124/2004 commune by its province code, a 19/2025 commune
  by the 124/2004 communes it was formed from, so a move into a province merged into this one in 2025
  (Hải Dương into Hải Phòng) is still a move away from the province's pre-2025 territory, which is
  what its registries keep. A 2025 commune formed across the old border is not flagged (no move can
  be told).
- ``rep_name_mismatch``: a legal representative of an enterprise, linked by ID evidence (the personal
  ID or CMND as served — bands ``exact``/``match``/``review`` — or a one-digit/adjacent-swap neighbour
  of it in bands ``exact``/``match``), whose name differs from the linked citizen's once both are in
  normal form (:func:`hub.reconcile.normalize.name_key`: case, diacritics, Unicode form, tone
  placement and spacing do not count). A representative linked by name alone (variant A gives no ID
  papers) cannot disagree by name, so it is never one.

What is *not* a conflict: representation faults that normalisation undoes (names in NFD, upper case,
old tone placement, without diacritics, the whole name in ``Ten``; 19/2025 address codes), ID-number
faults that linking absorbs (a mistyped digit, two swapped digits, the old CMND instead of the
personal ID): they change how a value is written, not what the registries say. A document revoked
after delivery belongs to the document axis, whose state machine handles it.

History
-------
Each run recomputes the conflicts. A conflict's id is a hash of its kind, its subject and the other
party (the representative's citizen), so it is the same in every run. :func:`merge_history` takes the
previous table: a conflict still present keeps its ``first_seen`` and gets this run's ``last_seen``;
one no longer present is kept with ``status`` ``resolved`` and its ``resolved_at``; one that returns
is open again.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hub.reconcile.golden import TableLike, read_table
from hub.reconcile.normalize import _tables as unit_tables
from hub.reconcile.normalize import name_key_column, province_key

KINDS = ("death_not_in_population", "marriage_not_in_population", "moved_out", "rep_name_mismatch")
UTC_MS = pa.timestamp("ms", tz="UTC")

VALUE = pa.struct([
    pa.field("system", pa.string()),
    pa.field("dataset", pa.string()),
    pa.field("record_key", pa.string()),
    pa.field("field", pa.string()),
    pa.field("value", pa.string()),
])
CONFLICT_SCHEMA = pa.schema([
    pa.field("conflict_id", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("subject_kind", pa.string(), nullable=False),  # person / enterprise
    pa.field("subject_key", pa.string(), nullable=False),  # personal ID / enterprise code
    pa.field("related_key", pa.string()),  # the other party: a spouse, a representative's citizen
    pa.field("fields", pa.list_(pa.string())),
    pa.field("values", pa.list_(VALUE)),  # what each system says, with the record that says it
    pa.field("golden_value", pa.string()),  # what the golden record keeps
    pa.field("explanation", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),  # open / resolved
    pa.field("detected_at", UTC_MS, nullable=False),  # the run that last found it
    pa.field("first_seen", UTC_MS, nullable=False),
    pa.field("last_seen", UTC_MS, nullable=False),
    pa.field("resolved_at", UTC_MS),
])
"""The conflicts table: one row per disagreement, open or resolved (see the module docstring)."""

LINKED = ("exact", "match")


def conflict_id(kind: str, subject_kind: str, subject_key: str, related_key: str | None = None) -> str:
    """A stable id: the same disagreement has the same id in every run."""
    text = "|".join((kind, subject_kind, subject_key, related_key or ""))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def province_from_env(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return (env.get("HUB_PROVINCE") or "31").strip()


@lru_cache(maxsize=1)
def _legacy_provinces() -> dict[str, frozenset[str]]:
    """2025 commune → the 124/2004 provinces of the communes it was formed from."""
    tables = unit_tables()
    out: dict[str, set[str]] = {}
    for old, news in tables.successors.items():
        province = tables.legacy_ward.get(old, ("", ""))[0]
        for new in news:
            out.setdefault(new, set()).add(province)
    return {k: frozenset(v) for k, v in out.items()}


def outside_province(unit_keys: pa.Array, province_codes: pa.Array, province: str) -> pa.Array:
    """Per residence, whether it lies outside ``province``'s 124/2004 territory (see ``moved_out``);
    null when it cannot be told (no province code).

    A province code that is no 2025 province (a 124/2004 code) is compared as it is. A 2025 code of
    the province itself, or of the 2025 province it became part of, is a residence inside unless
    every 124/2004 commune its 2025 commune was formed from lies in another province."""
    legacy = _legacy_provinces()
    modern = unit_tables().province_codes_2025
    merged_into = province_key(province)
    out = []
    for key, code in zip(unit_keys.to_pylist(), province_codes.to_pylist()):
        code = (code or "").strip().zfill(2) if (code or "").strip() else ""
        olds = legacy.get(key) if key else None
        if not code:
            out.append(None if not olds else province not in olds)
        elif code == province or (code in modern and code == merged_into):
            out.append(bool(olds) and province not in olds)
        else:
            out.append(True)
    return pa.array(out, pa.bool_())


def detect_conflicts(golden_persons: TableLike, golden_enterprises: TableLike, links: TableLike,
                     civil_events: TableLike, *, province: str | None = None,
                     detected_at: datetime | None = None) -> pa.Table:
    """The conflicts of this run (all ``open``, ``first_seen`` = ``last_seen`` = ``detected_at``)."""
    province = province or province_from_env()
    now = detected_at or datetime.now(timezone.utc)
    persons = read_table(golden_persons)
    if persons is None:
        raise ValueError("conflicts need the golden persons")
    enterprises = read_table(golden_enterprises)
    link_rows = read_table(links)
    civil = read_table(civil_events, ("module", "record_id", "status", "registered_on", "death_date"))
    people = persons.select(["personal_id", "name", "name_key", "status", "death_date", "marital_status",
                             "marital_status_label", "permanent_unit_key", "permanent_province_code",
                             "permanent_address"])
    people = people.append_column("outside", outside_province(people["permanent_unit_key"],
                                                              people["permanent_province_code"], province))
    with duckdb.connect() as con:
        con.register("people", people)
        con.register("links", link_rows.drop_columns(["_file", "_row"]))
        con.register("civil", civil.drop_columns(["_file", "_row"]) if civil is not None else
                     pa.table({"module": pa.array([], pa.string()), "record_id": pa.array([], pa.int64()),
                               "status": pa.array([], pa.int8()), "registered_on": pa.array([], pa.date32()),
                               "death_date": pa.array([], pa.date32())}))
        reps = _representative_links(link_rows)
        con.register("reps", reps)
        con.register("enterprise_names", enterprises.select(["enterprise_code", "name"]) if enterprises is not None
                     else pa.table({"enterprise_code": pa.array([], pa.string()), "name": pa.array([], pa.string())}))
        rows = con.sql(_DETECT_SQL, params={"province": province}).to_arrow_table()
    ids = [conflict_id(k, sk, s, r) for k, sk, s, r in zip(rows["kind"].to_pylist(), rows["subject_kind"].to_pylist(),
                                                            rows["subject_key"].to_pylist(),
                                                            rows["related_key"].to_pylist())]
    n = rows.num_rows
    stamp = pa.array([now] * n, UTC_MS)
    table = pa.table({
        "conflict_id": pa.array(ids, pa.string()), "kind": rows["kind"], "subject_kind": rows["subject_kind"],
        "subject_key": rows["subject_key"], "related_key": rows["related_key"], "fields": rows["fields"],
        "values": rows["values"].cast(pa.list_(VALUE)), "golden_value": rows["golden_value"],
        "explanation": rows["explanation"], "status": pa.array(["open"] * n, pa.string()),
        "detected_at": stamp, "first_seen": stamp, "last_seen": stamp, "resolved_at": pa.nulls(n, UTC_MS),
    }, schema=CONFLICT_SCHEMA)
    return table.sort_by([("kind", "ascending"), ("subject_key", "ascending"), ("conflict_id", "ascending")])


def _representative_links(links: pa.Table) -> pa.Table:
    """Representatives linked by ID evidence, with the name each side gives in normal form."""
    reps = links.filter(pc.and_(pc.equal(links["dataset"], "enterprises"),
                                pc.equal(links["role"], "legal_representative")))
    by_id = pc.or_(pc.and_(pc.is_in(reps["method"], pa.array(["id", "cmnd"])),
                           pc.is_in(reps["band"], pa.array(["exact", "match", "review"]))),
                   pc.and_(pc.equal(reps["method"], "id_typo"), pc.is_in(reps["band"], pa.array(list(LINKED)))))
    reps = reps.filter(pc.and_(by_id, pc.is_valid(reps["personal_id"])))
    return pa.table({"enterprise_code": reps["record_key"], "position": reps["position"],
                     "personal_id": reps["personal_id"], "mention_name": reps["mention_name"],
                     "mention_id_number": reps["mention_id_number"], "mention_key": name_key_column(reps["mention_name"]),
                     "band": reps["band"], "method": reps["method"], "score": reps["score"]})


_DETECT_SQL = f"""
WITH valid AS (
    SELECT module || '/' || CAST(record_id AS VARCHAR) AS record_key, * FROM civil WHERE coalesce(status, 1) = 1),
linked AS (SELECT * FROM links WHERE band IN ({", ".join(f"'{b}'" for b in LINKED)}) AND dataset = 'civil_events'),
deaths AS (
    SELECT l.personal_id, list(v.record_key ORDER BY v.record_key) AS records,
           min(v.death_date) AS death_date
    FROM valid v JOIN linked l ON l.record_key = v.record_key AND l.role = 'deceased'
    WHERE v.module = 'KT' GROUP BY ALL),
marriages AS (
    SELECT l.personal_id, list(v.record_key ORDER BY v.record_key) AS records, max(v.registered_on) AS registered_on,
           max(o.personal_id) AS spouse
    FROM valid v JOIN linked l ON l.record_key = v.record_key AND l.role IN ('husband', 'wife')
    LEFT JOIN linked o ON o.record_key = v.record_key AND o.role IN ('husband', 'wife') AND o.role <> l.role
    WHERE v.module = 'KH' GROUP BY ALL)
SELECT 'death_not_in_population' AS kind, 'person' AS subject_kind, p.personal_id AS subject_key,
       NULL::VARCHAR AS related_key, ['status', 'death_date'] AS fields,
       list_concat([struct_pack(system := 'population', dataset := 'citizens', record_key := p.personal_id,
                                field := 'status', value := p.status)],
                   [struct_pack(system := 'civil', dataset := 'civil_events', record_key := r,
                                field := 'status', value := 'dead') FOR r IN d.records],
                   [struct_pack(system := 'civil', dataset := 'civil_events', record_key := d.records[1],
                                field := 'death_date', value := CAST(d.death_date AS VARCHAR))]) AS "values",
       p.status AS golden_value,
       'death registered (' || array_to_string(d.records, ', ') || ', died ' || coalesce(CAST(d.death_date AS VARCHAR), '?')
         || ') but the population database says ' || coalesce(p.status, 'nothing') || ' for ' || p.personal_id
         || ' (' || coalesce(p.name, '?') || '); the golden record keeps the population status' AS explanation
FROM deaths d JOIN people p USING (personal_id)
WHERE p.status IS DISTINCT FROM 'dead'
UNION ALL
SELECT 'marriage_not_in_population', 'person', p.personal_id, m.spouse, ['marital_status', 'spouse_personal_id'],
       list_concat([struct_pack(system := 'population', dataset := 'citizens', record_key := p.personal_id,
                                field := 'marital_status', value := CAST(p.marital_status AS VARCHAR))],
                   [struct_pack(system := 'civil', dataset := 'civil_events', record_key := r,
                                field := 'marital_status', value := '2') FOR r IN m.records]),
       CAST(p.marital_status AS VARCHAR),
       'marriage registered (' || array_to_string(m.records, ', ') || ' on ' || coalesce(CAST(m.registered_on AS VARCHAR), '?')
         || coalesce(', spouse ' || m.spouse, '') || ') but the population database says marital status '
         || coalesce(CAST(p.marital_status AS VARCHAR), '-') || ' (' || coalesce(p.marital_status_label, '-') || ') for '
         || p.personal_id || ' (' || coalesce(p.name, '?') || '); the golden record keeps the population value'
FROM marriages m JOIN people p USING (personal_id)
WHERE p.marital_status = 1
UNION ALL
SELECT 'moved_out', 'person', p.personal_id, NULL, ['permanent_unit_key', 'permanent_province_code'],
       [struct_pack(system := 'population', dataset := 'citizens', record_key := p.personal_id,
                    field := 'permanent_address', value := p.permanent_address),
        struct_pack(system := 'population', dataset := 'citizens', record_key := p.personal_id,
                    field := 'permanent_province_code', value := p.permanent_province_code),
        struct_pack(system := 'hub', dataset := 'configuration', record_key := 'HUB_PROVINCE',
                    field := 'province', value := $province)],
       p.permanent_unit_key,
       'the population copy of province ' || $province || ' places ' || p.personal_id || ' (' || coalesce(p.name, '?')
         || ') outside it: permanent residence ' || coalesce(p.permanent_address, '?') || ' (province code '
         || coalesce(p.permanent_province_code, '?') || ', 2025 commune ' || coalesce(p.permanent_unit_key, '?')
         || '): a resident who moved out'
FROM people p WHERE p.outside
UNION ALL
SELECT 'rep_name_mismatch', 'enterprise', r.enterprise_code, r.personal_id, ['legal_representatives.name', 'name'],
       [struct_pack(system := 'business', dataset := 'enterprises', record_key := r.enterprise_code,
                    field := 'legal_representatives[' || CAST(r.position AS VARCHAR) || '].name', value := r.mention_name),
        struct_pack(system := 'population', dataset := 'citizens', record_key := r.personal_id,
                    field := 'name', value := p.name)],
       r.mention_name,
       'legal representative ' || CAST(r.position AS VARCHAR) || ' of ' || r.enterprise_code
         || coalesce(' (' || e.name || ')', '') || ' is named ' || coalesce(r.mention_name, '?')
         || ' by the business registry, but the citizen its ID ' || coalesce(r.mention_id_number, '?')
         || ' belongs to (' || r.personal_id || ', link ' || r.method || '/' || r.band || ') is ' || coalesce(p.name, '?')
         || ' in the population database'
FROM reps r JOIN people p USING (personal_id) LEFT JOIN enterprise_names e USING (enterprise_code)
WHERE r.mention_key IS DISTINCT FROM p.name_key
"""


def merge_history(current: pa.Table, previous: pa.Table | str | Path | None,
                  now: datetime | None = None) -> pa.Table:
    """This run's conflicts with the history of the previous table: see the module docstring."""
    if isinstance(previous, (str, Path)):
        previous = pq.read_table(previous) if Path(previous).exists() else None
    if previous is None or previous.num_rows == 0:
        return current
    stamp = now or (current["detected_at"][0].as_py() if current.num_rows else datetime.now(timezone.utc))
    with duckdb.connect() as con:
        con.register("cur", current)
        con.register("prev", previous.select(CONFLICT_SCHEMA.names).cast(CONFLICT_SCHEMA))
        merged = con.sql("""
            SELECT c.* REPLACE (coalesce(p.first_seen, c.first_seen) AS first_seen)
            FROM cur c LEFT JOIN prev p USING (conflict_id)
            UNION ALL
            SELECT p.* REPLACE ('resolved' AS status, coalesce(p.resolved_at, $now) AS resolved_at)
            FROM prev p ANTI JOIN cur c USING (conflict_id)
            ORDER BY kind, subject_key, conflict_id""", params={"now": stamp}).to_arrow_table()
    return merged.select(CONFLICT_SCHEMA.names).cast(CONFLICT_SCHEMA)


def open_counts(conflicts: pa.Table) -> dict[str, int]:
    """Open conflicts per kind (every kind listed, 0 when none)."""
    counts = {kind: 0 for kind in KINDS}
    open_rows = conflicts.filter(pc.equal(conflicts["status"], "open"))
    for kind in open_rows["kind"].to_pylist():
        counts[kind] = counts.get(kind, 0) + 1
    return counts
