"""What the hub derives from the one-stop-shop dossiers: applicant cross-checks and service measures.

Both read the canonical ``dossiers`` table (one row per dossier, steps nested, tombstones of deleted
dossiers included and left out here) as a DuckDB relation, so the same functions serve the Dagster
assets (:mod:`pipelines.dossiers`), the tests and the benchmark.

**Applicants.** The identifier on each dossier is checked against the hub's own records: a personal ID
or an old CMND against the citizens, an enterprise code against the enterprises; then the name on the
dossier against the registry's, compared in normal form (:func:`hub.reconcile.normalize.name_key`:
case, Unicode form, tone placement and spacing do not matter). A dossier is *flagged*, never blocked:
the agency that holds it decides. Flags: ``unknown_applicant`` (no record has that identifier),
``name_mismatch``, ``no_identifier`` (none of the three kinds), ``wrong_kind`` (a citizen procedure
with an enterprise code or the other way round). The flags carry no registry values, only the verdict.

**Service measures**, per agency and month of receipt: dossiers received, the share submitted online,
the share of resolved ones resolved on time, how many were late, how many are still open past their
due date; per procedure, the median days to resolve. Statuses are the portal's ``TrangThaiHoSo``:
9 and 10 are resolved; 3 (not accepted), 7 (withdrawn) and 8 (stopped) are closed without a result;
the rest are open.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import pyarrow as pa

from hub.reconcile.normalize import name_key_column

#: The published tables of the measures (the lookup API serves them; ``pipelines.publish`` builds them).
MEASURES_SCHEMA = pa.schema([
    pa.field("agency", pa.string(), nullable=False),  # the QCVN 102 code of the dossier code's agency part
    pa.field("month", pa.string(), nullable=False),  # YYYY-MM of receipt, Asia/Ho_Chi_Minh
    pa.field("received", pa.int64()),
    pa.field("online_share", pa.float64()),
    pa.field("resolved", pa.int64()),
    pa.field("on_time_share", pa.float64()),  # of the resolved; null when none is resolved yet
    pa.field("late", pa.int64()),
    pa.field("open_past_due", pa.int64()),
])
TIMES_SCHEMA = pa.schema([
    pa.field("procedure_code", pa.string(), nullable=False),
    pa.field("procedure_name", pa.string()),
    pa.field("resolved", pa.int64()),
    pa.field("median_days", pa.float64()),
])

RESOLVED = (9, 10)
CLOSED_WITHOUT_RESULT = (3, 7, 8)
FLAGS = ("unknown_applicant", "name_mismatch", "no_identifier", "wrong_kind")

#: LoaiDinhDanh: 1 personal ID, 2 CMND, 3 enterprise code; LoaiDoiTuong: 1 citizen, 2 enterprise.
_PERSON_KINDS = (1, 2)
_ENTERPRISE_KIND = 3


def _live(dossiers: str) -> str:
    return f"(SELECT * FROM {dossiers} WHERE NOT deleted)"


def applicant_flags(con: duckdb.DuckDBPyConnection, dossiers: str, citizens: str, enterprises: str) -> pa.Table:
    """One row per flagged dossier: ``dossier_code``, ``system``, ``agency``, ``applicant_id_kind``,
    ``flag`` and a readable ``reason``. ``dossiers``, ``citizens`` and ``enterprises`` are relations."""
    candidates = con.sql(f"""
        SELECT d.dossier_code, d.system, split_part(d.dossier_code, '-', 1) AS agency, d.applicant_type,
               d.applicant_id_kind, d.applicant_name,
               coalesce(c.family_name || ' ', '') || coalesce(c.middle_name || ' ', '') || coalesce(c.given_name, '')
                   AS person_name,
               e.name AS enterprise_name,
               (c.personal_id IS NOT NULL OR e.enterprise_code IS NOT NULL) AS found
        FROM {_live(dossiers)} d
        LEFT JOIN (SELECT personal_id, cmnd, family_name, middle_name, given_name FROM {citizens}) c
          ON (d.applicant_id_kind = 1 AND c.personal_id = d.applicant_id)
          OR (d.applicant_id_kind = 2 AND c.cmnd = d.applicant_id)
        LEFT JOIN (SELECT enterprise_code, name FROM {enterprises}) e
          ON d.applicant_id_kind = {_ENTERPRISE_KIND} AND e.enterprise_code = d.applicant_id
    """).to_arrow_table()
    keys = pa.table({
        "given": name_key_column(candidates["applicant_name"]),
        "person": name_key_column(candidates["person_name"]),
        "enterprise": name_key_column(candidates["enterprise_name"]),
    })
    con.register("_candidates", candidates)
    con.register("_keys", keys)
    try:
        return con.sql(f"""
            WITH joined AS (SELECT * FROM _candidates POSITIONAL JOIN _keys),
            judged AS (
                SELECT dossier_code, system, agency, applicant_id_kind,
                       CASE
                         WHEN applicant_id_kind IS NULL THEN 'no_identifier'
                         WHEN (applicant_type = 1 AND applicant_id_kind = {_ENTERPRISE_KIND})
                           OR (applicant_type = 2 AND applicant_id_kind IN {_PERSON_KINDS}) THEN 'wrong_kind'
                         WHEN NOT found THEN 'unknown_applicant'
                         WHEN applicant_id_kind IN {_PERSON_KINDS} AND given <> person THEN 'name_mismatch'
                         WHEN applicant_id_kind = {_ENTERPRISE_KIND} AND given <> enterprise THEN 'name_mismatch'
                       END AS flag
                FROM joined)
            SELECT *, CASE flag
                        WHEN 'no_identifier' THEN 'the dossier gives no personal ID, CMND or enterprise code'
                        WHEN 'wrong_kind' THEN 'the identifier is of the other kind of applicant than the procedure is for'
                        WHEN 'unknown_applicant' THEN 'no citizen or enterprise of the hub has this identifier'
                        WHEN 'name_mismatch' THEN 'the name on the dossier is not the name the registry holds for this identifier'
                      END AS reason
            FROM judged WHERE flag IS NOT NULL ORDER BY dossier_code""").to_arrow_table()
    finally:
        con.unregister("_candidates")
        con.unregister("_keys")


def service_measures(con: duckdb.DuckDBPyConnection, dossiers: str, as_of: datetime) -> pa.Table:
    """Per agency and month of receipt (``YYYY-MM``, Asia/Ho_Chi_Minh): received, online share, resolved,
    on-time share of the resolved, late, still open past the due date at ``as_of``."""
    return con.sql(f"""
        SELECT split_part(dossier_code, '-', 1) AS agency,
               strftime(timezone('Asia/Ho_Chi_Minh', received_at), '%Y-%m') AS month,
               count(*) AS received,
               count(*) FILTER (WHERE channel = 2) / count(*) AS online_share,
               count(*) FILTER (WHERE status IN {RESOLVED}) AS resolved,
               count(*) FILTER (WHERE status IN {RESOLVED} AND finished_at <= due_at)
                   / nullif(count(*) FILTER (WHERE status IN {RESOLVED}), 0) AS on_time_share,
               count(*) FILTER (WHERE status IN {RESOLVED} AND finished_at > due_at) AS late,
               count(*) FILTER (WHERE status NOT IN {RESOLVED + CLOSED_WITHOUT_RESULT} AND due_at < ?::TIMESTAMPTZ)
                   AS open_past_due
        FROM {_live(dossiers)}
        WHERE received_at IS NOT NULL
        GROUP BY ALL ORDER BY agency, month""", params=[as_of]).to_arrow_table().cast(MEASURES_SCHEMA)


def procedure_times(con: duckdb.DuckDBPyConnection, dossiers: str) -> pa.Table:
    """Per procedure: dossiers resolved and the median days from receipt to resolution."""
    return con.sql(f"""
        SELECT procedure_code, any_value(procedure_name) AS procedure_name, count(*) AS resolved,
               median(epoch(finished_at - received_at) / 86400.0) AS median_days
        FROM {_live(dossiers)}
        WHERE status IN {RESOLVED} AND finished_at IS NOT NULL AND received_at IS NOT NULL AND procedure_code IS NOT NULL
        GROUP BY ALL ORDER BY procedure_code""").to_arrow_table().cast(TIMES_SCHEMA)
