"""Which connector serves which system, built from the hub's settings and ``HUB_<SYSTEM>_…`` knobs."""

from __future__ import annotations

import os
from importlib import import_module
from typing import Mapping

from connectors.base import Connector
from hub.config import Settings

#: system name → (module, class). Imported lazily: `hub check vdxp` need not load zeep's other WSDLs.
CONNECTORS = {
    "population": ("connectors.population", "PopulationConnector"),
    "civil": ("connectors.civil_status", "CivilStatusConnector"),
    "business": ("connectors.business", "BusinessConnector"),
    "vdxp": ("connectors.document_exchange", "DocumentExchangeConnector"),
    "onestop": ("connectors.onestop", "OnestopConnector"),
}


def build_connector(system: str, settings: Settings, environ: Mapping[str, str] | None = None) -> Connector:
    """The connector for ``system``; each class has ``from_settings(settings, environ)``."""
    if system not in CONNECTORS:
        raise ValueError(f"unknown system {system!r}; choose one of {', '.join(CONNECTORS)}")
    module, name = CONNECTORS[system]
    cls = getattr(import_module(module), name)
    return cls.from_settings(settings, os.environ if environ is None else environ)
