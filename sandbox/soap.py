"""A SOAP 1.1 document/literal endpoint for the sandbox's SOAP systems (population, document axis).

One request goes through, in order: injected faults that replace the answer; body size limit;
well-formed XML without DTD; a known operation; the caller's address (101); WS-Security (100);
the rate limit (429); the request's schema (200 missing field, 302 wrong type); then the
operation. Every refusal is a SOAP fault whose detail carries the §0 code and name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Awaitable, Callable
from xml.sax.saxutils import escape

from lxml import etree
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.auth import AuthError, Client, WsseVerifier
from sandbox.faults import Decision
from sandbox.service import ServiceError, SystemRuntime, injected_error
from sandbox.transport import BodyTooLarge, damage, read_body
from schemas import contracts

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
XML_TYPE = "text/xml; charset=utf-8"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
# Packages with attachments hold text nodes beyond libxml2's 10 MB default; DTDs stay refused.
_HUGE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)


@dataclass
class Call:
    """One authenticated SOAP call, handed to an operation."""

    client: Client
    operation: str
    element: etree._Element  # the request wrapper element
    decision: Decision

    def text(self, name: str) -> str:
        """The stripped text of a direct child of the request element ('' if absent)."""
        return _child_text(self.element, name)


Operation = Callable[[Call], Awaitable[str | list[str]] | str | list[str]]


def parse_xml(body: bytes, huge: bool = False) -> etree._Element:
    """Parse untrusted XML: no DTD, no entities, no network. Raises ``ValueError`` with the reason.

    ``huge`` lifts libxml2's size limits on single text nodes, for bodies known to carry large
    base64 attachments.
    """
    if b"<!DOCTYPE" in body[:4096].upper() or b"<!ENTITY" in body.upper():
        raise ValueError("DTDs and entity declarations are not accepted")
    try:
        root = etree.fromstring(body, _HUGE_PARSER if huge else _PARSER)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"not well-formed XML: {exc}") from None
    if root is None:
        raise ValueError("empty XML document")
    return root


_ENVELOPE_HEAD = (f'<?xml version="1.0" encoding="UTF-8"?>\n<soapenv:Envelope xmlns:soapenv="{SOAP_NS}">'
                  "<soapenv:Header/><soapenv:Body>")
_ENVELOPE_TAIL = "</soapenv:Body></soapenv:Envelope>"


def envelope(body: str | bytes | list[str]) -> bytes:
    """A SOAP envelope around ``body``; a list of pieces is joined once (pages are megabytes)."""
    pieces = body if isinstance(body, list) else [body.decode() if isinstance(body, bytes) else body]
    return "".join([_ENVELOPE_HEAD, *pieces, _ENVELOPE_TAIL]).encode()


def fault_body(error: ServiceError, namespace: str, request_id: str = "") -> bytes:
    kind = "soapenv:Server" if error.code in (500, 503) and error.http_status >= 500 else "soapenv:Client"
    extra = f"<l:RetryAfter>{error.retry_after}</l:RetryAfter>" if error.retry_after else ""
    if request_id:
        extra += f"<l:MaYeuCau>{escape(request_id)}</l:MaYeuCau>"
    return envelope(
        f"<soapenv:Fault><faultcode>{kind}</faultcode>"
        f"<faultstring>{error.code} {error.name}: {escape(error.message)}</faultstring>"
        f'<detail><l:Loi xmlns:l="{namespace}"><l:MaLoi>{error.code}</l:MaLoi>'
        f"<l:MoTaLoi>{error.name}</l:MoTaLoi>{extra}</l:Loi></detail></soapenv:Fault>"
    )


def fault_response(error: ServiceError, namespace: str, request_id: str = "") -> Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    status = error.http_status if error.http_status in (429, 503) else 500
    return Response(fault_body(error, namespace, request_id), status_code=status, media_type=XML_TYPE,
                    headers=headers)


_MISSING = re.compile(r"Missing child element|is not complete|expected is \(", re.I)


class SoapEndpoint:
    """Dispatches SOAP calls to the operations of one system; mount it with :meth:`route`."""

    def __init__(self, runtime: SystemRuntime, *, namespace: str, wsdl: str, operations: dict[str, Operation],
                 body_limit: int = 1 << 20, large_bodies: dict[str, int] | None = None) -> None:
        """``large_bodies`` raises the body limit for named operations (a package with attachments)."""
        self.runtime = runtime
        self.namespace = namespace
        self.wsdl = wsdl
        self.operations = operations
        self.body_limit = body_limit
        self.large_bodies = large_bodies or {}
        self.verifier = WsseVerifier(runtime.clients)
        self._schema = contracts.request_schema(wsdl)

    def route(self, path: str) -> Route:
        return Route(path, self.handle, methods=["GET", "POST", "PUT", "DELETE"])

    async def handle(self, request: Request) -> Response:
        if request.method == "GET":
            if "wsdl" in {k.lower() for k in request.query_params}:
                location = str(request.url.replace(query=""))
                return Response(contracts.wsdl_text(self.wsdl, location), media_type=XML_TYPE)
            return Response("GET this endpoint with ?wsdl, or POST a SOAP request\n", status_code=405,
                            media_type="text/plain", headers={"Allow": "GET, POST"})
        if request.method != "POST":
            return Response("POST a SOAP request\n", status_code=405, media_type="text/plain",
                            headers={"Allow": "GET, POST"})
        decision = await self.runtime.draw()
        if decision.response == "http_502":
            return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=502,
                            media_type="text/html")
        injected = injected_error(decision)
        if injected is not None:
            return fault_response(injected, self.namespace)
        request_id = ""
        try:
            try:
                body = await read_body(request, max(self.body_limit, *self.large_bodies.values(), 0))
            except BodyTooLarge as exc:
                raise ServiceError(500, str(exc), http_status=413) from None
            try:
                root = parse_xml(body, huge=len(body) > self.body_limit)
            except ValueError as exc:
                raise ServiceError(500, f"request is not a SOAP envelope: {exc}") from None
            element, header = self._unwrap(root)
            operation = etree.QName(element).localname.removesuffix("Request")
            handler = self.operations.get(operation)
            if handler is None or etree.QName(element).namespace != self.namespace:
                raise ServiceError(500, f"unknown operation {etree.QName(element).text}; this endpoint offers "
                                        f"{', '.join(sorted(self.operations))} in {self.namespace}")
            limit = self.large_bodies.get(operation, self.body_limit)
            if len(body) > limit:
                raise ServiceError(500, f"request body exceeds {limit} bytes for {operation}", http_status=413)
            request_id = _child_text(element, "MaYeuCau")
            self.runtime.check_ip(request.client.host if request.client else None)
            try:
                client = self.verifier.verify(header)
            except AuthError as exc:
                raise ServiceError(100, str(exc)) from None
            self.runtime.check_rate(client)
            self._validate(element)
            result = handler(Call(client, operation, element, decision))
            if hasattr(result, "__await__"):
                result = await result
        except ServiceError as error:
            return fault_response(error, self.namespace, request_id)
        return damage(decision, envelope(result), XML_TYPE)

    def _unwrap(self, root: etree._Element) -> tuple[etree._Element, etree._Element | None]:
        if root.tag != f"{{{SOAP_NS}}}Envelope":
            raise ServiceError(500, f"root element is {root.tag}, expected a SOAP 1.1 Envelope")
        header = root.find(f"{{{SOAP_NS}}}Header")
        body = root.find(f"{{{SOAP_NS}}}Body")
        elements = [child for child in body if isinstance(child.tag, str)] if body is not None else []
        if not elements:
            raise ServiceError(500, "SOAP Body is missing or empty")
        return elements[0], header

    def _validate(self, element: etree._Element) -> None:
        if self._schema.validate(etree.ElementTree(_detached(element))):
            return
        error = self._schema.error_log.last_error
        message = f"line {error.line}: {error.message}" if error else "request does not match the schema"
        code = 200 if error and _MISSING.search(error.message) and "not a valid value" not in error.message else 302
        raise ServiceError(code, message)


def _detached(element: etree._Element) -> etree._Element:
    """A copy of the request element as a document root (schemas validate whole documents)."""
    return etree.fromstring(etree.tostring(element), _PARSER)


def _child_text(element: etree._Element, name: str) -> str:
    for child in element:
        if isinstance(child.tag, str) and etree.QName(child).localname == name:
            return (child.text or "").strip()
    return ""
