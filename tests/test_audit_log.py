"""The audit log: append, verify, tamper in every way and see verify name it, repair a torn line, subject.

The tampering helpers re-implement the documented line format (canonical JSON with sorted keys, SHA-256
over the line without its ``hash``) instead of calling the module's own functions, so a forger who only
read the docstring is what the signed checkpoints are tested against.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from filelock import FileLock
from typer.testing import CliRunner

from hub.audit_cli import audit_app
from hub.audit_log import (
    SIGNATURE_DOMAIN,
    AuditEntry,
    AuditLog,
    AuditLogBusy,
    AuditLogCorrupt,
    AuditLogError,
    AuditSettings,
    load_public_key,
    subject,
    verify,
)
from hub.config import ConfigError

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
BASE = datetime(2026, 5, 4, 1, 30, tzinfo=UTC)
ENTRIES = 2500
EVERY = 1000
TARGET = "001090000042"
FIELDS = ["HoVaTen", "NgaySinh", "GioiTinh", "NoiThuongTru"]


def person(n: int) -> str:
    return f"0010900{n % 250:05d}"


def make_entry(i: int) -> AuditEntry:
    """Entry i of the template log: mostly answered lookups, some refused, a few bulk, one near-miss ID."""
    asked = [person(i)] if i % 50 else [person(i), person(i + 1)]
    if i == 7:
        asked = [TARGET + "0"]  # contains TARGET as a substring: must not count as about TARGET
    refused = i % 17 == 0
    return AuditEntry(at=BASE + timedelta(seconds=i), client_id=f"app-{i % 3}", agency_code=f"H31.{i % 5:02d}",
                      purpose=None if refused else f"000.00.31.H31-260504-{i:04d}", method="GET",
                      path="/v1/persons/{id}", outcome=403 if refused else 200, asked=asked,
                      fields=[] if refused else FIELDS, record_keys=[] if refused else asked[:1],
                      detail="no purpose declared" if refused else "")


def build_log(directory: Path, count: int = ENTRIES, **options) -> None:
    options = {"checkpoint_every": EVERY, "segment_bytes": 64 * 1024, **options}
    with AuditLog(directory, KEY, **options) as log:
        for i in range(count):
            log.append(make_entry(i))


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("audit-template") / "audit"
    build_log(directory)
    return directory


@pytest.fixture
def log_dir(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the template log, to tamper with."""
    return Path(shutil.copytree(template, tmp_path / "audit"))


# --- tampering helpers (independent of the module's code) -------------------------------------------


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("audit-*.jsonl"))


def locate(directory: Path, seq: int) -> tuple[Path, int]:
    """The segment and 0-based line index of entry ``seq``."""
    for path in segments(directory):
        for index, line in enumerate(path.read_bytes().splitlines()):
            if orjson.loads(line)["seq"] == seq:
                return path, index
    raise KeyError(seq)


def edit_lines(path: Path, change) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(change(lines)))


def seal(record: dict) -> bytes:
    body = {k: v for k, v in record.items() if k != "hash"}
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return orjson.dumps({**body, "hash": digest}) + b"\n"


def rechain(directory: Path, records: list[dict]) -> None:
    """Renumber and re-hash ``records`` as a forger would, then write them back into one segment."""
    prev = "0" * 64
    lines = []
    for seq, record in enumerate(records, start=1):
        line = seal({**record, "seq": seq, "prev_hash": prev})
        prev = orjson.loads(line)["hash"]
        lines.append(line)
    for path in segments(directory):
        path.unlink()
    (directory / "audit-000001.jsonl").write_bytes(b"".join(lines))


def all_records(directory: Path) -> list[dict]:
    return [orjson.loads(line) for path in segments(directory) for line in path.read_bytes().splitlines()]


def problem(directory: Path, key=KEY):
    report = verify(directory, key.public_key())
    assert not report.ok, "verify passed a tampered log"
    return report.problem


