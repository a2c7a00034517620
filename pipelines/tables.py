"""Canonical tables kept as a base file and change files, so a sync writes what changed, not the table.

Layout of ``canonical/<dataset>/``::

    manifest.json                  the commit point: the base, the live changes, the parts built from
    base-<lineage>-<seq>.parquet   the latest row of every key as of change <seq>, sorted by key
    change-<seq>.parquet           the rows that won in change <seq>: new keys and newer versions
    quarantine.parquet             every refused record of the landed parts, for an operator

The table is the base with each key's row replaced by its row in the latest live change that holds
it (:meth:`CanonicalTable.relation`). When landed parts were only added since the last build (the
population copy and the document axis always; the days unless one was re-landed), one change file
takes the latest row of each key among the new parts that beats the table's current row (a greater
version, or an equal one committed later, as a rebuild would pick), so an incremental sync costs
what changed. Once the live changes reach a quarter of the base, or :data:`MAX_LIVE_CHANGES` files,
they are folded into a new base. When a part the table was built from is gone (a day replaced), the
table is rebuilt from every committed part under a new *lineage*: a reader that followed the old one
(the published snapshot, which applies changes instead of reloading) sees that its changes no longer
lead to this table. Either way the table is the latest row per key of the committed parts.

Data files are immutable and written under fresh names before ``manifest.json`` is replaced
(write-then-rename), so a kill at any instant leaves the old table or the new one; a file left
behind by a killed build is removed by the next one. Files the previous manifest named are kept one
build longer (``retained``): a reader that opened the previous manifest still finds them, and the
snapshot can catch up across a compaction by applying the change files just folded.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb
import pyarrow as pa

from connectors.extract import atomic_path, latest_per_key_sql, query_to_parquet, write_quarantine

#: Live change files that trigger a compaction whatever their size (each costs readers a file open).
MAX_LIVE_CHANGES = 64
#: Live change rows, as a share of the base, that trigger a compaction.
COMPACT_SHARE = 0.25


@dataclass(frozen=True)
class Manifest:
    schema_version: str
    lineage: str  # changes whenever the table is rebuilt rather than changed
    seq: int  # the last change of this lineage
    base: str  # file name of the base
    base_rows: int
    rows: int  # rows of the table (distinct keys)
    changes: dict[str, int] = field(default_factory=dict)  # live change file → its rows, in seq order
    parts: list[str] = field(default_factory=list)  # committed record parts the table holds
    quarantine_parts: list[str] = field(default_factory=list)
    retained: list[str] = field(default_factory=list)  # files of the previous manifest, kept one build

    def files(self) -> list[str]:
        return [self.base, *self.changes]


@dataclass(frozen=True)
class Build:
    how: str  # "rebuilt", "changed", "compacted" or "unchanged", with figures, for the run's metadata
    changed_rows: int  # rows written to the change file (0 for a rebuild or no change)
    manifest: Manifest


def change_name(seq: int) -> str:
    return f"change-{seq:09d}.parquet"


def sql_paths(paths: list[Path]) -> str:
    """A DuckDB list literal of file paths (quotes doubled: a path is data, not SQL)."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


