"""Canonical tables: the latest row of every key, rebuilt from each system's landed parts.

Rebuilding from the committed parts (rather than patching the previous table) makes the step
idempotent: re-running it after any failure gives the same table. DuckDB does the deduplication in a
private in-memory database, streaming to Parquet, so no shared DuckDB file is locked here.
"""

import dagster as dg

from connectors.extract import compact, load_state
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
        kinds={"duckdb", "parquet"}, owners=OWNERS, automation_condition=dg.AutomationCondition.eager(),
    )
    def canonical(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
        landing = lake.landing(system)
        state = load_state(landing / "state.json", system, spec.DATASET)
        path, quarantine, rows = compact(landing, state["parts"], spec.DATASET, spec.SCHEMA, spec.KEY,
                                         spec.VERSION_COLUMN, target_dir=lake.canonical)
        return dg.MaterializeResult(metadata={
            "rows": dg.MetadataValue.int(rows),
            "bytes": dg.MetadataValue.int(path.stat().st_size),
            "parts": dg.MetadataValue.int(len(state["parts"])),
            "path": dg.MetadataValue.path(str(path)),
            "quarantine_path": dg.MetadataValue.path(str(quarantine)),
        })

    return canonical


canonical_assets = [canonical_asset(system) for system in SYSTEMS]
