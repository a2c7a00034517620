"""Transport faults of ``national-systems.md`` §0, injected at configured rates, reproducibly.

Each system draws from its own seeded random stream, one draw per request, so the same seed and
the same sequence of requests give the same faults. At most one *response* fault hits a request
(they are mutually exclusive: a truncated body cannot also be a 503); ``latency`` is independent
and only delays the answer.

A fault plan is read from a TOML file (``hub sandbox serve --faults FILE``)::

    seed = 7
    [all]              # applies to every system unless a system's own table overrides a key
    http_503 = 0.02
    [population]
    latency = 0.05
    latency_ms = 150

Data faults (the anomalies recorded in the ground truth) are configured in the same file under
``[data]``; see :mod:`sandbox.province`.
"""

from __future__ import annotations

import random
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

SYSTEMS = ("population", "civil", "business", "vdxp", "dvcqg")

#: Response faults, mutually exclusive per request.
RESPONSE_FAULTS = (
    "http_500",  # HTTP 500 with the system's error envelope
    "http_502",  # a gateway's 502 with a non-envelope body
    "http_503",  # HTTP 503 SERVICE_UNAVAILABLE
    "reset",  # headers and part of the body, then the connection is dropped
    "truncate",  # a complete HTTP response whose body is cut short
    "malformed",  # a complete HTTP 200 whose XML/JSON is not well-formed
    "soap_fault",  # a SOAP fault (REST systems: a JSON error envelope) saying 503
    "rate_limit",  # 429 with Retry-After although the client is within its limit
    "token_expiry",  # REST: the bearer token is revoked and the call answered 401
)
#: Record faults: change what a paged answer contains, not whether it arrives.
RECORD_FAULTS = (
    "duplicate_record",  # a record of the previous page comes again
    "concurrent_update",  # a record already delivered is updated while the client pages
)
ALL_FAULTS = ("latency", *RESPONSE_FAULTS, *RECORD_FAULTS)


class FaultConfigError(ValueError):
    """The fault file is malformed; the message says where."""


@dataclass
class Decision:
    """What happens to one request."""

    latency_s: float = 0.0
    response: str | None = None
    records: frozenset[str] = frozenset()

    def has(self, name: str) -> bool:
        return name == self.response or name in self.records


@dataclass
class FaultPlan:
    """Fault rates per system (each in [0, 1]) plus the seed that makes them reproducible."""

    seed: int = 0
    rates: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_ms: dict[str, int] = field(default_factory=dict)
    data: dict[str, float] = field(default_factory=dict)

    @classmethod
    def none(cls) -> "FaultPlan":
        return cls()

    @classmethod
    def uniform(cls, rate: float, seed: int = 0, latency_ms: int = 20) -> "FaultPlan":
        """Every fault on every system at ``rate``: the tests' "everything switched on"."""
        rates = {s: {f: rate for f in ALL_FAULTS} for s in SYSTEMS}
        return cls(seed=seed, rates=rates, latency_ms={s: latency_ms for s in SYSTEMS})

    @classmethod
    def load(cls, path: Path) -> "FaultPlan":
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise FaultConfigError(f"{path}: {exc}") from exc
        return cls.from_mapping(doc, where=str(path))

    @classmethod
    def from_mapping(cls, doc: Mapping, where: str = "faults") -> "FaultPlan":
        known_tables = {"all", "data", *SYSTEMS}
        unknown = set(doc) - known_tables - {"seed"}
        if unknown:
            raise FaultConfigError(f"{where}: unknown table(s) {sorted(unknown)}; expected {sorted(known_tables)}")
        seed = doc.get("seed", 0)
        if not isinstance(seed, int):
            raise FaultConfigError(f"{where}: seed must be an integer")
        base = dict(doc.get("all", {}))
        plan = cls(seed=seed, data={k: _rate(where, "data", k, v) for k, v in doc.get("data", {}).items()})
        for system in SYSTEMS:
            merged = {**base, **doc.get(system, {})}
            latency_ms = merged.pop("latency_ms", 100)
            if not isinstance(latency_ms, int) or latency_ms < 0:
                raise FaultConfigError(f"{where}: [{system}] latency_ms must be a non-negative integer")
            for name in merged:
                if name not in ALL_FAULTS:
                    raise FaultConfigError(f"{where}: [{system}] unknown fault {name!r}; known: {', '.join(ALL_FAULTS)}")
            plan.rates[system] = {k: _rate(where, system, k, v) for k, v in merged.items()}
            plan.latency_ms[system] = latency_ms
        total = {s: sum(v for k, v in r.items() if k in RESPONSE_FAULTS) for s, r in plan.rates.items()}
        for system, t in total.items():
            if t > 1:
                raise FaultConfigError(f"{where}: [{system}] response fault rates add up to {t:.2f} > 1")
        return plan

    def injector(self, system: str) -> "FaultInjector":
        return FaultInjector(system, self.rates.get(system, {}), self.latency_ms.get(system, 100), self.seed)


def _rate(where: str, table: str, key: str, value: object) -> float:
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise FaultConfigError(f"{where}: [{table}] {key} must be a rate between 0 and 1, got {value!r}")
    return float(value)


class FaultInjector:
    """Draws one :class:`Decision` per request from a stream seeded by (seed, system)."""

    def __init__(self, system: str, rates: Mapping[str, float], latency_ms: int, seed: int) -> None:
        self.system = system
        self.rates = {k: v for k, v in rates.items() if v > 0}
        self.latency_s = latency_ms / 1000
        self._rng = random.Random(f"{seed}:{system}")
        self._lock = threading.Lock()
        self.requests = 0
        self.counts: dict[str, int] = {}

    @property
    def active(self) -> bool:
        return bool(self.rates)

    def draw(self, applicable: frozenset[str] | set[str] | None = None) -> Decision:
        """The fate of the next request; ``applicable`` limits the faults that make sense here."""
        if not self.rates:
            return Decision()
        with self._lock:
            self.requests += 1
            # Always consume the same number of draws so one fault's rate does not shift the others.
            u_latency, u_response, *u_records = (self._rng.random() for _ in range(2 + len(RECORD_FAULTS)))
        decision = Decision()
        if u_latency < self.rates.get("latency", 0):
            decision.latency_s = self.latency_s
        edge = 0.0
        for name in RESPONSE_FAULTS:
            rate = self.rates.get(name, 0)
            if u_response < edge + rate:
                if applicable is None or name in applicable:
                    decision.response = name
                break
            edge += rate
        decision.records = frozenset(
            name for name, u in zip(RECORD_FAULTS, u_records)
            if u < self.rates.get(name, 0) and (applicable is None or name in applicable)
        )
        with self._lock:
            for name in filter(None, (decision.response, *decision.records)):
                self.counts[name] = self.counts.get(name, 0) + 1
        return decision
