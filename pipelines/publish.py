"""The published snapshot: one DuckDB file with every canonical table, swapped in atomically.

The lookup service opens ``published/current.duckdb`` read-only. A new snapshot is built under a
new name, closed, and moved over ``current.duckdb`` with ``os.replace``: a reader that already has the
old file open keeps reading it, new readers get the new one, and nobody ever sees a half-written
file. Only one process may write a DuckDB file, so this step runs in the ``duckdb_write`` pool.
"""

import os
import time

import dagster as dg
import duckdb

from pipelines.lake import HubLake
from pipelines.sources import OWNERS, SYSTEMS
from schemas.canonical.registry import DATASETS

@dg.asset(
    key=["published", "snapshot"], group_name="published", owners=OWNERS, kinds={"duckdb"}, pool="duckdb_write",
    deps=[dg.AssetKey(["canonical", DATASETS[system].DATASET]) for system in SYSTEMS],
    description="The serving snapshot: every canonical table in one DuckDB file (published/current.duckdb), "
                "built aside and swapped in atomically. Blocked while any canonical check fails.",
)
def snapshot(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
    started = time.monotonic()
    lake.published.mkdir(parents=True, exist_ok=True)
    built = lake.published / f"snapshot-{time.strftime('%Y%m%dT%H%M%S')}-{context.run.run_id[:8]}.duckdb"
    counts = {}
    try:
        with duckdb.connect(str(built)) as con:
            for system in SYSTEMS:
                dataset = DATASETS[system].DATASET
                source = lake.canonical / f"{dataset}.parquet"
                if not source.exists():
                    raise dg.Failure(f"canonical {dataset} has not been built yet ({source})")
                con.execute(f"CREATE TABLE {dataset} AS SELECT * FROM read_parquet(?)", [str(source)])
                counts[dataset] = con.execute(f"SELECT count(*) FROM {dataset}").fetchone()[0]
            con.execute("CHECKPOINT")
    except BaseException:
        built.unlink(missing_ok=True)  # a half-built snapshot is never published, nor left behind
        raise
    current = lake.published / "current.duckdb"
    os.replace(built, current)
    return dg.MaterializeResult(metadata={
        **{f"rows_{name}": dg.MetadataValue.int(n) for name, n in counts.items()},
        "seconds": dg.MetadataValue.float(time.monotonic() - started),
        "bytes": dg.MetadataValue.int(current.stat().st_size),
        "path": dg.MetadataValue.path(str(current)),
    })
