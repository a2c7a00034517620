"""What runs by itself: an hourly sync of every source, and a sensor on the document axis.

Both are on by default. The landing assets also carry hourly cron automation conditions and the
downstream assets eager ones, so the automation daemon keeps them fresh; the schedule is the plain
form an operator can switch off in the UI.
"""

import time

import dagster as dg

from connectors.errors import ConnectorError
from pipelines.lake import HubLake

sync_all = dg.define_asset_job(
    "sync_all", selection=dg.AssetSelection.all(),
    description="Pull every national system, rebuild the canonical tables, publish the snapshot.")

receive_documents = dg.define_asset_job(
    "receive_documents",
    selection=dg.AssetSelection.assets(dg.AssetKey(["landing", "vdxp"])).downstream(),
    description="Receive what the document axis holds for the province, store it, then settle it.")

hourly_sync = dg.ScheduleDefinition(name="hourly_sync", job=sync_all, cron_schedule="15 * * * *",
                                    default_status=dg.DefaultScheduleStatus.RUNNING,
                                    execution_timezone="Asia/Ho_Chi_Minh")


@dg.sensor(job=receive_documents, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Polls the national axis for documents addressed to the province; launches a receive run "
                       "when any are waiting (at most one per minute).")
def document_axis_inbox(context: dg.SensorEvaluationContext, lake: HubLake):
    connector = lake.connector("vdxp")
    try:
        # A peek of one message per type: a listed message is hidden for the visibility timeout and
        # delivered to the run after it, so the peek costs at most that delay, never a message.
        waiting = sum(len(connector.list_received(kind, 1)[0]) for kind in ("edoc", "status"))
    except ConnectorError as exc:
        return dg.SkipReason(f"document axis unreachable: {exc}")
    if not waiting:
        return dg.SkipReason("nothing waiting on the axis")
    tick = int(time.time() // 60)
    return dg.RunRequest(run_key=f"inbox-{tick}", tags={"hub/trigger": "document-axis"})
