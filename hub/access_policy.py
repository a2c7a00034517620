"""Who may ask the lookup service for what: registered clients, their keys, grants, purposes and rates.

Decree 13/2023 (Art. 2, 3, 38) shapes the rules: personal data is shared only for a declared purpose,
each consumer receives only the fields it was granted, and ``DanToc`` / ``TonGiao`` (and the cause of
a death, which is health data) are sensitive: a grant of ``"*"`` (every field) never includes them,
they must be named one by one. A request is never answered with silently fewer fields than it asked
for: asking for a field that is not granted is refused.

Clients live in a JSON file (``$HUB_HOME/clients.json``, or ``HUB_API_CLIENTS``), re-read when it
changes. A key is ``lgsp.<client_id>.<secret>``; the file keeps only a salted scrypt hash of it, so a
copy of the file does not let anyone in. A successful check is remembered in the server's memory
only (never written anywhere, dropped when the file is re-read): the key as the client sent it,
filed under its public part ``lgsp.<client_id>``, so at most one per registered client. A later
request presenting a key with that prefix is compared with it in constant time
(``hmac.compare_digest``); anything else costs a full scrypt, so failures are rate-limited per
remote address before they are computed.

The file (written by :func:`register_client`; an operator may edit grants, purposes and rates)::

    {"version": 1, "clients": [{
        "client_id": "so-tu-phap", "agency_code": "H31.12", "name": "Sở Tư pháp",
        "key": {"scheme": "scrypt", "n": 16384, "r": 8, "p": 1, "salt": "…", "hash": "…"},
        "datasets": {"citizens": ["*"], "civil_events": ["*", "death_cause"]},
        "purposes": ["1.001*", "H31.12-*"], "feeds": ["civil_events"],
        "rate": {"per_second": 20, "burst": 40}, "disabled": false}]}

``purposes`` are shell-style patterns (``*``, ``?``) of procedure or dossier codes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Iterable, Mapping

import orjson

from hub.ratelimit import RateLimiter
from hub.serving_store import CATALOGUE

log = logging.getLogger(__name__)

#: Sensitive fields per dataset (Decree 13/2023 Art. 2(4)): ethnicity, religion, health.
SENSITIVE: dict[str, frozenset[str]] = {
    "citizens": frozenset({"ethnicity_code", "religion_code"}),
    "civil_events": frozenset({"child_ethnicity", "mother_ethnicity", "father_ethnicity", "husband_ethnicity",
                               "wife_ethnicity", "death_cause"}),
    "enterprises": frozenset(),
    "documents": frozenset(),
    "service_measures": frozenset(),
    "procedure_times": frozenset(),
}
#: Fields that are personal data, so an answer that contains any of them needs a declared purpose.
PERSONAL: dict[str, frozenset[str]] = {
    "citizens": frozenset(CATALOGUE["citizens"].columns),
    "civil_events": frozenset(CATALOGUE["civil_events"].columns),
    "enterprises": frozenset({"legal_representatives", "members"}),
    "documents": frozenset(),
    "service_measures": frozenset(),  # aggregates per agency and month
    "procedure_times": frozenset(),
}

_COLUMNS = {name: frozenset(spec.columns) for name, spec in CATALOGUE.items()}

CLIENT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
#: A procedure code (MaTTHC, ``1.001234``) or a dossier code (MaHoSo, ``H31.22-250301-0001``).
PURPOSE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-_/]{0,79}\Z")
PURPOSE_PATTERN = re.compile(r"^[A-Za-z0-9.\-_/*?]{1,80}\Z")
_KEY = re.compile(r"^lgsp\.([a-z0-9][a-z0-9-]{0,62})\.([A-Za-z0-9_-]{43})\Z")
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}


class RequestRefused(Exception):
    """A request the service will not answer: the HTTP status, a stable error code and a message for
    the caller. Raised by the policy and by the API alike, so both speak one vocabulary."""

    def __init__(self, status: int, error: str, message: str, headers: Mapping[str, str] | None = None,
                 audit_detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = dict(headers or {})
        #: What the audit log records; differs from ``message`` when that echoes what the caller sent.
        self.audit_detail = audit_detail or f"{error}: {message}"


class PolicyFileError(ValueError):
    """The clients file is malformed; the message names the client and the problem."""


@dataclass(frozen=True)
class KeyHash:
    """A salted scrypt hash of an API key, as stored in the clients file."""

    salt: bytes
    digest: bytes
    n: int = _SCRYPT["n"]
    r: int = _SCRYPT["r"]
    p: int = _SCRYPT["p"]

    @classmethod
    def of(cls, key: str) -> "KeyHash":
        salt = secrets.token_bytes(16)
        return cls(salt, _scrypt(key, salt, **_SCRYPT))

    def verify(self, key: str) -> bool:
        return hmac.compare_digest(_scrypt(key, self.salt, self.n, self.r, self.p), self.digest)

    def to_json(self) -> dict[str, Any]:
        return {"scheme": "scrypt", "n": self.n, "r": self.r, "p": self.p,
                "salt": base64.b64encode(self.salt).decode(), "hash": base64.b64encode(self.digest).decode()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "KeyHash":
        if data.get("scheme") != "scrypt":
            raise PolicyFileError(f"unsupported key scheme {data.get('scheme')!r}")
        return cls(base64.b64decode(data["salt"]), base64.b64decode(data["hash"]),
                   int(data["n"]), int(data["r"]), int(data["p"]))


def _scrypt(key: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(key.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)


#: Verifying against this when the client is unknown makes an unknown client as slow as a wrong key,
#: so response times do not tell which client IDs exist.
_DECOY = KeyHash(b"\0" * 16, b"\0" * 32)


@dataclass(frozen=True)
class Client:
    """A registered consumer: its agency, what it may read, for which purposes, how fast."""

    client_id: str
    agency_code: str
    name: str
    key: KeyHash
    grants: dict[str, tuple[str, ...]]  # dataset → granted fields, in the dataset's column order
    purposes: tuple[str, ...]  # fnmatch patterns of allowed purpose codes
    rate: float  # requests per second (token bucket); 0: unlimited
    burst: float
    disabled: bool = False
    #: Datasets whose change feed the client may read: a feed hands out records in bulk, without the
    #: caller naming them, so it is granted apart from point lookups.
    feeds: tuple[str, ...] = ()

    def to_json(self, granted_as_written: Mapping[str, list[str]]) -> dict[str, Any]:
        return {"client_id": self.client_id, "agency_code": self.agency_code, "name": self.name,
                "key": self.key.to_json(), "datasets": dict(granted_as_written), "purposes": list(self.purposes),
                "feeds": list(self.feeds), "rate": {"per_second": self.rate, "burst": self.burst},
                "disabled": self.disabled}


def expand_grant(dataset: str, written: Iterable[str]) -> tuple[str, ...]:
    """The fields a grant names, in column order; ``"*"`` is every field that is not sensitive."""
    if dataset not in CATALOGUE:
        raise PolicyFileError(f"unknown dataset {dataset!r} (known: {', '.join(CATALOGUE)})")
    columns = CATALOGUE[dataset].columns
    written = list(written)
    unknown = sorted(set(written) - set(columns) - {"*"})
    if unknown:
        raise PolicyFileError(f"{dataset}: unknown fields {', '.join(unknown)}")
    wanted = set(written) | ({c for c in columns if c not in SENSITIVE[dataset]} if "*" in written else set())
    return tuple(c for c in columns if c in wanted)


def _client_from_json(data: Mapping[str, Any]) -> tuple[Client, dict[str, list[str]]]:
    client_id = str(data.get("client_id", ""))
    if not CLIENT_ID.match(client_id):
        raise PolicyFileError(f"client_id {client_id!r} must be lower-case letters, digits and '-'")
    try:
        written = {str(k): [str(f) for f in v] for k, v in dict(data.get("datasets") or {}).items()}
        grants = {dataset: expand_grant(dataset, fields) for dataset, fields in written.items()}
        purposes = tuple(str(p) for p in data.get("purposes") or ())
        for pattern in purposes:
            if not PURPOSE_PATTERN.match(pattern):
                raise PolicyFileError(f"purpose pattern {pattern!r} has characters other than A-Z a-z 0-9 . - _ / * ?")
        feeds = tuple(str(name) for name in data.get("feeds") or ())
        ungranted = sorted(set(feeds) - set(grants))
        if ungranted:
            raise PolicyFileError(f"feeds of datasets not granted: {', '.join(ungranted)}")
        rate = dict(data.get("rate") or {})
        client = Client(client_id, str(data.get("agency_code", "")), str(data.get("name", "")),
                        KeyHash.from_json(data["key"]), grants, purposes, float(rate.get("per_second", 0)),
                        float(rate.get("burst", rate.get("per_second", 0) or 1)), bool(data.get("disabled", False)),
                        feeds)
    except (KeyError, TypeError, ValueError) as exc:
        raise PolicyFileError(f"client {client_id}: {exc}") from None
    return client, written


def read_clients(path: Path) -> dict[str, tuple[Client, dict[str, list[str]]]]:
    """Every client of the file (with its grants as written); an absent file has none."""
    try:
        document = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except orjson.JSONDecodeError as exc:
        raise PolicyFileError(f"{path}: not JSON ({exc})") from None
    entries = document.get("clients") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise PolicyFileError(f"{path}: expected an object with a list 'clients'")
    clients = {}
    for entry in entries:
        client, written = _client_from_json(entry if isinstance(entry, dict) else {})
        if client.client_id in clients:
            raise PolicyFileError(f"{path}: client {client.client_id} is listed twice")
        clients[client.client_id] = (client, written)
    return clients


def write_clients(path: Path, clients: Mapping[str, tuple[Client, dict[str, list[str]]]]) -> None:
    """Write the file atomically (temp file, then ``os.replace``), readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"version": 1, "clients": [client.to_json(written) for client, written in clients.values()]}
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps(body, option=orjson.OPT_INDENT_2))
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def register_client(path: Path, client_id: str, agency_code: str, datasets: Mapping[str, list[str]],
                    purposes: Iterable[str], rate: float = 20.0, burst: float | None = None,
                    name: str = "", replace: bool = False, feeds: Iterable[str] = ()) -> str:
    """Add a client (or, with ``replace``, give an existing one new grants and a new key) and return
    its API key. The key is shown only here: the file keeps its hash."""
    clients = read_clients(path)
    if client_id in clients and not replace:
        raise PolicyFileError(f"client {client_id} already exists (replace it to issue a new key)")
    key = f"lgsp.{client_id}.{secrets.token_urlsafe(32)}"
    entry = {"client_id": client_id, "agency_code": agency_code, "name": name, "key": KeyHash.of(key).to_json(),
             "datasets": {k: list(v) for k, v in datasets.items()}, "purposes": list(purposes),
             "feeds": list(feeds),
             "rate": {"per_second": rate, "burst": burst if burst is not None else max(1.0, rate)}}
    clients[client_id] = _client_from_json(entry)
    write_clients(path, clients)
    return key


