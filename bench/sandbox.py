"""Benchmark of the sandbox: generation speed and the latency of its bulk operations.

Prints, at 10⁵ and 10⁶ residents (times ``--scale``):
- residents generated per second (the population registry with its ground truth included);
- p50/p99 of one 1000-record ``DongBoCongDan`` page and of one 100-record ``traDanhSachHoSo`` batch
  over loopback HTTP to a sandbox in its own process (as `hub sandbox serve` runs), each next to a
  *baseline*: the same server answering a constant body of the same size, so the ratio shows the
  sandbox's own cost whatever the machine's noise.

Targets (issue "Foundation"): ≥ 50,000 residents/s, a 1000-record SOAP page in ≤ 20 ms (p50).
Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import fix_path, sandbox_process  # noqa: E402

fix_path()

import requests  # noqa: E402

from sandbox.app import Sandbox, SandboxConfig  # noqa: E402
from sandbox.ground_truth import GroundTruth  # noqa: E402
from sandbox.population import PopulationRegistry  # noqa: E402
from sandbox.province import generate_residents  # noqa: E402
from tests.soap_helpers import PopulationCaller  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(call, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def generation_rate(n: int) -> tuple[float, float, float]:
    """Residents/s for the people alone, with the population registry and its truth, and for the
    whole sandbox (all four systems' data and ground truth)."""
    started = time.perf_counter()
    residents = generate_residents(n, seed=1)
    people = time.perf_counter() - started
    PopulationRegistry(residents, GroundTruth(), seed=1)
    population = time.perf_counter() - started
    started = time.perf_counter()
    Sandbox(SandboxConfig(residents=n, seed=1))
    return n / people, n / population, n / (time.perf_counter() - started)


def serving(n: int, repeat: int) -> dict[str, float]:
    with sandbox_process(n) as started:
        return measure(started["base"], started["env"], started["ks_ids"], repeat)


def measure(base: str, env: dict[str, str], ks_ids: list[int], repeat: int) -> dict[str, float]:
    session = requests.Session()
    caller = PopulationCaller(env, session)
    fields = {"MaTinh": "31", "TuThoiDiem": "20000101000000", "SoLuong": 1000}
    sample = caller.post("DongBoCongDan", **caller.context(), **fields)
    assert sample.status_code == 200 and sample.content.count(b"<ns1:CongDan>") == 1000, sample.text[:300]
    session.put(f"{base}/bench/constant/soap", data=sample.content)
    soap = timed(lambda: caller.post("DongBoCongDan", **caller.context(), **fields), repeat)
    base_soap = timed(lambda: session.post(f"{base}/bench/constant/soap", data=b"x"), repeat)
    figures = dict(soap_page_p50_ms=statistics.median(soap), soap_page_p99_ms=percentile(soap, 0.99),
                   soap_baseline_p50_ms=statistics.median(base_soap), soap_page_bytes=len(sample.content))
    figures["soap_vs_baseline"] = figures["soap_page_p50_ms"] / figures["soap_baseline_p50_ms"]
    if ks_ids:
        token = session.post(f"{env['HUB_CIVIL_URL']}/token", data={"grant_type": "client_credentials"},
                             auth=(env["HUB_CIVIL_CLIENT_ID"], env["HUB_CIVIL_CLIENT_SECRET"])).json()
        url = f"{env['HUB_CIVIL_URL']}/apiHoTichTuPhap/traDanhSachHoSo"
        body = {"maTinh": "31", "module": "KS", "dsMaHoSo": ks_ids}
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        first = session.post(url, json=body, headers=headers)
        session.put(f"{base}/bench/constant/civil", data=first.content)
        rest = timed(lambda: session.post(url, json=body, headers=headers), repeat)
        base_rest = timed(lambda: session.post(f"{base}/bench/constant/civil", data=b"x"), repeat)
        figures.update(civil_batch_p50_ms=statistics.median(rest), civil_batch_p99_ms=percentile(rest, 0.99),
                       civil_baseline_p50_ms=statistics.median(base_rest),
                       civil_batch_records=len(first.json().get("data") or []))
        figures["civil_vs_baseline"] = figures["civil_batch_p50_ms"] / figures["civil_baseline_p50_ms"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the sizes 10^5 and 10^6")
    parser.add_argument("--repeat", type=int, default=200, help="requests per latency measurement")
    args = parser.parse_args()
    sizes = [max(1_000, int(10**5 * args.scale)), max(1_000, int(10**6 * args.scale))]
    results: dict[str, float] = {}
    print(f"{'residents':>10} {'people/s':>12} {'population db/s':>16} {'whole sandbox/s':>16}")
    for n in sizes:
        people, population, whole = generation_rate(n)
        results[f"gen_{n}_people_per_s"] = round(people)
        results[f"gen_{n}_residents_per_s"] = round(population)
        results[f"gen_{n}_sandbox_per_s"] = round(whole)
        print(f"{n:>10,} {people:>12,.0f} {population:>16,.0f} {whole:>16,.0f}")
    serve = serving(sizes[0], args.repeat)
    results.update({k: round(v, 3) for k, v in serve.items()})
    print(f"\nserving at {sizes[0]:,} residents, {args.repeat} requests each (ms)")
    print(f"{'operation':<36} {'p50':>8} {'p99':>8} {'baseline p50':>13} {'ratio':>7}")
    print(f"{'DongBoCongDan, 1000 records':<36} {serve['soap_page_p50_ms']:>8.2f} {serve['soap_page_p99_ms']:>8.2f} "
          f"{serve['soap_baseline_p50_ms']:>13.2f} {serve['soap_vs_baseline']:>7.1f}")
    if "civil_batch_p50_ms" in serve:
        print(f"{'traDanhSachHoSo, 100 records':<36} {serve['civil_batch_p50_ms']:>8.2f} "
              f"{serve['civil_batch_p99_ms']:>8.2f} {serve['civil_baseline_p50_ms']:>13.2f} "
              f"{serve['civil_vs_baseline']:>7.1f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
