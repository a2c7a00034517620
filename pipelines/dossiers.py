"""The one-stop-shop dossiers after they land: reporting to the national portal, applicant checks,
service measures (groups ``portal`` and ``dossiers``).

- ``portal/report`` brings the national portal level with ``canonical/dossiers``
  (:func:`hub.portal_report.report_pass`; ``hub report portal`` runs the same pass from a shell). Its
  state is ``$HUB_HOME/portal/state.sqlite``. Metadata: what was sent, refused, settled by look-up.
- ``dossiers/applicant_flags``: dossiers whose applicant the hub's citizens or enterprises do not know,
  or know by another name (:func:`hub.dossiers.applicant_flags`), for the agencies to look at.
- ``dossiers/service_measures`` (per agency and month) and ``dossiers/procedure_times`` (per procedure):
  the province's service measures. The current month's figures per agency are numeric metadata, which
  the UI plots run over run.

Checks: ``systems_reporting`` fails for a configured one-stop-shop system whose newest change is older
than ``HUB_ONESTOP_SILENT_HOURS`` (default 24) or that has no dossier at all; ``late_share_jump`` fails
when an agency's share of late dossiers this month exceeds the mean of its three months before by more
than ``HUB_DOSSIERS_LATE_JUMP`` (default 0.15). Both are errors an operator sees, not blocking: the
measures stay readable.

All of it runs in the ``dossiers`` job (hourly at :30, after the sync at :20), not in ``sync_all``:
reporting waits on the portal and measures read the whole table.
"""

import os
import time
from datetime import datetime

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hub.config import ConfigError, Settings, env_number
from hub.dossiers import FLAGS, applicant_flags, procedure_times, service_measures
from hub.portal_report import ReportError, report_pass, rows_to_report
from hub.reconcile.golden import write_parquet
from pipelines.lake import HubLake
from pipelines.partitions import TIMEZONE
from pipelines.sources import OWNERS, elapsed
from schemas import timefmt

GROUP = "dossiers"
CANONICAL = dg.AssetKey(["canonical", "dossiers"])
REPORT = dg.AssetKey(["portal", "report"])
FLAGGED = dg.AssetKey([GROUP, "applicant_flags"])
MEASURES = dg.AssetKey([GROUP, "service_measures"])
TIMES = dg.AssetKey([GROUP, "procedure_times"])
MIN_RESOLVED = 20
FILES = {"applicant_flags": "applicant_flags.parquet", "service_measures": "service_measures.parquet",
         "procedure_times": "procedure_times.parquet"}


def output(lake: HubLake, name: str):
    return lake.root / GROUP / FILES[name]


def state_path(lake: HubLake):
    return lake.root.parent / "portal" / "state.sqlite"


def _dossiers_relation(lake: HubLake) -> str:
    return lake.table("dossiers").relation()


def _markdown(table: pa.Table, limit: int = 40) -> dg.MetadataValue:
    columns = table.column_names
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table.slice(0, limit).to_pylist():
        lines.append("| " + " | ".join(_cell(row[c]) for c in columns) + " |")
    if table.num_rows > limit:
        lines.append(f"\n… {table.num_rows - limit} more rows in the Parquet file")
    return dg.MetadataValue.md("\n".join(lines))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value).replace("|", "\\|")


@dg.asset(key=REPORT, group_name="portal", deps=[CANONICAL], owners=OWNERS, kinds={"rest", "sqlite"}, pool="api_dvcqg",
          description="Every one-stop-shop dossier and progress step reported to the National Public Service Portal "
                      "(DongBoHoSoMC, CapNhatTienDoHoSoMC), each once: in-flight writes are settled by TraCuuHoSo "
                      "before anything is sent again. Refused dossiers are kept with the portal's message "
                      "(hub report portal --refused).")
