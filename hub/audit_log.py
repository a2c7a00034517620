"""The audit log: every lookup request and its answer, appended to a signed, tamper-evident hash chain.

Why it exists: Decree 47/2020 Art. 45 requires that every request to a data-sharing service and every
answer is logged (time, channel, requesting agency, content, status), and Decree 13/2023 Art. 38 that
the processing of personal data is logged. A log is only evidence if changing it afterwards shows, so
each entry carries the hash of the one before it, and the chain is signed at checkpoints.

Layout of the directory (``HUB_AUDIT_DIR``, default ``$HUB_HOME/audit``; created 0700, files 0600,
because the log names the people who were looked up)::

    audit-000001.jsonl …  segments: one entry per line, append-only, a new segment past segment_bytes
    checkpoints.jsonl     signed checkpoints, one per line: n, seq, hash, and where that entry ends
    head.json             the latest signed head ("the chain reached seq S with hash H"), replaced
                          atomically; signed apart from the checkpoints so it cannot be rebuilt from them
    repairs.jsonl         a note, with the bytes removed, of each torn last line truncated on open
    writer.lock           held (flock) by the one process that writes
    signing-key.pem       the generated Ed25519 key and signing-key.pub.pem, unless
                          HUB_AUDIT_SIGNING_KEY names a key kept elsewhere

An entry line is the canonical JSON (sorted keys, no whitespace, UTF-8) of the entry with ``v``, ``seq``
and ``prev_hash`` (the previous entry's hash; 64 zeros before the first), followed by a ``hash`` member
that is the SHA-256 (hex) of exactly that canonical JSON. A checkpoint or head is the canonical JSON of
``kind, n, seq, hash, at, key_id, segment, offset, position`` (where that entry ends: in its segment, and
counting every entry byte from the start) plus ``sig``, the Ed25519 signature (base64) of
:data:`SIGNATURE_DOMAIN` followed by the canonical JSON without ``sig``. Checkpoint 0 (seq 0, the zero
hash) is written when the log is created, so a log always has a signed head.

What the chain proves, and what it cannot:

- Any altered, inserted or removed entry up to the last signed checkpoint is found by :func:`verify`,
  even when the hashes after it were recomputed: the signed hash no longer matches.
- Entries after the last checkpoint are protected by the chain alone, which anyone able to write the
  files can recompute. Checkpoints every ``checkpoint_every`` entries, every ``checkpoint_seconds``
  and at :meth:`AuditLog.close` bound that window.
- Putting back an older copy of the whole directory, head included, cannot be told from the files
  alone. Copy ``head.json`` to another system now and then to anchor it.
- The signatures are worth what the key's secrecy is worth. The generated key sits beside the log;
  for real protection keep it readable only by the hub's service user, better on another volume
  (``HUB_AUDIT_SIGNING_KEY``), and verify with a public key pinned elsewhere.

Durability (group commit): :meth:`AuditLog.append` only seals the entry into the chain and queues it
(about 4 µs); a background flusher, woken by the first queued entry, gathers for ``flush_interval``
seconds (default 5 ms), then writes the batch with one write and one fsync and signs the checkpoints
that fell due in it. A crash or power loss can therefore lose the entries of the last window, although
their callers already have a sequence number. The window is ``flush_interval`` plus one fsync while the
process has spare CPU (about 7 ms at 2,000 appends/s in ``bench/audit.py``); in a process kept busy by
Python code the flusher waits for the interpreter lock after each system call, and the window grew to
about 100 ms under a tight append loop. ``max_pending`` (default 100,000 entries) bounds it: past that,
appenders wait for the disk. ``append(entry, durable=True)`` waits until its entry is on disk
(concurrent waiters share one fsync), :meth:`AuditLog.flush` and :meth:`AuditLog.close` make everything
appended before them durable, and ``flush_interval=0`` fsyncs on every append. After a failed write or
fsync the log refuses further appends (:class:`AuditLogFailed`), so that the service fails closed
instead of serving without a log.

One process at a time writes a directory (it holds ``writer.lock`` while open); threads within it may
append concurrently. A server with several worker processes gives each its own directory, or funnels
appends to one process. The lookup API does the latter even with one worker: :mod:`hub.audit_writer`
runs this writer in a process of its own (``background=False``: no flusher thread, the process commits
in groups from its one thread through :meth:`AuditLog.commit_due`), so that neither the sealing nor the
flusher's claims on the interpreter lock cost the serving process's event loop.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from filelock import FileLock, Timeout

from hub.config import ConfigError, Secret, load_config_file

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
GENESIS_HASH = "0" * 64
#: Prefixed to everything signed, so that a signature made here means nothing anywhere else.
SIGNATURE_DOMAIN = b"lgsp-hub audit checkpoint v1\n"
CHECKPOINTS_FILE = "checkpoints.jsonl"
HEAD_FILE = "head.json"
REPAIRS_FILE = "repairs.jsonl"
LOCK_FILE = "writer.lock"
KEY_FILE = "signing-key.pem"
DEFAULT_FLUSH_INTERVAL = 0.005
DEFAULT_SEGMENT_BYTES = 64 << 20
#: ``detail`` is a short reason; longer text is cut, so that a careless caller cannot pour answers into it.
DETAIL_MAX = 300
_SEGMENT_RE = re.compile(r"audit-(\d{6})\.jsonl")
_SORTED = orjson.OPT_SORT_KEYS


class AuditLogError(RuntimeError):
    """The audit log cannot be used as asked."""


class AuditLogBusy(AuditLogError):
    """Another process holds the directory's writer lock."""


class AuditLogCorrupt(AuditLogError):
    """What is on disk is not a chain the writer may continue; run ``hub audit verify``."""


class AuditLogFailed(AuditLogError):
    """A write or fsync failed; entries may be lost, so the log accepts no more until reopened."""


