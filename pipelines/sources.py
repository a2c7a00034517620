"""Landing assets: one per national system, pulling incrementally into immutable Parquet parts.

Each materialisation reads the system's connector from the committed cursor to the end. Every batch
is written as a part and committed together with the cursor (``connectors.extract.land``), so a run
killed at any instant and re-executed lands the same parts, nothing lost and nothing twice. Each
system has its own pool, so runs never call one national system concurrently beyond its rate limit.
"""

import json
import time

import dagster as dg

from connectors.extract import land
from pipelines.lake import HubLake

SYSTEMS = {
    "population": ("National Population Database (SOAP): the province's synchronised copy via DongBoCongDan.",
                   {"soap", "parquet"}),
    "civil": ("Electronic civil-status registry (REST): births, deaths and marriages, per day of change.",
              {"rest", "parquet"}),
    "business": ("National Business Registration Database (REST, variant A or B): enterprises whose "
                 "dossiers were processed, in windows of at most 5 days.", {"rest", "parquet"}),
    "vdxp": ("National document-exchange axis (SOAP + edXML): documents and status packages received for "
             "the province's agencies, settled only once stored.", {"soap", "edxml", "parquet"}),
}
OWNERS = ["team:integration"]
RETRY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def landing_asset(system: str) -> dg.AssetsDefinition:
    description, kinds = SYSTEMS[system]

    @dg.asset(
        name=system, key_prefix="landing", group_name="landing", description=description, kinds=kinds,
        owners=OWNERS, pool=f"api_{system}", retry_policy=RETRY,
        automation_condition=dg.AutomationCondition.on_cron("0 * * * *"),
    )
    def landing(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
        connector = lake.connector(system)
        directory = lake.landing(system)
        started = time.monotonic()
        result = land(connector, directory)
        parts = directory / "parts"
        new_bytes = sum((parts / name).stat().st_size for name in result.new_parts)
        context.log.info(f"{system}: {result.fetched} rows, {result.quarantined} quarantined in {result.batches} batches")
        return dg.MaterializeResult(metadata={
            "rows": dg.MetadataValue.int(result.fetched),
            "quarantined_rows": dg.MetadataValue.int(result.quarantined),
            "quarantine_rate": dg.MetadataValue.float(result.quarantined / max(1, result.fetched + result.quarantined)),
            "bytes": dg.MetadataValue.int(new_bytes),
            "batches": dg.MetadataValue.int(result.batches),
            "parts_total": dg.MetadataValue.int(len(result.state["parts"])),
            "cursor": dg.MetadataValue.json(json.loads(json.dumps(result.state["cursor"], default=str))),
            "seconds": dg.MetadataValue.float(time.monotonic() - started),
            "path": dg.MetadataValue.path(str(directory)),
        })

    return landing


landing_assets = [landing_asset(system) for system in SYSTEMS]
