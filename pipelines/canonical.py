"""Canonical tables: the latest row of every key, rebuilt from each system's landed parts.

Rebuilding from the committed parts (of every day, for the day-shaped sources) (rather than patching the previous table) makes the step
idempotent: re-running it after any failure gives the same table. DuckDB does the deduplication in a
private in-memory database, streaming to Parquet, so no shared DuckDB file is locked here.
"""

import time

import dagster as dg

from connectors.extract import compact
from pipelines.lake import HubLake
from pipelines.sources import OWNERS, SYSTEMS
from schemas.canonical.registry import DATASETS


def canonical_asset(system: str) -> dg.AssetsDefinition:
    spec = DATASETS[system]
    key_text = ", ".join(spec.KEY)

    @dg.asset(
        name=spec.DATASET, key_prefix="canonical", group_name="canonical", deps=[dg.AssetKey(["landing", system])],
        description=f"{spec.DATASET}: one row per ({key_text}), the latest version landed from {system}. "
                    f"Schema version {spec.SCHEMA.metadata[b'version'].decode()} (schemas/canonical).",
        kinds={"duckdb", "parquet"}, owners=OWNERS,
    )
    def canonical(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
        started = time.monotonic()
        records, quarantined = lake.committed_files(system, spec.DATASET)
        path = lake.canonical / f"{spec.DATASET}.parquet"
        quarantine = lake.canonical / f"{spec.DATASET}.quarantine.parquet"
        rows = compact(records, quarantined, spec.SCHEMA, spec.KEY, spec.VERSION_COLUMN, path, quarantine)
        return dg.MaterializeResult(metadata={
            "rows": dg.MetadataValue.int(rows),
            "seconds": dg.MetadataValue.float(time.monotonic() - started),
            "bytes": dg.MetadataValue.int(path.stat().st_size),
            "parts": dg.MetadataValue.int(len(records) + len(quarantined)),
            "path": dg.MetadataValue.path(str(path)),
            "quarantine_path": dg.MetadataValue.path(str(quarantine)),
        })

    return canonical


canonical_assets = [canonical_asset(system) for system in SYSTEMS]
