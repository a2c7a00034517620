"""The document-axis connector against running sandboxes: exactly the truth's messages, each stored once
and settled, through faults, kills and malformed packages; sending reaches the axis.

Each test that consumes a queue starts its own sandbox (receiving settles messages for good).
"""

from __future__ import annotations

import subprocess
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from connectors import edxml
from connectors.document_exchange import DocumentExchangeConnector, SendOutcomeUnknown, SendRefused
from connectors.errors import ConnectorError
from connectors.extract import run_extract
from hub.config import Settings
from sandbox.faults import FaultPlan
from tests.extract_helpers import HUB, extract_env, extract_killed_then_resumed

OWN_FROM = "000.00.02.H31"  # Sở Tư pháp, one of the province's agencies
OWN_TO = "000.00.03.H31"  # Sở Tài chính: its messages land in the hub's own queue
FAST = {"HUB_VDXP_RATE_LIMIT": "0", "HUB_VDXP_BACKOFF_INITIAL": "0.01", "HUB_VDXP_BACKOFF_MAX": "0.2"}


def connector(sb, **extra: str) -> DocumentExchangeConnector:
    env = {**sb.env, **FAST, **extra}
    return DocumentExchangeConnector.from_settings(Settings.from_env(env), env)


def truth_ids(sb) -> set[str]:
    rows = sb.sandbox.truth.record_table().to_pylist()
    return {r["record_key"] for r in rows if r["system"] == "vdxp" and r["role"] == "document"}


def truth_rows(sb) -> dict[str, dict[str, Any]]:
    return {r["doc_id"]: r for r in sb.sandbox.truth.tables["documents"].to_pylist()}


def settled(sb, doc_id: str) -> str:
    """What the hub's system settled for a message, as the axis recorded it ('' if nothing)."""
    delivery = sb.sandbox.vdxp._deliveries.get((sb.env["HUB_VDXP_SYSTEM_ID"], doc_id))
    return delivery.settled if delivery else ""


def assert_queue_empty(sb) -> None:
    """Nothing left unsettled: even once every visibility timeout has passed, nothing is listed."""
    axis = sb.sandbox.vdxp
    real = axis.clock
    axis.clock = lambda: real() + 3600
    try:
        reader = connector(sb)
        assert reader.list_received("edoc")[0] == [] and reader.list_received("status")[0] == []
    finally:
        axis.clock = real


def assert_matches_truth(sb, table) -> None:
    ids = table.column("doc_id").to_pylist()
    assert len(ids) == len(set(ids)) and set(ids) == truth_ids(sb)
    truth = truth_rows(sb)
    for row in table.to_pylist():
        expected = truth[row["doc_id"]]
        assert row["message_type"] == expected["message_type"]
        assert row["from_organ_id"] == expected["from_organ_id"]
        assert row["to_organ_ids"] == expected["to_organ_ids"]
        assert row["edxml"] == sb.sandbox.vdxp.package(row["doc_id"])
        assert row["signature_verdict"] in {"unsigned", "unsupported-algorithm"}  # the traffic's dummy SHA-1 ones
        if row["message_type"] == "status":
            assert row["status_code"] == expected["status_code"] and row["business_type"] is None
            assert row["response_for_doc_id"] == expected["document_id"]
            continue
        assert row["business_type"] == expected["business_type"]
        assert row["edxml_document_id"] == expected["document_id"]
        assert (row["business_reference_doc_id"] or "") == (expected["target_document_id"]
                                                           if expected["business_type"] else "")
        attachments = row["attachments"]
        assert [a["mime"] for a in attachments] == expected["attachment_types"]
        assert [("zip" if a["zipped"] else "base64") for a in attachments] == expected["attachment_encodings"]
        assert all(a["size"] > 0 and len(a["sha256"]) == 64 for a in attachments)


# -- a full extract -----------------------------------------------------------------------------------

def test_full_extract_is_exactly_the_truth_and_settles_everything(sandbox_factory, tmp_path: Path) -> None:
    with sandbox_factory(residents=2_000, seed=5, rate_limit=10_000) as sb:
        result = run_extract(connector(sb, HUB_VDXP_PAGE_SIZE="25"), tmp_path)
        table = pq.read_table(result.dataset_path)
        assert result.fetched == result.rows == len(truth_ids(sb)) and result.quarantined == 0
        assert_matches_truth(sb, table)
        assert {settled(sb, d) for d in truth_ids(sb)} == {"done"}
        assert_queue_empty(sb)
        held = [r for r in truth_rows(sb).values() if r["revoked_after_delivery"]]
        assert held  # revoked after delivery: arrives only once the original was settled, and is read
        assert {r["doc_id"] for r in held} <= set(table.column("doc_id").to_pylist())
        again = run_extract(connector(sb), tmp_path)  # the same state: nothing new, nothing twice
        assert again.fetched == 0 and again.rows == result.rows


