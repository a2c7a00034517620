"""The sandbox's document axis (national-systems.md §4) behaves as the spec says, over real HTTP with zeep.

The shared ``clean_sandbox`` is only read here (GetEdoc, refused or outward sends), so other suites
find its queue untouched; anything that lists or settles gets a sandbox of its own with a fake clock.
"""

from __future__ import annotations

import base64
import io
import re
import time
import uuid
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import RARE_DATA_FAULTS
import requests
import zeep
from lxml import etree
from zeep.exceptions import Fault
from zeep.wsse.username import UsernameToken

from sandbox.edxml_traffic import EDXML_NS, REPLACE, REVOKE, UPDATE, generate_traffic, message_counts
from sandbox.faults import FaultPlan
from sandbox.ground_truth import GroundTruth
from sandbox.province import generate_residents

NS = "urn:vn:gov:vdxp:edoc:1.0"
SAMPLES = Path(__file__).resolve().parents[2] / "shared/reference/samples"
SAFE = etree.XMLParser(load_dtd=False, resolve_entities=False, no_network=True, huge_tree=True)
OWN_FROM = "000.00.02.H31"  # Sở Tư pháp, one of the province's agencies
OUTSIDE = ("000.00.00.G22", "000.00.00.H22", "000.00.00.G12")
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"><Subject>&lol3;</Subject></edXML>"""
XXE = b"""<?xml version="1.0"?><!DOCTYPE edXML [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016">&x;</edXML>"""


class FakeClock:
    """A monotonic clock that moves only when told (starts at the real one so deadlines stay valid)."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def edoc_client(env: dict[str, str], password: str | None = None, **token: Any) -> zeep.Client:
    wsse = UsernameToken(env["HUB_VDXP_SYSTEM_ID"], password or env["HUB_VDXP_SECRET"], use_digest=True, **token)
    return zeep.Client(wsdl=env["HUB_VDXP_URL"] + "/edoc?wsdl", wsse=wsse)


def fault_code(fault: Fault) -> str:
    return fault.detail.find(f".//{{{NS}}}MaLoi").text


def expect_fault(code: str, call: Callable[[], Any]) -> Fault:
    with pytest.raises(Fault) as info:
        call()
    assert fault_code(info.value) == code, info.value.message
    return info.value


def with_clock(running) -> FakeClock:
    clock = FakeClock()
    running.sandbox.vdxp.clock = clock
    return clock


def truth_doc_ids(running) -> set[str]:
    records = running.sandbox.truth.record_table().to_pylist()
    return {r["record_key"] for r in records if r["system"] == "vdxp" and r["role"] == "document"}


def documents(running) -> list[dict[str, Any]]:
    return running.sandbox.truth.tables["documents"].to_pylist()


# -- tolerant edXML reading (localname only: prefixes and order vary) --------------------------------

def first(element: etree._Element, name: str) -> etree._Element | None:
    return next(element.iter(f"{{*}}{name}"), None)


def child(element: etree._Element, name: str) -> etree._Element | None:
    return next((c for c in element if isinstance(c.tag, str) and etree.QName(c).localname == name), None)


def children(element: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in element if isinstance(c.tag, str) and etree.QName(c).localname == name]


def text(element: etree._Element | None, name: str) -> str:
    found = child(element, name) if element is not None else None
    return (found.text or "").strip() if found is not None else ""


def sample(name: str) -> etree._Element:
    return etree.fromstring((SAMPLES / name).read_bytes(), SAFE)


def adjusted(name: str, sender: str = OWN_FROM, recipients: tuple[str, ...] = OUTSIDE) -> etree._Element:
    """A real sample with From set to one of the caller's agencies and its recipients to known ones."""
    root = sample(name)
    header = first(root, "MessageHeader")
    child(child(header, "From"), "OrganId").text = sender
    for k, to in enumerate(children(header, "To")):
        child(to, "OrganId").text = recipients[k % len(recipients)]
    response_for = child(header, "ResponseFor")
    if response_for is not None:
        child(response_for, "OrganId").text = recipients[0]
    return root