# --- entries ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One request and its answer: who, when, for which declared purpose, what was asked, what came back
    and how it ended. Only the names of the returned fields and the keys of the returned records are
    kept, never their values: the log must not become a second copy of the data it protects."""

    client_id: str  # the calling system (API client)
    agency_code: str  # the requesting agency (MaDVC / maDonVi)
    purpose: str | None  # dossier code (MaHoSo) or procedure code (MaTTHC); None when refused for lacking it
    method: str  # HTTP method, or the channel of a non-HTTP call
    path: str  # the request path (route template preferred), or the SOAP operation
    outcome: int  # HTTP status of the answer
    asked: list[str] = field(default_factory=list)  # the keys asked for: personal IDs, enterprise codes
    fields: list[str] = field(default_factory=list)  # names of the fields returned
    record_keys: list[str] = field(default_factory=list)  # keys of the records returned
    detail: str = ""  # a short reason, e.g. why the request was refused
    at: datetime = field(default_factory=lambda: datetime.now(UTC))  # when, timezone-aware, kept in UTC

    def __init__(self, *, client_id: str, agency_code: str, purpose: str | None, method: str, path: str,
                 outcome: int, asked: Iterable[str] = (), fields: Iterable[str] = (), record_keys: Iterable[str] = (),
                 detail: str = "", at: datetime | None = None) -> None:
        """Written out rather than generated: an entry is made for every request, and the generated
        ``__init__`` of a frozen dataclass followed by ``__post_init__`` cost about 60 % more. Same
        fields, defaults and checks: ``at`` aware (kept in UTC), the lists copied as lists of strings,
        ``outcome`` an int, ``detail`` cut to :data:`DETAIL_MAX`."""
        if at is None:
            at = datetime.now(UTC)
        elif at.tzinfo is not UTC:
            if at.tzinfo is None:
                raise ValueError("AuditEntry.at must be timezone-aware")
            at = at.astimezone(UTC)
        if type(outcome) is not int and (isinstance(outcome, bool) or not isinstance(outcome, int)):
            raise TypeError(f"AuditEntry.outcome must be an HTTP status int, got {outcome!r}")
        if len(detail) > DETAIL_MAX:
            detail = detail[: DETAIL_MAX - 1] + "…"
        _set = object.__setattr__
        _set(self, "client_id", client_id)
        _set(self, "agency_code", agency_code)
        _set(self, "purpose", purpose)
        _set(self, "method", method)
        _set(self, "path", path)
        _set(self, "outcome", outcome)
        _set(self, "asked", _strings(asked, "asked"))
        _set(self, "fields", _strings(fields, "fields"))
        _set(self, "record_keys", _strings(record_keys, "record_keys"))
        _set(self, "detail", detail)
        _set(self, "at", at)

    def to_record(self) -> dict[str, object]:
        """The entry as the JSON members of its log line."""
        return {"at": _iso(self.at), "client_id": self.client_id, "agency_code": self.agency_code,
                "purpose": self.purpose, "method": self.method, "path": self.path, "asked": self.asked,
                "fields": self.fields, "record_keys": self.record_keys, "outcome": self.outcome,
                "detail": self.detail}

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> "AuditEntry":
        """Read an entry back from the members of its log line."""
        return cls(at=datetime.fromisoformat(str(record["at"])), client_id=record["client_id"],
                   agency_code=record["agency_code"], purpose=record["purpose"], method=record["method"],
                   path=record["path"], asked=record["asked"], fields=record["fields"],
                   record_keys=record["record_keys"], outcome=record["outcome"], detail=record["detail"])


def request_record(at: datetime, client_id: str, agency_code: str, purpose: str | None, method: str, path: str,
                   asked: list[str], fields: list[str], record_keys: list[str], outcome: int,
                   detail: str = "") -> dict[str, object]:
    """:meth:`AuditEntry.to_record` of the entry with these fields, without making the entry (the
    lookup API's hot path): ``at`` must be aware and is kept in UTC, ``detail`` is cut at
    :data:`DETAIL_MAX`; the lists must already be lists of strings, and are not copied."""
    if at.tzinfo is not UTC:
        at = utc_moment(at)
    if len(detail) > DETAIL_MAX:
        detail = cut_detail(detail)
    return {"at": _iso(at), "client_id": client_id, "agency_code": agency_code, "purpose": purpose,
            "method": method, "path": path, "asked": asked, "fields": fields, "record_keys": record_keys,
            "outcome": outcome, "detail": detail}


def utc_moment(at: datetime) -> datetime:
    """An entry's ``at`` as it is kept: in UTC; a naive datetime is refused."""
    if at.tzinfo is None:
        raise ValueError("AuditEntry.at must be timezone-aware")
    return at.astimezone(UTC)


def cut_detail(detail: str) -> str:
    """An entry's ``detail`` as it is kept: at most :data:`DETAIL_MAX` characters."""
    return detail if len(detail) <= DETAIL_MAX else detail[: DETAIL_MAX - 1] + "…"


def _strings(values: object, name: str) -> list[str]:
    """A list of strings; a bare string is refused, since it would be taken for a list of characters."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"AuditEntry.{name} must be a list of strings, not a single string")
    copied = list(values)
    for v in copied:
        if type(v) is not str:  # rare (a number, a str subclass): convert every item as before
            return [v if isinstance(v, str) else str(v) for v in copied]
    return copied


def _iso(moment: datetime) -> str:
    if moment.tzinfo is UTC:  # every entry's ``at``: the same text as below, a little faster
        return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (moment.year, moment.month, moment.day, moment.hour,
                                                       moment.minute, moment.second, moment.microsecond)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _now() -> str:
    return _iso(datetime.now(UTC))


def _canonical(value: object) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes that are hashed and signed."""
    try:
        return orjson.dumps(value, option=_SORTED)
    except orjson.JSONEncodeError:  # a string that is not valid Unicode (lone surrogate) must not lose the entry
        return orjson.dumps(_scrub(value), option=_SORTED)


def _scrub(value: object) -> object:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _seal(record: dict[str, object], seq: int, prev_hash: str) -> tuple[str, bytes]:
    """The hash and the line of an entry at ``seq`` chained to ``prev_hash``. ``record`` gains
    ``seq``, ``prev_hash`` and ``v`` (callers pass a fresh dict, :meth:`AuditEntry.to_record`'s)."""
    record["seq"], record["prev_hash"], record["v"] = seq, prev_hash, FORMAT_VERSION
    body = _canonical(record)
    digest = hashlib.sha256(body).hexdigest()
    return digest, b"%b,\"hash\":\"%s\"}\n" % (body[:-1], digest.encode())


# --- keys and signatures ---------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key, named in checkpoints so a wrong key is told from a forgery."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_path_for(private_key_path: Path) -> Path:
    """Where the public half of a generated key is written: ``signing-key.pem`` → ``signing-key.pub.pem``."""
    return private_key_path.with_name(private_key_path.name.removesuffix(".pem") + ".pub.pem")


def load_signing_key(path: Path, passphrase: Secret | None = None) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key; warn when others may read it, since they could then forge checkpoints."""
    data = Path(path).read_bytes()
    password = passphrase.reveal().encode() if passphrase else None
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not a readable PEM private key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}; the audit log signs with Ed25519")
    if os.stat(path).st_mode & 0o077:
        log.warning("audit signing key %s is readable by others than its owner; chmod 600 it", path)
    return key


def load_or_create_signing_key(path: Path, passphrase: Secret | None = None) -> Ed25519PrivateKey:
    """The key at ``path``, generated on first use: written 0600 (never logged), with its public key
    beside it as ``<name>.pub.pem`` for ``hub audit verify``. Two processes starting at once agree on one
    key, because the key file appears atomically by hard link and only the first link wins."""
    path = Path(path)
    if path.exists():
        return load_signing_key(path, passphrase)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    encryption = (serialization.BestAvailableEncryption(passphrase.reveal().encode()) if passphrase
                  else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    if not _create_exclusively(path, pem, 0o600):
        return load_signing_key(path, passphrase)
    public = public_key_path_for(path)
    _atomic_write(public, _public_pem(key.public_key()), mode=0o644)
    log.info("generated the audit signing key %s (public key %s, id %s)", path, public, key_id(key.public_key()))
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read the PEM Ed25519 public key that checkpoints are verified with."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except ValueError:
        raise ConfigError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def _public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _signed(key: Ed25519PrivateKey, body: dict[str, object]) -> dict[str, object]:
    signature = key.sign(SIGNATURE_DOMAIN + _canonical(body))
    return {**body, "sig": base64.b64encode(signature).decode("ascii")}


def _signature_ok(public_key: Ed25519PublicKey, record: Mapping[str, object]) -> bool:
    body = {k: v for k, v in record.items() if k != "sig"}
    try:
        signature = base64.b64decode(str(record.get("sig", "")), validate=True)
        public_key.verify(signature, SIGNATURE_DOMAIN + _canonical(body))
    except (InvalidSignature, ValueError):
        return False
    return True


# --- settings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditSettings:
    """Where the log and its keys are, from ``HUB_AUDIT_…`` variables (same precedence as :mod:`hub.config`).

    HUB_AUDIT_DIR (default ``$HUB_HOME/audit``); HUB_AUDIT_SIGNING_KEY, a PEM Ed25519 private key (unset:
    one is generated into ``$HUB_HOME/audit/signing-key.pem``); HUB_AUDIT_SIGNING_KEY_PASSPHRASE, if that
    PEM is encrypted; HUB_AUDIT_PUBLIC_KEY, the key ``hub audit verify`` trusts (default: the ``.pub.pem``
    beside the signing key); HUB_AUDIT_FLUSH_MS, the group-commit window (0: fsync every append);
    HUB_AUDIT_CHECKPOINT_EVERY, entries between signed checkpoints.
    """

    directory: Path
    signing_key_path: Path
    generate_key: bool
    passphrase: Secret
    public_key_path: Path
    flush_interval: float
    checkpoint_every: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "AuditSettings":
        env = dict(load_config_file(os.environ)) if environ is None else {}
        env.update(os.environ if environ is None else environ)
        get = lambda name, default="": env.get(name, default).strip()  # noqa: E731 - tiny local helper
        home = Path(get("HUB_HOME", ".hub"))
        named_key = get("HUB_AUDIT_SIGNING_KEY")
        key_path = Path(named_key) if named_key else home / "audit" / KEY_FILE
        if named_key and not key_path.is_file():
            raise ConfigError(f"HUB_AUDIT_SIGNING_KEY names {key_path}, which does not exist")
        public = get("HUB_AUDIT_PUBLIC_KEY")
        return cls(directory=Path(get("HUB_AUDIT_DIR") or home / "audit"), signing_key_path=key_path,
                   generate_key=not named_key, passphrase=Secret(get("HUB_AUDIT_SIGNING_KEY_PASSPHRASE")),
                   public_key_path=Path(public) if public else public_key_path_for(key_path),
                   flush_interval=_number(get, "HUB_AUDIT_FLUSH_MS", "5", float) / 1000,
                   checkpoint_every=_number(get, "HUB_AUDIT_CHECKPOINT_EVERY", "1000", int))

    def signing_key(self) -> Ed25519PrivateKey:
        if self.generate_key:
            return load_or_create_signing_key(self.signing_key_path, self.passphrase)
        return load_signing_key(self.signing_key_path, self.passphrase)


def _number(get: Callable[..., str], name: str, default: str, kind: type) -> float:
    try:
        value = kind(get(name, default))
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {get(name)!r}") from None
    if value < 0 or (kind is int and value < 1):
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


# --- files -----------------------------------------------------------------------------------------


def segment_name(number: int) -> str:
    return f"audit-{number:06d}.jsonl"


def _segment_numbers(directory: Path) -> list[int]:
    found = (_SEGMENT_RE.fullmatch(p.name) for p in directory.iterdir()) if directory.is_dir() else ()
    return sorted(int(m.group(1)) for m in found if m)


def _fsync_dir(directory: Path) -> None:
    """A created or renamed file survives a power loss only once its directory entry is on disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` so that a reader, or a crash, sees the old content or the new, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _create_exclusively(path: Path, data: bytes, mode: int) -> bool:
    """Create ``path`` with ``data`` unless it exists; a reader never sees it empty or half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    _fsync_dir(path.parent)
    return True


class _Line(NamedTuple):
    """One line of a file and where it is: ``number`` is 0 when reading began mid-file."""

    file: str
    number: int
    end: int
    data: bytes

    @property
    def where(self) -> str:
        if self.number:
            return f"{self.file} line {self.number}"
        return f"{self.file} at byte {self.end - len(self.data)}"

    @property
    def complete(self) -> bool:
        return self.data.endswith(b"\n")


def _lines(path: Path, start: int = 0) -> Iterator[_Line]:
    with open(path, "rb") as f:
        f.seek(start)
        end, number = start, 0
        for data in f:
            end += len(data)
            number += 1
            yield _Line(path.name, number if start == 0 else 0, end, data)


def _torn_tail(path: Path) -> tuple[int, bytes] | None:
    """(length to keep, torn bytes) when the file does not end with a newline, else None."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - 1))
        if f.read(1) in (b"\n", b""):
            return None
        keep, end = 0, size
        while end > 0 and not keep:
            start = max(0, end - 65536)
            f.seek(start)
            cut = f.read(end - start).rfind(b"\n")
            keep, end = (start + cut + 1 if cut >= 0 else 0), start
        f.seek(keep)
        return keep, f.read()


def _line_count(path: Path, upto: int) -> int:
    with open(path, "rb") as f:
        return f.read(upto).count(b"\n")


def _writer_active(directory: Path) -> bool:
    """Whether a writer holds the directory: its last line may then be a write in progress, not a crash."""
    probe = FileLock(directory / LOCK_FILE, timeout=0, mode=0o600, thread_local=False, fallback_to_soft=False)
    try:
        probe.acquire()
    except Timeout:
        return True
    except OSError:
        return False
    probe.release()
    return False


# --- problems (shared by the writer's recovery and by verify) ----------------------------------------


@dataclass(frozen=True)
class Problem:
    """The first thing found wrong: its kind, a precise message, and where (seq, file, line)."""

    kind: str  # altered, removed, inserted, broken_link, rewritten, truncated, bad_signature, wrong_key,
    #            missing_head, missing_checkpoint, malformed, empty, torn (a crash, not tampering)
    message: str
    seq: int | None = None
    file: str | None = None
    line: int | None = None
    tampering: bool = True


class _Found(Exception):
    """Carries the first problem out of a walk."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _found(kind: str, message: str, line: _Line | None = None, seq: int | None = None) -> _Found:
    return _Found(Problem(kind, message, seq, line.file if line else None, (line.number or None) if line else None))


def _parse_entry(line: _Line) -> tuple[dict, str]:
    """The members of an entry line without ``hash``, and the stated hash."""
    if not line.complete:
        raise _found("malformed", f"{line.where} is not terminated by a newline", line)
    try:
        record = orjson.loads(line.data)
    except orjson.JSONDecodeError:
        raise _found("malformed", f"{line.where} is not valid JSON", line) from None
    if not (isinstance(record, dict) and isinstance(record.get("seq"), int) and isinstance(record.get("hash"), str)
            and isinstance(record.get("prev_hash"), str)):
        raise _found("malformed", f"{line.where} is not an audit entry (seq, prev_hash, hash)", line)
    return record, record.pop("hash")


def _check_link(line: _Line, expected: int, prev_hash: str, previous: _Line | None) -> str:
    """Check one entry line against the chain so far; return its hash. The order of the checks decides
    how a problem is named: a sequence jump is a removal, a sequence repeat an insertion, a wrong link
    an insertion or removal before this line, and only then a wrong hash of its own an alteration."""
    record, stated = _parse_entry(line)
    seq = record["seq"]
    if seq < expected:
        twin = f" (after {previous.where})" if previous else ""
        raise _found("inserted", f"inserted entry: {line.where} has seq {seq} but seq {expected} was expected{twin}: "
                     "an entry was inserted, duplicated or moved", line, seq)
    if seq > expected:
        span = f"seq {expected}" if seq == expected + 1 else f"seq {expected}..{seq - 1}"
        raise _found("removed", f"removed entry: {span} missing before {line.where} (seq {seq})", line, expected)
    if record["prev_hash"] != prev_hash:
        before = f"seq {seq - 1} ({previous.where})" if previous else f"seq {seq - 1}"
        raise _found("broken_link", f"broken chain at seq {seq} ({line.where}): its prev_hash is not the hash of "
                     f"{before}; an entry was inserted or removed between them, or seq {seq - 1} was altered "
                     "and re-hashed", line, seq)
    if hashlib.sha256(_canonical(record)).hexdigest() != stated:
        raise _found("altered", f"altered entry: hash mismatch at seq {seq} ({line.where})", line, seq)
    return stated


def _read_json_file(path: Path) -> dict | None:
    try:
        value = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except orjson.JSONDecodeError:
        raise _found("malformed", f"{path.name} is not valid JSON") from None
    if not isinstance(value, dict):
        raise _found("malformed", f"{path.name} is not a signed checkpoint")
    return value


def _parse_checkpoint(line: _Line) -> dict:
    try:
        record = orjson.loads(line.data)
    except orjson.JSONDecodeError:
        raise _found("malformed", f"{line.where} is not valid JSON", line) from None
    if not (isinstance(record, dict) and record.get("kind") == "checkpoint"
            and all(isinstance(record.get(k), int) for k in ("n", "seq", "offset", "position"))):
        raise _found("malformed", f"{line.where} is not a checkpoint", line)
    return record


# --- the writer ------------------------------------------------------------------------------------


class _Tip(NamedTuple):
    """The end of the chain: last seq and hash, and where that entry ends: segment and offset in it, and
    position, the bytes of all entry lines up to it (verify compares it to say inserted or removed)."""

    seq: int
    hash: str
    segment: int
    offset: int
    position: int


#: ``_Tip(...)`` without the Python-level ``__new__`` a NamedTuple goes through (the append path).
_new_tuple = tuple.__new__


class _Pending(NamedTuple):
    tip: _Tip
    line: bytes
    checkpoint: bool


@dataclass(frozen=True)
class Repair:
    """A torn last line removed on open: the file, its line number, where it began and how long it was."""

    file: str
    line: int
    offset: int
    length: int


class AuditLog:
    """The writer of one audit-log directory: ``append`` on every request, ``close`` at shutdown.

    ``signing_key`` None: the key ``directory/signing-key.pem``, generated on first use (0600, public key
    beside it as ``signing-key.pub.pem``; the key is never logged). :meth:`from_settings` reads the
    ``HUB_AUDIT_…`` variables instead. Opening takes the directory's writer lock (waiting up to
    ``lock_timeout`` seconds, then :class:`AuditLogBusy`), checks the chain since the last checkpoint,
    and repairs a torn last line left by a crash: it is first noted, bytes included, in
    ``repairs.jsonl`` and in :attr:`repairs`, then truncated. Anything else wrong raises
    :class:`AuditLogCorrupt`: the writer never continues a chain it cannot vouch for. Appends are
    durable within the group-commit window (see the module docstring for the crash window).
    """

    def __init__(self, directory: Path, signing_key: Ed25519PrivateKey | None = None,
                 checkpoint_every: int = 1000, *, flush_interval: float = DEFAULT_FLUSH_INTERVAL,
                 checkpoint_seconds: float = 60.0, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 max_pending: int = 100_000, lock_timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_durable: Callable[[int], None] | None = None,
                 on_failure: Callable[[BaseException], None] | None = None, background: bool = True) -> None:
        if checkpoint_every < 1 or flush_interval < 0 or segment_bytes < 1:
            raise ValueError("checkpoint_every and segment_bytes must be positive, flush_interval not negative")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._key = signing_key or load_or_create_signing_key(self.directory / KEY_FILE)
        self._key_id = key_id(self._key.public_key())
        self._every, self._flush_interval = checkpoint_every, flush_interval
        self._checkpoint_seconds, self._segment_bytes, self._clock = checkpoint_seconds, segment_bytes, clock
        self._max_pending = max(1, max_pending)
        #: told the last durable seq after each commit, and the failure once the log fails (from the
        #: thread that committed or failed): how :mod:`hub.audit_writer` reports to the serving process
        self._on_durable, self._on_failure = on_durable, on_failure
        self._lock = threading.Lock()  # the chain's state and the queue
        self._io_lock = threading.Lock()  # the files; taken before _lock, never while holding it
        self._work = threading.Condition(self._lock)
        self._durable_changed = threading.Condition(self._lock)
        self._urgent = threading.Event()
        self._pending: list[_Pending] = []
        self._closing = self._closed = False
        self._failure: BaseException | None = None
        self.repairs: list[Repair] = []
        self.fsyncs = self.commits = 0  # counters for monitoring and the benchmark
        self._writer_lock = self._take_writer_lock(lock_timeout)
        try:
            self._open()
        except BaseException:
            self._writer_lock.release()
            raise
        #: background False: no flusher thread; the owner calls :meth:`commit_due` (``hub.audit_writer``'s
        #: single-threaded loop, where a second thread would only compete for the interpreter lock)
        self._flusher = None
        if background:
            self._flusher = threading.Thread(target=self._run_flusher, name="audit-log-flusher", daemon=True)
            self._flusher.start()
        atexit.register(self.close)

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None, **options) -> "AuditLog":
        """The log configured by ``HUB_AUDIT_DIR`` (default ``$HUB_HOME/audit``) and
        ``HUB_AUDIT_SIGNING_KEY`` (a PEM private key). With no key named, one is generated on first use
        into ``$HUB_HOME/audit/signing-key.pem`` with 0600 permissions, its public key written beside it
        as ``signing-key.pub.pem``; the key itself is never logged. See :class:`AuditSettings`."""
        settings = AuditSettings.from_env(environ)
        options.setdefault("flush_interval", settings.flush_interval)
        return cls(settings.directory, settings.signing_key(), settings.checkpoint_every, **options)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    @property
    def last_seq(self) -> int:
        """The last sequence number handed out (durable or not)."""
        return self._seq

    @property
    def durable_seq(self) -> int:
        """The last sequence number known to be on disk."""
        return self._durable.seq

    # append path ------------------------------------------------------------------------------------

    def append(self, entry: AuditEntry, *, durable: bool = False) -> int:
        """Seal ``entry`` into the chain and queue it; return its sequence number. Durable within the
        group-commit window, or before returning when ``durable`` is true (or ``flush_interval`` is 0)."""
        return self._append_record(entry.to_record(), durable)

    def append_request(self, *, at: datetime, client_id: str, agency_code: str, purpose: str | None, method: str,
                       path: str, asked: list[str], fields: list[str], record_keys: list[str], outcome: int,
                       detail: str = "", durable: bool = False) -> int:
        """``append(AuditEntry(...))`` with these fields, without making the entry: the same line,
        hash and number, for a caller on a hot path (the lookup API, once per request) that builds
        every field itself as an entry holds it: ``at`` aware, lists of strings, ``outcome`` an int.
        ``at`` is kept in UTC and ``detail`` cut at :data:`DETAIL_MAX`, as an entry does; the lists
        are written before this returns, so they are not copied."""
        return self._append_record(request_record(at, client_id, agency_code, purpose, method, path, asked, fields,
                                                  record_keys, outcome, detail), durable)

    def append_record(self, record: dict[str, object], *, durable: bool = False) -> int:
        """``append`` of an entry given as its record (:func:`request_record`, or
        :meth:`AuditEntry.to_record`, read back from JSON): what :mod:`hub.audit_writer` receives.
        ``record`` is taken over (it gains ``seq``, ``prev_hash`` and ``v``)."""
        return self._append_record(record, durable)

    def _append_record(self, record: dict[str, object], durable: bool) -> int:
        with self._lock:
            self._raise_if_unusable()
            seq = self._seq + 1
            digest, line = _seal(record, seq, self._hash)
            self._seq, self._hash = seq, digest
            self._pending.append(self._place(seq, digest, line))
            queued = len(self._pending)
            if queued == 1 and self._flush_interval:
                self._work.notify()
        if not self._flush_interval:
            self._commit()
        elif durable or queued >= self._max_pending:  # back-pressure: the disk is not keeping up
            self.wait_durable(seq)
        return seq

    def _place(self, seq: int, digest: str, line: bytes) -> _Pending:
        """Decide the segment of a line: a new one once the current one has reached segment_bytes."""
        if self._segment_size >= self._segment_bytes:
            self._segment_no, self._segment_size = self._segment_no + 1, 0
        self._segment_size += len(line)
        self._position += len(line)
        tip = _new_tuple(_Tip, (seq, digest, self._segment_no, self._segment_size, self._position))
        return _new_tuple(_Pending, (tip, line, seq % self._every == 0))

    def wait_durable(self, seq: int) -> None:
        """Block until entry ``seq`` is on disk; the flusher is hurried, and waiters share its fsync."""
        if self._flusher is None:  # no flusher to hurry: commit here
            with self._lock:
                self._raise_if_unusable(allow_closing=True)
            if self._durable.seq < seq:
                self._commit()
            return
        self._urgent.set()
        with self._lock:
            self._work.notify()
            while self._durable.seq < seq:
                self._raise_if_unusable(allow_closing=True)
                self._durable_changed.wait()

    def flush(self) -> None:
        """Write and fsync everything appended so far (no checkpoint)."""
        with self._lock:
            self._raise_if_unusable()
        self._commit()

    def checkpoint(self) -> None:
        """Flush, then sign a checkpoint at the last entry if it is not signed yet."""
        with self._lock:
            self._raise_if_unusable()
        self._commit(sign=True)

    def close(self) -> None:
        """Flush, sign a final checkpoint, stop the flusher and release the writer lock. Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._work.notify()
        self._urgent.set()
        if self._flusher is not None:
            self._flusher.join()
        try:
            if self._failure is None:
                self._commit(sign=True)
        finally:
            self._closed = True
            for fd in (self._fd, self._checkpoint_fd):
                try:
                    os.close(fd)
                except OSError:  # already closed by a failed rotation
                    pass
            self._writer_lock.release()
            atexit.unregister(self.close)
            with self._lock:
                self._durable_changed.notify_all()

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _raise_if_unusable(self, allow_closing: bool = False) -> None:
        if self._failure is not None:
            raise AuditLogFailed(f"the audit log failed and accepts no entries: {self._failure}") from self._failure
        if self._closed or (self._closing and not allow_closing):
            raise AuditLogError("the audit log is closed")

    # flushing ---------------------------------------------------------------------------------------

    def commit_due(self) -> float | None:
        """For a log opened with ``background=False``: write and fsync what is queued and sign the
        checkpoints that are due; the seconds until the next time-based checkpoint falls due (None:
        everything durable is signed)."""
        with self._lock:
            self._raise_if_unusable()
        self._commit()
        return self._time_to_checkpoint()

    def _run_flusher(self) -> None:
        """Background group commit: wait for work, gather for up to flush_interval, write, fsync, sign."""
        try:
            while self._wait_for_work():
                self._urgent.wait(self._flush_interval)
                self._commit()
        except BaseException as exc:  # noqa: BLE001 - recorded; every later append raises it
            self._fail(exc)

    def _wait_for_work(self) -> bool:
        with self._lock:
            while not self._pending and not self._closing:
                timeout = self._time_to_checkpoint()
                if timeout == 0:
                    break
                self._work.wait(timeout)
            return not self._closing

    def _time_to_checkpoint(self) -> float | None:
        if self._durable.seq <= self._signed_seq:
            return None
        return max(0.0, self._last_checkpoint_at + self._checkpoint_seconds - self._clock())

    def _commit(self, sign: bool = False) -> None:
        """Write and fsync what is queued, wake durable waiters, then sign what is due (with ``sign``,
        the last entry too)."""
        with self._io_lock:
            with self._lock:
                batch, self._pending = self._pending, []
                self._urgent.clear()
            try:
                if batch:
                    self.commits += 1
                    self._write_batch(batch)
                    self._mark_durable(batch[-1].tip)
                    due = [item.tip for item in batch if item.checkpoint]
                    if due:
                        self._write_checkpoints(due)
                if self._time_to_checkpoint() == 0 or (sign and self._durable.seq > self._signed_seq):
                    self._write_checkpoints([self._durable])
            except OSError as exc:
                self._fail(exc)
                raise AuditLogFailed(f"writing the audit log failed: {exc}") from exc

    def _write_batch(self, batch: list[_Pending]) -> None:
        chunk: list[bytes] = []
        for item in batch:
            if item.tip.segment != self._fd_segment:
                _write_all(self._fd, b"".join(chunk))
                chunk = []
                self._rotate(item.tip.segment)
            chunk.append(item.line)
        _write_all(self._fd, b"".join(chunk))
        self._fsync(self._fd)

    def _rotate(self, number: int) -> None:
        self._fsync(self._fd)
        os.close(self._fd)
        self._fd = os.open(self.directory / segment_name(number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._fd_segment = number
        _fsync_dir(self.directory)

    def _fsync(self, fd: int) -> None:
        os.fsync(fd)
        self.fsyncs += 1

    def _mark_durable(self, tip: _Tip) -> None:
        with self._lock:
            self._durable = tip
            self._durable_changed.notify_all()
        if self._on_durable is not None:
            self._on_durable(tip.seq)

    def _write_checkpoints(self, tips: list[_Tip]) -> None:
        """Append signed checkpoints at ``tips`` (already durable), then replace the signed head with the
        last. One fsync for all of them and one head per batch: under a burst the flusher would otherwise
        spend its time on checkpoint I/O and fall behind the appends."""
        lines, body = [], {}
        for n, tip in enumerate(tips, start=self._checkpoint_n + 1):
            body = {"n": n, "seq": tip.seq, "hash": tip.hash, "at": _now(), "key_id": self._key_id,
                    "segment": segment_name(tip.segment), "offset": tip.offset, "position": tip.position}
            lines.append(_canonical(_signed(self._key, {"kind": "checkpoint", **body})) + b"\n")
        _write_all(self._checkpoint_fd, b"".join(lines))
        self._fsync(self._checkpoint_fd)
        _atomic_write(self.directory / HEAD_FILE, _canonical(_signed(self._key, {"kind": "head", **body})) + b"\n")
        self._checkpoint_n, self._signed_seq, self._last_checkpoint_at = body["n"], body["seq"], self._clock()

    def _fail(self, exc: BaseException) -> None:
        log.error("the audit log failed; appends are refused until it is reopened: %s", exc)
        with self._lock:
            first = self._failure is None
            self._failure = self._failure or exc
            self._durable_changed.notify_all()
        if first and self._on_failure is not None:
            self._on_failure(exc)

    # opening ----------------------------------------------------------------------------------------

    def _take_writer_lock(self, timeout: float) -> FileLock:
        lock = FileLock(self.directory / LOCK_FILE, timeout=timeout, mode=0o600, thread_local=False,
                        fallback_to_soft=False)
        try:
            lock.acquire()
        except Timeout:
            raise AuditLogBusy(f"another process is writing the audit log in {self.directory}") from None
        return lock

    def _open(self) -> None:
        checkpoints = self.directory / CHECKPOINTS_FILE
        if checkpoints.exists():
            self._repair_torn(checkpoints, protected=0)
        self._checkpoint_fd = os.open(checkpoints, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if self._is_new():
                self._create()
            else:
                self._recover()
        except BaseException:
            os.close(self._checkpoint_fd)
            raise

    def _is_new(self) -> bool:
        empty = (self.directory / CHECKPOINTS_FILE).stat().st_size == 0
        return empty and not _segment_numbers(self.directory) and not (self.directory / HEAD_FILE).exists()

    def _create(self) -> None:
        """A new log: checkpoint 0 and its head first, then the first segment, so a log always has a head."""
        self._checkpoint_n = -1
        self._write_checkpoints([_Tip(0, GENESIS_HASH, 1, 0, 0)])
        self._open_tail(_Tip(0, GENESIS_HASH, 1, 0, 0))

    def _recover(self) -> None:
        """Continue an existing log from its last checkpoint, checking every entry after it."""
        try:
            last = self._last_checkpoint()
            self._reconcile_head(last)
            tip = self._recover_tail(last)
        except _Found as found:
            raise AuditLogCorrupt(f"{self.directory}: {found.problem.message}; run `hub audit verify`") from None
        self._checkpoint_n, self._signed_seq, self._last_checkpoint_at = last["n"], last["seq"], self._clock()
        self._open_tail(tip)

    def _open_tail(self, tip: _Tip) -> None:
        self._seq, self._hash = tip.seq, tip.hash
        self._segment_no = self._fd_segment = tip.segment
        self._segment_size, self._position = tip.offset, tip.position
        self._durable = tip
        path = self.directory / segment_name(tip.segment)
        created = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if created:
            _fsync_dir(self.directory)

    def _last_checkpoint(self) -> dict:
        path = self.directory / CHECKPOINTS_FILE  # its torn last line, if any, is repaired already
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 65536))
            lines = f.read().splitlines()
        if not lines:
            raise _found("missing_checkpoint", f"{CHECKPOINTS_FILE} is empty but the log has entries")
        last = _parse_checkpoint(_Line(path.name, 0, path.stat().st_size, lines[-1] + b"\n"))
        if not _signature_ok(self.public_key, last):
            raise _found("bad_signature", f"the last checkpoint (n={last['n']}) does not verify with this signing "
                         f"key (id {self._key_id}): a wrong HUB_AUDIT_SIGNING_KEY, or tampering")
        return last

    def _reconcile_head(self, last: dict) -> None:
        """A head one checkpoint behind is a crash between the two writes: rewrite it. Ahead: tampering."""
        head = _read_json_file(self.directory / HEAD_FILE)
        if head is not None and not (head.get("kind") == "head" and _signature_ok(self.public_key, head)):
            raise _found("bad_signature", f"{HEAD_FILE} does not verify with this signing key (id {self._key_id})")
        if head is None and last["n"] > 0:
            raise _found("missing_head", f"{HEAD_FILE} is missing")
        if head is not None and head.get("n", -1) > last["n"]:
            raise _found("truncated", f"{HEAD_FILE} is checkpoint n={head['n']}, but {CHECKPOINTS_FILE} ends at "
                         f"n={last['n']}")
        if head is not None and head.get("n") == last["n"] and (head.get("seq"), head.get("hash")) != (
                last["seq"], last["hash"]):
            raise _found("malformed", f"{HEAD_FILE} disagrees with checkpoint n={last['n']}")
        if head is None or head.get("n") != last["n"]:
            body = {k: v for k, v in last.items() if k not in ("kind", "sig")}
            _atomic_write(self.directory / HEAD_FILE, _canonical(_signed(self._key, {"kind": "head", **body})) + b"\n")
            log.warning("audit head.json lagged checkpoint n=%s (a crash between the two writes); rewritten", last["n"])

    def _recover_tail(self, last: dict) -> _Tip:
        start = _SEGMENT_RE.fullmatch(str(last["segment"]))
        if not start:
            raise _found("malformed", f"the last checkpoint names no segment ({last['segment']!r})")
        first, numbers = int(start.group(1)), _segment_numbers(self.directory)
        tail = [n for n in numbers if n >= first]
        if not tail and last["seq"] == 0:
            return _Tip(0, GENESIS_HASH, first, 0, 0)  # a crash before the first segment was created
        if tail != list(range(first, first + len(tail))) or not tail:
            raise _found("removed", f"segments after the last checkpoint are missing (found {numbers})")
        self._repair_torn(self.directory / segment_name(tail[-1]), protected=last["offset"] if len(tail) == 1 else 0)
        return self._walk_tail(tail, last)

    def _walk_tail(self, numbers: list[int], last: dict) -> _Tip:
        seq, digest, position, previous = last["seq"], last["hash"], last["position"], None
        for number in numbers:
            path = self.directory / segment_name(number)
            begin = last["offset"] if number == numbers[0] else 0
            self._check_checkpoint_position(path, begin, last)
            end = begin
            for line in _lines(path, begin):
                digest = _check_link(line, seq + 1, digest, previous)
                seq, end, position, previous = seq + 1, line.end, position + len(line.data), line
        return _Tip(seq, digest, numbers[-1], end, position)

    def _check_checkpoint_position(self, path: Path, offset: int, last: dict) -> None:
        if offset == 0:
            return
        with open(path, "rb") as f:
            f.seek(offset - 1)
            before = f.read(1)
        if before != b"\n":
            raise _found("truncated", f"{path.name} no longer holds seq {last['seq']} where checkpoint n={last['n']} "
                         f"signed it (byte {offset})")

    def _repair_torn(self, path: Path, protected: int) -> None:
        """Truncate a torn last line (a write cut short by a crash), after noting it and its bytes. A tear
        before ``protected`` would cut into signed entries: that is refused, not repaired."""
        torn = _torn_tail(path)
        if torn is None:
            return
        keep, data = torn
        if keep < protected:
            raise AuditLogCorrupt(f"{path}: the last line is torn inside signed entries (before byte {protected}); "
                                  "run `hub audit verify`")
        repair = Repair(path.name, _line_count(path, keep) + 1, keep, len(data))
        note = {"at": _now(), "file": repair.file, "line": repair.line, "offset": keep, "length": len(data),
                "sha256": hashlib.sha256(data).hexdigest(), "bytes": base64.b64encode(data).decode("ascii")}
        repairs = os.open(self.directory / REPAIRS_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            _write_all(repairs, _canonical(note) + b"\n")
            os.fsync(repairs)
        finally:
            os.close(repairs)
        os.truncate(path, keep)
        fd = os.open(path, os.O_WRONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        log.warning("audit log: torn last line of %s (line %s, %s bytes) truncated after a crash; noted in %s",
                    repair.file, repair.line, repair.length, REPAIRS_FILE)
        self.repairs.append(repair)


# --- verify ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of :func:`verify`: counts, the first problem if any, and notes that are not problems."""

    entries: int
    checkpoints: int
    problem: Problem | None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem is None:
            return f"{self.entries} entries, {self.checkpoints} checkpoints, chain intact"
        return self.problem.message


def verify(directory: Path, public_key: Ed25519PublicKey) -> VerifyReport:
    """Walk the whole chain and every checkpoint; report the first problem precisely. Safe to run while a
    writer appends: a torn last line is then taken for the write in progress it is."""
    return _Verifier(Path(directory), public_key).run()


class _Verifier:
    def __init__(self, directory: Path, public_key: Ed25519PublicKey) -> None:
        self.directory, self.public_key, self.key_id = directory, public_key, key_id(public_key)
        self.checkpoints: dict[int, tuple[dict, _Line]] = {}
        self.entries = self.position = 0
        self.notes: list[str] = []
        self.torn: list[_Line] = []
        self.live = _writer_active(directory) if directory.is_dir() else False

    def run(self) -> VerifyReport:
        try:
            head = self._check_head()
            last = self._check_checkpoints(head)
            end = self._walk()
            self._check_end(end, max(last, (head["seq"], f"the signed {HEAD_FILE}"), key=lambda t: t[0]))
            self._check_torn()
        except _Found as found:
            return VerifyReport(self.entries, len(self.checkpoints), found.problem, tuple(self.notes))
        self._add_notes(end)
        return VerifyReport(self.entries, len(self.checkpoints), None, tuple(self.notes))

    # signed files -----------------------------------------------------------------------------------

    def _check_head(self) -> dict:
        head = _read_json_file(self.directory / HEAD_FILE)
        if head is None:
            if not _segment_numbers(self.directory) and not (self.directory / CHECKPOINTS_FILE).exists():
                raise _found("empty", f"no audit log in {self.directory}")
            raise _found("missing_head", f"{HEAD_FILE} is missing: the signed head was removed")
        if head.get("kind") != "head" or not all(isinstance(head.get(k), int) for k in ("n", "seq")):
            raise _found("malformed", f"{HEAD_FILE} is not a signed head")
        self._check_signature(head, HEAD_FILE)
        return head

    def _check_signature(self, record: dict, where: str) -> None:
        if _signature_ok(self.public_key, record):
            return
        what = f"{where} (checkpoint n={record.get('n')}, seq {record.get('seq')})"
        if record.get("key_id") != self.key_id:
            raise _found("wrong_key", f"wrong public key: {what} was signed by key {record.get('key_id')}, "
                         f"the public key given is {self.key_id}", seq=record.get("seq"))
        raise _found("bad_signature", f"bad signature: {what} does not verify with public key {self.key_id}",
                     seq=record.get("seq"))

    def _check_checkpoints(self, head: dict) -> tuple[int, str]:
        """Every checkpoint signed, numbered 0, 1, 2 … with rising seq; returns (seq, name) of the last."""
        path, last = self.directory / CHECKPOINTS_FILE, None
        for line in _lines(path) if path.exists() else ():
            if not line.complete:
                self.torn.append(line)
                break
            last = self._check_checkpoint(_parse_checkpoint(line), line, last)
        if last is None:
            raise _found("missing_checkpoint", f"{CHECKPOINTS_FILE} is missing or empty: checkpoint 0 was removed")
        self._check_head_against(head, last)
        return last["seq"], f"checkpoint n={last['n']}"

    def _check_checkpoint(self, record: dict, line: _Line, last: dict | None) -> dict:
        expected = 0 if last is None else last["n"] + 1
        if record["n"] != expected:
            raise _found("missing_checkpoint", f"{line.where} is checkpoint n={record['n']}, n={expected} was expected:"
                         " checkpoints were removed, inserted or reordered", line, record["seq"])
        if (last is None and (record["seq"], record.get("hash")) != (0, GENESIS_HASH)) or (
                last is not None and record["seq"] <= last["seq"]):
            raise _found("malformed", f"{line.where}: checkpoint n={record['n']} at seq {record['seq']} does not "
                         "follow the one before it", line, record["seq"])
        self._check_signature(record, line.where)
        self.checkpoints[record["seq"]] = (record, line)
        return record

    def _check_head_against(self, head: dict, last: dict) -> None:
        if head["n"] > last["n"]:
            raise _found("truncated", f"truncated checkpoints: {CHECKPOINTS_FILE} ends at checkpoint n={last['n']} "
                         f"(seq {last['seq']}), but the signed {HEAD_FILE} is checkpoint n={head['n']} at seq "
                         f"{head['seq']}: checkpoints were removed from the end", seq=head["seq"])
        twin = next((r for r, _ in self.checkpoints.values() if r["n"] == head["n"]), None)
        if twin is None or (twin["seq"], twin.get("hash")) != (head["seq"], head.get("hash")):
            raise _found("malformed", f"the signed {HEAD_FILE} (n={head['n']}, seq {head['seq']}) disagrees with "
                         f"checkpoint n={head['n']} in {CHECKPOINTS_FILE}", seq=head["seq"])
        if head["n"] < last["n"] - 1 and not self.live:  # a live writer may have signed more since head was read
            raise _found("malformed", f"the signed {HEAD_FILE} is checkpoint n={head['n']}, older than the last "
                         f"checkpoint n={last['n']} by more than a crash can explain: it was put back")
        if head["n"] < last["n"]:
            self.notes.append(f"{HEAD_FILE} lags the last checkpoint (a write in progress, or a crash between the "
                              "two writes, which the writer repairs on open)")

    # entries ----------------------------------------------------------------------------------------

    def _walk(self) -> tuple[int, _Line | None]:
        """Every entry of every segment in order; returns the last seq and the line it is on."""
        numbers = _segment_numbers(self.directory)
        if numbers and numbers != list(range(1, len(numbers) + 1)):
            missing = next(n for n in range(1, numbers[-1] + 1) if n not in numbers)
            raise _found("removed", f"removed segment: {segment_name(missing)} is missing (found "
                         f"{', '.join(segment_name(n) for n in numbers)})")
        seq, digest, previous = 0, GENESIS_HASH, None
        for number in numbers:
            for line in _lines(self.directory / segment_name(number)):
                if not line.complete and number == numbers[-1]:
                    self.torn.append(line)
                    break
                digest = _check_link(line, seq + 1, digest, previous)
                seq, previous = seq + 1, line
                self.entries, self.position = self.entries + 1, self.position + len(line.data)
                self._check_against_checkpoint(seq, digest, line)
        return seq, previous

    def _check_against_checkpoint(self, seq: int, digest: str, line: _Line) -> None:
        found = self.checkpoints.get(seq)
        if found is None or found[0]["hash"] == digest:
            return
        record, _ = found
        before = max((s for s in self.checkpoints if s < seq), default=0)
        raise _found("rewritten", f"rewritten chain: signed checkpoint n={record['n']} says seq {seq} has hash "
                     f"{record['hash'][:12]}…, the log has {digest[:12]}… ({line.where}); the entries after seq "
                     f"{before} (checkpoint n={self.checkpoints[before][0]['n']}, which matches) were altered, "
                     f"inserted or removed and the hashes recomputed{_size_hint(record['position'], self.position)}",
                     line, seq)

    def _check_end(self, end: tuple[int, _Line | None], signed: tuple[int, str]) -> None:
        last_seq, line = end
        target, source = signed
        if last_seq >= target:
            return
        where = f" ({line.where})" if line else ""
        torn = " and its last line is torn" if self.torn else ""
        span = f"seq {target}" if target == last_seq + 1 else f"seq {last_seq + 1}..{target}"
        raise _found("truncated", f"truncated tail: the log ends at seq {last_seq}{where}{torn}, but {source} says "
                     f"the chain reached seq {target}: {span} removed from the end", line, last_seq + 1)

    def _check_torn(self) -> None:
        for line in self.torn:
            if self.live:
                self.notes.append(f"the last line of {line.file} is being written (a writer holds the lock)")
                continue
            raise _Found(Problem("torn", f"crash, not tampering: the last line of {line.file} (line {line.number}, "
                                 f"{len(line.data)} bytes) is half-written, a write cut short by a crash; opening the "
                                 f"log with AuditLog truncates it and notes it in {REPAIRS_FILE}",
                                 None, line.file, line.number, tampering=False))

    def _add_notes(self, end: tuple[int, _Line | None]) -> None:
        signed = max(self.checkpoints)
        if end[0] > signed:
            self.notes.append(f"{end[0] - signed} entries after the last checkpoint (seq {signed}) are not signed yet")
        repairs = self.directory / REPAIRS_FILE
        if repairs.exists():
            count = sum(1 for _ in _lines(repairs))
            self.notes.append(f"{count} torn line(s) were repaired on open after a crash (see {REPAIRS_FILE})")


def _size_hint(signed: int, now: int) -> str:
    """How many entry bytes precede the checkpointed entry now, against when it was signed: a hint only,
    since removing one of many lines of equal length and renumbering leaves the count unchanged."""
    if now > signed:
        return f"; the log holds {now - signed} bytes more up to there than when signed (inserted, or lengthened)"
    if now < signed:
        return f"; the log holds {signed - now} bytes fewer up to there than when signed (removed, or shortened)"
    return ""


# --- subject ---------------------------------------------------------------------------------------


def subject(directory: Path, key: str) -> list[AuditEntry]:
    """Who looked at a person's (or an enterprise's) data and why: every entry where ``key`` was asked
    for or returned, oldest first. It reads without verifying; run :func:`verify` for that."""
    directory, needle, found = Path(directory), orjson.dumps(key), []
    for number in _segment_numbers(directory):
        for line in _lines(directory / segment_name(number)):
            if needle not in line.data or not line.complete:  # a cheap byte test before parsing
                continue
            try:
                record = orjson.loads(line.data)
            except orjson.JSONDecodeError:
                raise AuditLogCorrupt(f"{line.where} is not valid JSON; run `hub audit verify`") from None
            if key in record.get("asked", ()) or key in record.get("record_keys", ()):
                found.append(AuditEntry.from_record(record))
    return found