def test_every_fault_at_a_few_percent_still_gives_the_truth(sandbox_factory, tmp_path: Path) -> None:
    plan = FaultPlan.uniform(0.03, seed=21, latency_ms=2)
    plan.rates["vdxp"]["duplicate_record"] = 0.6
    with sandbox_factory(residents=1_500, seed=8, rate_limit=10_000, faults=plan, visibility_timeout_s=0.5) as sb:
        result = run_extract(connector(sb, HUB_VDXP_PAGE_SIZE="10", HUB_VDXP_VISIBILITY_TIMEOUT="0.5"), tmp_path)
        assert_matches_truth(sb, pq.read_table(result.dataset_path))
        assert result.quarantined == 0
        counts = sb.sandbox.runtimes["vdxp"].faults.counts
        assert counts.get("duplicate_record", 0) > 0 and sum(counts.values()) - counts["duplicate_record"] > 5
        assert {settled(sb, d) for d in truth_ids(sb)} == {"done"}
        assert_queue_empty(sb)


def test_kill_9_then_resume_is_the_truth(sandbox_factory, tmp_path: Path) -> None:
    with sandbox_factory(residents=3_000, seed=9, rate_limit=10_000, visibility_timeout_s=2.5) as sb:
        env = extract_env(sb.env, tmp_path / "home", HUB_VDXP_RATE_LIMIT="60", HUB_VDXP_PAGE_SIZE="20",
                          HUB_VDXP_VISIBILITY_TIMEOUT="2.5")
        table, kills = extract_killed_then_resumed("vdxp", tmp_path / "out", env, seed=4, kill_window_s=(1.2, 2.5))
        assert kills >= 1
        assert_matches_truth(sb, table)
        assert {settled(sb, d) for d in truth_ids(sb)} == {"done"}
        assert_queue_empty(sb)


@pytest.mark.parametrize("cursor_kept", ["settle", "seen"], ids=["resettled-first", "redelivered-then-settled"])
def test_a_kill_between_commit_and_settle_settles_again_without_a_duplicate(sandbox_factory, cursor_kept) -> None:
    with sandbox_factory(residents=1_500, seed=3, rate_limit=10_000, visibility_timeout_s=0.2) as sb:
        knobs = {"HUB_VDXP_PAGE_SIZE": "10", "HUB_VDXP_VISIBILITY_TIMEOUT": "0.2"}
        batches = connector(sb, **knobs).read(None)
        next(batches)  # "a run is under way"
        page = next(batches)  # committed, then the process dies before after_commit settles it
        committed = page.records.column("doc_id").to_pylist()
        assert len(committed) == 10 and not any(settled(sb, d) for d in committed)
        cursor = page.cursor if cursor_kept == "settle" else {**page.cursor, "settle": {}}
        time.sleep(0.3)  # their visibility timeout has passed: the axis lists them again
        later: list[str] = []
        for batch in connector(sb, **knobs).read(cursor):
            later += batch.records.column("doc_id").to_pylist()
            if batch.after_commit is not None:
                batch.after_commit()
        assert {settled(sb, d) for d in committed} == {"done"}
        assert not set(committed) & set(later) and len(later) == len(set(later))
        assert set(committed) | set(later) == truth_ids(sb)


def test_configuration_is_checked_early() -> None:
    base = {"HUB_VDXP_URL": "http://127.0.0.1:9/vdxp", "HUB_VDXP_SYSTEM_ID": "hub", "HUB_VDXP_SECRET": "x"}
    with pytest.raises(ValueError, match="HUB_VDXP_SECRET"):
        env = {**base, "HUB_VDXP_SECRET": ""}
        DocumentExchangeConnector.from_settings(Settings.from_env(env), env)
    with pytest.raises(ValueError, match="HUB_VDXP_PAGE_SIZE"):
        env = {**base, "HUB_VDXP_PAGE_SIZE": "500"}
        DocumentExchangeConnector.from_settings(Settings.from_env(env), env)


def test_a_server_that_keeps_refusing_is_given_up_on_by_name(sandbox_factory) -> None:
    plan = FaultPlan(seed=1, rates={"vdxp": {"rate_limit": 1.0}})
    with sandbox_factory(residents=1_500, seed=3, rate_limit=10_000, faults=plan) as sb:
        hub = connector(sb, HUB_VDXP_MAX_ATTEMPTS="2")
        with pytest.raises(ConnectorError, match=r"vdxp GetReceivedEdocList .*429.*after 2 attempts"):
            hub.list_received("edoc")
        result = hub.check()
        assert not result.ok and "429" in result.message


# -- refused packages ---------------------------------------------------------------------------------

