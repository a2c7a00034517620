"""The API for local document-management systems over real HTTP, on a store filled from a sandbox.

Every endpoint authenticates, acts only for the client's own agency and is audited; documents come
with their package and files byte for byte; acknowledgements and statuses follow QCVN 102 and turn
into signed status packages on the axis; an outgoing document is built, signed, sent, delivered,
answered and recalled, each step visible in its trail; a send whose outcome is lost is not repeated.
"""

from __future__ import annotations

import base64
import hashlib
import signal
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, status_code_conformance

from connectors import edxml
from connectors.document_exchange import DocumentExchangeConnector
from hub.access_policy import AccessPolicy, register_client
from hub.audit_log import AuditLog, subject, verify
from hub.config import Settings
from hub.docaxis.api import create_app
from hub.docaxis.openapi import openapi_document
from hub.docaxis.sender import send_outbox, track_sent
from hub.docaxis.settings import DocaxisSettings
from hub.docaxis.signing import load_signer
from hub.docaxis.store import DocumentStore
from sandbox.document_exchange import Message
from sandbox.server import running
from tests.conftest import start_sandbox
from tests.docaxis_helpers import hub_env, run_job, run_python, sent_by_hub, use_env

OUTSIDE = "000.00.00.G22"  # Văn phòng Chính phủ
OWN_RECIPIENT = "000.00.07.H31"  # a province agency: the hub receives what is sent to it


@dataclass
class Hub:
    sb: Any
    env: dict[str, str]
    store: DocumentStore
    url: str
    keys: dict[str, str]  # agency → API key of its system
    audit_dir: Path
    audit: AuditLog

    def get(self, path: str, who: str, **params: Any) -> requests.Response:
        """GET as the system registered for agency ``who``."""
        return requests.get(self.url + path, params=params, headers=self.auth(who), timeout=30)

    def post(self, path: str, who: str, body: Any = None, **kw: Any) -> requests.Response:
        return requests.post(self.url + path, json=body, headers=self.auth(who), timeout=60, **kw)

    def auth(self, agency: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[agency]}"}

    def connector(self) -> DocumentExchangeConnector:
        return DocumentExchangeConnector.from_settings(Settings.from_env(self.env), self.env)

    def send(self):
        settings = DocaxisSettings.from_env(self.env)
        return send_outbox(self.store, self.connector(), load_signer(settings))


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Iterator[Hub]:
    home = tmp_path_factory.mktemp("hub")
    with start_sandbox(residents=1_500, seed=11, rate_limit=10_000, visibility_timeout_s=0.5) as sb, \
            pytest.MonkeyPatch.context() as patch:
        env = hub_env(sb, home)
        use_env(patch, env)
        assert run_job().success
        settings = DocaxisSettings.from_env(env)
        store = DocumentStore.open(settings)
        busiest = [r["agency"] for r in store.query("SELECT agency, count(*) n FROM deliveries GROUP BY agency "
                                                    "ORDER BY n DESC, agency")]
        revoking = store.query("SELECT d.agency FROM deliveries d JOIN messages m USING (doc_id) WHERE m.business_type = 1")
        agencies = sorted({*busiest[:3], "H31.07", "H31.02", revoking[0]["agency"]})
        keys = {a: register_client(settings.clients, f"dms-{a.lower().replace('.', '-')}", a, {}, [], rate=1000)
                for a in agencies}
        # One system registered under the QCVN 102 form of its agency's code: both forms name it.
        keys["legacy"] = register_client(settings.clients, "dms-legacy", "000.00.02.H31", {}, [], rate=1000)
        audit_dir = home / "dms-audit"
        audit = AuditLog(audit_dir, flush_interval=0)
        app = create_app(store, AccessPolicy(settings.clients), load_signer(settings), audit)
        with running(app) as url:
            yield Hub(sb, env, store, url, keys, audit_dir, audit)
        audit.close()


def busy_agency(hub: Hub) -> str:
    return max((a for a in hub.keys if a != "legacy"),
               key=lambda a: len(hub.store.query("SELECT 1 FROM deliveries WHERE agency = ?", [a])))


# -- who may ask -------------------------------------------------------------------------------------------

