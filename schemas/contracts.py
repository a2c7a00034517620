"""Wire contracts of the national systems, as files the sandbox and the connectors both load.

The WSDLs (``wsdl/``) and JSON Schemas (``json/``) are the single source of truth for what goes on
the wire (national-systems.md §1, §2, §4). This module only locates and compiles them, so a server
and a client can never disagree about a field name, an order or a range.

Everything here is offline: the files ship inside this package, and XML is parsed with a parser
that neither loads DTDs nor resolves entities nor touches the network. A WSDL is static input, but
the same discipline keeps a tampered file from reading local files or calling out.
"""

from __future__ import annotations

import json
import re
from copy import deepcopy
from functools import cache
from pathlib import Path
from typing import Any, Final

from jsonschema import Draft202012Validator
from lxml import etree

__all__ = [
    "JSON_DIR",
    "WSDL_DIR",
    "WSDL_NAMES",
    "json_request_schema",
    "json_validator",
    "request_schema",
    "wsdl_path",
    "wsdl_text",
]

WSDL_DIR: Final[Path] = Path(__file__).resolve().parent / "wsdl"
JSON_DIR: Final[Path] = Path(__file__).resolve().parent / "json"

#: The SOAP systems that have a WSDL here: population (§1) and the document axis (§4).
WSDL_NAMES: Final[frozenset[str]] = frozenset({"dancu", "edoc"})

_WSDL_NS: Final[str] = "http://schemas.xmlsoap.org/wsdl/"
_SOAP11_NS: Final[str] = "http://schemas.xmlsoap.org/wsdl/soap/"
_XSD_NS: Final[str] = "http://www.w3.org/2001/XMLSchema"

# Internal URI scheme under which an embedded schema is handed to libxml2 when another embedded
# schema imports its namespace. It names no file and no host, so nothing outside the WSDL is read.
_EMBEDDED_SCHEME: Final[str] = "embedded-xsd:"

# Names that become file names: letters, digits and underscores only, so no caller can walk out
# of the package with "../".
_SAFE_NAME: Final[re.Pattern[str]] = re.compile(r"[A-Za-z0-9_]+")


def wsdl_path(name: str) -> Path:
    """Return the path of the WSDL named ``name`` (``"dancu"`` or ``"edoc"``).

    Only known names are accepted, so a name taken from a URL or a config file cannot point at an
    arbitrary file.
    """
    if name not in WSDL_NAMES:
        raise ValueError(f"unknown WSDL {name!r}; expected one of {sorted(WSDL_NAMES)}")
    return WSDL_DIR / f"{name}.wsdl"


