"""Receiving for the province, through the ``docaxis_exchange`` job against running sandboxes.

Every message of the sandbox's traffic ends in the store exactly once, with its package and files;
business types and status packages move documents as QCVN 102 says; every message is settled on the
axis only once stored, and each delivery is answered with one signed status 01. A process killed
between storing and acknowledging (or while taking in, or while sending the 01s) and run again
leaves the same store and the same record on the axis. Real public samples take the same path.
"""

from __future__ import annotations

import base64
import io
import signal
import uuid
import zipfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from connectors import edxml
from hub.docaxis.store import DocumentStore
from pipelines.lake import HubLake
from sandbox.document_exchange import Message
from tests.docaxis_helpers import (SAMPLES, expected_deliveries, hub_env, run_job, run_python, sent_by_hub, settled,
                                   statuses_sent, store_of, truth_rows, use_env)

OWN_FROM, OWN_TO, OWN_OTHER = "000.00.02.H31", "000.00.03.H31", "000.00.05.H31"


def assert_store_is_the_truth(sb, store: DocumentStore) -> None:
    truth = truth_rows(sb)
    messages = {m["doc_id"]: m for m in store.query("SELECT * FROM messages")}
    assert set(messages) == set(truth) and len(messages) == len(truth)
    documents = {d["thread"]: d for d in store.query("SELECT * FROM documents")}
    for doc_id, row in truth.items():
        m = messages[doc_id]
        assert (m["message_type"], m["from_organ_id"], m["document_id"]) == (row["message_type"],
                                                                           row["from_organ_id"], row["document_id"])
        assert store.blobs.read(m["edxml_sha256"]) == sb.sandbox.vdxp.package(doc_id)
        assert m["signature"] in {"unsigned", "unsupported-algorithm"}  # the traffic's dummy SHA-1 signatures
        if row["message_type"] == "status":
            assert m["status_code"] == row["status_code"] and m["business_type"] is None
            continue
        assert m["business_type"] == row["business_type"]
        files = store.query("SELECT * FROM attachments WHERE doc_id = ? ORDER BY position", [doc_id])
        assert [f["mime"] for f in files] == row["attachment_types"]
        assert [("zip" if f["zipped"] else "base64") for f in files] == row["attachment_encodings"]
        assert all(store.blobs.verify(f["sha256"]) and f["size"] > 0 for f in files)
        target = row["target_document_id"]
        if row["business_type"] == 1:
            assert documents[target]["state"] == "revoked" and documents[target]["changed_by"] == doc_id
        elif row["business_type"] == 3:
            assert documents[target]["state"] == "replaced" and documents[target]["changed_by"] == doc_id
            assert documents[row["document_id"]]["state"] == "active"
        elif row["business_type"] == 2:
            assert documents[target]["updates"] >= 1 and documents[target]["current_doc_id"] != \
                documents[target]["origin_doc_id"]
    deliveries = store.query("SELECT d.agency, d.organ_id, m.document_id FROM deliveries d JOIN messages m "
                             "USING (doc_id)")
    assert Counter((d["agency"], d["document_id"]) for d in deliveries) == expected_deliveries(sb)
    received = {t["message_doc_id"]: t for t in store.query("SELECT * FROM trail WHERE direction = 'received'")}
    for doc_id, row in truth.items():
        if row["message_type"] == "status":
            assert (received[doc_id]["code"], received[doc_id]["document_id"]) == (row["status_code"], row["document_id"])
    # one status 01 for each delivery, from the agency as the package named it, to the document's sender
    assert statuses_sent(sb) == Counter((d["organ_id"], d["document_id"], "01") for d in deliveries)
    assert {settled(sb, doc_id) for doc_id in truth} == {"done"}