def test_a_malformed_package_is_quarantined_and_settled_fail(sandbox_factory, tmp_path: Path) -> None:
    with sandbox_factory(residents=1_500, seed=3, rate_limit=10_000) as sb:
        axis = sb.sandbox.vdxp
        victim = next(r["doc_id"] for r in truth_rows(sb).values()
                      if r["message_type"] == "edoc" and not r["revoked_after_delivery"])
        served = axis.package
        axis.package = lambda doc_id: (b'<?xml version="1.0"?><edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016">'
                                       b"<edXMLEnvelope><MessageHeader><From>garbage" if doc_id == victim
                                       else served(doc_id))
        result = run_extract(connector(sb), tmp_path)
        [refused] = pq.read_table(result.quarantine_path).to_pylist()
        assert refused["record_key"] == victim and refused["operation"] == "GetEdoc"
        assert "not well-formed" in refused["reason"] and "garbage" in refused["raw"]
        assert refused["position"].startswith("edoc page ")
        stored = set(pq.read_table(result.dataset_path).column("doc_id").to_pylist())
        assert stored == truth_ids(sb) - {victim}
        assert settled(sb, victim) == "fail"
        assert {settled(sb, d) for d in stored} == {"done"}
        assert_queue_empty(sb)


# -- sending ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def signer() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sở Tư pháp Hải Phòng")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(31).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            cert.public_bytes(serialization.Encoding.PEM))


def outgoing(recipients: tuple[str, ...], number: str = "45") -> bytes:
    return edxml.build(edxml.Package(
        kind="edoc", sender=edxml.Organ(OWN_FROM, "Sở Tư pháp"), recipients=tuple(edxml.Organ(r) for r in recipients),
        document_id=f"{OWN_FROM},2026/10/30,{number}/STP-VP", code_number=number, code_notation="STP-VP",
        promulgation_date=date(2026, 10, 30), document_type_name="Công văn", subject="V/v phối hợp xác minh hộ tịch",
        business=edxml.Business(0, "Văn bản điện tử mới", paper="0"),
        attachments=(edxml.Attachment(f"{number}_STP_VP.pdf", "application/pdf", b"%PDF-1.4\n...", zipped=True),)))


def test_send_reaches_the_axis_and_the_own_copy_is_received(sandbox_factory, signer, tmp_path: Path) -> None:
    with sandbox_factory(residents=1_500, seed=3, rate_limit=10_000) as sb:
        hub = connector(sb)
        package = edxml.sign(outgoing(("000.00.00.G22", OWN_TO)), *signer)
        doc_id = hub.send(package)
        assert {(r.organ_id, r.status) for r in hub.sent_status(doc_id)} == {("000.00.00.G22", "pending"),
                                                                              (OWN_TO, "pending")}
        broken = outgoing((OWN_TO,), "46").replace(b"<edXML:BussinessDocType>0<", b"<edXML:BussinessDocType>7<")
        broken_id = hub.send(broken)  # the axis does not read business types; the hub's receiver does
        result = run_extract(hub, tmp_path)
        stored = {r["doc_id"]: r for r in pq.read_table(result.dataset_path).to_pylist()}
        assert stored[doc_id]["edxml"] == package and stored[doc_id]["signature_verdict"] == "valid"
        assert stored[doc_id]["to_organ_ids"] == ["000.00.00.G22", OWN_TO]
        assert broken_id not in stored
        [refused] = pq.read_table(result.quarantine_path).to_pylist()
        assert refused["record_key"] == broken_id and "BussinessDocType '7'" in refused["reason"]
        assert {r.organ_id: r.status for r in hub.sent_status(doc_id)}[OWN_TO] == "done"
        assert {r.organ_id: r.status for r in hub.sent_status(broken_id)} == {OWN_TO: "fail"}  # the sender sees it


def test_a_refused_send_carries_the_axis_error(sandbox_factory) -> None:
    with sandbox_factory(residents=1_500, seed=3, rate_limit=10_000) as sb:
        with pytest.raises(SendRefused) as info:
            connector(sb).send(outgoing(("000.00.00.Z99",)))
        assert info.value.error_code == "106" and "Z99" in info.value.error_desc


def test_a_lost_send_answer_is_not_sent_again(sandbox_factory) -> None:
    plan = FaultPlan(seed=1, rates={"vdxp": {"reset": 1.0}})
    with sandbox_factory(residents=1_500, seed=3, rate_limit=10_000, faults=plan) as sb:
        axis = sb.sandbox.vdxp
        before = len(axis._order)
        with pytest.raises(SendOutcomeUnknown):
            connector(sb).send(outgoing(("000.00.00.G22",)))
        assert len(axis._order) == before + 1  # it did arrive, once


# -- check ----------------------------------------------------------------------------------------------

def test_hub_check_vdxp(sandbox_factory, tmp_path: Path) -> None:
    with sandbox_factory(residents=1_500, seed=3, rate_limit=10_000) as sb:
        env = extract_env(sb.env, tmp_path)
        ok = subprocess.run([HUB, "check", "vdxp"], env=env, capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0 and ok.stdout.startswith("vdxp: OK - "), ok.stdout + ok.stderr
        assert len(ok.stdout.strip().splitlines()) == 1 and "agencies" in ok.stdout
        wrong = subprocess.run([HUB, "check", "vdxp"], env={**env, "HUB_VDXP_SECRET": "s3cret-typo"},
                               capture_output=True, text=True, timeout=120)
        assert wrong.returncode == 1 and "FAILED" in wrong.stdout and "100" in wrong.stdout, wrong.stdout
        assert "s3cret-typo" not in wrong.stdout + wrong.stderr  # the secret is never shown
