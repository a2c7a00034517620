"""A sandbox province pulled through the real connectors, for the reconciliation tests.

The province is served on loopback, its population copy, civil-status registry and business registry
(variant B, which gives the representatives' ID papers) are extracted as ``hub extract`` does, and its
ground truth is written beside them. The population's landing parts are kept: they are its history.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from connectors.extract import committed_files, load_state, run_extract
from connectors.registry import build_connector
from hub.config import Settings
from sandbox.faults import FaultPlan
from tests.conftest import RunningSandbox, start_sandbox

#: Conflict faults well above the defaults, so a small province shows each kind many times.
RAISED_CONFLICT_FAULTS = {"death_not_in_population": 0.3, "marriage_not_in_population": 0.2, "moved_out": 0.03,
                          "rep_name_mismatch": 0.15}


@dataclass
class Province:
    root: Path
    citizens: Path
    civil: Path
    enterprises: Path
    truth: Path
    env: dict[str, str]

    def population_parts(self) -> list[Path]:
        """Every committed record part of the population copy, in commit order."""
        landing = self.root / "population"
        return committed_files(landing, load_state(landing / "state.json", "population", "citizens")["parts"])[0]

    def business_parts(self) -> list[Path]:
        landing = self.root / "business"
        return committed_files(landing, load_state(landing / "state.json", "business", "enterprises")["parts"])[0]

    def anomalies(self):
        return pq.read_table(self.truth / "anomalies.parquet")


def extract(sb: RunningSandbox, out: Path, systems: tuple[str, ...] = ("population", "civil", "business")) -> None:
    """Pull ``systems`` of the running sandbox ``sb`` into ``out`` (incrementally, if pulled before)."""
    env = {**sb.env, "HUB_BUSINESS_VARIANT": "B", "HUB_HOME": str(out / "home"),
           **{f"HUB_{s}_RATE_LIMIT": "0" for s in ("POPULATION", "CIVIL", "BUSINESS")}}
    settings = Settings.from_env(env)
    for system in systems:
        run_extract(build_connector(system, settings, env), out / system)


def province_paths(out: Path, env: dict[str, str]) -> Province:
    return Province(out, out / "population" / "citizens.parquet", out / "civil" / "civil_events.parquet",
                    out / "business" / "enterprises.parquet", out / "truth", env)


def extract_province(out: Path, residents: int, seed: int, data_faults: dict[str, float] | None = None) -> Province:
    """Serve a sandbox, pull it into ``out`` and write its ground truth; the sandbox is then stopped."""
    plan = FaultPlan(data=dict(data_faults or {}))
    with start_sandbox(residents=residents, seed=seed, faults=plan, rate_limit=0) as sb:
        sb.sandbox.truth.write(out / "truth")
        extract(sb, out)
        return province_paths(out, dict(sb.env))