def test_the_store_holds_exactly_the_truth_once_and_answers_01(sandbox_factory, tmp_path: Path, monkeypatch) -> None:
    with sandbox_factory(residents=2_000, seed=5, rate_limit=10_000, visibility_timeout_s=0.5) as sb:
        env = hub_env(sb, tmp_path, HUB_VDXP_PAGE_SIZE="20")
        use_env(monkeypatch, env)
        result = run_job()
        assert result.success
        store = store_of(env)
        assert_store_is_the_truth(sb, store)
        assert store.counts()["revoked"] and store.counts()["replaced"]
        held = [r for r in truth_rows(sb).values() if r["revoked_after_delivery"]]
        assert held and all(store.query("SELECT state FROM documents WHERE thread = ?", [r["document_id"]])[0]["state"]
                            == "revoked" for r in held)  # revoked after it had been delivered
        for _, package, data in sent_by_hub(sb, "status"):
            verdict = edxml.verify(data)
            assert verdict.status == "valid" and "self-signed" in verdict.subject, verdict
        [metadata] = [e.event_specific_data.materialization.metadata for e in result.get_asset_materialization_events()
                      if e.event_specific_data.materialization.asset_key.to_user_string() == "docaxis/store"]
        volumes = store.volumes()
        assert metadata["received"].value == sum(v["received"] for v in volumes.values()) == len(
            store.query("SELECT 1 FROM deliveries"))
        agency = next(iter(volumes))
        assert metadata[f"{agency} received"].value == volumes[agency]["received"]
        assert metadata["packages_sent"].value == sum(statuses_sent(sb).values())
        [check] = [e for e in result.get_asset_check_evaluations() if e.asset_check_key.name == "overdue_documents"]
        assert check.passed is False and check.severity.value == "WARN"  # the traffic is past due
        assert check.metadata["overdue"].value == len(store.overdue()) > 0
        # Run again: the axis has nothing new, the store takes nothing twice, no status goes out twice.
        before, sent = store.counts(), statuses_sent(sb)
        assert run_job().success
        assert store.counts() == before and statuses_sent(sb) == sent


KILLS = {
    # A landing page is committed (stored, fsynced), then the process dies after settling two of its messages.
    "between-storing-and-acknowledging": ("connectors.document_exchange", "DocumentExchangeConnector", "acknowledge", 3),
    # The first landing part is in the store; the process dies as the second is taken in.
    "while-taking-in": ("hub.docaxis.store", "DocumentStore", "take_in", 2),
    # Everything is stored; the process dies as the first status 01 is about to leave.
    "before-the-first-01-leaves": ("connectors.document_exchange", "DocumentExchangeConnector", "send", 1),
}


@pytest.mark.parametrize("point", list(KILLS))
def test_a_kill_at_any_point_loses_nothing_and_duplicates_nothing(sandbox_factory, tmp_path: Path, monkeypatch,
                                                                   point: str) -> None:
    module, cls, method, at = KILLS[point]
    with sandbox_factory(residents=1_500, seed=3, rate_limit=10_000, visibility_timeout_s=0.5) as sb:
        env = hub_env(sb, tmp_path, HUB_VDXP_PAGE_SIZE="10")
        killed = run_python(f"""
            import os, signal
            from {module} import {cls}
            real, calls = {cls}.{method}, []
            def dying(*args, **kwargs):
                calls.append(1)
                if len(calls) == {at}:
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(*args, **kwargs)
            {cls}.{method} = dying
            import dagster as dg
            from pipelines.definitions import defs
            defs.resolve_job_def("docaxis_exchange").execute_in_process(instance=dg.DagsterInstance.ephemeral())
        """, env)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        landed = {d for p in (tmp_path / "lake/landing/vdxp/parts").glob("*.records.parquet")
                  for d in pq.read_table(p, columns=["doc_id"]).column("doc_id").to_pylist()}
        acknowledged = {d for d in truth_rows(sb) if settled(sb, d)}
        assert acknowledged <= landed  # never settled before stored
        if point == "between-storing-and-acknowledging":
            assert len(acknowledged) == 2 and len(landed) == 10  # the page of 10 is stored, 8 of it unsettled
        use_env(monkeypatch, env)
        assert run_job().success
        assert_store_is_the_truth(sb, store_of(env))
        outbox = store_of(env).outbox_summary()
        assert outbox == {"sent": sum(statuses_sent(sb).values())}


# -- real public samples --------------------------------------------------------------------------------

def _zipped_doc(name: str, data: bytes) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return base64.b64encode(buffer.getvalue()).decode()


def _truncated(text: str) -> str:
    start = text.index('<edXML:ContentTransferEncoded xmlns:edXML="http://www.mic.gov.vn/TBT/QCVN_102_2016">')
    start = text.index(">", start) + 1
    return text[start:text.index("</edXML:ContentTransferEncoded>", start)]


def _deliver(sb, message_type: str, recipients: tuple[str, ...], package: bytes, sender: str) -> str:
    """Put a package in the hub's queue as if another system had sent it."""
    axis = sb.sandbox.vdxp
    doc_id = str(uuid.uuid4())
    with axis._lock:
        axis._append(Message(doc_id, message_type, sender, recipients, axis.now(), package))
    return doc_id


