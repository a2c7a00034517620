"""What every sandbox system shares: its clients, rate limit, fault stream and error type."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field

from schemas.errors import ERROR_NAMES
from sandbox.auth import Client
from sandbox.faults import Decision, FaultInjector
from hub.ratelimit import RateLimiter


class ServiceError(Exception):
    """An answer in the system's error vocabulary (§0), with the HTTP status that fits."""

    def __init__(self, code: int, message: str, http_status: int | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.code = code
        self.name = ERROR_NAMES.get(code, "DATA_INCORRECT")
        self.message = message
        self.retry_after = retry_after
        self.http_status = http_status or _default_status(code)


def _default_status(code: int) -> int:
    return {100: 401, 101: 403, 106: 403, 108: 403, 201: 404, 429: 429, 503: 503}.get(code, 400)


@dataclass
class SystemRuntime:
    """Per-system runtime state: registered clients, limiter, faults, allowed caller networks."""

    name: str
    clients: dict[str, Client]
    limiter: RateLimiter
    faults: FaultInjector
    allowed_networks: tuple[ipaddress._BaseNetwork, ...] = field(
        default_factory=lambda: (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    )

    def check_ip(self, host: str | None) -> None:
        """101 IP_DISALLOWED unless the caller's address is in an allowed network."""
        try:
            address = ipaddress.ip_address(host or "")
        except ValueError:
            raise ServiceError(101, f"caller address {host!r} is not allowed") from None
        if not any(address in net for net in self.allowed_networks):
            raise ServiceError(101, f"caller address {host} is not allowed")

    def check_rate(self, client: Client) -> None:
        wait = self.limiter.acquire(client.name)
        if wait:
            raise ServiceError(429, f"rate limit of {self.limiter.rate:g} requests/s exceeded", retry_after=wait)

    async def draw(self, applicable: frozenset[str] | None = None) -> Decision:
        """Draw this request's faults and serve the injected latency."""
        decision = self.faults.draw(applicable)
        if decision.latency_s:
            await asyncio.sleep(decision.latency_s)
        return decision


def injected_error(decision: Decision) -> ServiceError | None:
    """The error that replaces the answer for a replacing fault, if any."""
    match decision.response:
        case "http_500":
            return ServiceError(500, "injected internal server error", http_status=500)
        case "http_503" | "soap_fault":
            return ServiceError(503, "service temporarily unavailable (injected)", http_status=503)
        case "rate_limit":
            return ServiceError(429, "too many requests (injected)", retry_after=1)
    return None