def as_bytes(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


# -- directory and authentication ---------------------------------------------------------------------

def test_wsdl_and_get_agencies(clean_sandbox) -> None:
    wsdl = requests.get(clean_sandbox.env["HUB_VDXP_URL"] + "/edoc?wsdl", timeout=10)
    assert wsdl.status_code == 200 and b"urn:vn:gov:vdxp:edoc:1.0" in wsdl.content
    agencies = edoc_client(clean_sandbox.env).service.GetAgencies()
    by_code = {a.Code: a for a in agencies}
    assert by_code["H31"].Code102 == "000.00.00.H31" and by_code["H31"].ParentCode is None
    assert by_code["H31.02"].Code102 == "000.00.02.H31" and by_code["H31.02"].ParentCode == "H31"
    assert {"G22", "G12", "H22"} <= set(by_code)
    assert all(a.Id and a.Name for a in agencies)


def test_wrong_password_is_fault_100(clean_sandbox) -> None:
    client = edoc_client(clean_sandbox.env, password="not-the-secret")
    expect_fault("100", client.service.GetAgencies)


def test_stale_created_is_fault_100(clean_sandbox) -> None:
    stale = datetime.now(timezone.utc) - timedelta(hours=2)
    fault = expect_fault("100", edoc_client(clean_sandbox.env, created=stale).service.GetAgencies)
    assert "Created" in fault.message


def test_replayed_nonce_is_fault_100(clean_sandbox) -> None:
    client = edoc_client(clean_sandbox.env, nonce=uuid.uuid4().hex, created=datetime.now(timezone.utc))
    assert client.service.GetAgencies()
    fault = expect_fault("100", client.service.GetAgencies)
    assert "replay" in fault.message


def test_missing_security_header_is_fault_100(clean_sandbox) -> None:
    client = zeep.Client(wsdl=clean_sandbox.env["HUB_VDXP_URL"] + "/edoc?wsdl")
    expect_fault("100", client.service.GetAgencies)


def test_unknown_ids_are_201(clean_sandbox) -> None:
    service = edoc_client(clean_sandbox.env).service
    expect_fault("201", lambda: service.GetEdoc(DocId="no-such-doc"))
    expect_fault("201", lambda: service.UpdateStatus(DocId="no-such-doc", Status="done"))
    expect_fault("201", lambda: service.GetSentEdocList(DocId="no-such-doc"))
    received = next(iter(truth_doc_ids(clean_sandbox)))
    expect_fault("201", lambda: service.GetSentEdocList(DocId=received))  # received, not sent by the caller


def test_limit_over_100_is_refused(clean_sandbox) -> None:
    service = edoc_client(clean_sandbox.env).service
    expect_fault("302", lambda: service.GetReceivedEdocList(MessageType="edoc", Limit=101))


def test_body_limit_is_1mb_except_send_edoc(clean_sandbox) -> None:
    padding = "<!--" + "x" * (2 << 20) + "-->"
    body = (f'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>{padding}'
            f'<e:GetEdocRequest xmlns:e="{NS}"><e:DocId>x</e:DocId></e:GetEdocRequest>'
            "</soapenv:Body></soapenv:Envelope>")
    answer = requests.post(clean_sandbox.env["HUB_VDXP_URL"] + "/edoc", data=body.encode(), timeout=10,
                           headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{NS}/GetEdoc"'})
    assert answer.status_code == 500 and b"exceeds 1048576 bytes" in answer.content
    root = adjusted("edxml_new_document_sample.edxml")
    first(root, "ContentTransferEncoded").text = base64.b64encode(b"\x00" * (3 << 20)).decode()
    result = edoc_client(clean_sandbox.env).service.SendEdoc(MessageType="edoc", Edxml=as_bytes(root))
    assert result.Status == "OK", result.ErrorDesc


# -- the generated traffic ----------------------------------------------------------------------------

def _check_attachment(attachment: etree._Element, encoding: str, mime: str) -> None:
    content_type = text(attachment, "ContentType")
    raw = base64.b64decode("".join(text(attachment, "ContentTransferEncoded").split()), validate=True)
    if encoding == "zip":
        assert content_type == "application/zip" and raw[:2] == b"PK"
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            assert archive.testzip() is None
            assert archive.namelist() == [text(attachment, "AttachmentName")]
            raw = archive.read(archive.namelist()[0])
    else:
        assert content_type == mime
    magic = {"application/pdf": b"%PDF", "application/msword": bytes.fromhex("d0cf11e0")}.get(mime)
    assert raw and (magic is None or raw.startswith(magic))
    if mime == "text/plain":
        raw.decode("utf-8")


def _check_edoc(root: etree._Element, row: dict[str, Any]) -> None:
    header = first(root, "MessageHeader")
    assert text(header, "DocumentId") == row["document_id"]
    assert text(child(header, "From"), "OrganId") == row["from_organ_id"]
    assert [text(to, "OrganId") for to in children(header, "To")] == row["to_organ_ids"]
    assert text(header, "Subject") and text(child(header, "Code"), "CodeNumber")
    business = first(root, "Bussiness")
    assert text(business, "BussinessDocType") == str(row["business_type"])
    if row["business_type"] in (REVOKE, UPDATE, REPLACE):
        assert text(business, "DocumentId") == row["target_document_id"]
    if row["business_type"] == UPDATE:
        assert children(first(business, "ReceiverList"), "Receiver")
    if row["business_type"] == REPLACE:
        assert text(first(business, "ReplacementInfo"), "DocumentId") == row["target_document_id"]
    attachments = list(root.iter("{*}Attachment"))
    manifest = first(root, "edXMLManifest")
    assert len(attachments) == row["attachment_count"] == len(children(manifest, "Reference"))
    for attachment, encoding, mime in zip(attachments, row["attachment_encodings"], row["attachment_types"]):
        _check_attachment(attachment, encoding, mime)


def _check_status(root: etree._Element, row: dict[str, Any], sent_ids: set[str]) -> None:
    header = first(root, "MessageHeader")
    assert text(header, "StatusCode") == row["status_code"]
    response_for = child(header, "ResponseFor")
    assert text(response_for, "DocumentId") == row["document_id"] and row["document_id"] in sent_ids
    assert text(response_for, "OrganId") == row["to_organ_ids"][0]
    assert text(child(header, "From"), "OrganId") == row["from_organ_id"]


def test_every_generated_package_parses_and_matches_truth(clean_sandbox) -> None:
    service = edoc_client(clean_sandbox.env).service
    rows = documents(clean_sandbox)
    sent_ids = set(clean_sandbox.sandbox.truth.tables["sent_documents"].column("document_id").to_pylist())
    records = {r["record_key"]: r["entity_id"] for r in clean_sandbox.sandbox.truth.record_table().to_pylist()
               if r["system"] == "vdxp" and r["role"] == "document"}
    prefixes = set()
    for row in rows:
        if row["revoked_after_delivery"]:  # not arrived until its original is settled: read it server-side
            package = clean_sandbox.sandbox.vdxp.package(row["doc_id"])
        else:
            answer = service.GetEdoc(DocId=row["doc_id"])
            assert answer.DocId == row["doc_id"] and answer.MessageType == row["message_type"]
            package = answer.Edxml
        root = etree.fromstring(package, SAFE)
        assert root.getroottree().docinfo.internalDTD is None
        assert root.tag == f"{{{EDXML_NS}}}edXML"
        assert records[row["doc_id"]] == row["document_id"]
        prefixes.add(first(root, "MessageHeader").prefix or "")
        if row["message_type"] == "edoc":
            _check_edoc(root, row)
        else:
            _check_status(root, row, sent_ids)
    assert {"edXML", ""} < prefixes  # the SDK's prefix, none, and at least one other
    assert {r["business_type"] for r in rows if r["message_type"] == "edoc"} == {0, 1, 2, 3}
    assert {r["status_code"] for r in rows if r["message_type"] == "status"} == {
        "01", "02", "03", "04", "05", "06", "13", "15", "16"}
    encodings = {e for r in rows for e in r["attachment_encodings"]}
    assert encodings == {"base64", "zip"}
    assert len({r["header_order"] for r in rows}) >= 2 and len({r["signature"] for r in rows}) == 3


def test_traffic_scale_and_revoked_after_delivery_truth(clean_sandbox) -> None:
    rows = documents(clean_sandbox)
    n_docs, n_status = message_counts(2_000)
    assert sum(r["message_type"] == "edoc" for r in rows) == n_docs == 40
    assert sum(r["message_type"] == "status" for r in rows) == n_status
    held = [r for r in rows if r["revoked_after_delivery"]]
    assert held and all(r["business_type"] == REVOKE for r in held)
    anomalies = [a for a in clean_sandbox.sandbox.truth.anomaly_table().to_pylist() if a["system"] == "vdxp"]
    assert sorted(a["record_key"] for a in anomalies) == sorted(r["target_doc_id"] for r in held)
    assert {a["anomaly"] for a in anomalies} == {"document_revoked_after_delivery"}
    assert message_counts(10) == (30, 16)


def test_determinism_per_seed() -> None:
    def build(seed: int) -> tuple[list[bytes], GroundTruth]:
        traffic = generate_traffic(generate_residents(1_500, seed=seed), seed)
        truth = GroundTruth()
        traffic.record_truth(truth)
        return [traffic.render(m) for m in traffic.messages], truth

    packages, truth = build(5)
    again, truth_again = build(5)
    other, truth_other = build(6)
    assert packages == again
    assert truth.record_table().equals(truth_again.record_table())
    assert truth.tables["documents"].equals(truth_again.tables["documents"])
    assert truth.anomaly_table().equals(truth_again.anomaly_table())
    assert packages != other
    assert not set(truth.record_table().column("record_key").to_pylist()) & set(
        truth_other.record_table().column("record_key").to_pylist())


def test_served_traffic_is_the_seeded_traffic(clean_sandbox) -> None:
    residents = generate_residents(2_000, seed=7, data_faults=RARE_DATA_FAULTS)  # as clean_sandbox
    traffic = generate_traffic(residents, 7)
    assert {m.doc_id for m in traffic.messages} == truth_doc_ids(clean_sandbox)
    message = traffic.messages[0]
    assert clean_sandbox.sandbox.vdxp.package(message.doc_id) == traffic.render(message)


def test_attachment_size_is_configurable() -> None:
    traffic = generate_traffic(generate_residents(500, seed=1), 1, attachment_size=200_000)
    message = next(m for m in traffic.messages if m.attachments and not m.attachments[0].zipped
                   and m.attachments[0].mime != "text/plain")
    root = etree.fromstring(traffic.render(message), SAFE)
    raw = base64.b64decode("".join(first(root, "ContentTransferEncoded").text.split()))
    assert 100_000 <= len(raw) <= 300_000 and len(raw) == message.attachments[0].size


# -- receiving: at-least-once -------------------------------------------------------------------------

def test_redelivery_after_visibility_timeout(sandbox_factory) -> None:
    with sandbox_factory(residents=1_500, seed=3, rate_limit=10_000) as sb:
        clock = with_clock(sb)
        service = edoc_client(sb.env).service
        listed = service.GetReceivedEdocList(MessageType="edoc", Limit=5)
        assert len(listed) == 5 and {k.DeliveryCount for k in listed} == {1}
        assert all(k.MessageType == "edoc" and k.To and k.From for k in listed)
        ids = [k.DocId for k in listed]
        following = service.GetReceivedEdocList(MessageType="edoc", Limit=5)
        assert not set(ids) & {k.DocId for k in following}
        clock.advance(59)
        assert not set(ids) & {k.DocId for k in service.GetReceivedEdocList(MessageType="edoc", Limit=100)}
        clock.advance(61)  # every listing so far has timed out
        again = {k.DocId: k.DeliveryCount for k in service.GetReceivedEdocList(MessageType="edoc", Limit=100)}
        assert {again[d] for d in ids} == {2}
        assert service.UpdateStatus(DocId=ids[0], Status="done") == "OK"
        assert service.UpdateStatus(DocId=ids[1], Status="fail") == "OK"
        assert service.UpdateStatus(DocId=ids[0], Status="fail") == "OK"  # idempotent
        clock.advance(61)
        third = {k.DocId: k.DeliveryCount for k in service.GetReceivedEdocList(MessageType="edoc", Limit=100)}
        assert ids[0] not in third and ids[1] not in third and third[ids[2]] == 3
        statuses = service.GetReceivedEdocList(MessageType="status", Limit=100)
        assert statuses and {k.MessageType for k in statuses} == {"status"}


def test_revoke_after_delivery_arrives_once_original_is_settled(sandbox_factory) -> None:
    with sandbox_factory(residents=1_500, seed=3, rate_limit=10_000) as sb:
        service = edoc_client(sb.env).service
        revoke = next(r for r in documents(sb) if r["revoked_after_delivery"])
        expect_fault("201", lambda: service.GetEdoc(DocId=revoke["doc_id"]))
        first_pass = {k.DocId for k in service.GetReceivedEdocList(MessageType="edoc", Limit=100)}
        assert revoke["target_doc_id"] in first_pass and revoke["doc_id"] not in first_pass
        service.UpdateStatus(DocId=revoke["target_doc_id"], Status="done")
        arrived = {k.DocId: k for k in service.GetReceivedEdocList(MessageType="edoc", Limit=100)}
        assert arrived[revoke["doc_id"]].DeliveryCount == 1
        root = etree.fromstring(service.GetEdoc(DocId=revoke["doc_id"]).Edxml, SAFE)
        assert text(first(root, "Bussiness"), "BussinessDocType") == "1"
        assert text(first(root, "Bussiness"), "DocumentId") == revoke["target_document_id"]


class Drain:
    """A receiver that lists, fetches, stores, then settles, until nothing is left; retries any failure."""

    def __init__(self, service, clock: FakeClock) -> None:
        self.service, self.clock = service, clock
        self.stored: dict[str, bytes] = {}
        self.events: list[tuple[str, str]] = []  # ("listed"|"settled", DocId) in order
        self.duplicates = 0

    def call(self, operation: Callable[[], Any]) -> Any:
        for _ in range(30):
            try:
                return operation()
            except Exception:  # noqa: BLE001 - injected 503s, resets, truncated or malformed answers
                continue
        raise AssertionError("an operation failed 30 times in a row")

    def round(self, message_type: str) -> bool:
        rows = self.call(lambda: self.service.GetReceivedEdocList(MessageType=message_type, Limit=7)) or []
        ids = [k.DocId for k in rows]
        self.duplicates += len(ids) - len(set(ids))
        for doc_id in dict.fromkeys(ids):
            self.events.append(("listed", doc_id))
            if doc_id not in self.stored:
                self.stored[doc_id] = self.call(lambda: self.service.GetEdoc(DocId=doc_id)).Edxml
            self.call(lambda: self.service.UpdateStatus(DocId=doc_id, Status="done"))
            self.events.append(("settled", doc_id))
        return bool(rows)

    def run(self) -> None:
        idle = 0
        while idle < 2:
            busy = [self.round(t) for t in ("edoc", "status")]
            if any(busy):
                idle = 0
            else:
                self.clock.advance(61)  # whatever a lost answer hid comes back
                idle += 1


@pytest.mark.parametrize("faults", [
    {"duplicate_record": 0.8},
    {"duplicate_record": 0.5, "http_503": 0.05, "reset": 0.05, "truncate": 0.05, "malformed": 0.05},
], ids=["duplicates", "duplicates+transport"])
def test_drain_ends_with_exactly_the_truth(sandbox_factory, faults) -> None:
    plan = FaultPlan(seed=11, rates={"vdxp": faults})
    with sandbox_factory(residents=1_500, seed=3, rate_limit=10_000, faults=plan) as sb:
        drain = Drain(edoc_client(sb.env).service, with_clock(sb))
        drain.run()
        assert set(drain.stored) == truth_doc_ids(sb)
        assert drain.duplicates > 0
        for doc_id, package in drain.stored.items():
            assert package == sb.sandbox.vdxp.package(doc_id)
        settled_at = {d: k for k, (kind, d) in enumerate(drain.events) if kind == "settled"}
        first_listed = {}
        for k, (kind, d) in enumerate(drain.events):
            first_listed.setdefault(d, k)
        for row in (r for r in documents(sb) if r["revoked_after_delivery"]):
            assert first_listed[row["doc_id"]] > settled_at[row["target_doc_id"]]
        empty = edoc_client(sb.env).service
        assert not drain.call(lambda: empty.GetReceivedEdocList(MessageType="edoc", Limit=100))


# -- sending ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,message_type", [
    ("edxml_new_document_sample.edxml", "edoc"),
    ("edxml_update_document_sample.edxml", "edoc"),
    ("edxml_status_05_processing_sample.edxml", "status"),
])
def test_real_samples_are_accepted_once_addressed(clean_sandbox, name, message_type) -> None:
    service = edoc_client(clean_sandbox.env).service
    root = adjusted(name)
    result = service.SendEdoc(MessageType=message_type, Edxml=as_bytes(root))
    assert result.Status == "OK" and result.ErrorCode is None, result.ErrorDesc
    uuid.UUID(result.DocId)
    header = first(root, "MessageHeader")
    expected = ([text(to, "OrganId") for to in children(header, "To")] if message_type == "edoc"
                else [text(child(header, "ResponseFor"), "OrganId")])
    recipients = service.GetSentEdocList(DocId=result.DocId)
    assert [r.OrganId for r in recipients] == list(dict.fromkeys(expected))
    expect_fault("201", lambda: service.GetEdoc(DocId=result.DocId))  # addressed to others only