def test_real_samples_are_stored_understood_or_quarantined(sandbox_factory, tmp_path: Path, monkeypatch) -> None:
    word = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(range(256)) * 40  # an OLE (.doc) file's magic and a body
    new_text = (SAMPLES / "edxml_new_document_sample.edxml").read_text(encoding="utf-8")
    new_text = new_text.replace("<edXML:OrganId>28.22.H17</edXML:OrganId>", f"<edXML:OrganId>{OWN_TO}</edXML:OrganId>")
    repaired = new_text.replace(_truncated(new_text), _zipped_doc("1896_QD-TTg_m_294779.doc", word)).encode()
    broken = new_text.encode()  # the copy's attachment is truncated base64, as the samples' README says
    update_text = (SAMPLES / "edxml_update_document_sample.edxml").read_text(encoding="utf-8")
    update_text = (update_text.replace("<edXML:OrganId>000.00.00.H53</edXML:OrganId>", f"<edXML:OrganId>{OWN_TO}</edXML:OrganId>")
                   .replace("<edXML:OrganId>000.00.12.H53</edXML:OrganId>", f"<edXML:OrganId>{OWN_OTHER}</edXML:OrganId>"))
    update = update_text.replace(_truncated(update_text), _zipped_doc("x.doc", word)).encode()
    status = (SAMPLES / "edxml_status_05_processing_sample.edxml").read_bytes().replace(
        b"<edXML:OrganId>000.00.00.G22</edXML:OrganId>\n\t\t\t<edXML:Code>",
        f"<edXML:OrganId>{OWN_FROM}</edXML:OrganId>\n\t\t\t<edXML:Code>".encode())
    assert status != (SAMPLES / "edxml_status_05_processing_sample.edxml").read_bytes()
    with sandbox_factory(residents=1_500, seed=2, rate_limit=10_000, visibility_timeout_s=0.5) as sb:
        laughs = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
                  b'<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"><Subject>&lol2;</Subject></edXML>')
        ids = {"new": _deliver(sb, "edoc", (OWN_TO,), repaired, "000.00.00.A80"),
               "broken": _deliver(sb, "edoc", (OWN_TO,), broken, "000.00.00.A80"),
               "entities": _deliver(sb, "edoc", (OWN_TO,), laughs, "000.00.00.A80"),
               "update": _deliver(sb, "edoc", (OWN_TO, OWN_OTHER), update, "000.00.00.G22"),
               "status": _deliver(sb, "status", (OWN_FROM,), status, "000.00.00.H41")}
        env = hub_env(sb, tmp_path, HUB_QUARANTINE_MAX_RATE="0.1")  # 2 refused of 50 is this test's point
        use_env(monkeypatch, env)
        assert run_job().success
        store = store_of(env)
        new = store.document(ids["new"], "H31.03")
        message = new["message"]
        assert (message["code_number"], message["code_notation"], message["subject"]) == (
            "74fass22", "VPCP-TTĐT", "V/v kết nối, liên thông phần mềm quản lý văn bản")
        assert (message["promulgation_date"], message["due_date"], message["document_type"], message["priority"]) == (
            "2019-01-16", "2018-09-28", "Công văn", 0)
        assert message["from"] == {"organ_id": "000.00.00.A80",
                                   "name": "UBND xã Hòa Tiến - UBND huyện Hòa Vang - Thành phố Đà Nẵng"}
        assert message["signature"]["verdict"] == "unsupported-algorithm" and "SHA-1" in message["signature"]["reason"]
        [attachment] = new["attachments"]
        assert attachment["name"] == "1896_QD-TTg_m_294779.doc" and attachment["zipped"]
        assert store.blobs.read(attachment["sha256"]) == word
        assert store.blobs.read(message["edxml"]["sha256"]) == repaired
        # The truncated copy and a package declaring entities are refused with the reason, settled 'fail',
        # and take nothing else with them.
        refused = {q["doc_id"]: q for q in store.quarantined()}
        assert set(refused) == {ids["broken"], ids["entities"]}
        assert "not valid base64" in refused[ids["broken"]]["reason"]
        assert "DTDs and entity declarations are refused" in refused[ids["entities"]]["reason"]
        assert {settled(sb, ids["broken"]), settled(sb, ids["entities"])} == {"fail"}
        assert settled(sb, ids["new"]) == "done"
        assert store.blobs.read(refused[ids["broken"]]["raw_sha256"]).startswith(b'<?xml version="1.0" encoding')
        assert not store.query("SELECT 1 FROM messages WHERE doc_id IN (?, ?)", [ids["broken"], ids["entities"]])
        # The update acts on the document its Bussiness names, which never came: kept, waiting for it.
        [thread] = store.query("SELECT * FROM documents WHERE thread = ?", ["000.00.00.G22,2014/02/30,7806/VPCP-TTĐT"])
        assert (thread["updates"], thread["origin_doc_id"], thread["current_doc_id"]) == (1, None, ids["update"])
        assert {d["agency"] for d in store.query("SELECT agency FROM deliveries WHERE doc_id = ?", [ids["update"]])} == {
            "H31.03", "H31.05"}
        changes = store.document(ids["update"], "H31.05")["message"]["receiver_changes"]
        assert changes == [{"organ_id": "000.00.00.H41", "receiver_type": 0}, {"organ_id": "000.00.00.H14",
                                                                                "receiver_type": 1}]
        # The status package extends the trail of the document it answers.
        [trail] = store.query("SELECT * FROM trail WHERE message_doc_id = ?", [ids["status"]])
        assert (trail["code"], trail["organ_id"], trail["document_id"], trail["status_time"]) == (
            "05", "000.00.00.H41", "000.00.00.G22,2015/09/30,7816/VPCP-TTĐT", "2015-09-20T04:08:36.000+00:00")
        # Status 01 to a sender the axis does not know is refused by the axis, and kept with its reason.
        refusals = [e for e in store.outbox_entries(("refused",)) if "000.00.00.A80" in e["to_organ_ids"]]
        assert len(refusals) == 1 and "106" in refusals[0]["last_error"]
        assert ("000.00.03.H31", "000.00.00.G22,2015/09/30,7816/VPCP-TTĐT", "01") in statuses_sent(sb)


