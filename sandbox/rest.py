"""A REST/JSON endpoint for the sandbox's REST systems (civil status, business registry).

Shared by both: the OAuth2 token endpoint (``POST {base}/token``), then for each operation, in
order: injected faults that replace the answer (including a token revoked mid-run → 401), the
caller's address (101), the bearer token (100 → 401), the rate limit (429), the body (size limit,
well-formed JSON, the operation's JSON Schema: 200 missing field, 302 wrong type), then the
operation. Each system renders errors in its own envelope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

import orjson
from jsonschema import Draft202012Validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.auth import AuthError, Client, TokenIssuer
from sandbox.faults import Decision
from sandbox.service import ServiceError, SystemRuntime, injected_error
from sandbox.transport import BodyTooLarge, damage, read_body

JSON_TYPE = "application/json"

ErrorBody = Callable[[ServiceError], Mapping[str, Any]]


@dataclass
class RestCall:
    """One authenticated REST call, handed to an operation."""

    client: Client
    body: Any  # parsed JSON body (POST) or the query parameters (GET)
    decision: Decision


Handler = Callable[[RestCall], Awaitable[Any] | Any]


class RestSystem:
    """The HTTP shell of one REST system: token issuing, guards, faults, envelopes."""

    def __init__(self, runtime: SystemRuntime, issuer: TokenIssuer, error_body: ErrorBody,
                 body_limit: int = 1 << 20) -> None:
        self.runtime = runtime
        self.issuer = issuer
        self.error_body = error_body
        self.body_limit = body_limit

    def token_route(self, path: str = "/token") -> Route:
        return Route(path, self._token, methods=["POST"])

    async def _token(self, request: Request) -> Response:
        try:
            self.runtime.check_ip(request.client.host if request.client else None)
            form = (await read_body(request, 16_384)).decode("utf-8", "replace")
            if "grant_type=client_credentials" not in form.split("&"):
                return self._json({"error": "unsupported_grant_type",
                                   "error_description": "form body must carry grant_type=client_credentials"}, 400)
            token, expires_in = self.issuer.issue(request.headers.get("authorization"))
        except AuthError as exc:
            return self._json({"error": "invalid_client", "error_description": str(exc)}, 401,
                              {"WWW-Authenticate": 'Basic realm="token"'})
        except ServiceError as error:
            return self.error(error)
        except BodyTooLarge as exc:
            return self._json({"error": "invalid_request", "error_description": str(exc)}, 413)
        return self._json({"access_token": token, "token_type": "Bearer", "expires_in": expires_in}, 200,
                          {"Cache-Control": "no-store"})

    def route(self, path: str, handler: Handler, *, method: str = "POST",
              schema: Draft202012Validator | None = None, applicable: frozenset[str] | None = None) -> Route:
        """A route for ``handler``; ``applicable`` limits the injected faults to those that make sense."""

        async def endpoint(request: Request) -> Response:
            decision = await self.runtime.draw(applicable)
            if decision.response == "http_502":
                return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=502,
                                media_type="text/html")
            try:
                injected = injected_error(decision)
                if injected is not None:
                    raise injected
                self.runtime.check_ip(request.client.host if request.client else None)
                authorization = request.headers.get("authorization")
                try:
                    client, token = self.issuer.check(authorization)
                except AuthError as exc:
                    raise ServiceError(100, str(exc), http_status=401) from None
                if decision.response == "token_expiry":
                    self.issuer.revoke(token)
                    raise ServiceError(100, "access token expired", http_status=401)
                self.runtime.check_rate(client)
                body = await self._body(request, schema) if method == "POST" else dict(request.query_params)
                result = handler(RestCall(client, body, decision))
                if hasattr(result, "__await__"):
                    result = await result
            except ServiceError as error:
                return self.error(error)
            return damage(decision, orjson.dumps(result), JSON_TYPE)

        return Route(path, endpoint, methods=[method])

    async def _body(self, request: Request, schema: Draft202012Validator | None) -> Any:
        try:
            raw = await read_body(request, self.body_limit)
        except BodyTooLarge as exc:
            raise ServiceError(500, str(exc), http_status=413) from None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ServiceError(500, f"request body is not valid JSON: {exc}") from None
        if schema is not None:
            error = next(iter(sorted(schema.iter_errors(body), key=lambda e: e.path)), None)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(body)"
                code = 200 if error.validator == "required" else 500 if error.validator == "additionalProperties" else 302
                raise ServiceError(code, f"{where}: {error.message}")
        return body

    def error(self, error: ServiceError) -> Response:
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
        if error.http_status == 401:
            headers = {**(headers or {}), "WWW-Authenticate": 'Bearer error="invalid_token"'}
        return self._json(self.error_body(error), error.http_status, headers)

    @staticmethod
    def _json(payload: Any, status: int, headers: Mapping[str, str] | None = None) -> Response:
        return Response(orjson.dumps(payload), status_code=status, media_type=JSON_TYPE, headers=headers)
