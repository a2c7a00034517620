"""Connectors against the sandbox served over HTTPS that demands a client certificate (mutual TLS).

Certificates are made per run (a CA, the server at 127.0.0.1, clients), the server is a real TLS
listener on loopback, and every connector is built from ``HUB_…`` variables as in production:
``HUB_<SYSTEM>_TLS_CERT``, ``…_TLS_KEY`` and ``…_CA_BUNDLE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from connectors.errors import ConnectorError
from connectors.population import PopulationConnector
from connectors.registry import build_connector
from hub.config import Settings
from sandbox.app import Sandbox, SandboxConfig
from tests.tls_helpers import Authority, Issued, issue, new_authority, serving_tls

pytestmark = pytest.mark.timeout(120)

ATTEMPTS = 3


@dataclass(frozen=True)
class Pki:
    """The trust the hub is configured with, and the certificates a test can present."""

    authority: Authority  # signs the server and the hub's client certificate
    stranger: Authority  # a CA nobody here trusts
    client: Issued
    stray_client: Issued  # signed by the stranger
    mismatched: Issued  # the client's certificate with another key


@dataclass(frozen=True)
class TlsSandbox:
    sandbox: Sandbox
    base_url: str
    pki: Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    authority, stranger = new_authority(folder, "province-ca"), new_authority(folder, "stranger-ca")
    client = issue(authority, folder, "hub-h31", server=False)
    other = issue(authority, folder, "someone-else", server=False)
    return Pki(authority, stranger, client, issue(stranger, folder, "stray", server=False),
               Issued(client.cert, other.key))


@pytest.fixture(scope="module")
def tls_sandbox(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSandbox]:
    """The sandbox (every system) behind HTTPS, requiring a client certificate from the province CA."""
    server = issue(pki.authority, tmp_path_factory.mktemp("server"), "sandbox", server=True)
    sandbox = Sandbox(SandboxConfig(residents=300, seed=11, rate_limit=0))
    with serving_tls(sandbox.app(), server, pki.authority) as base_url:
        yield TlsSandbox(sandbox, base_url, pki)


def hub_env(site: TlsSandbox, system: str, *, cert: Issued | None, ca_bundle: Path) -> dict[str, str]:
    """What an operator sets for ``system``: the sandbox's addresses and credentials, the TLS files,
    a few attempts without back-off waits (the number of attempts is what the tests look at)."""
    prefix = f"HUB_{system.upper()}"
    env = {**site.sandbox.environment(site.base_url), f"{prefix}_CA_BUNDLE": str(ca_bundle),
           f"{prefix}_MAX_ATTEMPTS": str(ATTEMPTS), f"{prefix}_BACKOFF_INITIAL": "0", f"{prefix}_RATE_LIMIT": "0"}
    if cert is not None:
        env.update({f"{prefix}_TLS_CERT": str(cert.cert), f"{prefix}_TLS_KEY": str(cert.key)})
    return env


def population(site: TlsSandbox, *, cert: Issued | None, ca_bundle: Path) -> PopulationConnector:
    env = hub_env(site, "population", cert=cert, ca_bundle=ca_bundle)
    return build_connector("population", Settings.from_env(env), env)


def verify_someone(connector: PopulationConnector, site: TlsSandbox) -> bool:
    """Service 033 for a resident who exists, under the name the registry has."""
    residents = site.sandbox.residents
    return connector.verify(personal_id=residents.id_text(7), full_name=residents.full_name(7))


@pytest.mark.parametrize("system", ["population", "civil", "business", "vdxp"])
def test_with_the_client_certificate_and_the_ca_bundle_every_connector_gets_through(tls_sandbox: TlsSandbox,
                                                                                     system: str):
    env = hub_env(tls_sandbox, system, cert=tls_sandbox.pki.client, ca_bundle=tls_sandbox.pki.authority.bundle)
    result = build_connector(system, Settings.from_env(env), env).check()
    assert result.ok, result.message
    assert tls_sandbox.base_url in result.message


def test_a_real_call_over_mutual_tls_returns_the_registry_answer(tls_sandbox: TlsSandbox):
    connector = population(tls_sandbox, cert=tls_sandbox.pki.client, ca_bundle=tls_sandbox.pki.authority.bundle)
    assert verify_someone(connector, tls_sandbox) is True
    assert connector.transport.attempts == 1


def test_without_a_client_certificate_the_call_fails_naming_the_setting(tls_sandbox: TlsSandbox):
    """The server closes the connection after the TLS 1.3 handshake, which a client cannot tell from a
    dropped connection: the configured attempts are made, no more, and the error says what is missing."""
    connector = population(tls_sandbox, cert=None, ca_bundle=tls_sandbox.pki.authority.bundle)
    with pytest.raises(ConnectorError) as raised:
        verify_someone(connector, tls_sandbox)
    error = raised.value
    assert error.system == "population" and str(error).startswith("population XacThucThongTinCongDan (request ")
    assert "no TLS client certificate is configured (HUB_POPULATION_TLS_CERT)" in error.detail
    assert f"gave up after {ATTEMPTS} attempts" in error.detail and "\n" not in str(error)
    assert connector.transport.attempts == ATTEMPTS

    check = connector.check()
    assert not check.ok and "HUB_POPULATION_TLS_CERT" in check.message and "\n" not in check.message
    assert connector.transport.attempts == ATTEMPTS + 2  # a check tries twice, whatever the setting


def test_a_client_certificate_from_a_ca_the_server_does_not_trust_is_named(tls_sandbox: TlsSandbox):
    stray = tls_sandbox.pki.stray_client
    connector = population(tls_sandbox, cert=stray, ca_bundle=tls_sandbox.pki.authority.bundle)
    with pytest.raises(ConnectorError) as raised:
        verify_someone(connector, tls_sandbox)
    assert f"does not accept the TLS client certificate {stray.cert}" in raised.value.detail
    assert connector.transport.attempts == ATTEMPTS


def test_with_a_wrong_ca_bundle_the_server_is_not_trusted_and_not_retried(tls_sandbox: TlsSandbox):
    wrong = tls_sandbox.pki.stranger.bundle
    connector = population(tls_sandbox, cert=tls_sandbox.pki.client, ca_bundle=wrong)
    with pytest.raises(ConnectorError) as raised:
        verify_someone(connector, tls_sandbox)
    error = raised.value
    assert error.system == "population" and error.operation == "XacThucThongTinCongDan"
    assert error.detail.startswith(f"cannot verify the TLS certificate of {tls_sandbox.base_url}/population/dancu")
    assert f"trusted: {wrong}; see HUB_POPULATION_CA_BUNDLE" in error.detail
    assert connector.transport.attempts == 1  # retrying cannot make a certificate trusted


@pytest.mark.parametrize("system", ["population", "business", "vdxp"])
def test_check_reports_an_untrusted_server_in_one_line_at_once(tls_sandbox: TlsSandbox, system: str):
    env = hub_env(tls_sandbox, system, cert=tls_sandbox.pki.client, ca_bundle=tls_sandbox.pki.stranger.bundle)
    result = build_connector(system, Settings.from_env(env), env).check()
    assert not result.ok and "\n" not in result.message
    assert "cannot verify the TLS certificate" in result.message and f"HUB_{system.upper()}_CA_BUNDLE" in result.message
    assert "gave up" not in result.message


def test_a_certificate_with_someone_elses_key_fails_before_any_exchange(tls_sandbox: TlsSandbox):
    mismatched = tls_sandbox.pki.mismatched
    connector = population(tls_sandbox, cert=mismatched, ca_bundle=tls_sandbox.pki.authority.bundle)
    with pytest.raises(ConnectorError) as raised:
        verify_someone(connector, tls_sandbox)
    assert f"the TLS client certificate {mismatched.cert} cannot be used" in raised.value.detail
    assert "KEY_VALUES_MISMATCH" in raised.value.detail and connector.transport.attempts == 1


def test_a_certificate_file_that_is_not_there_is_a_configuration_error(tls_sandbox: TlsSandbox, tmp_path: Path):
    pki = tls_sandbox.pki
    env = {**hub_env(tls_sandbox, "population", cert=pki.client, ca_bundle=pki.authority.bundle),
           "HUB_POPULATION_TLS_CERT": str(tmp_path / "missing.pem")}
    with pytest.raises(ValueError, match="HUB_POPULATION_TLS_CERT names .*missing.pem.*, which is not a file"):
        build_connector("population", Settings.from_env(env), env)
