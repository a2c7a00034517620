"""Where the hub keeps its data, and the Dagster resource that hands connectors and paths to assets.

Layout under ``$HUB_HOME/lake``::

    landing/<system>/parts/*.parquet        (population, vdxp) immutable parts with provenance
    landing/<system>/state.json             the connector cursor, committed together with the parts
    landing/<system>/day=<D>/CURRENT        (civil, business) the generation that holds day D
    landing/<system>/day=<D>/gen-<id>/      one complete landing of day D: parts/ and state.json
    landing/<system>/day=<D>/work/          a landing of day D in progress (resumed after a kill)
    canonical/<dataset>/                    latest row of every key: a base and change files (tables.py)
    published/current.duckdb                the serving snapshot, swapped in atomically

A day is replaced as a whole: it is landed aside in ``work/`` (committing batch by batch, so a killed
run resumes it), the finished directory is renamed to a new generation, and only then does ``CURRENT``
(written by write-then-rename) point at it. Readers follow ``CURRENT``, so they see the old day or the
new one, never a mixture, and re-running a partition replaces exactly that partition.

The resource is the seam for tests: it builds each connector from ``HUB_…`` settings, so pointing
the variables at a sandbox (or any other implementation) swaps the national systems.
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import date
from pathlib import Path

import dagster as dg

from connectors.base import Connector
from connectors.extract import LandResult, atomic_path, committed_files, land, load_state
from connectors.registry import build_connector
from hub.config import Settings
from pipelines.tables import CanonicalTable
from schemas.canonical.registry import DATASETS

DATASET_SPECS = {spec.DATASET: spec for spec in DATASETS.values()}

#: Systems whose landing is partitioned by day (the others land by cursor into one directory).
DAY_SHAPED = ("civil", "business")


class HubLake(dg.ConfigurableResource):
    """The lake's root and the national-system connectors, from the hub's configuration."""

    home: str = ""  # default: HUB_HOME, else ./.hub

    @property
    def root(self) -> Path:
        return Path(self.home or os.environ.get("HUB_HOME", ".hub")).resolve() / "lake"

    def landing(self, system: str) -> Path:
        return self.root / "landing" / system

    def day_dir(self, system: str, day: date) -> Path:
        return self.landing(system) / f"day={day.isoformat()}"

    @property
    def canonical(self) -> Path:
        return self.root / "canonical"

    def table(self, dataset: str) -> CanonicalTable:
        return CanonicalTable(self.canonical / dataset, DATASET_SPECS[dataset])

    @property
    def published(self) -> Path:
        return self.root / "published"

    def connector(self, system: str) -> Connector:
        settings = Settings.from_env()
        return build_connector(system, settings, os.environ)

    def committed_files(self, system: str, dataset: str) -> tuple[list[Path], list[Path]]:
        """Every committed record part and quarantine part of ``system``, in commit order."""
        if system not in DAY_SHAPED:
            landing = self.landing(system)
            return committed_files(landing, load_state(landing / "state.json", system, dataset)["parts"])
        records: list[Path] = []
        quarantine: list[Path] = []
        for day_dir in sorted(self.landing(system).glob("day=*")):
            generation = current_generation(day_dir)
            if generation is not None:
                found = committed_files(generation, load_state(generation / "state.json", system, dataset)["parts"])
                records += found[0]
                quarantine += found[1]
        return records, quarantine


def current_generation(day_dir: Path) -> Path | None:
    """The complete landing of a day that readers use, or None before its first one."""
    pointer = day_dir / "CURRENT"
    if not pointer.exists():
        return None
    return day_dir / pointer.read_text(encoding="utf-8").strip()


def land_day(connector: Connector, day_dir: Path) -> LandResult:
    """Land one day (``connector`` bounded to it) and swap it in as the day's new generation."""
    work = day_dir / "work"
    result = land(connector, work)
    generation = day_dir / f"gen-{uuid.uuid4().hex[:12]}"
    work.rename(generation)
    with atomic_path(day_dir / "CURRENT") as temp:
        temp.write_text(generation.name, encoding="utf-8")
    for stale in day_dir.glob("gen-*"):  # earlier generations, and any orphan of a killed swap
        if stale != generation:
            shutil.rmtree(stale)
    return result
