"""Benchmark of the connectors against the sandbox: records/s, CPU per record, peak memory.

For provinces of 10⁵ and 10⁶ residents (times ``--scale``), the sandbox runs in its own process and
each connector's ``read`` is consumed in a fresh worker process (so its peak RSS is its own). Figures:
- records/s and CPU-µs per record of every connector that exists: its own CPU, all its threads;
- for the population connector, the CPU of a bare ``lxml.etree.fromstring`` of the very same SOAP
  responses, timed inside the same run ("bare µs/rec"): only the parse and the freeing of its tree,
  not the reading of the body, which is the connector's work. Two multiples of it: "vs bare lxml",
  the process's CPU (connector and bare parse) over the bare parse, as this bench has always printed
  it, and "own/bare", the connector's own CPU over the bare parse (target ≤ 2), which is one less;
- peak RSS at 10⁶ divided by peak RSS at 10⁵ (target: flat, ≈ 1).
Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import fix_path, sandbox_process  # noqa: E402

fix_path()

SYSTEMS = ("population", "civil", "business", "vdxp")
#: Larger than glibc's small bins (1 kB) and smaller than its smallest mmap threshold (128 kB).
_LARGE_REQUEST = 64 * 1024


def worker(system: str, env: dict[str, str]) -> dict[str, float]:
    """Consume one connector's full read; report rows, wall, CPU, bare-parse CPU and peak RSS."""
    from lxml import etree

    from connectors.registry import build_connector
    from hub.config import Settings

    env = {**env, f"HUB_{system.upper()}_RATE_LIMIT": "0"}
    connector = build_connector(system, Settings.from_env(env), env)
    bare = {"cpu": 0.0}
    if system == "population":
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)

        def bare_parse(response, *args, **kwargs):
            # Hooks run before requests reads the body: read it first, so that reading it off the
            # socket stays the connector's cost and the timer sees nothing but the parse.
            content = response.content
            started = time.thread_time()
            etree.fromstring(content, parser)
            # Freeing the tree leaves its chunks in glibc's fast bins; glibc merges them at the next
            # large request in this thread, which would bill the connector for them. Make that
            # request here, so the parse is charged with freeing what it built.
            bytearray(_LARGE_REQUEST)
            bare["cpu"] += time.thread_time() - started

        connector.transport.session.hooks["response"].append(bare_parse)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    rows = quarantined = 0
    for batch in connector.read(None):
        rows += batch.records.num_rows
        quarantined += batch.quarantine.num_rows
        if batch.after_commit is not None:
            batch.after_commit()
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu0 - bare["cpu"]
    return {"rows": rows, "quarantined": quarantined, "wall_s": wall, "cpu_s": cpu, "bare_parse_cpu_s": bare["cpu"],
            "peak_rss_mb": usage.ru_maxrss / 1024}


def available(system: str) -> bool:
    from importlib.util import find_spec

    from connectors.registry import CONNECTORS

    return find_spec(CONNECTORS[system][0]) is not None


def run_worker(system: str, env: dict[str, str]) -> dict[str, float]:
    process = subprocess.run([sys.executable, __file__, "--worker", system], input=json.dumps(env), text=True,
                             capture_output=True, timeout=3600)
    if process.returncode != 0:
        raise RuntimeError(f"{system} worker failed: {process.stderr[-2000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def _systems(text: str) -> tuple[str, ...]:
    """``--systems population,civil``: iterating on one connector should not wait for the others."""
    chosen = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in chosen if name not in SYSTEMS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown system(s) {', '.join(unknown) or '(none)'}; "
                                         f"choose from {', '.join(SYSTEMS)}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the sizes 10^5 and 10^6")
    parser.add_argument("--systems", type=_systems, default=SYSTEMS,
                        help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all that exist)")
    parser.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, json.loads(sys.stdin.read()))))
        return
    sizes = [max(1_000, int(10**5 * args.scale)), max(1_000, int(10**6 * args.scale))]
    systems = [s for s in args.systems if available(s)]
    figures: dict[str, float] = {}
    print(f"{'system':<11} {'residents':>10} {'records':>10} {'records/s':>10} {'CPU µs/rec':>11} "
          f"{'peak RSS MB':>12} {'vs bare lxml':>13} {'bare µs/rec':>12} {'own/bare':>9}")
    for n in sizes:
        with sandbox_process(n) as started:
            env = {**os.environ, **started["env"]}
            for system in systems:
                result = run_worker(system, env)
                rate = result["rows"] / result["wall_s"] if result["wall_s"] else 0.0
                per_record = 1e6 * result["cpu_s"] / max(1, result["rows"])
                ratio = (result["cpu_s"] + result["bare_parse_cpu_s"]) / result["bare_parse_cpu_s"] \
                    if result["bare_parse_cpu_s"] else None
                figures.update({f"{system}_{n}_records": result["rows"], f"{system}_{n}_records_per_s": round(rate),
                                f"{system}_{n}_cpu_us_per_record": round(per_record, 1),
                                f"{system}_{n}_peak_rss_mb": round(result["peak_rss_mb"], 1)})
                bare_per_record = 1e6 * result["bare_parse_cpu_s"] / max(1, result["rows"])
                if ratio is not None:
                    figures[f"{system}_{n}_cpu_vs_bare_parse"] = round(ratio, 2)
                    figures[f"{system}_{n}_bare_parse_cpu_us_per_record"] = round(bare_per_record, 1)
                    figures[f"{system}_{n}_own_cpu_vs_bare_parse"] = round(ratio - 1, 2)
                shown = (f"{ratio:>12.2f}x {bare_per_record:>12.1f} {ratio - 1:>8.2f}x" if ratio is not None
                         else f"{'':>13}")
                print(f"{system:<11} {n:>10,} {result['rows']:>10,} {rate:>10,.0f} {per_record:>11.1f} "
                      f"{result['peak_rss_mb']:>12.1f} {shown}")
    for system in systems:
        small, large = figures.get(f"{system}_{sizes[0]}_peak_rss_mb"), figures.get(f"{system}_{sizes[1]}_peak_rss_mb")
        if small and large:
            figures[f"{system}_peak_rss_growth"] = round(large / small, 2)
            print(f"{system}: peak memory ×{large / small:.2f} for ×{sizes[1] // sizes[0]} the records")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
