"""Canonical ``documents``: every message the hub received on the document axis (national-systems.md §4).

One row per axis message (``doc_id``, the axis's own id): documents (``message_type`` ``edoc``, with
their business type 0 new, 1 revoke, 2 update, 3 replace) and status packages (``status``, with the
QCVN 102 status code). The package itself is kept in ``edxml``, byte for byte, because the hub must
be able to show what it received (and re-verify its signature) long after the axis has forgotten it;
the other columns are what searches and joins need. Attachments are described, not duplicated: their
content is inside ``edxml``.

A message delivered twice (at-least-once) is the same ``doc_id``; no version column: the last read
wins, and both reads carry the same package.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.canonical import with_provenance

VERSION = 1

ATTACHMENT = pa.struct([
    pa.field("name", pa.string()),
    pa.field("mime", pa.string()),  # the file's own type (a zipped attachment's, once unzipped)
    pa.field("size", pa.int64()),  # bytes of the file itself, unzipped
    pa.field("zipped", pa.bool_()),  # travelled as a zip in base64
    pa.field("sha256", pa.string()),  # of the file itself, hex
])

DATASET = "documents"
SCHEMA = with_provenance([
    pa.field("doc_id", pa.string(), nullable=False),  # the axis's message id (DocId)
    pa.field("message_type", pa.string(), nullable=False),  # edoc | status
    pa.field("from_organ_id", pa.string(), nullable=False),  # From/OrganId, as written (QCVN 102 or Decision 20 form)
    pa.field("to_organ_ids", pa.list_(pa.string())),  # every To/OrganId; status: ResponseFor/OrganId
    pa.field("edxml_document_id", pa.string()),  # MessageHeader/DocumentId (documents only)
    pa.field("business_type", pa.int8()),  # BussinessDocType 0..3; null for status packages
    pa.field("business_reference_doc_id", pa.string()),  # revoke/update/replace: the edXML DocumentId acted on
    pa.field("subject", pa.string()),
    pa.field("code_number", pa.string()),
    pa.field("code_notation", pa.string()),
    pa.field("promulgation_date", pa.date32()),
    pa.field("due_date", pa.date32()),
    pa.field("document_type", pa.string()),  # DocumentType/TypeName (codes differ between producers)
    pa.field("status_code", pa.string()),  # status packages: 01 arrived … 16 recall/update refused
    pa.field("response_for_doc_id", pa.string()),  # ResponseFor/DocumentId: the document answered
    pa.field("attachments", pa.list_(ATTACHMENT)),
    pa.field("signature_verdict", pa.string(), nullable=False),  # valid | invalid | unsigned | unsupported-algorithm
    pa.field("received_at", pa.timestamp("ms", tz="UTC")),  # when the message reached the axis (CreatedTime)
    pa.field("delivery_count", pa.int32()),  # DeliveryCount when it was read (> 1: redelivered)
    pa.field("edxml", pa.large_binary(), nullable=False),  # the package as received
], DATASET, VERSION)

KEY = ("doc_id",)
VERSION_COLUMN = None