# --- the intact log ---------------------------------------------------------------------------------


def test_intact_log_verifies(template: Path):
    report = verify(template, KEY.public_key())
    assert report.ok, report.summary()
    assert report.summary() == f"{ENTRIES} entries, 4 checkpoints, chain intact"  # seq 0, 1000, 2000, close
    assert len(segments(template)) > 5  # rotated by size; the chain runs across segments


def test_lines_follow_the_documented_format(template: Path):
    records = all_records(template)
    assert [r["seq"] for r in records] == list(range(1, ENTRIES + 1))
    assert records[0]["prev_hash"] == "0" * 64
    for before, record in zip(records, records[1:]):
        assert record["prev_hash"] == before["hash"]
    assert all(seal(r) == orjson.dumps(r) + b"\n" for r in records[:50])
    assert "HoVaTen" in records[1]["fields"] and set(records[1]) >= {"at", "client_id", "asked", "record_keys"}


def test_head_signature_checks_out_independently(template: Path):
    head = orjson.loads((template / "head.json").read_bytes())
    body = {k: v for k, v in head.items() if k != "sig"}
    signed = SIGNATURE_DOMAIN + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    KEY.public_key().verify(base64.b64decode(head["sig"]), signed)  # raises if it does not verify
    assert (head["kind"], head["seq"], head["hash"]) == ("head", ENTRIES, all_records(template)[-1]["hash"])


