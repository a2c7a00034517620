"""Shared by the document-axis tests: the hub pointed at a sandbox, the truth, what the axis recorded."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg

from connectors import edxml
from hub.docaxis.settings import DocaxisSettings
from hub.docaxis.store import DocumentStore
from sandbox.agencies import agencies

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT.parent / "shared/reference/samples"
FAST = {"HUB_VDXP_RATE_LIMIT": "0", "HUB_VDXP_BACKOFF_INITIAL": "0.01", "HUB_VDXP_BACKOFF_MAX": "0.2"}
CODE_OF = {a.code102: a.code for a in agencies()}


def hub_env(sb, home: Path, **extra: str) -> dict[str, str]:
    """The HUB_ variables of a hub at ``home`` using the sandbox ``sb`` (visibility timeout as the sandbox's)."""
    timeout = f"{sb.sandbox.config.visibility_timeout_s:g}"
    return {**sb.env, **FAST, "HUB_HOME": str(home), "HUB_VDXP_VISIBILITY_TIMEOUT": timeout, **extra}


def use_env(monkeypatch, env: dict[str, str]) -> None:
    monkeypatch.delenv("HUB_CONFIG", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def store_of(env: dict[str, str]) -> DocumentStore:
    return DocumentStore.open(DocaxisSettings.from_env(env))


def run_job(name: str = "docaxis_exchange") -> dg.ExecuteInProcessResult:
    """A job of the code location, in process, against whatever the environment points at."""
    from pipelines.definitions import defs

    return defs.resolve_job_def(name).execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def truth_rows(sb) -> dict[str, dict[str, Any]]:
    return {r["doc_id"]: r for r in sb.sandbox.truth.tables["documents"].to_pylist()}


def settled(sb, doc_id: str) -> str:
    delivery = sb.sandbox.vdxp._deliveries.get((sb.env["HUB_VDXP_SYSTEM_ID"], doc_id))
    return delivery.settled if delivery else ""


def sent_by_hub(sb, message_type: str) -> list[tuple[str, edxml.Package, bytes]]:
    """(axis DocId, parsed package, bytes) of every message the hub's system sent to the axis."""
    axis = sb.sandbox.vdxp
    system = sb.env["HUB_VDXP_SYSTEM_ID"]
    return [(m.doc_id, edxml.parse(m.payload), m.payload) for m in axis._messages.values()
            if m.sent_by == system and m.message_type == message_type]


def statuses_sent(sb) -> Counter:
    """(From/OrganId, ResponseFor/DocumentId, StatusCode) of every status package the hub sent."""
    return Counter((p.sender.organ_id, p.response_for[0].document_id, p.status.code)
                   for _, p, _ in sent_by_hub(sb, "status"))


def expected_deliveries(sb) -> Counter:
    """(agency, DocumentId) of each delivery the truth implies: each edoc once per province recipient."""
    out: Counter = Counter()
    for row in truth_rows(sb).values():
        if row["message_type"] == "edoc":
            for organ in row["delivered_to"]:
                out[(CODE_OF[organ], row["document_id"])] += 1
    return out


def run_python(code: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of the project (for tests that kill a process)."""
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    full.pop("HUB_CONFIG", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
