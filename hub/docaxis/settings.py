"""Configuration of the provincial document axis, from ``HUB_DOCAXIS_…`` variables.

Same precedence as :mod:`hub.config`: the process environment wins over the config file. Nothing
secret is kept here: the signing key is named by its path and read only by :mod:`hub.docaxis.signing`.

| variable | default | meaning |
|---|---|---|
| ``HUB_DOCAXIS_DIR`` | ``$HUB_HOME/docaxis`` | the store (``store.sqlite3``), its files (``blobs/``), generated keys |
| ``HUB_DOCAXIS_AGENCY_ROOT`` | ``H<HUB_PROVINCE>`` | the province's level-1 code (Decision 20/2020): agencies under it are the province's |
| ``HUB_DOCAXIS_SIGNING_KEY``, ``HUB_DOCAXIS_SIGNING_CERT`` | generated, self-signed | PEM RSA key and certificate (chain) the hub signs packages with |
| ``HUB_DOCAXIS_SIGNING_KEY_PASSPHRASE`` | — | passphrase of an encrypted key |
| ``HUB_DOCAXIS_CA_BUNDLE`` | — | CA certificates (PEM) a received signature must chain to; unset: integrity only |
| ``HUB_DOCAXIS_CLIENTS`` | ``$HUB_DOCAXIS_DIR/clients.json`` | the local document-management systems allowed to call the API |
| ``HUB_DOCAXIS_AUDIT_DIR`` | ``$HUB_DOCAXIS_DIR/audit`` | the API's audit log (signed with the ``HUB_AUDIT_SIGNING_KEY`` key) |
| ``HUB_DOCAXIS_MAX_BODY_MB`` | 64 | largest request body the API reads (an outgoing document with its files) |
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from hub.config import ConfigError, Secret, load_config_file

_LEVEL1 = re.compile(r"[A-Y][0-9]{2}")


@dataclass(frozen=True)
class DocaxisSettings:
    directory: Path
    agency_root: str
    signing_key: Path | None
    signing_cert: Path | None
    signing_passphrase: Secret
    ca_bundle: Path | None
    clients: Path
    audit_dir: Path
    max_body_bytes: int

    @property
    def database(self) -> Path:
        return self.directory / "store.sqlite3"

    @property
    def blobs(self) -> Path:
        return self.directory / "blobs"

    @property
    def generated_keys(self) -> Path:
        return self.directory / "keys"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "DocaxisSettings":
        env = dict(load_config_file(os.environ)) if environ is None else {}
        env.update(os.environ if environ is None else environ)

        def get(name: str, default: str = "") -> str:
            return env.get(name, default).strip()

        home = Path(get("HUB_HOME", ".hub"))
        directory = Path(get("HUB_DOCAXIS_DIR") or home / "docaxis")
        root = get("HUB_DOCAXIS_AGENCY_ROOT") or f"H{get('HUB_PROVINCE', '31')}"
        if not _LEVEL1.fullmatch(root):
            raise ConfigError(f"HUB_DOCAXIS_AGENCY_ROOT must be a level-1 agency code like H31 (letter A-Y and two "
                              f"digits, Decision 20/2020), got {root!r}")
        key, cert = _file(get, "HUB_DOCAXIS_SIGNING_KEY"), _file(get, "HUB_DOCAXIS_SIGNING_CERT")
        if (key is None) != (cert is None):
            raise ConfigError("HUB_DOCAXIS_SIGNING_KEY and HUB_DOCAXIS_SIGNING_CERT go together: set both or neither")
        max_mb = get("HUB_DOCAXIS_MAX_BODY_MB", "64")
        if not (max_mb.isdigit() and 1 <= int(max_mb) <= 1024):
            raise ConfigError(f"HUB_DOCAXIS_MAX_BODY_MB must be a whole number of megabytes from 1 to 1024, got {max_mb!r}")
        clients = get("HUB_DOCAXIS_CLIENTS")
        audit = get("HUB_DOCAXIS_AUDIT_DIR")
        return cls(directory=directory, agency_root=root, signing_key=key, signing_cert=cert,
                   signing_passphrase=Secret(get("HUB_DOCAXIS_SIGNING_KEY_PASSPHRASE")),
                   ca_bundle=_file(get, "HUB_DOCAXIS_CA_BUNDLE"),
                   clients=Path(clients) if clients else directory / "clients.json",
                   audit_dir=Path(audit) if audit else directory / "audit", max_body_bytes=int(max_mb) << 20)


def _file(get, name: str) -> Path | None:
    value = get(name)
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"{name} names {path}, which is not a readable file")
    return path
