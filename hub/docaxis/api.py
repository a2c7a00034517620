"""The API the province's document-management systems call: their pending documents, each document
with its package and files, acknowledgements, statuses, and the documents they send.

Every request goes through the lookup service's machinery (``hub.lookup_api``, ``hub.access_policy``,
``hub.audit_log``): an API key checked against a salted hash in a clients file of its own
(``HUB_DOCAXIS_CLIENTS``: the systems allowed here are not the lookup clients), the client's rate,
and one audit entry per request, written before its answer leaves (who, which agency, which
documents, which parts were returned, the outcome). A client acts for exactly one agency, the one it
was registered with (either code form names it); asking for another is 403.

The API never calls the national axis: what a request causes there (a status package, a document)
is queued in the store in the same transaction as the change, and sent by the pipeline's next run
(``pipelines/documents.py``) or ``hub docaxis send``. A local system is therefore never held up by
the axis, and a crash between the two loses neither.
"""

from __future__ import annotations

import base64
import binascii
import logging
import mimetypes
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Awaitable, Callable, Mapping

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from connectors import edxml
from hub.access_policy import AccessPolicy, Client, RequestRefused
from hub.docaxis import lifecycle
from hub.docaxis.openapi import (ACK_BODY, DOC_ID, OUTGOING_BODY, ORGAN_ID, PAGE, RECALL_BODY, STATUS_BODY,
                                 openapi_document)
from hub.docaxis.packages import Outgoing, OutgoingFile, document_package, files_summary
from hub.docaxis.signing import Signer
from hub.docaxis.store import DocumentStore, StoreError
from hub.lookup_api import AuditContext, AuditMiddleware, AuditSink, BodyReader, JSONAnswer
from hub.lookup_openapi import docs_page
from schemas.timefmt import VN_TZ

log = logging.getLogger(__name__)

_DOC_ID = re.compile(DOC_ID.replace("$", r"\Z"))
_ORGAN = re.compile(ORGAN_ID.replace("$", r"\Z"))
_BUSINESS = {"revoke": lifecycle.REVOKE, "update": lifecycle.UPDATE, "replace": lifecycle.REPLACE}
_QUERY = {"pending": frozenset({"agency", "after", "limit"}), "agency": frozenset({"agency"}), "none": frozenset()}


