"""The province's document axis: the hub receives, stores, delivers and sends official documents for
the province's agencies, and keeps every document's status trail (QCVN 102:2016, national-systems.md §4).

How a document travels:

- **Receive.** ``landing/vdxp`` (``connectors.document_exchange``) is the one consumer of the
  province's queue on the national axis: each package is fetched, written durably with its parsed
  metadata (a Parquet part, fsynced and committed with the cursor), and only then settled ``done``
  (or ``fail`` with the reason, quarantined). :mod:`hub.docaxis.receiver` takes every committed part
  into the provincial store (:mod:`hub.docaxis.store`): the package and each attachment as
  content-addressed files, the metadata and a state machine per document in SQLite. Taking a part in
  is idempotent (keyed by the axis DocId), so a redelivery or a re-run adds nothing.
- **Understand.** Business types (new, revoke, update, replace) move each logical document's state
  (:mod:`hub.docaxis.lifecycle`); status packages extend the trail of the document they answer; a
  signature is verified and its verdict kept.
- **Deliver.** Local document-management systems pull what is pending for their agency, fetch the
  package and its attachments, acknowledge, and post statuses (:mod:`hub.docaxis.api`). Status 01
  goes back to the sender by itself once a document is stored.
- **Send.** Statuses and outgoing documents are queued in an outbox in the same transaction as the
  change that causes them, built and signed (RSA-SHA256) by :mod:`hub.docaxis.packages`, and sent
  by :mod:`hub.docaxis.sender`, which also follows each recipient's delivery on the axis.
"""
