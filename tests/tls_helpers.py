"""Throwaway certificates and a sandbox served over TLS that demands a client certificate.

A real TLS handshake on loopback, with keys made per test by ``cryptography``: the transport's
client-certificate and CA-bundle settings are exercised against what a government gateway does,
not against a mock.
"""

from __future__ import annotations

import ipaddress
import ssl
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sandbox.server import bind


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    """A certificate authority that can sign leaf certificates."""

    name: x509.Name
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    bundle: Path  # its certificate as a PEM file, for a CA bundle


def new_authority(folder: Path, common_name: str) -> Authority:
    """A self-signed CA, valid for a day around now (clock skew between machines does not matter here)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (_builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    bundle = folder / f"{common_name}.pem"
    bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Authority(name, key, cert, bundle)


def issue(authority: Authority, folder: Path, common_name: str, *, server: bool) -> Issued:
    """A leaf certificate signed by ``authority``: for the server at 127.0.0.1, or for a client."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (_builder(subject, authority.name, key.public_key())
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
                              critical=False))
    if server:
        loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        builder = builder.add_extension(x509.SubjectAlternativeName([loopback]), critical=False)
    cert = builder.sign(authority.key, hashes.SHA256())
    issued = Issued(folder / f"{common_name}.pem", folder / f"{common_name}.key")
    issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    issued.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    return issued


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.now(timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1)))


class _Server(uvicorn.Server):
    """A uvicorn server that says when it listens, so a test waits on an event rather than polling."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = threading.Event()

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()


@contextmanager
def serving_tls(app, server: Issued, clients_from: Authority) -> Iterator[str]:
    """Serve ``app`` over HTTPS on a free loopback port, requiring a client certificate signed by
    ``clients_from``; yields the base URL."""
    sock = bind()
    config = uvicorn.Config(app, log_level="critical", access_log=False, loop="uvloop", http="httptools",
                            lifespan="off", ssl_certfile=str(server.cert), ssl_keyfile=str(server.key),
                            ssl_ca_certs=str(clients_from.bundle), ssl_cert_reqs=ssl.CERT_REQUIRED)
    instance = _Server(config)

    def run() -> None:
        try:
            instance.run(sockets=[sock])
        finally:
            instance.listening.set()  # a server that failed to start must not leave the test waiting

    thread = threading.Thread(target=run, daemon=True, name="sandbox-https")
    thread.start()
    instance.listening.wait(timeout=30)
    if not instance.started:
        raise RuntimeError("the HTTPS sandbox did not start")
    try:
        yield f"https://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        # Idle keep-alive connections would hold a graceful shutdown for as long as TLS waits for the
        # clients' close_notify; the tests are over, so nothing is in flight.
        instance.should_exit = instance.force_exit = True
        thread.join(timeout=10)
        sock.close()
