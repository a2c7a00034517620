"""Reconciliation assets: links, the review queue, golden records and conflicts (group ``reconciled``).

Everything is Parquet under ``$HUB_HOME/lake/reconciled/``, each file written aside and renamed into
place, so a reader sees the previous table or the new one. The assets run in their own job,
``reconcile`` (hourly at :40, on by default), never inside ``sync_all``: the sync's incremental time is a
target, and reconciliation reads whole tables. Their checks share a pool of one step at a time with
the assets (``reconcile``), so two runs never write the same files.

Checks (one step per asset, as for the canonical tables):
- ``links``: the share of registry mentions linked to a citizen (every civil-status mention, and the
  legal representatives that come with an ID number: variant A names them without papers or birth
  date, too little to link by) stays at or above ``HUB_RECONCILE_MIN_LINK_RATE`` (default 0.9);
  blocking: golden records and conflicts are not rebuilt from links that bad.
- ``review_queue``: the queue stays at or under ``HUB_RECONCILE_MAX_REVIEW_SHARE`` (default 0.05) of
  the mentions; a warning, since the queue is there to be worked through.
- ``golden_persons``/``golden_enterprises``: one golden record per key, every field with a current
  provenance row; blocking.
- ``conflicts``: open conflicts stay at or under ``HUB_RECONCILE_MAX_CONFLICT_RATE`` (default 0.05)
  of the golden records; a warning (a rise says a registry fell behind).
"""

import os
import time
from datetime import datetime, timezone

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hub.config import env_number
from hub.reconcile.conflicts import KINDS, detect_conflicts, merge_history, open_counts
from hub.reconcile.golden import build_golden_enterprises, build_golden_persons, write_parquet
from hub.reconcile.link import Thresholds, review_queue, run_linkage
from pipelines.lake import HubLake
from pipelines.partitions import TIMEZONE
from pipelines.sources import OWNERS, elapsed

GROUP = "reconciled"
POOL = "reconcile"
LINKS = dg.AssetKey([GROUP, "links"])
REVIEW = dg.AssetKey([GROUP, "review_queue"])
PERSONS = dg.AssetKey([GROUP, "golden_persons"])
ENTERPRISES = dg.AssetKey([GROUP, "golden_enterprises"])
CONFLICTS = dg.AssetKey([GROUP, "conflicts"])
REGISTRY_DATASETS = ("civil_events", "enterprises")

FILES = {"links": "links.parquet", "review_queue": "review_queue.parquet", "golden_persons": "golden_persons.parquet",
         "golden_person_fields": "golden_person_fields.parquet", "golden_enterprises": "golden_enterprises.parquet",
         "golden_enterprise_fields": "golden_enterprise_fields.parquet", "conflicts": "conflicts.parquet"}


def limit(name: str, default: float) -> float:
    """A share in [0, 1] from ``name``, else ``default``; anything else is a ConfigError naming it."""
    return env_number(os.environ, name, default, low=0.0, high=1.0)


def path(lake: HubLake, name: str):
    return lake.root / GROUP / FILES[name]


def _read(lake: HubLake, name: str) -> pa.Table:
    target = path(lake, name)
    if not target.exists():
        raise dg.Failure(f"reconciled/{name} has not been built yet ({target})")
    return pq.read_table(target)


def _canonical(lake: HubLake, dataset: str) -> pa.Table:
    with duckdb.connect() as con:
        return con.sql(f"SELECT * FROM {lake.table(dataset).relation()}").to_arrow_table()


def link_rates(links: pa.Table) -> dict[str, float]:
    """Share of mentions linked (bands exact/match), per ``dataset/role``, and over the registries
    (``registries``): every civil-status mention, and every legal representative that comes with an
    ID number. A representative named without ID papers (business variant A gives names only, no birth
    date) has too little to be linked by and is left out of that rate; ``unlinkable_representatives``
    counts them."""
    with duckdb.connect() as con:
        con.register("l", links.select(["dataset", "role", "band", "mention_id_number"]))
        rows = con.execute("""
            SELECT dataset || '/' || role, count(*) FILTER (WHERE band IN ('exact', 'match')) / count(*)
            FROM l GROUP BY ALL ORDER BY 1""").fetchall()
        linked, total, unlinkable = con.execute("""
            SELECT count(*) FILTER (WHERE band IN ('exact', 'match') AND evidence), count(*) FILTER (WHERE evidence),
                   count(*) FILTER (WHERE dataset = 'enterprises' AND NOT evidence)
            FROM (SELECT *, dataset = 'civil_events' OR (dataset = 'enterprises'
                            AND nullif(trim(mention_id_number), '') IS NOT NULL) AS evidence FROM l)""").fetchall()[0]
    rates = {key: float(rate) for key, rate in rows}
    rates["registries"] = linked / total if total else 1.0
    rates["unlinkable_representatives"] = float(unlinkable)
    return rates


