"""The shared transport against a tiny scripted HTTP server: retries, Retry-After, 401 refresh, give-up."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from connectors.errors import ConnectorError, PermanentError, TransientError
from connectors.transport import (HttpRequest, OAuth2ClientCredentials, Transport, TransportOptions,
                                  options_from_env)


class Script:
    """Answers requests from a list of (status, headers, body), one per request, recording them."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.seen: list[dict] = []


@pytest.fixture
def server():
    holder = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            script = holder["script"]
            script.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
            status, headers, payload = script.answers.pop(0)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    holder["url"] = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield holder
    httpd.shutdown()


def fast(**overrides) -> TransportOptions:
    return TransportOptions(backoff_initial_s=0.001, backoff_max_s=0.01, rate_limit=0, **overrides)


def parse_ok(response: requests.Response) -> bytes:
    if response.status_code != 200:
        raise PermanentError(f"HTTP {response.status_code}")
    if response.content == b"garbled":
        raise TransientError("garbled body")
    return response.content


def test_retries_transient_answers_and_honours_retry_after(server):
    server["script"] = Script([(503, {}, b""), (429, {"Retry-After": "2"}, b""), (200, {}, b"garbled"),
                               (200, {}, b"fine")])
    slept: list[float] = []
    transport = Transport("demo", fast(), sleep=slept.append)
    ids: list[str] = []

    def build(request_id: str) -> HttpRequest:
        ids.append(request_id)
        return HttpRequest("POST", server["url"] + "/op", data=request_id.encode())

    assert transport.call("Op", build, parse_ok) == b"fine"
    assert len(ids) == len(set(ids)) == 4  # a fresh request id per attempt
    assert [s["body"].decode() for s in server["script"].seen] == ids
    assert any(s >= 2 for s in slept)  # the Retry-After of the 429 was honoured
    assert transport.retries == 3


def test_gives_up_naming_system_operation_and_request_id(server):
    server["script"] = Script([(502, {}, b"")] * 3)
    transport = Transport("population", fast(max_attempts=3), sleep=lambda s: None)
    seen: list[str] = []

    def build(request_id: str) -> HttpRequest:
        seen.append(request_id)
        return HttpRequest("POST", server["url"] + "/op")

    with pytest.raises(ConnectorError) as raised:
        transport.call("DongBoCongDan", build, parse_ok)
    message = str(raised.value)
    assert message.startswith("population DongBoCongDan") and seen[-1] in message and "3 attempts" in message


def test_permanent_errors_are_not_retried(server):
    server["script"] = Script([(400, {}, b"bad request")])
    transport = Transport("civil", fast(), sleep=lambda s: None)
    with pytest.raises(ConnectorError, match="HTTP 400"):
        transport.call("traHoSo", lambda rid: HttpRequest("POST", server["url"]), parse_ok)
    assert len(server["script"].seen) == 1


def test_token_is_refreshed_once_on_401(server):
    token = b'{"access_token": "T%d", "token_type": "Bearer", "expires_in": 300}'
    server["script"] = Script([(200, {}, token % 1), (401, {}, b""), (200, {}, token % 2), (200, {}, b"data")])
    plain = Transport("civil", fast(), sleep=lambda s: None)
    auth = OAuth2ClientCredentials(server["url"] + "/token", "id", "secret", plain)
    transport = Transport("civil", fast(), auth=auth, sleep=lambda s: None)
    assert transport.call("op", lambda rid: HttpRequest("POST", server["url"] + "/op"), parse_ok) == b"data"
    seen = server["script"].seen
    assert [s["path"] for s in seen] == ["/token", "/op", "/token", "/op"]
    assert seen[1]["headers"]["Authorization"] == "Bearer T1" and seen[3]["headers"]["Authorization"] == "Bearer T2"
    assert seen[0]["headers"]["Authorization"].startswith("Basic ")


def test_refused_client_credentials_fail_clearly(server):
    server["script"] = Script([(401, {}, b'{"error": "invalid_client", "error_description": "wrong secret"}')])
    plain = Transport("business", fast(), sleep=lambda s: None)
    auth = OAuth2ClientCredentials(server["url"] + "/token", "id", "nope", plain)
    with pytest.raises(ConnectorError, match="invalid_client: wrong secret"):
        auth.refresh()


def test_unreachable_server_is_described(server):
    transport = Transport("vdxp", fast(max_attempts=2), sleep=lambda s: None)
    with pytest.raises(ConnectorError, match="cannot reach http://127.0.0.1:9/.*refused"):
        transport.call("GetAgencies", lambda rid: HttpRequest("POST", "http://127.0.0.1:9/edoc"), parse_ok)


def test_options_from_environment(tmp_path):
    client = tmp_path / "client.pem"
    client.write_text("-----BEGIN CERTIFICATE-----\n")  # only its presence is checked here
    options = options_from_env("civil", {"HUB_CIVIL_TIMEOUT": "12", "HUB_CIVIL_RATE_LIMIT": "5",
                                         "HUB_CIVIL_TLS_CERT": str(client)})
    assert options.read_timeout_s == 12 and options.rate_limit == 5 and options.client_cert == str(client)
    with pytest.raises(ValueError, match="HUB_CIVIL_MAX_ATTEMPTS must be a int"):
        options_from_env("civil", {"HUB_CIVIL_MAX_ATTEMPTS": "many"})
    transport = Transport("civil", options)
    assert transport.session.cert == str(client)


def test_tls_files_that_are_not_there_are_named_when_the_options_are_read(tmp_path):
    with pytest.raises(ValueError, match="HUB_CIVIL_TLS_KEY names .*key.pem.*, which is not a file"):
        options_from_env("civil", {"HUB_CIVIL_TLS_KEY": str(tmp_path / "key.pem")})
    with pytest.raises(ValueError, match="HUB_VDXP_CA_BUNDLE names .*, which does not exist"):
        options_from_env("vdxp", {"HUB_VDXP_CA_BUNDLE": str(tmp_path / "cas")})
    assert options_from_env("vdxp", {"HUB_VDXP_CA_BUNDLE": str(tmp_path)}).ca_bundle == str(tmp_path)  # a folder of CAs


def test_a_token_refused_every_time_ends_as_refused_credentials(server):
    token = b'{"access_token": "T", "token_type": "Bearer", "expires_in": 300}'
    server["script"] = Script([(200, {}, token), (401, {}, b""), (200, {}, token), (401, {}, b""),
                               (200, {}, token), (401, {}, b"")])
    plain = Transport("civil", fast(), sleep=lambda s: None)
    auth = OAuth2ClientCredentials(server["url"] + "/token", "id", "secret", plain)
    transport = Transport("civil", fast(max_attempts=2), auth=auth, sleep=lambda s: None)
    with pytest.raises(ConnectorError, match="credentials refused") as raised:
        transport.call("op", lambda rid: HttpRequest("POST", server["url"] + "/op"), parse_ok)
    assert raised.value.code == "100"
