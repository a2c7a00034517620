"""The OpenAPI 3.1 document of the API for local document-management systems, and the JSON Schemas
of its request bodies (the same schemas validate the bodies, so the document cannot drift from them)."""

from __future__ import annotations

from typing import Any

from hub.docaxis.lifecycle import RECEIVER_CODES

ORGAN_ID = r"^([0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}|[A-Y][0-9]{2}(\.[0-9A-Z]+)*)$"
DOC_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
REQUEST_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
PAGE = 100

_ORGAN = {"type": "string", "maxLength": 35, "pattern": ORGAN_ID,
          "description": "Agency code: QCVN 102 form (000.00.02.H31) or Decision 20/2020 form (H31.02)"}
_TEXT = lambda n: {"type": "string", "maxLength": n}  # noqa: E731 - schema shorthand
_STAFF = {"type": "object", "additionalProperties": False, "description": "Who gave the status (StaffInfo)",
          "properties": {"department": _TEXT(200), "name": _TEXT(200), "mobile": _TEXT(20), "email": _TEXT(100)}}

STATUS_BODY: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["code"],
    "properties": {
        "agency": _ORGAN,
        "code": {"type": "string", "enum": list(RECEIVER_CODES),
                 "description": "02 refused, 03 accepted, 04 assigned, 05 processing, 06 finished, 15 recall/update "
                                "accepted, 16 recall/update refused (01 is sent by the hub when it stores a document)"},
        "description": _TEXT(500), "staff": _STAFF,
    },
}
ACK_BODY: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {"agency": _ORGAN}}
RECALL_BODY: dict[str, Any] = {"type": "object", "additionalProperties": False,
                               "properties": {"agency": _ORGAN, "description": _TEXT(500), "staff": _STAFF}}
OUTGOING_BODY: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "required": ["request_id", "recipients", "code_number", "code_notation", "subject", "promulgation_date"],
    "properties": {
        "agency": _ORGAN,
        "request_id": {"type": "string", "pattern": REQUEST_ID,
                       "description": "Chosen by the caller, unique per agency: the same request sent again (after a "
                                      "lost answer) returns the document it created instead of sending another"},
        "recipients": {"type": "array", "minItems": 1, "maxItems": 200, "uniqueItems": True, "items": _ORGAN},
        "code_number": {"type": "string", "minLength": 1, "maxLength": 11, "pattern": r"^[^/,]+$"},
        "code_notation": {"type": "string", "minLength": 1, "maxLength": 30, "pattern": r"^[^/,]+$"},
        "subject": {"type": "string", "minLength": 1, "maxLength": 500},
        "content": _TEXT(500), "place": _TEXT(50),
        "promulgation_date": {"type": "string", "pattern": DATE, "description": "YYYY-MM-DD"},
        "due_date": {"type": "string", "pattern": DATE, "description": "YYYY-MM-DD: when the recipients must finish"},
        "document_type": {"type": "object", "additionalProperties": False,
                          "properties": {"type": _TEXT(10), "detail": _TEXT(10), "name": _TEXT(100)}},
        "signer": {"type": "object", "additionalProperties": False,
                   "properties": {"competence": _TEXT(100), "position": _TEXT(200), "full_name": _TEXT(200)}},
        "priority": {"type": "integer", "minimum": 0, "maximum": 4},
        "steering_type": {"type": "integer", "minimum": 0, "maximum": 3},
        "to_places": {"type": "array", "maxItems": 50, "items": _TEXT(150)},
        "staff": _STAFF,
        "business": {
            "type": "object", "additionalProperties": False, "required": ["type", "document_id"],
            "description": "Omit for a new document; otherwise it revokes, updates or replaces a document this "
                           "agency sent through the hub",
            "properties": {
                "type": {"type": "string", "enum": ["revoke", "update", "replace"]},
                "document_id": {"type": "string", "minLength": 1, "maxLength": 200},
                "reason": _TEXT(500),
                "receiver_changes": {"type": "array", "maxItems": 200, "items": {
                    "type": "object", "additionalProperties": False, "required": ["organ_id", "receiver_type"],
                    "properties": {"organ_id": _ORGAN, "receiver_type": {"type": "integer", "enum": [0, 1]}}}},
            },
        },
        "files": {"type": "array", "maxItems": 50, "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "content_base64"],
            "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 500},
                           "mime": _TEXT(100), "description": _TEXT(500),
                           "content_base64": {"type": "string"},
                           "zipped": {"type": "boolean", "description": "travel as a zip in base64, as the SDK "
                                                                        "does (default true)"}}}},
    },
}

