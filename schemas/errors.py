"""The error vocabulary shared by the national systems (``national-systems.md`` §0).

Codes and names are used verbatim on the wire: in SOAP fault details (``MaLoi``/``MoTaLoi``) and in
REST envelopes (``errorCode``/``errorDesc``). Sandbox and connectors both read them from here.
"""

from __future__ import annotations

ERROR_NAMES: dict[int, str] = {
    100: "AUTHEN_ERROR",
    101: "IP_DISALLOWED",
    106: "AGENCY_ID_INCORRECT",
    108: "PROVINCE_ID_INCORRECT",
    200: "RECORD_UNCOMPLETE",
    201: "RECORD_NOT_FOUND",
    302: "DATA_TYPE_INVALID",
    429: "TOO_MANY_REQUESTS",
    500: "DATA_INCORRECT",
    503: "SERVICE_UNAVAILABLE",
}

#: Errors after which the same request may succeed later; everything else is final.
TRANSIENT_CODES = frozenset({429, 503})
