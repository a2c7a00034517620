"""Benchmark of record linkage: our linker against Splink, on the same province, in the same run.

For provinces of 10⁵ and 10⁶ residents (times ``--scale``) with the sandbox's default data faults and
no transport faults:

1. a sandbox process builds the province, writes its ground truth and serves the four systems;
2. the canonical inputs are pulled from it through the real connectors, exactly as ``hub extract``
   does (``connectors.extract.run_extract`` on the connectors of ``connectors.registry``): the
   population copy, the civil-status registry, and the business registry through **variant B** (the
   gateway variant that gives the legal representatives' ID papers; variant A gives names only). The
   sandbox is then stopped, so that both linkers have the machine to themselves;
3. ``hub.reconcile.link.run_linkage`` links every person the civil-status and business records
   mention (child, mother, father, requester, deceased, husband, wife, legal representative) to the
   citizens, timed from the Parquet files to the finished links table;
4. Splink (DuckDB backend) links the same mentions to the same citizens, timed from the same Parquet
   files: the normalised columns come from ``hub.reconcile.link.linkage_features`` (the very columns
   our linker compares; its time counts as Splink's), then a ``link_only`` model with comparisons on
   the ID number (exact personal ID, exact CMND, Damerau–Levenshtein ≤ 1, else), the family, middle
   and given name keys (Jaro–Winkler ≥ 0.9), the birth date (Splink's date-of-birth comparison),
   gender and commune; blocking rules like ours (exact ID, exact CMND, three overlapping ID segments
   for one-digit typos, given name + birth date, birth date + commune, full name + birth year); λ from
   the exact-ID rule, ``u`` by random sampling (2·10⁶ pairs), ``m`` by EM on the exact-ID and on the
   given-name + birth-date blocks; then each mention's best-scoring citizen. Splink's figures are at
   whichever of the match probabilities 0.5, 0.9 and 0.99 gives it the best F1 (in its favour);
5. both are scored against the ground truth with ``hub.reconcile.quality.score_links``;
6. from our links, the golden persons and enterprises and the conflicts between the registries are
   built (``hub.reconcile.golden``, ``hub.reconcile.conflicts``) and scored against the injected
   anomalies (``score_conflicts``: every registry disagreement must appear, recall ≥ 0.99).

Our linker also runs once more with the citizens' own parents and spouses as mentions (``+ citizen
relatives``), for its time and quality on the whole job; that row has no Splink counterpart.
Targets: our F1 at least Splink's and our time at most Splink's. Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import fix_path, serving_child  # noqa: E402

fix_path()

REGISTRIES = ("civil_events", "enterprises")
SPLINK_THRESHOLDS = (0.5, 0.9, 0.99)


def serve(residents: int, truth_dir: str) -> None:
    """Child process body: build the province (seed 1, default data faults), write its ground truth,
    print {base, env} as one JSON line, then serve until terminated."""
    from sandbox.app import Sandbox, SandboxConfig
    from sandbox.server import bind, server_for

    sandbox = Sandbox(SandboxConfig(residents=residents, seed=1, rate_limit=0))
    sandbox.truth.write(Path(truth_dir))
    app = sandbox.app()
    sock = bind()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    print(json.dumps({"base": base, "env": sandbox.environment(base)}), flush=True)
    server_for(app).run(sockets=[sock])


def served(residents: int, truth_dir: Path):
    return serving_child("bench.reconcile", "serve", residents, str(truth_dir), stop_timeout_s=120)


def extract(residents: int, work: Path) -> tuple[dict[str, Path], float]:
    """Serve a province and pull its three registries through the connectors; (paths, seconds)."""
    from connectors.extract import run_extract
    from connectors.registry import build_connector
    from hub.config import Settings

    started = time.perf_counter()
    with served(residents, work / "truth") as sandbox:
        env = {**os.environ, **sandbox["env"], "HUB_HOME": str(work / "home"), "HUB_BUSINESS_VARIANT": "B",
               **{f"HUB_{s}_RATE_LIMIT": "0" for s in ("POPULATION", "CIVIL", "BUSINESS")}}
        env.pop("HUB_CONFIG", None)
        settings = Settings.from_env(env)
        for system in ("population", "civil", "business"):
            run_extract(build_connector(system, settings, env), work / system)
    paths = {"citizens": work / "population" / "citizens.parquet",
             "civil_events": work / "civil" / "civil_events.parquet",
             "enterprises": work / "business" / "enterprises.parquet", "truth": work / "truth"}
    return paths, time.perf_counter() - started


def run_ours(paths: dict[str, Path], relatives: bool) -> tuple[object, float]:
    from hub.reconcile.link import Thresholds, run_linkage

    gc.collect()
    started = time.perf_counter()
    result = run_linkage(paths["citizens"], paths["civil_events"], paths["enterprises"],
                         thresholds=Thresholds.from_env(), include_citizen_relatives=relatives)
    return result, time.perf_counter() - started


def run_splink(paths: dict[str, Path]) -> tuple[dict, float]:
    """Splink's predictions, reduced to each mention's best citizen: ({mentions, best}, seconds)."""
    import duckdb
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    from hub.reconcile.link import linkage_features

    gc.collect()
    started = time.perf_counter()
    mentions, citizens = linkage_features(paths["citizens"], paths["civil_events"], paths["enterprises"],
                                          include_citizen_relatives=False)
    offset = mentions.num_rows

    def frame(table: pa.Table, start: int) -> pa.Table:
        columns = {"unique_id": pa.array(np.arange(start, start + table.num_rows, dtype=np.int64))}
        for name in ("name_key", "family_key", "middle_key", "given_key", "birth_date", "birth_year", "gender",
                     "commune", "id12", "id9"):
            columns[name] = table[name]
        id12 = table["id12"]
        # Three overlapping segments: one mistyped digit leaves at least one of them whole.
        columns["id_head"] = pc.utf8_slice_codeunits(id12, 0, 9)
        columns["id_tail"] = pc.utf8_slice_codeunits(id12, 6, 12)
        columns["id_ends"] = pc.binary_join_element_wise(pc.utf8_slice_codeunits(id12, 0, 6),
                                                         pc.utf8_slice_codeunits(id12, 9, 12), "")
        return pa.table(columns)

    con = duckdb.connect()
    db = DuckDBAPI(con)
    left = db.register(frame(mentions, 0), dataset_display_name="mentions")
    right = db.register(frame(citizens, offset), dataset_display_name="citizens")
    id_comparison = cl.CustomComparison(output_column_name="id_number", comparison_levels=[
        cll.CustomLevel("(id12_l IS NULL OR id12_r IS NULL) AND (id9_l IS NULL OR id9_r IS NULL)").configure(
            is_null_level=True),
        cll.CustomLevel("id12_l = id12_r", "exact personal ID"),
        cll.CustomLevel("id9_l = id9_r", "exact CMND"),
        cll.CustomLevel("damerau_levenshtein(id12_l, id12_r) <= 1 OR damerau_levenshtein(id9_l, id9_r) <= 1",
                        "one edit"),
        cll.ElseLevel(),
    ])
    settings = SettingsCreator(
        link_type="link_only", unique_id_column_name="unique_id",
        comparisons=[id_comparison, cl.JaroWinklerAtThresholds("family_key", [0.9]),
                     cl.JaroWinklerAtThresholds("middle_key", [0.9]), cl.JaroWinklerAtThresholds("given_key", [0.9]),
                     cl.DateOfBirthComparison("birth_date", input_is_string=False), cl.ExactMatch("gender"),
                     cl.ExactMatch("commune")],
        blocking_rules_to_generate_predictions=[
            block_on("id12"), block_on("id9"), block_on("id_head"), block_on("id_tail"), block_on("id_ends"),
            block_on("given_key", "birth_date"), block_on("birth_date", "commune"), block_on("name_key", "birth_year")],
        retain_matching_columns=False, retain_intermediate_calculation_columns=False)
    linker = Linker([left, right], settings, log_level=40)
    linker.training.estimate_probability_two_random_records_match([block_on("id12")], recall=0.9)
    linker.training.estimate_u_using_random_sampling(max_pairs=2e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("id12"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("given_key", "birth_date"))
    predictions = linker.inference.predict(threshold_match_probability=min(SPLINK_THRESHOLDS))
    relation = predictions.as_duckdbpyrelation()
    con.register("predictions_view", relation)
    best = con.sql(f"""
        SELECT least(unique_id_l, unique_id_r) AS mention, greatest(unique_id_l, unique_id_r) - {offset} AS citizen,
               match_probability
        FROM predictions_view
        QUALIFY row_number() OVER (PARTITION BY least(unique_id_l, unique_id_r) ORDER BY match_weight DESC) = 1
    """).to_arrow_table()
    seconds = time.perf_counter() - started
    return {"mentions": mentions, "citizens": citizens, "best": best}, seconds


def splink_links(found: dict, threshold: float):
    """Splink's best citizen per mention as link rows (band ``match`` at or above ``threshold``)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    mentions, citizens, best = found["mentions"], found["citizens"], found["best"]
    n = mentions.num_rows
    citizen = np.full(n, -1, np.int64)
    probability = np.zeros(n)
    rows = best["mention"].to_numpy()
    citizen[rows] = best["citizen"].to_numpy()
    probability[rows] = best["match_probability"].to_numpy()
    linked = (citizen >= 0) & (probability >= threshold)
    personal_id = pc.if_else(pa.array(linked), citizens["personal_id"].take(pa.array(np.maximum(citizen, 0))),
                             pa.scalar(None, pa.string()))
    return pa.table({
        "dataset": mentions["dataset"], "record_key": mentions["record_key"], "role": mentions["role"],
        "position": mentions["position"], "personal_id": personal_id,
        "band": pa.array(np.where(linked, "match", "non_match")), "method": pa.array(["splink"] * n),
        "mention_name": mentions["name"], "mention_id_number": mentions["id12"],
        "explanation": pa.array(["splink"] * n)})


