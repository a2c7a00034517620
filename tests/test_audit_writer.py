"""The audit log written by a process of its own (:class:`hub.audit_writer.AuditLogProcess`): the same
bytes as :class:`hub.audit_log.AuditLog`, the same promises (numbers, durability, checkpoints, the
writer lock), failing closed when the process is gone, and the signing key kept off its command line."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.audit_log import AuditEntry, AuditLog, AuditLogBusy, AuditLogCorrupt, AuditLogFailed, subject, verify
from hub.audit_writer import AuditLogProcess

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PLUS7 = timezone(timedelta(hours=7))


def entries() -> list[AuditEntry]:
    """Answers and refusals, with what an entry normalises: other zones, a whole second (orjson writes
    no fraction then), a long detail, strings that are not valid Unicode (one alone, one in a batch)."""
    made = []
    for i in range(1500):
        at = datetime(2026, 5, 4, 1, 30, tzinfo=UTC) + timedelta(milliseconds=37 * i)
        if i % 3 == 0:
            at = at.replace(microsecond=0)
        if i % 5 == 0:
            at = at.astimezone(PLUS7)
        refused = i % 17 == 0
        key = f"0010900{i % 250:05d}" + ("\udc80" if i == 700 else "")  # one in the batches sent on a loop
        made.append(AuditEntry(at=at, client_id=f"client-{i % 4}", agency_code="H31.22",
                               purpose=None if refused else f"1.00{i % 10}", method="GET",
                               path="/v1/citizens/{personal_id}", outcome=403 if refused else 200, asked=[key],
                               fields=[] if refused else ["given_name", "birth_date"],
                               record_keys=[] if refused else [key], detail="x" * 400 if i == 11 else ""))
    made.append(AuditEntry(client_id="bad\ud800text", agency_code="", purpose=None, method="GET", path="/",
                           outcome=400))
    return made


def fields_of(entry: AuditEntry) -> dict:
    return dict(at=entry.at, client_id=entry.client_id, agency_code=entry.agency_code, purpose=entry.purpose,
                method=entry.method, path=entry.path, asked=list(entry.asked), fields=list(entry.fields),
                record_keys=list(entry.record_keys), outcome=entry.outcome, detail=entry.detail)


def segment_bytes(directory: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(directory.glob("audit-*.jsonl"))]


def test_the_process_writes_what_the_log_writes_byte_for_byte(tmp_path: Path):
    """By ``append`` and ``append_request``, outside an event loop (sent at once) and on one (sent in
    batches), the lines, hashes, numbers and checkpoints are those of an in-process log."""
    made = entries()
    numbers = {}
    for name, kind in (("thread", AuditLog), ("process", AuditLogProcess)):
        log = kind(tmp_path / name, KEY, checkpoint_every=500)

        async def on_a_loop(batch: list[AuditEntry]) -> list[int]:
            return [log.append_request(**fields_of(entry)) for entry in batch]

        try:
            got = [log.append(entry) for entry in made[:600]]
            got += asyncio.run(on_a_loop(made[600:1200]))
            got += [log.append_request(**fields_of(entry)) for entry in made[1200:]]
        finally:
            log.close()
        numbers[name] = got
    assert numbers["thread"] == numbers["process"] == list(range(1, len(made) + 1))
    assert segment_bytes(tmp_path / "thread") == segment_bytes(tmp_path / "process")
    for name in ("thread", "process"):
        report = verify(tmp_path / name, KEY.public_key())
        assert report.ok and report.entries == len(made) and report.checkpoints == 5, report.summary()
    assert len(subject(tmp_path / "process", "001090000011")) == len(subject(tmp_path / "thread", "001090000011")) > 0


def test_append_request_keeps_an_entry_s_rules_byte_for_byte(tmp_path: Path):
    """What ``append_request`` is given raw (another zone, a whole second, a detail past DETAIL_MAX, text
    that is not valid Unicode, a refusal's None purpose) is kept as an entry keeps it, the same bytes as
    the in-process log's; a naive ``at`` is refused by both, and numbers nothing."""
    raw = [dict(at=datetime(2026, 5, 4, 8, 30, 1, 250, tzinfo=PLUS7), client_id="c", agency_code="H31.22",
                purpose="1.001", method="GET", path="/v1/citizens/{personal_id}", asked=["001090000011"],
                fields=["given_name"], record_keys=["001090000011"], outcome=200, detail=""),
           dict(at=datetime(2026, 5, 4, 1, 30, tzinfo=UTC), client_id="c", agency_code="H31.22", purpose=None,
                method="GET", path="/v1/citizens/{personal_id}", asked=["x\ud800y"], fields=[], record_keys=[],
                outcome=400, detail="y" * 400)]
    for name, kind in (("thread", AuditLog), ("process", AuditLogProcess)):
        with kind(tmp_path / name, KEY) as log:
            assert [log.append_request(**fields) for fields in raw] == [1, 2]
            with pytest.raises(ValueError, match="timezone-aware"):
                log.append_request(**{**raw[0], "at": datetime(2026, 5, 4, 1, 30)})
            assert log.append_request(**raw[0]) == 3
    assert segment_bytes(tmp_path / "thread") == segment_bytes(tmp_path / "process")
    lines = segment_bytes(tmp_path / "process")[0].splitlines()
    first, second = orjson.loads(lines[0]), orjson.loads(lines[1])
    assert first["at"] == "2026-05-04T01:30:01.000250Z"
    assert second["at"] == "2026-05-04T01:30:00.000000Z" and second["detail"] == "y" * 299 + "…"
    assert verify(tmp_path / "process", KEY.public_key()).ok


def test_a_send_left_pending_by_a_loop_that_ended_is_not_waited_for(tmp_path: Path):
    """Entries queued on a loop that ended before its send went out (``asyncio.run`` returned) are sent
    with the next append, also from another loop of the same thread; none waits for the dead loop."""
    made = entries()[:2]
    with AuditLogProcess(tmp_path / "a", KEY, send_delay=3600) as log:
        async def append(entry: AuditEntry) -> int:
            return log.append(entry)

        assert asyncio.run(append(made[0])) == 1  # its send was scheduled an hour ahead on that loop
        assert asyncio.run(append(made[1])) == 2  # a new loop in the same thread: sent now, the first too
        waiter = threading.Thread(target=log.wait_durable, args=(2,), daemon=True)
        waiter.start()
        waiter.join(timeout=30)
        assert not waiter.is_alive(), "entries queued on an ended loop were never sent"
    assert [orjson.loads(line)["seq"] for line in segment_bytes(tmp_path / "a")[0].splitlines()] == [1, 2]


def test_durable_appends_flush_and_checkpoint_wait_for_the_disk(tmp_path: Path):
    with AuditLogProcess(tmp_path / "log", KEY, flush_interval=3600) as log:  # nothing committed on its own
        first = log.append(entries()[0])
        assert log.durable_seq < first
        second = log.append(entries()[1], durable=True)
        assert log.durable_seq >= second == first + 1
        third = log.append(entries()[2])
        log.flush()
        assert log.durable_seq >= third
        log.checkpoint()
        report = verify(tmp_path / "log", KEY.public_key())
        assert report.ok and report.entries == 3, report.summary()
        assert not any("not signed" in note for note in report.notes), report.notes


def test_flush_interval_zero_makes_every_append_durable(tmp_path: Path):
    with AuditLogProcess(tmp_path / "log", KEY, flush_interval=0) as log:
        for entry in entries()[:20]:
            seq = log.append(entry)
            assert log.durable_seq >= seq


def test_it_continues_an_existing_chain_and_hands_the_directory_back(tmp_path: Path):
    with AuditLog(tmp_path / "log", KEY) as log:
        for entry in entries()[:3]:
            log.append(entry)
    with AuditLogProcess(tmp_path / "log", KEY) as log:
        assert log.last_seq == 3
        assert log.append(entries()[3]) == 4
    with AuditLog(tmp_path / "log", KEY) as log:  # the lock was released, and the chain reads on
        assert log.last_seq == 4
        assert log.append(entries()[4]) == 5
    assert verify(tmp_path / "log", KEY.public_key()).entries == 5


def test_a_busy_or_corrupt_directory_is_refused_as_the_log_refuses_it(tmp_path: Path):
    with AuditLog(tmp_path / "log", KEY) as held:
        held.append(entries()[0], durable=True)
        with pytest.raises(AuditLogBusy, match="another process is writing"):
            AuditLogProcess(tmp_path / "log", KEY, lock_timeout=0.1)
    (tmp_path / "log" / "head.json").unlink()
    with AuditLog(tmp_path / "other", KEY):
        pass
    with pytest.raises(AuditLogCorrupt, match="head.json is missing"):
        AuditLogProcess(tmp_path / "log", KEY)


def test_it_fails_closed_when_the_writer_process_is_gone(tmp_path: Path):
    log = AuditLogProcess(tmp_path / "log", KEY)
    try:
        assert log.append(entries()[0], durable=True) == 1
        os.kill(log.pid, signal.SIGKILL)
        log._child.wait(30)  # gone for sure before the next append
        with pytest.raises(AuditLogFailed):
            log.append(entries()[1], durable=True)  # woken by the failure, not left waiting
        with pytest.raises(AuditLogFailed, match="exited|cannot be reached"):
            log.append(entries()[2])  # and nothing is accepted after it
    finally:
        log.close()


def test_the_signing_key_is_not_on_the_writer_s_command_line_or_in_its_environment(tmp_path: Path):
    raw = KEY.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    secret = base64.b64encode(raw)
    with AuditLogProcess(tmp_path / "log", KEY) as log:
        pid = log.pid
        seen = Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()
        assert secret not in seen and raw not in seen
        assert secret.decode() not in repr(log) and secret.decode() not in repr(vars(log))


def test_a_quiet_log_is_still_signed_after_checkpoint_seconds(tmp_path: Path):
    """The child commits and signs from its one thread: a time-based checkpoint falls due without
    further input. Waited for on the signed head, with a deadline."""
    with AuditLogProcess(tmp_path / "log", KEY, checkpoint_seconds=0.3) as log:
        for entry in entries()[:3]:
            log.append(entry)
        log.flush()
        head = tmp_path / "log" / "head.json"
        deadline = time.monotonic() + 30
        while orjson.loads(head.read_bytes())["seq"] != 3:
            assert time.monotonic() < deadline, "no time-based checkpoint within 30 s"
            threading.Event().wait(0.05)
        assert verify(tmp_path / "log", KEY.public_key()).ok


def test_without_a_flusher_thread_the_owner_commits(tmp_path: Path):
    now = [1000.0]
    threads = threading.active_count()
    with AuditLog(tmp_path, KEY, flush_interval=3600, checkpoint_seconds=60, clock=lambda: now[0],
                  background=False) as log:
        first = log.append(entries()[0])
        assert log.durable_seq == 0 and threading.active_count() == threads  # no thread, nothing written yet
        assert log.commit_due() == 60 and log.durable_seq == first  # committed; to be signed in 60 s
        log.append(entries()[1], durable=True)  # a durable append commits by itself
        assert log.durable_seq == 2
        now[0] += 61
        assert log.commit_due() is None  # the checkpoint fell due and was signed
    lines = (tmp_path / "checkpoints.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["seq"] for line in lines] == [0, 2]


def test_the_writer_closes_the_log_cleanly_when_the_serving_process_is_gone(tmp_path: Path):
    """Its input ends (the serving process died): everything received is committed and signed, and the
    directory is free for the next writer."""
    log = AuditLogProcess(tmp_path / "log", KEY, flush_interval=3600)
    for entry in entries()[:5]:
        log.append(entry)  # sent at once (no event loop), not yet committed
    log._child.stdin.close()  # what the kernel does to the pipe when the serving process dies
    assert log._child.wait(30) == 0
    report = verify(tmp_path / "log", KEY.public_key())
    assert report.ok and report.entries == 5 and not report.notes, (report.summary(), report.notes)
    with AuditLog(tmp_path / "log", KEY) as reopened:
        assert reopened.last_seq == 5
    log._reader.join(30)  # the handle has read the writer's last report and its end
    with pytest.raises(AuditLogFailed, match="exited"):
        log.append(entries()[5])  # and knows its writer is gone
    log.close()
