"""The lookup service for local agencies: point lookups in the published snapshot over HTTP.

What every request goes through, in order: authentication (401), the client's rate (429), the
syntax of what was asked (400, 413, 415), the client's grants for the dataset, the fields and the
purpose (403; a missing purpose is 400), the loaded snapshot and the legal validity of the copy
(503), and only then the lookup (404 or 200). Answers carry ``source``, ``as_of`` and
``valid_until``, and exactly the fields they list in ``fields``.

Every request, answered or refused, is written to the audit log *before* its answer leaves (Decree
47/2020 Art. 45, Decree 13/2023 Art. 38): who, when, for which purpose, what was asked, which fields
and record keys were returned (never the values), and the outcome. If the audit log cannot take the
entry, the answer is withheld and the caller gets 503: an unlogged disclosure is not allowed.

Lookups are a few microseconds each (:mod:`hub.serving_store`), so handlers run on the event loop;
only an uncached API-key check (a deliberate scrypt) goes to a thread. The audit append is a few
microseconds: the service numbers the entry and queues it, and the log is sealed, written and
committed in groups by a process of its own (:mod:`hub.audit_writer`, as :func:`app_from_settings`
wires it); with ``ApiLimits.audit_durable`` each answer waits in a worker thread until its entry is
on disk.

The busiest request, ``GET /v1/citizens/{personal_id}``, is answered by :class:`LookupApp` before
the framework sees it (routing, the request object and the middleware cost several times the lookup),
and in the usual case in one pass (:meth:`LookupService.fast_citizen`) over what earlier requests
left: the verified key, the client's decision for these fields and purpose, the field list, the
answer's envelope. Everything else takes the Starlette routes. Both give the same answers and
audit entries, byte for byte (``tests/test_lookup_api.py`` drives the same requests both ways).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import logging
import os
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence
from urllib.parse import unquote

import anyio.to_thread
import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.access_policy import AccessPolicy, Client, RequestRefused, check_feed, clients_path
from hub.audit_log import AuditEntry
from hub.config import load_config_file
from hub.identity_match import BirthQuery, identity_matches, parse_birth
from hub.lookup_openapi import (AGENCY_102, CITIZENS_BATCH_BODY, DOC_ID, ENTERPRISES_BATCH_BODY, FEED_PAGE, FIELD,
                                MAX_BATCH, MAX_BODY_BYTES, MONTH, PROCEDURE, VERIFY_BODY, docs_page, openapi_document)
from hub.serving_store import (CATALOGUE, EVENT_SUBJECTS, ROLES, DatasetCopy, RowTable, Snapshot, SnapshotStore,
                               iso_moment)
from schemas.identifiers import enterprise_code_problem, personal_id_problem

log = logging.getLogger(__name__)

#: Public documents: no data, no authentication, not audited.
PUBLIC_PATHS = frozenset({"/openapi.json", "/docs", "/healthz"})
_DOC_ID = re.compile(DOC_ID.replace("$", r"\Z"))
_FIELD = re.compile(FIELD.replace("$", r"\Z"))
_DIGITS12 = re.compile("[0-9]{12}")
_ENTERPRISE_SHAPE = re.compile("[0-9]{10}(-[0-9]{3})?")


class AuditSink(Protocol):
    """Where audit entries go: :class:`hub.audit_log.AuditLog`, or a recording sink in tests.
    ``append`` must not block for long: it is called on the event loop (unless durable)."""

    def append(self, entry: AuditEntry) -> int: ...


@dataclass(frozen=True)
class ApiLimits:
    max_body_bytes: int = MAX_BODY_BYTES
    max_batch: int = MAX_BATCH
    #: Wait until each entry is on disk before answering (``append(entry, durable=True)`` in a worker
    #: thread). Off: the audit log's group commit makes an entry durable within its flush window.
    audit_durable: bool = False


@dataclass(slots=True)
class AuditContext:
    """What a handler learnt about its request, for the audit entry the middleware writes."""

    at: datetime
    client_id: str = ""
    agency_code: str = ""
    purpose: str | None = None
    asked: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    record_keys: list[str] = field(default_factory=list)
    detail: str = ""


class JSONAnswer(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _refusal_response(refusal: RequestRefused) -> Response:
    return JSONAnswer({"error": refusal.error, "message": refusal.message}, refusal.status, refusal.headers)


class AuditMiddleware:
    """Writes one audit entry per request when its answer starts, before any byte of it is sent."""

    def __init__(self, app: ASGIApp, sink: AuditSink, durable: bool = False) -> None:
        self.app, self.sink, self.durable = app, sink, durable

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        context = AuditContext(datetime.now(timezone.utc))
        scope.setdefault("state", {})["audit"] = context
        started, withheld = False, False

        async def audited_send(message: Message) -> None:
            nonlocal started, withheld
            if message["type"] == "http.response.start":
                started = True
                number = await self._append(scope, context, message["status"])
                if number is None:
                    withheld = True
                    await _send_json(send, 503, {"error": "audit_unavailable",
                                                 "message": "the audit log cannot record this request, so it is "
                                                            "not answered; retry later"})
                    return
                message["headers"] = [*message.get("headers", []), *_hardening(number)]
            elif withheld:
                return
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if started:
                raise
            context.detail = "internal error"
            await _send_internal_error(audited_send)

    async def _append(self, scope: Scope, context: AuditContext, status: int) -> int | None:
        route = scope.get("route")  # the template (``/v1/citizens/{personal_id}``): the key is in ``asked``
        path = getattr(route, "path", None) or scope["path"][:200]
        return await _audit(self.sink, self.durable, _entry(context, scope["method"], path, status))


def _entry(context: AuditContext, method: str, path: str, status: int) -> AuditEntry:
    return AuditEntry(at=context.at, client_id=context.client_id, agency_code=context.agency_code,
                      purpose=context.purpose, method=method, path=path, asked=context.asked, fields=context.fields,
                      record_keys=context.record_keys, outcome=status, detail=context.detail)


async def _audit(sink: AuditSink, durable: bool, entry: AuditEntry) -> int | None:
    """The entry's number, or None when the log cannot take it (the answer is then withheld)."""
    try:
        if durable:
            return await anyio.to_thread.run_sync(lambda: sink.append(entry, durable=True))
        return sink.append(entry)
    except Exception:
        log.exception("audit append failed; withholding the answer")
        return None