def test_every_endpoint_authenticates_and_serves_only_the_clients_agency(hub: Hub) -> None:
    agency = busy_agency(hub)
    doc_id = hub.store.pending(agency)[0][0]["doc_id"]
    for path in ("/v1/documents", f"/v1/documents/{doc_id}", f"/v1/documents/{doc_id}/edxml", "/v1/outgoing",
                 "/v1/overdue", f"/v1/documents/{doc_id}/attachments/1"):
        bare = requests.get(hub.url + path, timeout=10)
        assert bare.status_code == 401 and bare.json()["error"] == "unauthenticated", path
        wrong = requests.get(hub.url + path, headers={"Authorization": "Bearer lgsp.dms-h31-02." + "A" * 43},
                             timeout=10)
        assert wrong.status_code == 401, path
    assert requests.post(hub.url + f"/v1/documents/{doc_id}/ack", timeout=10).status_code == 401
    other = next(a for a in hub.keys if a not in (agency, "legacy"))
    refused = hub.get("/v1/documents", other, agency=agency)
    assert refused.status_code == 403 and refused.json()["error"] == "agency_not_allowed"
    hidden = hub.get(f"/v1/documents/{doc_id}", other)
    if not hub.store.query("SELECT 1 FROM deliveries WHERE doc_id = ? AND agency = ?", [doc_id, other]):
        assert hidden.status_code == 404  # another agency's document does not exist for this one
    assert hub.get("/v1/documents", "legacy", agency="H31.02").status_code == 200  # both code forms name it
    assert hub.get("/v1/documents", agency, agency="000.00.00.H31" if agency != "H31" else "H31.01").status_code == 403
    assert hub.get("/v1/documents", agency, bogus="1").json()["error"] == "unknown_parameter"
    assert hub.get("/v1/documents", agency, limit="0").json()["error"] == "invalid_parameter"
    assert hub.get("/v1/documents/not%20an%20id", agency).status_code in (400, 404)
    for public in ("/openapi.json", "/docs", "/healthz"):
        assert requests.get(hub.url + public, timeout=10).status_code == 200
    document = requests.get(hub.url + "/openapi.json", timeout=10).json()
    assert {"/v1/documents", "/v1/documents/{doc_id}/status", "/v1/outgoing", "/v1/overdue"} <= set(document["paths"])


# -- receiving side ----------------------------------------------------------------------------------------

def test_pending_documents_come_with_their_package_and_files_and_leave_once_acknowledged(hub: Hub) -> None:
    agency = busy_agency(hub)
    listed = hub.get("/v1/documents", agency).json()
    items = listed["items"]
    assert items and listed["agency"] == agency and {i["delivery"] for i in items} <= {"received", "delivered"}
    page = hub.get("/v1/documents", agency, limit=1).json()
    assert len(page["items"]) == 1 and page["next"] == page["items"][0]["position"]
    rest = hub.get("/v1/documents", agency, after=page["next"]).json()["items"]
    assert [i["doc_id"] for i in page["items"] + rest] == [i["doc_id"] for i in items]
    target = next(i for i in items if i["attachments"])
    doc_id = target["doc_id"]
    found = hub.get(f"/v1/documents/{doc_id}", agency)
    assert found.status_code == 200 and found.headers["cache-control"] == "no-store"
    body = found.json()
    assert body["delivery"]["state"] == "delivered" and body["message"]["doc_id"] == doc_id
    package = hub.get(f"/v1/documents/{doc_id}/edxml", agency)
    assert package.content == hub.sb.sandbox.vdxp.package(doc_id)
    assert package.headers["content-type"].startswith("application/xml")
    parsed = edxml.parse(package.content)
    for meta, original in zip(body["attachments"], parsed.attachments):
        file = hub.get(f"/v1/documents/{doc_id}/attachments/{meta['position']}", agency)
        assert file.status_code == 200 and file.content == original.data
        assert hashlib.sha256(file.content).hexdigest() == meta["sha256"] and file.headers["etag"] == f'"{meta["sha256"]}"'
        assert file.headers["content-type"].split(";")[0] == meta["mime"]
    assert hub.get(f"/v1/documents/{doc_id}/attachments/99", agency).status_code == 404
    ack = hub.post(f"/v1/documents/{doc_id}/ack", agency)
    assert ack.status_code == 200 and ack.json()["delivery"]["state"] == "acknowledged"
    assert doc_id not in [i["doc_id"] for i in hub.get("/v1/documents", agency).json()["items"]]
    again = hub.post(f"/v1/documents/{doc_id}/ack", agency, {"agency": agency})
    assert again.status_code == 200 and again.json()["delivery"] == ack.json()["delivery"]
    # The audit log names the document, the client and the parts returned, for each request.
    listings = [e for e in subject(hub.audit_dir, doc_id) if e.path == "/v1/documents"]
    assert listings and all(e.fields == ["summary"] for e in listings)  # listed: named among the keys returned
    entries = [e for e in subject(hub.audit_dir, doc_id) if e.path != "/v1/documents"]
    assert [e.path for e in entries][:3] == ["/v1/documents/{doc_id}", "/v1/documents/{doc_id}/edxml",
                                             "/v1/documents/{doc_id}/attachments/{position}"]
    assert {e.client_id for e in entries} == {f"dms-{agency.lower().replace('.', '-')}"}
    assert entries[0].fields == ["metadata", "attachments", "trail"] and entries[1].fields == ["edxml"]


