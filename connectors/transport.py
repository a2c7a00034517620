"""The one HTTP transport every connector uses: timeouts, retries, pacing, auth refresh, TLS.

A call is described by two functions: ``build(request_id)`` makes a fresh request for each attempt
(a new ``MaYeuCau``, a new WS-Security nonce), and ``parse(response)`` turns the answer into a result
or raises :class:`TransientError` (retry), :class:`PermanentError` (give up) or
:class:`AuthenticationFailed` (refresh the token once, then give up). Between attempts the transport
waits with exponential back-off and full jitter, never less than the server's ``Retry-After``; before
every attempt it paces itself under the system's rate limit. When the attempts run out, the error
names the system, the operation and the last request id.
"""

from __future__ import annotations

import logging
import os
import random
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Protocol, TypeVar

import requests
import requests.adapters
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from connectors.errors import AuthenticationFailed, ConnectorError, PermanentError, TransientError
from hub.ratelimit import RateLimiter

log = logging.getLogger(__name__)
T = TypeVar("T")

#: HTTP statuses after which the same request may succeed later.
RETRYABLE_STATUS = frozenset({408, 425, 429, 502, 503, 504})


@dataclass(frozen=True)
class TransportOptions:
    """Tuning knobs; each has a ``HUB_<SYSTEM>_…`` variable (see :func:`options_from_env`)."""

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    max_attempts: int = 8
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 300.0  # a server's Retry-After is honoured up to this
    rate_limit: float = 20.0  # requests per second to this system; 0 means unlimited
    client_cert: str = ""  # PEM file of a TLS client certificate (may hold the key too)
    client_key: str = ""  # PEM file of its key, when separate
    ca_bundle: str = ""  # CA bundle to verify the server with, instead of the system store


_OPTION_VARIABLES = {
    "connect_timeout_s": ("CONNECT_TIMEOUT", float), "read_timeout_s": ("TIMEOUT", float),
    "max_attempts": ("MAX_ATTEMPTS", int), "backoff_initial_s": ("BACKOFF_INITIAL", float),
    "backoff_max_s": ("BACKOFF_MAX", float), "rate_limit": ("RATE_LIMIT", float),
    "client_cert": ("TLS_CERT", str), "client_key": ("TLS_KEY", str), "ca_bundle": ("CA_BUNDLE", str),
}


def options_from_env(system: str, environ: Mapping[str, str]) -> TransportOptions:
    """Transport options of ``system`` from ``HUB_<SYSTEM>_TIMEOUT``, ``…_RATE_LIMIT`` and so on."""
    values: dict[str, Any] = {}
    for name, (suffix, kind) in _OPTION_VARIABLES.items():
        variable = f"HUB_{system.upper()}_{suffix}"
        raw = environ.get(variable, "").strip()
        if raw:
            try:
                values[name] = kind(raw)
            except ValueError:
                raise ValueError(f"{variable} must be a {kind.__name__}, got {raw!r}") from None
            _check_tls_path(variable, name, raw)
    return TransportOptions(**values)


def _check_tls_path(variable: str, option: str, path: str) -> None:
    """A TLS file that is not there is a configuration error, said when the connector is built:
    requests would only notice at the first call, with an ``OSError`` no caller expects."""
    if option in ("client_cert", "client_key") and not os.path.isfile(path):
        raise ValueError(f"{variable} names {path!r}, which is not a file")
    if option == "ca_bundle" and not os.path.exists(path):  # a file of CAs, or a directory of them
        raise ValueError(f"{variable} names {path!r}, which does not exist")


@dataclass
class HttpRequest:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes | Mapping[str, str] | None = None
    json: Any = None
    params: Mapping[str, Any] | None = None
    basic_auth: tuple[str, str] | None = None


class TokenRefused(TransientError):
    """The server refused a bearer token; a fresh one has been fetched for the next attempt."""


class Auth(Protocol):
    def apply(self, request: HttpRequest) -> None: ...

    def refresh(self) -> None: ...


