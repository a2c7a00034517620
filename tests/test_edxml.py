"""edXML (QCVN 102) packages: the real samples parse, what the hub builds reads back, signatures hold
or are reported for what they are, and hostile XML is refused before it can do harm."""

from __future__ import annotations

import base64
import io
import zipfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree

from connectors import edxml
from schemas.timefmt import VN_TZ

SAMPLES = Path(__file__).resolve().parents[2] / "shared/reference/samples"
NS = edxml.EDXML_NS
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"><Subject>&lol3;</Subject></edXML>"""
XXE = b"""<?xml version="1.0"?><!DOCTYPE edXML [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"><MessageHeader><From><OrganId>&x;</OrganId></From>
</MessageHeader></edXML>"""
EXTERNAL_DTD = b"""<?xml version="1.0"?><!doctype edXML SYSTEM "http://127.0.0.1:9/evil.dtd">
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"/>"""


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


@pytest.fixture(scope="module")
def signer() -> tuple[bytes, bytes]:
    """A throw-away RSA key and self-signed certificate (PEM) naming a province agency."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Văn thư Sở Tư pháp"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "000.00.02.H31")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            cert.public_bytes(serialization.Encoding.PEM))


def document(business: edxml.Business, **overrides) -> edxml.Package:
    fields = dict(
        kind="edoc",
        sender=edxml.Organ("000.00.02.H31", "Sở Tư pháp", "UBND thành phố Hải Phòng", email="stp@hp.gov.vn"),
        recipients=(edxml.Organ("000.00.00.G22", "Văn phòng Chính phủ"), edxml.Organ("000.00.00.G12", "Bộ Tư pháp")),
        document_id="000.00.02.H31,2026/10/01,123/STP-VP", code_number="123", code_notation="STP-VP",
        place="Hải Phòng", promulgation_date=date(2026, 10, 1), document_type="2", document_type_detail="18",
        document_type_name="Công văn", subject="V/v báo cáo <quý> 3 & kế hoạch quý 4", content="Nội dung tóm tắt",
        signer_competence="KT. GIÁM ĐỐC", signer_position="Phó Giám đốc", signer_name="Nguyễn Văn An",
        due_date=date(2026, 10, 15), to_places=("Như trên", "Lưu: VT"), priority=1, steering_type=1,
        response_for=(edxml.DocumentRef("000.00.00.G22", "7816/VPCP-TTĐT", date(2026, 9, 30),
                                        "000.00.00.G22,2026/09/30,7816/VPCP-TTĐT"),),
        traces=(edxml.Trace("000.00.02.H31", datetime(2026, 10, 1, 8, 30, tzinfo=VN_TZ)),), business=business,
        attachments=(edxml.Attachment("123_STP_VP.pdf", "application/pdf", b"%PDF-1.4\n" + bytes(range(256)) * 20,
                                      zipped=True, description="Công văn", content_id="cid:1"),
                     edxml.Attachment("phu_luc.txt", "text/plain", "Phụ lục kèm theo\n".encode(),
                                      description="Phụ lục", content_id="cid:2")))
    fields.update(overrides)
    return edxml.Package(**fields)


# -- the real samples ---------------------------------------------------------------------------------

def test_new_document_sample_parses() -> None:
    package = edxml.parse(sample("edxml_new_document_sample.edxml"))
    assert package.kind == "edoc" and package.sender.organ_id == "000.00.00.A80"
    assert [r.organ_id for r in package.recipients] == ["28.22.H17"]
    assert package.document_id == "000.00.00.G22,2015/09/30,7816/VPCP-TTĐT"
    assert (package.code_number, package.code_notation) == ("74fass22", "VPCP-TTĐT")
    assert package.promulgation_date == date(2019, 1, 16) and package.due_date == date(2018, 9, 28)
    assert package.document_type_name == "Công văn" and package.priority == 0 and package.steering_type == 1
    assert package.to_places == ("Cac bo va co quan ngang bo", "Uy ban nhan dan cac tinh, TP")
    assert package.business is not None and package.business.doc_type == 0 and package.business.name == "new"
    assert package.traces[0].timestamp == datetime(2018, 9, 28, tzinfo=VN_TZ)
    [attachment] = package.attachments  # its base64 was truncated for the copy: reported, not fatal
    assert attachment.name == "1896_QD-TTg_m_294779.doc" and attachment.data is None and "base64" in attachment.error
    assert package.signed


def test_update_document_sample_parses() -> None:
    package = edxml.parse(sample("edxml_update_document_sample.edxml"))
    assert [r.organ_id for r in package.recipients] == ["000.00.00.H53", "000.00.12.H53", "000.00.00.G17"]
    business = package.business
    assert business is not None and business.doc_type == 2 and business.name == "update"
    assert business.document_id == "000.00.00.G22,2014/02/30,7806/VPCP-TTĐT"
    assert business.document_info_changed and business.receivers_changed
    assert business.receivers == (edxml.Receiver("000.00.00.H41", 0), edxml.Receiver("000.00.00.H14", 1))
    assert business.staff == edxml.Staff("Văn thư văn phòng", "Nguyễn Thị Ngọc Trâm", "84912000001",
                                         "vanthuvanphong@gov.vn")


def test_status_sample_parses() -> None:
    package = edxml.parse(sample("edxml_status_05_processing_sample.edxml"))
    assert package.kind == "status" and package.sender.organ_id == "000.00.00.H41"
    assert package.status == edxml.Status("05", "Đang xử lý văn bản đến",
                                          datetime(2015, 9, 20, 11, 8, 36, tzinfo=VN_TZ),
                                          edxml.Staff("Phong hanh chinh", "Nguyen thi ngoc tram", "84912000001",
                                                      "ngoctram@nghean.vn"))
    assert package.response_for == (edxml.DocumentRef("000.00.00.G22", "7816/VPCP-TTĐT", date(2015, 9, 30),
                                                      "000.00.00.G22,2015/09/30,7816/VPCP-TTĐT"),)
    assert not package.signed and edxml.verify(sample("edxml_status_05_processing_sample.edxml")).status == "unsigned"


@pytest.mark.parametrize("name", ["edxml_new_document_sample.edxml", "edxml_update_document_sample.edxml"])
def test_sdk_sample_signature_is_legacy_sha1(name: str) -> None:
    verdict = edxml.verify(sample(name))
    assert verdict.status == edxml.UNSUPPORTED and "RSA-SHA1" in verdict.reason
    assert verdict.subject == "CN=user05" and verdict.algorithm.endswith("rsa-sha1")


# -- tolerance ----------------------------------------------------------------------------------------

def _variant(prefix: str) -> bytes:
    """The update sample re-written with another prefix (or none) and ``Business`` spelled with one "s"."""
    text = sample("edxml_update_document_sample.edxml").decode()
    if prefix:
        text = text.replace("edXML:", f"{prefix}:").replace("xmlns:edXML=", f"xmlns:{prefix}=")
    else:
        text = text.replace("edXML:", "").replace(f' xmlns:edXML="{NS}"', "")
    return text.replace("Bussiness>", "Business>").replace("BussinessDocType", "BusinessDocType").encode()


@pytest.mark.parametrize("prefix", ["", "ns2", "qcvn"])
def test_prefixes_spelling_and_order_do_not_matter(prefix: str) -> None:
    root = etree.fromstring(_variant(prefix))
    header = next(root.iter(f"{{{NS}}}MessageHeader"))
    parties = [c for c in header if etree.QName(c).localname in ("From", "To")]
    header[:] = [c for c in reversed(header) if c not in parties] + parties  # DocumentId first, From last
    package = edxml.parse(etree.tostring(root))
    reference = edxml.parse(sample("edxml_update_document_sample.edxml"))
    assert package == reference


def test_signature_in_xmldsig_namespace_is_found() -> None:
    text = sample("edxml_new_document_sample.edxml").replace(
        b"<Signature>", f'<Signature xmlns="{edxml.DSIG_NS}">'.encode())
    assert edxml.parse(text).signed
    assert edxml.verify(text).status == edxml.UNSUPPORTED


def test_zipped_and_raw_attachments_are_decoded() -> None:
    payload = b"%PDF-1.4\n" + bytes(range(256)) * 40
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("4c7e-uuid-entry.bin", payload)
    zipped = base64.encodebytes(buffer.getvalue()).decode()  # MIME-style 76-column lines
    raw = base64.b64encode("Tờ trình".encode()).decode()
    package = (f'<edXML xmlns="{NS}"><edXMLEnvelope><edXMLHeader><MessageHeader><From><OrganId>X</OrganId></From>'
               "</MessageHeader></edXMLHeader></edXMLEnvelope><AttachmentEncoded>"
               "<Attachment><AttachmentName>to_trinh.pdf</AttachmentName><ContentType>application/zip</ContentType>"
               f"<ContentTransferEncoded>{zipped}</ContentTransferEncoded></Attachment>"
               "<Attachment><AttachmentName>ghi_chu.txt</AttachmentName><ContentType>text/plain</ContentType>"
               f"<ContentTransferEncoded>{raw}</ContentTransferEncoded></Attachment>"
               "</AttachmentEncoded></edXML>").encode()
    first, second = edxml.parse(package).attachments
    assert (first.name, first.mime, first.zipped, first.data) == ("to_trinh.pdf", "application/pdf", True, payload)
    assert first.size == len(payload) and len(first.sha256) == 64 and first.content_type == "application/zip"
    assert (second.mime, second.zipped, second.data.decode()) == ("text/plain", False, "Tờ trình")


def _with_attachment(name: str, content_type: str, content: bytes) -> bytes:
    return (f'<edXML xmlns="{NS}"><edXMLEnvelope><edXMLHeader><MessageHeader><From><OrganId>X</OrganId></From>'
            f"</MessageHeader></edXMLHeader></edXMLEnvelope><AttachmentEncoded><Attachment>"
            f"<AttachmentName>{name}</AttachmentName><ContentType>{content_type}</ContentType>"
            f"<ContentTransferEncoded>{base64.b64encode(content).decode()}</ContentTransferEncoded>"
            "</Attachment></AttachmentEncoded></edXML>").encode()


def test_a_zip_of_several_files_is_reported_not_guessed() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.doc", b"a")
        archive.writestr("b.doc", b"b")
    [parsed] = edxml.parse(_with_attachment("hop.doc", "application/zip", buffer.getvalue())).attachments
    assert parsed.data is None and "2 files" in parsed.error
    [archive_itself] = edxml.parse(_with_attachment("ho_so.zip", "application/zip", buffer.getvalue())).attachments
    assert archive_itself.data == buffer.getvalue() and not archive_itself.zipped  # a .zip file is the document


@pytest.mark.parametrize("package,reason", [
    (b"<edXML xmlns='http://www.mic.gov.vn/TBT/QCVN_102_2016'><edXMLEnvelope>", "not well-formed"),
    (b"<html><body>502 Bad Gateway</body></html>", "expected edXML"),
    (f"<edXML xmlns='{NS}'><edXMLEnvelope/></edXML>".encode(), "MessageHeader is missing"),
    (f"<edXML xmlns='{NS}'><MessageHeader><To><OrganId>A</OrganId></To></MessageHeader></edXML>".encode(),
     "From/OrganId is missing"),
    (sample("edxml_new_document_sample.edxml").replace(b"<edXML:BussinessDocType>0<", b"<edXML:BussinessDocType>7<"),
     "BussinessDocType '7'"),
    (sample("edxml_new_document_sample.edxml").replace(b"2019/01/16", b"2019/13/45"), "PromulgationDate"),
], ids=["truncated", "not-edxml", "no-header", "no-from", "business-type", "bad-date"])
def test_malformed_packages_are_refused_with_a_reason(package: bytes, reason: str) -> None:
    with pytest.raises(edxml.EdxmlError, match=reason):
        edxml.parse(package)


# -- hostile XML --------------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [BILLION_LAUGHS, XXE, EXTERNAL_DTD], ids=["billion-laughs", "xxe", "external-dtd"])
def test_dtds_and_entities_are_refused(payload: bytes, signer) -> None:
    for operation in (edxml.parse, edxml.verify, lambda data: edxml.sign(data, *signer)):
        with pytest.raises(edxml.UnsafeXml, match="DTD"):
            operation(payload)


# -- building, round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("business", [
    edxml.Business(0, "Văn bản điện tử mới", paper="0",
                   staff=edxml.Staff("Văn thư", "Trần Thị Bình", "0912000001", "vt@hp.gov.vn")),
    edxml.Business(1, "Thu hồi văn bản điện tử", "000.00.02.H31,2026/09/01,100/STP-VP", paper="0"),
    edxml.Business(2, "Cập nhật văn bản điện tử", "000.00.02.H31,2026/09/01,100/STP-VP", True, True,
                   (edxml.Receiver("000.00.00.G12", 1), edxml.Receiver("000.00.00.H22", 0)), paper="0"),
    edxml.Business(3, "Văn bản thay thế", "000.00.02.H31,2026/09/01,100/STP-VP",
                   replacements=(edxml.Replacement("000.00.02.H31,2026/09/01,100/STP-VP",
                                                   ("000.00.00.G22", "000.00.00.G12")),), paper="0"),
], ids=["new", "revoke", "update", "replace"])
def test_document_build_parse_round_trip(business: edxml.Business) -> None:
    original = document(business)
    built = edxml.build(original)
    assert built.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<edXML xmlns="http://www.mic.gov.vn/')
    assert b"<edXML:MessageHeader>" in built and b"<AttachmentEncoded>" in built  # the SDK layout
    assert b"<edXML:BussinessDocType>" in built  # double "s", as on the wire
    assert edxml.parse(built) == original


def test_status_build_parse_round_trip() -> None:
    original = edxml.Package(
        kind="status", sender=edxml.Organ("000.00.03.H31", "Sở Tài chính"),
        response_for=(edxml.DocumentRef("000.00.00.G22", "7816/VPCP-TTĐT", date(2026, 9, 30),
                                        "000.00.00.G22,2026/09/30,7816/VPCP-TTĐT"),),
        status=edxml.Status("03", edxml.STATUS_CODES["03"], datetime(2026, 10, 2, 9, 15, tzinfo=VN_TZ),
                            edxml.Staff("Văn thư", "Lê Văn Cường", "0912000002", "vt@stc.hp.gov.vn")))
    built = edxml.build(original)
    assert b"<edXML:StatusCode>03</edXML:StatusCode>" in built and b"edXMLBody" not in built
    assert edxml.parse(built) == original


# -- signatures ---------------------------------------------------------------------------------------

def test_sign_then_verify_is_valid_with_subject(signer) -> None:
    signed = edxml.sign(edxml.build(document(edxml.Business(0, paper="0"))), *signer)
    verdict = edxml.verify(signed)
    assert verdict.status == edxml.VALID, verdict.reason
    assert "CN=Văn thư Sở Tư pháp" in verdict.subject and verdict.algorithm.endswith("rsa-sha256")
    assert edxml.parse(signed).subject == "V/v báo cáo <quý> 3 & kế hoạch quý 4"
    assert b"</ds:Signature></edXML:edXMLHeader>" in signed  # where the SDK puts it
    assert edxml.verify(edxml.sign(signed, *signer)).status == edxml.VALID  # re-signing replaces, not nests


@pytest.mark.parametrize("old,new", [
    ("kế hoạch quý 4".encode(), "kế hoạch quý 1".encode()),  # the header
    (b"<edXML:CodeNumber>123<", b"<edXML:CodeNumber>124<"),
    (b'<ContentType>text/plain</ContentType>', b'<ContentType>text/html</ContentType>'),  # outside the envelope
], ids=["subject", "code", "attachment"])
def test_a_changed_package_is_invalid(signer, old: bytes, new: bytes) -> None:
    signed = edxml.sign(edxml.build(document(edxml.Business(0, paper="0"))), *signer)
    assert old in signed
    verdict = edxml.verify(signed.replace(old, new))
    assert verdict.status == edxml.INVALID and "changed after signing" in verdict.reason


def test_a_signature_by_another_key_is_invalid(signer) -> None:
    signed = edxml.sign(edxml.build(document(edxml.Business(0, paper="0"))), *signer)
    value_start = signed.index(b"<ds:SignatureValue>") + len(b"<ds:SignatureValue>")
    forged = signed[:value_start] + (b"A" if signed[value_start:value_start + 1] != b"A" else b"B") + \
        signed[value_start + 1:]
    assert edxml.verify(forged).status == edxml.INVALID
