"""Asset checks next to the canonical tables; the blocking ones stop publishing when they fail.

- the table's schema is the canonical one (drift from ``schemas/canonical`` is caught before serving);
- keys are unique;
- identifiers are valid (personal IDs' structure, enterprise check digits);
- the share of quarantined records stays under ``HUB_QUARANTINE_MAX_RATE`` (default 2 %);
- the synchronised population copy is legally valid: Decree 47/2020 Art. 41, 24 hours after the
  server time of the last complete pass (``national-systems.md`` §1.3). An expired copy fails visibly.
"""

import os
from datetime import datetime, timedelta, timezone

import dagster as dg
import duckdb
import pyarrow.parquet as pq

from connectors.extract import load_state
from connectors.population import EVERYTHING
from pipelines.lake import HubLake
from pipelines.sources import SYSTEMS
from schemas.canonical import QUARANTINE_SCHEMA
from schemas.canonical.registry import DATASETS
from schemas.identifiers import enterprise_code_problem
from schemas.timefmt import COMPACT, VN_TZ

COPY_VALIDITY = timedelta(hours=24)
ID_RULES = {  # dataset → (column, SQL predicate that a valid value satisfies)
    "citizens": ("personal_id", r"regexp_full_match(personal_id, '(0\d[1-9]|0[1-9]\d|[1-9]\d\d)[0-5]\d{8}')"),
    "civil_events": ("record_id", "record_id IS NOT NULL AND module IN ('KS', 'KT', 'KH')"),
    "documents": ("doc_id", "length(doc_id) > 0"),
}


def _table(lake: HubLake, dataset: str):
    return lake.canonical / f"{dataset}.parquet"


def checks_for(system: str) -> list[dg.AssetChecksDefinition]:
    spec = DATASETS[system]
    asset = dg.AssetKey(["canonical", spec.DATASET])

    @dg.asset_check(asset=asset, name="schema_matches", blocking=True,
                    description="The table's columns and types are those of schemas/canonical.")
    def schema_matches(lake: HubLake) -> dg.AssetCheckResult:
        found = pq.read_schema(_table(lake, spec.DATASET))
        expected = {f.name: f.type for f in spec.SCHEMA}
        actual = {f.name: f.type for f in found}
        missing = sorted(set(expected) - set(actual))
        extra = sorted(set(actual) - set(expected))
        changed = sorted(n for n in set(expected) & set(actual) if expected[n] != actual[n])
        return dg.AssetCheckResult(passed=not (missing or extra or changed), metadata={
            "missing": ", ".join(missing) or "-", "unexpected": ", ".join(extra) or "-",
            "type_changed": ", ".join(changed) or "-"})

    @dg.asset_check(asset=asset, name="keys_unique", blocking=True,
                    description=f"No two rows share ({', '.join(spec.KEY)}).")
    def keys_unique(lake: HubLake) -> dg.AssetCheckResult:
        keys = ", ".join(spec.KEY)
        with duckdb.connect() as con:
            rows, distinct = con.execute(
                f"SELECT count(*), count(DISTINCT ({keys})) FROM read_parquet(?)", [str(_table(lake, spec.DATASET))]
            ).fetchone()
        return dg.AssetCheckResult(passed=rows == distinct, metadata={"rows": rows, "duplicates": rows - distinct})

    @dg.asset_check(asset=asset, name="identifiers_valid", blocking=True,
                    description="Every key is a well-formed identifier (structure, check digit).")
    def identifiers_valid(lake: HubLake) -> dg.AssetCheckResult:
        path = str(_table(lake, spec.DATASET))
        if spec.DATASET == "enterprises":
            codes = pq.read_table(path, columns=["enterprise_code"])["enterprise_code"].to_pylist()
            bad = [c for c in codes if enterprise_code_problem(c or "")]
            total, examples = len(codes), bad[:5]
        else:
            column, valid = ID_RULES[spec.DATASET]
            with duckdb.connect() as con:
                total, invalid = con.execute(
                    f"SELECT count(*), count(*) FILTER (WHERE NOT coalesce({valid}, false)) FROM read_parquet(?)",
                    [path]).fetchone()
                examples = [r[0] for r in con.execute(
                    f"SELECT {column} FROM read_parquet(?) WHERE NOT coalesce({valid}, false) LIMIT 5", [path]).fetchall()]
            bad = [None] * invalid
        return dg.AssetCheckResult(passed=not bad, metadata={
            "rows": total, "invalid": len(bad), "examples": ", ".join(map(str, examples)) or "-"})

    @dg.asset_check(asset=asset, name="quarantine_rate", blocking=True,
                    description="Quarantined records stay under HUB_QUARANTINE_MAX_RATE (default 0.02) of all landed.")
    def quarantine_rate(lake: HubLake) -> dg.AssetCheckResult:
        limit = float(os.environ.get("HUB_QUARANTINE_MAX_RATE", "0.02"))
        records, quarantined = lake.committed_files(system, spec.DATASET)
        refused = sum(pq.read_metadata(f).num_rows for f in quarantined)
        total = refused + sum(pq.read_metadata(f).num_rows for f in records)
        rate = refused / total if total else 0.0
        return dg.AssetCheckResult(passed=rate <= limit, metadata={
            "quarantined": refused, "landed": total, "rate": rate, "limit": limit,
            "columns": ", ".join(QUARANTINE_SCHEMA.names)})

    checks = [schema_matches, keys_unique, quarantine_rate]
    if spec.DATASET in ID_RULES or spec.DATASET == "enterprises":
        checks.append(identifiers_valid)
    return checks


@dg.asset_check(asset=dg.AssetKey(["canonical", "citizens"]), name="copy_is_legally_valid", blocking=True,
                description="Decree 47/2020 Art. 41: the synchronised copy is valid for 24 h after the server time "
                            "(ThoiDiemDuLieu) of the last complete DongBoCongDan pass. An expired copy blocks publishing.")
def copy_is_legally_valid(lake: HubLake) -> dg.AssetCheckResult:
    state = load_state(lake.landing("population") / "state.json", "population", "citizens")
    since = (state.get("cursor") or {}).get("since")
    if not since or since == os.environ.get("HUB_POPULATION_SINCE", EVERYTHING):
        # Until a first pass completes, the cursor still holds the configured starting point.
        return dg.AssetCheckResult(passed=False, metadata={"reason": "no complete synchronisation pass yet"})
    as_of = datetime.strptime(since, COMPACT).replace(tzinfo=VN_TZ)
    valid_until = as_of + COPY_VALIDITY
    now = datetime.now(timezone.utc)
    return dg.AssetCheckResult(passed=now <= valid_until, metadata={
        "data_as_of": as_of.isoformat(), "valid_until": valid_until.isoformat(),
        "hours_left": round((valid_until - now).total_seconds() / 3600, 2)})


asset_checks = [check for system in SYSTEMS for check in checks_for(system)] + [copy_is_legally_valid]
