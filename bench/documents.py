"""Benchmark of the provincial document axis: packages per second received and stored.

For three tiers of attachment size (about 100–300 KB, 0.5–1.5 MB and 1.7–5 MB per file, one to three
files per document), a sandbox of 1,500 × ``--scale`` residents serves its axis traffic from its own
process (so its CPU is not the hub's), and the hub, in this process:

- **raw fetch** (the baseline): lists the queue and fetches every package (``GetEdoc``, base64
  decoded), storing nothing and settling nothing: what the transport alone costs;
- **receive**: the landing, as ``landing/vdxp`` runs it: fetch, parse, check, verify the signature,
  write the Parquet part (fsynced) with the cursor, then settle each message on the axis;
- **store**: takes the landed parts into the document store: package and attachments as
  content-addressed files (fsynced), metadata, deliveries, document states and one status 01 per
  delivery queued, one transaction per part;
- **send 01**: builds, signs (RSA-SHA256) and sends the queued status packages;
- **no-op run**: one pass of the ``docaxis/store`` asset's work (``hub.docaxis.exchange``: the agency
  directory, the landing parts, the outbox, sent documents to follow, the per-agency figures) when
  nothing new has landed and nothing is left to send, as a share of the full take-in ("store");
- **small increment**: the same pass on a second store that already holds every landing part but the
  last: it takes that part in and sends its 01s; as a share of the full take-in too.

Each tier runs against two sandboxes of the same seed (the baseline leaves its messages unsettled).
"received + stored" is packages over the receive and store times together; "vs raw" is that rate
over the baseline's. Ends with one JSON line of the figures (its top-level ``noop_vs_store`` and
``increment_vs_store``: the largest share among the tiers).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import fix_path, serving_child  # noqa: E402

fix_path()

TIERS = (("100-300 KB", 200_000), ("0.5-1.5 MB", 1_000_000), ("1.7-5 MB", 3_300_000))
PAGE = "10"  # a landing page holds at most 10 packages: memory stays bounded with 5 MB files


def serve(residents: int, attachment_size: int) -> None:
    """Child process body: the sandbox with its axis traffic at ``attachment_size``; prints its env."""
    from sandbox.app import Sandbox, SandboxConfig
    from sandbox.document_exchange import DocumentAxisService
    from sandbox.server import bind, server_for

    sandbox = Sandbox(SandboxConfig(residents=residents, seed=1, rate_limit=0))
    sandbox.vdxp = DocumentAxisService(sandbox.residents, sandbox.runtimes["vdxp"], sandbox.truth, 1,
                                       attachment_size=attachment_size)
    sock = bind()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    counts = sandbox.vdxp.traffic.counts()
    print(json.dumps({"env": sandbox.environment(base), "messages": counts["edoc"] + counts["status"]}), flush=True)
    server_for(sandbox.app()).run(sockets=[sock])


def axis(residents: int, attachment_size: int):
    return serving_child("bench.documents", "serve", residents, attachment_size)


def _connector(env: dict[str, str]):
    from connectors.document_exchange import DocumentExchangeConnector
    from hub.config import Settings

    env = {**env, "HUB_VDXP_RATE_LIMIT": "0", "HUB_VDXP_PAGE_SIZE": PAGE, "HUB_VDXP_VISIBILITY_TIMEOUT": "0"}
    return DocumentExchangeConnector.from_settings(Settings.from_env(env), env)


def raw_fetch(env: dict[str, str]) -> tuple[int, int, float]:
    """(packages, bytes, seconds) of listing and fetching everything, storing and settling nothing."""
    connector = _connector(env)
    packages = size = 0
    started = time.perf_counter()
    for kind in ("edoc", "status"):
        while True:
            listed, _ = connector.list_received(kind, int(PAGE))
            if not listed:
                break
            for knob in listed:
                _, data, _ = connector.fetch(knob.doc_id)
                packages += 1
                size += len(data or b"")
    return packages, size, time.perf_counter() - started


def receive_and_store(env: dict[str, str], home: Path) -> dict[str, float]:
    from connectors.extract import land
    from hub.docaxis.exchange import exchange
    from hub.docaxis.receiver import take_in_landing, take_in_parts
    from hub.docaxis.sender import refresh_directory, send_outbox
    from hub.docaxis.settings import DocaxisSettings
    from hub.docaxis.signing import CERT_FILE, KEY_FILE, load_signer
    from hub.docaxis.store import DocumentStore
    from pipelines.lake import HubLake

    connector = _connector(env)
    lake = HubLake(home=str(home))
    settings = DocaxisSettings.from_env({**env, "HUB_HOME": str(home)})
    store = DocumentStore.open(settings)
    refresh_directory(store, connector)
    signer = load_signer(settings)
    started = time.perf_counter()
    landed = land(connector, lake.landing("vdxp"))
    received = time.perf_counter() - started
    started = time.perf_counter()
    ingest = take_in_landing(store, lake)
    stored = time.perf_counter() - started
    started = time.perf_counter()
    sent = send_outbox(store, connector, signer)
    sending = time.perf_counter() - started
    while send_outbox(store, connector, signer).sent:  # whatever one batch left: the next run has nothing to do
        pass
    started = time.perf_counter()
    idle = exchange(settings, lake, connector)
    noop = time.perf_counter() - started
    if idle.ingest.parts or idle.send.sent:
        raise RuntimeError(f"the no-op run took in {idle.ingest.parts} parts and sent {idle.send.sent} packages")
    # A second store that has every part but the last, and has sent its 01s: the next run is an increment.
    keys = settings.generated_keys  # the same signing key: generating one would be timed with the increment
    second = DocaxisSettings.from_env({**env, "HUB_HOME": str(home), "HUB_DOCAXIS_DIR": str(home / "increment"),
                                       "HUB_DOCAXIS_SIGNING_KEY": str(keys / KEY_FILE),
                                       "HUB_DOCAXIS_SIGNING_CERT": str(keys / CERT_FILE)})
    behind = DocumentStore.open(second)
    refresh_directory(behind, connector)
    records, quarantine = lake.committed_files("vdxp", "documents")
    take_in_parts(behind, sorted(records + quarantine, key=lambda p: p.name)[:-1])
    while send_outbox(behind, connector, signer).sent:
        pass
    started = time.perf_counter()
    step = exchange(second, lake, connector)
    increment = time.perf_counter() - started
    if step.ingest.parts != 1:
        raise RuntimeError(f"the increment run took in {step.ingest.parts} parts, not the one left")
    files = store.query("SELECT count(*) AS n, coalesce(sum(size), 0) AS bytes, min(size) AS low, max(size) AS high "
                        "FROM attachments")[0]
    return {"packages": landed.fetched, "quarantined": landed.quarantined, "stored": ingest.stored,
            "receive_s": received, "store_s": stored, "bytes": ingest.bytes, "files": files["n"],
            "file_bytes": files["bytes"], "file_min": files["low"] or 0, "file_max": files["high"] or 0,
            "sent": sent.sent, "send_s": sending, "noop_s": noop, "increment_s": increment,
            "increment_packages": step.ingest.stored, "increment_sent": step.send.sent}


def run_tier(residents: int, attachment_size: int) -> dict[str, float]:
    with axis(residents, attachment_size) as served:
        raw_n, raw_bytes, raw_s = raw_fetch(served["env"])
    with axis(residents, attachment_size) as served, tempfile.TemporaryDirectory(prefix="bench-docaxis-") as home:
        figures = receive_and_store(served["env"], Path(home))
    # The baseline settles nothing, so a revoke the axis holds back until its original is settled
    # never reaches it: compare rates per package, and require everything received to be stored.
    if figures["stored"] != figures["packages"] or figures["quarantined"]:
        raise RuntimeError(f"received {figures['packages']}, stored {figures['stored']}, "
                           f"quarantined {figures['quarantined']}")
    n = figures["packages"]
    both = figures["receive_s"] + figures["store_s"]
    return {**figures, "raw_packages": raw_n, "raw_pkg_s": raw_n / raw_s, "raw_mb_s": raw_bytes / raw_s / 1e6,
            "receive_pkg_s": n / figures["receive_s"], "store_pkg_s": n / figures["store_s"],
            "received_stored_pkg_s": n / both, "received_stored_mb_s": figures["bytes"] / both / 1e6,
            "vs_raw": (n / both) / (raw_n / raw_s), "send_01_per_s": figures["sent"] / max(figures["send_s"], 1e-9),
            "noop_vs_store": figures["noop_s"] / figures["store_s"],
            "increment_vs_store": figures["increment_s"] / figures["store_s"]}


def main() -> None:
    import logging

    logging.getLogger("hub.docaxis.signing").setLevel(logging.ERROR)  # the bench's key is self-signed on purpose
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=1, help="residents are 1,500 × scale (≈ 46 × scale packages)")
    args = parser.parse_args()
    if args.scale < 1:
        parser.error("--scale must be at least 1")
    residents = 1_500 * args.scale
    results = {}
    header = (f"{'attachments':<12}{'packages':>9}{'files':>7}{'MB':>8}{'raw fetch':>11}{'receive':>9}{'store':>8}"
              f"{'recv+store':>11}{'MB/s':>7}{'vs raw':>8}{'01 sent/s':>10}{'no-op s':>9}{'no-op %':>9}"
              f"{'incr. pkgs':>11}{'incr. s':>9}{'incr. %':>9}")
    print(f"document axis, {residents:,} residents; packages per second (raw fetch = list + GetEdoc only)")
    print(header)
    for name, size in TIERS:
        r = run_tier(residents, size)
        results[name] = r
        print(f"{name:<12}{r['packages']:>9,}{r['files']:>7,}{r['bytes'] / 1e6:>8.1f}{r['raw_pkg_s']:>11.1f}"
              f"{r['receive_pkg_s']:>9.1f}{r['store_pkg_s']:>8.1f}{r['received_stored_pkg_s']:>11.1f}"
              f"{r['received_stored_mb_s']:>7.1f}{r['vs_raw']:>8.2f}{r['send_01_per_s']:>10.1f}{r['noop_s']:>9.3f}"
              f"{100 * r['noop_vs_store']:>9.2f}{r['increment_packages']:>11,}{r['increment_s']:>9.3f}"
              f"{100 * r['increment_vs_store']:>9.2f}")
    low = min(r["file_min"] for r in results.values())
    high = max(r["file_max"] for r in results.values())
    total = sum(r["packages"] for r in results.values())
    seconds = sum(r["receive_s"] + r["store_s"] for r in results.values())
    raw = sum(r["raw_packages"] / r["raw_pkg_s"] for r in results.values())
    raw_total = sum(r["raw_packages"] for r in results.values())
    print("no-op %, incr. %: a store run with nothing new, and one taking in the last landing part, as a share of "
          "the full take-in (store) of the same tier")
    print(f"attachments from {low / 1e3:,.0f} KB to {high / 1e6:,.2f} MB; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    print(json.dumps({
        "bench": "documents", "scale": args.scale, "residents": residents, "packages": total,
        "received_and_stored_pkg_per_s": round(total / seconds, 2), "raw_fetch_pkg_per_s": round(raw_total / raw, 2),
        "vs_raw": round((total / seconds) / (raw_total / raw), 3),
        "noop_vs_store": round(max(r["noop_vs_store"] for r in results.values()), 4),
        "increment_vs_store": round(max(r["increment_vs_store"] for r in results.values()), 4),
        "attachment_bytes_min": low,
        "attachment_bytes_max": high,
        "tiers": {name: {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
                  for name, r in results.items()}}))


if __name__ == "__main__":
    main()
