"""How good the links are, measured against the sandbox's ground truth.

The sandbox writes, for every record it serves, each person the record mentions and who that person
truly is (``records``: ``dataset, record_key, role → entity_id P…``), and every person's true
attributes (``persons``: ``person → personal_id``); see :mod:`sandbox.ground_truth`. A link row of
:data:`hub.reconcile.link.LINK_SCHEMA` is scored by comparing the citizen it names with the truth.

What counts
-----------
- A mention is **linked** when its band is ``exact`` or ``match``; ``review`` is a proposal that waits
  for a person and is *not* a link (it is reported apart: how many, and how many proposals are right).
- The truth of a mention is the set of true persons recorded for its ``(dataset, record_key, role)``
  (one person, or several for an enterprise's representatives). Its true citizens are their personal
  IDs, when they are among the ``citizens`` that were linked against.
- A mention is **in scope** when one of its true persons is such a citizen. A mention whose true person
  is not in the population (a foreign father, a representative from another province: no citizen to
  find) or whose record the truth does not describe is **out of scope**: linking it to anyone is a
  false positive, leaving it unlinked is a true negative.
- **True positive**: a truth row ``(dataset, record_key, role, person)`` in scope whose citizen some
  mention of that ``(dataset, record_key, role)`` is linked to. **False negative**: an in-scope truth
  row with no such link (unlinked, held for review, or linked to someone else). **False positive**: a
  linked mention whose citizen is not among its true citizens (a wrong person, or an out-of-scope
  mention linked at all). A wrong link is therefore one false positive and one false negative.
- precision = correct links / links; recall = true positives / in-scope truth rows; F1 their harmonic mean.

Truth rows of a ``(dataset, record_key, role)`` the served record left empty (a population record that
shows no spouse for a widow) have no mention and are not in scope; they are counted as ``unmentioned``
so that a linker that drops mentions cannot hide it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hub.reconcile.link import LINKED_BANDS

#: Link ``dataset``/``role`` → the ground truth's ``dataset``/``role`` for the same mention.
TRUTH_ROLES = {"legal_representative": "legal_rep"}
TRUTH_DATASETS = {"citizens": "citizen", "enterprises": "enterprise"}  # civil_events: the module (KS, KT, KH)


@dataclass
class Quality:
    """Scores of one links table against one ground truth."""

    precision: float
    recall: float
    f1: float
    links: int  # linked mentions (exact + match)
    correct_links: int
    in_scope: int  # truth rows that could be found
    true_positives: int
    false_negatives: int
    false_positives: int
    out_of_scope_mentions: int
    unmentioned: int  # truth rows of covered roles whose record names nobody there
    review: int
    review_correct: int
    by_method: list[dict[str, Any]] = field(default_factory=list)  # method, band, mentions, correct
    by_role: list[dict[str, Any]] = field(default_factory=list)  # dataset, role, in scope, tp, fp, precision, recall
    errors: pa.Table | None = None  # wrong links and missed mentions, with what the truth says

    def summary(self) -> str:
        return (f"precision {self.precision:.4f}, recall {self.recall:.4f}, F1 {self.f1:.4f} "
                f"({self.links} links, {self.false_positives} wrong; {self.in_scope} findable, "
                f"{self.false_negatives} missed; {self.review} in review, {self.review_correct} of them right)")


def load_truth(directory: str | Path) -> dict[str, pa.Table]:
    """The ``records`` and ``persons`` tables a sandbox wrote with ``GroundTruth.write``."""
    root = Path(directory)
    return {"records": pq.read_table(root / "records.parquet"),
            "persons": pq.read_table(root / "persons.parquet", columns=["person", "personal_id"])}


def score_links(links: pa.Table, truth: dict[str, pa.Table] | str | Path, citizens: pa.Table | str | Path,
                *, datasets: tuple[str, ...] | None = None) -> Quality:
    """Precision, recall and F1 of ``links`` against ``truth`` (see the module docstring).

    ``citizens`` is the table that was linked against (only its ``personal_id`` is read): a true
    person outside it is out of scope. ``datasets`` limits the scoring to mentions of those link
    datasets (e.g. ``("civil_events", "enterprises")``).
    """
    tables = load_truth(truth) if isinstance(truth, (str, Path)) else truth
    if isinstance(citizens, (str, Path)):
        people = pq.read_table(citizens, columns=["personal_id"])
    else:
        people = citizens.select(["personal_id"])
    if datasets is not None:
        links = links.filter(pc.is_in(links["dataset"], pa.array(list(datasets))))
    con = duckdb.connect()
    try:
        con.register("links_in", links.select(["dataset", "record_key", "role", "position", "personal_id", "band",
                                               "method", "mention_name", "mention_id_number", "explanation"]))
        con.register("records", tables["records"])
        con.register("persons", tables["persons"])
        con.register("citizens", people)
        return _score(con)
    finally:
        con.close()


def _score(con: duckdb.DuckDBPyConnection) -> Quality:
    role_map = " ".join(f"WHEN '{a}' THEN '{b}'" for a, b in TRUTH_ROLES.items())
    dataset_map = " ".join(f"WHEN '{a}' THEN '{b}'" for a, b in TRUTH_DATASETS.items())
    con.execute(f"""
        CREATE TEMP TABLE l AS
        SELECT *,
               CASE dataset {dataset_map} ELSE split_part(record_key, '/', 1) END AS t_dataset,
               CASE dataset WHEN 'civil_events' THEN split_part(record_key, '/', 2) ELSE record_key END AS t_key,
               CASE role {role_map} ELSE role END AS t_role,
               band IN ({", ".join(f"'{b}'" for b in LINKED_BANDS)}) AS linked
        FROM links_in""")
    # Truth rows of the (dataset, key, role) triples that have a mention, with their citizen if any.
    con.execute("""
        CREATE TEMP TABLE t AS
        SELECT r.dataset AS t_dataset, r.record_key AS t_key, r.role AS t_role, r.entity_id,
               c.personal_id AS true_pid
        FROM records r
        LEFT JOIN persons p ON p.person = r.entity_id
        LEFT JOIN citizens c ON c.personal_id = p.personal_id
        WHERE r.entity_kind = 'person'""")
    con.execute("""
        CREATE TEMP TABLE mentioned AS SELECT DISTINCT t_dataset, t_key, t_role FROM l""")
    con.execute("""
        CREATE TEMP TABLE scope AS
        SELECT t.* FROM t JOIN mentioned USING (t_dataset, t_key, t_role) WHERE t.true_pid IS NOT NULL""")
    # Each mention: is its citizen among its true citizens?
    con.execute("""
        CREATE TEMP TABLE judged AS
        SELECT l.*, EXISTS (SELECT 1 FROM scope s WHERE s.t_dataset = l.t_dataset AND s.t_key = l.t_key
                                                   AND s.t_role = l.t_role AND s.true_pid = l.personal_id) AS correct,
               EXISTS (SELECT 1 FROM scope s WHERE s.t_dataset = l.t_dataset AND s.t_key = l.t_key
                                                   AND s.t_role = l.t_role) AS in_scope
        FROM l""")
    con.execute("""
        CREATE TEMP TABLE found AS
        SELECT s.*, EXISTS (SELECT 1 FROM judged j WHERE j.linked AND j.correct AND j.t_dataset = s.t_dataset
                                AND j.t_key = s.t_key AND j.t_role = s.t_role AND j.personal_id = s.true_pid) AS hit
        FROM scope s""")
    links, correct, out_of_scope, review, review_correct = con.execute("""
        SELECT count(*) FILTER (WHERE linked), count(*) FILTER (WHERE linked AND correct),
               count(*) FILTER (WHERE NOT in_scope), count(*) FILTER (WHERE band = 'review'),
               count(*) FILTER (WHERE band = 'review' AND correct) FROM judged""").fetchone()
    in_scope, tp = con.execute("SELECT count(*), count(*) FILTER (WHERE hit) FROM found").fetchone()
    unmentioned = con.execute("""
        SELECT count(*) FROM t WHERE (t_dataset, t_role) IN (SELECT DISTINCT t_dataset, t_role FROM l)
          AND (t_dataset, t_key, t_role) NOT IN (SELECT t_dataset, t_key, t_role FROM mentioned)""").fetchone()[0]
    by_method = [dict(zip(("method", "band", "mentions", "correct"), row)) for row in con.execute("""
        SELECT method, band, count(*), count(*) FILTER (WHERE correct) FROM judged GROUP BY ALL ORDER BY ALL""").fetchall()]
    by_role = [dict(zip(("dataset", "role", "mentions", "links", "correct_links", "in_scope", "true_positives"), row))
               for row in con.execute("""
        WITH j AS (SELECT dataset, role, count(*) AS mentions, count(*) FILTER (WHERE linked) AS links,
                          count(*) FILTER (WHERE linked AND correct) AS correct_links, t_dataset, t_role
                   FROM judged GROUP BY dataset, role, t_dataset, t_role),
             f AS (SELECT t_dataset, t_role, count(*) AS in_scope, count(*) FILTER (WHERE hit) AS tp
                   FROM found GROUP BY ALL)
        SELECT j.dataset, j.role, sum(mentions), sum(links), sum(correct_links), sum(coalesce(f.in_scope, 0)),
               sum(coalesce(f.tp, 0))
        FROM j LEFT JOIN f USING (t_dataset, t_role) GROUP BY ALL ORDER BY ALL""").fetchall()]
    for row in by_role:
        row["precision"] = row["correct_links"] / row["links"] if row["links"] else 1.0
        row["recall"] = row["true_positives"] / row["in_scope"] if row["in_scope"] else 1.0
    errors = con.sql("""
        SELECT j.dataset, j.record_key, j.role, j.position, j.mention_name, j.mention_id_number, j.personal_id,
               j.band, j.method, (SELECT list(s.true_pid) FROM scope s WHERE s.t_dataset = j.t_dataset
                                    AND s.t_key = j.t_key AND s.t_role = j.t_role) AS true_personal_ids,
               j.explanation
        FROM judged j WHERE (j.linked AND NOT j.correct) OR (j.in_scope AND NOT (j.linked AND j.correct))
        ORDER BY ALL""").to_arrow_table()
    precision = correct / links if links else 1.0
    recall = tp / in_scope if in_scope else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Quality(precision=precision, recall=recall, f1=f1, links=links, correct_links=correct,
                   in_scope=in_scope, true_positives=tp, false_negatives=in_scope - tp,
                   false_positives=links - correct, out_of_scope_mentions=out_of_scope, unmentioned=unmentioned,
                   review=review, review_correct=review_correct, by_method=by_method, by_role=by_role,
                   errors=errors)


# ---------------------------------------------------------------------------------------------
# Conflicts against the injected anomalies
# ---------------------------------------------------------------------------------------------

#: Injected anomaly → the conflict kind that must surface it, and the kind of its subject. The
#: anomaly's ``record_key`` is the subject's key (the citizen's personal ID, the enterprise code).
#: Every other anomaly of the ground truth is a representation or ID-number fault that normalising
#: and linking absorb, or a document-axis fault: no conflict is expected of it.
CONFLICT_ANOMALIES = {
    "death_not_in_population": ("death_not_in_population", "person"),
    "marriage_not_in_population": ("marriage_not_in_population", "person"),
    "moved_out": ("moved_out", "person"),
    "rep_name_mismatch": ("rep_name_mismatch", "enterprise"),
}


@dataclass
class ConflictQuality:
    """Recall and precision of the open conflicts against the injected registry disagreements."""

    recall: float
    precision: float
    injected: int  # distinct (kind, subject) injected
    found: int  # of those, with an open conflict of that kind and subject
    conflicts: int  # open conflicts of the scored kinds
    true_conflicts: int  # of those, matching an injected anomaly
    by_kind: list[dict[str, Any]] = field(default_factory=list)  # kind, injected, found, conflicts, true, recall, precision
    missed: pa.Table | None = None  # injected anomalies with no conflict
    false: pa.Table | None = None  # conflicts no anomaly explains

    def summary(self) -> str:
        kinds = "; ".join(f"{r['kind']} {r['found']}/{r['injected']} found, {r['true']}/{r['conflicts']} true"
                          for r in self.by_kind)
        return f"recall {self.recall:.4f}, precision {self.precision:.4f} ({kinds})"


def score_conflicts(conflicts: pa.Table, truth: str | Path | pa.Table) -> ConflictQuality:
    """Score the open conflicts of ``conflicts`` (:data:`hub.reconcile.conflicts.CONFLICT_SCHEMA`) against
    the ground truth's ``anomalies`` (a directory written by ``GroundTruth.write``, or the table).

    An injected anomaly of :data:`CONFLICT_ANOMALIES` is found when an open conflict of its kind names
    its subject; an open conflict is true when such an anomaly exists for it. An enterprise with two
    mismatched representatives is one injected subject (the truth does not say which representative).
    """
    anomalies = pq.read_table(Path(truth) / "anomalies.parquet") if isinstance(truth, (str, Path)) else truth
    mapping = pa.table({"anomaly": list(CONFLICT_ANOMALIES), "kind": [v[0] for v in CONFLICT_ANOMALIES.values()],
                        "subject_kind": [v[1] for v in CONFLICT_ANOMALIES.values()]})
    con = duckdb.connect()
    try:
        con.register("anomalies", anomalies)
        con.register("mapping", mapping)
        con.register("conflicts_in", conflicts.select(["conflict_id", "kind", "subject_kind", "subject_key", "status",
                                                       "explanation"]))
        con.execute("""CREATE TEMP TABLE injected AS
            SELECT DISTINCT m.kind, m.subject_kind, a.record_key AS subject_key, a.true_value, a.served_value
            FROM anomalies a JOIN mapping m USING (anomaly)""")
        con.execute("""CREATE TEMP TABLE open AS
            SELECT * FROM conflicts_in WHERE status = 'open' AND kind IN (SELECT kind FROM mapping)""")
        by_kind = []
        for kind in (v[0] for v in CONFLICT_ANOMALIES.values()):
            injected, found = con.execute("""
                SELECT count(*), count(*) FILTER (WHERE EXISTS (SELECT 1 FROM open o WHERE o.kind = i.kind
                                                     AND o.subject_key = i.subject_key))
                FROM (SELECT DISTINCT kind, subject_key FROM injected) i WHERE kind = ?""", [kind]).fetchall()[0]
            total, true = con.execute("""
                SELECT count(*), count(*) FILTER (WHERE EXISTS (SELECT 1 FROM injected i WHERE i.kind = o.kind
                                                     AND i.subject_key = o.subject_key))
                FROM open o WHERE kind = ?""", [kind]).fetchall()[0]
            by_kind.append({"kind": kind, "injected": injected, "found": found, "conflicts": total, "true": true,
                            "recall": found / injected if injected else 1.0,
                            "precision": true / total if total else 1.0})
        missed = con.sql("""SELECT * FROM injected i WHERE NOT EXISTS (
            SELECT 1 FROM open o WHERE o.kind = i.kind AND o.subject_key = i.subject_key) ORDER BY ALL""").to_arrow_table()
        false = con.sql("""SELECT * FROM open o WHERE NOT EXISTS (
            SELECT 1 FROM injected i WHERE i.kind = o.kind AND i.subject_key = o.subject_key) ORDER BY ALL""").to_arrow_table()
    finally:
        con.close()
    injected = sum(r["injected"] for r in by_kind)
    found = sum(r["found"] for r in by_kind)
    total = sum(r["conflicts"] for r in by_kind)
    true = sum(r["true"] for r in by_kind)
    return ConflictQuality(recall=found / injected if injected else 1.0, precision=true / total if total else 1.0,
                           injected=injected, found=found, conflicts=total, true_conflicts=true, by_kind=by_kind,
                           missed=missed, false=false)