async def _send_internal_error(send: Callable[[Message], Awaitable[None]]) -> None:
    await _send_json(send, 500, {"error": "internal_error", "message": "the service failed on this request"})


async def _send_json(send: Callable[[Message], Awaitable[None]], status: int, body: dict[str, str]) -> None:
    payload = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
        *_hardening(None)]})
    await send({"type": "http.response.body", "body": payload})


def _note_refusal(context: AuditContext, refusal: RequestRefused) -> None:
    note = refusal.audit_detail
    context.detail = f"{context.detail}; {note}" if context.detail else note


def _hardening(audit_number: int | None) -> list[tuple[bytes, bytes]]:
    """Answers carry personal data: no caching anywhere, no content sniffing; the audit entry's number
    lets an agency cite the record of its request."""
    headers = [*_HARDENING]
    if isinstance(audit_number, int):
        headers.append((b"x-audit-entry", str(audit_number).encode()))
    return headers


def _context(request: Request) -> AuditContext:
    return request.state.audit


# --- reading what was asked -------------------------------------------------------------------------

def _clean(value: str, what: str, limit: int) -> str:
    """Text from the caller: bounded, and free of control, format and unassigned characters."""
    if len(value) > limit:
        raise RequestRefused(400, "invalid_parameter", f"{what} is longer than {limit} characters")
    if not value.isprintable() and any(unicodedata.category(ch)[0] == "C" for ch in value):
        raise RequestRefused(400, "invalid_parameter", f"{what} contains control or unassigned characters")
    return value


