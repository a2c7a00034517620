"""The lookup service's contract: request-body JSON Schemas, the OpenAPI 3.1 document and its docs page.

One source for three uses: the API validates bodies with the schemas below, the OpenAPI document
embeds the same schemas (so a consumer, a fuzzer and the server agree), and ``/docs`` renders the
document as a self-contained HTML page (the hub's network is closed to CDNs).

Record schemas are derived from the canonical pyarrow schemas, in the JSON forms the serving store
renders (dates ``yyyy-MM-dd``, moments ISO 8601 +07:00, money as decimal strings).
"""

from __future__ import annotations

import html
from typing import Any

import orjson
import pyarrow as pa

from hub.dossiers import MEASURES_SCHEMA, TIMES_SCHEMA
from hub.serving_store import CATALOGUE, ROLES
from schemas.canonical import citizens, civil_events, documents, enterprises

MAX_BATCH = 1000
FEED_PAGE = 100
MAX_BODY_BYTES = 1 << 20
PERSONAL_ID = "^0(0[1-9]|[1-9][0-9])[0-5][0-9]{8}$"  # province 001-099, gender/century 0-5, year, serial
CMND = "^[0-9]{9}$"
ENTERPRISE_CODE = "^[0-9]{10}(-[0-9]{3})?$"
DOC_ID = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
PURPOSE = "^[A-Za-z0-9][A-Za-z0-9._/-]{0,79}$"
BIRTH = "^[0-9]{4}(-?[0-9]{2}-?[0-9]{2})?$"
FIELD = "^[a-z][a-z0-9_]{0,63}$"
FIELD_LIST = "^[a-z][a-z0-9_]{0,63}(,[a-z][a-z0-9_]{0,63}){0,199}$"
CURSOR = "^c1\\.[A-Za-z0-9_-]{1,400}$"
AGENCY_102 = "^[0-9]{3}[.][0-9]{2}[.][0-9]{2}[.][A-Z][0-9]{2}$"
MONTH = "^[0-9]{4}-(0[1-9]|1[0-2])$"
PROCEDURE = "^[0-9A-Z][0-9A-Z.]{2,60}$"

_NAME = {"type": "string", "minLength": 1, "maxLength": 200, "description": "Full name, any case, NFC or NFD"}
_PURPOSE = {"type": "string", "pattern": PURPOSE,
            "description": "Procedure code (MaTTHC) or dossier code (MaHoSo) the lookup serves"}


def _fields(dataset: str) -> dict[str, Any]:
    return {"type": "array", "items": {"enum": list(CATALOGUE[dataset].columns)}, "minItems": 1, "maxItems": 200,
            "description": "Fields wanted; each must be granted. Default: every granted field"}


def _field_list(dataset: str) -> str:
    """A pattern for a comma-separated list of the dataset's field names."""
    name = "(" + "|".join(CATALOGUE[dataset].columns) + ")"
    return f"^{name}(,{name}){{0,199}}$"


VERIFY_BODY: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["purpose", "personal_id", "name"],
    "properties": {"purpose": _PURPOSE, "personal_id": {"type": "string", "pattern": PERSONAL_ID},
                   "cmnd": {"type": "string", "pattern": CMND}, "name": _NAME,
                   "birth_date": {"type": "string", "pattern": BIRTH}},
}
CITIZENS_BATCH_BODY: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["purpose", "items"],
    "properties": {
        "purpose": _PURPOSE, "fields": _fields("citizens"),
        "items": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": {
            "type": "object", "additionalProperties": False, "required": ["personal_id", "name", "birth_date"],
            "properties": {"personal_id": {"type": "string", "pattern": PERSONAL_ID}, "name": _NAME,
                           "birth_date": {"type": "string", "pattern": BIRTH}}}},
    },
}
ENTERPRISES_BATCH_BODY: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["codes"],
    "properties": {"purpose": _PURPOSE, "fields": _fields("enterprises"),
                   "codes": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH,
                             "items": {"type": "string", "pattern": ENTERPRISE_CODE}}},
}


