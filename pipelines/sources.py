"""Landing assets: one per national system, pulling into immutable Parquet parts.

- The population database, the document axis and the one-stop-shop systems land by cursor: each
  materialisation reads from the committed cursor to the end, every batch written as a part and
  committed together with the cursor (``connectors.extract.land``), so a run killed at any instant and
  re-executed lands the same parts.
- The civil-status registry and the business registry are day-shaped: their landing is partitioned
  by day (``pipelines.partitions``), each partition read alone and swapped in whole
  (``pipelines.lake.land_day``), so re-running a partition replaces exactly that partition and a
  backfill of a date range runs as one run over its days.

Each system has its own pool, so runs never call one national system concurrently beyond its rate limit.
"""


import json
import time
import warnings
from typing import Any

import dagster as dg

from connectors.extract import LandResult, land
from pipelines.lake import DAY_SHAPED, HubLake, land_day
from pipelines.partitions import day_of, days

SYSTEMS = {
    "population": ("National Population Database (SOAP): the province's synchronised copy via DongBoCongDan.",
                   {"soap", "parquet"}),
    "civil": ("Electronic civil-status registry (REST): births, deaths and marriages changed on each day "
              "(one partition per day; dsHoSoDangKy lists, traDanhSachHoSo details).", {"rest", "parquet"}),
    "business": ("National Business Registration Database (REST, variant A or B): enterprises whose dossiers "
                 "were processed on each day (one partition per day, read in windows of at most 5 days).",
                 {"rest", "parquet"}),
    "vdxp": ("National document-exchange axis (SOAP + edXML): documents and status packages received for "
             "the province's agencies, settled only once stored.", {"soap", "edxml", "parquet"}),
    "onestop": ("The province's one-stop-shop systems (SQL databases named in HUB_ONESTOP_URLS): dossiers and "
                "their processing steps changed since each system's high-water mark, with tombstones for "
                "dossiers deleted there; nothing to read when no system is configured.", {"sql", "parquet"}),
}
OWNERS = ["team:integration"]
RETRY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def elapsed(started: float) -> dg.MetadataValue:
    """Seconds since ``started`` (``time.monotonic()``), as the ``seconds`` metadata every asset reports."""
    return dg.MetadataValue.float(round(time.monotonic() - started, 3))


def _metadata(results: list[LandResult], new_bytes: int, started: float, cursor: Any, path: str) -> dict:
    fetched = sum(r.fetched for r in results)
    quarantined = sum(r.quarantined for r in results)
    return {
        "rows": dg.MetadataValue.int(fetched),
        "quarantined_rows": dg.MetadataValue.int(quarantined),
        "quarantine_rate": dg.MetadataValue.float(quarantined / max(1, fetched + quarantined)),
        "bytes": dg.MetadataValue.int(new_bytes),
        "batches": dg.MetadataValue.int(sum(r.batches for r in results)),
        "cursor": dg.MetadataValue.json(json.loads(json.dumps(cursor, default=str))),
        "seconds": dg.MetadataValue.float(time.monotonic() - started),
        "path": dg.MetadataValue.path(path),
    }


def _asset_args(system: str) -> dict[str, Any]:
    """What every landing asset declares: its key, description, kinds, owners, the system's pool, retries."""
    description, kinds = SYSTEMS[system]
    return {"name": system, "key_prefix": "landing", "group_name": "landing", "description": description,
            "kinds": kinds, "owners": OWNERS, "pool": f"api_{system}", "retry_policy": RETRY}


def cursor_landing_asset(system: str) -> dg.AssetsDefinition:
    @dg.asset(**_asset_args(system))
    def landing(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
        started = time.monotonic()
        directory = lake.landing(system)
        connector = lake.connector(system)
        result = land(connector, directory)
        new_bytes = sum((directory / "parts" / name).stat().st_size for name in result.new_parts)
        context.log.info(f"{system}: {result.fetched} rows, {result.quarantined} quarantined in {result.batches} batches")
        # A cursor too large for the event log (the one-stop-shop key sets) is shown summarised.
        summary = getattr(connector, "cursor_summary", None)
        cursor = summary(result.state["cursor"]) if summary else result.state["cursor"]
        metadata = _metadata([result], new_bytes, started, cursor, str(directory))
        metadata["parts_total"] = dg.MetadataValue.int(len(result.state["parts"]))
        return dg.MaterializeResult(metadata=metadata)

    return landing


def daily_landing_asset(system: str) -> dg.AssetsDefinition:
    @dg.asset(**_asset_args(system), partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
    def landing(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
        started = time.monotonic()
        connector = lake.connector(system)
        results, new_bytes = [], 0
        for key in context.partition_keys:  # one key, or a backfill's whole range in one run
            day = day_of(key)
            day_dir = lake.day_dir(system, day)
            result = land_day(connector.between(day, day), day_dir)
            results.append(result)
            new_bytes += sum(p.stat().st_size for p in day_dir.glob("gen-*/parts/*"))
        keys = context.partition_keys
        context.log.info(f"{system} {keys[0]}..{keys[-1]}: {sum(r.fetched for r in results)} rows, "
                         f"{sum(r.quarantined for r in results)} quarantined over {len(keys)} days")
        metadata = _metadata(results, new_bytes, started, {"days": f"{keys[0]}..{keys[-1]}"}, str(lake.landing(system)))
        metadata["days"] = dg.MetadataValue.int(len(keys))
        return dg.MaterializeResult(metadata=metadata)

    return landing


with warnings.catch_warnings():
    # Dagster still calls ``backfill_policy`` beta; single-run backfills are what make a date range one run.
    warnings.simplefilter("ignore", dg.BetaWarning)
    landing_assets = [daily_landing_asset(s) if s in DAY_SHAPED else cursor_landing_asset(s) for s in SYSTEMS]