_ERROR = {"type": "object", "required": ["error", "message"],
          "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}
_ANY = {"type": "object"}


def _param(name: str, where: str, description: str, schema: dict[str, Any], required: bool = False) -> dict:
    return {"name": name, "in": where, "required": required or where == "path", "description": description,
            "schema": schema}


_AGENCY_Q = _param("agency", "query", "The agency acted for (default: the client's own)", _ORGAN)
_DOC = _param("doc_id", "path", "The message's DocId on the axis", {"type": "string", "pattern": DOC_ID})
_OUT = _param("outgoing_id", "path", "The outgoing document's id (from POST /v1/outgoing)",
              {"type": "string", "pattern": DOC_ID})


def _responses(ok: str, codes: tuple[str, ...], media: str = "application/json", accepted: str = "") -> dict[str, Any]:
    texts = {"400": "Malformed request (the message says what and where)", "401": "No or invalid API key",
             "403": "The client may not act for this agency", "404": "No such document for this agency",
             "409": "Not allowed in the document's present state", "413": "Body too large",
             "415": "Body is not application/json", "429": "Over the client's rate (Retry-After)"}
    content = {media: {"schema": _ANY if media == "application/json" else {"type": "string", "format": "binary"}}}
    out: dict[str, Any] = {"200": {"description": ok, "content": content}}
    if accepted:
        out["202"] = {"description": accepted, "content": content}
    for code in ("400", "401", "403", "429", *codes):
        out[code] = {"description": texts[code], "content": {"application/json": {"schema": _ERROR}}}
    return out


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def openapi_document() -> dict[str, Any]:
    after = _param("after", "query", "Continue after this position (the previous page's next)",
                   {"type": "integer", "minimum": 0})
    limit = _param("limit", "query", f"Items per page, 1-{PAGE}", {"type": "integer", "minimum": 1, "maximum": PAGE})
    position = _param("position", "path", "The attachment's position, from 1", {"type": "integer", "minimum": 1})
    paths = {
        "/v1/documents": {"get": {
            "summary": "Documents waiting for the agency", "operationId": "pending",
            "description": "Messages addressed to the agency that its system has not acknowledged, oldest first.",
            "parameters": [_AGENCY_Q, after, limit], "responses": _responses("A page of pending documents", ())}},
        "/v1/documents/{doc_id}": {"get": {
            "summary": "One document", "operationId": "document",
            "description": "Metadata, attachments, the document's state (revoked, updated, replaced) and its status "
                           "trail; marks the delivery as delivered.",
            "parameters": [_DOC, _AGENCY_Q], "responses": _responses("The document", ("404",))}},
        "/v1/documents/{doc_id}/edxml": {"get": {
            "summary": "The edXML package as received", "operationId": "edxml", "parameters": [_DOC, _AGENCY_Q],
            "responses": _responses("The package, byte for byte", ("404",), "application/xml")}},
        "/v1/documents/{doc_id}/attachments/{position}": {"get": {
            "summary": "One attached file", "operationId": "attachment", "parameters": [_DOC, position, _AGENCY_Q],
            "responses": _responses("The file (unzipped when it travelled zipped)", ("404",),
                                    "application/octet-stream")}},
        "/v1/documents/{doc_id}/ack": {"post": {
            "summary": "Acknowledge a document", "operationId": "acknowledge",
            "description": "The agency's system holds the document; it leaves the pending list. Idempotent.",
            "parameters": [_DOC], "requestBody": _body(ACK_BODY, required=False),
            "responses": _responses("The delivery", ("404", "413", "415"))}},
        "/v1/documents/{doc_id}/status": {"post": {
            "summary": "Post a status", "operationId": "post_status",
            "description": "Recorded in the trail and sent to the document's sender as a signed status package. The "
                           "same code twice is recorded once.",
            "parameters": [_DOC], "requestBody": _body(STATUS_BODY),
            "responses": _responses("The status, given before: recorded once", ("404", "409", "413", "415"),
                                    accepted="The status, recorded and queued for the sender")}},
        "/v1/outgoing": {
            "get": {"summary": "Documents the agency sent", "operationId": "outgoing_list",
                    "parameters": [_AGENCY_Q], "responses": _responses("Outgoing documents, newest first", ())},
            "post": {"summary": "Send a document", "operationId": "send",
                     "description": "Built as a QCVN 102 package, signed (RSA-SHA256) and queued for the axis; "
                                    "202 with its id, 200 when this request_id was sent before.",
                     "requestBody": _body(OUTGOING_BODY),
                     "responses": _responses("This request_id was sent before: the document it created",
                                             ("409", "413", "415"), accepted="Recorded, signed and queued")}},
        "/v1/outgoing/{outgoing_id}": {"get": {
            "summary": "An outgoing document", "operationId": "outgoing",
            "description": "Each recipient's delivery and last status, and the status trail.",
            "parameters": [_OUT, _AGENCY_Q], "responses": _responses("The outgoing document", ("404",))}},
        "/v1/outgoing/{outgoing_id}/recall": {"post": {
            "summary": "Recall a sent document (status 13)", "operationId": "recall",
            "description": "A status 13 package to each recipient, who answers 15 (accept) or 16 (refuse).",
            "parameters": [_OUT], "requestBody": _body(RECALL_BODY, required=False),
            "responses": _responses("Recalled before: nothing new", ("404", "413", "415"),
                                    accepted="Status 13 queued for each recipient")}},
        "/v1/overdue": {"get": {
            "summary": "Overdue documents", "operationId": "overdue",
            "description": "Documents past their due date without status 06 (nor 02): those the agency owes, and "
                           "those it sent that a recipient owes.",
            "parameters": [_AGENCY_Q], "responses": _responses("Overdue documents", ())}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "LGSP Hub document axis for local document-management systems", "version": "1",
                 "description": "What the national document axis delivered to a province agency, its acknowledgement "
                                "and statuses, and the documents the agency sends. Authenticate with "
                                "'Authorization: Bearer <key>'; every request is written to the audit log."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }
