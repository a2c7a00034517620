"""Benchmark of the whole sync through Dagster: a full sync, then an incremental one after 1 % changed.

For provinces of 10⁵ and 10⁶ residents (times ``--scale``), the sandbox runs in its own process with no
rate limit, and a worker process runs the sync exactly as ``hub sync`` does (``hub.orchestration
.run_full_sync``: one ``land_days`` run over every day, then one ``sync_all`` run) on a fresh
``HUB_HOME`` with SQLite instance storage. Figures:

- wall time of the full sync, split into connector time (the landing assets' own time in their
  connectors and in writing their parts), transform time (canonical tables and the snapshot) and
  orchestration overhead (everything else: Dagster's run and step machinery, its event log, the
  per-partition bookkeeping of the days). Target: overhead ≤ 20 % of the total at 10⁶.
- the sandbox then changes 1 % of every registry (``POST /bench/change``) and the worker runs the
  incremental sync the schedules run (today's days, then ``sync_all``); its wall time as a share of
  the full sync's. Target: close to 1 %, not close to all of it.

Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import fix_path, sandbox_process  # noqa: E402

fix_path()
from schemas.timefmt import VN_TZ  # noqa: E402

CONNECTOR_ASSETS = ("landing/",)


def sync_worker(home: str, first_day: str | None) -> dict:
    """Child process body: one sync on ``home``; its wall time and each asset's own time."""
    from hub.orchestration import run_full_sync

    started = time.perf_counter()
    results = run_full_sync(Path(home), first_day)
    wall = time.perf_counter() - started
    assert all(r.success for r in results), "the sync failed"
    seconds: dict[str, float] = {}
    rows: dict[str, int] = {}
    for result in results:
        for event in result.get_asset_materialization_events():
            materialization = event.event_specific_data.materialization
            key = materialization.asset_key.to_user_string()
            # A range run records one materialisation per day, all with the run's metadata: count it once.
            if key in seconds and event.partition is not None:
                continue
            metadata = materialization.metadata
            seconds[key] = seconds.get(key, 0.0) + metadata["seconds"].value
            rows[key] = rows.get(key, 0) + (metadata["rows"].value if "rows" in metadata else 0)
    return {"wall": wall, "seconds": seconds, "rows": rows}


def run_sync(env: dict[str, str], home: Path, first_day: str | None) -> dict:
    """``sync_worker`` in a fresh process; its figures come back through a file (Dagster writes to stdout)."""
    figures = home / "figures.json"
    code = (f"import sys, json, pathlib; sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r}); "
            f"from bench.pipeline import sync_worker; "
            f"pathlib.Path({str(figures)!r}).write_text(json.dumps(sync_worker({str(home)!r}, {first_day!r})))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"sync failed:\n{done.stderr[-4000:]}")
    return json.loads(figures.read_text())


def split(figures: dict) -> dict[str, float]:
    connector = sum(v for k, v in figures["seconds"].items() if k.startswith(CONNECTOR_ASSETS))
    transform = sum(v for k, v in figures["seconds"].items() if not k.startswith(CONNECTOR_ASSETS))
    wall = figures["wall"]
    return {"wall_s": wall, "connector_s": connector, "transform_s": transform,
            "overhead_s": wall - connector - transform, "overhead_share": (wall - connector - transform) / wall}


def measure(residents: int) -> dict:
    with sandbox_process(residents) as served, tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **served["env"], "HUB_HOME": tmp, "HUB_VDXP_VISIBILITY_TIMEOUT": "2",
               **{f"HUB_{s}_RATE_LIMIT": "0" for s in ("POPULATION", "CIVIL", "BUSINESS", "VDXP")}}
        env.pop("HUB_CONFIG", None)
        full = run_sync(env, Path(tmp), None)
        changed = requests.post(f"{served['base']}/bench/change", params={"share": "0.01"}, timeout=600).json()
        today = datetime.now(VN_TZ).date().isoformat()  # where the changes land: the province's today
        incremental = run_sync(env, Path(tmp), today)
    return {"residents": residents, "full": split(full), "full_rows": full["rows"], "changed": changed,
            "incremental": split(incremental), "incremental_rows": incremental["rows"],
            "incremental_seconds": incremental["seconds"],
            "incremental_share": incremental["wall"] / full["wall"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the province sizes 10^5 and 10^6")
    args = parser.parse_args()
    sizes = [max(1_000, int(n * args.scale)) for n in (100_000, 1_000_000)]
    results = [measure(n) for n in sizes]
    print(f"{'residents':>10} {'sync':>12} {'wall s':>8} {'connector s':>12} {'transform s':>12} "
          f"{'overhead s':>11} {'overhead %':>11} {'% of full':>10}")
    for r in results:
        for kind in ("full", "incremental"):
            f = r[kind]
            share = "" if kind == "full" else f"{100 * r['incremental_share']:.1f}"
            print(f"{r['residents']:>10,} {kind:>12} {f['wall_s']:>8.1f} {f['connector_s']:>12.1f} "
                  f"{f['transform_s']:>12.1f} {f['overhead_s']:>11.1f} {100 * f['overhead_share']:>11.1f} {share:>10}")
    for r in results:
        print(f"{r['residents']:,}: full sync rows {r['full_rows']}; changed {r['changed']}; "
              f"incremental rows {r['incremental_rows']}; incremental seconds per asset "
              f"{ {k: round(v, 2) for k, v in r['incremental_seconds'].items()} }")
    print(json.dumps({f"{kind}_{fig}_{r['residents']}": round(r[kind][fig], 3)
                      for r in results for kind in ("full", "incremental") for fig in r[kind]}
                     | {f"incremental_share_{r['residents']}": round(r["incremental_share"], 4) for r in results}))


if __name__ == "__main__":
    main()
