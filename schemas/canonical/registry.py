"""Which canonical dataset each national system lands, with its schema, key and version column."""

from __future__ import annotations

from types import ModuleType

from schemas.canonical import citizens, civil_events, documents, dossiers, enterprises

#: system → the module defining DATASET, SCHEMA, KEY and VERSION_COLUMN of what it lands.
DATASETS: dict[str, ModuleType] = {
    "population": citizens,
    "civil": civil_events,
    "business": enterprises,
    "vdxp": documents,
    "onestop": dossiers,
}
