"""Running a connector to files with exactly-once semantics (``hub extract``).

Layout under the output directory::

    parts/000001.records.parquet     one file per committed batch (immutable once committed)
    parts/000001.quarantine.parquet
    <dataset>.parquet                the canonical table: the latest row of every key
    quarantine.parquet               every refused record with its reason and position
    state.json                       the committed cursor and the committed parts (default --state)

The commit protocol: a batch's parts are written to temporary names, flushed and renamed; only then
is the state file replaced (also write-then-rename) with the new cursor and the parts listed; only
after that does the batch's ``after_commit`` run. A kill at any instant leaves either the old state
(the batch's files are orphans, deleted on the next start, and the batch is fetched again) or the new
one. The canonical table is rebuilt from the committed parts, so records delivered twice by the
source (at-least-once) or fetched twice after a kill still appear once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from connectors.base import Connector
from schemas.canonical import QUARANTINE_SCHEMA

STATE_VERSION = 1


@dataclass
class ExtractResult:
    dataset_path: Path
    quarantine_path: Path
    rows: int  # rows of the canonical table
    fetched: int  # rows fetched in this run (before deduplication)
    quarantined: int  # records quarantined in this run
    batches: int


class StateError(ValueError):
    """The state file is unreadable or belongs to another system; the message says which."""


def load_state(path: Path, system: str, dataset: str) -> dict[str, Any]:
    if not path.exists():
        return {"version": STATE_VERSION, "system": system, "dataset": dataset, "cursor": None, "parts": [],
                "sequence": 0}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StateError(f"state file {path} is unreadable: {exc}") from None
    if state.get("system") != system or state.get("dataset") != dataset:
        raise StateError(f"state file {path} belongs to {state.get('system')}/{state.get('dataset')}, "
                         f"not {system}/{dataset}")
    return state


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write ``path`` to; on success it is flushed and renamed into place, so a
    reader (or a kill) only ever sees the old file or the complete new one."""
    temp = path.with_name(f".{path.name}.tmp")
    yield temp
    with open(temp, "rb+") as handle:
        os.fsync(handle.fileno())
    temp.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(state, indent=1), encoding="utf-8")