def make_session(base_url: str = "", pool_size: int = 4) -> requests.Session:
    """A keep-alive session whose proxy and CA settings come from the environment once, at creation:
    by default requests scans the whole environment on every call (about a millisecond each), which
    dominates small calls such as a day's civil-status list."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.proxies = requests.utils.get_environ_proxies(base_url) if base_url else {}
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle  # HUB_<S>_CA_BUNDLE, when set, overrides it
    session.trust_env = False
    return session


class Transport:
    """Sends requests to one national system with the policies above."""

    def __init__(self, system: str, options: TransportOptions | None = None, auth: Auth | None = None,
                 session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep,
                 base_url: str = "") -> None:
        self.system = system
        self.options = options or TransportOptions()
        self.auth = auth
        self.session = session or make_session(base_url)
        self._sleep = sleep
        self.limiter = RateLimiter(self.options.rate_limit, burst=max(1.0, self.options.rate_limit / 5))
        if self.options.client_cert:
            self.session.cert = ((self.options.client_cert, self.options.client_key) if self.options.client_key
                                 else self.options.client_cert)
        if self.options.ca_bundle:
            self.session.verify = self.options.ca_bundle
        self.attempts = 0  # every attempt made, for metrics
        self.retries = 0

    def call(self, operation: str, build: Callable[[str], HttpRequest], parse: Callable[[requests.Response], T],
             attempts: int | None = None) -> T:
        """Run ``operation`` until ``parse`` accepts an answer or the attempts run out (``attempts``
        overrides the configured number, e.g. for a quick ``check``)."""
        attempts = attempts or self.options.max_attempts
        state = {"request_id": ""}

        def attempt() -> T:
            state["request_id"] = str(uuid.uuid4())
            request = build(state["request_id"])
            if self.auth is not None:
                self.auth.apply(request)
            self.limiter.wait(sleep=self._sleep)
            self.attempts += 1
            try:
                response = self.session.request(
                    request.method, request.url, headers=request.headers, data=request.data, json=request.json,
                    params=request.params, auth=request.basic_auth, timeout=(self.options.connect_timeout_s, self.options.read_timeout_s))
                if response.status_code == 401 and self.auth is not None:
                    raise AuthenticationFailed(f"HTTP 401: {response.text[:200]}")
                if response.status_code in RETRYABLE_STATUS:
                    raise TransientError(f"HTTP {response.status_code}", _retry_after(response.headers))
                return parse(response)
            except AuthenticationFailed as exc:
                if self.auth is None:  # static credentials (WS-Security): a refusal is final
                    raise
                # A token can be revoked at any time; a fresh one is fetched (the token endpoint's own
                # refusal is final) and the call retried like any transient failure.
                self.auth.refresh()
                raise TokenRefused(f"token refused ({exc}); fetched a fresh one") from None
            except requests.exceptions.SSLError as exc:
                raise self._tls_failure(request.url, exc) from None
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError) as exc:
                hint = self._no_certificate_hint(request.url, exc)
                raise TransientError(describe_network_error(exc) + hint) from None

        retrying = Retrying(stop=stop_after_attempt(attempts), wait=self._wait,
                            retry=retry_if_exception_type(TransientError), sleep=self._sleep, reraise=True,
                            before_sleep=self._before_sleep(operation, state))
        try:
            return retrying(attempt)
        except TokenRefused as exc:
            raise ConnectorError(self.system, operation, state["request_id"],
                                 f"credentials refused: every token was refused ({attempts} attempts): {exc}",
                                 code="100") from exc
        except TransientError as exc:
            raise ConnectorError(self.system, operation, state["request_id"],
                                 f"{exc} (gave up after {attempts} attempts)") from exc
        except AuthenticationFailed as exc:
            raise ConnectorError(self.system, operation, state["request_id"],
                                 f"credentials refused: {exc}", code="100") from exc
        except PermanentError as exc:
            raise ConnectorError(self.system, operation, state["request_id"], str(exc), code=exc.code) from exc

    def _tls_failure(self, url: str, exc: requests.exceptions.SSLError) -> Exception:
        """A certificate that does not verify, or one the server refuses, does not get better with
        retries: one attempt, and a message naming the setting to look at. Other TLS failures (a
        connection cut during the handshake) are transient."""
        cause = next((c for c in _causes(exc) if isinstance(c, ssl.SSLError)), None)
        variable = f"HUB_{self.system.upper()}"
        if isinstance(cause, ssl.SSLCertVerificationError):
            trusted = self.options.ca_bundle or "the system's CA store"
            return PermanentError(f"cannot verify the TLS certificate of {url}: {cause.verify_message} "
                                  f"(trusted: {trusted}; see {variable}_CA_BUNDLE)")
        reason = f"{cause.reason} {cause}" if cause is not None else ""
        if any(code in reason for code in _OWN_CERTIFICATE_UNUSABLE):
            return PermanentError(f"the TLS client certificate {self.options.client_cert} cannot be used: "
                                  f"{cause.strerror or cause} (see {variable}_TLS_CERT, {variable}_TLS_KEY)")
        if any(code in reason for code in _CERTIFICATE_REFUSED):
            return PermanentError(f"{url} refused the TLS connection: {cause.strerror or cause} (client certificate: "
                                  f"{self.options.client_cert or 'none'}; see {variable}_TLS_CERT, {variable}_TLS_KEY)")
        return TransientError(describe_network_error(exc) + self._no_certificate_hint(url, exc))

    def _no_certificate_hint(self, url: str, exc: BaseException) -> str:
        """Under TLS 1.3 a server that refuses the client's certificate, or gets none, closes the
        connection after the handshake, before answering, and the client cannot tell that from a
        dropped connection: the message says which certificate was offered."""
        if not url.startswith("https://") or not isinstance(exc, requests.ConnectionError):
            return ""
        if not any(isinstance(c, (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError)) for c in _causes(exc)):
            return ""
        variable = f"HUB_{self.system.upper()}_TLS_CERT"
        if not self.options.client_cert:
            return (f"; no TLS client certificate is configured ({variable}), and a server that requires one "
                    "closes the connection like this")
        return (f"; a server that does not accept the TLS client certificate {self.options.client_cert} "
                f"({variable}) closes the connection like this")

    def _wait(self, retry_state: RetryCallState) -> float:
        """Full-jitter exponential back-off, but never shorter than the server's Retry-After."""
        exponent = retry_state.attempt_number - 1
        ceiling = min(self.options.backoff_max_s, self.options.backoff_initial_s * (2 ** exponent))
        delay = random.uniform(0, ceiling)
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, TransientError) and error.retry_after:
            delay = max(delay, min(error.retry_after, self.options.retry_after_max_s))
        return delay

    def _before_sleep(self, operation: str, state: dict):
        def note(retry_state: RetryCallState) -> None:
            self.retries += 1
            error = retry_state.outcome.exception() if retry_state.outcome else None
            log.info("%s %s (request %s) attempt %d failed: %s; retrying", self.system, operation,
                     state["request_id"], retry_state.attempt_number, error)
        return note