def test_statuses_follow_the_rules_and_reach_the_sender_signed(hub: Hub) -> None:
    agency = busy_agency(hub)
    items = hub.get("/v1/documents", agency).json()["items"]
    plain = next(i for i in items if i["business"] == "new" and i["document_state"] == "active")
    path = f"/v1/documents/{plain['doc_id']}/status"
    first = hub.post(path, agency, {"code": "05", "staff": {"name": "Nguyễn Thị Lan", "department": "Văn thư"}})
    assert first.status_code == 202 and first.json()["created"] is True
    repeat = hub.post(path, agency, {"code": "05"})
    assert repeat.status_code == 200 and repeat.json()["created"] is False
    assert repeat.json()["trail_id"] == first.json()["trail_id"]
    assert hub.post(path, agency, {"code": "06"}).status_code == 202
    late = hub.post(path, agency, {"code": "03"})
    assert late.status_code == 409 and "06" in late.json()["message"]
    answer = hub.post(path, agency, {"code": "15"})
    assert answer.status_code == 409 and answer.json()["error"] == "status_not_allowed"
    for body, error in (({"code": "01"}, "invalid_body"), ({"code": "07"}, "invalid_body"),
                        ({"code": "05", "colour": "red"}, "unknown_field"), ({}, "missing_field")):
        refused = hub.post(path, agency, body)
        assert refused.status_code == 400 and refused.json()["error"] == error, body
    assert requests.post(hub.url + path, data="{", headers={**hub.auth(agency), "Content-Type": "application/json"},
                         timeout=10).json()["error"] == "malformed_json"
    assert requests.post(hub.url + path, data="code=05", headers=hub.auth(agency), timeout=10).status_code == 415
    assert hub.post("/v1/documents/no-such-doc/status", agency, {"code": "05"}).status_code == 404
    before = {doc_id for doc_id, _, _ in sent_by_hub(hub.sb, "status")}
    report = hub.send()
    assert report.sent >= 2 and not report.errors
    new = [(p, data) for doc_id, p, data in sent_by_hub(hub.sb, "status") if doc_id not in before]
    codes = {p.status.code: (p, data) for p, data in new}
    assert {"05", "06"} <= set(codes)
    package, data = codes["05"]
    message = hub.store.document(plain["doc_id"], agency, fetched=False)["message"]
    assert package.response_for[0].document_id == message["document_id"]
    assert package.response_for[0].organ_id == message["from"]["organ_id"]
    assert package.status.staff.staff == "Nguyễn Thị Lan"
    verdict = edxml.verify(data)
    assert verdict.status == "valid" and verdict.algorithm.endswith("rsa-sha256")
    trail = hub.get(f"/v1/documents/{plain['doc_id']}", agency).json()["trail"]
    assert [t["code"] for t in trail if t["direction"] == "sent"] == ["01", "05", "06"]


def test_a_revoke_is_answered_15_or_16_and_nothing_else(hub: Hub) -> None:
    rows = hub.store.query("SELECT d.doc_id, d.agency FROM deliveries d JOIN messages m USING (doc_id) "
                           "WHERE m.business_type = 1")
    doc_id, agency = rows[0]["doc_id"], rows[0]["agency"]
    body = hub.get(f"/v1/documents/{doc_id}", agency).json()
    assert body["message"]["business"] == "revoke" and body["document"]["state"] == "revoked"
    assert body["document"]["origin_doc_id"] in [v["doc_id"] for v in body["versions"]]
    assert hub.post(f"/v1/documents/{doc_id}/status", agency, {"code": "05"}).status_code == 409
    assert hub.post(f"/v1/documents/{doc_id}/status", agency, {"code": "15"}).status_code == 202


