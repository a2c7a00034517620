"""What a connector is: ``check()`` and an incremental ``read(cursor)`` of Arrow batches.

A connector knows one national system's protocol and nothing of Dagster or of files. ``read`` yields
:class:`Batch` objects: canonical rows, quarantined rows, and the cursor that is valid *once this batch
is stored*. Whoever stores the batch commits the cursor together with it (never before), then calls
``after_commit`` (the document axis settles its messages there), so a run killed at any instant is
re-run from the last committed cursor with nothing lost and nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, Iterator, Protocol

import pyarrow as pa

from schemas.canonical import empty_quarantine


@dataclass
class Batch:
    records: pa.Table
    cursor: dict[str, Any]
    quarantine: pa.Table = field(default_factory=empty_quarantine)
    after_commit: Callable[[], None] | None = None
    progress: int = 0  # source records covered by this batch, for progress bars


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    message: str  # one line: what worked, or what failed and why


class Connector(Protocol):
    system: str  # population / civil / business / vdxp
    dataset: str  # citizens / civil_events / enterprises / documents
    schema: pa.Schema
    key: tuple[str, ...]  # key columns of the canonical table
    version_column: str | None  # the latest row per key has the greatest value here (None: last read wins)

    def check(self) -> CheckResult: ...

    def read(self, cursor: dict[str, Any] | None) -> Iterator[Batch]: ...


class DayShapedConnector(Connector, Protocol):
    """A source whose changes come per day (civil-status lists, business-registry windows): it can be
    read for a range of days alone, which is what a daily partition of the lake holds."""

    def between(self, first: date, last: date) -> "DayShapedConnector": ...

    def history_start(self) -> date: ...