def json_type(arrow: pa.DataType) -> dict[str, Any]:
    """The JSON Schema of a value of ``arrow`` type as the serving store renders it (nullable)."""
    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow) or pa.types.is_decimal(arrow):
        return {"type": ["string", "null"]}
    if pa.types.is_integer(arrow):
        return {"type": ["integer", "null"]}
    if pa.types.is_floating(arrow):
        return {"type": ["number", "null"]}
    if pa.types.is_boolean(arrow):
        return {"type": ["boolean", "null"]}
    if pa.types.is_date(arrow):
        return {"type": ["string", "null"], "format": "date"}
    if pa.types.is_timestamp(arrow):
        return {"type": ["string", "null"], "format": "date-time"}
    if pa.types.is_time(arrow):
        return {"type": ["string", "null"]}
    if pa.types.is_list(arrow) or pa.types.is_large_list(arrow):
        return {"type": ["array", "null"], "items": json_type(arrow.value_type)}
    if pa.types.is_struct(arrow):
        return {"type": ["object", "null"], "properties": {f.name: json_type(f.type) for f in arrow}}
    return {}


def record_schema(dataset: str) -> dict[str, Any]:
    """A record holds some of the dataset's fields (exactly those listed in the answer's ``fields``)."""
    schema = {"citizens": citizens.SCHEMA, "civil_events": civil_events.SCHEMA, "enterprises": enterprises.SCHEMA,
              "documents": documents.SCHEMA, "service_measures": MEASURES_SCHEMA,
              "procedure_times": TIMES_SCHEMA}[dataset]
    columns = CATALOGUE[dataset].columns
    return {"type": "object", "additionalProperties": False,
            "properties": {name: json_type(schema.field(name).type) for name in columns}}


_MOMENT = {"type": "string", "format": "date-time"}
_ENVELOPE = {
    "source": {"type": "string", "description": "National system the data comes from"},
    "as_of": {"type": ["string", "null"], "format": "date-time", "description": "Time the data is known true"},
    "valid_until": {"type": ["string", "null"], "format": "date-time",
                    "description": "End of the copy's legal validity (population: as_of + 24 h, Decree 47/2020 "
                                   "Art. 41); null where no period is agreed"},
    "purpose": {"type": ["string", "null"]},
    "fields": {"type": "array", "items": {"type": "string"}, "description": "Fields each record carries"},
}
_ENVELOPE_REQUIRED = ["source", "as_of", "valid_until", "purpose", "fields"]


def _answer(extra: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "required": _ENVELOPE_REQUIRED + required, "properties": {**_ENVELOPE, **extra}}


def _batch_answer(dataset: str, key: str) -> dict[str, Any]:
    result = {"type": "object", "required": [key, "found"], "properties": {
        key: {"type": "string"}, "found": {"type": "boolean"}, "record": record_schema(dataset)}}
    return _answer({"results": {"type": "array", "items": result}}, ["results"])


