"""Benchmark of the audit log: what an append costs the lookup API, with and without fsync batching.

Modes, each on a fresh log in a temporary directory on the disk under test (``--dir``):
- group commit: the default window (5 ms), one thread and four threads;
- fsync every append (``flush_interval=0``), one thread;
- durable appends (``durable=True``) from eight threads: each waits for its fsync, which they share;
- group commit paced at 2,000 appends/s, a heavy but realistic load, where the flusher is not starved
  of the interpreter lock as it is by a tight loop (see "commit every" there);
then ``verify`` and ``subject`` over the group-commit log. Counts scale with ``--scale``.
Prints a table and ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from hub.audit_log import AuditEntry, AuditLog, subject, verify  # noqa: E402

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
FIELDS = ["HoVaTen", "NgaySinh", "GioiTinh", "DanToc", "QueQuan", "NoiThuongTru", "NoiOHienTai", "SoDinhDanh"]


def entry(i: int) -> AuditEntry:
    """A typical lookup: one person asked for, eight fields of one record returned."""
    key = f"0010900{i % 100_000:05d}"
    return AuditEntry(client_id=f"mot-cua-{i % 7}", agency_code=f"H31.{i % 40:02d}",
                      purpose=f"000.00.31.H31-260504-{i % 10_000:04d}", method="GET", path="/v1/persons/{id}",
                      outcome=200, asked=[key], fields=FIELDS, record_keys=[key])


def run(directory: Path, count: int, threads: int, durable: bool = False, rate: float = 0,
        **options) -> dict[str, float]:
    """Append ``count`` entries from ``threads`` threads (paced at ``rate`` per second if given);
    per-append latencies, wall time, commits, fsyncs, close time."""
    entries = [entry(i) for i in range(count)]
    gc.freeze()  # the bench's own prepared entries are not the log's garbage-collection cost
    latencies: list[list[int]] = [[] for _ in range(threads)]
    log = AuditLog(directory, KEY, **options)

    def work(t: int) -> None:
        own, clock, begin = latencies[t], time.perf_counter_ns, time.perf_counter()
        for k, e in enumerate(entries[t::threads]):
            if rate:
                pause = begin + k * threads / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            started = clock()
            log.append(e, durable=durable)
            own.append(clock() - started)

    started = time.perf_counter()
    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - started
    closing = time.perf_counter()
    log.close()
    close_s = time.perf_counter() - closing
    gc.unfreeze()
    flat = sorted(x for own in latencies for x in own)
    return {"count": count, "threads": threads, "wall_s": wall, "appends_per_s": count / wall,
            "us_mean": statistics.fmean(flat) / 1e3, "us_p50": flat[len(flat) // 2] / 1e3,
            "us_p99": flat[int(len(flat) * 0.99)] / 1e3, "us_max": flat[-1] / 1e3, "close_s": close_s,
            "fsyncs": log.fsyncs, "commit_every_ms": wall / max(1, log.commits) * 1e3}


def timed(action) -> tuple[object, float]:
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="Multiplies every count.")
    parser.add_argument("--dir", type=Path, default=None, help="Where to write (default: the system temp dir).")
    args = parser.parse_args()
    n = lambda base: max(100, int(base * args.scale))  # noqa: E731 - tiny local helper
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-audit-", dir=args.dir))
    try:
        modes = {
            "group commit 5 ms, 1 thread": run(root / "group", n(100_000), 1),
            "group commit 5 ms, 4 threads": run(root / "group4", n(100_000), 4),
            "fsync every append, 1 thread": run(root / "sync", n(2_000), 1, flush_interval=0),
            "durable=True, 8 threads": run(root / "durable", n(5_000), 8, durable=True),
            "group commit 5 ms, paced 2,000/s": run(root / "paced", n(2_000), 1, rate=2_000),
        }
        report, verify_s = timed(lambda: verify(root / "group", KEY.public_key()))
        assert report.ok, report.summary()
        found, subject_s = timed(lambda: subject(root / "group", "001090000042"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_table(modes)
    entries = modes["group commit 5 ms, 1 thread"]["count"]
    print(f"verify: {entries:,} entries in {verify_s:.2f} s ({entries / verify_s:,.0f}/s); "
          f"subject: {len(found)} found in {subject_s:.2f} s ({entries / subject_s:,.0f} entries/s)")
    print(json.dumps(figures(modes, entries / verify_s, entries / subject_s)))


def print_table(modes: dict[str, dict[str, float]]) -> None:
    print(f"{'mode':<34}{'appends':>9}{'appends/s':>12}{'µs mean':>9}{'µs p50':>8}{'µs p99':>8}{'µs max':>9}"
          f"{'fsyncs':>8}{'commit every ms':>17}{'close s':>9}")
    for name, m in modes.items():
        print(f"{name:<34}{m['count']:>9,}{m['appends_per_s']:>12,.0f}{m['us_mean']:>9.1f}{m['us_p50']:>8.1f}"
              f"{m['us_p99']:>8.1f}{m['us_max']:>9.0f}{m['fsyncs']:>8,}{m['commit_every_ms']:>17.1f}"
              f"{m['close_s']:>9.3f}")


def figures(modes: dict[str, dict[str, float]], verify_rate: float, subject_rate: float) -> dict[str, float]:
    keys = {"group commit 5 ms, 1 thread": "group",
            "group commit 5 ms, 4 threads": "group_4_threads", "fsync every append, 1 thread": "fsync_each",
            "durable=True, 8 threads": "durable_8_threads", "group commit 5 ms, paced 2,000/s": "paced"}
    out: dict[str, float] = {}
    for name, short in keys.items():
        m = modes[name]
        out.update({f"{short}_appends_per_s": round(m["appends_per_s"]), f"{short}_us_p50": round(m["us_p50"], 1),
                    f"{short}_us_p99": round(m["us_p99"], 1), f"{short}_fsyncs": m["fsyncs"],
                    f"{short}_commit_every_ms": round(m["commit_every_ms"], 2)})
    out["verify_entries_per_s"] = round(verify_rate)
    out["subject_entries_per_s"] = round(subject_rate)
    return out


if __name__ == "__main__":
    main()