# -- sending side ------------------------------------------------------------------------------------------

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 1200 + b"\n%%EOF\n"
DOC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"van ban " * 20_000


def outgoing_body(number: str, **extra: Any) -> dict[str, Any]:
    return {"request_id": f"req-{number}", "recipients": [OUTSIDE, OWN_RECIPIENT], "code_number": number,
            "code_notation": "STP-VP", "subject": "V/v phối hợp xác minh hộ tịch", "promulgation_date": "2026-11-20",
            "due_date": "2026-11-25", "document_type": {"type": "2", "detail": "18", "name": "Công văn"},
            "signer": {"competence": "KT. GIÁM ĐỐC", "position": "Phó Giám đốc", "full_name": "Trần Văn Minh"},
            "priority": 1, "files": [
                {"name": f"{number}_STP_VP.pdf", "mime": "application/pdf", "zipped": False,
                 "content_base64": base64.b64encode(PDF).decode()},
                {"name": f"{number}_phu_luc.doc", "content_base64": base64.b64encode(DOC).decode()}], **extra}


def test_an_outgoing_document_is_sent_signed_delivered_answered_and_recalled(hub: Hub) -> None:
    sender = "H31.02"
    created = hub.post("/v1/outgoing", sender, outgoing_body("451"))
    assert created.status_code == 202, created.text
    sent = created.json()
    assert sent["document_id"] == "000.00.02.H31,2026/11/20,451/STP-VP"
    assert {r["delivery"] for r in sent["recipients"]} == {"queued"}
    retried = hub.post("/v1/outgoing", sender, outgoing_body("451"))
    assert retried.status_code == 200 and retried.json()["id"] == sent["id"]
    clash = hub.post("/v1/outgoing", sender, outgoing_body("451", request_id="req-other"))
    assert clash.status_code == 409 and clash.json()["error"] == "document_exists"
    unknown = hub.post("/v1/outgoing", sender, outgoing_body("452", recipients=["000.00.00.Z99"]))
    assert unknown.status_code == 400 and "recipients/0" in unknown.json()["message"]
    bad_file = outgoing_body("453")
    bad_file["files"][1]["content_base64"] = "not base64!"
    assert "files/1" in hub.post("/v1/outgoing", sender, bad_file).json()["message"]
    assert hub.post("/v1/outgoing", sender, outgoing_body("454", agency="H31.07")).status_code == 403
    # Sent through the axis: signed RSA-SHA256, files as submitted, to both recipients.
    assert hub.send().sent >= 1
    [(axis_id, package, data)] = [s for s in sent_by_hub(hub.sb, "edoc") if s[1].document_id == sent["document_id"]]
    assert edxml.verify(data).status == "valid"
    assert [r.organ_id for r in package.recipients] == [OUTSIDE, OWN_RECIPIENT]
    assert [(a.name, a.data, a.zipped) for a in package.attachments] == [("451_STP_VP.pdf", PDF, False),
                                                                         ("451_phu_luc.doc", DOC, True)]
    assert (package.subject, package.signer_name, package.priority) == ("V/v phối hợp xác minh hộ tịch",
                                                                        "Trần Văn Minh", 1)
    state = hub.get(f"/v1/outgoing/{sent['id']}", sender).json()
    assert state["sending"]["state"] == "sent" and state["sending"]["axis_doc_id"] == axis_id
    assert {r["delivery"] for r in state["recipients"]} == {"pending"}
    # The province's own recipient gets it through the hub, answers 01 by itself; the outside one settles.
    axis = hub.sb.sandbox.vdxp
    axis.recipient_fail_rate = 0.0
    real_clock = axis.clock
    axis.clock = lambda: real_clock() + 5  # past the outside recipient's delay
    try:
        assert run_job().success
        track_sent(hub.store, hub.connector())
    finally:
        axis.clock = real_clock
    own = hub.store.query("SELECT d.doc_id FROM deliveries d JOIN messages m USING (doc_id) "
                          "WHERE m.document_id = ? AND d.agency = 'H31.07'", [sent["document_id"]])
    assert len(own) == 1 and own[0]["doc_id"] == axis_id
    assert run_job().success  # takes in the 01 the own recipient's delivery produced
    state = hub.get(f"/v1/outgoing/{sent['id']}", sender).json()
    recipients = {r["organ_id"]: r for r in state["recipients"]}
    assert recipients[OUTSIDE]["delivery"] == "done" and recipients[OWN_RECIPIENT]["delivery"] == "done"
    assert recipients[OWN_RECIPIENT]["last_status"] == "01"
    # An outside recipient's status package lands on the document's trail and row.
    answer = edxml.sign(edxml.build(edxml.Package(
        kind="status", sender=edxml.Organ(OUTSIDE, "Văn phòng Chính phủ"),
        response_for=(edxml.DocumentRef("000.00.02.H31", "451/STP-VP", None, sent["document_id"]),),
        status=edxml.Status("03", "Đã tiếp nhận văn bản"))), *_outside_signer())
    with axis._lock:
        axis._append(Message(str(uuid.uuid4()), "status", OUTSIDE, ("000.00.02.H31",), axis.now(), answer))
    assert run_job().success
    state = hub.get(f"/v1/outgoing/{sent['id']}", sender).json()
    assert {r["organ_id"]: r["last_status"] for r in state["recipients"]}[OUTSIDE] == "03"
    assert ("03", OUTSIDE, "received") in [(t["code"], t["organ_id"], t["direction"]) for t in state["trail"]]
    # Overdue: due 2026-11-25, no 06 from either recipient.
    owed_to = hub.get("/v1/overdue", sender).json()["owed_to"]
    assert {o["counterpart"] for o in owed_to if o["document_id"] == sent["document_id"]} == {OUTSIDE, OWN_RECIPIENT}
    # Recall (13): one status package to each recipient; the province's own one may answer it (15).
    recalled = hub.post(f"/v1/outgoing/{sent['id']}/recall", sender)
    assert recalled.status_code == 202 and sorted(recalled.json()["recalled_from"]) == [OUTSIDE, OWN_RECIPIENT]
    assert hub.post(f"/v1/outgoing/{sent['id']}/recall", sender).json()["recalled_from"] == []
    hub.send()
    thirteens = [p for _, p, _ in sent_by_hub(hub.sb, "status") if p.status.code == "13"]
    assert sorted(p.response_for[0].organ_id for p in thirteens) == [OUTSIDE, OWN_RECIPIENT]
    assert run_job().success  # the own recipient receives the 13
    assert hub.post(f"/v1/documents/{axis_id}/status", "H31.07", {"code": "15"}).status_code == 202
    listed = hub.get("/v1/outgoing", sender).json()["items"]
    assert sent["id"] in [i["id"] for i in listed]


