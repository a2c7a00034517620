"""The audit log written by a process of its own: what the lookup API appends to.

Why: in the serving process, sealing each entry into the chain (canonical JSON, SHA-256, the chain's
lock) and the group-commit flusher thread, which competes with the event loop for the interpreter
lock, cost about 12 µs per lookup, a third of the direct path's ``GET /v1/citizens/{id}``
(``bench/lookup.py``). :class:`AuditLogProcess` keeps in the serving process only what must be there:
it numbers an entry and queues its values (a tuple); the entries queued on an event loop are
rendered as one JSON line (one orjson call for the batch, a fraction of rendering each entry) and
go to a child process in one pipe write per ``flush_interval`` (outside a loop, and for a durable
append, at once). The child (:func:`_child_main`, in ``python -c``: the module may be compiled,
and ``-m`` runs only a source module) runs an ordinary
:class:`hub.audit_log.AuditLog` on the directory (the same lines, hashes, checkpoints, crash
recovery and writer lock) in an interpreter of its own, commits in groups from its one thread (no
flusher thread to compete with), and reports what is on disk: at once to a caller that waits, else
at most every :data:`REPORT_INTERVAL`.

What a caller is promised is what :class:`AuditLog` promises:

- ``append`` returns the entry's sequence number, the one it gets in the chain (the child refuses,
  and the log fails, if an entry would get another);
- an entry is queued before ``append`` returns, so before the answer it records leaves, and it is
  durable within the group-commit window: ``flush_interval`` (the send; twice it at worst, when the
  child has just committed) plus one fsync. The child commits what it receives at most once per
  ``flush_interval``, and is not starved by the serving process's Python code as the flusher thread
  was inside it (there the window grew to about 100 ms under load). A crash of the serving process
  can lose the entries of that window, as it could lose the in-process queue;
- ``append(entry, durable=True)`` returns once the child reported the entry on disk (waiters share
  its fsync), ``flush_interval=0`` makes every append durable, and :meth:`~AuditLogProcess.flush`,
  :meth:`~AuditLogProcess.checkpoint` and :meth:`~AuditLogProcess.close` act on everything
  appended before them;
- fail closed: once the child reports a failed write or fsync, or exits, every later append raises
  :class:`AuditLogFailed` (and durable waiters are woken with it), so that the API answers 503
  rather than serve unlogged.

The signing key goes to the child over its stdin pipe, never on a command line or in the environment.
"""

from __future__ import annotations

import atexit
import base64
import fcntl
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from asyncio import AbstractEventLoop
from asyncio import _get_running_loop  # the loop of this thread or None, without raising
from datetime import UTC, datetime
from pathlib import Path
from threading import get_ident
from typing import Mapping

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hub.audit_log import (DEFAULT_FLUSH_INTERVAL, DEFAULT_SEGMENT_BYTES, DETAIL_MAX, AuditEntry, AuditLog,
                           AuditLogBusy, AuditLogCorrupt, AuditLogError, AuditLogFailed, AuditSettings, _iso, _scrub,
                           _write_all, cut_detail, utc_moment)
from hub.config import ConfigError

log = logging.getLogger(__name__)

#: How long entries queued on an event loop wait, at most, to be sent together (by default the
#: ``flush_interval``: the child commits at most once per interval anyway). Waking the child costs the
#: writer 13-25 µs per write on the development machine (1 µs when it is awake), and the child's own
#: wake-ups cost more: one write per interval rather than per pass of the loop.
MAX_SEND_DELAY = 0.005
#: How often, at most, the child reports what is on disk when no caller waits for it (a durable
#: append, ``flush``, ``checkpoint``: those are answered at once). Each report wakes the serving
#: process's reporting thread, which then takes the interpreter lock from the event loop; once per
#: commit (200 times a second under load) that hand-over cost the loop more than the entries' sending.
REPORT_INTERVAL = 0.1
_UTC_Z = orjson.OPT_UTC_Z
_PIPE_BYTES = 1 << 20  # asked of the kernel for the entries pipe: room for a burst without blocking the loop
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
#: What the writer process runs.
_CHILD = "import sys; from hub.audit_writer import _child_main; sys.exit(_child_main())"
_ERRORS = {"busy": AuditLogBusy, "corrupt": AuditLogCorrupt, "config": ConfigError}


