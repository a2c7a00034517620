"""Canonical tables: the latest row of every key, from each system's committed parts.

Each table is a base and change files under ``canonical/<dataset>/`` (``pipelines/tables.py``): when
parts were only added since the last build (the population copy and the document axis always; the
days unless one was re-landed) the build writes one change file with the rows that won, so an
incremental sync costs what changed, not the whole province; when a part is gone (a day replaced),
the table is rebuilt from every committed part. Either way the table is the latest row per key of the
committed parts, so re-running the step after any failure gives the same table. DuckDB works in a
private in-memory database, streaming to Parquet: no shared DuckDB file is locked here. Each table
has its own pool, so two runs never build the same table at once.
"""

import time

import dagster as dg

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
        kinds={"duckdb", "parquet"}, owners=OWNERS, pool=f"canonical_{spec.DATASET}",
    )
    def canonical(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
        started = time.monotonic()
        table = lake.table(spec.DATASET)
        build = table.build(*lake.committed_files(system, spec.DATASET))
        manifest = build.manifest
        context.log.info(f"{spec.DATASET}: {build.how}; {manifest.rows} rows")
        return dg.MaterializeResult(metadata={
            "rows": dg.MetadataValue.int(manifest.rows),
            "changed_rows": dg.MetadataValue.int(build.changed_rows),
            "build": dg.MetadataValue.text(build.how),
            "seconds": dg.MetadataValue.float(time.monotonic() - started),
            "bytes": dg.MetadataValue.int(sum(p.stat().st_size for p in table.paths(manifest))),
            "files": dg.MetadataValue.int(len(manifest.files())),
            "parts": dg.MetadataValue.int(len(manifest.parts) + len(manifest.quarantine_parts)),
            "path": dg.MetadataValue.path(str(table.directory)),
            "quarantine_path": dg.MetadataValue.path(str(table.quarantine_path)),
        })

    return canonical


canonical_assets = [canonical_asset(system) for system in SYSTEMS]