def test_a_sent_document_can_be_replaced_and_the_replacement_says_so(hub: Hub) -> None:
    sender = "H31.02"
    original = hub.post("/v1/outgoing", sender, outgoing_body("481", recipients=[OUTSIDE])).json()
    foreign = hub.post("/v1/outgoing", sender, outgoing_body("482", recipients=[OUTSIDE], business={
        "type": "replace", "document_id": "000.00.00.G22,2026/11/01,1/VPCP"}))
    assert foreign.status_code == 400 and foreign.json()["error"] == "unknown_document"
    replacing = hub.post("/v1/outgoing", sender, outgoing_body("483", recipients=[OUTSIDE], business={
        "type": "replace", "document_id": original["document_id"], "reason": "Văn bản thay thế"}))
    assert replacing.status_code == 202 and replacing.json()["business"] == "replace"
    hub.send()
    [(_, package, _)] = [s for s in sent_by_hub(hub.sb, "edoc") if s[1].document_id == replacing.json()["document_id"]]
    assert (package.business.doc_type, package.business.document_id) == (3, original["document_id"])
    assert [r.document_id for r in package.business.replacements] == [original["document_id"]]
    owed_to = {o["document_id"] for o in hub.get("/v1/overdue", sender).json()["owed_to"]}
    assert original["document_id"] not in owed_to and replacing.json()["document_id"] in owed_to
    assert_volumes_count_what_overdue_lists(hub.store)


def assert_volumes_count_what_overdue_lists(store: DocumentStore) -> None:
    """The per-agency figures the store asset reports (counted in SQL) agree with the overdue list."""
    listed: Counter = Counter()
    for item in store.overdue():
        received = item["direction"] == "received"
        listed[(item["owed_by"] if received else item["agency"], "overdue" if received else "sent_overdue")] += 1
    counted = Counter({(agency, metric): figures[metric] for agency, figures in store.volumes().items()
                       for metric in ("overdue", "sent_overdue") if figures[metric]})
    assert counted == listed and {m for _, m in listed} == {"overdue", "sent_overdue"}