def test_a_store_rebuilt_from_the_landing_is_the_same(sandbox_factory, tmp_path: Path, monkeypatch) -> None:
    """The landing is the store of record: a store lost with its disk is taken in again, identically."""
    with sandbox_factory(residents=1_500, seed=6, rate_limit=10_000, visibility_timeout_s=0.5) as sb:
        env = hub_env(sb, tmp_path)
        use_env(monkeypatch, env)
        assert run_job().success
        first = store_of(env).query("SELECT doc_id, thread, edxml_sha256, signature FROM messages ORDER BY doc_id")
        states = store_of(env).query("SELECT thread, state, current_doc_id FROM documents ORDER BY thread")
        from hub.docaxis.receiver import take_in_landing

        rebuilt = DocumentStore(tmp_path / "rebuilt", "H31")
        report = take_in_landing(rebuilt, HubLake(home=str(tmp_path)))
        assert report.stored == len(first) and report.redelivered == 0
        assert rebuilt.query("SELECT doc_id, thread, edxml_sha256, signature FROM messages ORDER BY doc_id") == first
        assert rebuilt.query("SELECT thread, state, current_doc_id FROM documents ORDER BY thread") == states


def test_a_run_with_nothing_new_reads_no_part_writes_nothing_and_an_increment_reads_only_its_part(
        sandbox_factory, tmp_path: Path, monkeypatch) -> None:
    import hub.docaxis.exchange as exchange_module
    import hub.docaxis.receiver as receiver

    with sandbox_factory(residents=1_500, seed=8, rate_limit=10_000, visibility_timeout_s=0.5) as sb:
        env = hub_env(sb, tmp_path, HUB_VDXP_PAGE_SIZE="10")
        use_env(monkeypatch, env)
        reads: list[str] = []
        writes: list[int] = []
        keys: list[int] = []
        read, write, signer = receiver._read_part, DocumentStore._write, exchange_module.load_signer
        monkeypatch.setattr(receiver, "_read_part", lambda path: reads.append(path.name) or read(path))
        monkeypatch.setattr(DocumentStore, "_write", lambda self: writes.append(1) or write(self))
        monkeypatch.setattr(exchange_module, "load_signer", lambda settings: keys.append(1) or signer(settings))
        assert run_job().success
        records, quarantine = HubLake(home=str(tmp_path)).committed_files("vdxp", "documents")
        assert sorted(reads) == sorted(p.name for p in records + quarantine) and len(reads) > 1 and keys
        store = store_of(env)
        before, sent = store.counts(), statuses_sent(sb)
        assert store.outbox_summary() == {"sent": sum(sent.values())}  # every 01 left with the run that queued it
        for seen in (reads, writes, keys):
            seen.clear()
        # Nothing new: no part is read, the store takes no write transaction, the signing key is not read.
        assert run_job().success
        assert (reads, writes, keys) == ([], [], [])
        assert store.counts() == before and statuses_sent(sb) == sent
        # One new document on the axis: its part alone is read, it is stored once and answered.
        original = next(r for r in truth_rows(sb).values() if r["message_type"] == "edoc" and r["business_type"] == 0
                        and r["delivered_to"])
        new = _deliver(sb, "edoc", (OWN_TO,), sb.sandbox.vdxp.package(original["doc_id"]), original["from_organ_id"])
        assert run_job().success
        [part] = reads
        assert part not in {p.name for p in records + quarantine}
        assert store.counts()["messages"] == before["messages"] + 1 and settled(sb, new) == "done"
        answered = store.query("SELECT count(*) AS n FROM deliveries WHERE doc_id = ?", [new])[0]["n"]
        assert answered and sum(statuses_sent(sb).values()) == sum(sent.values()) + answered
