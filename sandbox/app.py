"""The sandbox: the national systems of ``national-systems.md`` on one loopback HTTP server.

Each system lives under its own base path (``/population``, ``/civil``, ``/business``, ``/vdxp``,
and ``/dvcqg`` for the national public-service portal), so each has its own ``{base}`` exactly as a
real deployment would. Credentials are drawn fresh at every start and written, with the URLs, to a
runtime file (mode 0600) that ``hub sandbox env`` turns into ``export HUB_…`` lines.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from sandbox.agencies import PROVINCE, PROVINCE_CODE, PROVINCE_CODE_102, province_agency_codes
from sandbox.auth import Client, TokenIssuer
from sandbox.business import BusinessService, history_window
from sandbox.civil_status import CivilStatusService
from sandbox.document_exchange import DocumentAxisService
from sandbox.faults import SYSTEMS, FaultPlan
from sandbox.ground_truth import GroundTruth
from sandbox.onestop import OneStopConfig, OneStopSystems
from sandbox.population import PopulationRegistry, PopulationService
from sandbox.portal import PortalService
from sandbox.province import CIVIL_YEARS, DEFAULT_AS_OF, generate_residents
from hub.ratelimit import RateLimiter
from sandbox.service import SystemRuntime
from schemas import timefmt


@dataclass
class SandboxConfig:
    residents: int = 10_000
    seed: int = 0
    faults: FaultPlan = field(default_factory=FaultPlan.none)
    rate_limit: float = 50.0  # requests per second per client, each system
    token_lifetime_s: float = 300.0
    visibility_timeout_s: float = 60.0
    as_of: datetime = DEFAULT_AS_OF
    onestop: OneStopConfig = field(default_factory=OneStopConfig)  # the one-stop-shop databases (§6)
    portal_session_s: float = 1800.0  # lifetime of a national-portal (dvcqg) session


@dataclass(frozen=True)
class Credentials:
    """What the hub needs to call each system; drawn at random for every sandbox start."""

    population_user: str
    population_password: str
    civil_client_id: str
    civil_client_secret: str
    business_client_id: str
    business_client_secret: str
    vdxp_system_id: str
    vdxp_secret: str
    dvcqg_user: str
    dvcqg_password: str
    dvcqg_dstcode: str = PROVINCE_CODE  # the province's code on the portal (header dstcode)

    @classmethod
    def generate(cls) -> "Credentials":
        token = lambda: secrets.token_urlsafe(24)  # noqa: E731
        return cls("hub-h31", token(), "hub-h31-civil", token(), "hub-h31-business", token(), "hub-h31-vdxp", token(),
                   dvcqg_user="hub-h31-dvcqg", dvcqg_password=token())


class Sandbox:
    """Everything the sandbox serves, built deterministically from the config (but the secrets)."""

    def __init__(self, config: SandboxConfig, credentials: Credentials | None = None) -> None:
        self.config = config
        self.credentials = credentials or Credentials.generate()
        self.truth = GroundTruth()
        self.residents = generate_residents(config.residents, seed=config.seed, as_of=config.as_of,
                                            data_faults=config.faults.data)
        self.truth.add_table("persons", self.residents.truth_table())
        c = self.credentials
        agencies = province_agency_codes()
        provinces = frozenset({PROVINCE})
        secrets_by_system = {
            "population": Client(c.population_user, c.population_password, agencies, provinces),
            "civil": Client(c.civil_client_id, c.civil_client_secret, agencies, provinces),
            "business": Client(c.business_client_id, c.business_client_secret, agencies, provinces),
            "vdxp": Client(c.vdxp_system_id, c.vdxp_secret, agencies, provinces),
            "dvcqg": Client(c.dvcqg_user, c.dvcqg_password, agencies, provinces),
        }
        self.runtimes = {
            system: SystemRuntime(system, {client.name: client}, RateLimiter(config.rate_limit),
                                  config.faults.injector(system))
            for system, client in secrets_by_system.items()
        }
        seed = config.seed
        self.population = PopulationService(PopulationRegistry(self.residents, self.truth, seed),
                                            self.runtimes["population"], seed)
        self.civil = CivilStatusService(self.residents, self.runtimes["civil"], self.truth, seed,
                                        TokenIssuer(self.runtimes["civil"].clients, config.token_lifetime_s))
        self.business = BusinessService(self.residents, self.runtimes["business"], self.truth, seed,
                                        TokenIssuer(self.runtimes["business"].clients, config.token_lifetime_s))
        self.vdxp = DocumentAxisService(self.residents, self.runtimes["vdxp"], self.truth, seed,
                                        visibility_timeout_s=config.visibility_timeout_s)
        # Drawn (and put in the ground truth) when first needed: ``self.onestop.open()`` or ``.generate()``.
        self.onestop = OneStopSystems(config.onestop, self.residents, self.business.registry, self.truth, seed)
        self.dvcqg = PortalService(self.runtimes["dvcqg"], c.dvcqg_dstcode, session_s=config.portal_session_s)

    def change(self, share: float, seed: int = 0) -> dict[str, int]:
        """Change ``share`` of everything now, as the registries would see it: residents get a fresh
        ``NgayCapNhat``, civil-status records of each module a fresh ``ngayCapNhat``, enterprises a
        change dossier processed today. The load of an incremental sync, reproducible from ``seed``."""
        rng = np.random.default_rng([self.config.seed, seed, 99])

        def pick(population: np.ndarray) -> np.ndarray:
            return rng.choice(population, int(round(len(population) * share)), replace=False)

        for pid in pick(np.arange(self.residents.n)):
            self.population.registry.touch(int(pid))
        civil = self.civil.registry
        counts = {"residents": int(round(self.residents.n * share))}
        for module, table in civil.tables.items():
            rows = pick(np.arange(len(table.ids)))
            for row in rows:
                civil.update_now(module, int(row))
            counts[module] = len(rows)
        enterprises = pick(self.business.registry.changeable())
        for eid in enterprises:
            self.business.registry.amend_now(int(eid), time.time())
        counts["enterprises"] = len(enterprises)
        return counts

    def app(self) -> Starlette:
        routes = [
            Route("/", self._index),
            Mount("/population", routes=[self.population.endpoint.route("/dancu")]),
            Mount("/civil", routes=self.civil.routes()),
            Mount("/business", routes=self.business.routes()),
            Mount("/vdxp", routes=self.vdxp.routes()),
            Mount("/dvcqg", routes=self.dvcqg.routes()),
        ]
        return Starlette(routes=routes)

    async def _index(self, request) -> JSONResponse:
        base = str(request.base_url).rstrip("/")
        return JSONResponse({"systems": {s: f"{base}/{s}" for s in SYSTEMS},
                             "residents": self.residents.n, "seed": self.config.seed})

    def environment(self, base_url: str) -> dict[str, str]:
        """The ``HUB_…`` variables that point the hub at this sandbox served at ``base_url``.

        Besides the systems' addresses and credentials, ``HUB_CIVIL_SINCE`` and ``HUB_BUSINESS_SINCE``
        say where each registry's history starts, so a first sync reads all of it and no more, and
        ``HUB_<SYSTEM>_RATE_LIMIT`` is the sandbox's own limit, so the hub neither idles nor gets 429s."""
        c = self.credentials
        officer = f"{int(self.residents.personal_id[0]):012d}"
        return {
            "HUB_PROVINCE": PROVINCE,
            "HUB_AGENCY_CODE": PROVINCE_CODE_102,
            "HUB_OFFICER_ID": officer,
            "HUB_POPULATION_URL": f"{base_url}/population",
            "HUB_POPULATION_USER": c.population_user,
            "HUB_POPULATION_PASSWORD": c.population_password,
            "HUB_CIVIL_URL": f"{base_url}/civil",
            "HUB_CIVIL_CLIENT_ID": c.civil_client_id,
            "HUB_CIVIL_CLIENT_SECRET": c.civil_client_secret,
            "HUB_CIVIL_SINCE": timefmt.render(self.residents.as_of - (CIVIL_YEARS * 366 + 1) * 86_400, timefmt.VN_DAY),
            "HUB_BUSINESS_URL": f"{base_url}/business",
            "HUB_BUSINESS_CLIENT_ID": c.business_client_id,
            "HUB_BUSINESS_CLIENT_SECRET": c.business_client_secret,
            "HUB_BUSINESS_VARIANT": "A",
            "HUB_BUSINESS_SINCE": timefmt.render(history_window(self.residents.as_of)[0] * 86_400, timefmt.VN_DAY),
            "HUB_VDXP_URL": f"{base_url}/vdxp",
            "HUB_VDXP_SYSTEM_ID": c.vdxp_system_id,
            "HUB_VDXP_SECRET": c.vdxp_secret,
            "HUB_DVCQG_URL": f"{base_url}/dvcqg",
            "HUB_DVCQG_USER": c.dvcqg_user,
            "HUB_DVCQG_PASSWORD": c.dvcqg_password,
            "HUB_DVCQG_DSTCODE": c.dvcqg_dstcode,
            **self.onestop.environment(),  # HUB_ONESTOP_URLS, once their databases are open
            # The hub paces itself at the limit each system allows this client.
            **{f"HUB_{system.upper()}_RATE_LIMIT": f"{self.config.rate_limit:g}"
               for system in SYSTEMS if self.config.rate_limit > 0},
        }


def write_runtime_file(path: Path, environment: dict[str, str], pid: int) -> None:
    """Write the running sandbox's variables where ``hub sandbox env`` finds them (owner-only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"pid": pid, "environment": environment}, handle, indent=2)
    temp.replace(path)


def read_runtime_file(path: Path) -> dict[str, str]:
    """The variables of the sandbox that wrote ``path``; ``FileNotFoundError`` if none is running."""
    data = json.loads(path.read_text(encoding="utf-8"))
    pid = int(data.get("pid", 0))
    if pid:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise FileNotFoundError(f"the sandbox that wrote {path} (pid {pid}) is no longer running") from None
        except PermissionError:
            pass
    return data["environment"]
