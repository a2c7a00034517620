"""The ground truth of the synthetic province: who each served record really is, and what was garbled.

Three tables, written as Parquet by :meth:`GroundTruth.write` (and readable by the tests and the
reconciliation benchmark):

- ``records``: ``system, dataset, record_key, role, entity_kind, entity_id`` — for every record a
  system serves, each person or enterprise it mentions (a birth record names the child, the mother,
  the father and the requester) and their true identity (``P0000042`` / ``E0000007``);
- ``anomalies``: ``system, dataset, record_key, field, anomaly, true_value, served_value`` — every
  injected data fault of ``national-systems.md`` §5;
- ``persons`` / ``enterprises``: the true attributes, to score links and golden records against;
- ``dossier_applicants`` / ``onestop_systems``: the one-stop-shop dossiers' applicants (who each
  ``so_giay_to`` really is, and the applicant fault if any) and the systems themselves (agency, backend,
  clock offset), from :mod:`sandbox.onestop`; malformed dossier codes are ``anomalies`` on ``ma_ho_so``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

RECORD_FIELDS = ("system", "dataset", "record_key", "role", "entity_kind", "entity_id")
ANOMALY_FIELDS = ("system", "dataset", "record_key", "field", "anomaly", "true_value", "served_value")


def person_key(pid: int) -> str:
    return f"P{pid:07d}"


def enterprise_key(eid: int) -> str:
    return f"E{eid:07d}"


class GroundTruth:
    """Collects truth rows column-wise (cheap to append, written once)."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {f: [] for f in RECORD_FIELDS}
        self.anomalies: dict[str, list[str]] = {f: [] for f in ANOMALY_FIELDS}
        self.tables: dict[str, pa.Table] = {}

    def record(self, system: str, dataset: str, record_key: str, role: str, entity_kind: str, entity_id: str) -> None:
        for name, value in zip(RECORD_FIELDS, (system, dataset, record_key, role, entity_kind, entity_id)):
            self.records[name].append(value)

    def record_many(self, system: str, dataset: str, record_keys: list[str], role: str, entity_kind: str,
                    entity_ids: list[str]) -> None:
        """Bulk form of :meth:`record` for one role across many records."""
        n = len(record_keys)
        for name, values in zip(RECORD_FIELDS, ([system] * n, [dataset] * n, record_keys, [role] * n,
                                                [entity_kind] * n, entity_ids)):
            self.records[name].extend(values)

    def anomaly(self, system: str, dataset: str, record_key: str, field: str, anomaly: str,
                true_value: object, served_value: object) -> None:
        row = (system, dataset, record_key, field, anomaly, _text(true_value), _text(served_value))
        for name, value in zip(ANOMALY_FIELDS, row):
            self.anomalies[name].append(value)

    def anomaly_many(self, system: str, dataset: str, record_keys: list[str], field: str, anomaly: str,
                     true_values: list[object], served_values: list[object]) -> None:
        """Bulk form of :meth:`anomaly` for one kind of fault across many records."""
        n = len(record_keys)
        columns = ([system] * n, [dataset] * n, record_keys, [field] * n, [anomaly] * n,
                   [_text(v) for v in true_values], [_text(v) for v in served_values])
        for name, values in zip(ANOMALY_FIELDS, columns):
            self.anomalies[name].extend(values)

    def add_table(self, name: str, table: pa.Table) -> None:
        """A table of true attributes (``persons``, ``enterprises``, ``documents``)."""
        self.tables[name] = table

    def anomaly_table(self) -> pa.Table:
        return pa.table({k: pa.array(v, pa.string()) for k, v in self.anomalies.items()})

    def record_table(self) -> pa.Table:
        return pa.table({k: pa.array(v, pa.string()) for k, v in self.records.items()})

    def write(self, directory: Path) -> list[Path]:
        """Write every table to ``directory/<name>.parquet`` atomically (temp file, then rename)."""
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, table in {"records": self.record_table(), "anomalies": self.anomaly_table(), **self.tables}.items():
            target = directory / f"{name}.parquet"
            temp = target.with_suffix(".parquet.tmp")
            pq.write_table(table, temp)
            temp.replace(target)
            written.append(target)
        return written


def _text(value: object) -> str:
    return "" if value is None else str(value)