def parse_grants(specs: Iterable[str]) -> dict[str, list[str]]:
    """``["citizens=*,ethnicity_code", "enterprises=name"]`` (the CLI's repeated ``--grant``) as the
    grants :func:`register_client` takes; a malformed spec raises :class:`PolicyFileError`."""
    grants: dict[str, list[str]] = {}
    for spec in specs:
        dataset, sep, fields = spec.partition("=")
        names = [name.strip() for name in fields.split(",") if name.strip()]
        if not sep or not names:
            raise PolicyFileError(f"grant {spec!r} must be DATASET=FIELD[,FIELD...] (a field may be *)")
        expand_grant(dataset.strip(), names)  # refuse unknown datasets and fields now, not at load
        grants.setdefault(dataset.strip(), []).extend(names)
    return grants


def clients_path(environ: Mapping[str, str], home: Path) -> Path:
    """``HUB_API_CLIENTS``, else ``$HUB_HOME/clients.json``."""
    named = environ.get("HUB_API_CLIENTS", "").strip()
    return Path(named) if named else home / "clients.json"


@dataclass
class AccessPolicy:
    """The registered clients, kept in step with their file; authentication, rates and decisions."""

    path: Path
    reload_interval: float = 1.0
    failure_rate: float = 1.0  # uncached key checks per second per remote address ...
    failure_burst: float = 20.0  # ... after a burst of this many
    _clients: dict[str, Client] = field(default_factory=dict)
    _identity: tuple[int, int, int] | None = None
    _next_check: float = 0.0
    #: ``lgsp.<client_id>`` → (the key that verified, as bytes; its client ID): see :meth:`cached_client`.
    _verified: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    _limiters: dict[str, RateLimiter] = field(default_factory=dict)
    _failures: RateLimiter | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: (client_id, dataset, asked, purpose) → (the Client it was decided for, the fields): see :meth:`grant`.
    _decisions: dict[tuple, tuple[Client, tuple[str, ...]]] = field(default_factory=dict)
    decisions_max: int = 4096

    def __post_init__(self) -> None:
        self._failures = RateLimiter(self.failure_rate, self.failure_burst)
        self.reload(force=True)

    def reload(self, force: bool = False) -> None:
        """Re-read the file when it changed; a malformed file keeps the clients already loaded."""
        identity = _identity(self.path)
        if not force and identity == self._identity:
            return
        try:
            clients = {cid: client for cid, (client, _) in read_clients(self.path).items()}
        except PolicyFileError as exc:
            if force and not self._clients:
                raise
            log.error("keeping the previous clients: %s", exc)
            return
        with self._lock:
            self._clients, self._identity, self._verified = clients, identity, {}
            self._limiters = {cid: RateLimiter(c.rate, c.burst) for cid, c in clients.items()}
            self._decisions = {}

    def poll(self) -> None:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.reload_interval
            self.reload()

    def cached_client(self, key: str) -> Client | None:
        """The client of a key already verified, without computing a hash (fast path): the key
        remembered for its ``lgsp.<client_id>`` prefix, compared in constant time."""
        known = self._verified.get(key[:key.rfind(".")])
        if known is None or not hmac.compare_digest(known[0], key.encode()):
            return None
        return self._clients.get(known[1])

    def check_key(self, key: str, remote: str) -> Client:
        """The client a key belongs to; 401 when it belongs to none, 429 when this address failed
        too often. Costs one scrypt unless the key was verified before."""
        client = self.cached_client(key)
        if client is None:
            client = self._verify(key, remote)
        if client.disabled:
            raise RequestRefused(401, "unauthenticated", f"client {client.client_id} is disabled")
        return client

    def _verify(self, key: str, remote: str) -> Client:
        match = _KEY.match(key)
        if not match:
            raise RequestRefused(401, "unauthenticated", "the API key is malformed (expected lgsp.<client>.<secret>)")
        wait = self._failures.acquire(remote)
        if wait:
            raise RequestRefused(429, "too_many_requests", f"too many key checks from this address; retry in {wait} s",
                                 {"Retry-After": str(wait)})
        client = self._clients.get(match.group(1))
        if not (client.key if client else _DECOY).verify(key) or client is None:
            raise RequestRefused(401, "unauthenticated", "the API key is not valid")
        self._verified[key[:key.rfind(".")]] = (key.encode(), client.client_id)
        return client

    def grant(self, client: Client, dataset: str, asked: Iterable[str] | None, purpose: str | None) -> tuple[str, ...]:
        """The fields an answer carries (:func:`select_fields`: 400/403) once the purpose is checked
        (:func:`check_purpose`: 400/403). A decision is a pure function of the client's entry and the
        arguments, so allowed ones are remembered (bounded; refusals are always recomputed). An entry
        applies only to the very :class:`Client` object it was decided for, and a reload of the file
        drops them all, so a changed grant or purpose takes effect with the next request."""
        asked = tuple(asked) if asked is not None else None
        key = (client.client_id, dataset, asked, purpose)
        known = self._decisions.get(key)
        if known is not None and known[0] is client:
            return known[1]
        fields = select_fields(client, dataset, list(asked) if asked is not None else None)
        check_purpose(client, dataset, fields, purpose)
        decisions = self._decisions
        if len(decisions) >= self.decisions_max:
            decisions.clear()
        decisions[key] = (client, fields)
        return fields

    def known_grant(self, client: Client, dataset: str, asked: tuple[str, ...] | None,
                    purpose: str | None) -> tuple[str, ...] | None:
        """What :meth:`grant` decided before for exactly these arguments, or None (not decided yet,
        or refused): a lookup only, for the API's fast path."""
        known = self._decisions.get((client.client_id, dataset, asked, purpose))
        return known[1] if known is not None and known[0] is client else None

    def check_rate(self, client: Client) -> None:
        """429 with ``Retry-After`` when the client is over its rate."""
        limiter = self._limiters.get(client.client_id)
        wait = limiter.acquire("") if limiter is not None else 0
        if wait:
            raise RequestRefused(429, "too_many_requests",
                                 f"client {client.client_id} is limited to {client.rate:g} requests/s; "
                                 f"retry in {wait} s",
                                 {"Retry-After": str(wait)})


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def select_fields(client: Client, dataset: str, asked: list[str] | None) -> tuple[str, ...]:
    """The fields an answer carries: what was asked (400 unknown, 403 not granted), else the grant."""
    granted = client.grants.get(dataset)
    if granted is None:
        raise RequestRefused(403, "dataset_not_granted", f"client {client.client_id} may not read {dataset}")
    if asked is None:
        return granted
    unknown = [name for name in asked if name not in _COLUMNS[dataset]]
    if unknown:
        raise RequestRefused(400, "unknown_field", f"{dataset} has no field(s): {', '.join(unknown)}")
    denied = [name for name in asked if name not in granted]
    if denied:
        sensitive = [name for name in denied if name in SENSITIVE[dataset]]
        note = f" ({', '.join(sensitive)} sensitive, granted only by name)" if sensitive else ""
        raise RequestRefused(403, "field_not_granted",
                             f"client {client.client_id} may not read {dataset} field(s): {', '.join(denied)}{note}")
    return tuple(dict.fromkeys(asked))


