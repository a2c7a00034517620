"""What each message does to a document, and what a local agency may say about one (QCVN 102:2016).

A *document* is what an edXML ``DocumentId`` names; several messages may belong to it (its
*thread*): the original (business type 0, new), updates of it (2), a revoke (1). A replacing
document (3) starts a thread of its own and closes the one it replaces. From a thread's messages,
in arrival order, follow its state (:func:`thread_state`): ``revoked`` once a revoke arrived,
``replaced`` once a replacing document names it, ``active`` otherwise; its current version is the
latest new, update or replacing message; an update may take agencies off its recipients
(``ReceiverType`` 0) or add them (1).

Messages can arrive out of order (a revoke before its original, when the original was delayed);
the state is recomputed from the whole thread each time, so the order of arrival never changes the
outcome.

A delivery of a message to one of the province's agencies moves ``received`` → ``delivered`` (its
document-management system fetched it) → ``acknowledged`` (the system confirmed it holds it);
acknowledging a message never fetched is allowed (the system may have had it another way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

NEW, REVOKE, UPDATE, REPLACE = 0, 1, 2, 3
BUSINESS_NAMES = {NEW: "new", REVOKE: "revoke", UPDATE: "update", REPLACE: "replace"}
ACTIVE, REVOKED, REPLACED = "active", "revoked", "replaced"
RECEIVED, DELIVERED, ACKNOWLEDGED = "received", "delivered", "acknowledged"

#: QCVN 102 status codes, with the description a package carries when the agency gives none.
DESCRIPTIONS = {
    "01": "Đã đến - Phần mềm QLVB đã nhận nhưng văn thư chưa xử lý",
    "02": "Từ chối tiếp nhận văn bản",
    "03": "Đã tiếp nhận văn bản",
    "04": "Đã phân công xử lý",
    "05": "Đang xử lý văn bản",
    "06": "Đã xử lý xong văn bản",
    "13": "Lấy lại văn bản",
    "15": "Đồng ý lấy lại/cập nhật văn bản",
    "16": "Từ chối lấy lại/cập nhật văn bản",
}
#: What the receiving agency's system may post about a message it received (01 is the hub's own).
RECEIVER_CODES = ("02", "03", "04", "05", "06", "15", "16")
#: What the sending agency's system may post about a document it sent: 13, it recalls it.
SENDER_CODES = ("13",)
#: After these an agency has nothing left to do with the document (refused, or finished).
CLOSING = frozenset({"02", "06"})
#: Answers to a recall or an update (15 accepts it, 16 refuses it).
RECALL_ANSWERS = frozenset({"15", "16"})


def thread_of(business_type: int | None, document_id: str | None, target: str | None) -> str | None:
    """The document a message belongs to: a revoke or an update belongs to the document it acts on;
    a new or replacing document is a document of its own."""
    if business_type in (REVOKE, UPDATE) and target:
        return target
    return document_id or target


@dataclass(frozen=True)
class ThreadMessage:
    """What :func:`thread_state` needs of one message of a thread."""

    doc_id: str
    business_type: int
    receivers: tuple[tuple[str, int], ...] = ()  # update: (OrganId, ReceiverType) changes


@dataclass(frozen=True)
class ThreadState:
    state: str  # active | revoked | replaced
    origin_doc_id: str | None  # the new (or replacing) message that started it; None if it never arrived
    current_doc_id: str  # the message holding the current version
    changed_by: str | None  # the revoke, or the replacing message, that closed it
    updates: int
    removed: frozenset[str]  # organ ids an update took off the recipients (and no later one put back)


def thread_state(messages: Sequence[ThreadMessage], replaced_by: Sequence[str] = ()) -> ThreadState:
    """The state of a document from its messages in arrival order and the replacing messages that
    name it. ``messages`` must not be empty."""
    if not messages:
        raise ValueError("a thread has at least one message")
    origin = next((m.doc_id for m in messages if m.business_type in (NEW, REPLACE)), None)
    versions = [m.doc_id for m in messages if m.business_type in (NEW, UPDATE, REPLACE)]
    current = versions[-1] if versions else messages[0].doc_id
    revoke = next((m.doc_id for m in messages if m.business_type == REVOKE), None)
    removed: set[str] = set()
    for message in messages:
        for organ, kind in message.receivers:
            (removed.add if kind == 0 else removed.discard)(organ)
    if revoke:
        state, changed_by = REVOKED, revoke
    elif replaced_by:
        state, changed_by = REPLACED, replaced_by[0]
    else:
        state, changed_by = ACTIVE, None
    updates = sum(1 for m in messages if m.business_type == UPDATE)
    return ThreadState(state, origin, current, changed_by, updates, frozenset(removed))


def after_fetch(state: str) -> str:
    return DELIVERED if state == RECEIVED else state


def receiver_status_refusal(code: str, business_type: int | None, given: Iterable[str],
                            recall_requested: bool) -> str | None:
    """Why the receiving agency may not post ``code`` on a message now (None: it may).

    ``given``: the codes the agency already gave on this document; ``recall_requested``: the sender
    asked for it back (status 13). 15 and 16 answer a recall, a revoke or an update, nothing else;
    a document refused (02) or finished (06) takes no further processing status. Posting a code
    already given is not refused: it is the same status, recorded once.
    """
    if code not in RECEIVER_CODES:
        allowed = ", ".join(RECEIVER_CODES)
        return f"status {code!r} is not one a receiving agency posts (allowed: {allowed}; 01 is sent by the hub)"
    given = set(given)
    if code in given:
        return None
    if code in RECALL_ANSWERS:
        if business_type in (REVOKE, UPDATE) or recall_requested:
            return None
        return f"status {code} answers a recall, a revoke or an update, and this document has none"
    if business_type == REVOKE:
        return f"this message revokes a document; answer it with 15 (accept) or 16 (refuse), not {code}"
    closed = sorted(given & CLOSING)
    if closed:
        return f"the agency already gave status {closed[0]} ({'refused' if closed[0] == '02' else 'finished'}) " \
               f"on this document; {code} cannot follow it"
    return None
