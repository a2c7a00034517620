"""Benchmark of the lookup service: citizen lookups per second and their latency, over real HTTP.

A snapshot of 10⁶ × ``--scale`` citizens is published (DuckDB, canonical schema), and each target is
served by one uvicorn worker in its own process while a load generator in this process keeps
``--connections`` keep-alive connections busy for ``--seconds``:
- ``constant``: a bare Starlette endpoint returning a constant JSON body (the floor: uvicorn,
  Starlette and the load generator, nothing else);
- ``lookup, audit off``: the lookup API (authentication, policy, the 037 rule, field minimisation)
  with an audit sink that drops entries;
- ``lookup, audit on``: the same with the real audit log (hash chain, group commit), written by its
  own process (:class:`hub.audit_writer.AuditLogProcess`) as ``hub api serve`` writes it.
The three servers run at once. Each target is measured at its maximum (every connection sends its
next request as soon as the answer arrives) ``--rounds`` times, the targets in turn, keeping its best
round, then at half the throughput of that round (requests on a fixed schedule, latency counted from
when each was due), the load at which the p99 latency is judged. At the maximum, the
server's CPU time per request is counted too (``/proc``; with audit on, the writer process's apart):
on a shared machine, or when the load generator rather than the server is the bottleneck, req/s
shares mislead, and the CPU ratio ``constant / lookup`` is what the share would be with the server
saturated.
Also timed in-process: one lookup in the serving store, and one point query in DuckDB for contrast.
Prints a table and ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, fix_path  # noqa: E402

fix_path()

FAMILY = ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Vũ", "Đặng", "Bùi", "Đỗ", "Hồ")
MIDDLE = ("Văn", "Thị", "Đức", "Ngọc", "Minh", "Quang", "Thanh", "Hữu")
GIVEN = ("An", "Bình", "Cường", "Dũng", "Hoà", "Hùng", "Lan", "Mai", "Nam", "Đạt", "Thảo")
PURPOSE = "1.001234"


def _pick(values: tuple[str, ...], i: int, salt: int) -> str:
    return values[(i * salt) % len(values)]


def person(i: int) -> tuple[str, str, int]:
    """Personal ID, full name and birth year of synthetic citizen ``i`` (as the SQL below builds them)."""
    gender_digit, serial, year = i % 2, (i // 2) % 1_000_000, 1950 + (i // 2_000_000) % 50
    personal_id = f"031{gender_digit}{year % 100:02d}{serial:06d}"
    return personal_id, f"{_pick(FAMILY, i, 1)} {_pick(MIDDLE, i, 3)} {_pick(GIVEN, i, 7)}", year


def _sql_pick(values: tuple[str, ...], salt: int) -> str:
    listed = ", ".join("'" + v + "'" for v in values)
    return f"[{listed}][1 + ((i * {salt}) % {len(values)})]"


def publish(path: Path, citizens: int) -> float:
    """Write a snapshot of ``citizens`` synthetic residents with every canonical table; seconds taken."""
    import duckdb

    from schemas.canonical.registry import DATASETS

    started = time.monotonic()
    with duckdb.connect(str(path)) as con:
        con.execute("SET enable_progress_bar = false")
        for module in DATASETS.values():
            con.register("empty", module.SCHEMA.empty_table())
            con.execute(f"CREATE TABLE {module.DATASET} AS SELECT * FROM empty")
            con.unregister("empty")
        con.execute(f"""
            INSERT INTO citizens BY NAME SELECT
              '031' || (i % 2)::VARCHAR || lpad(((1950 + (i // 2000000) % 50) % 100)::VARCHAR, 2, '0')
                    || lpad(((i // 2) % 1000000)::VARCHAR, 6, '0') AS personal_id,
              lpad((i % 1000000000)::VARCHAR, 9, '0') AS cmnd,
              {_sql_pick(FAMILY, 1)} AS family_name, {_sql_pick(MIDDLE, 3)} AS middle_name,
              {_sql_pick(GIVEN, 7)} AS given_name, (1 + i % 2)::TINYINT AS gender, '01' AS ethnicity_code,
              '00' AS religion_code, (1 + i % 4)::TINYINT AS marital_status, '0' || (i % 5)::VARCHAR AS blood_group,
              (1950 + (i // 2000000) % 50)::SMALLINT AS birth_year,
              make_date((1950 + (i // 2000000) % 50)::BIGINT, 1 + (i % 12)::BIGINT, 1 + (i % 28)::BIGINT) AS birth_date,
              'VN' AS nationality, 'CH01' AS household_relation, 'HP' || (i // 4)::VARCHAR AS household_book,
              now() - to_seconds(i % 86400) AS updated_at, 0::TINYINT AS status,
              '31' AS permanent_province_code, '115' || lpad((i % 100)::VARCHAR, 2, '0') AS permanent_ward_code,
              'Số ' || (i % 300)::VARCHAR || ' đường Lạch Tray, phường Lạch Tray, Hải Phòng' AS permanent_address,
              '31' AS current_province_code, 'Số ' || (i % 300)::VARCHAR || ' Lạch Tray' AS current_address,
              'Nguyễn Văn Bố' AS father_name, 'Trần Thị Mẹ' AS mother_name,
              'population' AS source_system, 'bench-' || (i // 500)::VARCHAR AS request_id, now() AS fetched_at,
              md5(i::VARCHAR) || md5(i::VARCHAR) AS payload_sha256
            FROM range({citizens}) t(i)""")
        con.execute("CHECKPOINT")
    return time.monotonic() - started


# --- servers (child processes) ----------------------------------------------------------------------

class _DropSink:
    def append(self, entry: Any, durable: bool = False) -> int:
        return 0


def serve(kind: str, home: str) -> None:
    """Child process body: one uvicorn worker serving ``kind``; prints {base, load_seconds, rss_mb,
    writer_pid} (the audit writer process's id, or None)."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from hub.access_policy import AccessPolicy
    from hub.lookup_api import create_app
    from hub.serving_store import SnapshotStore
    from sandbox.server import bind, server_for

    load_seconds, writer_pid = 0.0, None
    if kind == "constant":
        body = json.dumps({"source": "population", "record": {"personal_id": "031090012345"}}).encode()

        async def constant(request):
            return Response(body, media_type="application/json")

        app = Starlette(routes=[Route("/v1/citizens/{personal_id}", constant)])
    else:
        store = SnapshotStore(Path(home) / "current.duckdb", check_interval=3600)
        started = time.monotonic()
        store.load()
        load_seconds = time.monotonic() - started
        audit = _DropSink()
        if kind == "audit_on":  # as `hub api serve` runs it: the log written by a process of its own
            from hub.audit_writer import AuditLogProcess
            audit = AuditLogProcess(Path(home) / f"audit-{os.getpid()}")
            writer_pid = audit.pid
        app = create_app(store, AccessPolicy(Path(home) / "clients.json"), audit)
    sock = bind()
    print(json.dumps({"base": f"http://127.0.0.1:{sock.getsockname()[1]}", "load_seconds": round(load_seconds, 2),
                      "rss_mb": round(_rss_mb(), 1), "writer_pid": writer_pid}), flush=True)
    server_for(app).run(sockets=[sock])


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def cpu_seconds(pid: int | None) -> float:
    """User and system CPU time of process ``pid`` (all its threads) so far; 0 for None."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(kind: str, home: Path) -> tuple[subprocess.Popen, dict[str, Any]]:
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.lookup import serve; "
            f"serve({kind!r}, {str(home)!r})")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    if not line:
        child.wait(timeout=60)
        raise RuntimeError(f"the {kind} server did not start")
    return child, json.loads(line)


# --- load generator ---------------------------------------------------------------------------------

def request_lines(key: str, citizens: int, count: int = 2000) -> list[bytes]:
    """GET requests for ``count`` citizens spread over the province."""
    lines = []
    for n in range(count):
        personal_id, name, year = person((n * 7919) % citizens)
        target = (f"/v1/citizens/{personal_id}?purpose={PURPOSE}&name={quote(name)}&birth_date={year}"
                  f"&fields=personal_id,family_name,middle_name,given_name,birth_date,permanent_address")
        lines.append(f"GET {target} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
    return lines


async def _connection(host: str, port: int, lines: list[bytes], offset: int, deadline: float,
                      latencies: list[float], errors: list[int], interval: float | None = None,
                      phase: float = 0.0) -> None:
    """One keep-alive connection: requests back to back, or (``interval``) one every ``interval``
    seconds on a fixed schedule, the first after ``phase`` seconds. On a schedule, a request sent
    late because the previous answer came late is timed from when it was due (the wait is the
    server's), one sent late because the client's timer woke late from when it was sent."""
    reader, writer = await asyncio.open_connection(host, port)
    n = offset
    due = time.perf_counter() + phase
    try:
        while time.perf_counter() < deadline:
            if interval is not None:
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                    started = time.perf_counter()
                else:
                    started = due
                due += interval
            else:
                started = time.perf_counter()
            writer.write(lines[n % len(lines)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(int(head[9:12]))
            n += 1
    finally:
        writer.close()


def load(base: str, lines: list[bytes], connections: int, seconds: float, rate: float | None = None,
         pids: dict[str, int | None] | None = None) -> dict[str, float]:
    """Keep ``connections`` busy for ``seconds`` (after a one-second warm-up), or, with ``rate``,
    offer ``rate`` requests per second spread evenly over them; throughput and latency, and the CPU
    microseconds per request of each of ``pids`` (name → process id) over the measured part."""
    host, port = base.removeprefix("http://").split(":")
    interval = connections / rate if rate else None

    async def run(duration: float) -> tuple[list[float], list[int]]:
        latencies: list[float] = []
        errors: list[int] = []
        deadline = time.perf_counter() + duration
        await asyncio.gather(*(_connection(host, int(port), lines, i * 97, deadline, latencies, errors, interval,
                                           interval * i / connections if interval else 0.0)
                               for i in range(connections)))
        return latencies, errors

    uvloop.run(run(1.0))
    pids = pids or {}
    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    latencies, errors = uvloop.run(run(seconds))
    elapsed = time.perf_counter() - started
    cpu = {f"{name}_cpu_us": 1e6 * (cpu_seconds(pid) - cpu[name]) / len(latencies) for name, pid in pids.items()}
    latencies.sort()
    return {"requests": len(latencies), "per_second": len(latencies) / elapsed, "errors": len(errors),
            "p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
            **cpu}


# --- in-process figures -----------------------------------------------------------------------------

def in_process(path: Path, citizens: int) -> dict[str, float]:
    """Microseconds for one lookup in the serving store (find, decode, 037 check, projection) and
    for one point query in DuckDB, the per-request cost the store replaces."""
    import duckdb

    from hub.identity_match import identity_matches, parse_birth
    from hub.serving_store import read_snapshot

    snapshot = read_snapshot(path)
    rows = snapshot.datasets["citizens"].rows
    p = rows.position
    people = [person((n * 7919) % citizens) for n in range(2000)]
    fields = ("personal_id", "given_name", "birth_date", "permanent_address")
    started = time.perf_counter()
    for personal_id, name, year in people * 5:
        values = rows.values(rows.find(personal_id))
        assert identity_matches((values[p["family_name"]], values[p["middle_name"]], values[p["given_name"]]),
                                values[p["birth_date"]], values[p["birth_year"]], name, parse_birth(str(year)))
        {f: values[p[f]] for f in fields}
    store_us = (time.perf_counter() - started) / (len(people) * 5) * 1e6
    with duckdb.connect(str(path), read_only=True) as con:
        statement = "SELECT * FROM citizens WHERE personal_id = ?"
        started = time.perf_counter()
        for personal_id, _, _ in people[:500]:
            con.execute(statement, [personal_id]).fetchall()
        duck_us = (time.perf_counter() - started) / 500 * 1e6
    return {"store_lookup_us": store_us, "duckdb_point_query_us": duck_us, "store_load_s": snapshot.load_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="citizens = 10^6 x scale")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure the three targets this many times, interleaved, and keep each one's best "
                             "(a shared machine: the others' load comes and goes)")
    args = parser.parse_args()
    citizens = max(1000, int(1_000_000 * args.scale))

    from hub.access_policy import register_client

    with tempfile.TemporaryDirectory(prefix="bench-lookup-") as tmp:
        home = Path(tmp)
        publish_s = publish(home / "current.duckdb", citizens)
        key = register_client(home / "clients.json", "bench", "H31.22", {"citizens": ["*"]}, [PURPOSE], rate=0)
        lines = request_lines(key, citizens)
        figures: dict[str, Any] = {"citizens": citizens, "publish_s": round(publish_s, 2),
                                   **{k: round(v, 2) for k, v in in_process(home / "current.duckdb", citizens).items()}}
        kinds = ("constant", "audit_off", "audit_on")
        servers = {}
        try:
            for kind in kinds:  # all up at once, so that each round measures the three within seconds
                servers[kind] = _start(kind, home)
            best: dict[str, dict[str, float]] = {}
            for _ in range(args.rounds):
                for kind in kinds:
                    child, info = servers[kind]
                    pids = {"server": child.pid, **({"writer": info["writer_pid"]} if info["writer_pid"] else {})}
                    result = load(info["base"], lines, args.connections, args.seconds, pids=pids)
                    if kind not in best or result["per_second"] > best[kind]["per_second"]:
                        best[kind] = result
            rows = []
            for kind in kinds:
                child, info = servers[kind]
                result = best[kind]
                # the same server at half the throughput of its best round: the latency of a loaded but
                # not saturated service (the requirement: p99 <= 10 ms there)
                half = load(info["base"], lines, args.connections, args.seconds, rate=result["per_second"] / 2)
                rows.append((kind, result, half, info))
                figures.update({f"{kind}_{k}": round(v, 3) for k, v in result.items()})
                figures.update({f"{kind}_half_load_{k}": round(v, 3) for k, v in half.items()
                                if k in ("per_second", "errors", "p50_ms", "p99_ms")})
                figures[f"{kind}_server_rss_mb"] = info["rss_mb"]
        finally:
            for child, _ in servers.values():
                child.terminate()
            for child, _ in servers.values():
                child.wait(timeout=60)
        figures["rounds"] = args.rounds
    figures["audit_off_share_of_constant"] = round(figures["audit_off_per_second"] / figures["constant_per_second"], 3)
    figures["audit_on_share_of_constant"] = round(figures["audit_on_per_second"] / figures["constant_per_second"], 3)
    figures["audit_cost"] = round(1 - figures["audit_on_per_second"] / figures["audit_off_per_second"], 3)
    constant_cpu = figures["constant_server_cpu_us"]
    figures["audit_off_cpu_share_of_constant"] = round(constant_cpu / figures["audit_off_server_cpu_us"], 3)
    figures["audit_on_cpu_share_of_constant"] = round(constant_cpu / figures["audit_on_server_cpu_us"], 3)
    figures["audit_cpu_cost"] = round(1 - figures["audit_off_server_cpu_us"] / figures["audit_on_server_cpu_us"], 3)
    _print_table(rows, figures)
    print(json.dumps(figures))


def _print_table(rows: list[tuple[str, dict[str, float], dict[str, float], dict[str, Any]]],
                 figures: dict[str, Any]) -> None:
    print(f"citizens {figures['citizens']:,}; snapshot published in {figures['publish_s']} s, loaded into the store "
          f"in {figures['store_load_s']} s; one lookup in the store {figures['store_lookup_us']} µs, one DuckDB "
          f"point query {figures['duckdb_point_query_us']} µs")
    print(f"{'':<12} {'at the maximum load':^44} {'at half of it':^28}")
    print(f"{'target':<12} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
          f"{'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'RSS MB':>7}")
    for kind, r, h, info in rows:
        print(f"{kind:<12} {r['requests']:>9,} {r['per_second']:>9,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['errors']:>6} {h['per_second']:>9,.0f} {h['p50_ms']:>8.2f} {h['p99_ms']:>8.2f} {h['errors']:>6} "
              f"{info['rss_mb']:>7.0f}")
    print(f"lookup / constant: audit off {figures['audit_off_share_of_constant']:.2f}, audit on "
          f"{figures['audit_on_share_of_constant']:.2f} (target >= 0.60); the audit log costs "
          f"{figures['audit_cost']:.0%} of the throughput (target <= 33%); p99 at half load with audit on "
          f"{figures['audit_on_half_load_p99_ms']:.2f} ms (target <= 10)")
    print(f"server CPU per request: constant {figures['constant_server_cpu_us']:.1f} µs, audit off "
          f"{figures['audit_off_server_cpu_us']:.1f} µs, audit on {figures['audit_on_server_cpu_us']:.1f} µs (and "
          f"{figures.get('audit_on_writer_cpu_us', 0):.1f} µs in the audit writer process); as shares of the "
          f"constant: audit off {figures['audit_off_cpu_share_of_constant']:.2f}, audit on "
          f"{figures['audit_on_cpu_share_of_constant']:.2f}; the audit log costs {figures['audit_cpu_cost']:.0%} "
          f"of the server's CPU")


if __name__ == "__main__":
    main()