def run_conflicts(paths: dict[str, Path], links) -> tuple[object, float]:
    """Golden records and the conflicts between the registries, from our links; scored against the
    injected anomalies (every registry disagreement must appear)."""
    from hub.reconcile.conflicts import detect_conflicts
    from hub.reconcile.golden import build_golden_enterprises, build_golden_persons
    from hub.reconcile.quality import score_conflicts

    started = time.perf_counter()
    persons = build_golden_persons(paths["citizens"], None, paths["civil_events"], links)
    enterprises = build_golden_enterprises(paths["enterprises"], None, links)
    found = detect_conflicts(persons.persons, enterprises.enterprises, links, paths["civil_events"])
    seconds = time.perf_counter() - started
    return score_conflicts(found, paths["truth"]), seconds


def measure(residents: int) -> list[dict]:
    from hub.reconcile.quality import score_links

    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        paths, extract_s = extract(residents, Path(tmp))
        print(f"{residents:,} residents: province served and extracted in {extract_s:.0f} s", flush=True)
        rows = []
        ours, seconds = run_ours(paths, relatives=False)
        quality = score_links(ours.links, paths["truth"], paths["citizens"], datasets=REGISTRIES)
        rows.append({"residents": residents, "system": "ours", "mentions": ours.links.num_rows,
                     "precision": quality.precision, "recall": quality.recall, "f1": quality.f1, "seconds": seconds,
                     "review": quality.review, "phases": ours.seconds, "pairs": ours.pairs})
        print(f"  ours: {quality.summary()}; {seconds:.1f} s {ours.seconds}", flush=True)
        conflicts, seconds = run_conflicts(paths, ours.links)
        rows[-1].update(conflict_recall=conflicts.recall, conflict_precision=conflicts.precision,
                        conflict_seconds=seconds)
        print(f"  conflicts: {conflicts.summary()}; {seconds:.1f} s", flush=True)
        del ours
        found, seconds = run_splink(paths)
        best = None
        for threshold in SPLINK_THRESHOLDS:
            scored = score_links(splink_links(found, threshold), paths["truth"], paths["citizens"], datasets=REGISTRIES)
            print(f"  splink at {threshold}: {scored.summary()}", flush=True)
            if best is None or scored.f1 > best[1].f1:
                best = (threshold, scored)
        threshold, scored = best
        rows.append({"residents": residents, "system": f"splink (p ≥ {threshold})", "mentions": found["mentions"].num_rows,
                     "precision": scored.precision, "recall": scored.recall, "f1": scored.f1, "seconds": seconds,
                     "review": 0})
        print(f"  splink: {seconds:.1f} s", flush=True)
        del found
        whole, seconds = run_ours(paths, relatives=True)
        quality = score_links(whole.links, paths["truth"], paths["citizens"])
        rows.append({"residents": residents, "system": "ours + citizen relatives", "mentions": whole.links.num_rows,
                     "precision": quality.precision, "recall": quality.recall, "f1": quality.f1, "seconds": seconds,
                     "review": quality.review, "phases": whole.seconds, "pairs": whole.pairs})
        print(f"  ours + relatives: {quality.summary()}; {seconds:.1f} s", flush=True)
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the province sizes 10^5 and 10^6")
    args = parser.parse_args()
    sizes = [max(1_000, int(n * args.scale)) for n in (100_000, 1_000_000)]
    rows = [row for n in sizes for row in measure(n)]
    print()
    print(f"{'residents':>10} {'system':<26} {'mentions':>9} {'precision':>10} {'recall':>8} {'F1':>8} "
          f"{'seconds':>8} {'review':>7}")
    for r in rows:
        print(f"{r['residents']:>10,} {r['system']:<26} {r['mentions']:>9,} {r['precision']:>10.4f} {r['recall']:>8.4f} "
              f"{r['f1']:>8.4f} {r['seconds']:>8.1f} {r['review']:>7,}")
    figures: dict[str, float | str] = {}
    for r in rows:
        tag = {"ours": "ours", "ours + citizen relatives": "ours_all"}.get(r["system"], "splink")
        for name in ("precision", "recall", "f1", "seconds"):
            figures[f"{tag}_{name}_{r['residents']}"] = round(r[name], 5 if name != "seconds" else 2)
        if tag == "splink":
            figures[f"splink_threshold_{r['residents']}"] = r["system"].split("≥ ")[1].rstrip(")")
    for r in rows:
        if "conflict_recall" in r:
            print(f"{r['residents']:,}: conflicts recall {r['conflict_recall']:.4f}, precision "
                  f"{r['conflict_precision']:.4f}, golden records and conflicts in {r['conflict_seconds']:.1f} s")
            for name in ("conflict_recall", "conflict_precision", "conflict_seconds"):
                figures[f"{name}_{r['residents']}"] = round(r[name], 5)
    for n in sizes:
        figures[f"f1_at_least_splink_{n}"] = figures[f"ours_f1_{n}"] >= figures[f"splink_f1_{n}"]
        figures[f"time_at_most_splink_{n}"] = figures[f"ours_seconds_{n}"] <= figures[f"splink_seconds_{n}"]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