def _write_table(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as temp:
        pq.write_table(table, temp, compression="zstd")


def _remove_orphans(parts_dir: Path, committed: set[str]) -> None:
    for entry in parts_dir.iterdir():
        if entry.name not in committed:
            entry.unlink()


def run_extract(connector: Connector, out_dir: Path, state_path: Path | None = None,
                progress: Callable[[int], None] | None = None) -> ExtractResult:
    """Read ``connector`` from its committed cursor to the end, then rebuild the canonical table."""
    landed = land(connector, out_dir, state_path, progress)
    dataset_path, quarantine_path = out_dir / f"{connector.dataset}.parquet", out_dir / "quarantine.parquet"
    rows = compact(*committed_files(out_dir, landed.state["parts"]), connector.schema, connector.key,
                   connector.version_column, dataset_path, quarantine_path)
    return ExtractResult(dataset_path, quarantine_path, rows, landed.fetched, landed.quarantined, landed.batches)


@dataclass
class LandResult:
    state: dict[str, Any]  # the committed state after this run: cursor, parts, sequence
    fetched: int
    quarantined: int
    batches: int
    new_parts: list[str]


def land(connector: Connector, out_dir: Path, state_path: Path | None = None,
         progress: Callable[[int], None] | None = None) -> LandResult:
    """Read ``connector`` from its committed cursor to the end, committing batch by batch (the parts
    under ``out_dir/parts`` are the immutable landing zone; the state commits them with the cursor)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parts_dir = out_dir / "parts"
    parts_dir.mkdir(exist_ok=True)
    state_path = state_path or out_dir / "state.json"
    state = load_state(state_path, connector.system, connector.dataset)
    _remove_orphans(parts_dir, set(state["parts"]))
    already = len(state["parts"])
    fetched = quarantined = batches = 0
    saved_at = time.monotonic()
    unsaved = False
    for batch in connector.read(state["cursor"]):
        sequence = state["sequence"] + 1
        names = []
        for kind, table, schema in (("records", batch.records, connector.schema),
                                    ("quarantine", batch.quarantine, QUARANTINE_SCHEMA)):
            if table.num_rows:
                name = f"{sequence:07d}.{kind}.parquet"
                _write_table(parts_dir / name, table.cast(schema))
                names.append(name)
        state = {**state, "cursor": batch.cursor, "parts": [*state["parts"], *names], "sequence": sequence}
        # A batch that brought nothing and settles nothing may wait up to a second for its commit:
        # losing it to a kill only means reading an empty stretch again. Everything else commits now.
        if names or batch.after_commit is not None or time.monotonic() - saved_at >= 1.0:
            _save_state(state_path, state)
            saved_at, unsaved = time.monotonic(), False
        else:
            unsaved = True
        if batch.after_commit is not None:
            batch.after_commit()
        fetched += batch.records.num_rows
        quarantined += batch.quarantine.num_rows
        batches += 1
        if progress is not None:
            progress(batch.progress or batch.records.num_rows + batch.quarantine.num_rows)
    if unsaved:
        _save_state(state_path, state)
    return LandResult(state, fetched, quarantined, batches, state["parts"][already:])


def committed_files(out_dir: Path, parts: list[str]) -> tuple[list[Path], list[Path]]:
    """The record and quarantine files of the committed ``parts`` under ``out_dir/parts``."""
    files = [out_dir / "parts" / p for p in parts]
    return ([f for f in files if f.name.endswith(".records.parquet")],
            [f for f in files if f.name.endswith(".quarantine.parquet")])


def _columns(schema: pa.Schema) -> str:
    return ", ".join(f'"{f.name}"' for f in schema)


def latest_per_key_sql(parameter: str, schema: pa.Schema, key: tuple[str, ...], version_column: str | None) -> str:
    """SQL of the latest row per key among the part files in ``$parameter``: the greatest
    ``version_column``, ties (and datasets without one) to the row committed last (files are named in
    commit order)."""
    order = (f'"{version_column}" DESC NULLS LAST, ' if version_column else "") + "filename DESC, file_row_number DESC"
    keys = ", ".join(f'"{k}"' for k in key)
    return (f"SELECT {_columns(schema)} FROM read_parquet(${parameter}, filename=true, file_row_number=true) "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}) = 1")


def query_to_parquet(sql: str | None, params: dict[str, Any], schema: pa.Schema, dataset_path: Path) -> int:
    """Write what ``sql`` selects to ``dataset_path`` (atomically; an empty table when ``sql`` is None)
    and return its row count. Streamed batch by batch, with DuckDB spilling to disk past its limit, so
    memory stays bounded whatever the size of the source."""
    dataset_path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    spill = dataset_path.parent / ".spill"
    with duckdb.connect(config={"memory_limit": "512MB", "temp_directory": str(spill)}) as con:
        with atomic_path(dataset_path) as temp, pq.ParquetWriter(temp, schema, compression="zstd") as writer:
            if sql is not None:
                for batch in con.sql(sql, params=params).arrow():
                    writer.write_table(pa.Table.from_batches([batch]).cast(schema))
                    rows += batch.num_rows
    return rows


def compact(record_files: list[Path], quarantine_files: list[Path], schema: pa.Schema, key: tuple[str, ...],
            version_column: str | None, dataset_path: Path, quarantine_path: Path) -> int:
    """Rebuild a canonical table (latest row per key, sorted by key) and its quarantine file from
    committed parts; returns the table's row count."""
    keys = ", ".join(f'"{k}"' for k in key)
    sql = f"{latest_per_key_sql('files', schema, key, version_column)} ORDER BY {keys}" if record_files else None
    rows = query_to_parquet(sql, {"files": [str(f) for f in record_files]}, schema, dataset_path)
    write_quarantine(quarantine_files, quarantine_path)
    return rows


def write_quarantine(quarantine_files: list[Path], quarantine_path: Path) -> None:
    """Every refused record of the committed quarantine parts, in one file for an operator."""
    if quarantine_files:
        quarantine = pa.concat_tables(pq.read_table(f) for f in quarantine_files)
    else:
        quarantine = QUARANTINE_SCHEMA.empty_table()
    _write_table(quarantine_path, quarantine.cast(QUARANTINE_SCHEMA))


def terminal_progress(total: int | None, description: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A tqdm bar on a terminal, nothing otherwise: (advance, close)."""
    if not sys.stderr.isatty():
        return (lambda n: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=total, desc=description, unit="rec", file=sys.stderr)
    return bar.update, bar.close