def _query(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    """Query parameters, refusing unknown and repeated ones instead of ignoring them."""
    return _query_of(request.scope["query_string"], allowed)


def _query_items(raw: bytes) -> list[tuple[str, str]]:
    """The query string's (name, value) pairs exactly as Starlette's ``QueryParams`` reads them
    (``urllib.parse.parse_qsl(raw.decode("latin-1"), keep_blank_values=True)``), without its
    per-request objects: ``+`` is a space, ``%XX`` is UTF-8 (errors replaced), empty parts dropped.
    When no escape stands for a separator (``%26`` ``&``, ``%3D`` ``=``), the whole text is unescaped
    at once before it is split, which gives the same pairs (separators are ASCII, so never part of
    an escaped UTF-8 sequence) with one call instead of one per name and value."""
    if not raw:
        return []
    text = raw.decode("latin-1")
    if "+" in text:
        text = text.replace("+", " ")
    if "%" not in text:
        return _pairs(text)
    if "%26" not in text and "%3D" not in text and "%3d" not in text:
        whole = _unescape(text)
        if whole is not None:
            return _pairs(whole)
    items = []
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if "%" in name:
            name = _unquote(name)
        if "%" in value:
            value = _unquote(value)
        items.append((name, value))
    return items


def _pairs(text: str) -> list[tuple[str, str]]:
    items = []
    for part in text.split("&"):
        if part:
            name, _, value = part.partition("=")
            items.append((name, value))
    return items


def _unescape(text: str) -> str | None:
    """``urllib.parse.unquote(text)`` in C, for an ASCII text whose every ``%`` starts a ``%XX``
    escape: those become ``\\xXX`` escapes (backslashes doubled first) for ``codecs.escape_decode``.
    None for anything else (a stray ``%``, non-ASCII text)."""
    if not text.isascii():
        return None
    raw = text.encode()
    if b"\\" in raw:
        raw = raw.replace(b"\\", b"\\\\")
    try:
        return codecs.escape_decode(raw.replace(b"%", b"\\x"))[0].decode("utf-8", "replace")
    except ValueError:
        return None


def _unquote(text: str) -> str:
    """``urllib.parse.unquote(text)``, in C when :func:`_unescape` can."""
    whole = _unescape(text)
    return whole if whole is not None else unquote(text)


def _query_of(raw: bytes, allowed: frozenset[str]) -> dict[str, str]:
    items = _query_items(raw)
    query = dict(items)
    if len(query) == len(items) and query.keys() <= allowed:
        return query  # the common case: nothing unknown, nothing repeated
    names = [name for name, _ in items]
    unknown = sorted(set(names) - allowed)
    if unknown:
        shown = ", ".join(repr(_clean_shown(n)) for n in unknown[:5])
        raise RequestRefused(400, "unknown_parameter", f"unknown query parameter(s) {shown}; "
                                                       f"allowed: {', '.join(sorted(allowed)) or 'none'}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise RequestRefused(400, "invalid_parameter",
                             f"query parameter(s) given more than once: {', '.join(repeated)}")
    return dict(items)


def _clean_shown(text: str) -> str:
    """Caller-supplied text fit to echo in a message or the audit log: short, printable."""
    text = text[:40]
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _shown_key(text: str) -> str:
    """What was asked for, as the audit log records it even when it is not a valid key."""
    return _clean_shown(text) + ("…" if len(text) > 40 else "")


_CITIZEN_QUERY = frozenset({"purpose", "name", "birth_date", "fields"})
#: (source, as_of, valid_until, purpose, fields) → the answer's JSON up to its record: what
#: :meth:`LookupService.answer` renders before ``"record":``, the same bytes, made once per copy,
#: purpose and field list (keyed by the texts, so that no old snapshot is kept alive by it).
_ENVELOPES: dict[tuple[str, str | None, str | None, str | None, tuple[str, ...]], bytes] = {}
_ENVELOPES_MAX = 1024


def _envelope(copy: DatasetCopy, purpose: str | None, fields: tuple[str, ...]) -> bytes:
    key = (copy.spec.system, copy.as_of_text, copy.valid_until_text, purpose, fields)
    prefix = _ENVELOPES.get(key)
    if prefix is None:
        prefix = orjson.dumps({"source": key[0], "as_of": key[1], "valid_until": key[2], "purpose": purpose,
                               "fields": fields})[:-1] + b',"record":'
        if len(_ENVELOPES) >= _ENVELOPES_MAX:
            _ENVELOPES.clear()
        _ENVELOPES[key] = prefix
    return prefix


#: ``fields=`` texts already read (a handful of distinct lists in practice): text → names.
_FIELD_LISTS: dict[str, tuple[str, ...]] = {}
_FIELD_LISTS_MAX = 1024


def _fields_param(query: Mapping[str, str]) -> tuple[str, ...] | None:
    text = query.get("fields")
    if text is None:
        return None
    names = _FIELD_LISTS.get(text)
    if names is None:
        names = tuple(_field_names(text.split(","), "fields"))
        if len(_FIELD_LISTS) >= _FIELD_LISTS_MAX:
            _FIELD_LISTS.clear()
        _FIELD_LISTS[text] = names
    return names


def _field_names(names: list[str], what: str) -> list[str]:
    bad = [name for name in names if not _FIELD.match(name)]
    if bad or not names or len(names) > 200:
        raise RequestRefused(400, "invalid_parameter", f"{what} must list 1-200 field names (a-z, 0-9, _)")
    return names


def _purpose(query: Mapping[str, str], context: AuditContext) -> str | None:
    purpose = query.get("purpose")
    if purpose is not None:
        context.purpose = _clean_shown(purpose[:100])
    return purpose


def _required(query: Mapping[str, str], name: str, what: str, limit: int = 200) -> str:
    value = query.get(name)
    if value is None or not value.strip():
        raise RequestRefused(400, "missing_parameter", f"{name} is required: {what}")
    return _clean(value, name, limit)


def _birth(text: str, where: str = "birth_date") -> BirthQuery:
    try:
        return parse_birth(_clean(text, where, 10))
    except ValueError as exc:
        raise RequestRefused(400, "invalid_parameter", f"{where}: {exc}") from None


def _personal_id(text: str, where: str = "personal_id") -> str:
    if len(text) == 12 and text.isascii() and text.isdigit() and text[0] == "0" and text[1:3] != "00" \
            and text[3] <= "5":
        return text  # what the checks below accept: 12 ASCII digits, province 001-099, gender/century 0-5
    strict = _DIGITS12.fullmatch(text)  # identifiers.py's rules take Unicode digits and a trailing newline
    problem = None if strict else f"personal ID {_clean_shown(text)!r} is not 12 digits"
    problem = problem or personal_id_problem(text)
    if problem:
        raise RequestRefused(400, "invalid_personal_id", f"{where}: {problem}")
    return text


def _enterprise_code(text: str, where: str = "code") -> str:
    strict = _ENTERPRISE_SHAPE.fullmatch(text)
    problem = None if strict else f"enterprise code {_clean_shown(text)!r} is not 10 digits (optionally -NNN)"
    problem = problem or enterprise_code_problem(text)
    if problem:
        raise RequestRefused(400, "invalid_enterprise_code", f"{where}: {problem}")
    return text


def _doc_id(text: str) -> str:
    if not _DOC_ID.match(text):
        raise RequestRefused(400, "invalid_doc_id", "doc_id must be 1-128 of A-Z a-z 0-9 . _ : - "
                                                    "(starting with a letter or digit)")
    return text


_CURSOR = re.compile(r"c1\.([A-Za-z0-9_-]{1,400})")


def encode_cursor(position: tuple[int, tuple] | None) -> str | None:
    """An opaque feed cursor: the moment (epoch ms) and key of the last row delivered."""
    if position is None:
        return None
    moment, key = position
    return "c1." + base64.urlsafe_b64encode(orjson.dumps([moment, list(key)])).decode().rstrip("=")


def decode_cursor(text: str, key_length: int) -> tuple[int, tuple]:
    """A cursor from :func:`encode_cursor` for a key of ``key_length`` columns; 400 otherwise."""
    match = _CURSOR.fullmatch(text)
    try:
        body = base64.urlsafe_b64decode(match.group(1) + "=" * (-len(match.group(1)) % 4)) if match else b""
        moment, key = orjson.loads(body)
    except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError):
        raise RequestRefused(400, "invalid_cursor", "since must be a cursor this service returned as next") from None
    shaped = (isinstance(moment, int) and isinstance(key, list) and len(key) == key_length
              and all(isinstance(part, (str, int)) and not isinstance(part, bool) for part in key))
    if not shaped:
        raise RequestRefused(400, "invalid_cursor", "since must be a cursor this service returned as next")
    return moment, tuple(key)


def _limit(query: Mapping[str, str]) -> int:
    text = query.get("limit", str(FEED_PAGE))
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_BATCH):
        raise RequestRefused(400, "invalid_parameter", f"limit must be a whole number from 1 to {MAX_BATCH}")
    return int(text)


# --- request bodies ---------------------------------------------------------------------------------

_BODY_ERRORS = {"additionalProperties": "unknown_field", "required": "missing_field"}


@dataclass(frozen=True)
class BodyReader:
    """Reads and validates a JSON body: size (413), media type (415), syntax, schema and batch size
    (400: more keys than a batch may carry breaks the documented schema, like any other rule of it)."""

    schema: dict[str, Any]
    max_bytes: int
    max_batch: int
    batch_key: str | None = None

    def __post_init__(self) -> None:
        Draft202012Validator.check_schema(self.schema)
        object.__setattr__(self, "_validator", Draft202012Validator(self.schema))

    async def read(self, request: Request) -> dict[str, Any]:
        _media_type(request)
        body = _parse(await self._bytes(request))
        self._check_batch(body)
        error = best_match(self._validator.iter_errors(body))
        if error is not None:
            raise _schema_refusal(error)
        return body

    async def _bytes(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            raise self._too_large() if declared.isdigit() else RequestRefused(
                400, "invalid_header", "Content-Length is not a number")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self) -> RequestRefused:
        return RequestRefused(413, "body_too_large", f"the body is over {self.max_bytes} bytes")

    def _check_batch(self, body: Any) -> None:
        items = body.get(self.batch_key) if self.batch_key and isinstance(body, dict) else None
        if isinstance(items, list) and len(items) > self.max_batch:
            raise RequestRefused(400, "batch_too_large", f"a batch carries at most {self.max_batch} "
                                                         f"{self.batch_key}; this one has {len(items)}")


