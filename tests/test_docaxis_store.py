"""The pieces of the document store on their own: QCVN 102 rules, content-addressed files, the
configuration and the signing key (each refused with a message naming what is wrong)."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from itertools import permutations
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from connectors import edxml
from hub.config import ConfigError
from hub.docaxis import lifecycle
from hub.docaxis.blobs import BlobStore
from hub.docaxis.packages import status_package
from hub.docaxis.settings import DocaxisSettings
from hub.docaxis.signing import load_signer
from hub.docaxis.store import DocumentStore
from tests.docaxis_helpers import SAMPLES

M = lifecycle.ThreadMessage


# -- what messages do to a document ---------------------------------------------------------------------

def test_a_thread_state_does_not_depend_on_the_order_messages_arrive_in() -> None:
    original, update, revoke = M("a", 0), M("u", 2, (("000.00.05.H31", 0), ("000.00.06.H31", 1))), M("r", 1)
    for order in permutations([original, update, revoke]):
        state = lifecycle.thread_state(list(order))
        assert (state.state, state.origin_doc_id, state.changed_by, state.updates) == ("revoked", "a", "r", 1)
        assert state.removed == {"000.00.05.H31"}
    assert lifecycle.thread_state([original, update]).current_doc_id == "u"
    assert lifecycle.thread_state([original]).state == "active"
    replaced = lifecycle.thread_state([original], replaced_by=["n"])
    assert (replaced.state, replaced.changed_by) == ("replaced", "n")
    added_back = lifecycle.thread_state([original, M("u1", 2, (("X", 0),)), M("u2", 2, (("X", 1),))])
    assert added_back.removed == frozenset() and added_back.updates == 2
    orphan = lifecycle.thread_state([M("r", 1)])  # a revoke of a document that never arrived
    assert (orphan.state, orphan.origin_doc_id, orphan.current_doc_id) == ("revoked", None, "r")
    with pytest.raises(ValueError):
        lifecycle.thread_state([])


def test_a_message_belongs_to_the_document_it_acts_on() -> None:
    assert lifecycle.thread_of(0, "D", "T") == "D"  # new: its own (the sample's Bussiness/DocumentId is ignored)
    assert lifecycle.thread_of(1, "D", "T") == lifecycle.thread_of(2, "D", "T") == "T"
    assert lifecycle.thread_of(3, "D", "T") == "D"  # a replacing document is a document of its own
    assert lifecycle.thread_of(None, None, None) is None


@pytest.mark.parametrize("code,business,given,recall,refused", [
    ("05", 0, [], False, None),
    ("05", 0, ["05"], False, None),  # the same status again: recorded once, not refused
    ("03", 0, ["01", "06"], False, "already gave status 06 (finished)"),
    ("06", 0, ["02"], False, "already gave status 02 (refused)"),
    ("15", 0, [], False, "answers a recall, a revoke or an update"),
    ("16", 0, [], True, None),  # the sender asked for it back (13)
    ("15", 1, [], False, None),
    ("15", 2, [], False, None),
    ("05", 1, [], False, "answer it with 15 (accept) or 16 (refuse)"),
    ("01", 0, [], False, "01 is sent by the hub"),
    ("13", 0, [], False, "not one a receiving agency posts"),
])
def test_which_status_a_receiving_agency_may_post(code, business, given, recall, refused) -> None:
    problem = lifecycle.receiver_status_refusal(code, business, given, recall)
    assert (problem is None) if refused is None else (refused in problem), problem


# -- files ----------------------------------------------------------------------------------------------

def test_files_are_named_by_their_sha256_written_once_and_checked(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    data = (SAMPLES / "edxml_new_document_sample.edxml").read_bytes()
    digest = blobs.put(data)
    assert blobs.put(data) == digest and blobs.read(digest) == data and blobs.verify(digest)
    blobs.sync()
    path = blobs.path(digest)
    assert path.parent.name == digest[:2] and oct(path.stat().st_mode & 0o777) == "0o600"
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []  # nothing half-written left behind
    path.write_bytes(data[:-1] + b"!")
    assert not blobs.verify(digest)
    with pytest.raises(ValueError, match="not a SHA-256"):
        blobs.path("../../etc/passwd")


# -- configuration --------------------------------------------------------------------------------------

def test_bad_configuration_is_refused_by_name(tmp_path: Path) -> None:
    base = {"HUB_HOME": str(tmp_path)}
    settings = DocaxisSettings.from_env(base)
    assert settings.agency_root == "H31" and settings.database == tmp_path / "docaxis" / "store.sqlite3"
    assert DocaxisSettings.from_env({**base, "HUB_PROVINCE": "22"}).agency_root == "H22"
    for env, named in (({"HUB_DOCAXIS_AGENCY_ROOT": "31"}, "HUB_DOCAXIS_AGENCY_ROOT"),
                       ({"HUB_DOCAXIS_SIGNING_KEY": str(tmp_path / "missing.pem")}, "HUB_DOCAXIS_SIGNING_KEY"),
                       ({"HUB_DOCAXIS_MAX_BODY_MB": "lots"}, "HUB_DOCAXIS_MAX_BODY_MB"),
                       ({"HUB_DOCAXIS_CA_BUNDLE": str(tmp_path)}, "HUB_DOCAXIS_CA_BUNDLE")):
        with pytest.raises(ConfigError, match=named):
            DocaxisSettings.from_env({**base, **env})
    key = tmp_path / "key.pem"
    key.write_bytes(b"x")
    with pytest.raises(ConfigError, match="go together"):
        DocaxisSettings.from_env({**base, "HUB_DOCAXIS_SIGNING_KEY": str(key)})


def _certificate(key, name: str = "Sở Tư pháp Hải Phòng") -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(7).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=9))
            .sign(key, hashes.SHA256()))


def _write_pair(directory: Path, key, cert: x509.Certificate, passphrase: bytes | None = None) -> dict[str, str]:
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8, encryption))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return {"HUB_HOME": str(directory), "HUB_DOCAXIS_SIGNING_KEY": str(directory / "key.pem"),
            "HUB_DOCAXIS_SIGNING_CERT": str(directory / "cert.pem")}


def _spec() -> dict:
    return {"code": "05", "description": "Đang xử lý", "timestamp": "2026-11-20T03:00:00+00:00",
            "from": {"organ_id": "000.00.02.H31", "name": "Sở Tư pháp"},
            "response_for": {"organ_id": "000.00.00.G22", "code": "7816/VPCP-TTĐT", "promulgation_date": "2026-11-01",
                             "document_id": "000.00.00.G22,2026/11/01,7816/VPCP-TTĐT"}, "staff": {"name": "Lan"}}


def test_the_configured_key_signs_verifiably_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    env = _write_pair(tmp_path, key, _certificate(key), b"mat-khau")
    with pytest.raises(ConfigError, match="PASSPHRASE"):
        load_signer(DocaxisSettings.from_env(env))
    signer = load_signer(DocaxisSettings.from_env({**env, "HUB_DOCAXIS_SIGNING_KEY_PASSPHRASE": "mat-khau"}))
    assert "mat-khau" not in repr(signer) and "PRIVATE" not in repr(signer)
    package = status_package(_spec())
    assert package == status_package(_spec())  # the same status builds the same bytes
    signed = signer.sign(package)
    verdict = edxml.verify(signed)
    assert verdict.status == "valid" and "Sở Tư pháp Hải Phòng" in verdict.subject
    assert verdict.algorithm == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    parsed = edxml.parse(signed)
    assert (parsed.kind, parsed.status.code, parsed.response_for[0].document_id) == (
        "status", "05", "000.00.00.G22,2026/11/01,7816/VPCP-TTĐT")
    assert edxml.verify(signed.replace(b"05</edXML:StatusCode>", b"06</edXML:StatusCode>")).status == "invalid"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    mismatch = _write_pair(tmp_path, key, _certificate(other))
    with pytest.raises(ConfigError, match="does not belong"):
        load_signer(DocaxisSettings.from_env(mismatch))
    curve = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ConfigError, match="must be an RSA key"):
        load_signer(DocaxisSettings.from_env(_write_pair(tmp_path, curve, _certificate(curve))))


def test_without_a_configured_key_one_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    settings = DocaxisSettings.from_env({"HUB_HOME": str(tmp_path)})
    first, second = load_signer(settings), load_signer(settings)
    assert first.self_signed and first.cert_pems == second.cert_pems
    for name in ("signing-key.pem", "signing-cert.pem"):
        assert oct(os.stat(settings.generated_keys / name).st_mode & 0o777) == "0o600"


# -- directory ------------------------------------------------------------------------------------------

def test_the_province_agencies_are_those_under_its_level1_code(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path, "H31")
    assert store.resolve("H31.02") == "H31.02" and store.resolve("000.00.02.H31") == "000.00.02.H31"
    assert store.resolve("000.00.00.G22") is None and store.resolve("H310.1") is None and store.resolve("") is None

    class Agency:
        def __init__(self, code, code102):
            self.code, self.code102, self.name, self.parent_code = code, code102, code, ""

    with store._write() as con:  # a delivery taken in before any directory was fetched: keyed as written
        con.execute("INSERT INTO deliveries (doc_id, agency, organ_id, organ_name, thread, state, received_at) "
                    "VALUES ('d1', '000.00.02.H31', '000.00.02.H31', '', 't', 'received', '2026-01-01')")
    store.refresh_agencies([Agency("H31.02", "000.00.02.H31"), Agency("G22", "000.00.00.G22")])
    assert store.resolve("000.00.02.H31") == "H31.02"  # the directory maps both forms to one agency
    assert [r["agency"] for r in store.query("SELECT agency FROM deliveries")] == ["H31.02"]  # and re-keys
    assert store.known_to_axis("000.00.00.G22") and store.known_to_axis("000.00.00.Z99") is False


def test_a_signature_is_judged_against_the_ca_bundle_when_one_is_set(tmp_path: Path) -> None:
    from hub.docaxis.receiver import _verdict

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _certificate(ca_key, "CA Chính phủ (thử)")
    ca = (x509.CertificateBuilder().subject_name(ca.subject).issuer_name(ca.subject).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(ca.not_valid_before_utc).not_valid_after(ca.not_valid_after_utc)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(_usage(cert_sign=True), critical=True).sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(timezone.utc)
    issued = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bộ Tư pháp")]))
              .issuer_name(ca.subject).public_key(key.public_key()).serial_number(2)
              .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=9))
              .add_extension(_usage(cert_sign=False), critical=True)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    by_ca = load_signer(DocaxisSettings.from_env(_write_pair(tmp_path, key, issued))).sign(status_package(_spec()))
    assert _verdict(by_ca, "valid", True, bundle).status == "valid"
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "s").mkdir()
    by_stranger = load_signer(DocaxisSettings.from_env(_write_pair(tmp_path / "s", stranger, _certificate(stranger))))
    verdict = _verdict(by_stranger.sign(status_package(_spec())), "valid", True, bundle)
    assert verdict.status == "invalid" and verdict.reason  # intact, but not from a certificate the province trusts
    assert _verdict(b"<edXML/>", "unsigned", False, bundle).status == "unsigned"


def _usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=not cert_sign, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


def test_refreshing_the_same_directory_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    store = DocumentStore(tmp_path, "H31")

    class Agency:
        def __init__(self, code, code102, name=""):
            self.code, self.code102, self.name, self.parent_code = code, code102, name or code, ""

    directory = [Agency("H31.02", "000.00.02.H31"), Agency("G22", "000.00.00.G22")]
    assert store.refresh_agencies(directory) == 2
    writes = _count_writes(monkeypatch)
    assert store.refresh_agencies(list(reversed(directory))) == 2 and writes == []  # the same, in another order
    renamed = [Agency("H31.02", "000.00.02.H31", "Sở Tư pháp"), directory[1]]
    assert store.refresh_agencies(renamed) == 2 and len(writes) == 1  # a change is written
    assert store.directory_entry("H31.02")["name"] == "Sở Tư pháp"


# -- the outbox ------------------------------------------------------------------------------------------

class _Axis:
    """Stands for the axis connector: records what is sent; ``lose`` loses the answer to those packages."""

    def __init__(self, lose: tuple[bytes, ...] = ()) -> None:
        self.sent: list[bytes] = []
        self.lose = lose

    def send(self, package: bytes, kind: str) -> str:
        if package in self.lose:
            from connectors.document_exchange import SendOutcomeUnknown
            raise SendOutcomeUnknown("vdxp", "SendEdoc", "r1", "the answer was lost")
        self.sent.append(package)
        return f"axis-{len(self.sent)}"


def _queue(store: DocumentStore, n: int) -> list[bytes]:
    """``n`` status packages in the outbox, their bytes already built (nothing to sign)."""
    packages = [f"<status n='{k}'/>".encode() for k in range(n)]
    with store._write() as con:
        for k, package in enumerate(packages):
            con.execute("INSERT INTO outbox (kind, dedupe, from_organ_id, to_organ_ids, package_sha256, state, "
                        "created_at) VALUES ('status', ?, 'H31.02', '[]', ?, 'pending', '2026-12-01')",
                        (f"test:{k}", store.blobs.put(package)))
    return packages


def _count_writes(monkeypatch) -> list[int]:
    writes: list[int] = []
    real = DocumentStore._write
    monkeypatch.setattr(DocumentStore, "_write", lambda self: writes.append(1) or real(self))
    return writes


def _no_signer():
    raise AssertionError("nothing here needs signing")


def test_one_send_empties_the_outbox_batch_after_batch(tmp_path: Path) -> None:
    from hub.docaxis.sender import send_outbox

    store = DocumentStore(tmp_path, "H31")
    packages = _queue(store, 5)
    axis = _Axis()
    report = send_outbox(store, axis, _no_signer, limit=2)  # three claims: 2, 2, 1
    assert report.sent == 5 and sorted(axis.sent) == sorted(packages)
    assert store.outbox_summary() == {"sent": 5}


def test_sending_stops_at_a_lost_answer_and_leaves_the_rest_for_the_next_run(tmp_path: Path) -> None:
    from hub.docaxis.sender import send_outbox

    store = DocumentStore(tmp_path, "H31")
    packages = _queue(store, 5)
    axis = _Axis(lose=(packages[1],))
    report = send_outbox(store, axis, _no_signer, limit=2)
    assert (report.sent, report.retry_later) == (1, 1) and axis.sent == [packages[0]]
    assert store.outbox_summary() == {"sent": 1, "pending": 4}  # the lost one is sent again later, with the rest
    axis.lose = ()
    assert send_outbox(store, axis, _no_signer, limit=2).sent == 4 and store.outbox_summary() == {"sent": 5}


def test_an_empty_outbox_is_neither_written_nor_signed_for(tmp_path: Path, monkeypatch) -> None:
    from hub.docaxis.sender import send_outbox

    store = DocumentStore(tmp_path, "H31")
    writes = _count_writes(monkeypatch)
    report = send_outbox(store, _Axis(), _no_signer)
    assert report.sent == 0 and writes == []


def test_a_signing_key_that_cannot_be_read_fails_the_send_and_refuses_nothing(tmp_path: Path) -> None:
    from hub.docaxis.sender import send_outbox

    store = DocumentStore(tmp_path, "H31")
    with store._write() as con:
        con.execute("INSERT INTO outbox (kind, dedupe, from_organ_id, to_organ_ids, spec, state, created_at) "
                    "VALUES ('status', 'test:spec', 'H31.02', '[]', ?, 'pending', '2026-12-01')", (json.dumps(_spec()),))

    def unreadable():
        raise ConfigError("HUB_DOCAXIS_SIGNING_KEY (/keys/k.pem) is not a readable PEM private key")

    with pytest.raises(ConfigError, match="not a readable PEM"):
        send_outbox(store, _Axis(), unreadable)
    assert store.outbox_summary() == {"pending": 1}  # released, to be signed once the key is fixed


# -- files no row refers to ------------------------------------------------------------------------------

def _age(store: DocumentStore, digest: str, hours: float) -> None:
    moment = time.time() - hours * 3600
    os.utime(store.blobs.path(digest), (moment, moment))


def test_only_old_files_no_row_refers_to_are_removed(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path, "H31")
    [used] = [store.blobs.put(p) for p in _queue(store, 1)]  # an outbox package: referred to
    orphan = store.blobs.put(b"the package of a take-in that failed before it committed")
    recent = store.blobs.put(b"put a moment ago by a change still in progress")
    for digest in (used, orphan):
        _age(store, digest, 48)
    killed = store.blobs.root / "tmp" / "0123.part"  # a put killed before its rename
    killed.write_bytes(b"half")
    os.utime(killed, (time.time() - 48 * 3600,) * 2)
    dry = store.remove_orphan_files(dry_run=True)
    assert (dry.removed, dry.kept) == (1, 1) and store.blobs.path(orphan).exists()
    report = store.remove_orphan_files()
    assert (report.removed, report.bytes, report.kept, report.temporaries) == (1, 56, 1, 1)
    assert not store.blobs.path(orphan).exists() and not killed.exists()
    assert store.blobs.verify(used) and store.blobs.verify(recent)
    with pytest.raises(ValueError, match="at least"):
        store.remove_orphan_files(grace=timedelta(minutes=5))


def test_an_old_orphan_put_again_is_kept_and_one_removed_meanwhile_fails_the_change(tmp_path: Path) -> None:
    from hub.docaxis.blobs import BlobMissing

    store = DocumentStore(tmp_path, "H31")
    data = b"a package a failed take-in left, delivered again"
    digest = store.blobs.put(data)
    _age(store, digest, 48)
    assert store.blobs.put(data) == digest  # reused: young again, so not removed
    assert store.remove_orphan_files().removed == 0 and store.blobs.verify(digest)
    store.blobs.sync()
    _age(store, digest, 48)
    store.blobs.put(data)  # a change puts it ... and a removal elsewhere takes it away before that change commits
    _age(store, digest, 48)
    removal: list = []
    elsewhere = threading.Thread(target=lambda: removal.append(store.remove_orphan_files()))
    elsewhere.start()
    elsewhere.join(timeout=30)
    assert removal[0].removed == 1
    with pytest.raises(BlobMissing, match="nothing was committed"):
        with store._write() as con:
            con.execute("INSERT INTO outbox (kind, dedupe, from_organ_id, to_organ_ids, package_sha256, state, "
                        "created_at) VALUES ('status', 'x', 'H31.02', '[]', ?, 'pending', '2026-12-01')", (digest,))
    assert store.outbox_summary() == {}  # the reference to a missing file was not committed
