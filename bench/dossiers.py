"""Benchmark of the one-stop-shop path: dossiers read, mapped and reported to the national portal.

At 10⁵ dossiers (times ``--scale``) in one sandbox one-stop-shop database (SQLite by default,
``--backend postgresql`` or ``mariadb`` for the machine's servers), with the sandbox's national portal
served from a child process (no rate limit, no faults):

1. **read**: the one-stop-shop connector's full read (every dossier with its steps nested, validated,
   status codes mapped), against a baseline in the same run: the two tables selected raw through
   SQLAlchemy, no mapping;
2. **map**: canonical rows to the portal's dossier and progress-step payloads (``hub.portal_report``);
3. **report**: the first reporting pass (every dossier new, every step), against a baseline in the same
   run: the very same payloads POSTed in the same batches to a constant endpoint of the sandbox's
   server, so the ratio is what the reporting logic and its state cost on top of HTTP;
4. **no-op pass**: a second pass with nothing changed, as a share of the first;
5. **incremental**: 1 % of the dossiers change at the source (``OneStopSystems.advance``): the
   connector's incremental read plus a reporting pass, as a share of the full read plus first pass.

Every bench script takes ``--scale N``, prints a table and ends with one JSON line of its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import fix_path, serving_child  # noqa: E402

fix_path()

MONTHS = 3


def _url(backend: str, directory: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{directory / 'district.sqlite'}"
    if backend == "postgresql":
        return "postgresql+psycopg2://postgres@127.0.0.1:5432/lgsp_bench_onestop"
    if backend == "mariadb":
        return "mysql+pymysql://root@127.0.0.1:3306/lgsp_bench_onestop?charset=utf8mb4"
    raise SystemExit(f"unknown backend {backend!r}: sqlite, postgresql or mariadb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="dossiers = 10^5 x scale")
    parser.add_argument("--backend", default="sqlite", help="sqlite, postgresql or mariadb")
    parser.add_argument("--batch", type=int, default=500, help="dossiers per DongBoHoSoMC call")
    args = parser.parse_args()

    import requests
    import sqlalchemy as sa

    from connectors.registry import build_connector
    from hub.config import Settings
    from hub.portal_report import dossier_payload, report_pass, step_payloads
    from connectors.portal import PortalClient
    from sandbox.app import Sandbox, SandboxConfig
    from sandbox.onestop import OneStopConfig, known_systems

    dossiers = int(100_000 * args.scale)
    system = next(name for name, (_, level) in known_systems().items() if level == "district")
    figures: dict[str, float] = {"dossiers": dossiers}
    with tempfile.TemporaryDirectory() as tmp, serving_child("bench.common", "serve", 2_000) as child:
        work = Path(tmp)
        url = _url(args.backend, work)
        print(f"generating {dossiers:,} dossiers for {system} on {args.backend} ...", flush=True)
        started = time.perf_counter()
        onestop = OneStopConfig(systems=((system, url),), dossiers_per_month=dossiers // MONTHS + 1, months=MONTHS,
                                change_interval_s=0, read_only_users=False)
        sandbox = Sandbox(SandboxConfig(residents=5_000, seed=1, onestop=onestop))
        sandbox.onestop.open()
        figures["load_s"] = time.perf_counter() - started
        served_url = sandbox.onestop.urls()[system]
        env = {**child["env"], "HUB_ONESTOP_URLS": f"{system}={served_url}", "HUB_DVCQG_RATE_LIMIT": "0"}
        settings = Settings.from_env(env)
        try:
            # 1. read: raw tables, then the connector.
            engine = sa.create_engine(served_url)
            started = time.perf_counter()
            with engine.connect() as con:
                raw = sum(1 for _ in con.execution_options(yield_per=10_000).execute(sa.text("SELECT * FROM ho_so")))
                raw_steps = sum(1 for _ in con.execution_options(yield_per=10_000).execute(
                    sa.text("SELECT * FROM qua_trinh_xu_ly")))
            baseline_read = time.perf_counter() - started
            engine.dispose()
            connector = build_connector("onestop", settings, env)
            started = time.perf_counter()
            rows, cursor = [], None
            for batch in connector.read(None):
                rows.extend(batch.records.to_pylist())
                cursor = batch.cursor
            read_s = time.perf_counter() - started
            steps = sum(len(r["steps"] or ()) for r in rows)

            # 2. map.
            started = time.perf_counter()
            payloads = [(dossier_payload(r, {}), step_payloads(r)) for r in rows if not r["deleted"]]
            map_s = time.perf_counter() - started

            # 3. report, against the same payloads POSTed raw to a constant endpoint.
            session = requests.Session()
            started = time.perf_counter()
            for start in range(0, len(payloads), args.batch):
                chunk = payloads[start:start + args.batch]
                session.post(f"{child['base']}/bench/constant/portal",
                             data=json.dumps({"data": [d for d, _ in chunk]}).encode()).raise_for_status()
                flat = [s for _, ss in chunk for s in ss]
                session.post(f"{child['base']}/bench/constant/portal",
                             data=json.dumps({"data": flat}).encode()).raise_for_status()
            baseline_report = time.perf_counter() - started
            client = PortalClient.from_settings(settings, env)
            state = work / "portal.sqlite"
            first = report_pass(rows, client, state, batch_size=args.batch, step_batch_size=args.batch * 3)
            report_s = first.seconds

            # 4. nothing changed.
            noop = report_pass(rows, client, state, batch_size=args.batch, step_batch_size=args.batch * 3)

            # 5. 1 % changes at the source.
            sandbox.onestop.advance(max(1, dossiers // 100), seed=5)
            started = time.perf_counter()
            changed = [row for batch in connector.read(cursor) for row in batch.records.to_pylist()]
            incremental_read = time.perf_counter() - started
            merged = {(r["system"], r["dossier_code"]): r for r in rows}
            merged.update({(r["system"], r["dossier_code"]): r for r in changed})
            incremental = report_pass(list(merged.values()), client, state, batch_size=args.batch,
                                      step_batch_size=args.batch * 3)
        finally:
            sandbox.onestop.drop()
        held = requests.get(f"{env['HUB_DVCQG_URL']}/_sandbox/received",
                            auth=(env["HUB_DVCQG_USER"], env["HUB_DVCQG_PASSWORD"]), timeout=60).json()

    figures.update({
        "raw_rows": raw, "raw_steps": raw_steps, "steps": steps,
        "read_s": read_s, "read_per_s": len(rows) / read_s, "read_ratio_to_raw": baseline_read / read_s,
        "map_s": map_s, "map_per_s": len(payloads) / map_s,
        "report_s": report_s, "report_per_s": first.dossiers_new / report_s,
        "report_steps_per_s": first.steps_sent / report_s, "report_ratio_to_raw_http": baseline_report / report_s,
        "noop_s": noop.seconds, "noop_share": noop.seconds / report_s,
        "incremental_changed": len(changed), "incremental_s": incremental_read + incremental.seconds,
        "incremental_share": (incremental_read + incremental.seconds) / (read_s + report_s),
        "portal_dossiers": len(held["dossiers"]), "portal_steps": len(held["steps"]),
    })
    print()
    print(f"{'phase':<34} {'seconds':>9} {'dossiers/s':>12} {'vs baseline':>12}")
    print(f"{'read (connector, full)':<34} {read_s:>9.2f} {figures['read_per_s']:>12,.0f} "
          f"{figures['read_ratio_to_raw']:>11.2f}x")
    print(f"{'  baseline: raw SELECT of both':<34} {baseline_read:>9.2f} {raw / baseline_read:>12,.0f}")
    print(f"{'map to portal payloads':<34} {map_s:>9.2f} {figures['map_per_s']:>12,.0f}")
    print(f"{'report, first pass':<34} {report_s:>9.2f} {figures['report_per_s']:>12,.0f} "
          f"{figures['report_ratio_to_raw_http']:>11.2f}x")
    print(f"{'  baseline: same POSTs, constant':<34} {baseline_report:>9.2f} {len(payloads) / baseline_report:>12,.0f}")
    print(f"{'report, nothing changed':<34} {noop.seconds:>9.2f} {'':>12} {figures['noop_share']:>11.1%}")
    print(f"{'1 % changed: read + report':<34} {figures['incremental_s']:>9.2f} {'':>12} "
          f"{figures['incremental_share']:>11.1%}")
    print(f"\n{steps:,} steps; first pass sent {first.dossiers_new:,} dossiers and {first.steps_sent:,} steps in "
          f"{first.write_calls:,} calls; the incremental pass {incremental.summary()}")
    print(f"the portal holds {figures['portal_dossiers']:,} dossiers and {figures['portal_steps']:,} steps "
          f"(source: {raw:,} and {raw_steps:,} before the 1 % change)")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    os.environ.setdefault("HUB_HOME", tempfile.mkdtemp(prefix="bench-dossiers-"))
    main()