def _without(name: str, element: str) -> bytes:
    root = adjusted(name)
    node = first(root, element)
    node.getparent().remove(node)
    return as_bytes(root)


@pytest.mark.parametrize("message_type,package,reason", [
    ("edoc", b"<edXML xmlns='http://www.mic.gov.vn/TBT/QCVN_102_2016'><edXMLEnvelope>", "not well-formed"),
    ("edoc", BILLION_LAUGHS, "DTD"),
    ("edoc", XXE, "DTD"),
    ("edoc", as_bytes(adjusted("edxml_new_document_sample.edxml", recipients=("000.00.00.Z99",))),
     "To/OrganId '000.00.00.Z99' is not an agency known"),
    ("edoc", (SAMPLES / "edxml_new_document_sample.edxml").read_bytes(), "From/OrganId '000.00.00.A80'"),
    ("edoc", _without("edxml_new_document_sample.edxml", "Subject"), "Subject is missing"),
    ("edoc", _without("edxml_new_document_sample.edxml", "Code"), "Code is missing"),
    ("edoc", _without("edxml_update_document_sample.edxml", "From"), "From is missing"),
    ("edoc", as_bytes(adjusted("edxml_status_05_processing_sample.edxml")), "To is missing"),
    ("status", _without("edxml_status_05_processing_sample.edxml", "StatusCode"), "StatusCode is missing"),
    ("status", _without("edxml_status_05_processing_sample.edxml", "ResponseFor"), "ResponseFor is missing"),
    ("edoc", b"<html><body>hello</body></html>", "expected edXML"),
], ids=["malformed", "billion-laughs", "xxe", "unknown-to", "foreign-from", "no-subject", "no-code", "no-from",
        "status-as-edoc", "no-status-code", "no-response-for", "not-edxml"])
