"""Canonical table schemas: what every connector lands, whatever the wire looked like.

One module per dataset (``citizens``, ``civil_events``, ``enterprises``, ``documents``) defines its
``SCHEMA`` (pyarrow, with a ``version`` in the schema metadata), its ``KEY`` columns and its
``VERSION_COLUMN`` (which row of a key is the latest). Every table ends with the provenance columns
below, and every connector puts what it cannot accept into the shared ``QUARANTINE_SCHEMA``.
"""

from __future__ import annotations

import pyarrow as pa

#: Provenance carried by every landed row: where it came from, in which exchange, when, and a hash
#: of the raw payload it was read from (a page or a record), so any row can be traced back.
PROVENANCE_FIELDS = (
    pa.field("source_system", pa.string(), nullable=False),
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("fetched_at", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("payload_sha256", pa.string(), nullable=False),
)

#: A record a connector refused: why, and where it was in the exchange (page and position).
QUARANTINE_SCHEMA = pa.schema([
    pa.field("source_system", pa.string(), nullable=False),
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("operation", pa.string(), nullable=False),
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("position", pa.string(), nullable=False),  # e.g. "page 12, record 7" or "day 03/03/2026, id 42"
    pa.field("record_key", pa.string()),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("raw", pa.string()),  # the record as received (XML or JSON text), for an operator
    pa.field("fetched_at", pa.timestamp("ms", tz="UTC"), nullable=False),
], metadata={"dataset": "quarantine", "version": "1"})


def with_provenance(fields: list[pa.Field], dataset: str, version: int) -> pa.Schema:
    """A dataset schema: its own fields, then the provenance columns, with name and version metadata."""
    return pa.schema([*fields, *PROVENANCE_FIELDS], metadata={"dataset": dataset, "version": str(version)})


def empty_quarantine() -> pa.Table:
    return QUARANTINE_SCHEMA.empty_table()