ERROR = {"type": "object", "required": ["error", "message"],
         "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}

_REFUSALS = {
    "400": f"Malformed request: unknown or invalid parameter, field or body; missing purpose; a batch over "
           f"{MAX_BATCH} keys",
    "401": "No API key, or not a valid one",
    "403": "Dataset, field or purpose not granted to this client",
    "404": "No such record (citizens: none matches the ID, name and date of birth)",
    "405": "Method not allowed on this path",
    "413": f"Body over {MAX_BODY_BYTES} bytes",
    "415": "Body is not application/json",
    "429": "Over the client's rate; see Retry-After",
    "503": "No snapshot is loaded, the dataset is not published, or the population copy has expired",
}


def _responses(ok: dict[str, Any], codes: tuple[str, ...]) -> dict[str, Any]:
    out = {"200": {"description": "The answer", "content": {"application/json": {"schema": ok}}}}
    for code in codes:
        out[code] = {"description": _REFUSALS[code], "content": {"application/json": {"schema": ERROR}}}
    return out


def _query(name: str, pattern: str | None, required: bool, description: str, max_length: int = 0) -> dict:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    if max_length:
        schema.update(minLength=1, maxLength=max_length)
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _path(name: str, pattern: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": pattern},
            "description": description}


_COMMON = ("400", "401", "403", "405", "429", "503")
_WITH_BODY = ("400", "401", "403", "405", "413", "415", "429", "503")


def _fields_param(dataset: str) -> dict[str, Any]:
    return _query("fields", _field_list(dataset), False, "Comma-separated fields wanted; default: every granted field")

_PURPOSE_PARAM = _query("purpose", PURPOSE, True, "Procedure code (MaTTHC) or dossier code (MaHoSo)")
_PURPOSE_OPTIONAL = _query("purpose", PURPOSE, False, "Required when the fields include personal data "
                                                      "(legal_representatives, members)")


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _paths() -> dict[str, Any]:
    citizen = _answer({"record": record_schema("citizens")}, ["record"])
    events = _answer({"personal_id": {"type": "string"}, "events": {"type": "array", "items": {
        "type": "object", "required": ["role", "record"],
        "properties": {"role": {"enum": list(ROLES)}, "record": record_schema("civil_events")}}}},
        ["personal_id", "events"])
    document = _answer({"record": record_schema("documents"),
                        "statuses": {"type": "array", "items": record_schema("documents")}}, ["record", "statuses"])
    verify = {"type": "object", "required": ["exists", "source", "as_of", "valid_until", "purpose"],
              "properties": {"exists": {"type": "boolean"},
                             **{k: v for k, v in _ENVELOPE.items() if k != "fields"}}}
    identity = [_query("name", None, True, "Full name (compared upper-cased, without diacritics or spaces)", 200),
                _query("birth_date", BIRTH, True, "yyyy, yyyyMMdd or yyyy-MM-dd")]
    return {
        "/v1/citizens/{personal_id}": {"get": {
            "operationId": "getCitizen", "tags": ["citizens"],
            "summary": "A citizen's record (service 037 rule: only when name and date of birth match)",
            "parameters": [_path("personal_id", PERSONAL_ID, "12-digit personal ID"), _PURPOSE_PARAM,
                           *identity, _fields_param("citizens")],
            "responses": _responses(citizen, _COMMON + ("404",))}},
        "/v1/citizens/verify": {"post": {
            "operationId": "verifyCitizen", "tags": ["citizens"],
            "summary": "Service 033: does a citizen with this ID, name (and date of birth) exist?",
            "requestBody": _body(VERIFY_BODY), "responses": _responses(verify, _WITH_BODY)}},
        "/v1/citizens:batch": {"post": {
            "operationId": "getCitizensBatch", "tags": ["citizens"],
            "summary": f"Up to {MAX_BATCH} citizens at once, each under the 037 rule",
            "requestBody": _body(CITIZENS_BATCH_BODY), "responses": _responses(
                _batch_answer("citizens", "personal_id"), _WITH_BODY)}},
        "/v1/citizens/{personal_id}/civil-events": {"get": {
            "operationId": "getCivilEvents", "tags": ["civil status"],
            "summary": "Births, deaths and marriages whose subject is this person",
            "description": "The person must be identified as for 037: by the population record when the "
                           "copy has one, else by the name and date of birth each event records.",
            "parameters": [_path("personal_id", PERSONAL_ID, "12-digit personal ID"), _PURPOSE_PARAM,
                           *identity, _fields_param("civil_events")],
            "responses": _responses(events, _COMMON + ("404",))}},
        "/v1/enterprises/{code}": {"get": {
            "operationId": "getEnterprise", "tags": ["enterprises"], "summary": "An enterprise's registration",
            "parameters": [_path("code", ENTERPRISE_CODE, "Enterprise code, 10 digits with check digit, -NNN "
                                                          "for a branch"),
                           _PURPOSE_OPTIONAL, _fields_param("enterprises")],
            "responses": _responses(_answer({"record": record_schema("enterprises")}, ["record"]),
                                    _COMMON + ("404",))}},
        "/v1/enterprises:batch": {"post": {
            "operationId": "getEnterprisesBatch", "tags": ["enterprises"],
            "summary": f"Up to {MAX_BATCH} enterprises at once",
            "requestBody": _body(ENTERPRISES_BATCH_BODY),
            "responses": _responses(_batch_answer("enterprises", "enterprise_code"), _WITH_BODY)}},
        "/v1/changes/{dataset}": {"get": {
            "operationId": "getChanges", "tags": ["feeds"],
            "summary": "What changed in a dataset since a cursor (records whose latest version arrived since)",
            "description": "Oldest first; pass the answer's next as since to continue, or to poll later. Each item "
                           "is the record's current version; a record changed twice since the cursor comes once. "
                           "Needs a feed grant; person datasets also need a purpose.",
            "parameters": [{"name": "dataset", "in": "path", "required": True,
                            "schema": {"enum": list(CATALOGUE)}, "description": "The dataset"},
                           _query("since", CURSOR, False, "The next of a previous answer; absent: from the start"),
                           {"name": "limit", "in": "query", "required": False, "description": "Items per page",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH, "default": FEED_PAGE}},
                           _query("purpose", PURPOSE, False, "Required for citizens and civil_events, and where the "
                                                             "fields include personal data"),
                           _query("fields", FIELD_LIST, False, "Comma-separated fields wanted; default: every "
                                                               "granted field")],
            "responses": _responses(_answer({
                "items": {"type": "array", "items": {"type": "object", "required": ["key", "record"], "properties": {
                    "key": {"type": "array", "items": {"type": ["string", "integer"]},
                            "description": "The record's key columns, in the dataset's key order"},
                    "record": {"type": "object"}}}},
                "next": {"type": ["string", "null"], "description": "Cursor after the last item"}},
                ["items", "next"]), _COMMON)}},
        "/v1/service-measures": {"get": {
            "operationId": "getServiceMeasures", "tags": ["service measures"],
            "summary": "One-stop-shop dossiers per agency and month: received, share online, share resolved on time, "
                       "late, still open past their due date",
            "parameters": [_query("agency", AGENCY_102, False, "An agency's QCVN 102 code; absent: every agency"),
                           _query("month", MONTH, False, "YYYY-MM of receipt; absent: every month"),
                           _fields_param("service_measures")],
            "responses": _responses(_answer({"records": {"type": "array", "items": record_schema("service_measures")}},
                                            ["records"]), _COMMON)}},
        "/v1/procedure-times": {"get": {
            "operationId": "getProcedureTimes", "tags": ["service measures"],
            "summary": "Per procedure (MaTTHC): dossiers resolved and the median days to resolve",
            "parameters": [_query("procedure", PROCEDURE, False, "A procedure code; absent: every procedure"),
                           _fields_param("procedure_times")],
            "responses": _responses(_answer({"records": {"type": "array", "items": record_schema("procedure_times")}},
                                            ["records"]), _COMMON)}},
        "/v1/documents/{doc_id}": {"get": {
            "operationId": "getDocument", "tags": ["documents"],
            "summary": "A message of the document axis and the status packages answering it",
            "parameters": [_path("doc_id", DOC_ID, "The axis's DocId"), _fields_param("documents")],
            "responses": _responses(document, _COMMON + ("404",))}},
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document served at ``/openapi.json``."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "LGSP Hub lookup service", "version": "1",
                 "description": "Point lookups in the province's published snapshot for local agencies. Every "
                                "answer names its source, its data time (as_of) and how long it is valid; every "
                                "request is audited. Authenticate with "
                                "`Authorization: Bearer lgsp.<client>.<secret>`."},
        "security": [{"apiKey": []}],
        "components": {"securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
                       "schemas": {"Error": ERROR}},
        "paths": _paths(),
    }