class AuditLogProcess:
    """An :class:`AuditLog` on ``directory`` run by a child process; the same appending interface
    (``append``, ``append_request``, ``flush``, ``checkpoint``, ``close``, ``last_seq``,
    ``durable_seq``, ``public_key``). Opening waits until the child has the writer lock and has
    checked the chain: the same errors as :class:`AuditLog` (:class:`AuditLogBusy`,
    :class:`AuditLogCorrupt`, :class:`hub.config.ConfigError`) are raised here."""

    def __init__(self, directory: Path, signing_key: Ed25519PrivateKey | None = None,
                 checkpoint_every: int = 1000, *, flush_interval: float = DEFAULT_FLUSH_INTERVAL,
                 checkpoint_seconds: float = 60.0, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 lock_timeout: float = 10.0, start_timeout: float = 60.0, send_delay: float | None = None,
                 report_interval: float = REPORT_INTERVAL) -> None:
        if checkpoint_every < 1 or flush_interval < 0 or segment_bytes < 1:
            raise ValueError("checkpoint_every and segment_bytes must be positive, flush_interval not negative")
        self.directory = Path(directory)
        self._every_append_durable = flush_interval == 0
        self._send_delay = max(0.0, min(flush_interval, MAX_SEND_DELAY) if send_delay is None else send_delay)
        self._lock = threading.Lock()  # numbering, the queue, the reported state
        self._send_lock = threading.Lock()  # the pipe: batches go in the order they were numbered
        self._changed = threading.Condition(self._lock)
        self._queue: list[tuple] = []  # entries numbered and not sent yet, in order
        self._scheduled: AbstractEventLoop | None = None  # the loop a send is scheduled on
        self._scheduled_by = 0  # the thread that runs it
        self._durable = 0
        self._done: set[int] = set()
        self._requests = 0
        self._failure: BaseException | None = None
        self._closing = self._closed = self._ended = self._input_closed = False
        key = None
        if signing_key is not None:
            raw = signing_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                            serialization.NoEncryption())
            key = base64.b64encode(raw).decode("ascii")
        config = {"directory": str(self.directory), "key": key, "checkpoint_every": checkpoint_every,
                  "flush_interval": flush_interval, "checkpoint_seconds": checkpoint_seconds,
                  "segment_bytes": segment_bytes, "lock_timeout": lock_timeout, "report_interval": report_interval}
        self._child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, bufsize=0, close_fds=True)
        self._in, self._out = self._child.stdin.fileno(), self._child.stdout.fileno()
        try:
            fcntl.fcntl(self._in, _F_SETPIPE_SZ, _PIPE_BYTES)
        except OSError:  # a smaller pipe only means back-pressure sooner
            pass
        self._lines = _Lines(self._out)
        try:
            _write_all(self._in, orjson.dumps(config) + b"\n")
            ready = self._lines.next(timeout=start_timeout)
        except (OSError, TimeoutError) as exc:
            self._abandon()
            raise AuditLogError(f"the audit writer process for {self.directory} did not start: {exc}") from None
        if ready is None or "ready" not in ready:
            self._abandon()
            message = (ready or {}).get("error") or f"the audit writer process for {self.directory} exited at start"
            raise _ERRORS.get((ready or {}).get("kind"), AuditLogError)(message)
        self._seq = self._sent = self._durable = ready["ready"]
        self._public_key = serialization.load_pem_public_key(ready["public_key"].encode("ascii"))
        self._reader = threading.Thread(target=self._read_reports, name="audit-writer-reports", daemon=True)
        self._reader.start()
        atexit.register(self.close)

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None, **options) -> "AuditLogProcess":
        """The log configured by the ``HUB_AUDIT_…`` variables, as :meth:`AuditLog.from_settings`."""
        settings = AuditSettings.from_env(environ)
        options.setdefault("flush_interval", settings.flush_interval)
        return cls(settings.directory, settings.signing_key(), settings.checkpoint_every, **options)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._public_key

    @property
    def pid(self) -> int:
        """The writer process's id (for monitoring: its CPU is the audit log's)."""
        return self._child.pid

    @property
    def last_seq(self) -> int:
        """The last sequence number handed out (durable or not)."""
        return self._seq

    @property
    def durable_seq(self) -> int:
        """The last sequence number the child reported on disk (up to ``report_interval`` behind it,
        and exact once a durable append, :meth:`flush` or :meth:`checkpoint` returns)."""
        return self._durable

    # appending --------------------------------------------------------------------------------------

    def append(self, entry: AuditEntry, *, durable: bool = False) -> int:
        """:meth:`AuditLog.append`: queue ``entry``; its sequence number."""
        return self._enqueue((entry.at, entry.client_id, entry.agency_code, entry.purpose, entry.method, entry.path,
                              entry.asked, entry.fields, entry.record_keys, entry.outcome, entry.detail), durable)

    def append_request(self, *, at: datetime, client_id: str, agency_code: str, purpose: str | None, method: str,
                       path: str, asked: list[str], fields: list[str], record_keys: list[str], outcome: int,
                       detail: str = "", durable: bool = False) -> int:
        """:meth:`AuditLog.append_request`: the same entry as ``append(AuditEntry(...))``, without
        making the entry: this is once per lookup. Its values are queued as they are and rendered
        with the rest of the batch when it is sent (one orjson call for the batch), so the lists
        must not change after this returns (the caller's are made for the request)."""
        if at.tzinfo is not UTC:
            at = utc_moment(at)
        if len(detail) > DETAIL_MAX:
            detail = cut_detail(detail)
        return self._enqueue((at, client_id, agency_code, purpose, method, path, asked, fields, record_keys,
                              outcome, detail), durable)

    def _enqueue(self, values: tuple, durable: bool) -> int:
        """Number the entry whose members, in :data:`ENTRY_MEMBERS` order, are ``values`` and queue it."""
        durable = durable or self._every_append_durable
        with self._lock:
            if self._failure is not None or self._closing:  # closed or ended imply one of the two
                self._raise_if_unusable()
            self._queue.append(values)
            seq = self._seq = self._seq + 1
            now = durable
            scheduled = self._scheduled
            # the usual case, decided without asking for the running loop (that costs a getpid system
            # call each time): a send is pending on the loop this thread is running, which is then
            # the loop of this call (a thread runs one loop at a time)
            if not now and (scheduled is None or self._scheduled_by != get_ident() or not scheduled.is_running()):
                loop = _get_running_loop()
                if loop is None or (scheduled is not None and scheduled is not loop):
                    now = True  # no loop (a thread, a script), or another loop's send pending: send it all now
                elif scheduled is None:
                    self._scheduled, self._scheduled_by = loop, get_ident()
                    loop.call_later(self._send_delay, self._send)
        if now:
            self._send([b'["sync",%d]\n' % seq] if durable else [])
        if durable:
            self.wait_durable(seq)
        return seq

    def _send(self, commands: list[bytes] | None = None) -> None:
        """Render the queued entries as one line, and write it (then ``commands``) to the child in one write."""
        with self._send_lock:
            with self._lock:
                batch, self._queue, self._scheduled = self._queue, [], None
                first, self._sent = self._sent + 1, self._sent + len(batch)
            if self._input_closed:  # closed: everything numbered went before (see close)
                return
            try:
                chunks = [_batch_line(first, batch)] if batch else []
                chunks.extend(commands or ())
                if chunks:
                    _write_all(self._in, b"".join(chunks))
            except OSError as exc:
                self._fail(AuditLogFailed(f"the audit writer process cannot be reached: {exc}"))
            except Exception as exc:  # noqa: BLE001 - an entry that cannot be rendered: fail closed
                self._fail(AuditLogFailed(f"an audit entry could not be rendered: {exc!r}"))

    def wait_durable(self, seq: int) -> None:
        """Block until the child reported entry ``seq`` on disk."""
        with self._lock:
            while self._durable < seq:
                self._raise_if_unusable(allow_closing=True)
                self._changed.wait()

    def flush(self) -> None:
        """Everything appended so far written and fsynced (no checkpoint)."""
        self._request("flush")

    def checkpoint(self) -> None:
        """Flush, then sign a checkpoint at the last entry if it is not signed yet."""
        self._request("checkpoint")

    def _request(self, command: str) -> None:
        with self._lock:
            self._raise_if_unusable()
            self._requests += 1
            number = self._requests
        self._send([orjson.dumps([command, number]) + b"\n"])
        with self._lock:
            while number not in self._done:
                self._raise_if_unusable()
                self._changed.wait()
            self._done.discard(number)

    def close(self, timeout: float = 60.0) -> None:
        """Send what is queued, let the child flush, sign a final checkpoint and release the directory,
        and wait for it to exit. Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        try:
            if self._failure is None:
                self._send([b'["close",0]\n'])
            with self._send_lock:  # no write after this one: the descriptor may be reused once closed
                self._input_closed = True
                self._child.stdin.close()  # end of input: the child closes the log even without the command
            self._reader.join(timeout)
            status = self._child.wait(timeout)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
            raise AuditLogFailed(f"the audit writer process for {self.directory} did not finish closing "
                                 f"within {timeout} s; it was killed") from None
        finally:
            with self._lock:
                self._closed = True
                self._changed.notify_all()
            atexit.unregister(self.close)
        if status != 0 and self._failure is None:
            raise AuditLogFailed(f"the audit writer process for {self.directory} exited with status {status}")

    def __enter__(self) -> "AuditLogProcess":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AuditLogProcess({str(self.directory)!r}, pid={self._child.pid})"

    # the child's reports ----------------------------------------------------------------------------

    def _read_reports(self) -> None:
        """The reporting thread: it wakes once per report of the child, not per entry or commit."""
        try:
            while (report := self._lines.next()) is not None:
                if "durable" in report:
                    with self._lock:
                        self._durable = max(self._durable, report["durable"])
                        self._changed.notify_all()
                elif "done" in report:
                    with self._lock:
                        self._done.add(report["done"])
                        self._changed.notify_all()
                elif "failed" in report:
                    self._fail(AuditLogFailed(f"the audit log failed and accepts no entries: {report['failed']}"))
        except (OSError, ValueError) as exc:
            self._fail(AuditLogFailed(f"the audit writer process's reports cannot be read: {exc}"))
        finally:
            if not self._closing:
                self._fail(AuditLogFailed(f"the audit writer process for {self.directory} exited"))
            with self._lock:
                self._ended = True
                self._changed.notify_all()

    def _fail(self, exc: AuditLogFailed) -> None:
        with self._lock:
            first = self._failure is None
            self._failure = self._failure or exc
            self._changed.notify_all()
        if first:
            log.error("%s; appends are refused until the service restarts", exc)

    def _raise_if_unusable(self, allow_closing: bool = False) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed or self._ended or (self._closing and not allow_closing):
            raise AuditLogError("the audit log is closed")

    def _abandon(self) -> None:
        try:
            self._child.stdin.close()
        except OSError:
            pass
        try:
            self._child.wait(10)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()


#: The members of an entry, in the order the serving process sends their values (the line's members
#: are written sorted: :func:`hub.audit_log._canonical`).
ENTRY_MEMBERS = ("at", "client_id", "agency_code", "purpose", "method", "path", "asked", "fields", "record_keys",
                 "outcome", "detail")


def _batch_line(first: int, batch: list[tuple]) -> bytes:
    """The line that hands ``batch`` (the values of entries ``first``, ``first + 1``, …) to the child;
    ``at`` is a UTC datetime (``…Z``)."""
    try:
        return orjson.dumps({"first": first, "entries": batch}, option=_UTC_Z) + b"\n"
    except orjson.JSONEncodeError:  # a lone surrogate: escaped as the log's canonical JSON escapes it
        return orjson.dumps({"first": first, "entries": [_scrub(list(values)) for values in batch]},
                            option=_UTC_Z) + b"\n"


def _at_text(text: str) -> str:
    """``at`` as the log writes it (:func:`hub.audit_log._iso`): orjson leaves out a zero fraction."""
    if len(text) == 27:  # yyyy-mm-ddThh:mm:ss.ffffffZ, already the same text
        return text
    return _iso(datetime.fromisoformat(text))


class _Lines:
    """JSON lines read from a pipe in large chunks."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer, self.lines = fd, b"", []

    def next(self, timeout: float | None = None) -> dict | list | None:
        """The next line's value; None at end of file; TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.lines:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise TimeoutError(f"no answer within {timeout} s")
            values = self.available(wait)
            if values is None:
                return None
            self.lines = values[::-1]
        return self.lines.pop()

    def available(self, timeout: float | None = None) -> list | None:
        """The values of the complete lines that one read brings (waiting up to ``timeout`` seconds
        for it; [] when none came), or None at end of file."""
        if timeout is not None and not select.select([self.fd], [], [], max(0.0, timeout))[0]:
            return []
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            return None
        *complete, self.buffer = (self.buffer + chunk).split(b"\n")
        return [orjson.loads(line) for line in complete if line]


# --- the child -------------------------------------------------------------------------------------


def _report(message: dict[str, object]) -> None:
    """One line to the serving process (the child's stdout)."""
    _write_all(1, orjson.dumps(message) + b"\n")


class _DurableReports:
    """The child's reports of the last entry on disk: noted after each commit, sent at most once per
    ``interval`` (:data:`REPORT_INTERVAL`) unless :meth:`send` is called for a caller that waits."""

    def __init__(self, interval: float) -> None:
        self.interval, self.sent_at, self.seq, self.pending = interval, float("-inf"), 0, False

    def note(self, seq: int) -> None:
        self.seq, self.pending = seq, True
        if time.monotonic() >= self.sent_at + self.interval:
            self.send()

    def due(self) -> float | None:
        """When the pending report is to go (None: none is pending)."""
        return self.sent_at + self.interval if self.pending else None

    def send(self) -> None:
        if self.pending:
            _report({"durable": self.seq})
            self.sent_at, self.pending = time.monotonic(), False


def _child_main() -> int:
    """The writer process (:data:`_CHILD`): one log, fed on stdin (a config line, then entry records and
    commands), reporting on stdout (ready, durable seqs, done, failed)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the serving process decides when the log closes
    logging.basicConfig(level=logging.WARNING, format="audit writer: %(levelname)s %(message)s")
    lines = _Lines(0)
    try:
        config = lines.next()
    except ValueError:
        config = "unreadable"
    if config is None:
        return 0
    if not isinstance(config, dict) or not {"directory", "key", "flush_interval"} <= config.keys():
        sys.stderr.write("hub.audit_writer: the first line of input must be the configuration that "
                         "hub.audit_writer.AuditLogProcess sends; this process is started by it, not by hand\n")
        return 2
    reports = _DurableReports(config.get("report_interval", REPORT_INTERVAL))
    try:
        key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(config["key"])) if config["key"] else None
        audit = AuditLog(Path(config["directory"]), key, config["checkpoint_every"],
                         flush_interval=config["flush_interval"], checkpoint_seconds=config["checkpoint_seconds"],
                         segment_bytes=config["segment_bytes"], lock_timeout=config["lock_timeout"],
                         on_durable=reports.note,
                         on_failure=lambda exc: _report({"failed": str(exc)}), background=False)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        kind = ("busy" if isinstance(exc, AuditLogBusy) else "corrupt" if isinstance(exc, AuditLogCorrupt)
                else "config" if isinstance(exc, ConfigError) else "other")
        _report({"error": f"{exc}", "kind": kind})
        return 1
    public = audit.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _report({"ready": audit.last_seq, "public_key": public.decode("ascii")})
    try:
        _serve_log(audit, lines, config["flush_interval"], reports)
    except AuditLogError as exc:
        _report({"failed": str(exc)})
        audit.close()
        return 1
    audit.close()
    return 0


def _serve_log(audit: AuditLog, lines: _Lines, flush_interval: float, reports: _DurableReports) -> None:
    """The child's one thread: take what arrives and commit it in groups, at most one commit per
    ``flush_interval`` (an entry that arrives after a quiet spell is committed at once, one that
    arrives sooner waits for the rest of the interval), along with the checkpoints that fall due,
    and report what is on disk, until ``close`` or the end of its input."""
    last_commit = float("-inf")
    waiting = False  # entries appended and not committed yet
    checkpoint_at: float | None = None  # when a time-based checkpoint falls due
    while True:
        due = [t for t in (last_commit + flush_interval if waiting else None, checkpoint_at, reports.due())
               if t is not None]
        items = lines.available(max(0.0, min(due) - time.monotonic()) if due else None)
        if items is None:
            return
        commit = False
        for item in items:
            if isinstance(item, dict):
                if item["first"] != audit.last_seq + 1:
                    raise AuditLogFailed(f"entries numbered from {item['first']} by the serving process, but the "
                                         f"chain is at seq {audit.last_seq}")
                for values in item["entries"]:
                    record = dict(zip(ENTRY_MEMBERS, values))
                    record["at"] = _at_text(record["at"])
                    audit.append_record(record)  # with flush_interval 0 the log commits it at once
                waiting = bool(flush_interval)
                continue
            command, number = item
            if command == "close":
                return
            commit = True
            if command == "sync":
                audit.wait_durable(number)
                reports.send()
            elif command in ("flush", "checkpoint"):
                audit.flush() if command == "flush" else audit.checkpoint()
                reports.send()
                _report({"done": number})
        now = time.monotonic()
        if commit or (waiting and now >= last_commit + flush_interval) or (
                checkpoint_at is not None and now >= checkpoint_at):
            wait = audit.commit_due()
            last_commit, waiting = time.monotonic(), False
            checkpoint_at = None if wait is None else last_commit + wait
        if (report_at := reports.due()) is not None and time.monotonic() >= report_at:
            reports.send()


if __name__ == "__main__":
    sys.exit(_child_main())