def portal_report(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
    from connectors.portal import PortalClient

    try:
        client = PortalClient.from_settings(Settings.from_env(), os.environ)
    except ConfigError as exc:
        raise dg.Failure(str(exc)) from None
    rows, left_out = rows_to_report(_dossiers_relation(lake), state_path(lake))
    try:
        result = report_pass(rows, client, state_path(lake), left_out=left_out)
    except ReportError as exc:
        raise dg.Failure(f"portal report stopped: {exc}; the state is exact and the next run continues") from None
    context.log.info(result.summary())
    metadata = {k: (dg.MetadataValue.float(v) if isinstance(v, float) else dg.MetadataValue.int(v))
                for k, v in result.figures().items()}
    if result.refusals:
        metadata["refusals"] = dg.MetadataValue.json(result.refusals[:100])
    metadata["state"] = dg.MetadataValue.path(str(state_path(lake)))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(key=FLAGGED, group_name=GROUP, owners=OWNERS, kinds={"parquet", "duckdb"},
          deps=[CANONICAL, dg.AssetKey(["canonical", "citizens"]), dg.AssetKey(["canonical", "enterprises"])],
          description="Dossiers whose applicant identifier is unknown to the hub, names someone else, is missing, or "
                      "is of the wrong kind; flagged for the agency, never blocked (hub.dossiers).")
def applicant_flags_asset(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
    started = time.monotonic()
    with duckdb.connect() as con:
        flags = applicant_flags(con, _dossiers_relation(lake), lake.table("citizens").relation(),
                                lake.table("enterprises").relation())
        checked = con.execute(f"SELECT count(*) FROM {_dossiers_relation(lake)} WHERE NOT deleted").fetchall()[0][0]
    write_parquet(flags, output(lake, "applicant_flags"))
    counts = {flag: 0 for flag in FLAGS}
    for flag in flags["flag"].to_pylist():
        counts[flag] += 1
    context.log.info(f"applicants: {flags.num_rows} of {checked} dossiers flagged {counts}")
    return dg.MaterializeResult(metadata={
        "dossiers": dg.MetadataValue.int(checked),
        "flagged": dg.MetadataValue.int(flags.num_rows),
        "flagged_share": dg.MetadataValue.float(flags.num_rows / max(checked, 1)),
        **{f"flag/{k}": dg.MetadataValue.int(v) for k, v in counts.items()},
        "seconds": elapsed(started),
        "path": dg.MetadataValue.path(str(output(lake, "applicant_flags"))),
    })


@dg.asset(key=MEASURES, group_name=GROUP, owners=OWNERS, kinds={"parquet", "duckdb"}, deps=[CANONICAL],
          description="Per agency and month of receipt: dossiers received, share submitted online, share of the "
                      "resolved ones resolved on time, late, still open past the due date. The current month per "
                      "agency is plotted in the UI (metadata).")
def service_measures_asset(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
    started = time.monotonic()
    now = datetime.now(timefmt.VN_TZ)
    with duckdb.connect() as con:
        measures = service_measures(con, _dossiers_relation(lake), now)
    write_parquet(measures, output(lake, "service_measures"))
    month = now.strftime("%Y-%m")
    metadata = {"rows": dg.MetadataValue.int(measures.num_rows), "month": dg.MetadataValue.text(month)}
    for row in measures.to_pylist():
        if row["month"] != month:
            continue
        for name in ("received", "online_share", "on_time_share", "late", "open_past_due"):
            value = row[name]
            if value is not None:
                metadata[f"{row['agency']}/{name}"] = (dg.MetadataValue.float(float(value)) if isinstance(value, float)
                                                       else dg.MetadataValue.int(int(value)))
    metadata["table"] = _markdown(measures.filter(pc.equal(measures["month"], month)) if measures.num_rows
                                  else measures)
    metadata["seconds"] = elapsed(started)
    metadata["path"] = dg.MetadataValue.path(str(output(lake, "service_measures")))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(key=TIMES, group_name=GROUP, owners=OWNERS, kinds={"parquet", "duckdb"}, deps=[CANONICAL],
          description="Per procedure (MaTTHC): dossiers resolved and the median days from receipt to resolution.")
def procedure_times_asset(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
    started = time.monotonic()
    with duckdb.connect() as con:
        times = procedure_times(con, _dossiers_relation(lake))
    write_parquet(times, output(lake, "procedure_times"))
    return dg.MaterializeResult(metadata={
        "rows": dg.MetadataValue.int(times.num_rows),
        "table": _markdown(times),
        "seconds": elapsed(started),
        "path": dg.MetadataValue.path(str(output(lake, "procedure_times"))),
    })


@dg.asset_check(asset=CANONICAL, name="systems_reporting", blocking=False,
                description="Every system of HUB_ONESTOP_URLS has a dossier changed within HUB_ONESTOP_SILENT_HOURS "
                            "(default 24).")
def systems_reporting(lake: HubLake) -> dg.AssetCheckResult:
    hours = env_number(os.environ, "HUB_ONESTOP_SILENT_HOURS", 24.0, low=0)
    configured = [name for name, _ in Settings.from_env().onestop_urls]
    with duckdb.connect() as con:
        latest = dict(con.execute(f"SELECT system, max(updated_at) FROM {_dossiers_relation(lake)} GROUP BY ALL").fetchall())
    now = datetime.now(timefmt.VN_TZ)
    silent = {}
    for name in configured:
        newest = latest.get(name)
        if newest is None:
            silent[name] = "no dossier at all"
        elif (now - newest).total_seconds() > hours * 3600:
            silent[name] = f"newest change {newest.isoformat(timespec='minutes')}"
    return dg.AssetCheckResult(
        passed=not silent, severity=dg.AssetCheckSeverity.ERROR,
        description=("every system reported within the last %g h" % hours if not silent else
                     "; ".join(f"{k}: {v}" for k, v in silent.items()) + f" (more than {hours:g} h ago)"),
        metadata={"systems": dg.MetadataValue.int(len(configured)), "silent": dg.MetadataValue.int(len(silent)),
                  "newest": dg.MetadataValue.json({k: v.isoformat() for k, v in latest.items() if v is not None})})


@dg.asset_check(asset=MEASURES, name="late_share_jump", blocking=False,
                description="No agency's share of late dossiers this month exceeds the mean of its three months before "
                            "by more than HUB_DOSSIERS_LATE_JUMP (default 0.15).")
def late_share_jump(lake: HubLake) -> dg.AssetCheckResult:
    jump = env_number(os.environ, "HUB_DOSSIERS_LATE_JUMP", 0.15, low=0)
    target = output(lake, "service_measures")
    if not target.exists():
        return dg.AssetCheckResult(passed=False, description=f"{target} has not been built yet")
    jumps = late_jumps(pq.read_table(target), datetime.now(timefmt.VN_TZ).strftime("%Y-%m"), jump)
    return dg.AssetCheckResult(
        passed=not jumps, severity=dg.AssetCheckSeverity.ERROR,
        description=("no jump in the share of late dossiers" if not jumps else
                     "; ".join(f"{a}: {now:.2f} late this month against {before:.2f} before" for a, now, before in jumps)),
        metadata={"agencies_jumped": dg.MetadataValue.int(len(jumps)), "threshold": dg.MetadataValue.float(jump),
                  "jumps": dg.MetadataValue.json([{"agency": a, "now": n, "before": b} for a, n, b in jumps])})


def late_jumps(measures: pa.Table, month: str, jump: float) -> list[tuple[str, float, float]]:
    """(agency, late share in ``month``, mean late share of the three months before) where it rose by more
    than ``jump``. The late share of a month is its late dossiers over its resolved ones; a month with fewer
    than :data:`MIN_RESOLVED` resolved dossiers so far (the first days of a month) is too small to judge."""
    with duckdb.connect() as con:
        con.register("m", measures)
        return con.execute("""
            WITH shares AS (SELECT agency, month, resolved, late / nullif(resolved, 0) AS share FROM m),
                 now AS (SELECT agency, share FROM shares WHERE month = ? AND resolved >= ?),
                 before AS (SELECT agency, avg(share) AS share FROM (
                              SELECT *, row_number() OVER (PARTITION BY agency ORDER BY month DESC) AS k
                              FROM shares WHERE month < ? AND share IS NOT NULL) WHERE k <= 3 GROUP BY agency)
            SELECT now.agency, now.share, before.share FROM now JOIN before USING (agency)
            WHERE now.share - before.share > ? ORDER BY now.agency""", [month, MIN_RESOLVED, month, jump]).fetchall()


dossier_assets = [portal_report, applicant_flags_asset, service_measures_asset, procedure_times_asset]
dossier_checks = [systems_reporting, late_share_jump]
dossiers_job = dg.define_asset_job(
    "dossiers", selection=dg.AssetSelection.groups(GROUP, "portal"),
    description="Report the one-stop-shop dossiers to the national portal, cross-check applicants, and compute the "
                "service measures.")
hourly_dossiers = dg.ScheduleDefinition(name="hourly_dossiers", job=dossiers_job, cron_schedule="30 * * * *",
                                        default_status=dg.DefaultScheduleStatus.RUNNING, execution_timezone=TIMEZONE)
