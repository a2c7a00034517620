"""The key and certificate the hub signs its packages with (enveloped XML-DSig, RSA-SHA256).

From ``HUB_DOCAXIS_SIGNING_KEY`` and ``HUB_DOCAXIS_SIGNING_CERT`` (PEM files; the certificate file
may carry its chain, signing certificate first) and ``HUB_DOCAXIS_SIGNING_KEY_PASSPHRASE`` for an
encrypted key. Without them the hub generates an RSA-2048 key and a self-signed certificate once
into ``$HUB_DOCAXIS_DIR/keys`` (0600): enough for the sandbox and a demo, worthless as proof to a
recipient, and said so in the log. Neither the key nor the passphrase is ever logged or shown.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from connectors import edxml
from hub.config import ConfigError
from hub.docaxis.settings import DocaxisSettings

log = logging.getLogger(__name__)

KEY_FILE, CERT_FILE = "signing-key.pem", "signing-cert.pem"


@dataclass(frozen=True)
class Signer:
    #: The parsed key, handed to the XML-DSig signer as it is: parsing a PEM validates the RSA key,
    #: which costs about 50 ms, far more than the signature itself (about 1 ms).
    key: rsa.RSAPrivateKey = field(repr=False)
    cert_pems: tuple[bytes, ...]
    subject: str
    self_signed: bool

    def sign(self, package: bytes) -> bytes:
        return edxml.sign(package, self.key, list(self.cert_pems))  # type: ignore[arg-type]  # signxml takes either


def load_signer(settings: DocaxisSettings) -> Signer:
    if settings.signing_key is None:
        return _generated(settings.generated_keys, settings.agency_root)
    passphrase = settings.signing_passphrase.reveal().encode() or None
    try:
        key = serialization.load_pem_private_key(settings.signing_key.read_bytes(), passphrase)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"HUB_DOCAXIS_SIGNING_KEY ({settings.signing_key}) is not a readable PEM private key "
                          f"(wrong or missing HUB_DOCAXIS_SIGNING_KEY_PASSPHRASE?): {type(exc).__name__}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"HUB_DOCAXIS_SIGNING_KEY ({settings.signing_key}) must be an RSA key: packages are signed "
                          "RSA-SHA256")
    try:
        certs = x509.load_pem_x509_certificates(settings.signing_cert.read_bytes())
    except ValueError:
        raise ConfigError(f"HUB_DOCAXIS_SIGNING_CERT ({settings.signing_cert}) holds no PEM certificate") from None
    if certs[0].public_key().public_numbers() != key.public_key().public_numbers():
        raise ConfigError("HUB_DOCAXIS_SIGNING_CERT does not belong to HUB_DOCAXIS_SIGNING_KEY (its first certificate "
                          "must be the signing one)")
    return _signer(key, certs, self_signed=False)


def _signer(key: rsa.RSAPrivateKey, certs: list[x509.Certificate], self_signed: bool) -> Signer:
    pems = tuple(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return Signer(key, pems, certs[0].subject.rfc4514_string(), self_signed)


def _generated(directory: Path, agency_root: str) -> Signer:
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    if not key_path.exists():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"LGSP Hub {agency_root} (self-signed)")])
        now = datetime.now(timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
                .not_valid_after(now + timedelta(days=730)).sign(key, hashes.SHA256()))
        _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        _write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
        log.warning("docaxis: generated a self-signed signing certificate in %s; set HUB_DOCAXIS_SIGNING_KEY and "
                    "HUB_DOCAXIS_SIGNING_CERT to sign with the province's certificate", directory)
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    certs = x509.load_pem_x509_certificates(cert_path.read_bytes())
    return _signer(key, certs, self_signed=True)


def _write_private(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