def check_feed(client: Client, dataset: str) -> None:
    """403 unless the client was granted the dataset's change feed."""
    if dataset not in client.feeds:
        raise RequestRefused(403, "feed_not_granted", f"client {client.client_id} may not read the {dataset} "
                                                      "change feed")


def needs_purpose(dataset: str, fields: Iterable[str]) -> bool:
    """Person datasets always; others when the answer carries personal data."""
    return dataset in ("citizens", "civil_events") or not PERSONAL[dataset].isdisjoint(fields)


def check_purpose(client: Client, dataset: str, fields: Iterable[str], purpose: str | None) -> None:
    """400 when a needed purpose is missing or malformed, 403 when the client may not use it."""
    if purpose is None:
        if needs_purpose(dataset, fields):
            raise RequestRefused(400, "purpose_required",
                                 f"a lookup of personal data in {dataset} must name its purpose: the procedure "
                                 "code (MaTTHC) or the dossier code (MaHoSo) it serves")
        return
    if not PURPOSE.match(purpose):
        raise RequestRefused(400, "invalid_purpose",
                             "purpose must be a procedure or dossier code: 1-80 of A-Z a-z 0-9 . - _ /")
    if not any(fnmatchcase(purpose, pattern) for pattern in client.purposes):
        raise RequestRefused(403, "purpose_not_allowed", f"client {client.client_id} may not look up data for "
                                                         f"purpose {purpose}")

