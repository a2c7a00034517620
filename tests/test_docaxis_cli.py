"""``hub docaxis`` as an operator runs it: one receive run on the hub's instance, then what the store
holds, per agency; a local system registered; bad configuration refused by name; no secret shown."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from tests.docaxis_helpers import hub_env, statuses_sent
from tests.extract_helpers import HUB, extract_env


def hub(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([HUB, "docaxis", *args], env=env, capture_output=True, text=True, timeout=300)


def test_receive_then_look_at_the_store(sandbox_factory, tmp_path: Path) -> None:
    with sandbox_factory(residents=1_500, seed=13, rate_limit=10_000, visibility_timeout_s=0.5) as sb:
        env = extract_env(hub_env(sb, tmp_path), tmp_path)
        received = hub("receive", env=env)
        assert received.returncode == 0, received.stdout + received.stderr
        stored = re.search(r"docaxis/store\s+(\d+) new", received.stdout)
        assert stored and int(stored.group(1)) == len(sb.sandbox.truth.tables["documents"])
        assert re.search(r"check overdue_documents: WARN \(\d+ overdue\)", received.stdout), received.stdout
        assert list((tmp_path / "dagster" / "storage").iterdir())  # the run is in the hub's Dagster instance
        status = hub("status", env=env)
        assert status.returncode == 0 and "outbox: sent=" in status.stdout
        assert re.search(r"^H31\.\d\d\s+\d+", status.stdout, re.M)
        sent = sum(statuses_sent(sb).values())
        assert f"sent={sent}" in status.stdout
        assert hub("send", env=env).stdout.startswith("sent 0, refused 0")
        overdue = hub("overdue", "--agency", "000.00.03.H31", env=env)
        assert overdue.returncode == 0 and "overdue as of" in overdue.stdout
        assert hub("overdue", "--agency", "000.00.00.G22", env=env).returncode == 2
        assert hub("quarantine", env=env).stdout.strip() == "0 quarantined"
        orphan = tmp_path / "docaxis" / "blobs" / "ab" / ("ab" + "0" * 62)  # written by a change that never committed
        orphan.parent.mkdir(exist_ok=True)
        orphan.write_bytes(b"orphan")
        os.utime(orphan, (time.time() - 3 * 86400,) * 2)
        dry = hub("clean", "--dry-run", env=env)
        assert dry.returncode == 0 and dry.stdout.startswith("would remove 1 files") and orphan.exists()
        cleaned = hub("clean", env=env)
        assert cleaned.returncode == 0 and cleaned.stdout.startswith("removed 1 files") and not orphan.exists()
        assert hub("clean", "--older-than-hours", "0.1", env=env).returncode == 2
        assert hub("status", env=env).returncode == 0 and f"sent={sent}" in hub("status", env=env).stdout
        key = hub("add-client", "dms-so-tu-phap", "--agency", "H31.02", env=env)
        assert key.returncode == 0 and re.fullmatch(r"lgsp\.dms-so-tu-phap\.[A-Za-z0-9_-]{43}\n", key.stdout)
        assert key.stdout.strip() not in (tmp_path / "docaxis" / "clients.json").read_text()  # only its hash is kept
        outside = hub("add-client", "dms-vpcp", "--agency", "000.00.00.G22", env=env)
        assert outside.returncode == 2 and "not one of the province's agencies" in outside.stderr
        bad = hub("status", env={**env, "HUB_DOCAXIS_AGENCY_ROOT": "31"})
        assert bad.returncode == 2 and "HUB_DOCAXIS_AGENCY_ROOT" in bad.stderr
        for result in (received, status, key):
            assert sb.env["HUB_VDXP_SECRET"] not in result.stdout + result.stderr