def _asset(key: dg.AssetKey, description: str, deps: list, kinds: set[str] | None = None):
    return dg.asset(key=key, group_name=GROUP, description=description, deps=deps, owners=OWNERS,
                    kinds=kinds or {"parquet", "duckdb"}, pool=POOL)


@_asset(LINKS, "Every person a civil-status record, an enterprise or a citizen's record names, linked to the "
               "citizen it is (band exact/match/review/non_match, score, method and explanation; "
               "hub.reconcile.link). Thresholds HUB_LINK_MATCH_THRESHOLD / HUB_LINK_REVIEW_THRESHOLD.",
        deps=[dg.AssetKey(["canonical", d]) for d in ("citizens", "civil_events", "enterprises")])
def links(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
    started = time.monotonic()
    result = run_linkage(_canonical(lake, "citizens"), _canonical(lake, "civil_events"), _canonical(lake, "enterprises"),
                         thresholds=Thresholds.from_env())
    table = result.links
    write_parquet(table, path(lake, "links"))
    bands = {band: int(pc.sum(pc.equal(table["band"], band)).as_py() or 0) for band in ("exact", "match", "review",
                                                                                       "non_match")}
    rates = link_rates(table)
    context.log.info(f"links: {table.num_rows} mentions, {bands}; registry link rate {rates['registries']:.4f}")
    return dg.MaterializeResult(metadata={
        "rows": dg.MetadataValue.int(table.num_rows),
        **{f"band_{b}": dg.MetadataValue.int(n) for b, n in bands.items()},
        "link_rate": dg.MetadataValue.float(rates["registries"]),
        **{f"link_rate/{k}": dg.MetadataValue.float(v) for k, v in rates.items() if "/" in k},
        "representatives_without_id": dg.MetadataValue.int(int(rates["unlinkable_representatives"])),
        "candidate_pairs": dg.MetadataValue.int(result.pairs),
        "match_threshold": dg.MetadataValue.float(result.thresholds.match),
        "review_threshold": dg.MetadataValue.float(result.thresholds.review),
        "seconds": elapsed(started),
        "path": dg.MetadataValue.path(str(path(lake, "links"))),
    })


@_asset(REVIEW, "The links a person must decide (band review), least certain first, each with its runner-up "
                "and explanation.", deps=[LINKS])
def review(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
    started = time.monotonic()
    all_links = _read(lake, "links")
    queue = review_queue(all_links)
    write_parquet(queue, path(lake, "review_queue"))
    by_role = {}
    for key in (f"{d}/{r}" for d, r in zip(queue["dataset"].to_pylist(), queue["role"].to_pylist())):
        by_role[key] = by_role.get(key, 0) + 1
    return dg.MaterializeResult(metadata={
        "rows": dg.MetadataValue.int(queue.num_rows),
        "review_share": dg.MetadataValue.float(queue.num_rows / max(all_links.num_rows, 1)),
        **{f"review/{k}": dg.MetadataValue.int(v) for k, v in sorted(by_role.items())},
        "seconds": elapsed(started),
        "path": dg.MetadataValue.path(str(path(lake, "review_queue"))),
    })


@_asset(PERSONS, "One golden record per citizen (population values, normalised name, 2025 commune keys, linked "
                 "spouse, registered deaths and marriages) and golden_person_fields: every value of every field "
                 "with its source record and validity interval, from every landed population version, plus what "
                 "registered deaths and marriages assert. Disagreements are kept, not overwritten (conflicts).",
        deps=[LINKS, dg.AssetKey(["canonical", "citizens"]), dg.AssetKey(["canonical", "civil_events"])])
def golden_persons(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
    started = time.monotonic()
    versions = lake.committed_files("population", "citizens")[0]
    built = build_golden_persons(_canonical(lake, "citizens"), versions or None, _canonical(lake, "civil_events"),
                                 _read(lake, "links"))
    write_parquet(built.fields, path(lake, "golden_person_fields"))
    write_parquet(built.persons, path(lake, "golden_persons"))
    status = {s: int(pc.sum(pc.equal(built.persons["status"], s)).as_py() or 0) for s in ("alive", "dead", "missing")}
    return dg.MaterializeResult(metadata={
        "rows": dg.MetadataValue.int(built.persons.num_rows),
        "field_rows": dg.MetadataValue.int(built.fields.num_rows),
        "versions": dg.MetadataValue.int(built.versions),
        "asserted_by_events": dg.MetadataValue.int(int(pc.sum(pc.invert(built.fields["golden"])).as_py() or 0)),
        **{f"status_{k}": dg.MetadataValue.int(v) for k, v in status.items()},
        "seconds": elapsed(started),
        "path": dg.MetadataValue.path(str(path(lake, "golden_persons"))),
        "fields_path": dg.MetadataValue.path(str(path(lake, "golden_person_fields"))),
    })


@_asset(ENTERPRISES, "One golden record per enterprise code (the business registry's latest version) with its "
                     "legal representatives linked to citizens, and golden_enterprise_fields: every value of every "
                     "field with its source and validity interval, from every landed version.",
        deps=[LINKS, dg.AssetKey(["canonical", "enterprises"])])
def golden_enterprises(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
    started = time.monotonic()
    versions = lake.committed_files("business", "enterprises")[0]
    built = build_golden_enterprises(_canonical(lake, "enterprises"), versions or None, _read(lake, "links"))
    write_parquet(built.fields, path(lake, "golden_enterprise_fields"))
    write_parquet(built.enterprises, path(lake, "golden_enterprises"))
    reps = pc.list_flatten(built.enterprises["legal_representatives"])
    linked = int(pc.sum(pc.is_valid(pc.struct_field(reps, "personal_id"))).as_py() or 0) if len(reps) else 0
    return dg.MaterializeResult(metadata={
        "rows": dg.MetadataValue.int(built.enterprises.num_rows),
        "field_rows": dg.MetadataValue.int(built.fields.num_rows),
        "versions": dg.MetadataValue.int(built.versions),
        "representatives": dg.MetadataValue.int(len(reps)),
        "representatives_linked": dg.MetadataValue.int(linked),
        "seconds": elapsed(started),
        "path": dg.MetadataValue.path(str(path(lake, "golden_enterprises"))),
        "fields_path": dg.MetadataValue.path(str(path(lake, "golden_enterprise_fields"))),
    })


@_asset(CONFLICTS, "Every disagreement between the registries (a death or a marriage registered but not in the "
                   "population record, a representative's name against the population's, a resident who moved "
                   "out), with each system's value and record; stable ids, first/last seen, and resolved "
                   "conflicts kept as resolved (hub.reconcile.conflicts).",
        deps=[PERSONS, ENTERPRISES, LINKS, dg.AssetKey(["canonical", "civil_events"])])
def conflicts(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
    started = time.monotonic()
    now = datetime.now(timezone.utc)
    found = detect_conflicts(_read(lake, "golden_persons"), _read(lake, "golden_enterprises"), _read(lake, "links"),
                             _canonical(lake, "civil_events"), detected_at=now)
    target = path(lake, "conflicts")
    merged = merge_history(found, target, now)
    write_parquet(merged, target)
    counts = open_counts(merged)
    subjects = pq.read_metadata(path(lake, "golden_persons")).num_rows + \
        pq.read_metadata(path(lake, "golden_enterprises")).num_rows
    opened = sum(counts.values())
    resolved = int(pc.sum(pc.equal(merged["status"], "resolved")).as_py() or 0)
    context.log.info(f"conflicts: {opened} open ({counts}), {resolved} resolved")
    return dg.MaterializeResult(metadata={
        "rows": dg.MetadataValue.int(merged.num_rows),
        "open": dg.MetadataValue.int(opened),
        "resolved": dg.MetadataValue.int(resolved),
        "conflict_rate": dg.MetadataValue.float(opened / max(subjects, 1)),
        **{f"open/{kind}": dg.MetadataValue.int(counts.get(kind, 0)) for kind in KINDS},
        "seconds": elapsed(started),
        "path": dg.MetadataValue.path(str(target)),
    })


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

def check_link_rate(lake: HubLake) -> tuple[bool, dict]:
    minimum = limit("HUB_RECONCILE_MIN_LINK_RATE", 0.9)
    rates = link_rates(_read(lake, "links"))
    worst = min(((k, v) for k, v in rates.items() if k.split("/")[0] in REGISTRY_DATASETS), key=lambda kv: kv[1],
                default=("-", 1.0))
    return rates["registries"] >= minimum, {"link_rate": rates["registries"], "minimum": minimum,
                                            "lowest_role": worst[0], "lowest_role_rate": worst[1],
                                            "representatives_without_id": int(rates["unlinkable_representatives"])}


def check_review_share(lake: HubLake) -> tuple[bool, dict]:
    maximum = limit("HUB_RECONCILE_MAX_REVIEW_SHARE", 0.05)
    queue = pq.read_metadata(path(lake, "review_queue")).num_rows
    mentions = pq.read_metadata(path(lake, "links")).num_rows
    share = queue / max(mentions, 1)
    return share <= maximum, {"review_queue": queue, "mentions": mentions, "share": share, "maximum": maximum}


def check_one_per_key(table: str, key: str, canonical: str):
    def check(lake: HubLake) -> tuple[bool, dict]:
        golden = path(lake, table)
        with duckdb.connect() as con:
            rows, distinct = con.execute(f"SELECT count(*), count(DISTINCT {key}) FROM read_parquet(?)",
                                         [str(golden)]).fetchall()[0]
            expected = con.execute(f"SELECT count(DISTINCT {key}) FROM {lake.table(canonical).relation()}").fetchall()[0][0]
        return rows == distinct == expected, {"rows": rows, "distinct_keys": distinct, "canonical_keys": expected}
    check.__name__ = f"one_{table}_per_key"
    return check


def check_provenance(table: str, fields: str, key: str):
    def check(lake: HubLake) -> tuple[bool, dict]:
        with duckdb.connect() as con:
            missing = con.execute(f"""
                SELECT count(*) FROM read_parquet(?) g WHERE NOT EXISTS (
                    SELECT 1 FROM read_parquet(?) f WHERE f.{key} = g.{key} AND f.golden AND f.valid_to IS NULL)""",
                                  [str(path(lake, table)), str(path(lake, fields))]).fetchall()[0][0]
        return missing == 0, {"records_without_provenance": missing}
    check.__name__ = "current_values_have_provenance"
    return check


def check_conflict_rate(lake: HubLake) -> tuple[bool, dict]:
    maximum = limit("HUB_RECONCILE_MAX_CONFLICT_RATE", 0.05)
    table = _read(lake, "conflicts")
    counts = open_counts(table)
    subjects = pq.read_metadata(path(lake, "golden_persons")).num_rows + \
        pq.read_metadata(path(lake, "golden_enterprises")).num_rows
    rate = sum(counts.values()) / max(subjects, 1)
    return rate <= maximum, {"open": sum(counts.values()), "subjects": subjects, "rate": rate, "maximum": maximum,
                             **{f"open/{k}": v for k, v in counts.items()}}


CHECKS = {
    LINKS: [(check_link_rate, "Registry mentions linked (exact/match) ≥ HUB_RECONCILE_MIN_LINK_RATE (default 0.9).",
             True)],
    REVIEW: [(check_review_share, "Review queue ≤ HUB_RECONCILE_MAX_REVIEW_SHARE (default 0.05) of the mentions.",
              False)],
    PERSONS: [(check_one_per_key("golden_persons", "personal_id", "citizens"),
               "Exactly one golden person per citizen of the canonical table.", True),
              (check_provenance("golden_persons", "golden_person_fields", "personal_id"),
               "Every golden person has current provenance rows.", True)],
    ENTERPRISES: [(check_one_per_key("golden_enterprises", "enterprise_code", "enterprises"),
                   "Exactly one golden enterprise per enterprise code of the canonical table.", True),
                  (check_provenance("golden_enterprises", "golden_enterprise_fields", "enterprise_code"),
                   "Every golden enterprise has current provenance rows.", True)],
    CONFLICTS: [(check_conflict_rate, "Open conflicts ≤ HUB_RECONCILE_MAX_CONFLICT_RATE (default 0.05) of the "
                                      "golden records.", False)],
}


def checks_for(asset: dg.AssetKey) -> dg.AssetChecksDefinition:
    checks = CHECKS[asset]

    @dg.multi_asset_check(
        name=f"{asset.path[-1]}_checks",
        specs=[dg.AssetCheckSpec(check.__name__, asset=asset, description=text, blocking=blocking)
               for check, text, blocking in checks],
        can_subset=True,
    )
    def evaluate(context: dg.AssetCheckExecutionContext, lake: HubLake):
        for check, _, blocking in checks:
            if dg.AssetCheckKey(asset, check.__name__) not in context.selected_asset_check_keys:
                continue
            try:
                passed, metadata = check(lake)
            except Exception as exc:  # an unreadable table fails its checks, saying why
                passed, metadata = False, {"error": f"{type(exc).__name__}: {exc}"}
            yield dg.AssetCheckResult(asset_key=asset, check_name=check.__name__, passed=passed, metadata=metadata,
                                      severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN)

    return evaluate


reconcile_assets = [links, review, golden_persons, golden_enterprises, conflicts]
reconcile_checks = [checks_for(asset) for asset in CHECKS]

reconcile_job = dg.define_asset_job(
    "reconcile", selection=dg.AssetSelection.groups(GROUP),
    description="Link every mention to its citizen, rebuild the golden records and their history, and recompute "
                "the conflicts (with their checks), from the canonical tables as they are.")

hourly_reconcile = dg.ScheduleDefinition(
    name="hourly_reconcile", job=reconcile_job, cron_schedule="40 * * * *", execution_timezone=TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly at :40, after the :20 sync: reconcile what the canonical tables hold.")