def test_send_edoc_refuses_bad_packages(clean_sandbox, message_type, package, reason) -> None:
    result = edoc_client(clean_sandbox.env).service.SendEdoc(MessageType=message_type, Edxml=package)
    assert result.Status == "FAIL" and result.DocId is None
    assert re.fullmatch(r"\d{3}", result.ErrorCode)
    assert reason in result.ErrorDesc


def test_sent_edoc_list_progression(sandbox_factory) -> None:
    with sandbox_factory(residents=1_500, seed=3, rate_limit=10_000) as sb:
        clock = with_clock(sb)
        axis = sb.sandbox.vdxp
        axis.recipient_fail_rate = 0.0
        service = edoc_client(sb.env).service
        own = "000.00.03.H31"
        recipients = ("000.00.00.G22", "000.00.00.H22", own)
        package = as_bytes(adjusted("edxml_update_document_sample.edxml", recipients=recipients))
        doc_id = service.SendEdoc(MessageType="edoc", Edxml=package).DocId
        assert {r.Status for r in service.GetSentEdocList(DocId=doc_id)} == {"pending"}
        clock.advance(1.0)
        assert {r.Status for r in service.GetSentEdocList(DocId=doc_id)} == {"pending"}
        clock.advance(1.5)
        state = {r.OrganId: r for r in service.GetSentEdocList(DocId=doc_id)}
        assert state["000.00.00.G22"].Status == state["000.00.00.H22"].Status == "done"
        assert state["000.00.00.G22"].UpdatedTime.utcoffset() == timedelta(hours=7)
        assert state[own].Status == "pending"  # the province's own agency: the caller settles it itself
        mine = next(k for k in service.GetReceivedEdocList(MessageType="edoc", Limit=100) if k.DocId == doc_id)
        assert mine.To == own and mine.From == OWN_FROM and mine.DeliveryCount == 1
        assert service.GetEdoc(DocId=doc_id).Edxml == package
        service.UpdateStatus(DocId=doc_id, Status="fail")
        assert {r.OrganId: r.Status for r in service.GetSentEdocList(DocId=doc_id)}[own] == "fail"
        axis.recipient_fail_rate = 1.0
        other = as_bytes(adjusted("edxml_new_document_sample.edxml"))
        refused = service.SendEdoc(MessageType="edoc", Edxml=other).DocId
        clock.advance(2.0)
        assert {r.Status for r in service.GetSentEdocList(DocId=refused)} == {"fail"}
