"""The published snapshot: one DuckDB file with every canonical table, swapped in atomically.

The lookup service opens ``published/current.duckdb`` read-only. A new snapshot is built under a
new name, closed, and moved over ``current.duckdb`` with ``os.replace``: a reader that already has the
old file open keeps reading it, new readers get the new one, and nobody ever sees a half-written
file. Only one process may write a DuckDB file, so this step runs in the ``duckdb_write`` pool.

The snapshot records, per table, the canonical build it holds (``snapshot_tables``: lineage and
change number). It also holds the one-stop-shop service measures (``service_measures``,
``procedure_times``: :mod:`hub.dossiers`), computed from its own ``dossiers`` at every build (they are
small), with their data time in ``snapshot_meta``, so the lookup API serves measures that agree with
the snapshot's dossiers. The next snapshot starts from a copy of the current one and applies, table by table,
the change files written since (delete the changed keys, insert their new rows): an incremental
sync publishes in time proportional to what changed. A table whose lineage moved on (rebuilt, or a
change file is gone) is loaded whole instead; so is everything when there is no current snapshot.
"""

import os
import shutil
import time
from pathlib import Path

from datetime import datetime

import dagster as dg
import duckdb

from hub.dossiers import procedure_times, service_measures
from hub.serving_store import META_TABLE
from pipelines.lake import HubLake
from pipelines.sources import OWNERS, SYSTEMS
from pipelines.tables import CanonicalTable, sql_paths
from schemas import timefmt
from schemas.canonical.registry import DATASETS

HELD = "snapshot_tables"  # (dataset, lineage, seq): the canonical build each table of the snapshot holds


def held_builds(snapshot: Path) -> dict[str, tuple[str, int]]:
    """What the snapshot at ``snapshot`` holds of each canonical table (empty if unknown)."""
    if not snapshot.exists():
        return {}
    with duckdb.connect(str(snapshot), read_only=True) as con:
        if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [HELD]).fetchone()[0]:
            return {}
        return {dataset: (lineage, seq) for dataset, lineage, seq in con.execute(f"SELECT * FROM {HELD}").fetchall()}


MEASURES = ("service_measures", "procedure_times")


def publish_measures(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)build the service measures from the snapshot's ``dossiers``; their data time is the newest
    dossier the hub fetched (none yet: the build's time)."""
    now = datetime.now(timefmt.VN_TZ)
    for name, table in (("service_measures", service_measures(con, "dossiers", now)),
                        ("procedure_times", procedure_times(con, "dossiers"))):
        con.register("_measures", table)
        con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _measures")
        con.unregister("_measures")
    as_of = con.execute("SELECT max(fetched_at) FROM dossiers").fetchall()[0][0] or now
    con.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (dataset VARCHAR, as_of TIMESTAMPTZ)")
    con.execute(f"DELETE FROM {META_TABLE} WHERE dataset IN {MEASURES}")
    con.executemany(f"INSERT INTO {META_TABLE} VALUES (?, ?)", [[name, as_of] for name in MEASURES])


def apply_changes(con: duckdb.DuckDBPyConnection, dataset: str, table: CanonicalTable, changes: list[Path]) -> None:
    """Bring the snapshot's copy of ``dataset`` forward by ``changes`` (oldest first): each change file
    holds the winning row of every key it touches."""
    matched = " AND ".join(f'{dataset}."{k}" = c."{k}"' for k in table.key)
    for change in changes:
        con.execute(f"DELETE FROM {dataset} USING read_parquet({sql_paths([change])}) AS c WHERE {matched}")
        con.execute(f"INSERT INTO {dataset} SELECT * FROM read_parquet({sql_paths([change])})")


@dg.asset(
    key=["published", "snapshot"], group_name="published", owners=OWNERS, kinds={"duckdb"}, pool="duckdb_write",
    deps=[dg.AssetKey(["canonical", DATASETS[system].DATASET]) for system in SYSTEMS],
    description="The serving snapshot: every canonical table in one DuckDB file (published/current.duckdb), "
                "built aside from the current one plus the changes since, and swapped in atomically. "
                "Blocked while any canonical check fails.",
)
def snapshot(context: dg.AssetExecutionContext, lake: HubLake) -> dg.MaterializeResult:
    started = time.monotonic()
    lake.published.mkdir(parents=True, exist_ok=True)
    current = lake.published / "current.duckdb"
    built = lake.published / f"snapshot-{time.strftime('%Y%m%dT%H%M%S')}-{context.run.run_id[:8]}.duckdb"
    tables = {DATASETS[s].DATASET: lake.table(DATASETS[s].DATASET) for s in SYSTEMS}
    manifests = {}
    for dataset, table in tables.items():
        manifests[dataset] = table.manifest()
        if manifests[dataset] is None:
            raise dg.Failure(f"canonical {dataset} has not been built yet ({table.manifest_path})")
    held = held_builds(current)
    plans = {dataset: table.changes_since(manifests[dataset], *held[dataset]) if dataset in held else None
             for dataset, table in tables.items()}
    how = {}
    try:
        if any(plan is not None for plan in plans.values()):
            shutil.copyfile(current, built)
        with duckdb.connect(str(built)) as con:
            con.execute(f"CREATE TABLE IF NOT EXISTS {HELD} (dataset VARCHAR PRIMARY KEY, lineage VARCHAR, seq BIGINT)")
            for dataset, table in tables.items():
                manifest, plan = manifests[dataset], plans[dataset]
                if plan is None:
                    con.execute(f"CREATE OR REPLACE TABLE {dataset} AS SELECT * FROM {table.relation(manifest)}")
                    how[dataset] = "loaded"
                else:
                    apply_changes(con, dataset, table, plan)
                    how[dataset] = f"{len(plan)} changes applied"
                con.execute(f"INSERT OR REPLACE INTO {HELD} VALUES (?, ?, ?)", [dataset, manifest.lineage, manifest.seq])
            publish_measures(con)
            counts = {dataset: con.execute(f"SELECT count(*) FROM {dataset}").fetchone()[0]
                      for dataset in (*tables, *MEASURES)}
            con.execute("CHECKPOINT")
    except BaseException:
        built.unlink(missing_ok=True)  # a half-built snapshot is never published, nor left behind
        raise
    os.replace(built, current)
    context.log.info("; ".join(f"{dataset}: {text}" for dataset, text in how.items()))
    return dg.MaterializeResult(metadata={
        **{f"rows_{name}": dg.MetadataValue.int(n) for name, n in counts.items()},
        "build": dg.MetadataValue.text("; ".join(f"{dataset} {text}" for dataset, text in how.items())),
        "seconds": dg.MetadataValue.float(time.monotonic() - started),
        "bytes": dg.MetadataValue.int(current.stat().st_size),
        "path": dg.MetadataValue.path(str(current)),
    })
