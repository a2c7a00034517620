"""Canonical tables: the latest row of every key, from each system's committed parts.

A manifest beside each table names the parts it was built from. When parts were only added since
(the population copy and the document axis always; the days unless one was re-landed), the new parts
are merged into the table, so an incremental sync costs what changed, not the whole province; when a
part is gone (a day replaced), the table is rebuilt from every committed part. Either way the result
is the latest row per key of the committed parts, so re-running the step after any failure gives the
same table. DuckDB works in a private in-memory database, streaming to Parquet: no shared DuckDB file
is locked here.
"""

import json
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from connectors.extract import atomic_path, compact, merge, write_quarantine
from pipelines.lake import HubLake
from pipelines.sources import OWNERS, SYSTEMS
from schemas.canonical.registry import DATASETS


def read_manifest(table: Path, schema: pa.Schema) -> set[str] | None:
    """The parts a canonical table was built from, or None if it must be rebuilt (no table or manifest,
    or another schema version)."""
    manifest = table.with_suffix(".manifest.json")
    if not table.exists() or not manifest.exists():
        return None
    content = json.loads(manifest.read_text(encoding="utf-8"))
    if content.get("schema_version") != schema.metadata[b"version"].decode():
        return None
    return set(content["parts"])


def write_manifest(table: Path, schema: pa.Schema, parts: list[Path]) -> None:
    """Written after the table, so a kill in between leaves a manifest of an older build: at worst the
    next run merges parts the table already holds, which the latest-row rule absorbs."""
    with atomic_path(table.with_suffix(".manifest.json")) as temp:
        temp.write_text(json.dumps({"schema_version": schema.metadata[b"version"].decode(),
                                    "parts": [str(p) for p in parts]}), encoding="utf-8")


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
        built = read_manifest(path, spec.SCHEMA)
        new = [f for f in records if str(f) not in built] if built is not None else None
        if new is not None and built <= {str(f) for f in records}:  # only additions since the last build
            rows = merge(path, new, spec.SCHEMA, spec.KEY, spec.VERSION_COLUMN, path) if new else \
                pq.read_metadata(path).num_rows
            write_quarantine(quarantined, quarantine)
            how = f"merged {len(new)} new parts"
        else:  # first build, or a day replaced (its old parts are gone): rebuild from every part
            rows = compact(records, quarantined, spec.SCHEMA, spec.KEY, spec.VERSION_COLUMN, path, quarantine)
            how = f"rebuilt from {len(records)} parts"
        write_manifest(path, spec.SCHEMA, records)
        context.log.info(f"{spec.DATASET}: {how}, {rows} rows")
        return dg.MaterializeResult(metadata={
            "rows": dg.MetadataValue.int(rows),
            "build": dg.MetadataValue.text(how),
            "seconds": dg.MetadataValue.float(time.monotonic() - started),
            "bytes": dg.MetadataValue.int(path.stat().st_size),
            "parts": dg.MetadataValue.int(len(records) + len(quarantined)),
            "path": dg.MetadataValue.path(str(path)),
            "quarantine_path": dg.MetadataValue.path(str(quarantine)),
        })

    return canonical


canonical_assets = [canonical_asset(system) for system in SYSTEMS]