@dataclass
class DocaxisService:
    store: DocumentStore
    policy: AccessPolicy
    signer: Signer
    max_body_bytes: int

    def __post_init__(self) -> None:
        self.status_body = BodyReader(STATUS_BODY, 64 << 10, 1)
        self.ack_body = BodyReader(ACK_BODY, 64 << 10, 1)
        self.recall_body = BodyReader(RECALL_BODY, 64 << 10, 1)
        self.outgoing_body = BodyReader(OUTGOING_BODY, self.max_body_bytes, 1)
        self.document = openapi_document()
        self.docs_html = docs_page(self.document)

    # who is asking, for which agency -----------------------------------------------------------------

    async def client(self, request: Request) -> Client:
        context: AuditContext = request.state.audit
        self.policy.poll()
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise RequestRefused(401, "unauthenticated", "send the API key as 'Authorization: Bearer <key>'",
                                 {"WWW-Authenticate": "Bearer"})
        remote = request.client.host if request.client else "unknown"
        client = self.policy.cached_client(key) or await run_in_threadpool(self.policy.check_key, key, remote)
        if client.disabled:
            raise RequestRefused(401, "unauthenticated", f"client {client.client_id} is disabled")
        context.client_id, context.agency_code = client.client_id, client.agency_code
        self.policy.check_rate(client)
        return client

    def agency(self, client: Client, asked: str | None) -> str:
        """The province agency the request acts for: the client's own (``asked`` may name it in
        either code form); 403 for any other, or when the client's agency is not the province's."""
        own = self.store.resolve(client.agency_code)
        if own is None:
            raise RequestRefused(403, "agency_not_served", f"client {client.client_id} is registered for "
                                                           f"{client.agency_code}, which is not one of the province's "
                                                           "agencies")
        if asked is not None and asked != client.agency_code and self.store.resolve(asked) != own:
            raise RequestRefused(403, "agency_not_allowed",
                                 f"client {client.client_id} acts for {client.agency_code}, not {_shown(asked)}")
        return own

    async def begin(self, request: Request, query: str = "agency") -> tuple[Client, dict[str, str], str | None]:
        client = await self.client(request)
        params = _query(request, _QUERY[query])
        asked = params.get("agency")
        if asked is not None and not _ORGAN.match(asked):
            raise RequestRefused(400, "invalid_parameter", "agency must be an agency code (000.00.02.H31 or H31.02)")
        return client, params, asked

    # receiving side ----------------------------------------------------------------------------------

    async def pending(self, request: Request) -> Response:
        client, params, asked = await self.begin(request, "pending")
        agency = self.agency(client, asked)
        after, limit = _number(params, "after", 0, 0, 1 << 62), _number(params, "limit", PAGE, 1, PAGE)
        items, more = await run_in_threadpool(self.store.pending, agency, after, limit)
        _note(request, asked=[agency], keys=[i["doc_id"] for i in items], fields=["summary"] if items else [])
        return JSONAnswer({"agency": agency, "items": items, "next": more})

    async def get_document(self, request: Request) -> Response:
        client, _, asked = await self.begin(request)
        doc_id = _doc_id(request)
        agency = self.agency(client, asked)
        found = await run_in_threadpool(self.store.document, doc_id, agency)
        _note(request, asked=[doc_id], keys=[doc_id], fields=["metadata", "attachments", "trail"])
        return JSONAnswer({**found, "links": _links(doc_id, found["attachments"])})

    async def get_edxml(self, request: Request) -> Response:
        client, _, asked = await self.begin(request)
        doc_id = _doc_id(request)
        agency = self.agency(client, asked)
        sha256, _ = await run_in_threadpool(self.store.package_of, doc_id, agency)
        _note(request, asked=[doc_id], keys=[doc_id], fields=["edxml"])
        return FileResponse(self.store.blobs.path(sha256), media_type="application/xml",
                            headers={"ETag": f'"{sha256}"'})

    async def get_attachment(self, request: Request) -> Response:
        client, _, asked = await self.begin(request)
        doc_id = _doc_id(request)
        text = request.path_params["position"]
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 1000):
            raise RequestRefused(400, "invalid_parameter", "position must be a whole number from 1 (see attachments)")
        agency = self.agency(client, asked)
        found = await run_in_threadpool(self.store.attachment_of, doc_id, agency, int(text))
        _note(request, asked=[f"{doc_id}/{text}"], keys=[doc_id], fields=[f"attachment:{text}"])
        return FileResponse(self.store.blobs.path(found["sha256"]), media_type=found["mime"] or "application/octet-stream",
                            filename=found["name"], headers={"ETag": f'"{found["sha256"]}"'})

    async def acknowledge(self, request: Request) -> Response:
        client, _, _ = await self.begin(request, "none")
        doc_id = _doc_id(request)
        body = await _optional_body(self.ack_body, request)
        agency = self.agency(client, body.get("agency"))
        delivery = await run_in_threadpool(self.store.acknowledge, doc_id, agency)
        _note(request, asked=[doc_id], keys=[doc_id], fields=["delivery"])
        return JSONAnswer({"doc_id": doc_id, "agency": agency, "delivery": delivery})

    async def post_status(self, request: Request) -> Response:
        client, _, _ = await self.begin(request, "none")
        doc_id = _doc_id(request)
        body = await self.status_body.read(request)
        agency = self.agency(client, body.get("agency"))
        recorded = await run_in_threadpool(self.store.post_status, doc_id, agency, body["code"],
                                           body.get("description", ""), body.get("staff"))
        _note(request, asked=[doc_id], keys=[doc_id], fields=["status"], detail=f"status {body['code']}")
        return JSONAnswer(recorded, 202 if recorded["created"] else 200)

    # sending side ------------------------------------------------------------------------------------

    async def send(self, request: Request) -> Response:
        client, _, _ = await self.begin(request, "none")
        body = await self.outgoing_body.read(request)
        agency = self.agency(client, body.get("agency"))
        created, new = await run_in_threadpool(self._submit, client, agency, body)
        _note(request, asked=[body["request_id"]], keys=[created["id"]], fields=["outgoing"],
              detail=f"{'sent' if new else 'already sent'} {created['document_id']}")
        return JSONAnswer(created, 202 if new else 200)

    def _submit(self, client: Client, agency: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        entry = self.store.directory_entry(agency) or {}
        sender = edxml.Organ(entry.get("code102") or agency, entry.get("name", ""))
        again = self.store.query("SELECT id, document_id FROM outgoing WHERE agency = ? AND request_id = ?",
                                 [agency, body["request_id"]])
        if again:  # a retry of a request whose answer was lost: what it created, nothing new
            expected = f"{sender.organ_id},{_date(body, 'promulgation_date'):%Y/%m/%d}," \
                       f"{body['code_number']}/{body['code_notation']}"
            if again[0]["document_id"] != expected:
                raise RequestRefused(409, "request_id_reused", f"request_id {body['request_id']} was used for "
                                                               f"document {again[0]['document_id']}")
            return self.store.outgoing(again[0]["id"]), False
        recipients = []
        for k, organ in enumerate(body["recipients"]):
            if self.store.known_to_axis(organ) is False:
                raise RequestRefused(400, "unknown_recipient", f"recipients/{k}: {organ} is not in the axis directory")
            known = self.store.directory_entry(organ) or {}
            recipients.append(edxml.Organ(known.get("code102") or organ, known.get("name", "")))
        business = body.get("business") or {}
        kind = _BUSINESS.get(business.get("type", ""), lifecycle.NEW)
        target = business.get("document_id", "")
        if kind != lifecycle.NEW:
            self._check_target(agency, target)
        files = tuple(_file(f, k) for k, f in enumerate(body.get("files", [])))
        document_type = body.get("document_type", {})
        signer = body.get("signer", {})
        staff = body.get("staff")
        doc = Outgoing(
            sender=sender, recipients=tuple(recipients), code_number=body["code_number"],
            code_notation=body["code_notation"], subject=body["subject"],
            promulgation_date=_date(body, "promulgation_date"), place=body.get("place", ""),
            content=body.get("content", ""),
            document_type=(document_type.get("type", ""), document_type.get("detail", ""), document_type.get("name", "")),
            signer=(signer.get("competence", ""), signer.get("position", ""), signer.get("full_name", "")),
            due_date=_date(body, "due_date") if "due_date" in body else None, priority=body.get("priority"),
            steering_type=body.get("steering_type"), to_places=tuple(body.get("to_places", [])),
            business_type=kind, business_target=target, business_reason=business.get("reason", ""),
            receiver_changes=tuple((c["organ_id"], c["receiver_type"]) for c in business.get("receiver_changes", [])),
            staff=edxml.Staff(staff.get("department", ""), staff.get("name", ""), staff.get("mobile", ""),
                              staff.get("email", "")) if staff else None,
            files=files, sent_at=datetime.now(timezone.utc).astimezone(VN_TZ))
        package = self.signer.sign(document_package(doc))
        sha256 = self.store.blobs.put(package)
        return self.store.submit_outgoing(
            agency=agency, organ_id=sender.organ_id, client_id=client.client_id, request_id=body["request_id"],
            document_id=doc.document_id, business_type=kind, business_target=target or None,
            code_number=doc.code_number, code_notation=doc.code_notation, subject=doc.subject,
            promulgation_date=doc.promulgation_date, due_date=doc.due_date,
            recipients=[r.organ_id for r in recipients], attachments=files_summary(files), package_sha256=sha256)

    def _check_target(self, agency: str, document_id: str) -> None:
        found = self.store.query("SELECT agency FROM outgoing WHERE document_id = ?", [document_id])
        if not found or found[0]["agency"] != agency:
            raise RequestRefused(400, "unknown_document", f"business/document_id: {_shown(document_id)} is not a "
                                                          "document this agency sent through the hub")

    async def outgoing_list(self, request: Request) -> Response:
        client, _, asked = await self.begin(request)
        agency = self.agency(client, asked)
        items = await run_in_threadpool(self.store.outgoing_list, agency)
        _note(request, asked=[agency], keys=[i["id"] for i in items], fields=["outgoing"] if items else [])
        return JSONAnswer({"agency": agency, "items": items})

    async def outgoing(self, request: Request) -> Response:
        client, _, asked = await self.begin(request)
        outgoing_id = _doc_id(request, "outgoing_id")
        agency = self.agency(client, asked)
        found = await run_in_threadpool(self.store.outgoing, outgoing_id, agency)
        _note(request, asked=[outgoing_id], keys=[outgoing_id], fields=["outgoing"])
        return JSONAnswer(found)

    async def recall(self, request: Request) -> Response:
        client, _, _ = await self.begin(request, "none")
        outgoing_id = _doc_id(request, "outgoing_id")
        body = await _optional_body(self.recall_body, request)
        agency = self.agency(client, body.get("agency"))
        found = await run_in_threadpool(self.store.recall, outgoing_id, agency, body.get("description", ""),
                                        body.get("staff"))
        _note(request, asked=[outgoing_id], keys=[outgoing_id], fields=["outgoing"], detail="status 13")
        return JSONAnswer(found, 202 if found["recalled_from"] else 200)

    async def overdue(self, request: Request) -> Response:
        client, _, asked = await self.begin(request)
        agency = self.agency(client, asked)
        items = await run_in_threadpool(self.store.overdue, None, agency)
        owed = [i for i in items if i["direction"] == "received"]
        owed_to = [i for i in items if i["direction"] == "sent"]
        _note(request, asked=[agency], keys=[i["document_id"] for i in items], fields=["overdue"] if items else [])
        return JSONAnswer({"agency": agency, "today": self.store.today().isoformat(), "owed": owed, "owed_to": owed_to})

    # public ------------------------------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
        return JSONAnswer(self.document)

    async def docs(self, request: Request) -> Response:
        return HTMLResponse(self.docs_html)

    async def health(self, request: Request) -> Response:
        return JSONAnswer({"status": "ok"})


def _note(request: Request, *, asked: list[str], keys: list[str], fields: list[str], detail: str = "") -> None:
    context: AuditContext = request.state.audit
    context.asked, context.record_keys, context.fields = asked, keys, fields
    if detail:
        context.detail = detail


def _shown(text: str) -> str:
    text = text[:60]
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)


