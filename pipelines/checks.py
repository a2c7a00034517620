"""Asset checks next to the canonical tables; all are blocking: any failure stops publishing.

- the table's schema is the canonical one (drift from ``schemas/canonical`` is caught before serving);
- keys are unique;
- identifiers are valid (personal IDs' structure, enterprise check digits, dossier codes' form);
- the share of quarantined records stays under ``HUB_QUARANTINE_MAX_RATE`` (default 2 %);
- the synchronised population copy is legally valid: Decree 47/2020 Art. 41, 24 hours after the
  server time of the last complete pass (``national-systems.md`` §1.3). An expired copy fails visibly.

The checks of one table are evaluated in one step (a ``multi_asset_check``): each step costs the
instance a dozen event writes, more than the checks themselves take on an incremental sync. Each
check is still its own check in the UI, with its own history, and can be run on its own. A check
that cannot be evaluated (the table is unreadable) fails with the reason rather than vanishing.
"""

import os
from datetime import datetime, timedelta, timezone
from typing import Callable

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
    # Circular 01/2018 Art. 19 in shape; the connector has already checked the date part.
    "dossiers": ("dossier_code", r"regexp_full_match(dossier_code, '\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}-\d{6}-\d{4}')"),
}
Verdict = tuple[bool, dict]  # passed, metadata


def schema_matches(lake: HubLake, system: str) -> Verdict:
    spec = DATASETS[system]
    table = lake.table(spec.DATASET)
    expected = {f.name: f.type for f in spec.SCHEMA}
    missing, extra, changed = set(), set(), set()
    for path in table.paths(table.committed()):  # the base and every live change
        actual = {f.name: f.type for f in pq.read_schema(path)}
        missing |= set(expected) - set(actual)
        extra |= set(actual) - set(expected)
        changed |= {n for n in set(expected) & set(actual) if expected[n] != actual[n]}
    return not (missing or extra or changed), {
        "missing": ", ".join(sorted(missing)) or "-", "unexpected": ", ".join(sorted(extra)) or "-",
        "type_changed": ", ".join(sorted(changed)) or "-"}


def keys_unique(lake: HubLake, system: str) -> Verdict:
    spec = DATASETS[system]
    keys = ", ".join(spec.KEY)
    with duckdb.connect() as con:
        rows, distinct = con.execute(
            f"SELECT count(*), count(DISTINCT ({keys})) FROM {lake.table(spec.DATASET).relation()}").fetchone()
    return rows == distinct, {"rows": rows, "duplicates": rows - distinct}


def identifiers_valid(lake: HubLake, system: str) -> Verdict:
    spec = DATASETS[system]
    relation = lake.table(spec.DATASET).relation()
    with duckdb.connect() as con:
        if spec.DATASET == "enterprises":
            codes = [row[0] for row in con.execute(f"SELECT enterprise_code FROM {relation}").fetchall()]
            bad = [c for c in codes if enterprise_code_problem(c or "")]
            total, invalid, examples = len(codes), len(bad), bad[:5]
        else:
            column, valid = ID_RULES[spec.DATASET]
            total, invalid = con.execute(
                f"SELECT count(*), count(*) FILTER (WHERE NOT coalesce({valid}, false)) FROM {relation}").fetchone()
            examples = [r[0] for r in con.execute(
                f"SELECT {column} FROM {relation} WHERE NOT coalesce({valid}, false) LIMIT 5").fetchall()]
    return not invalid, {"rows": total, "invalid": invalid, "examples": ", ".join(map(str, examples)) or "-"}


def quarantine_rate(lake: HubLake, system: str) -> Verdict:
    limit = float(os.environ.get("HUB_QUARANTINE_MAX_RATE", "0.02"))
    records, quarantined = lake.committed_files(system, DATASETS[system].DATASET)
    refused = sum(pq.read_metadata(f).num_rows for f in quarantined)
    total = refused + sum(pq.read_metadata(f).num_rows for f in records)
    rate = refused / total if total else 0.0
    return rate <= limit, {"quarantined": refused, "landed": total, "rate": rate, "limit": limit,
                           "columns": ", ".join(QUARANTINE_SCHEMA.names)}


def copy_is_legally_valid(lake: HubLake, system: str) -> Verdict:
    state = load_state(lake.landing(system) / "state.json", system, DATASETS[system].DATASET)
    since = (state.get("cursor") or {}).get("since")
    if not since or since == os.environ.get("HUB_POPULATION_SINCE", EVERYTHING):
        # Until a first pass completes, the cursor still holds the configured starting point.
        return False, {"reason": "no complete synchronisation pass yet"}
    as_of = datetime.strptime(since, COMPACT).replace(tzinfo=VN_TZ)
    valid_until = as_of + COPY_VALIDITY
    now = datetime.now(timezone.utc)
    return now <= valid_until, {"data_as_of": as_of.isoformat(), "valid_until": valid_until.isoformat(),
                                "hours_left": round((valid_until - now).total_seconds() / 3600, 2)}


Check = Callable[[HubLake, str], Verdict]


def checks_of(system: str) -> list[tuple[Check, str]]:
    """The checks of ``system``'s canonical table, each with its description."""
    spec = DATASETS[system]
    checks: list[tuple[Check, str]] = [
        (schema_matches, "The table's columns and types are those of schemas/canonical."),
        (keys_unique, f"No two rows share ({', '.join(spec.KEY)})."),
        (quarantine_rate, "Quarantined records stay under HUB_QUARANTINE_MAX_RATE (default 0.02) of all landed."),
    ]
    if spec.DATASET in ID_RULES or spec.DATASET == "enterprises":
        checks.append((identifiers_valid, "Every key is a well-formed identifier (structure, check digit)."))
    if system == "population":
        checks.append((copy_is_legally_valid,
                       "Decree 47/2020 Art. 41: the synchronised copy is valid for 24 h after the server time "
                       "(ThoiDiemDuLieu) of the last complete DongBoCongDan pass. An expired copy blocks publishing."))
    return checks


def table_checks(system: str) -> dg.AssetChecksDefinition:
    asset = dg.AssetKey(["canonical", DATASETS[system].DATASET])
    checks = checks_of(system)

    @dg.multi_asset_check(
        name=f"{DATASETS[system].DATASET}_checks",
        specs=[dg.AssetCheckSpec(check.__name__, asset=asset, description=text, blocking=True)
               for check, text in checks],
        can_subset=True,
    )
    def evaluate(context: dg.AssetCheckExecutionContext, lake: HubLake):
        for check, _ in checks:
            if dg.AssetCheckKey(asset, check.__name__) not in context.selected_asset_check_keys:
                continue
            try:
                passed, metadata = check(lake, system)
            except Exception as exc:  # an unreadable table fails its checks, saying why
                passed, metadata = False, {"error": f"{type(exc).__name__}: {exc}"}
            yield dg.AssetCheckResult(asset_key=asset, check_name=check.__name__, passed=passed, metadata=metadata)

    return evaluate


asset_checks = [table_checks(system) for system in SYSTEMS]
