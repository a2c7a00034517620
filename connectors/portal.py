"""A client of the National Public Service Portal (DVCQG, ``national-systems.md`` §5).

The portal is written to, not read from, so this is not a :class:`~connectors.base.Connector`: it is the
small set of calls the reporter (:mod:`hub.portal_report`) needs. Every call goes through the shared
:class:`~connectors.transport.Transport` (timeouts, pacing under ``HUB_DVCQG_RATE_LIMIT``, TLS options)
with the ``dstcode`` header, and a session from ``POST {base}/login`` that is fetched again when the
portal answers ``error_code`` ``"401"`` (sessions expire).

Reads (``TraCuuHoSo``, the catalogues) are retried like any other connector's calls. Writes are
**not** retried here: the portal does not deduplicate progress steps, and a write whose answer was
lost (a reset, a truncated or unreadable body, a 5xx from a gateway) may well have been applied. A
failed write raises :class:`WriteOutcomeUnknown`, and the reporter looks the dossiers up before it
sends anything again. A refusal the portal states (``error_code`` other than ``"0"``) is not an unknown
outcome: it raises :class:`PortalRefusal` with the portal's code and message, and nothing was written
(a write with several items is all or nothing).
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

import requests

from connectors.errors import AuthenticationFailed, ConnectorError, MalformedResponse, PermanentError
from connectors.transport import HttpRequest, Transport, options_from_env
from hub.config import ConfigError, Secret, Settings

SYSTEM = "dvcqg"
#: error_code of an expired or unknown session.
SESSION_REFUSED = "401"
#: error_code of ``DongBoHoSoMC`` for a new dossier that the portal already has.
ALREADY_EXISTS = "3"
#: error_code of ``DongBoHoSoMC`` for an update of a dossier the portal does not have.
NOT_FOUND = "201"


class PortalRefusal(Exception):
    """The portal answered and refused the call: nothing of it was written."""

    def __init__(self, service: str, code: str, message: str) -> None:
        super().__init__(f"{SYSTEM} {service}: refused with error_code {code}: {message}")
        self.service = service
        self.code = code
        self.message = message


class WriteOutcomeUnknown(Exception):
    """A write got no readable answer: it may or may not have been applied."""

    def __init__(self, service: str, cause: Exception) -> None:
        super().__init__(f"{SYSTEM} {service}: no readable answer, the write may or may not have been applied: {cause}")
        self.service = service


class _Session:
    """The portal's login session, applied to each integration call's body (``session``)."""

    def __init__(self, client: "PortalClient") -> None:
        self._client = client
        self._session = ""
        self._lock = threading.Lock()

    def apply(self, request: HttpRequest) -> None:
        if not isinstance(request.json, dict) or "service" not in request.json:
            return
        with self._lock:
            if not self._session:
                self._session = self._client.login()
            request.json["session"] = self._session

    def refresh(self) -> None:
        with self._lock:
            self._session = self._client.login()


class PortalClient:
    def __init__(self, base_url: str, username: str, password: Secret, dstcode: str, transport: Transport) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self.dstcode = dstcode
        self.transport = transport
        self._login_transport = Transport(SYSTEM, transport.options, session=transport.session)
        transport.auth = _Session(self)

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str]) -> "PortalClient":
        missing = [name for name, value in (("HUB_DVCQG_URL", settings.dvcqg_url), ("HUB_DVCQG_USER", settings.dvcqg_user),
                                            ("HUB_DVCQG_PASSWORD", settings.dvcqg_password),
                                            ("HUB_DVCQG_DSTCODE", settings.dvcqg_dstcode)) if not value]
        if missing:
            raise ConfigError(f"the national portal is not configured: set {', '.join(missing)}")
        options = options_from_env(SYSTEM, environ)
        return cls(settings.dvcqg_url, settings.dvcqg_user, settings.dvcqg_password, settings.dvcqg_dstcode,
                   Transport(SYSTEM, options, base_url=settings.dvcqg_url))

    # -- calls -------------------------------------------------------------------------------------------

    def login(self) -> str:
        def build(_: str) -> HttpRequest:
            return HttpRequest("POST", f"{self.base_url}/login", headers={"dstcode": self.dstcode},
                               json={"username": self.username, "password": self._password.reveal()})

        def parse(response: requests.Response) -> str:
            body = _envelope(response, "login")
            if str(body.get("error_code")) != "0" or not body.get("session"):
                raise PermanentError(f"login refused: error_code {body.get('error_code')}: {body.get('message', '')}",
                                     code=str(body.get("error_code", "")))
            return str(body["session"])

        return self._login_transport.call("login", build, parse)

    def lookup(self, agency: str, dossier_code: str) -> dict[str, Any] | None:
        """``TraCuuHoSo``: the portal's copy of one dossier with ``QuaTrinhXuLy``, or None."""
        result = self._read("TraCuuHoSo", agency, {"mahoso": dossier_code})
        if not result:
            return None
        if isinstance(result, list):  # some deployments wrap the one dossier in a list
            result = result[0] if result else None
        if result is not None and not isinstance(result, dict):
            raise ConnectorError(SYSTEM, "TraCuuHoSo", "", f"answer for {dossier_code} is not a dossier: {result!r:.200}")
        return result

    def procedures(self, agency: str) -> list[dict[str, Any]]:
        return list(self._read("LayDanhSachTTHC", agency, {}) or [])

    def sync_dossiers(self, agency: str, dossiers: list[dict[str, Any]], updating: bool) -> None:
        """``DongBoHoSoMC``: all of ``dossiers`` as new (``isUpdating`` "False") or as updates."""
        self._write("DongBoHoSoMC", agency, {"isUpdating": "True" if updating else "False", "data": dossiers})

    def add_steps(self, agency: str, steps: list[dict[str, Any]]) -> None:
        """``CapNhatTienDoHoSoMC``: progress steps. Not idempotent: the portal records a repeat twice."""
        self._write("CapNhatTienDoHoSoMC", agency, {"data": steps})

    # -- plumbing ----------------------------------------------------------------------------------------

    def _request(self, service: str, agency: str, params: dict[str, Any]) -> HttpRequest:
        return HttpRequest("POST", f"{self.base_url}/integration", headers={"dstcode": self.dstcode},
                           json={"madonvi": agency, "service": service, **params})

    def _read(self, service: str, agency: str, params: dict[str, Any]) -> Any:
        def parse(response: requests.Response) -> Any:
            body = _envelope(response, service)
            code = str(body.get("error_code"))
            if code == SESSION_REFUSED:
                raise AuthenticationFailed(f"session refused: {body.get('message', '')}")
            if code != "0":
                raise PermanentError(f"error_code {code}: {body.get('message', '')}", code=code)
            return body.get("result")

        return self.transport.call(service, lambda _: self._request(service, agency, params), parse)

    def _write(self, service: str, agency: str, params: dict[str, Any]) -> None:
        def parse(response: requests.Response) -> tuple[str, str]:
            body = _envelope(response, service)
            return str(body.get("error_code")), str(body.get("message", ""))

        for _ in range(2):  # a refused session was refused before anything was written: log in, send again
            try:
                code, message = self.transport.call(service, lambda _: self._request(service, agency, params), parse,
                                                    attempts=1)
            except ConnectorError as exc:
                raise WriteOutcomeUnknown(service, exc) from None
            if code != SESSION_REFUSED:
                break
            self.transport.auth.refresh()
        if code != "0":
            raise PortalRefusal(service, code, message)


def _envelope(response: requests.Response, service: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise MalformedResponse(f"{service}: HTTP {response.status_code}: {response.text[:200]}")
    try:
        body = response.json()
    except ValueError:
        raise MalformedResponse(f"{service}: the answer is not JSON: {response.text[:120]!r}") from None
    if not isinstance(body, dict) or "error_code" not in body:
        raise MalformedResponse(f"{service}: the answer has no error_code: {str(body)[:120]}")
    return body
