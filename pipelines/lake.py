"""Where the hub keeps its data, and the Dagster resource that hands connectors and paths to assets.

Layout under ``$HUB_HOME/lake``::

    landing/<system>/parts/*.parquet   immutable parts with provenance, one per committed batch
    landing/<system>/state.json        the connector cursor, committed together with the parts
    canonical/<dataset>.parquet        latest row of every key, rebuilt from the landed parts
    published/current.duckdb           the serving snapshot, swapped in atomically

The resource is the seam for tests: it builds each connector from ``HUB_…`` settings, so pointing
the variables at a sandbox (or any other implementation) swaps the national systems.
"""

import os
from pathlib import Path

import dagster as dg

from connectors.base import Connector
from connectors.registry import build_connector
from hub.config import Settings


class HubLake(dg.ConfigurableResource):
    """The lake's root and the national-system connectors, from the hub's configuration."""

    home: str = ""  # default: HUB_HOME, else ./.hub

    @property
    def root(self) -> Path:
        return Path(self.home or os.environ.get("HUB_HOME", ".hub")).resolve() / "lake"

    def landing(self, system: str) -> Path:
        return self.root / "landing" / system

    @property
    def canonical(self) -> Path:
        return self.root / "canonical"

    @property
    def published(self) -> Path:
        return self.root / "published"

    def connector(self, system: str) -> Connector:
        settings = Settings.from_env()
        return build_connector(system, settings, os.environ)
