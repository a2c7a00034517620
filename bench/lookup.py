"""Benchmark of the lookup service: citizen lookups per second and their latency, over real HTTP.

A snapshot of 10⁶ × ``--scale`` citizens is published (DuckDB, canonical schema), and each target is
served by one uvicorn worker in its own process, configured as ``hub api serve`` configures it
(:func:`hub.http_serving.server_for`), while a load generator in this process keeps
``--connections`` keep-alive connections busy:
- ``constant``: a bare Starlette endpoint returning a constant JSON body (the floor: uvicorn,
  Starlette and the load generator, nothing else);
- ``lookup, audit off``: the lookup API (authentication, policy, the 037 rule, field minimisation)
  with an audit sink that drops entries;
- ``lookup, audit on``: the same with the real audit log (hash chain, group commit), written by its
  own process (:class:`hub.audit_writer.AuditLogProcess`) as ``hub api serve`` writes it.
The three servers run at once. Each target is measured at its maximum (every connection sends its
next request as soon as the answer arrives) in one-second slices, the three targets in turn and in a
rotating order, ``--seconds`` slices of each per round and ``--rounds`` rounds: a lookup's share of
the constant is judged slice by slice against the constant measured within the same three seconds,
and the median of those shares is the figure (with its range), so that the shared machine's load,
which comes and goes over seconds, falls on all three alike. Each target is then measured at half
its maximum throughput (requests on a fixed schedule, latency counted from when each was due), the
load at which the p99 latency is judged. At the maximum, the server's CPU time per request is
counted too (``/proc``; with audit on, the writer process's apart): when the load generator rather
than the server is the bottleneck, req/s shares mislead, and the CPU ratio ``constant / lookup`` is
what the share would be with the server saturated.
Also timed in-process: one lookup in the serving store, and one point query in DuckDB for contrast.
The servers run the hot modules compiled when ``make setup`` built them (:mod:`hub.speedups`; the
figure ``compiled_modules`` says how many): ``python -P hub/speedups.py clean`` before a run measures
the pure-Python service, ``ensure`` builds them again.
Prints a table and ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, fix_path  # noqa: E402

fix_path()

FAMILY = ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Vũ", "Đặng", "Bùi", "Đỗ", "Hồ")
MIDDLE = ("Văn", "Thị", "Đức", "Ngọc", "Minh", "Quang", "Thanh", "Hữu")
GIVEN = ("An", "Bình", "Cường", "Dũng", "Hoà", "Hùng", "Lan", "Mai", "Nam", "Đạt", "Thảo")
PURPOSE = "1.001234"
#: One slice of a pass at the maximum load, and the part of it before counting starts (new connections).
SLICE_SECONDS, SLICE_WARMUP = 1.0, 0.2


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


class Sample(NamedTuple):
    """What one load run saw: every request's latency (seconds), the failed answers' statuses, how
    long it ran, and the CPU seconds each watched process spent meanwhile."""

    latencies: list[float]
    errors: list[int]
    elapsed: float
    cpu: dict[str, float]


def load(base: str, lines: list[bytes], connections: int, seconds: float, rate: float | None = None,
         pids: dict[str, int | None] | None = None, warmup: float = 1.0) -> Sample:
    """Keep ``connections`` busy for ``seconds`` (after ``warmup`` seconds not counted), or, with
    ``rate``, offer ``rate`` requests per second spread evenly over them; what was measured, with the
    CPU time of each of ``pids`` (name → process id) over the counted part."""
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

    if warmup:
        uvloop.run(run(warmup))
    pids = pids or {}
    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    latencies, errors = uvloop.run(run(seconds))
    elapsed = time.perf_counter() - started
    return Sample(latencies, errors, elapsed, {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()})


def summary(samples: list[Sample]) -> dict[str, float]:
    """Throughput, latency and CPU microseconds per request (per watched process) of ``samples`` taken
    together."""
    latencies = sorted(x for sample in samples for x in sample.latencies)
    count = len(latencies)
    cpu = {name: sum(sample.cpu[name] for sample in samples) for name in samples[0].cpu}
    return {"requests": count, "per_second": count / sum(sample.elapsed for sample in samples),
            "errors": sum(len(sample.errors) for sample in samples),
            "p50_ms": 1000 * latencies[count // 2], "p99_ms": 1000 * latencies[int(count * 0.99)],
            **{f"{name}_cpu_us": 1e6 * seconds / count for name, seconds in cpu.items()}}


def shares(passes: list[dict[str, Sample]], kind: str) -> dict[str, float]:
    """``kind``'s share of the constant, pass by pass (each pass measures the three targets within a
    few seconds): the median, lowest and highest share of throughput, and the median share of the
    server's CPU per request (the constant's over ``kind``'s)."""
    def rate(sample: Sample) -> float:
        return len(sample.latencies) / sample.elapsed

    def cpu_per_request(sample: Sample) -> float:
        return sample.cpu["server"] / max(1, len(sample.latencies))

    throughput = [rate(p[kind]) / rate(p["constant"]) for p in passes]
    cpu = [cpu_per_request(p["constant"]) / cpu_per_request(p[kind]) for p in passes
           if cpu_per_request(p[kind]) > 0]
    return {"share_of_constant": statistics.median(throughput), "share_min": min(throughput),
            "share_max": max(throughput), "cpu_share_of_constant": statistics.median(cpu) if cpu else float("nan")}


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
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="one-second slices of each target per round at the maximum load, and the seconds "
                             "of each run at half load")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of slices at the maximum load (more: a steadier median on a shared machine)")
    args = parser.parse_args()
    citizens = max(1000, int(1_000_000 * args.scale))

    from hub.access_policy import register_client
    from hub.speedups import MODULES, built

    with tempfile.TemporaryDirectory(prefix="bench-lookup-") as tmp:
        home = Path(tmp)
        publish_s = publish(home / "current.duckdb", citizens)
        key = register_client(home / "clients.json", "bench", "H31.22", {"citizens": ["*"]}, [PURPOSE], rate=0)
        lines = request_lines(key, citizens)
        figures: dict[str, Any] = {"citizens": citizens, "compiled_modules": len(built()), "hot_modules": len(MODULES),
                                   "publish_s": round(publish_s, 2),
                                   **{k: round(v, 2) for k, v in in_process(home / "current.duckdb", citizens).items()}}
        kinds = ("constant", "audit_off", "audit_on")
        servers = {}
        try:
            for kind in kinds:  # all up at once, so that each pass measures the three within seconds
                servers[kind] = _start(kind, home)
            watched = {kind: {"server": child.pid, **({"writer": info["writer_pid"]} if info["writer_pid"] else {})}
                       for kind, (child, info) in servers.items()}
            for _, info in servers.values():  # warm-up, not counted
                load(info["base"], lines, args.connections, 1.0, warmup=0)
            passes: list[dict[str, Sample]] = []
            for n in range(args.rounds * max(1, round(args.seconds))):
                order = kinds[n % 3:] + kinds[:n % 3]  # each target first, second and last in turn
                passes.append({kind: load(servers[kind][1]["base"], lines, args.connections, SLICE_SECONDS,
                                          pids=watched[kind], warmup=SLICE_WARMUP) for kind in order})
            rows = []
            for kind in kinds:
                child, info = servers[kind]
                result = summary([p[kind] for p in passes])
                # the same server at half its maximum throughput: the latency of a loaded but not
                # saturated service (the requirement: p99 <= 10 ms there)
                half = summary([load(info["base"], lines, args.connections, args.seconds,
                                     rate=result["per_second"] / 2)])
                rows.append((kind, result, half, info))
                figures.update({f"{kind}_{k}": round(v, 3) for k, v in result.items()})
                figures.update({f"{kind}_half_load_{k}": round(v, 3) for k, v in half.items()
                                if k in ("per_second", "errors", "p50_ms", "p99_ms")})
                figures[f"{kind}_server_rss_mb"] = info["rss_mb"]
                if kind != "constant":
                    figures.update({f"{kind}_{k}": round(v, 3) for k, v in shares(passes, kind).items()})
        finally:
            for child, _ in servers.values():
                child.terminate()
            for child, _ in servers.values():
                child.wait(timeout=60)
        figures["rounds"], figures["passes"] = args.rounds, len(passes)
    figures["audit_cost"] = round(1 - figures["audit_on_share_of_constant"] / figures["audit_off_share_of_constant"], 3)
    figures["audit_cpu_cost"] = round(1 - figures["audit_off_server_cpu_us"] / figures["audit_on_server_cpu_us"], 3)
    _print_table(rows, figures)
    print(json.dumps(figures))


