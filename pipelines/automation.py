"""What runs by itself: the hourly syncs, all on by default (the document axis has its own sensor,
``docaxis_inbox`` in ``pipelines/documents.py``).

- ``land_days`` lands the day-shaped sources (civil status, business registry) for today's partition
  every hour at :05; the first two runs of a day take yesterday too, so what changed in yesterday's
  last hour (or under a registry clock a few minutes behind) is never left out.
- ``sync_all`` at :20 pulls the population copy and the document axis by cursor, rebuilds every
  canonical table from what has landed, checks them, and publishes the serving snapshot. It leaves
  out the ``reconciled`` group, which the ``reconcile`` job runs at :40 (``pipelines/reconcile.py``),
  and the document store, which ``docaxis_exchange`` feeds when the ``docaxis_inbox`` sensor sees
  landed parts not taken in (``pipelines/documents.py``): each costs seconds even when nothing is new.
- A backfill of past days started from the UI reaches the canonical tables and the snapshot with the
  next ``sync_all`` (or at once, by launching it).
"""


from datetime import timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from pipelines.lake import DAY_SHAPED
from pipelines.partitions import TIMEZONE

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
CATCH_UP_HOURS = 2  # runs of a day, from midnight, that also take yesterday

land_days = dg.define_asset_job(
    "land_days", selection=dg.AssetSelection.assets(*(dg.AssetKey(["landing", s]) for s in DAY_SHAPED)),
    description="Land the civil-status and business-registry changes of the selected days (a range runs as one run).")

sync_all = dg.define_asset_job(
    "sync_all", selection=dg.AssetSelection.all()
    - dg.AssetSelection.assets(*(dg.AssetKey(["landing", s]) for s in DAY_SHAPED))
    - dg.AssetSelection.groups("reconciled", "docaxis", "dossiers", "portal"),
    description="Pull the population copy and the document axis, rebuild and check every canonical table "
                "from what has landed, publish the snapshot.")

sync_population = dg.define_asset_job(
    "sync_population",
    selection=dg.AssetSelection.assets(dg.AssetKey(["landing", "population"]), dg.AssetKey(["canonical", "citizens"])),
    description="Pull the population copy and rebuild (and check) the canonical citizens table, nothing else: "
                "the largest source refreshed on its own, without a full sync.")

def day_range_tags(first: str, last: str) -> dict[str, str]:
    """Tags of one run over the partitions ``first``..``last`` (the assets' single-run backfill policy)."""
    return {RANGE_START: first, RANGE_END: last}


@dg.schedule(job=land_days, cron_schedule="5 * * * *", execution_timezone=TIMEZONE,
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Hourly: today's civil-status and business changes; in the first hours, yesterday's too.")
def hourly_days(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    now = context.scheduled_execution_time.astimezone(ZoneInfo(TIMEZONE))
    today = now.date()
    first = today - timedelta(days=1) if now.hour < CATCH_UP_HOURS else today
    return dg.RunRequest(run_key=f"days-{now:%Y%m%d%H}", tags=day_range_tags(first.isoformat(), today.isoformat()))


hourly_sync = dg.ScheduleDefinition(name="hourly_sync", job=sync_all, cron_schedule="20 * * * *",
                                    default_status=dg.DefaultScheduleStatus.RUNNING, execution_timezone=TIMEZONE)
