"""Authentication of the sandbox systems: WS-Security UsernameToken and OAuth2 client credentials.

SOAP (§0): ``PasswordDigest`` = Base64(SHA-1(nonce + created + password)); ``wsu:Created`` must be
within ±300 s of server time, and a nonce seen in the last 600 s is refused (replay).
REST (§0): ``POST {base}/token`` with HTTP Basic client credentials issues a bearer token that
expires (sandbox default 300 s); an expired or revoked token gets 401.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from lxml import etree

WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST_TYPE = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
)
CLOCK_SKEW_S = 300
NONCE_TTL_S = 600


class AuthError(Exception):
    """Authentication failed; the message says why (it is shown to the caller)."""


@dataclass(frozen=True)
class Client:
    """A caller of a sandbox system and what it may speak for."""

    name: str
    secret: str
    agencies: frozenset[str] = frozenset()
    provinces: frozenset[str] = frozenset()


class WsseVerifier:
    """Checks the ``wsse:Security`` header of a SOAP request against known users."""

    def __init__(self, users: dict[str, Client], clock=time.time) -> None:
        self.users = users
        self._clock = clock
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, header: etree._Element | None) -> Client:
        if header is None:
            raise AuthError("missing SOAP Header with wsse:Security")
        token = header.find(f"{{{WSSE_NS}}}Security/{{{WSSE_NS}}}UsernameToken")
        if token is None:
            raise AuthError("missing wsse:Security/wsse:UsernameToken")
        username = _text(token, f"{{{WSSE_NS}}}Username")
        password_el = token.find(f"{{{WSSE_NS}}}Password")
        nonce_b64 = _text(token, f"{{{WSSE_NS}}}Nonce")
        created = _text(token, f"{{{WSU_NS}}}Created")
        if password_el is None or password_el.get("Type") != DIGEST_TYPE:
            raise AuthError("wsse:Password must be of Type PasswordDigest")
        if not (username and nonce_b64 and created):
            raise AuthError("UsernameToken needs Username, Nonce and wsu:Created")
        user = self.users.get(username)
        if user is None:
            raise AuthError("unknown user or wrong password")
        try:
            nonce = base64.b64decode(nonce_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise AuthError("wsse:Nonce is not base64") from exc
        created_at = _parse_created(created)
        now = self._clock()
        if abs(now - created_at) > CLOCK_SKEW_S:
            raise AuthError(f"wsu:Created {created} is more than {CLOCK_SKEW_S} s from server time")
        expected = base64.b64encode(hashlib.sha1(nonce + created.encode() + user.secret.encode()).digest())
        if not hmac.compare_digest(expected, (password_el.text or "").strip().encode()):
            raise AuthError("unknown user or wrong password")
        self._remember_nonce(f"{username}:{nonce_b64}", now)
        return user

    def _remember_nonce(self, key: str, now: float) -> None:
        with self._lock:
            while self._nonces and next(iter(self._nonces.values())) < now - NONCE_TTL_S:
                self._nonces.popitem(last=False)
            if key in self._nonces:
                raise AuthError("wsse:Nonce was already used (replay)")
            self._nonces[key] = now


def _text(parent: etree._Element, path: str) -> str:
    el = parent.find(path)
    return (el.text or "").strip() if el is not None else ""


def _parse_created(value: str) -> float:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise AuthError(f"wsu:Created {value!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise AuthError(f"wsu:Created {value!r} has no time zone")
    return moment.timestamp()


class TokenIssuer:
    """OAuth2 client-credentials tokens with a lifetime; tokens can be revoked (fault injection)."""

    def __init__(self, clients: dict[str, Client], lifetime_s: float = 300, clock=time.time) -> None:
        self.clients = clients
        self.lifetime_s = lifetime_s
        self._clock = clock
        self._tokens: dict[str, tuple[Client, float]] = {}
        self._lock = threading.Lock()

    def issue(self, authorization: str | None) -> tuple[str, int]:
        """Validate HTTP Basic client credentials and return (token, expires_in)."""
        client = self._basic(authorization)
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
            self._tokens[token] = (client, now + self.lifetime_s)
        return token, int(self.lifetime_s)

    def check(self, authorization: str | None) -> tuple[Client, str]:
        """The client behind a ``Bearer`` header, and the token itself."""
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthError("missing Authorization: Bearer token")
        token = authorization[7:].strip()
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None:
            raise AuthError("invalid or revoked access token")
        if entry[1] <= self._clock():
            raise AuthError("access token expired")
        return entry[0], token

    def revoke(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def _basic(self, authorization: str | None) -> Client:
        if not authorization or not authorization.startswith("Basic "):
            raise AuthError("token request needs HTTP Basic client credentials")
        try:
            key, _, secret = base64.b64decode(authorization[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise AuthError("malformed HTTP Basic credentials") from exc
        client = self.clients.get(key)
        if client is None or not hmac.compare_digest(client.secret.encode(), secret.encode()):
            raise AuthError("unknown client or wrong secret")
        return client