class CanonicalTable:
    """One canonical table: ``spec`` is its module in ``schemas/canonical`` (SCHEMA, KEY, VERSION_COLUMN)."""

    def __init__(self, directory: Path, spec) -> None:
        self.directory = directory
        self.schema: pa.Schema = spec.SCHEMA
        self.key: tuple[str, ...] = tuple(spec.KEY)
        self.version_column: str | None = spec.VERSION_COLUMN
        self.schema_version = spec.SCHEMA.metadata[b"version"].decode()

    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.json"

    @property
    def quarantine_path(self) -> Path:
        return self.directory / "quarantine.parquet"

    def manifest(self) -> Manifest | None:
        """The committed build, or None if there is none of this schema version (it must be rebuilt)."""
        if not self.manifest_path.exists():
            return None
        content = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        if content.get("schema_version") != self.schema_version:
            return None
        return Manifest(**content)

    def committed(self) -> Manifest:
        """The committed build; FileNotFoundError, saying so, when the table has not been built."""
        manifest = self.manifest()
        if manifest is None:
            raise FileNotFoundError(f"canonical table {self.directory.name} has not been built yet "
                                    f"({self.manifest_path})")
        return manifest

    def paths(self, manifest: Manifest) -> list[Path]:
        """The base and the live change files, in the order they apply."""
        return [self.directory / name for name in manifest.files()]

    def relation(self, manifest: Manifest | None = None) -> str:
        """A parenthesised SQL query of the table's rows (every canonical column, one row per key, in no
        order), to use as ``SELECT ... FROM <relation>``."""
        manifest = manifest or self.committed()
        columns = ", ".join(f'"{f.name}"' for f in self.schema)
        base = f"SELECT {columns} FROM read_parquet({sql_paths([self.directory / manifest.base])})"
        if not manifest.changes:
            return f"({base})"
        keys = ", ".join(f'"{k}"' for k in self.key)
        changes = sql_paths([self.directory / name for name in manifest.changes])
        latest = (f"SELECT {columns} FROM read_parquet({changes}, filename=true) "
                  f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY filename DESC) = 1")
        return f"(WITH ch AS ({latest}) {base} ANTI JOIN ch USING ({keys}) UNION ALL SELECT {columns} FROM ch)"

    def changes_since(self, manifest: Manifest, lineage: str, seq: int) -> list[Path] | None:
        """The change files that turn the table as it was at (``lineage``, ``seq``) into the build of
        ``manifest``, oldest first; None if that is not possible (another lineage, or a file is gone)."""
        if manifest.lineage != lineage or seq > manifest.seq:
            return None
        wanted = [change_name(s) for s in range(seq + 1, manifest.seq + 1)]
        kept = set(manifest.changes) | set(manifest.retained)
        if any(name not in kept or not (self.directory / name).exists() for name in wanted):
            return None
        return [self.directory / name for name in wanted]

    def build(self, record_parts: list[Path], quarantine_parts: list[Path]) -> Build:
        """Bring the table to the latest row per key of ``record_parts``: a change file when parts were
        only added since the last build, else a rebuild. Idempotent: re-running after a kill at any
        point gives the same table."""
        self.directory.mkdir(parents=True, exist_ok=True)
        previous = self.manifest()
        names = [str(p) for p in record_parts]
        if previous is None or not set(previous.parts) <= set(names):
            build = self._rebuild(record_parts)
        else:
            built = set(previous.parts)
            build = self._change(previous, [p for p in record_parts if str(p) not in built], names)
        quarantine_names = [str(p) for p in quarantine_parts]
        if previous is None or quarantine_names != previous.quarantine_parts or not self.quarantine_path.exists():
            write_quarantine(quarantine_parts, self.quarantine_path)
        build = replace(build, manifest=replace(build.manifest, quarantine_parts=quarantine_names))
        self._commit(build.manifest, previous)
        return build

    # -- internals ---------------------------------------------------------------------------------------

    def _rebuild(self, record_parts: list[Path]) -> Build:
        lineage = uuid.uuid4().hex[:12]
        base = f"base-{lineage}-{0:09d}.parquet"
        keys = ", ".join(f'"{k}"' for k in self.key)
        sql = (f"{latest_per_key_sql('files', self.schema, self.key, self.version_column)} ORDER BY {keys}"
               if record_parts else None)
        rows = query_to_parquet(sql, {"files": [str(p) for p in record_parts]}, self.schema, self.directory / base)
        manifest = Manifest(self.schema_version, lineage, 0, base, rows, rows, {}, [str(p) for p in record_parts])
        return Build(f"rebuilt from {len(record_parts)} parts", 0, manifest)

    def _change(self, previous: Manifest, new_parts: list[Path], names: list[str]) -> Build:
        if not new_parts:
            return Build("unchanged", 0, replace(previous, parts=names))
        seq = previous.seq + 1
        target = self.directory / change_name(seq)
        keys = ", ".join(f'"{k}"' for k in self.key)
        joined = " AND ".join(f'n."{k}" = o."{k}"' for k in self.key)
        order = ", ".join(f'n."{k}"' for k in self.key)
        current = f"SELECT {keys}{self._version_select()} FROM {self.relation(previous)}"
        newer = "TRUE"
        if self.version_column:
            v = f'"{self.version_column}"'
            newer = f"o.{v} IS NULL OR (n.{v} IS NOT NULL AND n.{v} >= o.{v})"
        winners = (f"WITH n AS ({latest_per_key_sql('new', self.schema, self.key, self.version_column)}), "
                   f"o AS ({current}) SELECT n.* FROM n LEFT JOIN o ON {joined} "
                   f"WHERE o.\"{self.key[0]}\" IS NULL OR {newer} ORDER BY {order}")
        written = query_to_parquet(winners, {"new": [str(p) for p in new_parts]}, self.schema, target)
        if not written:
            target.unlink()
            return Build(f"unchanged by {len(new_parts)} new parts", 0, replace(previous, parts=names))
        with duckdb.connect() as con:
            added = con.execute(f"SELECT count(*) FROM read_parquet({sql_paths([target])}) "
                                f"ANTI JOIN ({current}) USING ({keys})").fetchone()[0]
        manifest = replace(previous, seq=seq, rows=previous.rows + added, parts=names,
                           changes={**previous.changes, target.name: written})
        live_rows = sum(manifest.changes.values())
        if len(manifest.changes) >= MAX_LIVE_CHANGES or live_rows >= COMPACT_SHARE * max(manifest.base_rows, 1):
            return Build(f"compacted {len(manifest.changes)} changes ({live_rows} rows) after {written} changed rows "
                         f"from {len(new_parts)} new parts", written, self._compact(manifest))
        return Build(f"changed {written} rows from {len(new_parts)} new parts", written, manifest)

    def _version_select(self) -> str:
        return f', "{self.version_column}"' if self.version_column else ""

    def _compact(self, manifest: Manifest) -> Manifest:
        base = f"base-{manifest.lineage}-{manifest.seq:09d}.parquet"
        keys = ", ".join(f'"{k}"' for k in self.key)
        rows = query_to_parquet(f"SELECT * FROM {self.relation(manifest)} ORDER BY {keys}", {}, self.schema,
                                self.directory / base)
        return replace(manifest, base=base, base_rows=rows, rows=rows, changes={})

    def _commit(self, manifest: Manifest, previous: Manifest | None) -> None:
        """Replace the manifest, then remove what neither it nor the previous one names."""
        referenced = set(manifest.files())
        retained = sorted(set(previous.files()) - referenced) if previous is not None else []
        manifest = replace(manifest, retained=retained)
        with atomic_path(self.manifest_path) as temp:
            temp.write_text(json.dumps(manifest.__dict__, indent=1), encoding="utf-8")
        keep = referenced | set(retained)
        for entry in self.directory.glob("*.parquet"):
            if entry.name.startswith(("base-", "change-")) and entry.name not in keep:
                entry.unlink()