def wsdl_text(name: str, location: str) -> str:
    """Return the WSDL ``name`` with every ``soap:address/@location`` set to ``location``.

    A server answers ``{endpoint}?wsdl`` with its own URL so that a client built from that
    document calls the server it fetched it from; the file keeps a localhost placeholder because
    the real host and port are known only at run time. The text starts with an XML declaration
    for UTF-8: encode it as UTF-8 when serving it.
    """
    if not location:
        raise ValueError("location must be a non-empty URL")
    tree = deepcopy(_wsdl_tree(name))
    for address in tree.getroot().iter(f"{{{_SOAP11_NS}}}address"):
        address.set("location", location)
    body = etree.tostring(tree, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


@cache
def request_schema(name: str) -> etree.XMLSchema:
    """Compile the request schema of the WSDL ``name`` for validating request bodies.

    The request schema is the ``wsdl:types`` schema whose targetNamespace is the WSDL's own (the
    one that declares the ``…Request`` wrapper elements). A server validates the wrapper element
    it finds in ``soap:Body`` with ``schema.validate(element)`` before it reads any field, so a
    malformed request gets a fault instead of a half-parsed call.

    An embedded schema may import another embedded one by namespace alone (``dancu`` imports the
    citizen record's namespace); libxml2 cannot find such a schema by itself, so the import is
    pointed at an internal URI that a resolver answers from the WSDL. Nothing else is resolved:
    any other import or include raises.

    Compiled once per process (compiling costs milliseconds; validating microseconds). The
    returned object may be shared; read validation errors from ``assertValid`` or from
    ``error_log`` right after a call in the same thread.
    """
    root = _wsdl_tree(name).getroot()
    target = root.get("targetNamespace")
    schemas: dict[str, etree._Element] = {}
    for schema in root.iterfind(f"{{{_WSDL_NS}}}types/{{{_XSD_NS}}}schema"):
        schemas[schema.get("targetNamespace", "")] = schema
    if target not in schemas:
        raise ValueError(f"WSDL {name!r} embeds no schema for its namespace {target!r}")

    documents = {_embedded_uri(ns): _standalone_schema(el) for ns, el in schemas.items()}
    resolver = _EmbeddedSchemaResolver(documents)
    parser = _safe_parser()
    parser.resolvers.add(resolver)
    request = etree.fromstring(documents[_embedded_uri(target)], parser)
    return etree.XMLSchema(request)


def json_request_schema(system: str, operation: str) -> dict[str, Any]:
    """Return the JSON Schema of ``operation``'s request body on ``system`` (e.g.
    ``"civil_status"``, ``"dsHoSoDangKy"``) as a fresh dict the caller may change."""
    return deepcopy(_json_schema(system, operation))


@cache
def json_validator(system: str, operation: str) -> Draft202012Validator:
    """Return a Draft 2020-12 validator for ``operation``'s request body, built once per process.

    A server calls ``iter_errors(body)`` to answer with every problem at once; a client may call
    ``validate(body)`` before sending to catch its own mistakes without a round trip.
    """
    schema = _json_schema(system, operation)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@cache
def _json_schema(system: str, operation: str) -> dict[str, Any]:
    """Load and cache one JSON Schema; callers get copies or a validator, never this dict."""
    for part in (system, operation):
        if not _SAFE_NAME.fullmatch(part):
            raise ValueError(f"invalid contract name {part!r}")
    path = JSON_DIR / system / f"{operation}.request.json"
    if not path.is_file():
        raise ValueError(f"no JSON request schema for {system}/{operation}")
    with path.open(encoding="utf-8") as f:
        schema: dict[str, Any] = json.load(f)
    return schema


@cache
def _wsdl_tree(name: str) -> etree._ElementTree:
    """Parse a WSDL once per process. Callers must not change the tree (copy it first)."""
    tree = etree.parse(str(wsdl_path(name)), _safe_parser())
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise ValueError(f"WSDL {name!r} has a DOCTYPE; contracts must not declare DTDs")
    return tree


def _safe_parser() -> etree.XMLParser:
    """An XML parser that loads no DTD, expands no entity and never opens a network connection."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
    )


def _embedded_uri(namespace: str) -> str:
    return _EMBEDDED_SCHEME + namespace


def _standalone_schema(schema: etree._Element) -> bytes:
    """Serialise one embedded ``xs:schema`` as a schema document of its own.

    The copy keeps every namespace declaration in scope (QNames in ``type=`` and ``ref=``
    attributes may rely on prefixes declared on ``wsdl:definitions``), and each namespace-only
    ``xs:import`` gets the internal URI of the embedded schema it names.
    """
    copy = etree.Element(schema.tag, nsmap=schema.nsmap)
    for key, value in schema.attrib.items():
        copy.set(key, value)
    for child in schema:
        copy.append(deepcopy(child))
    for imp in copy.iterfind(f"{{{_XSD_NS}}}import"):
        if imp.get("schemaLocation") is None and imp.get("namespace") is not None:
            imp.set("schemaLocation", _embedded_uri(imp.get("namespace", "")))
    return etree.tostring(copy)


class _EmbeddedSchemaResolver(etree.Resolver):
    """Answer schema imports from the WSDL's own ``wsdl:types`` and refuse everything else."""

    def __init__(self, documents: dict[str, bytes]) -> None:
        super().__init__()
        self._documents = documents

    def resolve(self, system_url: str | None, public_id: str | None, context: Any) -> Any:
        document = self._documents.get(system_url or "")
        if document is None:
            raise ValueError(f"refusing to load {system_url!r}: contracts resolve no external file")
        return self.resolve_string(document, context)