def test_threads_append_concurrently_and_the_chain_holds(tmp_path: Path):
    seqs: dict[int, list[int]] = {t: [] for t in range(8)}

    def work(log: AuditLog, t: int) -> None:
        for i in range(400):
            seqs[t].append(log.append(AuditEntry(client_id=f"thread-{t}", agency_code="H31", purpose="P", method="GET",
                                                 path="/x", outcome=200, asked=[str(i)], detail=str(i))))

    with AuditLog(tmp_path, KEY, checkpoint_every=250, segment_bytes=32 * 1024) as log:
        threads = [threading.Thread(target=work, args=(log, t)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(s for got in seqs.values() for s in got) == list(range(1, 3201))
    report = verify(tmp_path, KEY.public_key())
    assert report.ok and report.entries == 3200, report.summary()
    by_seq = {r["seq"]: r for r in all_records(tmp_path)}
    for t, got in seqs.items():
        assert [by_seq[s]["detail"] for s in got] == [str(i) for i in range(400)]
        assert {by_seq[s]["client_id"] for s in got} == {f"thread-{t}"}


# --- tampering ----------------------------------------------------------------------------------------


def test_altered_field_is_pinpointed(log_dir: Path):
    path, index = locate(log_dir, 1234)

    def change(lines):
        lines[index] = lines[index].replace(b'"client_id":"app-', b'"client_id":"app-9')
        return lines

    edit_lines(path, change)
    found = problem(log_dir)
    assert (found.kind, found.seq, found.file, found.line) == ("altered", 1234, path.name, index + 1)
    assert found.tampering and "hash mismatch at seq 1234" in found.message


def test_altered_and_rehashed_entry_breaks_the_next_link(log_dir: Path):
    path, index = locate(log_dir, 1234)
    edit_lines(path, lambda lines: lines[:index] + [seal({**orjson.loads(lines[index]), "detail": "x"})]
               + lines[index + 1:])
    found = problem(log_dir)
    assert (found.kind, found.seq) == ("broken_link", 1235)
    assert "seq 1234" in found.message


def test_removed_entry_in_the_middle_is_pinpointed(log_dir: Path):
    path, index = locate(log_dir, 1500)
    edit_lines(path, lambda lines: lines[:index] + lines[index + 1:])
    found = problem(log_dir)
    assert (found.kind, found.seq) == ("removed", 1500)
    assert "seq 1500 missing" in found.message


def test_inserted_copy_of_an_entry_is_pinpointed(log_dir: Path):
    path, index = locate(log_dir, 1500)
    edit_lines(path, lambda lines: lines[:index + 1] + [lines[index]] + lines[index + 1:])
    found = problem(log_dir)
    assert (found.kind, found.seq) == ("inserted", 1500)


def test_forged_entry_with_recomputed_chain_is_caught_by_the_signed_checkpoint(log_dir: Path):
    records = all_records(log_dir)
    forged = {**records[1499], "client_id": "forger", "asked": [TARGET], "record_keys": [TARGET]}
    rechain(log_dir, records[:1500] + [forged] + records[1500:])
    found = problem(log_dir)
    assert (found.kind, found.seq) == ("rewritten", 2000)
    assert "after seq 1000" in found.message and "bytes more" in found.message
    with pytest.raises(AuditLogCorrupt):  # the writer will not continue it either
        AuditLog(log_dir, KEY, checkpoint_every=EVERY, lock_timeout=0)


def test_removed_entry_with_recomputed_chain_is_caught(log_dir: Path):
    records = all_records(log_dir)
    rechain(log_dir, records[:1500] + records[1501:])
    found = problem(log_dir)
    assert (found.kind, found.seq) == ("rewritten", 2000)
    assert "after seq 1000" in found.message


def test_truncated_tail_is_caught(log_dir: Path):
    last = segments(log_dir)[-1]
    edit_lines(last, lambda lines: lines[:-7])
    found = problem(log_dir)
    assert (found.kind, found.seq) == ("truncated", ENTRIES - 6)
    assert f"reached seq {ENTRIES}" in found.message and found.tampering


def test_truncated_tail_and_last_checkpoint_is_caught_by_the_head(log_dir: Path):
    edit_lines(segments(log_dir)[-1], lambda lines: lines[:-7])
    edit_lines(log_dir / "checkpoints.jsonl", lambda lines: lines[:-1])
    found = problem(log_dir)
    assert found.kind == "truncated" and "head.json" in found.message


def test_removed_head_is_caught(log_dir: Path):
    (log_dir / "head.json").unlink()
    assert problem(log_dir).kind == "missing_head"


def test_removed_segment_is_caught(log_dir: Path):
    victim = segments(log_dir)[3]
    victim.unlink()
    found = problem(log_dir)
    assert found.kind == "removed" and victim.name in found.message


def test_corrupted_signature_is_caught(log_dir: Path):
    def change(lines):
        record = orjson.loads(lines[2])
        signature = bytearray(base64.b64decode(record["sig"]))
        signature[10] ^= 0x01
        lines[2] = orjson.dumps({**record, "sig": base64.b64encode(signature).decode()}) + b"\n"
        return lines

    edit_lines(log_dir / "checkpoints.jsonl", change)
    found = problem(log_dir)
    assert (found.kind, found.seq) == ("bad_signature", 2000)
    assert "checkpoints.jsonl line 3" in found.message


def test_other_public_key_is_reported_as_wrong_key(template: Path):
    found = problem(template, OTHER_KEY)
    assert found.kind == "wrong_key" and "wrong public key" in found.message


# --- crashes ------------------------------------------------------------------------------------------


def test_torn_last_line_is_reported_as_a_crash_and_repaired_on_open(log_dir: Path):
    last = segments(log_dir)[-1]
    lines = last.read_bytes().splitlines(keepends=True)
    torn = lines[-1][:37]
    with open(last, "ab") as f:
        f.write(torn)
    found = problem(log_dir)
    assert found.kind == "torn" and not found.tampering
    assert found.message.startswith("crash, not tampering") and found.line == len(lines) + 1

    with AuditLog(log_dir, KEY, checkpoint_every=EVERY) as log:
        assert [(r.file, r.line, r.length) for r in log.repairs] == [(last.name, len(lines) + 1, len(torn))]
        assert log.last_seq == ENTRIES
        assert log.append(make_entry(ENTRIES)) == ENTRIES + 1
    note = orjson.loads((log_dir / "repairs.jsonl").read_bytes())
    assert base64.b64decode(note["bytes"]) == torn and note["file"] == last.name
    report = verify(log_dir, KEY.public_key())
    assert report.ok and report.entries == ENTRIES + 1, report.summary()
    assert any("repaired" in n for n in report.notes)


def test_torn_last_line_while_a_writer_holds_the_lock_is_a_write_in_progress(log_dir: Path):
    with open(segments(log_dir)[-1], "ab") as f:
        f.write(b'{"agency_code":"H31.0')
    writer = FileLock(log_dir / "writer.lock", timeout=0, thread_local=False)
    with writer:
        report = verify(log_dir, KEY.public_key())
        assert report.ok and any("being written" in n for n in report.notes), report.summary()
    assert problem(log_dir).kind == "torn"


def test_tear_inside_signed_entries_is_truncation_not_a_crash(log_dir: Path):
    last = segments(log_dir)[-1]
    data = last.read_bytes()
    last.write_bytes(data[:-20])
    found = problem(log_dir)
    assert found.kind == "truncated" and found.tampering and "torn" in found.message
    with pytest.raises(AuditLogCorrupt):
        AuditLog(log_dir, KEY, checkpoint_every=EVERY)
    assert last.read_bytes() == data[:-20]  # refused, not "repaired"


def test_crash_image_verifies_with_an_unsigned_tail_and_the_writer_continues(tmp_path: Path):
    log = AuditLog(tmp_path / "live", KEY, checkpoint_every=100)
    for i in range(250):
        log.append(make_entry(i))
    log.flush()  # durable, but the last 50 are not signed yet
    image = Path(shutil.copytree(tmp_path / "live", tmp_path / "image"))
    live = verify(tmp_path / "live", KEY.public_key())
    log.close()
    assert live.ok and live.entries == 250
    report = verify(image, KEY.public_key())
    assert report.ok and report.entries == 250 and any("50 entries after" in n for n in report.notes)
    with AuditLog(image, KEY, checkpoint_every=100) as again:
        assert again.append(make_entry(250)) == 251
    assert verify(image, KEY.public_key()).summary() == "251 entries, 4 checkpoints, chain intact"


def test_head_one_checkpoint_behind_is_a_crash_and_is_rewritten(tmp_path: Path):
    with AuditLog(tmp_path, KEY, checkpoint_every=100) as log:
        for i in range(100):
            log.append(make_entry(i))
        log.flush()
        log.checkpoint()
        old_head = (tmp_path / "head.json").read_bytes()
        for i in range(100, 200):
            log.append(make_entry(i))
    (tmp_path / "head.json").write_bytes(old_head)
    report = verify(tmp_path, KEY.public_key())
    assert report.ok and any("lags" in n for n in report.notes)
    AuditLog(tmp_path, KEY, checkpoint_every=100).close()
    assert verify(tmp_path, KEY.public_key()).notes == ()


# --- durability and the writer lock -----------------------------------------------------------------


def written(directory: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in segments(directory))


def test_group_commit_holds_entries_until_flushed_or_waited_for(tmp_path: Path):
    with AuditLog(tmp_path, KEY, flush_interval=60) as log:
        log.append(make_entry(0))
        assert written(tmp_path) == 0 and log.durable_seq == 0  # inside the window: not yet on disk
        seq = log.append(make_entry(1), durable=True)
        assert log.durable_seq >= seq and written(tmp_path) == 2
        log.append(make_entry(2))
        log.flush()
        assert written(tmp_path) == 3


def test_full_queue_makes_appenders_wait_for_the_disk(tmp_path: Path):
    with AuditLog(tmp_path, KEY, flush_interval=60, max_pending=3) as log:
        log.append(make_entry(0))
        log.append(make_entry(1))
        assert written(tmp_path) == 0
        log.append(make_entry(2))  # the third fills the queue: it returns only once on disk
        assert written(tmp_path) == 3


def test_flush_interval_zero_fsyncs_every_append(tmp_path: Path):
    with AuditLog(tmp_path, KEY, flush_interval=0) as log:
        before = log.fsyncs
        for i in range(5):
            log.append(make_entry(i))
            assert written(tmp_path) == i + 1
        assert log.fsyncs - before == 5


def test_time_based_checkpoint_signs_a_quiet_log(tmp_path: Path):
    now = [1000.0]
    with AuditLog(tmp_path, KEY, flush_interval=0, checkpoint_seconds=60, clock=lambda: now[0]) as log:
        for i in range(3):
            log.append(make_entry(i))
        assert len((tmp_path / "checkpoints.jsonl").read_bytes().splitlines()) == 1  # only checkpoint 0
        now[0] += 61
        log.append(make_entry(3))
        lines = (tmp_path / "checkpoints.jsonl").read_bytes().splitlines()
        assert [orjson.loads(line)["seq"] for line in lines] == [0, 4]


def test_second_writer_is_refused_in_process_and_across_processes(tmp_path: Path):
    with AuditLog(tmp_path, KEY):
        with pytest.raises(AuditLogBusy):
            AuditLog(tmp_path, KEY, lock_timeout=0)
        code = ("import sys; from hub.audit_log import AuditLog, AuditLogBusy\n"
                "try:\n    AuditLog(sys.argv[1], lock_timeout=0)\nexcept AuditLogBusy:\n    print('busy')\n")
        child = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                               timeout=60, cwd=Path(__file__).resolve().parent.parent)
        assert child.stdout.strip() == "busy", child.stderr
    AuditLog(tmp_path, KEY, lock_timeout=0).close()  # released at close


def test_closed_log_refuses_appends(tmp_path: Path):
    log = AuditLog(tmp_path, KEY)
    log.close()
    log.close()
    with pytest.raises(AuditLogError):
        log.append(make_entry(0))


def test_entry_validation():
    with pytest.raises(ValueError):
        AuditEntry(at=datetime(2026, 1, 1), client_id="a", agency_code="b", purpose=None, method="GET", path="/",
                   outcome=400)
    with pytest.raises(TypeError):
        AuditEntry(client_id="a", agency_code="b", purpose=None, method="GET", path="/", outcome=400, asked="001")
    entry = AuditEntry(client_id="a", agency_code="b", purpose=None, method="GET", path="/", outcome=400,
                       detail="x" * 1000, at=datetime(2026, 1, 1, 8, tzinfo=UTC) + timedelta(hours=0))
    assert len(entry.detail) == 300 and entry.at.tzinfo is UTC


def test_unencodable_strings_do_not_lose_the_entry(tmp_path: Path):
    with AuditLog(tmp_path, KEY) as log:
        log.append(AuditEntry(client_id="a", agency_code="b", purpose=None, method="GET", path="/", outcome=400,
                              asked=["\ud800bad"]))
    assert verify(tmp_path, KEY.public_key()).ok


# --- keys and settings ------------------------------------------------------------------------------


def test_key_is_generated_once_with_private_permissions_and_never_logged(tmp_path: Path, caplog):
    env = {"HUB_HOME": str(tmp_path / "home")}
    with caplog.at_level(logging.DEBUG, logger="hub.audit_log"):
        with AuditLog.from_settings(env) as log:
            log.append(make_entry(0))
    key_file = tmp_path / "home" / "audit" / "signing-key.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    pem = key_file.read_text()
    assert "PRIVATE KEY" in pem and pem.splitlines()[1] not in caplog.text
    public = load_public_key(tmp_path / "home" / "audit" / "signing-key.pub.pem")
    assert verify(tmp_path / "home" / "audit", public).ok
    with AuditLog.from_settings(env) as again:  # the same key is loaded, so the chain continues
        again.append(make_entry(1))
    assert key_file.read_text() == pem and verify(tmp_path / "home" / "audit", public).entries == 2


def test_settings_name_the_variables(tmp_path: Path):
    settings = AuditSettings.from_env({"HUB_HOME": str(tmp_path), "HUB_AUDIT_DIR": str(tmp_path / "elsewhere"),
                                       "HUB_AUDIT_FLUSH_MS": "2", "HUB_AUDIT_SIGNING_KEY_PASSPHRASE": "s3cret"})
    assert settings.directory == tmp_path / "elsewhere"
    assert settings.signing_key_path == tmp_path / "audit" / "signing-key.pem" and settings.flush_interval == 0.002
    assert "s3cret" not in repr(settings)
    with pytest.raises(ConfigError, match="HUB_AUDIT_SIGNING_KEY"):
        AuditSettings.from_env({"HUB_AUDIT_SIGNING_KEY": str(tmp_path / "missing.pem")})
    with pytest.raises(ConfigError, match="HUB_AUDIT_FLUSH_MS"):
        AuditSettings.from_env({"HUB_AUDIT_FLUSH_MS": "soon"})


def test_encrypted_key_round_trips(tmp_path: Path):
    env = {"HUB_HOME": str(tmp_path), "HUB_AUDIT_SIGNING_KEY_PASSPHRASE": "s3cret"}
    AuditLog.from_settings(env).close()
    assert b"ENCRYPTED" in (tmp_path / "audit" / "signing-key.pem").read_bytes()
    with pytest.raises(ConfigError):
        AuditSettings.from_env({**env, "HUB_AUDIT_SIGNING_KEY_PASSPHRASE": "wrong"}).signing_key()


# --- subject ------------------------------------------------------------------------------------------


def test_subject_lists_exactly_the_entries_about_that_id(template: Path):
    expected = [e for e in map(make_entry, range(ENTRIES)) if TARGET in e.asked or TARGET in e.record_keys]
    got = subject(template, TARGET)
    assert got == expected and len(got) >= 10
    assert any(TARGET not in e.record_keys for e in got)  # asked for but not returned counts too
    assert make_entry(7) not in got  # a longer ID that merely contains TARGET
    assert subject(template, "999999999999") == []


# --- the command line ---------------------------------------------------------------------------------


@pytest.fixture
def public_pem(tmp_path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization

    def write(key: Ed25519PrivateKey, name: str) -> Path:
        path = tmp_path / name
        path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
        return path

    write(OTHER_KEY, "other.pub.pem")
    return write(KEY, "audit.pub.pem")


def test_cli_verify_intact_and_tampered(log_dir: Path, public_pem: Path):
    runner = CliRunner()
    result = runner.invoke(audit_app, ["verify", "--dir", str(log_dir), "--public-key", str(public_pem)])
    assert result.exit_code == 0 and result.stdout == f"{ENTRIES} entries, 4 checkpoints, chain intact\n"
    other = runner.invoke(audit_app, ["verify", "--dir", str(log_dir), "--public-key",
                                      str(public_pem.with_name("other.pub.pem"))])
    assert other.exit_code == 1 and "wrong public key" in other.stdout
    path, index = locate(log_dir, 42)
    edit_lines(path, lambda lines: lines[:index] + [lines[index].replace(b'"GET"', b'"PUT"')] + lines[index + 1:])
    result = runner.invoke(audit_app, ["verify", "--dir", str(log_dir), "--public-key", str(public_pem)])
    assert result.exit_code == 1
    assert result.stdout.strip() == f"altered entry: hash mismatch at seq 42 ({path.name} line {index + 1})"


def test_cli_defaults_come_from_the_environment(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"HUB_HOME": str(tmp_path / "home"), "HUB_CONFIG": None, "HUB_AUDIT_DIR": None,
           "HUB_AUDIT_SIGNING_KEY": None, "HUB_AUDIT_PUBLIC_KEY": None}
    with AuditLog.from_settings({"HUB_HOME": str(tmp_path / "home")}) as log:
        log.append(make_entry(292))  # person(292) is TARGET
    runner = CliRunner()
    result = runner.invoke(audit_app, ["verify"], env=env)
    assert result.exit_code == 0 and result.stdout == "1 entries, 2 checkpoints, chain intact\n"
    listed = runner.invoke(audit_app, ["subject", TARGET], env=env)
    assert listed.exit_code == 0 and "1 request(s) about" in listed.stdout
    missing = runner.invoke(audit_app, ["verify", "--public-key", str(tmp_path / "nope.pem")], env=env)
    assert missing.exit_code == 2


def test_cli_subject_prints_a_table(template: Path):
    result = CliRunner().invoke(audit_app, ["subject", TARGET, "--dir", str(template)])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    expected = subject(template, TARGET)
    assert lines[0].split()[:4] == ["when", "(UTC)", "client", "agency"]
    assert len(lines) == len(expected) + 2 and lines[-1] == f"{len(expected)} request(s) about {TARGET}"
    first = expected[0]
    assert lines[1].split()[:6] == [first.at.strftime("%Y-%m-%d"), first.at.strftime("%H:%M:%S"), first.client_id,
                                    first.agency_code, first.purpose or "(none)", str(first.outcome)]
    assert any("(none)" in line and "no purpose declared" in line for line in lines)
    nobody = CliRunner().invoke(audit_app, ["subject", "999999999999", "--dir", str(template)])
    assert nobody.exit_code == 0 and "no request" in nobody.stdout


def test_module_leaves_no_stray_files(template: Path):
    names = {p.name for p in template.iterdir()}
    assert names - {p.name for p in segments(template)} == {"checkpoints.jsonl", "head.json", "writer.lock"}
    assert os.stat(template).st_mode & 0o077 == 0


def test_append_request_writes_what_append_of_the_entry_writes(tmp_path: Path):
    """The lookup API appends its entries field by field; the lines, hashes, numbers and checkpoints
    must be those of ``append(AuditEntry(...))``, byte for byte, including the entry's rules (``at``
    kept in UTC, ``detail`` cut)."""
    plus7 = timezone(timedelta(hours=7))
    entries = [make_entry(i) for i in range(1200)]
    entries.append(AuditEntry(at=datetime(2026, 5, 4, 8, 30, 0, 123456, tzinfo=plus7), client_id="a", agency_code="b",
                              purpose=None, method="GET", path="/", outcome=400, detail="x" * 500))
    with AuditLog(tmp_path / "whole", KEY, checkpoint_every=EVERY) as whole, \
            AuditLog(tmp_path / "fields", KEY, checkpoint_every=EVERY) as fields:
        for entry in entries:
            by_entry = whole.append(entry)
            by_fields = fields.append_request(
                at=entry.at.astimezone(plus7), client_id=entry.client_id, agency_code=entry.agency_code,
                purpose=entry.purpose, method=entry.method, path=entry.path, asked=list(entry.asked),
                fields=list(entry.fields), record_keys=list(entry.record_keys), outcome=entry.outcome,
                detail=entry.detail if len(entry.detail) <= 300 else "x" * 500)
            assert by_entry == by_fields
    written = [[p.read_bytes() for p in segments(tmp_path / name)] for name in ("whole", "fields")]
    assert written[0] == written[1]
    assert verify(tmp_path / "fields", KEY.public_key()).ok
    with pytest.raises(ValueError):
        with AuditLog(tmp_path / "naive", KEY) as log:
            log.append_request(at=datetime(2026, 1, 1), client_id="a", agency_code="b", purpose=None, method="GET",
                               path="/", asked=[], fields=[], record_keys=[], outcome=400)
