"""HTTP-level behaviour shared by the sandbox systems: body limits and injected response faults.

Faults that *replace* an answer (500, 502, 503, a SOAP fault, 429, an expired token) are decided
before the operation runs, so nothing happens on the server. Faults that *damage* an answer
(a reset connection, a truncated or malformed body) happen after the operation ran: the server
did the work and the client lost the answer, which is the case that tests exactly-once clients.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sandbox.faults import Decision

#: Faults decided before the operation runs: the answer is replaced, the operation not executed.
REPLACING_FAULTS = frozenset({"http_500", "http_502", "http_503", "soap_fault", "rate_limit", "token_expiry"})
#: Faults applied to the answer of an operation that did run.
DAMAGING_FAULTS = frozenset({"reset", "truncate", "malformed"})


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused early (without buffering it all) when it is over ``limit``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class InjectedReset(Exception):
    """Raised inside a response to make the server drop the connection mid-body."""


class _ResetLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, InjectedReset) and not (
            isinstance(exc, BaseExceptionGroup) and exc.subgroup(InjectedReset) is not None
        )


logging.getLogger("uvicorn.error").addFilter(_ResetLogFilter())


class ResetResponse(Response):
    """Announces the whole body, sends half of it, then aborts the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True})
        raise InjectedReset("injected connection reset")


def damage(decision: Decision, body: bytes, media_type: str, status: int = 200,
           headers: dict[str, str] | None = None) -> Response:
    """The answer as sent, after any damaging fault of ``decision``."""
    if decision.response == "reset" and len(body) > 1:
        return ResetResponse(body, status_code=status, media_type=media_type, headers=headers)
    if decision.response == "truncate" and len(body) > 1:
        body = body[: max(1, len(body) * 2 // 3)]
    elif decision.response == "malformed":
        middle = len(body) // 2
        junk = b"<</ \x01 broken" if b"xml" in media_type.encode() else b'"]}{ broken'
        body = body[:middle] + junk + body[middle:]
    return Response(body, status_code=status, media_type=media_type, headers=headers)