def _media_type(request: Request) -> None:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise RequestRefused(415, "unsupported_media_type", "send the body as application/json")


def _parse(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestRefused(400, "malformed_json", f"the body is not valid JSON: {str(exc)[:120]}") from None


def _schema_refusal(error: ValidationError) -> RequestRefused:
    where = "/".join(str(part) for part in error.absolute_path) or "body"
    code = _BODY_ERRORS.get(str(error.validator), "invalid_body")
    message = error.message[:200]
    if error.validator == "required" and "'purpose'" in error.message:
        code = "purpose_required"
    identifier = _identifier_problem(error)
    if identifier is not None:
        code, message = identifier
    # the message may echo what was sent (a name, say), so the audit log gets only where and which rule
    return RequestRefused(400, code, f"{where}: {message}", audit_detail=f"{code} at {where} ({error.validator})")


def _identifier_problem(error: ValidationError) -> tuple[str, str] | None:
    """For an ID that breaks its pattern, the structure rule it breaks (clearer than the regex)."""
    path = list(error.absolute_path)
    if error.validator != "pattern" or not path or not isinstance(error.instance, str):
        return None
    if path[-1] == "personal_id":
        code, problem = "invalid_personal_id", personal_id_problem(error.instance)
    elif len(path) == 2 and path[0] == "codes":
        code, problem = "invalid_enterprise_code", enterprise_code_problem(error.instance)
    else:
        return None
    return (code, problem) if problem else None


# --- the service ------------------------------------------------------------------------------------

def _project(rows: RowTable, values: list[Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return rows.projector(fields)(values)


def _matched_record(context: AuditContext, copy, personal_id: str, name: str, birth, fields) -> dict[str, Any]:
    """The granted fields of the citizen that ``personal_id``, ``name`` and ``birth`` match (the 037
    rule), noted in the audit context; 404 when none does."""
    values, why = _citizen_values(copy, personal_id, name, birth)
    if values is None:
        context.detail = why
        raise RequestRefused(404, "not_found", "no citizen matches this personal ID, name and date of birth")
    context.fields, context.record_keys = list(fields), [personal_id]
    return copy.rows.projector(fields)(values)


def _citizen_values(copy: DatasetCopy, personal_id: str, name: str,
                    birth: BirthQuery | None) -> tuple[list[Any] | None, str]:
    """The citizen's row when the 037 rule holds; else None and why (for the audit log only: the
    caller is not told whether the ID exists)."""
    index = copy.rows.find(personal_id)
    if index is None:
        return None, "no record with this personal ID"
    values = copy.rows.values(index)
    family, middle, given, birth_date, birth_year = copy.rows.picker(_IDENTITY)(values)
    if not identity_matches((family, middle, given), birth_date, birth_year, name, birth):
        return None, "name or date of birth does not match"
    return values, ""


#: The citizen columns the 037 rule reads.
_IDENTITY = ("family_name", "middle_name", "given_name", "birth_date", "birth_year")


def _event_subject_matches(rows: RowTable, values: list[Any], role: int, name: str, birth: BirthQuery) -> bool:
    _, _, _, _, name_column, birth_column = EVENT_SUBJECTS[role]
    p = rows.position
    return identity_matches((values[p[name_column]],), values[p[birth_column]], None, name, birth)


@dataclass
class LookupService:
    """The endpoints; each reads the current snapshot once, so a swap never mixes two snapshots."""

    store: SnapshotStore
    policy: AccessPolicy
    limits: ApiLimits = field(default_factory=ApiLimits)

    def __post_init__(self) -> None:
        limits = self.limits
        self.verify_body = BodyReader(VERIFY_BODY, limits.max_body_bytes, limits.max_batch)
        self.citizens_body = BodyReader(CITIZENS_BATCH_BODY, limits.max_body_bytes, limits.max_batch, "items")
        self.enterprises_body = BodyReader(ENTERPRISES_BATCH_BODY, limits.max_body_bytes, limits.max_batch, "codes")
        self.document = openapi_document()
        self.docs_html = docs_page(self.document)

    # shared steps

    async def client(self, request: Request) -> Client:
        """The authenticated client, within its rate; fills who is asking into the audit context."""
        return await self.authenticate(_context(request), request.headers.get("authorization", ""),
                                       request.client.host if request.client else "unknown")

    def known_client(self, context: AuditContext, authorization: str) -> Client | None:
        """:meth:`authenticate` for a key verified before (the usual case), without a coroutine: the
        client, within its rate; None when :meth:`authenticate` has to decide (no key, a malformed or
        unknown one, a disabled client), which then checks everything again (no rate token was taken)."""
        self.policy.poll()
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        key = key.strip()
        client = self.policy.cached_client(key) if key else None
        if client is None or client.disabled:
            return None
        context.client_id, context.agency_code = client.client_id, client.agency_code
        self.policy.check_rate(client)
        return client

    async def authenticate(self, context: AuditContext, authorization: str, remote: str) -> Client:
        """:meth:`client` from the ``Authorization`` header's text and the remote address."""
        self.policy.poll()
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise RequestRefused(401, "unauthenticated", "send the API key as 'Authorization: Bearer <key>'",
                                 {"WWW-Authenticate": "Bearer"})
        client = self.policy.cached_client(key) or await run_in_threadpool(self.policy.check_key, key, remote)
        if client.disabled:
            raise RequestRefused(401, "unauthenticated", f"client {client.client_id} is disabled")
        context.client_id, context.agency_code = client.client_id, client.agency_code
        self.policy.check_rate(client)
        return client

    def dataset(self, name: str) -> tuple[Snapshot, DatasetCopy]:
        """The current snapshot and one of its datasets; 503 when there is none or the copy expired."""
        self.store.poll()
        snapshot = self.store.current
        if snapshot is None:
            raise RequestRefused(503, "no_snapshot", "no published snapshot is loaded yet; retry later")
        copy = snapshot.datasets.get(name)
        if copy is None:
            raise RequestRefused(503, "dataset_unavailable", f"the published snapshot has no {name}")
        if copy.expired_now():
            raise RequestRefused(503, "copy_expired", f"the {name} copy was valid until {copy.valid_until_text} "
                                                      "(Decree 47/2020 Art. 41) and has not been refreshed since")
        return snapshot, copy

    def answer(self, copy: DatasetCopy, purpose: str | None, fields: tuple[str, ...], **body: Any) -> Response:
        return JSONAnswer({"source": copy.spec.system, "as_of": copy.as_of_text, "valid_until": copy.valid_until_text,
                           "purpose": purpose, "fields": list(fields), **body})

    def grant(self, client: Client, dataset: str, asked: Sequence[str] | None, purpose: str | None) -> tuple[str, ...]:
        """The answer's fields (400/403 per :func:`hub.access_policy.select_fields`), then the purpose
        check (400/403): :meth:`AccessPolicy.grant`, which remembers what it allowed."""
        return self.policy.grant(client, dataset, asked, purpose)

    # endpoints

    async def get_citizen(self, request: Request) -> Response:
        """The Starlette route of the lookup (``HEAD``; ``GET`` takes :class:`LookupApp`'s direct path)."""
        body = await self.lookup_citizen(_context(request), request.headers.get("authorization", ""),
                                         request.client.host if request.client else "unknown",
                                         request.path_params["personal_id"], request.scope["query_string"])
        return Response(body, media_type="application/json")

    def fast_citizen(self, context: AuditContext, authorization: str, raw_id: str, query_string: bytes) -> bytes | None:
        """:meth:`lookup_citizen` for the usual request, in one pass: a key verified before, a query
        of the four known parameters, each once, a valid personal ID, fields and purpose allowed
        before for this client (:meth:`AccessPolicy.known_grant`), a name and a date of birth that
        read. Anything else returns None *before* anything is taken or noted (no rate token, the
        audit context untouched), and :meth:`lookup_citizen` then decides it step by step as always.
        Past those checks it is the same path: the rate (429), the copy (:meth:`dataset`, 503), the
        037 rule (404) and the answer, with the same audit context."""
        policy = self.policy
        policy.poll()
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        client = policy.cached_client(key.strip())
        if client is None or client.disabled:
            return None
        items = _query_items(query_string)
        query = dict(items)
        if len(query) != len(items) or not query.keys() <= _CITIZEN_QUERY:
            return None
        if not (len(raw_id) == 12 and raw_id.isascii() and raw_id.isdigit() and raw_id[0] == "0"
                and raw_id[1:3] != "00" and raw_id[3] <= "5"):  # _personal_id's rules
            return None
        purpose, text = query.get("purpose"), query.get("fields")
        asked = None if text is None else _FIELD_LISTS.get(text)
        if text is not None and asked is None:
            return None
        fields = policy.known_grant(client, "citizens", asked, purpose)
        name, birth_text = query.get("name"), query.get("birth_date")
        if (fields is None or name is None or birth_text is None or len(name) > 200 or len(birth_text) > 10
                or not name.isprintable() or not birth_text.isprintable() or not name.strip()
                or not birth_text.strip()):
            return None
        try:
            birth = parse_birth(birth_text)
        except ValueError:
            return None
        # decided: from here on exactly what lookup_citizen does past the same checks
        context.client_id, context.agency_code = client.client_id, client.agency_code
        policy.check_rate(client)
        context.asked = [raw_id]  # _shown_key of a valid ID is the ID
        if purpose is not None:
            context.purpose = _clean_shown(purpose[:100])
        _, copy = self.dataset("citizens")
        record = _matched_record(context, copy, raw_id, name, birth, fields)
        return b"%b%b}" % (_envelope(copy, purpose, fields), orjson.dumps(record))

    async def lookup_citizen(self, context: AuditContext, authorization: str, remote: str, raw_id: str,
                             query_string: bytes) -> bytes:
        """``GET /v1/citizens/{personal_id}``: the answer's JSON, or :class:`RequestRefused`."""
        client = self.known_client(context, authorization)
        if client is None:
            client = await self.authenticate(context, authorization, remote)
        query = _query_of(query_string, _CITIZEN_QUERY)
        context.asked = [_shown_key(raw_id)]
        personal_id = _personal_id(raw_id)
        purpose = _purpose(query, context)
        fields = self.policy.grant(client, "citizens", _fields_param(query), purpose)
        name = _required(query, "name", "the citizen's full name (service 037 rule)")
        birth = _birth(_required(query, "birth_date", "yyyy, yyyyMMdd or yyyy-MM-dd (service 037 rule)"))
        _, copy = self.dataset("citizens")
        record = _matched_record(context, copy, personal_id, name, birth, fields)
        return orjson.dumps({"source": copy.spec.system, "as_of": copy.as_of_text,
                             "valid_until": copy.valid_until_text, "purpose": purpose, "fields": list(fields),
                             "record": record})

    async def verify_citizen(self, request: Request) -> Response:
        context = _context(request)
        client = await self.client(request)
        _query(request, frozenset())
        body = await self.verify_body.read(request)
        context.asked = [_shown_key(body["personal_id"])]
        personal_id = _personal_id(body["personal_id"])
        purpose = _purpose(body, context)
        self.grant(client, "citizens", [], purpose)
        birth = _birth(body["birth_date"]) if "birth_date" in body else None
        _, copy = self.dataset("citizens")
        values, why = _citizen_values(copy, personal_id, _clean(body["name"], "name", 200), birth)
        if values is not None and "cmnd" in body:
            values, why = (values, "") if values[copy.rows.position["cmnd"]] == body["cmnd"] else (None, "CMND differs")
        context.detail = why or "exists"
        context.record_keys = [personal_id] if values is not None else []
        return JSONAnswer({"exists": values is not None, "source": copy.spec.system, "as_of": copy.as_of_text,
                           "valid_until": copy.valid_until_text, "purpose": purpose})

    async def citizens_batch(self, request: Request) -> Response:
        context = _context(request)
        client = await self.client(request)
        _query(request, frozenset())
        body = await self.citizens_body.read(request)
        items = body["items"]
        context.asked = [str(item["personal_id"]) for item in items]
        purpose = _purpose(body, context)
        fields = self.grant(client, "citizens", _body_fields(body), purpose)
        claims = [(_personal_id(item["personal_id"], f"items/{i}/personal_id"),
                   _clean(item["name"], f"items/{i}/name", 200), _birth(item["birth_date"], f"items/{i}/birth_date"))
                  for i, item in enumerate(items)]
        _, copy = self.dataset("citizens")
        results = []
        for personal_id, name, birth in claims:
            values, _ = _citizen_values(copy, personal_id, name, birth)
            result: dict[str, Any] = {"personal_id": personal_id, "found": values is not None}
            if values is not None:
                result["record"] = _project(copy.rows, values, fields)
                context.record_keys.append(personal_id)
            results.append(result)
        context.fields = list(fields) if context.record_keys else []
        context.detail = f"{len(context.record_keys)} of {len(results)} matched"
        return self.answer(copy, purpose, fields, results=results)

    async def civil_events(self, request: Request) -> Response:
        context = _context(request)
        client = await self.client(request)
        query = _query(request, frozenset({"purpose", "name", "birth_date", "fields"}))
        context.asked = [_shown_key(request.path_params["personal_id"])]
        personal_id = _personal_id(request.path_params["personal_id"])
        purpose = _purpose(query, context)
        fields = self.grant(client, "civil_events", _fields_param(query), purpose)
        name = _required(query, "name", "the person's full name (service 037 rule)")
        birth = _birth(_required(query, "birth_date", "yyyy, yyyyMMdd or yyyy-MM-dd (service 037 rule)"))
        snapshot, copy = self.dataset("civil_events")
        events = self._events_of(snapshot, copy, personal_id, name, birth, context)
        rows, p = copy.rows, copy.rows.position
        listed = []
        for index, role in events:
            values = rows.values(index)
            listed.append({"role": ROLES[role], "record": _project(rows, values, fields)})
            context.record_keys.append(f"{values[p['module']]}/{values[p['record_id']]}")
        context.fields = list(fields) if listed else []
        return self.answer(copy, purpose, fields, personal_id=personal_id, events=listed)

    def _events_of(self, snapshot: Snapshot, copy: DatasetCopy, personal_id: str, name: str, birth: BirthQuery,
                   context: AuditContext) -> list[tuple[int, int]]:
        """The person's events: all of them when the population record proves the identity; without
        a population record, those whose own subject name and date of birth match."""
        entries = snapshot.person_events.get(personal_id)
        population = snapshot.datasets.get("citizens")
        if population is not None and population.rows.find(personal_id) is not None:
            values, why = _citizen_values(population, personal_id, name, birth)
            if values is None:
                context.detail = f"population record: {why}"
                raise RequestRefused(404, "not_found", "no person matches this personal ID, name and date of birth")
            context.detail = "identified by the population record"
            return entries
        matching = [(i, role) for i, role in entries
                    if _event_subject_matches(copy.rows, copy.rows.values(i), role, name, birth)]
        if not matching:
            context.detail = "no population record; no event names this person"
            raise RequestRefused(404, "not_found", "no person matches this personal ID, name and date of birth")
        context.detail = "identified by the events' own records"
        return matching

    async def get_enterprise(self, request: Request) -> Response:
        context = _context(request)
        client = await self.client(request)
        query = _query(request, frozenset({"purpose", "fields"}))
        context.asked = [_shown_key(request.path_params["code"])]
        code = _enterprise_code(request.path_params["code"])
        purpose = _purpose(query, context)
        fields = self.grant(client, "enterprises", _fields_param(query), purpose)
        _, copy = self.dataset("enterprises")
        index = copy.rows.find(code)
        if index is None:
            raise RequestRefused(404, "not_found", f"no enterprise with code {code} in the registry copy")
        context.fields, context.record_keys = list(fields), [code]
        return self.answer(copy, purpose, fields, record=_project(copy.rows, copy.rows.values(index), fields))

    async def enterprises_batch(self, request: Request) -> Response:
        context = _context(request)
        client = await self.client(request)
        _query(request, frozenset())
        body = await self.enterprises_body.read(request)
        context.asked = list(body["codes"])
        purpose = _purpose(body, context)
        fields = self.grant(client, "enterprises", _body_fields(body), purpose)
        codes = [_enterprise_code(code, f"codes/{i}") for i, code in enumerate(body["codes"])]
        _, copy = self.dataset("enterprises")
        results = []
        for code in codes:
            index = copy.rows.find(code)
            result: dict[str, Any] = {"enterprise_code": code, "found": index is not None}
            if index is not None:
                result["record"] = _project(copy.rows, copy.rows.values(index), fields)
                context.record_keys.append(code)
            results.append(result)
        context.fields = list(fields) if context.record_keys else []
        context.detail = f"{len(context.record_keys)} of {len(results)} found"
        return self.answer(copy, purpose, fields, results=results)

    async def get_document(self, request: Request) -> Response:
        context = _context(request)
        client = await self.client(request)
        query = _query(request, frozenset({"purpose", "fields"}))
        context.asked = [_shown_key(request.path_params["doc_id"])]
        doc_id = _doc_id(request.path_params["doc_id"])
        purpose = _purpose(query, context)
        fields = self.grant(client, "documents", _fields_param(query), purpose)
        snapshot, copy = self.dataset("documents")
        index = copy.rows.find(doc_id)
        if index is None:
            raise RequestRefused(404, "not_found", f"no message {doc_id} in the document-axis copy")
        values = copy.rows.values(index)
        reference = values[copy.rows.position["edxml_document_id"]]
        statuses = [copy.rows.values(i) for i, _ in snapshot.document_statuses.get(reference)] if reference else []
        p = copy.rows.position["doc_id"]
        context.fields = list(fields)
        context.record_keys = [doc_id, *(status[p] for status in statuses)]
        return self.answer(copy, purpose, fields, record=_project(copy.rows, values, fields),
                           statuses=[_project(copy.rows, status, fields) for status in statuses])

    async def service_measures(self, request: Request) -> Response:
        """Per agency and month, optionally one agency and/or one month (aggregates: no purpose)."""
        return await self._measures(request, "service_measures", {"agency": AGENCY_102, "month": MONTH})

    async def procedure_times(self, request: Request) -> Response:
        return await self._measures(request, "procedure_times", {"procedure": PROCEDURE})

    async def _measures(self, request: Request, dataset: str, filters: Mapping[str, str]) -> Response:
        context = _context(request)
        client = await self.client(request)
        query = _query(request, frozenset({*filters, "fields"}))
        wanted = {}
        for name, pattern in filters.items():
            if name in query:
                if not re.fullmatch(pattern, query[name]):
                    raise RequestRefused(400, "invalid_parameter", f"{name} {_clean_shown(query[name])!r} does not "
                                                                   f"match {pattern}")
                wanted["procedure_code" if name == "procedure" else name] = query[name]
        context.asked = [f"{dataset} " + (" ".join(f"{k}={v}" for k, v in wanted.items()) or "all")]
        fields = self.grant(client, dataset, _fields_param(query), None)
        _, copy = self.dataset(dataset)
        rows = copy.rows
        where = [(rows.position[name], value) for name, value in wanted.items()]
        matching = [values for values in (rows.values(i) for i in range(len(rows)))
                    if all(values[p] == value for p, value in where)]
        key = [rows.position[k] for k in copy.spec.key]
        context.fields = list(fields)
        context.record_keys = ["/".join(str(values[p]) for p in key) for values in matching]
        return self.answer(copy, None, fields, records=[_project(rows, values, fields) for values in matching])

    async def changes(self, request: Request) -> Response:
        """The dataset's records whose latest version reached the hub after the cursor, oldest first."""
        context = _context(request)
        client = await self.client(request)
        query = _query(request, frozenset({"since", "limit", "purpose", "fields"}))
        name = request.path_params["dataset"]
        if name not in CATALOGUE:
            raise RequestRefused(400, "unknown_dataset", f"no dataset {_clean_shown(name)!r}; "
                                                         f"known: {', '.join(CATALOGUE)}")
        context.asked = [f"{name} since {_clean_shown(query.get('since', 'the start'))}"]
        check_feed(client, name)
        purpose = _purpose(query, context)
        fields = self.grant(client, name, _fields_param(query), purpose)
        limit = _limit(query)
        since = decode_cursor(query["since"], len(CATALOGUE[name].key)) if "since" in query else None
        _, copy = self.dataset(name)
        rows, after = copy.changes.page(since, limit, copy.key_of)
        items = [{"key": list(copy.key_of(row)), "record": _project(copy.rows, copy.rows.values(row), fields)}
                 for row in rows]
        context.record_keys = ["/".join(str(part) for part in item["key"]) for item in items]
        context.fields = list(fields) if items else []
        return self.answer(copy, purpose, fields, items=items, next=encode_cursor(after))

    # public documents

    async def openapi(self, request: Request) -> Response:
        return JSONAnswer(self.document)

    async def docs(self, request: Request) -> Response:
        return HTMLResponse(self.docs_html)

    async def health(self, request: Request) -> Response:
        snapshot = self.store.current
        self.store.poll()
        body: dict[str, Any] = {"status": "ok" if snapshot is not None else "no_snapshot",
                                "last_error": self.store.last_error}
        if snapshot is not None:
            datasets = {name: {"rows": len(c.rows), "as_of": c.as_of_text, "as_of_basis": c.as_of_basis,
                               "valid_until": c.valid_until_text} for name, c in snapshot.datasets.items()}
            body["snapshot"] = {"published_at": iso_moment(snapshot.published_at),
                                "loaded_at": iso_moment(snapshot.loaded_at), "load_seconds": snapshot.load_seconds,
                                "datasets": datasets}
        return JSONAnswer(body)


def _body_fields(body: Mapping[str, Any]) -> list[str] | None:
    return list(body["fields"]) if "fields" in body else None


class _Guarded:
    """A handler whose refusal becomes its JSON answer, noted for the audit entry."""

    __slots__ = ("handler",)

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.handler = handler

    async def endpoint(self, request: Request) -> Response:
        try:
            return await self.handler(request)
        except RequestRefused as refusal:
            _note_refusal(_context(request), refusal)
            return _refusal_response(refusal)


def _guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` with its refusals answered (:class:`_Guarded`), as a bound method: Starlette takes a
    plain or bound function for a request handler, anything else for an ASGI app, and a function of a
    compiled module (:mod:`hub.speedups`) is neither, while its bound method is one."""
    return _Guarded(handler).endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer in the same JSON shape as every other refusal."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    codes = {404: ("not_found", "no such endpoint; see /docs"), 405: ("method_not_allowed",
                                                                       "this method is not allowed on this path")}
    error, message = codes.get(status, ("http_error", str(getattr(exc, "detail", "")) or "request refused"))
    context = request.scope.get("state", {}).get("audit")
    if context is not None:
        context.detail = error
    headers = getattr(exc, "headers", None) or {}
    return JSONAnswer({"error": error, "message": message}, status, headers)


CITIZEN_PATH = "/v1/citizens/{personal_id}"
_CITIZEN_PREFIX = "/v1/citizens/"
_JSON = (b"content-type", b"application/json")
_HARDENING = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))
_INTERNAL_ERROR = orjson.dumps({"error": "internal_error", "message": "the service failed on this request"})


class LookupApp(Starlette):
    """The Starlette app, with the busiest request answered without the framework's machinery.

    ``GET /v1/citizens/{personal_id}`` (any ``GET`` of one path segment under ``/v1/citizens/``,
    which is exactly what the first route matches) goes straight to
    :meth:`LookupService.lookup_citizen` and its audit entry: no routing, request object or
    middleware stack, which cost several times the lookup itself. What it answers is what the
    Starlette route and :class:`AuditMiddleware` answer, byte for byte: the same status, body and
    headers, refusals in the same JSON, the same audit entry (path ``/v1/citizens/{personal_id}``),
    503 when the log cannot take the entry, 500 (audited) on an unexpected error. Every other
    request, ``HEAD`` of the same path included, goes through Starlette."""

    def __init__(self, service: "LookupService", sink: AuditSink, durable: bool, **options: Any) -> None:
        super().__init__(**options)
        self.service, self.sink, self.durable = service, sink, durable
        #: :meth:`hub.audit_log.AuditLog.append_request` where the sink has it: the same entry as
        #: ``append(AuditEntry(...))``, without making the entry object.
        self._append_request = getattr(sink, "append_request", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path = scope["path"]
            if path.startswith(_CITIZEN_PREFIX):
                raw_id = path[13:]
                if raw_id and "/" not in raw_id:
                    await self._get_citizen(scope, send, raw_id)
                    return
        await super().__call__(scope, receive, send)

    async def _get_citizen(self, scope: Scope, send: Send, raw_id: str) -> None:
        context = AuditContext(datetime.now(timezone.utc))
        authorization = ""
        for name, value in scope["headers"]:
            if name == b"authorization":  # the first, as Starlette's Headers.get reads it
                authorization = value.decode("latin-1")
                break
        peer = scope.get("client")
        try:
            try:
                body = self.service.fast_citizen(context, authorization, raw_id, scope["query_string"])
                if body is None:
                    body = await self.service.lookup_citizen(context, authorization, peer[0] if peer else "unknown",
                                                             raw_id, scope["query_string"])
                status, headers = 200, [(b"content-length", b"%d" % len(body)), _JSON]
            except RequestRefused as refusal:
                _note_refusal(context, refusal)
                status, body = refusal.status, orjson.dumps({"error": refusal.error, "message": refusal.message})
                headers = [*((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in refusal.headers.items()),
                           (b"content-length", str(len(body)).encode()), _JSON]
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            context.detail = "internal error"
            status, body = 500, _INTERNAL_ERROR
            headers = [_JSON, (b"content-length", str(len(body)).encode()), *_hardening(None)]
        if self.durable:
            number = await _audit(self.sink, True, _entry(context, "GET", CITIZEN_PATH, status))
        else:
            try:
                if self._append_request is not None:
                    number = self._append_request(
                        at=context.at, client_id=context.client_id, agency_code=context.agency_code,
                        purpose=context.purpose, method="GET", path=CITIZEN_PATH, asked=context.asked,
                        fields=context.fields, record_keys=context.record_keys, outcome=status, detail=context.detail)
                else:
                    number = self.sink.append(_entry(context, "GET", CITIZEN_PATH, status))
            except Exception:
                log.exception("audit append failed; withholding the answer")
                number = None
        if number is None:
            await _send_json(send, 503, {"error": "audit_unavailable",
                                         "message": "the audit log cannot record this request, so it is "
                                                    "not answered; retry later"})
            return
        headers += _HARDENING  # what _hardening(number) adds, in its order
        if isinstance(number, int):
            headers.append((b"x-audit-entry", b"%d" % number))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def create_app(store: SnapshotStore, policy: AccessPolicy, audit: AuditSink,
               limits: ApiLimits | None = None) -> Starlette:
    """The ASGI app. ``store`` should be loaded (``store.load()``) before the first request; until a
    snapshot exists, data endpoints answer 503."""
    limits = limits or ApiLimits()
    service = LookupService(store, policy, limits)
    routes = [
        Route(CITIZEN_PATH, _guarded(service.get_citizen), methods=["GET"]),  # first: the busiest (GET: LookupApp)
        Route("/v1/citizens/verify", _guarded(service.verify_citizen), methods=["POST"]),
        Route("/v1/citizens:batch", _guarded(service.citizens_batch), methods=["POST"]),
        Route("/v1/citizens/{personal_id}/civil-events", _guarded(service.civil_events), methods=["GET"]),
        Route("/v1/enterprises:batch", _guarded(service.enterprises_batch), methods=["POST"]),
        Route("/v1/enterprises/{code}", _guarded(service.get_enterprise), methods=["GET"]),
        Route("/v1/documents/{doc_id}", _guarded(service.get_document), methods=["GET"]),
        Route("/v1/changes/{dataset}", _guarded(service.changes), methods=["GET"]),
        Route("/v1/service-measures", _guarded(service.service_measures), methods=["GET"]),
        Route("/v1/procedure-times", _guarded(service.procedure_times), methods=["GET"]),
        Route("/openapi.json", service.openapi, methods=["GET"]),
        Route("/docs", service.docs, methods=["GET"]),
        Route("/healthz", service.health, methods=["GET"]),
    ]
    return LookupApp(service, audit, limits.audit_durable, routes=routes,
                     middleware=[Middleware(AuditMiddleware, sink=audit, durable=limits.audit_durable)],
                     exception_handlers={HTTPException: _http_error})


def app_from_settings(settings: Any, environ: Mapping[str, str] | None = None) -> Starlette:
    """The app wired from the hub's settings: the published snapshot under ``$HUB_HOME/lake``, the
    clients file (``HUB_API_CLIENTS``) and the audit log (``HUB_AUDIT_…``, written by its own process:
    :class:`hub.audit_writer.AuditLogProcess`). ``environ`` None: the
    process environment over the config file, as :meth:`hub.config.Settings.from_env` reads them."""
    from hub.audit_writer import AuditLogProcess

    env = {**load_config_file(os.environ), **os.environ} if environ is None else environ
    home = Path(settings.home).resolve()
    store = SnapshotStore(home / "lake" / "published" / "current.duckdb")
    store.load()
    policy = AccessPolicy(clients_path(env, home))
    return create_app(store, policy, AuditLogProcess.from_settings(environ))


def serve(settings: Any, host: str = "127.0.0.1", port: int = 8800) -> None:
    """Run the service in the foreground with one uvicorn worker (the hub's CLI: ``hub api``)."""
    from hub.http_serving import serve as run

    run(app_from_settings(settings), host, port)