def _print_table(rows: list[tuple[str, dict[str, float], dict[str, float], dict[str, Any]]],
                 figures: dict[str, Any]) -> None:
    print(f"citizens {figures['citizens']:,}; snapshot published in {figures['publish_s']} s, loaded into the store "
          f"in {figures['store_load_s']} s; one lookup in the store {figures['store_lookup_us']} µs, one DuckDB "
          f"point query {figures['duckdb_point_query_us']} µs; hot modules compiled: {figures['compiled_modules']} of "
          f"{figures['hot_modules']} (hub/speedups.py)")
    print(f"{'':<12} {'at the maximum load':^44} {'at half of it':^28}")
    print(f"{'target':<12} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
          f"{'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'RSS MB':>7}")
    for kind, r, h, info in rows:
        print(f"{kind:<12} {r['requests']:>9,} {r['per_second']:>9,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['errors']:>6} {h['per_second']:>9,.0f} {h['p50_ms']:>8.2f} {h['p99_ms']:>8.2f} {h['errors']:>6} "
              f"{info['rss_mb']:>7.0f}")
    print(f"lookup / constant, median of {figures['passes']} passes (range): audit off "
          f"{figures['audit_off_share_of_constant']:.2f} ({figures['audit_off_share_min']:.2f}-"
          f"{figures['audit_off_share_max']:.2f}), audit on {figures['audit_on_share_of_constant']:.2f} "
          f"({figures['audit_on_share_min']:.2f}-{figures['audit_on_share_max']:.2f}) (target >= 0.60); "
          f"the audit log costs "
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
