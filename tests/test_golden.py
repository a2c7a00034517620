"""Golden records and conflicts against the sandbox's ground truth, on small provinces pulled through the
real connectors: one record per citizen and enterprise, provenance and history for every field, every
injected registry disagreement surfaced as a conflict, and nothing overwritten silently."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from hub.reconcile.conflicts import CONFLICT_SCHEMA, KINDS, detect_conflicts, merge_history
from hub.reconcile.golden import (ENTERPRISE_FIELDS, PERSON_FIELDS, GoldenEnterprises, GoldenPersons,
                                  build_golden_enterprises, build_golden_persons)
from hub.reconcile.link import Thresholds, link
from hub.reconcile.quality import score_conflicts
from sandbox.faults import FaultPlan
from tests.conftest import start_sandbox
from tests.reconcile_helpers import RAISED_CONFLICT_FAULTS, Province, extract, extract_province, province_paths

pytestmark = pytest.mark.timeout(300)


@dataclass
class Reconciled:
    province: Province
    links: pa.Table
    persons: GoldenPersons
    enterprises: GoldenEnterprises
    conflicts: pa.Table


def reconcile(p: Province, detected_at: datetime | None = None) -> Reconciled:
    links = link(p.citizens, p.civil, p.enterprises, thresholds=Thresholds())
    persons = build_golden_persons(p.citizens, p.population_parts(), p.civil, links)
    enterprises = build_golden_enterprises(p.enterprises, p.business_parts(), links)
    conflicts = detect_conflicts(persons.persons, enterprises.enterprises, links, p.civil, province="31",
                                 detected_at=detected_at)
    return Reconciled(p, links, persons, enterprises, conflicts)


@pytest.fixture(scope="module")
def default(tmp_path_factory) -> Reconciled:
    return reconcile(extract_province(tmp_path_factory.mktemp("golden-default"), residents=4_000, seed=11))


@pytest.fixture(scope="module")
def raised(tmp_path_factory) -> Reconciled:
    return reconcile(extract_province(tmp_path_factory.mktemp("golden-raised"), residents=4_000, seed=12,
                                      data_faults=RAISED_CONFLICT_FAULTS))


def sql(query: str, **tables: pa.Table) -> list[tuple]:
    with duckdb.connect() as con:
        for name, table in tables.items():
            con.register(name, table)
        return con.execute(query).fetchall()


# -- golden records ------------------------------------------------------------------------------------

def test_one_golden_person_per_citizen_with_provenance_for_every_field(default: Reconciled) -> None:
    persons, fields = default.persons.persons, default.persons.fields
    citizens = pq.read_table(default.province.citizens, columns=["personal_id"])
    assert persons.num_rows == citizens.num_rows == len(set(persons["personal_id"].to_pylist()))
    assert set(persons["personal_id"].to_pylist()) == set(citizens["personal_id"].to_pylist())
    # Every field of every person has exactly one current golden row, and it is the golden value.
    current = fields.filter(pc.and_(fields["golden"], pc.is_null(fields["valid_to"])))
    assert current.num_rows == persons.num_rows * len(PERSON_FIELDS)
    assert set(current["source_system"].to_pylist()) == {"population"}
    assert pc.all(pc.is_valid(current["source_request_id"])).as_py()
    mismatched = sql("""
        SELECT count(*) FROM cur c JOIN persons p USING (personal_id)
        WHERE (c.field = 'status' AND c.value IS DISTINCT FROM p.status)
           OR (c.field = 'name' AND c.value IS DISTINCT FROM p.name)
           OR (c.field = 'marital_status' AND c.value IS DISTINCT FROM CAST(p.marital_status AS VARCHAR))
           OR (c.field = 'permanent_unit_key' AND c.value IS DISTINCT FROM p.permanent_unit_key)
           OR (c.field = 'birth_date' AND c.value IS DISTINCT FROM CAST(p.birth_date AS VARCHAR))""",
                     cur=current, persons=persons)[0][0]
    assert mismatched == 0
    # The normalised name undoes the population's representation faults (upper case, NFD, all in Ten).
    assert pc.all(pc.is_valid(persons["name"])).as_py()
    assert persons["name"].to_pylist() != persons["name_served"].to_pylist()


def test_history_intervals_are_contiguous_and_never_overlap(default: Reconciled) -> None:
    fields = default.persons.fields.filter(default.persons.fields["golden"])
    bad = sql("""
        WITH f AS (SELECT personal_id, field, valid_from, valid_to,
                          lead(valid_from) OVER (PARTITION BY personal_id, field ORDER BY valid_from) AS next_from,
                          lag(value) OVER (PARTITION BY personal_id, field ORDER BY valid_from) AS previous_value,
                          row_number() OVER (PARTITION BY personal_id, field ORDER BY valid_from) AS n, value
                   FROM fields)
        SELECT count(*) FILTER (WHERE valid_to IS DISTINCT FROM next_from),
               count(*) FILTER (WHERE valid_to IS NOT NULL AND valid_to <= valid_from),
               count(*) FILTER (WHERE n > 1 AND previous_value IS NOT DISTINCT FROM value)
        FROM f""", fields=fields)[0]
    assert bad == (0, 0, 0), "valid_to is the next interval's valid_from, intervals are non-empty, runs merged"
    # Registered deaths and marriages are kept beside the population's values, with their own records.
    events = default.persons.fields.filter(pc.invert(default.persons.fields["golden"]))
    assert events.num_rows > 0
    assert set(events["source_system"].to_pylist()) == {"civil"}
    assert all(key.startswith(("KT/", "KH/")) for key in events["source_record_key"].to_pylist())


def test_one_golden_enterprise_per_code_with_linked_representatives(default: Reconciled) -> None:
    golden, fields = default.enterprises.enterprises, default.enterprises.fields
    codes = pq.read_table(default.province.enterprises, columns=["enterprise_code"])["enterprise_code"].to_pylist()
    assert golden.num_rows == len(set(codes)) == len(set(golden["enterprise_code"].to_pylist()))
    current = fields.filter(pc.is_null(fields["valid_to"]))
    assert current.num_rows == golden.num_rows * len(ENTERPRISE_FIELDS)
    assert default.enterprises.versions >= golden.num_rows
    reps = pc.list_flatten(golden["legal_representatives"]).to_pylist()
    assert reps and sum(r["personal_id"] is not None for r in reps) / len(reps) >= 0.95
    citizens = set(default.persons.persons["personal_id"].to_pylist())
    assert all(r["personal_id"] in citizens for r in reps if r["personal_id"])


@pytest.fixture(scope="module")
def changed_resident(tmp_path_factory) -> tuple[Province, str, GoldenPersons]:
    """A resident who moves within the province after a first pull; the second pull lands the new version."""
    out = tmp_path_factory.mktemp("golden-change")
    with start_sandbox(residents=1_500, seed=21, faults=FaultPlan(), rate_limit=0) as sb:
        extract(sb, out, ("population",))
        r = sb.sandbox.residents
        pid = int(np.flatnonzero((r.moved_to < 0) & (r.status == 0))[0])
        r.residence[pid] = (int(r.residence[pid]) + 7) % len(r.units)
        sb.sandbox.population.registry.touch(pid)
        extract(sb, out, ("population",))
        province = province_paths(out, dict(sb.env))
        personal_id = f"{int(r.personal_id[pid]):012d}"
    return province, personal_id, build_golden_persons(province.citizens, province.population_parts())


def test_a_changed_resident_gets_a_new_interval(changed_resident) -> None:
    province, personal_id, golden = changed_resident
    assert len(province.population_parts()) >= 2
    mine = golden.fields.filter(pc.equal(golden.fields["personal_id"], personal_id))
    residence = mine.filter(pc.equal(mine["field"], "permanent_address")).sort_by("valid_from").to_pylist()
    assert len(residence) == 2
    old, new = residence
    assert old["value"] != new["value"]
    assert old["valid_to"] == new["valid_from"] and new["valid_to"] is None
    assert old["source_request_id"] != new["source_request_id"]
    # A field that did not change keeps one interval across both versions.
    assert len(mine.filter(pc.equal(mine["field"], "birth_date"))) == 1
    person = golden.persons.filter(pc.equal(golden.persons["personal_id"], personal_id)).to_pylist()[0]
    assert person["permanent_address"] == new["value"]


# -- conflicts -----------------------------------------------------------------------------------------

def test_default_faults_every_injected_disagreement_is_a_conflict(default: Reconciled) -> None:
    quality = score_conflicts(default.conflicts, default.province.truth)
    assert quality.injected >= 20, quality.summary()
    assert quality.recall >= 0.99, (quality.summary(), quality.missed.to_pylist())
    assert quality.precision >= 0.95, (quality.summary(), quality.false.to_pylist())
    assert default.conflicts.schema.equals(CONFLICT_SCHEMA)


def test_raised_faults_every_injected_disagreement_is_a_conflict(raised: Reconciled) -> None:
    quality = score_conflicts(raised.conflicts, raised.province.truth)
    by_kind = {row["kind"]: row for row in quality.by_kind}
    assert set(by_kind) == set(KINDS)
    assert all(row["injected"] >= 10 for row in by_kind.values()), quality.summary()
    assert quality.recall >= 0.99, (quality.summary(), quality.missed.to_pylist())
    assert quality.precision >= 0.95, (quality.summary(), quality.false.to_pylist())
    # Representation and ID-number faults (NFD, upper case, typos, CMNDs) are never conflicts.
    assert set(raised.conflicts["kind"].to_pylist()) <= set(KINDS)


def test_a_death_conflict_keeps_the_population_value_and_both_sides(raised: Reconciled) -> None:
    deaths = raised.conflicts.filter(pc.equal(raised.conflicts["kind"], "death_not_in_population")).to_pylist()
    assert deaths
    persons = {row["personal_id"]: row for row in raised.persons.persons.to_pylist()}
    for conflict in deaths:
        person = persons[conflict["subject_key"]]
        assert person["status"] != "dead", "the golden record keeps the population's status"
        assert conflict["golden_value"] == person["status"]
        said = {(v["system"], v["field"]): v for v in conflict["values"]}
        assert said[("population", "status")]["value"] == person["status"]
        assert said[("civil", "status")]["value"] == "dead"
        assert said[("civil", "status")]["record_key"].startswith("KT/")
        assert conflict["subject_key"] in conflict["explanation"]
        # The registered death stays in the person's history, with its record, beside the population's value.
        assert conflict["subject_key"] in {r["personal_id"] for r in raised.persons.fields.filter(
            pc.and_(pc.equal(raised.persons.fields["field"], "status"),
                    pc.invert(raised.persons.fields["golden"]))).to_pylist()}


def test_conflict_ids_are_stable_and_resolved_conflicts_are_kept(raised: Reconciled) -> None:
    first_at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    later = first_at + timedelta(hours=1)
    first = merge_history(raised.conflicts, None)
    again = reconcile(raised.province, detected_at=later).conflicts
    assert sorted(again["conflict_id"].to_pylist()) == sorted(first["conflict_id"].to_pylist())
    assert len(set(again["conflict_id"].to_pylist())) == again.num_rows
    # One conflict disappears (its registry caught up): it is marked resolved, not deleted.
    gone = first["conflict_id"][0].as_py()
    remaining = again.filter(pc.not_equal(again["conflict_id"], gone))
    merged = merge_history(remaining, first, later)
    assert merged.num_rows == first.num_rows
    rows = {row["conflict_id"]: row for row in merged.to_pylist()}
    assert rows[gone]["status"] == "resolved" and rows[gone]["resolved_at"] == later
    kept = next(k for k in rows if k != gone)
    assert rows[kept]["status"] == "open" and rows[kept]["last_seen"] == later
    assert rows[kept]["first_seen"] == first.filter(pc.equal(first["conflict_id"], kept))["first_seen"][0].as_py()
    # It comes back: open again, first seen when it first was.
    back = merge_history(again, merged, later + timedelta(hours=1))
    row = back.filter(pc.equal(back["conflict_id"], gone)).to_pylist()[0]
    assert row["status"] == "open" and row["resolved_at"] is None