def _outside_signer() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    from datetime import datetime, timedelta, timezone

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Văn phòng Chính phủ")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(22).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=3))
            .sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()), cert.public_bytes(serialization.Encoding.PEM))


def test_a_document_whose_send_answer_was_lost_is_not_sent_again(hub: Hub) -> None:
    sender = "H31.02"
    hub.send()  # nothing else waits in the outbox: the document below is the first (and only) thing sent
    created = hub.post("/v1/outgoing", sender, outgoing_body("471", recipients=[OUTSIDE])).json()
    # Another process sends it and dies right after the axis took it, before recording the DocId.
    killed = run_python("""
        import os, signal
        from connectors.document_exchange import DocumentExchangeConnector
        from connectors.registry import build_connector
        from hub.config import Settings
        from hub.docaxis.sender import send_outbox
        from hub.docaxis.settings import DocaxisSettings
        from hub.docaxis.signing import load_signer
        from hub.docaxis.store import DocumentStore
        real = DocumentExchangeConnector.send
        def sent_then_died(self, package, message_type="edoc"):
            real(self, package, message_type)
            os.kill(os.getpid(), signal.SIGKILL)
        DocumentExchangeConnector.send = sent_then_died
        settings = DocaxisSettings.from_env()
        send_outbox(DocumentStore.open(settings), build_connector("vdxp", Settings.from_env()), load_signer(settings))
    """, hub.env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    copies = lambda: [s for s in sent_by_hub(hub.sb, "edoc") if s[1].document_id == created["document_id"]]  # noqa: E731
    assert len(copies()) == 1
    hub.send()
    state = hub.get(f"/v1/outgoing/{created['id']}", sender).json()
    assert state["sending"]["state"] == "unknown" and "may or may not" in state["sending"]["last_error"]
    assert len(copies()) == 1 and {r["delivery"] for r in state["recipients"]} == {"queued"}


def test_overdue_documents_are_listed_until_finished(hub: Hub) -> None:
    agency = busy_agency(hub)
    owed = hub.get("/v1/overdue", agency).json()["owed"]
    assert owed and all(o["owed_by"] == agency and o["due_date"] < hub.store.today().isoformat() for o in owed)
    first = owed[0]
    assert hub.post(f"/v1/documents/{first['doc_id']}/status", agency, {"code": "06"}).status_code in (200, 202)
    after = [o["document_id"] for o in hub.get("/v1/overdue", agency).json()["owed"]]
    assert first["document_id"] not in after and len(after) == len(owed) - 1
    assert hub.store.volumes()[agency]["overdue"] == len(after)


def test_every_request_is_in_the_audit_log_and_the_chain_holds(hub: Hub) -> None:
    agency = busy_agency(hub)
    hub.audit.flush()
    before = verify(hub.audit_dir, hub.audit.public_key).entries
    hub.get("/v1/documents", agency)
    requests.get(hub.url + "/v1/documents", timeout=10)  # refused: audited too
    hub.get("/v1/nowhere", agency)
    hub.audit.flush()
    report = verify(hub.audit_dir, hub.audit.public_key)
    assert report.ok, report.summary()
    assert report.entries == before + 3


# -- fuzzing against the contract ----------------------------------------------------------------------

CONTRACT = schemathesis.openapi.from_dict(openapi_document())
OPERATIONS = [(path, method) for path, methods in openapi_document()["paths"].items() for method in methods]


@pytest.mark.parametrize("mode", ["valid", "invalid"])
@pytest.mark.parametrize("path, method", OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_fuzz_every_operation_against_the_openapi_document(hub: Hub, path: str, method: str, mode: str) -> None:
    """Generated requests (following the document, and breaking it) never get a 5xx, get only the
    statuses the document lists, and the ones that break it are refused. Derandomised."""
    operation = CONTRACT[path][method.upper()]
    generation = GenerationMode.NEGATIVE if mode == "invalid" else GenerationMode.POSITIVE
    agency = busy_agency(hub)

    @settings(max_examples=25, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=generation))
    def check(case: Any) -> None:
        case.call_and_validate(base_url=hub.url, headers=hub.auth(agency), timeout=20,
                               checks=[not_a_server_error, status_code_conformance, negative_data_rejection])

    check()