def _query(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    items = list(request.query_params.multi_items())
    names = [name for name, _ in items]
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise RequestRefused(400, "unknown_parameter", f"unknown query parameter(s) {', '.join(map(_shown, unknown))}; "
                                                       f"allowed: {', '.join(sorted(allowed)) or 'none'}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RequestRefused(400, "invalid_parameter", f"query parameter(s) given more than once: {', '.join(repeated)}")
    return dict(items)


def _number(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and low <= int(text) <= high):
        raise RequestRefused(400, "invalid_parameter", f"{name} must be a whole number from {low} to {high}")
    return int(text)


def _doc_id(request: Request, name: str = "doc_id") -> str:
    text = request.path_params[name]
    if not _DOC_ID.match(text):
        raise RequestRefused(400, f"invalid_{name}", f"{name} must be 1-128 of A-Z a-z 0-9 . _ : - "
                                                     "(starting with a letter or digit)")
    return text


def _date(body: Mapping[str, Any], name: str) -> date:
    try:
        return date.fromisoformat(body[name])
    except ValueError:
        raise RequestRefused(400, "invalid_body", f"{name}: {body[name]!r} is not a date (YYYY-MM-DD)") from None


def _file(item: Mapping[str, Any], k: int) -> OutgoingFile:
    try:
        data = base64.b64decode("".join(item["content_base64"].split()), validate=True)
    except (binascii.Error, ValueError):
        raise RequestRefused(400, "invalid_body", f"files/{k}/content_base64 is not valid base64") from None
    if not data:
        raise RequestRefused(400, "invalid_body", f"files/{k} ({_shown(item['name'])}) is empty")
    mime = item.get("mime") or mimetypes.guess_type(item["name"], strict=False)[0] or "application/octet-stream"
    return OutgoingFile(item["name"], mime, data, bool(item.get("zipped", True)), item.get("description", ""))


async def _optional_body(reader: BodyReader, request: Request) -> dict[str, Any]:
    """An empty body stands for ``{}``; anything else is read and validated like any body."""
    if request.headers.get("content-length", "0") == "0" and "transfer-encoding" not in request.headers:
        return {}
    return await reader.read(request)


def _links(doc_id: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    return {"edxml": f"/v1/documents/{doc_id}/edxml",
            "attachments": [f"/v1/documents/{doc_id}/attachments/{f['position']}" for f in files],
            "ack": f"/v1/documents/{doc_id}/ack", "status": f"/v1/documents/{doc_id}/status"}


def _guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Refusals (the policy's, the store's) become their JSON answer and are noted for the audit entry."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except (RequestRefused, StoreError) as refusal:
            context: AuditContext = request.state.audit
            note = f"{refusal.error}: {refusal.message}"[:300]
            context.detail = f"{context.detail}; {note}" if context.detail else note
            headers = dict(getattr(refusal, "headers", {}) or {})
            return JSONAnswer({"error": refusal.error, "message": refusal.message}, refusal.status, headers)

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    codes = {404: ("not_found", "no such endpoint; see /docs"),
             405: ("method_not_allowed", "this method is not allowed on this path")}
    error, message = codes.get(status, ("http_error", str(getattr(exc, "detail", "")) or "request refused"))
    context = request.scope.get("state", {}).get("audit")
    if context is not None:
        context.detail = error
    return JSONAnswer({"error": error, "message": message}, status)


def create_app(store: DocumentStore, policy: AccessPolicy, signer: Signer, audit: AuditSink,
               max_body_bytes: int = 64 << 20) -> Starlette:
    service = DocaxisService(store, policy, signer, max_body_bytes)
    routes = [
        Route("/v1/documents", _guarded(service.pending), methods=["GET"]),
        Route("/v1/documents/{doc_id}", _guarded(service.get_document), methods=["GET"]),
        Route("/v1/documents/{doc_id}/edxml", _guarded(service.get_edxml), methods=["GET"]),
        Route("/v1/documents/{doc_id}/attachments/{position}", _guarded(service.get_attachment), methods=["GET"]),
        Route("/v1/documents/{doc_id}/ack", _guarded(service.acknowledge), methods=["POST"]),
        Route("/v1/documents/{doc_id}/status", _guarded(service.post_status), methods=["POST"]),
        Route("/v1/outgoing", _guarded(service.outgoing_list), methods=["GET"]),
        Route("/v1/outgoing", _guarded(service.send), methods=["POST"]),
        Route("/v1/outgoing/{outgoing_id}", _guarded(service.outgoing), methods=["GET"]),
        Route("/v1/outgoing/{outgoing_id}/recall", _guarded(service.recall), methods=["POST"]),
        Route("/v1/overdue", _guarded(service.overdue), methods=["GET"]),
        Route("/openapi.json", service.openapi, methods=["GET"]),
        Route("/docs", service.docs, methods=["GET"]),
        Route("/healthz", service.health, methods=["GET"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(AuditMiddleware, sink=audit)],
                     exception_handlers={HTTPException: _http_error})


def app_from_settings(environ: Mapping[str, str] | None = None) -> Starlette:
    """The app as ``hub docaxis serve`` runs it: the store, the clients file, the signer and the audit
    log (its own directory: the lookup API's writer holds its own) from ``HUB_DOCAXIS_…`` variables."""
    from hub.audit_log import AuditLog, AuditSettings
    from hub.docaxis.settings import DocaxisSettings
    from hub.docaxis.signing import load_signer

    settings = DocaxisSettings.from_env(environ)
    audit_settings = AuditSettings.from_env(environ)
    audit = AuditLog(settings.audit_dir, audit_settings.signing_key(), audit_settings.checkpoint_every,
                     flush_interval=audit_settings.flush_interval)
    return create_app(DocumentStore.open(settings), AccessPolicy(settings.clients), load_signer(settings), audit,
                      settings.max_body_bytes)


def serve(host: str = "127.0.0.1", port: int = 8900) -> None:
    from hub.http_serving import serve as run

    run(app_from_settings(), host, port)