def describe_network_error(exc: requests.RequestException) -> str:
    """One readable line for a network failure: the innermost OS error (refused, reset, …) if any."""
    url = exc.request.url if exc.request is not None else "the server"
    cause: object = exc
    for _ in range(12):  # requests → urllib3 → socket: a short chain
        if isinstance(cause, OSError) and cause.strerror:
            return f"cannot reach {url}: {cause.strerror}"
        args = getattr(cause, "args", ())
        cause = (getattr(cause, "reason", None) or getattr(cause, "__cause__", None)
                 or (args[0] if args and isinstance(args[0], BaseException) else None))
        if cause is None:
            break
    if isinstance(exc, requests.Timeout):
        return f"timed out waiting for {url}"
    return f"{type(exc).__name__} talking to {url}: {exc}"


#: OpenSSL reasons for a server refusing the client's certificate (or the lack of one).
_CERTIFICATE_REFUSED = ("ALERT_CERTIFICATE", "ALERT_BAD_CERTIFICATE", "ALERT_UNSUPPORTED_CERTIFICATE",
                        "ALERT_UNKNOWN_CA", "ALERT_ACCESS_DENIED")
#: OpenSSL reasons for a client certificate or key that cannot be loaded or do not belong together.
_OWN_CERTIFICATE_UNUSABLE = ("KEY_VALUES_MISMATCH", "NO_START_LINE", "BAD_BASE64_DECODE", "PEM lib")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: requests, urllib3, ssl and socket keep the cause in different places."""
    cause: object = exc
    for _ in range(12):
        if not isinstance(cause, BaseException):
            return
        yield cause
        wrapped = [a for a in getattr(cause, "args", ()) if isinstance(a, BaseException)]
        reason = getattr(cause, "reason", None)
        cause = (reason if isinstance(reason, BaseException) else None) or cause.__cause__ or cause.__context__ \
            or (wrapped[0] if wrapped else None)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After", "").strip()
    try:
        return float(value) if value else None
    except ValueError:
        return None


class OAuth2ClientCredentials:
    """Bearer tokens from ``POST {base}/token`` (HTTP Basic client credentials), renewed before they
    expire and at once when the server refuses one (a token revoked mid-run)."""

    def __init__(self, token_url: str, client_id: str, client_secret: str, transport: Transport,
                 clock: Callable[[], float] = time.monotonic, margin_s: float = 30.0) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.transport = transport  # a transport without auth, so the token call is retried and paced
        self._clock = clock
        self.margin_s = margin_s
        self._token = ""
        self._expires = 0.0

    def apply(self, request: HttpRequest) -> None:
        if not self._token or self._clock() >= self._expires - self.margin_s:
            self.refresh()
        request.headers["Authorization"] = f"Bearer {self._token}"

    def refresh(self) -> None:
        def build(_: str) -> HttpRequest:
            return HttpRequest("POST", self.token_url, data={"grant_type": "client_credentials"},
                               basic_auth=(self.client_id, self._secret))

        def parse(response: requests.Response) -> tuple[str, float]:
            if response.status_code in (400, 401, 403):
                raise PermanentError(f"token endpoint refused the client credentials: HTTP {response.status_code} "
                                     f"{_oauth_error(response)}", code="100")
            if response.status_code != 200:
                raise TransientError(f"token endpoint answered HTTP {response.status_code}")
            try:
                body = response.json()
                return str(body["access_token"]), float(body.get("expires_in", 300))
            except (ValueError, KeyError, TypeError) as exc:
                raise TransientError(f"token endpoint answer is not a token: {exc}") from None

        token, lifetime = self.transport.call("token", build, parse)
        self._token, self._expires = token, self._clock() + lifetime


def _oauth_error(response: requests.Response) -> str:
    try:
        body = response.json()
        return f"{body.get('error', '')}: {body.get('error_description', '')}".strip(": ")
    except ValueError:
        return response.text[:200]
