"""Errors a connector raises, each naming the system, the operation and the request id.

An integration engineer reading a failed run must be able to find the exchange in the provider's
logs: ``population DongBoCongDan (request 6f1c…): page is not well-formed XML after 8 attempts``.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """A call to a national system failed for good."""

    def __init__(self, system: str, operation: str, request_id: str, message: str, *, code: str = "") -> None:
        self.system = system
        self.operation = operation
        self.request_id = request_id
        self.code = code
        self.detail = message
        where = f"{system} {operation}" + (f" (request {request_id})" if request_id else "")
        super().__init__(f"{where}: {message}")


class TransientError(Exception):
    """One attempt failed in a way a later attempt may not (5xx, 429, reset, damaged body)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthenticationFailed(Exception):
    """The credentials were refused; for OAuth2 a fresh token is tried once before giving up."""


class PermanentError(Exception):
    """The system refused the request itself (bad input, not found, not allowed): retrying is futile."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class MalformedResponse(TransientError):
    """The answer arrived but cannot be read (truncated, not well-formed, wrong shape)."""
