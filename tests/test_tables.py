"""Canonical tables as a base and change files: whatever sequence of landings, re-landings and kills,
the table is the latest row per key of the committed parts, and a snapshot that applies the changes
holds what loading the table whole gives."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings, strategies as st

import pipelines.tables as tables
from connectors.extract import compact
from pipelines.publish import apply_changes
from pipelines.tables import CanonicalTable

SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("v", pa.int64()),
                    pa.field("value", pa.string())], metadata={"dataset": "things", "version": "1"})
SPEC = SimpleNamespace(SCHEMA=SCHEMA, KEY=("id",), VERSION_COLUMN="v")


def write_part(directory: Path, number: int, rng: random.Random, keys: int = 40, rows: int = 15) -> Path:
    path = directory / f"{number:07d}.records.parquet"
    ids = [f"k{rng.randrange(keys)}" for _ in range(rows)]
    versions = [None if rng.random() < 0.1 else rng.randrange(5) for _ in ids]
    pq.write_table(pa.table({"id": ids, "v": versions, "value": [f"{number}:{i}" for i in range(rows)]},
                            schema=SCHEMA), path)
    return path


def rows_of(relation: str) -> list[tuple]:
    with duckdb.connect() as con:
        return con.execute(f"SELECT * FROM {relation} ORDER BY ALL").fetchall()


def rebuilt(parts: list[Path], tmp: Path) -> list[tuple]:
    """The table as a rebuild from every part gives it (the reference)."""
    out = tmp / "reference.parquet"
    compact(parts, [], SCHEMA, SPEC.KEY, SPEC.VERSION_COLUMN, out, tmp / "reference.quarantine.parquet")
    return rows_of(f"read_parquet('{out}')")


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), compact_after=st.integers(1, 5))
def test_any_sequence_of_builds_gives_the_latest_row_per_key(tmp_path_factory, seed, compact_after):
    tmp = tmp_path_factory.mktemp("t")
    rng = random.Random(seed)
    landing = tmp / "parts"
    landing.mkdir()
    table = CanonicalTable(tmp / "things", SPEC)
    snapshot = duckdb.connect()
    held = None  # (lineage, seq) of the snapshot's copy
    parts: list[Path] = []
    hows = set()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tables, "MAX_LIVE_CHANGES", compact_after)
        patch.setattr(tables, "COMPACT_SHARE", 100.0)  # compaction by file count only, so it varies
        for step in range(12):
            if parts and rng.random() < 0.15:
                parts.remove(rng.choice(parts))  # a day re-landed: its old parts are gone
            for _ in range(rng.randrange(3)):
                parts.append(write_part(landing, step * 10 + len(parts), rng))
            build = table.build(parts, [])
            hows.add(build.how.split()[0])
            expected = rebuilt(parts, tmp) if parts else []
            assert rows_of(table.relation()) == expected
            assert build.manifest.rows == len(expected)
            # The snapshot catches up by applying the changes when it can, else reloads the table.
            manifest = table.committed()
            changes = table.changes_since(manifest, *held) if held else None
            if changes is None:
                snapshot.execute(f"CREATE OR REPLACE TABLE things AS SELECT * FROM {table.relation(manifest)}")
            else:
                apply_changes(snapshot, "things", table, changes)
            held = (manifest.lineage, manifest.seq)
            assert snapshot.execute("SELECT * FROM things ORDER BY ALL").fetchall() == expected
    # Only what the manifest and its predecessor name is left on disk.
    manifest = table.committed()
    on_disk = {p.name for p in table.directory.glob("*.parquet")} - {"quarantine.parquet"}
    assert on_disk == set(manifest.files()) | set(manifest.retained)
    assert "rebuilt" in hows


def test_a_build_killed_before_its_manifest_leaves_the_old_table_and_the_rerun_converges(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "COMPACT_SHARE", 100.0)
    rng = random.Random(5)
    (tmp_path / "parts").mkdir()
    table = CanonicalTable(tmp_path / "things", SPEC)
    parts = [write_part(tmp_path / "parts", n, rng) for n in range(3)]
    table.build(parts, [])
    before = rows_of(table.relation())
    parts.append(write_part(tmp_path / "parts", 3, rng, rows=30))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed after the change file, before the manifest")

    with monkeypatch.context() as patch:
        patch.setattr(CanonicalTable, "_commit", killed)
        with pytest.raises(KeyboardInterrupt):
            table.build(parts, [])
    assert list(table.directory.glob("change-*.parquet")), "the change file was written"
    assert rows_of(table.relation()) == before  # readers still see the committed table
    build = table.build(parts, [])
    assert build.how.startswith("changed")
    assert rows_of(table.relation()) == rebuilt(parts, tmp_path)


def test_changes_that_win_nothing_write_no_change_file(tmp_path):
    (tmp_path / "parts").mkdir()
    table = CanonicalTable(tmp_path / "things", SPEC)
    first, older = (tmp_path / "parts" / f"{n:07d}.records.parquet" for n in (0, 1))
    ids = [f"k{i}" for i in range(10)]
    pq.write_table(pa.table({"id": ids, "v": [3] * 10, "value": ["current"] * 10}, schema=SCHEMA), first)
    table.build([first], [])
    # Every key again, with a lower version (a late redelivery of older versions): nothing wins.
    pq.write_table(pa.table({"id": ids, "v": [2] * 10, "value": ["old"] * 10}, schema=SCHEMA), older)
    build = table.build([first, older], [])
    assert build.how.startswith("unchanged") and build.changed_rows == 0
    assert not list(table.directory.glob("change-*.parquet"))
    assert table.committed().seq == 0


def test_a_table_of_another_schema_version_is_rebuilt(tmp_path):
    rng = random.Random(2)
    (tmp_path / "parts").mkdir()
    parts = [write_part(tmp_path / "parts", 0, rng)]
    CanonicalTable(tmp_path / "things", SPEC).build(parts, [])
    newer = SimpleNamespace(SCHEMA=SCHEMA.with_metadata({"dataset": "things", "version": "2"}), KEY=("id",),
                            VERSION_COLUMN="v")
    table = CanonicalTable(tmp_path / "things", newer)
    assert table.manifest() is None
    assert table.build(parts, []).how.startswith("rebuilt")


def test_reading_an_unbuilt_table_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="has not been built yet"):
        CanonicalTable(tmp_path / "things", SPEC).relation()