def docs_page(document: dict[str, Any]) -> str:
    """A self-contained HTML rendering of the OpenAPI document: one section per operation."""
    sections = [_operation_html(path, method, op)
                for path, methods in document["paths"].items() for method, op in methods.items()]
    title = html.escape(document["info"]["title"])
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title><style>"
            "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
            "h2{font-size:1.05rem;margin-top:2rem}code,pre{background:#f4f4f4;padding:.1rem .3rem}"
            "pre{padding:.6rem;overflow-x:auto;font-size:.8rem}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}"
            ".m{font-weight:bold;text-transform:uppercase}</style></head><body>"
            f"<h1>{title}</h1><p>{html.escape(document['info']['description'])}</p>"
            "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a></p>"
            + "".join(sections) + "</body></html>")


def _operation_html(path: str, method: str, op: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td><code>{html.escape(p['name'])}</code></td><td>{p['in']}</td>"
                   f"<td>{'yes' if p.get('required') else 'no'}</td>"
                   f"<td>{html.escape(p.get('description', ''))}</td></tr>"
                   for p in op.get("parameters", []))
    params = f"<table><tr><th>parameter</th><th>in</th><th>required</th><th></th></tr>{rows}</table>" if rows else ""
    body = ""
    if "requestBody" in op:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        shown = orjson.dumps(schema, option=orjson.OPT_INDENT_2).decode()
        body = f"<p>Body (application/json):</p><pre>{html.escape(shown)}</pre>"
    answers = "".join(f"<li><code>{code}</code> {html.escape(r['description'])}</li>"
                      for code, r in op["responses"].items())
    return (f"<h2><span class='m'>{method}</span> <code>{html.escape(path)}</code></h2>"
            f"<p>{html.escape(op.get('summary', ''))}</p><p>{html.escape(op.get('description', ''))}</p>"
            f"{params}{body}<ul>{answers}</ul>")
