"""Record linkage: every person a served record mentions, linked to the citizen it is.

The population database's ``citizens`` are the reference: one row per personal ID. Everything else
that names a person is a *mention* of one: the child, mother, father and requester of a birth record,
the deceased and requester of a death record, the husband and wife of a marriage record, each legal
representative of an enterprise, and the father, mother and spouse that a citizen's own record names.
:func:`link` gives each mention one row of :data:`LINK_SCHEMA`: the citizen it is (or none), a score,
a band, the method that found it and a sentence that explains it.

How a mention is linked
-----------------------
1. **Exact.** A 12-digit personal ID found among the citizens, or a 9-digit CMND found among their old
   card numbers, whose citizen's name and birth date do not contradict the mention (names equal once
   spelling is normalised, or close; birth dates equal or absent; gender not opposite), is band
   ``exact``. An ID found whose citizen has a *different name* is never accepted silently: the link is
   held in band ``review`` and the explanation says so.
2. **Candidates.** Every other mention collects candidates from
   - the ID as served and every number one digit away from it (each digit replaced by the nine others)
     or with two adjacent digits swapped, looked up among personal IDs and CMNDs (a vectorised
     neighbourhood, about 120 numbers per mention, found with a sorted search); and
   - the blocking keys of :data:`BLOCKING_KEYS`: given name + birth date, birth date + commune, full
     name + birth year, and the full name alone for a mention that has no birth date at all (only
     while the name is shared by few citizens). No key is the family name alone: Nguyễn is about
     38 % of the people, so such a block would compare everyone with everyone.
3. **Scores.** Each candidate pair gets a comparison vector (:data:`COMPARISONS`): ID number, name,
   birth date (or birth year when only a year is known), gender and commune, each at a few
   agreement levels. Its Fellegi–Sunter match weight is the sum over comparisons of
   ``log2(m/u)``, where ``m`` is the probability of the level among true matches and ``u`` among
   non-matches; a comparison that cannot be made (a field missing on either side) adds nothing.
   - ``u`` is measured, not assumed: the fuzzy levels on random (mention, citizen) pairs (with
     citizens standing in for mentions when there are few, :data:`U_STAND_INS`); the equality levels
     of names, birth dates and years from value frequencies; the ID levels by counting the
     neighbourhoods of the citizens' own numbers (how many other citizens sit one digit or one swap
     away), because in random pairs an equal number is nearly always the true match, which ``u``
     must leave out (:func:`_number_u`).
   - ``m`` is estimated from the data by anchoring: the name, birth-date, gender and commune levels
     among pairs whose personal ID is exactly equal (the ID is a near-certain match on its own), and
     the ID levels among pairs whose name and birth date both agree and that are the only such
     candidate of their mention. This is one hard-assignment step of the EM algorithm, each
     comparison estimated on anchors chosen by the *other* comparisons (so that a blocked field does
     not train itself). Estimates are per source (civil status, business registry, population),
     shrunk towards the pooled estimate and a documented prior (:data:`PRIOR_M`) by pseudo-counts,
     and never below :data:`M_FLOOR`, so a small or one-sided input still gives sane weights.
   - Weights never reward a worse level more than a better one, and exact agreement on a name or a
     birth date is weighed by how common the agreed value is (:data:`FREQUENCY_LEVELS`).
4. **Decision.** A mention refers to some citizen with prior probability ``in_population`` (0.95 by
   default: a father may be foreign, a representative from another province), uniformly among the
   ``N`` citizens. With ``LR_j = 2^weight_j`` for each candidate, the posterior that candidate ``j``
   is the one is ``LR_j / (K + Σ_i LR_i)`` with ``K = N (1 - in_population) / in_population``: two
   equally good candidates (namesakes born the same day, no ID) share the probability and neither
   is linked. ``score`` is this posterior for the best candidate; band ``match`` from
   ``HUB_LINK_MATCH_THRESHOLD`` (default 0.99), ``review`` from ``HUB_LINK_REVIEW_THRESHOLD`` (default
   0.5), below that ``non_match``. The review queue is band ``review``.

Only the candidate pairs are touched row by row, and those through numpy, DuckDB joins and
rapidfuzz's vectorised scorers; names, dates and communes are normalised once per distinct value.
"""

from __future__ import annotations

import os
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rapidfuzz import process
from rapidfuzz.distance import JaroWinkler

from hub.config import ConfigError, env_number, load_config_file
from hub.reconcile.normalize import name_key, name_parts, split_name, unit_key_column

# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

LINK_SCHEMA = pa.schema([
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("record_key", pa.string(), nullable=False),
    pa.field("role", pa.string(), nullable=False),
    pa.field("position", pa.int16(), nullable=False),
    pa.field("mention_name", pa.string()),
    pa.field("mention_id_number", pa.string()),
    pa.field("mention_birth_date", pa.date32()),
    pa.field("personal_id", pa.string()),
    pa.field("score", pa.float64(), nullable=False),
    pa.field("match_weight", pa.float64()),
    pa.field("band", pa.string(), nullable=False),
    pa.field("method", pa.string(), nullable=False),
    pa.field("candidates", pa.int32(), nullable=False),
    pa.field("runner_up_personal_id", pa.string()),
    pa.field("runner_up_score", pa.float64()),
    pa.field("explanation", pa.string(), nullable=False),
])
"""One row per mention of a person: who in ``citizens`` it is, how sure, and why.

- ``dataset``, ``record_key``, ``role``, ``position``: the mention. ``dataset`` is the canonical
  table (``civil_events``, ``enterprises``, ``citizens``); ``record_key`` its key as text
  (``KS/15610058`` for a civil-status record, the enterprise code, the citizen's personal ID);
  ``role`` the person's part in it (``child``, ``mother``, ``father``, ``requester``, ``deceased``,
  ``husband``, ``wife``, ``legal_representative``, and ``father``/``mother``/``spouse`` of a citizen);
  ``position`` the person's index in a list field (an enterprise's representatives), else 0.
- ``mention_name``, ``mention_id_number``, ``mention_birth_date``: what the record says, as served.
- ``personal_id``: the linked citizen for bands ``exact`` and ``match``, the proposed one for
  ``review``, null for ``non_match``.
- ``score``: posterior probability (0..1) that the best candidate is the person mentioned, given
  every candidate found (see the module docstring); 0 when there was none.
- ``match_weight``: that candidate's Fellegi–Sunter weight in bits (sum of ``log2(m/u)``), before the
  prior; null when there was no candidate.
- ``band``: ``exact`` (valid ID or CMND found, nothing contradicts it), ``match``
  (score ≥ the match threshold), ``review`` (score ≥ the review threshold, or an ID found whose
  citizen's name differs), ``non_match``.
- ``method``: what carried the link: ``id`` (the personal ID as served), ``cmnd`` (the old card
  number), ``id_typo`` (a number one digit or one adjacent swap away), ``probabilistic`` (names,
  birth date and the rest, the number being absent or different), ``none`` (no candidate).
- ``candidates``: how many citizens were compared; ``runner_up_personal_id``/``runner_up_score``: the
  second best, for a reviewer.
- ``explanation``: the comparison in words, e.g. ``ID 031095236639: two adjacent digits swapped from
  citizen's 031095236693; name NGUYEN VAN AN = Nguyễn Văn An (diacritics/case only); birth date
  equal (1995-01-28); …; P(match) 0.9990, 24.3 bits, 3 candidates``.
"""

BANDS = ("exact", "match", "review", "non_match")
METHODS = ("id", "cmnd", "id_typo", "probabilistic", "none")
LINKED_BANDS = ("exact", "match")

DEFAULT_MATCH_THRESHOLD = 0.99
DEFAULT_REVIEW_THRESHOLD = 0.5
#: Prior probability that a mention is of somebody in the citizens table at all.
DEFAULT_IN_POPULATION = 0.95


@dataclass(frozen=True)
class Thresholds:
    """Score thresholds of the bands: ``match`` ≥ ``match``, ``review`` ≥ ``review`` (0 ≤ review ≤ match ≤ 1)."""

    match: float = DEFAULT_MATCH_THRESHOLD
    review: float = DEFAULT_REVIEW_THRESHOLD

    def __post_init__(self) -> None:
        if not (0.0 <= self.review <= self.match <= 1.0):
            raise ConfigError(f"link thresholds must satisfy 0 <= HUB_LINK_REVIEW_THRESHOLD ({self.review}) "
                              f"<= HUB_LINK_MATCH_THRESHOLD ({self.match}) <= 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Thresholds":
        """``HUB_LINK_MATCH_THRESHOLD`` and ``HUB_LINK_REVIEW_THRESHOLD``, from ``environ`` or else the
        process environment and the hub's config file (``HUB_CONFIG`` / ``hub.env``, the environment
        winning). A value that is not a number in [0, 1], or a review threshold above the match
        threshold, is a :class:`hub.config.ConfigError` naming the variable."""
        if environ is None:
            env = {**load_config_file(os.environ), **os.environ}
        else:
            env = dict(environ)
        return cls(match=env_number(env, "HUB_LINK_MATCH_THRESHOLD", DEFAULT_MATCH_THRESHOLD, low=0.0, high=1.0),
                   review=env_number(env, "HUB_LINK_REVIEW_THRESHOLD", DEFAULT_REVIEW_THRESHOLD, low=0.0, high=1.0))


# ---------------------------------------------------------------------------------------------
# Comparisons and blocking keys
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """One component of the comparison vector: its levels, best first; ``None`` marks "not comparable"."""

    name: str
    levels: tuple[str, ...]
    missing: int  # index of the level meaning "cannot compare" (weight 0, not estimated)


ID_EXACT, ID_CMND, ID_TRANSPOSED, ID_ONE_DIGIT, ID_DIFFERENT, ID_MISSING = range(6)
NAME_EXACT, NAME_FOLDED, NAME_CLOSE, NAME_PARTIAL, NAME_DIFFERENT, NAME_MISSING = range(6)
DOB_EXACT, DOB_ONE_EDIT, DOB_SAME_YEAR, DOB_DIFFERENT, DOB_MISSING = range(5)
YEAR_EQUAL, YEAR_DIFFERENT, YEAR_MISSING = range(3)
AGREE, DISAGREE, UNKNOWN = range(3)

COMPARISONS: tuple[Comparison, ...] = (
    Comparison("id", ("exact personal ID", "exact CMND", "adjacent digits swapped", "one digit differs",
                      "different", "missing"), ID_MISSING),
    Comparison("name", ("exact", "diacritics/case only", "close spelling", "one part differs", "different",
                        "missing"), NAME_MISSING),
    Comparison("birth_date", ("exact", "one digit or day/month swapped", "same year only", "different",
                              "missing"), DOB_MISSING),
    Comparison("birth_year", ("equal", "different", "missing"), YEAR_MISSING),  # only when a date is partial
    Comparison("gender", ("agree", "disagree", "missing"), UNKNOWN),
    Comparison("commune", ("agree", "disagree", "missing"), UNKNOWN),
)
_CMP = {c.name: i for i, c in enumerate(COMPARISONS)}

#: Prior m-probabilities (probability of each comparable level among true matches), used as
#: pseudo-counts (weight :data:`PRIOR_STRENGTH`) under the estimates from the data.
PRIOR_M: dict[str, tuple[float, ...]] = {
    "id": (0.90, 0.04, 0.02, 0.02, 0.02),
    "name": (0.75, 0.20, 0.03, 0.015, 0.005),
    "birth_date": (0.96, 0.02, 0.01, 0.01),
    "birth_year": (0.97, 0.03),
    "gender": (0.99, 0.01),
    "commune": (0.85, 0.15),
}
PRIOR_STRENGTH = 20.0  # pseudo-count of the prior; per-source estimates get the pooled ones at the same weight
#: No level is impossible among true matches (a legal change of name, a registry's own error): an
#: estimated ``m`` is at least this, which bounds a disagreement's weight near ``log2(M_FLOOR)``.
M_FLOOR = 1e-4
_U_FLOOR = 1e-9  # no level of a random pair is impossible


@dataclass(frozen=True)
class BlockingKey:
    """Citizens sharing every column of ``columns`` with a mention become its candidates.

    ``only_without_birth_date``: used only for mentions that have neither a birth date nor a year.
    ``max_block``: a block with more citizens than this is skipped (too common to tell anyone apart).
    """

    name: str
    columns: tuple[str, ...]
    max_block: int
    only_without_birth_date: bool = False


#: The name-and-date blocking keys (the ID neighbourhood is the other source of candidates). Columns
#: are ``given_key``, ``family_key``, ``name_key`` (full name), ``birth_day``, ``birth_year``,
#: ``commune``. None is the family name alone (see the module docstring).
BLOCKING_KEYS: tuple[BlockingKey, ...] = (
    BlockingKey("given name + birth date", ("given_key", "birth_day"), 5_000),
    BlockingKey("birth date + commune", ("birth_day", "commune"), 5_000),
    BlockingKey("full name + birth year", ("name_key", "birth_year"), 5_000),
    BlockingKey("full name", ("name_key",), 200, only_without_birth_date=True),
)

# ---------------------------------------------------------------------------------------------
# Which fields hold which person
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    """The columns of ``civil_events`` that describe one person of one module."""

    module: str
    role: str
    name: str
    id_number: str
    id_type: str | None
    birth_date: str | None
    gender: str | int | None  # a column, a fixed code (1 male, 2 female), or None
    place: str | None  # column prefix of a place (…_province_code, …_district_code, …_ward_code)


CIVIL_SLOTS: tuple[_Slot, ...] = (
    _Slot("KS", "child", "child_name", "child_personal_id", None, "child_birth_date", "child_gender",
          "child_birth_place"),
    _Slot("KS", "mother", "mother_name", "mother_id_number", None, "mother_birth_date", 2, "mother_residence"),
    _Slot("KS", "father", "father_name", "father_id_number", None, "father_birth_date", 1, "father_residence"),
    _Slot("KS", "requester", "requester_name", "requester_id_number", None, None, "requester_relation", None),
    _Slot("KT", "deceased", "deceased_name", "deceased_id_number", "deceased_id_type", "deceased_birth_date",
          "deceased_gender", "death_place"),
    _Slot("KT", "requester", "requester_name", "requester_id_number", None, None, "requester_relation", None),
    _Slot("KH", "husband", "husband_name", "husband_id_number", "husband_id_type", "husband_birth_date", 1,
          "husband_residence"),
    _Slot("KH", "wife", "wife_name", "wife_id_number", "wife_id_type", "wife_birth_date", 2, "wife_residence"),
)
#: ``nycQuanHe`` (the requester's relation to the subject) that says the requester's gender.
_RELATION_GENDER = {"cha": 1, "mẹ": 2, "chồng": 1, "vợ": 2, "ông": 1, "bà": 2}
#: ID document types: 1 personal ID, 2 CMND, 3 passport (not comparable with either).
_PASSPORT = "3"

CITIZEN_COLUMNS = ("personal_id", "cmnd", "family_name", "middle_name", "given_name", "gender", "birth_year",
                   "birth_date", "permanent_province_code", "permanent_district_code", "permanent_ward_code",
                   "father_name", "father_personal_id", "father_cmnd", "mother_name", "mother_personal_id",
                   "mother_cmnd", "spouse_name", "spouse_personal_id", "spouse_cmnd")


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

@dataclass
class LinkModel:
    """The Fellegi–Sunter parameters a run used: per comparison, ``m`` and ``u`` of each comparable
    level (the "missing" level is left out), ``m`` per source group, and the weights."""

    u: dict[str, np.ndarray]
    m: dict[str, dict[str, np.ndarray]]  # group -> comparison -> m
    anchors: dict[str, dict[str, int]]  # group -> comparison -> how many anchor pairs estimated it
    citizens: int
    in_population: float
    pooled_m: dict[str, np.ndarray] = field(default_factory=dict)  # comparison -> m over every group

    def weights(self, group: str) -> dict[str, np.ndarray]:
        """``log2(m/u)`` per level of every comparison for ``group``; 0 for the missing level."""
        out = {}
        for comparison in COMPARISONS:
            m, u = self.m[group][comparison.name], self.u[comparison.name]
            w = np.zeros(len(comparison.levels))
            # Levels are ordered best first: a better level never weighs less than a worse one.
            w[:len(m)] = np.maximum.accumulate(np.log2(m / u)[::-1])[::-1]
            out[comparison.name] = w
        return out

    def describe(self) -> list[str]:
        """Readable lines: each level with its m (per group), u and weight."""
        lines = [f"citizens {self.citizens:,}; prior in population {self.in_population}"]
        for comparison in COMPARISONS:
            for i, level in enumerate(comparison.levels):
                if i == comparison.missing:
                    continue
                ms = ", ".join(f"{g} m={self.m[g][comparison.name][i]:.4f} w={np.log2(self.m[g][comparison.name][i] / self.u[comparison.name][i]):+.1f}"
                               for g in self.m)
                lines.append(f"{comparison.name:>10} {level:<32} u={self.u[comparison.name][i]:.2e}  {ms}")
        return lines


@dataclass
class LinkResult:
    links: pa.Table
    model: LinkModel
    thresholds: Thresholds
    seconds: dict[str, float] = field(default_factory=dict)
    pairs: int = 0  # candidate pairs scored


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------

TableLike = pa.Table | str | Path | None


def link(citizens: TableLike, civil_events: TableLike = None, enterprises: TableLike = None, *,
         thresholds: Thresholds | None = None, include_citizen_relatives: bool = True,
         in_population: float = DEFAULT_IN_POPULATION, seed: int = 0) -> pa.Table:
    """The :data:`LINK_SCHEMA` table for every person mentioned in ``civil_events`` and ``enterprises``
    (and, with ``include_citizen_relatives``, the parents and spouse each citizen's record names).

    Inputs are canonical tables (``schemas/canonical``) or paths of their Parquet files; ``civil_events``
    and ``enterprises`` may be omitted. ``thresholds`` default to :meth:`Thresholds.from_env`.
    """
    return run_linkage(citizens, civil_events, enterprises, thresholds=thresholds,
                       include_citizen_relatives=include_citizen_relatives, in_population=in_population,
                       seed=seed).links


def review_queue(links: pa.Table) -> pa.Table:
    """The links a person must decide: band ``review``, least certain first."""
    queue = links.filter(pc.equal(links["band"], "review"))
    return queue.take(pc.sort_indices(queue, [("score", "ascending"), ("dataset", "ascending"),
                                              ("record_key", "ascending")]))


def write_review_queue(links: pa.Table, path: str | Path) -> Path:
    """Write :func:`review_queue` to ``path`` as Parquet (write-then-rename); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp")
    pq.write_table(review_queue(links), temp, compression="zstd")
    temp.replace(target)
    return target


def run_linkage(citizens: TableLike, civil_events: TableLike = None, enterprises: TableLike = None, *,
                thresholds: Thresholds | None = None, include_citizen_relatives: bool = True,
                in_population: float = DEFAULT_IN_POPULATION, seed: int = 0) -> LinkResult:
    """:func:`link`, returning the model, the thresholds and the time of each phase as well."""
    if not 0.0 < in_population < 1.0:
        raise ValueError("in_population must be strictly between 0 and 1")
    thresholds = thresholds or Thresholds.from_env()
    clock = _Clock()
    c, m = _inputs(citizens, civil_events, enterprises, include_citizen_relatives)
    clock.lap("prepare")
    if m.n == 0:
        return LinkResult(LINK_SCHEMA.empty_table(), _prior_model(c.n, in_population), thresholds, clock.seconds)
    vocab = _Vocabulary(m, c)
    rng = np.random.default_rng(seed)

    # 1. exact lookups for every mention
    exact_mi, exact_ci = _exact_pairs(m, c)
    exact_levels = _levels(m, c, vocab, exact_mi, exact_ci)
    consistent = _consistent(exact_levels)
    resolved = np.zeros(m.n, bool)
    resolved[exact_mi[consistent]] = True
    clock.lap("exact")

    # 2. candidates for the rest: the ID neighbourhood and the blocking keys
    open_ = np.flatnonzero(~resolved)
    keep_exact = ~resolved[exact_mi]
    near_mi, near_ci = _neighbour_pairs(m, c, open_)
    block_mi, block_ci = _blocked_pairs(m, c, vocab, open_)
    mi = np.concatenate([exact_mi[consistent], exact_mi[keep_exact], near_mi, block_mi])
    ci = np.concatenate([exact_ci[consistent], exact_ci[keep_exact], near_ci, block_ci])
    mi, ci = _unique_pairs(mi, ci, c.n)
    levels = _levels(m, c, vocab, mi, ci)
    clock.lap("candidates")

    # 3. weights from the data
    model = _estimate_m(m, levels, mi, c.n, in_population)
    model.u = _estimate_u(m, c, vocab, rng, model)
    clock.lap("estimate")

    # 4. scores, bands, explanations
    links = _decide(m, c, vocab, model, thresholds, mi, ci, levels)
    clock.lap("decide")
    return LinkResult(links, model, thresholds, clock.seconds, pairs=len(mi))


def linkage_features(citizens: TableLike, civil_events: TableLike = None, enterprises: TableLike = None, *,
                     include_citizen_relatives: bool = True) -> tuple[pa.Table, pa.Table]:
    """``(mentions, citizens)``: the normalised columns the linker compares, one row per mention and
    per citizen, for inspection or for another linkage tool to run on exactly the same input.

    Both have ``name`` (:func:`~hub.reconcile.normalize.normalize_name`), ``name_key``,
    ``family_key``, ``middle_key``, ``given_key`` (:func:`~hub.reconcile.normalize.name_key` of the
    whole name and of each part, ``""`` for an empty part), ``birth_date``, ``birth_year``, ``gender``
    (null when unknown), ``commune`` (the 2025 commune key), ``id12`` and ``id9`` (the 12-digit personal
    ID and 9-digit CMND the number fields hold, null when they hold none). Mentions also carry their
    ``dataset``, ``record_key``, ``role`` and ``position``; citizens their ``personal_id``.
    """
    c, m = _inputs(citizens, civil_events, enterprises, include_citizen_relatives)

    def columns(side: _Side) -> dict[str, pa.Array]:
        day = np.where(side.day == NO_DAY, 0, side.day).astype("datetime64[D]")
        return {"name": side.names.full, "name_key": side.names.key, "family_key": side.names.family,
                "middle_key": side.names.middle, "given_key": side.names.given,
                "birth_date": pa.array(day, mask=side.day == NO_DAY).cast(pa.date32()),
                "birth_year": pa.array(side.year, mask=side.year < 0),
                "gender": pa.array(side.gender.astype(np.int8), mask=side.gender == 0), "commune": side.commune,
                "id12": _number_text(side.id12, 12), "id9": _number_text(side.id9, 9)}

    t = m.table
    mentions = pa.table({"dataset": t["dataset"], "record_key": t["record_key"], "role": t["role"],
                         "position": t["position"], **columns(m)})
    people = pa.table({"personal_id": c.personal_id, **columns(c)})
    return mentions, people


def _inputs(citizens: TableLike, civil_events: TableLike, enterprises: TableLike,
            include_citizen_relatives: bool) -> tuple["_Citizens", "_Mentions"]:
    people = _load(citizens, CITIZEN_COLUMNS)
    if people is None:
        raise ValueError("citizens are required")
    if people.num_rows == 0:
        raise ValueError("the citizens table is empty: there is nobody to link to")
    c = _prepare_citizens(people)
    pieces = []
    civil = _load(civil_events, None)
    if civil is not None and civil.num_rows:
        pieces.append(_civil_mentions(civil))
    business = _load(enterprises, ("enterprise_code", "legal_representatives"))
    if business is not None and business.num_rows:
        pieces.append(_enterprise_mentions(business))
    if include_citizen_relatives:
        pieces.append(_relative_mentions(people))
    return c, _prepare_mentions(pa.concat_tables(pieces) if pieces else _empty_mentions())


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._last
        self._last = now


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def _load(source: TableLike, columns: Sequence[str] | None) -> pa.Table | None:
    if source is None:
        return None
    if isinstance(source, (str, Path)):
        if columns is not None:
            present = set(pq.read_schema(source).names)
            return pq.read_table(source, columns=[c for c in columns if c in present])
        return pq.read_table(source)
    if not isinstance(source, pa.Table):
        raise TypeError(f"expected an Arrow table or a Parquet path, got {type(source).__name__}")
    return source


def _column(table: pa.Table, name: str, type_: pa.DataType = pa.string()) -> pa.Array:
    if name not in table.column_names:
        return pa.nulls(table.num_rows, type_)
    column = table[name]
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array if array.type == type_ else array.cast(type_)


def _blank_to_null(array: pa.Array) -> pa.Array:
    trimmed = pc.utf8_trim_whitespace(array)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), array)


_MENTION_FIELDS = pa.schema([
    ("dataset", pa.string()), ("record_key", pa.string()), ("role", pa.string()), ("position", pa.int16()),
    ("group", pa.string()), ("name", pa.string()), ("id_number", pa.string()), ("cmnd", pa.string()),
    ("id_type", pa.string()), ("birth_date", pa.date32()), ("gender", pa.int8()),
    ("ward", pa.string()), ("district", pa.string()), ("province", pa.string()),
])


def _empty_mentions() -> pa.Table:
    return _MENTION_FIELDS.empty_table()


def _civil_mentions(civil: pa.Table) -> pa.Table:
    module = _column(civil, "module")
    keys = pc.binary_join_element_wise(module, _column(civil, "record_id", pa.int64()).cast(pa.string()), "/")
    out = []
    for slot in CIVIL_SLOTS:
        rows = pc.equal(module, slot.module)
        n = civil.num_rows
        if isinstance(slot.gender, int):
            gender = pa.array(np.full(n, slot.gender, np.int8))
        elif slot.gender == "requester_relation":
            relation = _column(civil, slot.gender).to_pylist()
            gender = pa.array([_RELATION_GENDER.get(unicodedata.normalize("NFC", r).strip().lower(), 0) if r else 0
                               for r in relation], pa.int8())
        elif slot.gender:
            gender = pc.fill_null(_column(civil, slot.gender, pa.int8()), 0)
        else:
            gender = pa.array(np.zeros(n, np.int8))
        place = {part: (_column(civil, f"{slot.place}_{part}_code") if slot.place else pa.nulls(n, pa.string()))
                 for part in ("ward", "district", "province")}
        table = pa.table({
            "dataset": pa.array(["civil_events"] * n, pa.string()), "record_key": keys,
            "role": pa.array([slot.role] * n, pa.string()), "position": pa.array(np.zeros(n, np.int16)),
            "group": pa.array(["civil_events"] * n, pa.string()),
            "name": _blank_to_null(_column(civil, slot.name)),
            "id_number": _blank_to_null(_column(civil, slot.id_number)),
            "cmnd": pa.nulls(n, pa.string()),
            "id_type": _column(civil, slot.id_type, pa.int8()).cast(pa.string()) if slot.id_type else pa.nulls(n, pa.string()),
            "birth_date": _column(civil, slot.birth_date, pa.date32()) if slot.birth_date else pa.nulls(n, pa.date32()),
            "gender": gender, **place,
        }, schema=_MENTION_FIELDS)
        present = pc.and_(rows, pc.or_(pc.is_valid(table["name"]), pc.is_valid(table["id_number"])))
        out.append(table.filter(present))
    return pa.concat_tables(out)


def _enterprise_mentions(enterprises: pa.Table) -> pa.Table:
    if "legal_representatives" not in enterprises.column_names:
        return _empty_mentions()
    reps = enterprises["legal_representatives"].combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(reps), 0).to_numpy(zero_copy_only=False)
    parent = np.repeat(np.arange(len(reps)), lengths)
    offsets = np.cumsum(lengths) - lengths
    position = (np.arange(len(parent)) - np.repeat(offsets, lengths)).astype(np.int16)
    flat = pc.list_flatten(reps)
    n = len(flat)

    def part(name: str) -> pa.Array:
        if name not in [f.name for f in flat.type]:
            return pa.nulls(n, pa.string())
        return pc.struct_field(flat, name).cast(pa.string())

    codes = _column(enterprises, "enterprise_code").take(pa.array(parent, pa.int64()))
    table = pa.table({
        "dataset": pa.array(["enterprises"] * n, pa.string()), "record_key": codes,
        "role": pa.array(["legal_representative"] * n, pa.string()), "position": pa.array(position),
        "group": pa.array(["enterprises"] * n, pa.string()),
        "name": _blank_to_null(part("name")), "id_number": _blank_to_null(part("id_number")),
        "cmnd": pa.nulls(n, pa.string()), "id_type": part("id_type"),
        "birth_date": pa.nulls(n, pa.date32()), "gender": pa.array(np.zeros(n, np.int8)),
        "ward": pa.nulls(n, pa.string()), "district": pa.nulls(n, pa.string()), "province": pa.nulls(n, pa.string()),
    }, schema=_MENTION_FIELDS)
    return table.filter(pc.or_(pc.is_valid(table["name"]), pc.is_valid(table["id_number"])))


def _relative_mentions(citizens: pa.Table) -> pa.Table:
    n = citizens.num_rows
    own = pc.fill_null(_column(citizens, "gender", pa.int8()), 0).to_numpy(zero_copy_only=False)
    out = []
    for role, gender in (("father", np.full(n, 1, np.int8)), ("mother", np.full(n, 2, np.int8)),
                         ("spouse", np.where(own == 1, 2, np.where(own == 2, 1, 0)).astype(np.int8))):
        table = pa.table({
            "dataset": pa.array(["citizens"] * n, pa.string()), "record_key": _column(citizens, "personal_id"),
            "role": pa.array([role] * n, pa.string()), "position": pa.array(np.zeros(n, np.int16)),
            "group": pa.array(["citizens"] * n, pa.string()),
            "name": _blank_to_null(_column(citizens, f"{role}_name")),
            "id_number": _blank_to_null(_column(citizens, f"{role}_personal_id")),
            "cmnd": _blank_to_null(_column(citizens, f"{role}_cmnd")),
            "id_type": pa.nulls(n, pa.string()), "birth_date": pa.nulls(n, pa.date32()),
            "gender": pa.array(gender), "ward": pa.nulls(n, pa.string()), "district": pa.nulls(n, pa.string()),
            "province": pa.nulls(n, pa.string()),
        }, schema=_MENTION_FIELDS)
        out.append(table.filter(pc.or_(pc.is_valid(table["name"]), pc.is_valid(table["id_number"]))))
    return pa.concat_tables(out)


# ---------------------------------------------------------------------------------------------
# Prepared columns
# ---------------------------------------------------------------------------------------------

@dataclass
class _Names:
    """Normalised names of a side, as Arrow string arrays (null when there is no name)."""

    full: pa.Array  # normalize_name of the whole name
    key: pa.Array  # name_key of the whole name
    family: pa.Array  # name_key of each part ("" when the part is empty)
    middle: pa.Array
    given: pa.Array


@dataclass
class _Side:
    n: int
    names: _Names
    id12: np.ndarray  # int64, -1: none
    id9: np.ndarray  # int64, -1: none
    day: np.ndarray  # int32 days since 1970, INT32_MIN when unknown
    year: np.ndarray  # int32, -1 when unknown
    gender: np.ndarray  # int8, 0 unknown
    commune: pa.Array  # 2025 commune key or null


@dataclass
class _Citizens(_Side):
    personal_id: pa.Array = None  # type: ignore[assignment]
    order12: np.ndarray = None  # type: ignore[assignment]  # argsort of id12
    sorted12: np.ndarray = None  # type: ignore[assignment]
    order9: np.ndarray = None  # type: ignore[assignment]
    sorted9: np.ndarray = None  # type: ignore[assignment]


@dataclass
class _Mentions(_Side):
    table: pa.Table = None  # type: ignore[assignment]
    group: np.ndarray = None  # type: ignore[assignment]  # int8 index into GROUPS
    raw_number: pa.Array = None  # type: ignore[assignment]


GROUPS = ("civil_events", "enterprises", "citizens")
NO_DAY = np.iinfo(np.int32).min


def _names_from_parts(family: pa.Array, middle: pa.Array, given: pa.Array) -> _Names:
    """Normalised names of records that carry the three parts (once per distinct triple)."""
    joined = pc.binary_join_element_wise(*(pc.fill_null(a, "") for a in (family, middle, given)), "\x1f")
    return _names_per_distinct(joined, lambda text: name_parts(*text.split("\x1f")))


def _names_from_full(full: pa.Array) -> _Names:
    """Normalised names of records that carry the whole name in one field."""
    return _names_per_distinct(full, split_name)


def _names_per_distinct(values: pa.Array, split: Any) -> _Names:
    encoded = values.dictionary_encode()
    distinct = encoded.dictionary.to_pylist()
    columns: dict[str, list] = {k: [] for k in ("full", "key", "family", "middle", "given")}
    for text in distinct:
        family, middle, given = split(text)
        whole = " ".join(p for p in (family, middle, given) if p)
        if not whole:
            for k in columns:
                columns[k].append(None)
            continue
        columns["full"].append(whole)
        columns["key"].append(name_key(whole))
        columns["family"].append(name_key(family))
        columns["middle"].append(name_key(middle))
        columns["given"].append(name_key(given))
    indices = encoded.indices
    return _Names(**{k: pa.array(v, pa.string()).take(indices) for k, v in columns.items()})


def _digits(values: pa.Array, width: int) -> np.ndarray:
    """The number (int64) of every value that is ``width`` digits once separators go, else -1.

    A number stored as an integer that lost its leading zero (``width - 1`` digits) gets it back.
    """
    cleaned = pc.replace_substring_regex(pc.utf8_normalize(pc.fill_null(values, ""), "NFKC"), r"[\s.\-_/]+", "")
    exact = pc.match_substring_regex(cleaned, rf"^[0-9]{{{width}}}$")
    short = pc.match_substring_regex(cleaned, rf"^[1-9][0-9]{{{width - 2}}}$")
    ok = pc.or_(exact, short)
    numbers = pc.if_else(ok, cleaned, "-1").cast(pa.int64())
    return np.array(numbers.to_numpy(zero_copy_only=False), np.int64)


def _days(dates: pa.Array) -> np.ndarray:
    return pc.fill_null(dates.cast(pa.int32()), NO_DAY).to_numpy(zero_copy_only=False).astype(np.int32)


def _prepare_citizens(table: pa.Table) -> _Citizens:
    names = _names_from_parts(_column(table, "family_name"), _column(table, "middle_name"),
                              _column(table, "given_name"))
    id12 = _digits(_column(table, "personal_id"), 12)
    id9 = _digits(_column(table, "cmnd"), 9)
    day = _days(_column(table, "birth_date", pa.date32()))
    year = pc.fill_null(_column(table, "birth_year", pa.int32()), -1).to_numpy(zero_copy_only=False).astype(np.int32)
    year = np.where((year < 0) & (day != NO_DAY), _year_of(day), year).astype(np.int32)
    commune = unit_key_column(_column(table, "permanent_ward_code"), _column(table, "permanent_district_code"),
                              _column(table, "permanent_province_code"))
    order12 = np.argsort(id12, kind="stable")
    order9 = np.argsort(id9, kind="stable")
    return _Citizens(n=table.num_rows, names=names, id12=id12, id9=id9, day=day, year=year,
                     gender=pc.fill_null(_column(table, "gender", pa.int8()), 0).to_numpy(zero_copy_only=False),
                     commune=commune, personal_id=_column(table, "personal_id"),
                     order12=order12, sorted12=id12[order12], order9=order9, sorted9=id9[order9])


def _prepare_mentions(table: pa.Table) -> _Mentions:
    names = _names_from_full(table["name"].combine_chunks())
    id_number = table["id_number"].combine_chunks()
    id_type = pc.fill_null(table["id_type"].combine_chunks(), "")
    passport = pc.equal(id_type, _PASSPORT).to_numpy(zero_copy_only=False)
    id12 = _digits(id_number, 12)
    id9 = _digits(id_number, 9)
    extra9 = _digits(table["cmnd"].combine_chunks(), 9)
    id9 = np.where(id9 >= 0, id9, extra9)
    id12[passport] = -1
    id9[passport] = -1
    day = _days(table["birth_date"].combine_chunks())
    year = np.where(day != NO_DAY, _year_of(day), -1).astype(np.int32)
    commune = unit_key_column(table["ward"].combine_chunks(), table["district"].combine_chunks(),
                              table["province"].combine_chunks())
    group = pc.index_in(table["group"].combine_chunks(), pa.array(GROUPS)).to_numpy(zero_copy_only=False)
    return _Mentions(n=table.num_rows, names=names, id12=id12, id9=id9, day=day, year=year,
                     gender=table["gender"].combine_chunks().to_numpy(zero_copy_only=False), commune=commune,
                     table=table, group=group.astype(np.int8), raw_number=id_number)


def _year_of(day: np.ndarray) -> np.ndarray:
    safe = np.where(day == NO_DAY, 0, day).astype("datetime64[D]")
    return safe.astype("datetime64[Y]").astype(np.int64) + 1970


class _Vocabulary:
    """Integer codes shared by mentions and citizens for every compared text column (-1: null),
    so that equality is an integer comparison and fuzzy scores are computed per distinct pair."""

    def __init__(self, m: _Mentions, c: _Citizens) -> None:
        self.m: dict[str, np.ndarray] = {}
        self.c: dict[str, np.ndarray] = {}
        self.values: dict[str, list] = {}
        for name, left, right in (("full", m.names.full, c.names.full), ("key", m.names.key, c.names.key),
                                  ("family", m.names.family, c.names.family),
                                  ("middle", m.names.middle, c.names.middle),
                                  ("given", m.names.given, c.names.given),
                                  ("commune", m.commune, c.commune)):
            both = pa.concat_arrays([left.cast(pa.string()), right.cast(pa.string())]).dictionary_encode()
            codes = pc.fill_null(both.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
            self.m[name], self.c[name] = codes[:len(left)], codes[len(left):]
            self.values[name] = both.dictionary.to_pylist()
        self._empty = {name: (self.values[name].index("") if "" in self.values[name] else -2)
                       for name in ("family", "middle", "given")}

    def empty(self, name: str) -> int:
        """The code of the empty string in a name-part column (-2 if no value is empty)."""
        return self._empty[name]


# ---------------------------------------------------------------------------------------------
# Candidates
# ---------------------------------------------------------------------------------------------

def _lookup(sorted_values: np.ndarray, order: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index into ``wanted``, citizen row) for every wanted value present (values are unique keys;
    duplicates among citizens are all returned)."""
    lo = np.searchsorted(sorted_values, wanted, "left")
    hi = np.searchsorted(sorted_values, wanted, "right")
    count = hi - lo
    count[wanted < 0] = 0
    which = np.repeat(np.arange(len(wanted)), count)
    starts = np.repeat(lo, count)
    offsets = np.arange(len(which)) - np.repeat(np.cumsum(count) - count, count)
    return which, order[starts + offsets]


def _exact_pairs(m: _Mentions, c: _Citizens) -> tuple[np.ndarray, np.ndarray]:
    """Mentions whose number is a citizen's personal ID or CMND as it stands."""
    a_m, a_c = _lookup(c.sorted12, c.order12, m.id12)
    b_m, b_c = _lookup(c.sorted9, c.order9, m.id9)
    return np.concatenate([a_m, b_m]), np.concatenate([a_c, b_c])


def _variants(numbers: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, variant) for every number one digit away (9 per position) or with two adjacent
    different digits swapped. Vectorised: ``len(numbers) × (9·width + width − 1)`` int64s."""
    if len(numbers) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    pow10 = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = (numbers[:, None] // pow10) % 10
    shift = np.arange(1, 10, dtype=np.int64)
    replaced = (digits[:, :, None] + shift) % 10
    subs = numbers[:, None, None] + (replaced - digits[:, :, None]) * pow10[None, :, None]
    left, right = digits[:, :-1], digits[:, 1:]
    swaps = numbers[:, None] + (right - left) * pow10[None, :-1] + (left - right) * pow10[None, 1:]
    swaps = np.where(left != right, swaps, -1)
    rows = np.concatenate([np.repeat(np.arange(len(numbers)), 9 * width),
                           np.repeat(np.arange(len(numbers)), width - 1)])
    return rows, np.concatenate([subs.reshape(-1), swaps.reshape(-1)])


def _neighbour_pairs(m: _Mentions, c: _Citizens, rows: np.ndarray, chunk: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """Citizens whose personal ID or CMND is one edit from the number of a mention in ``rows``."""
    out_m, out_c = [], []
    for numbers, sorted_values, order, width in ((m.id12, c.sorted12, c.order12, 12), (m.id9, c.sorted9, c.order9, 9)):
        having = rows[numbers[rows] >= 0]
        for start in range(0, len(having), chunk):
            part = having[start:start + chunk]
            which, variant = _variants(numbers[part], width)
            hit_v, hit_c = _lookup(sorted_values, order, variant)
            out_m.append(part[which[hit_v]])
            out_c.append(hit_c)
    if not out_m:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(out_m), np.concatenate(out_c)


def _blocked_pairs(m: _Mentions, c: _Citizens, vocab: _Vocabulary, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidates of the mentions in ``rows`` by :data:`BLOCKING_KEYS`, joined in DuckDB."""
    if len(rows) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)

    def frame(side_codes: dict[str, np.ndarray], side: _Side, index: np.ndarray) -> pa.Table:
        return pa.table({
            "i": index.astype(np.int64),
            "given_key": side_codes["given"][index], "family_key": side_codes["family"][index],
            "name_key": side_codes["key"][index],
            "birth_day": np.where(side.day[index] == NO_DAY, -1, side.day[index]).astype(np.int64),
            "birth_year": side.year[index].astype(np.int64), "commune": side_codes["commune"][index],
        })

    men = frame(vocab.m, m, rows)
    cit = frame(vocab.c, c, np.arange(c.n))
    selects = []
    for key in BLOCKING_KEYS:
        columns = key.columns
        on = " AND ".join(f"m.{col} = c.{col}" for col in columns)
        present_m = " AND ".join(f"m.{col} >= 0" for col in columns)
        if key.only_without_birth_date:
            present_m += " AND m.birth_day < 0 AND m.birth_year < 0"
        partition = ", ".join(columns)
        present_c = " AND ".join(f"{col} >= 0" for col in columns)
        selects.append(
            f"SELECT m.i AS mi, c.i AS ci FROM men m JOIN (SELECT i, {partition}, count(*) OVER (PARTITION BY "
            f"{partition}) AS block FROM cit WHERE {present_c}) c ON {on} WHERE {present_m} AND c.block <= {key.max_block}")
    con = duckdb.connect()
    try:
        con.register("men", men)
        con.register("cit", cit)
        result = con.sql(" UNION ".join(selects)).to_arrow_table()
    finally:
        con.close()
    return (result["mi"].to_numpy().astype(np.int64), result["ci"].to_numpy().astype(np.int64))


def _unique_pairs(mi: np.ndarray, ci: np.ndarray, n_citizens: int) -> tuple[np.ndarray, np.ndarray]:
    key = np.unique(mi.astype(np.int64) * n_citizens + ci.astype(np.int64))
    return key // n_citizens, key % n_citizens


# ---------------------------------------------------------------------------------------------
# Comparison levels of pairs
# ---------------------------------------------------------------------------------------------

def _levels(m: _Mentions, c: _Citizens, vocab: _Vocabulary, mi: np.ndarray, ci: np.ndarray,
            with_id: bool = True) -> np.ndarray:
    """The comparison vector of each pair: an int8 matrix, one column per :data:`COMPARISONS`
    (``with_id=False`` leaves the ID number at "missing", for samples whose ``u`` is counted apart)."""
    out = np.empty((len(mi), len(COMPARISONS)), np.int8)
    out[:, _CMP["id"]] = _id_levels(m.id12[mi], m.id9[mi], c.id12[ci], c.id9[ci]) if with_id else ID_MISSING
    out[:, _CMP["name"]] = _name_levels(vocab, mi, ci)
    out[:, _CMP["birth_date"]], out[:, _CMP["birth_year"]] = _date_levels(m.day[mi], m.year[mi], c.day[ci], c.year[ci])
    out[:, _CMP["gender"]] = _equality_levels(m.gender[mi].astype(np.int64), c.gender[ci].astype(np.int64), missing=0)
    out[:, _CMP["commune"]] = _equality_levels(vocab.m["commune"][mi], vocab.c["commune"][ci], missing=-1)
    return out


def _equality_levels(a: np.ndarray, b: np.ndarray, missing: int) -> np.ndarray:
    level = np.where(a == b, AGREE, DISAGREE).astype(np.int8)
    level[(a == missing) | (b == missing)] = UNKNOWN
    return level


def _edit_kind(a: np.ndarray, b: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(one adjacent transposition, one substitution) between two numbers of ``width`` digits.

    Only pairs that can be one edit apart are taken digit by digit: a single edit leaves the high
    or the low half of the number whole, or (a swap across the middle) all but the two middle digits.
    """
    transposition = np.zeros(len(a), bool)
    substitution = np.zeros(len(a), bool)
    if len(a) == 0:
        return transposition, substitution
    half = 10 ** (width // 2)
    ah, al, bh, bl = a // half, a % half, b // half, b % half
    maybe = (ah == bh) | (al == bl) | ((ah // 10 == bh // 10) & (al % (half // 10) == bl % (half // 10)))
    rows = np.flatnonzero(maybe & (a != b))
    if len(rows) == 0:
        return transposition, substitution
    pow10 = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    da = (np.maximum(a[rows], 0)[:, None] // pow10) % 10
    db = (np.maximum(b[rows], 0)[:, None] // pow10) % 10
    differ = da != db
    count = differ.sum(axis=1)
    substitution[rows] = count == 1
    adjacent = differ[:, :-1] & differ[:, 1:]
    swapped = adjacent & (da[:, :-1] == db[:, 1:]) & (da[:, 1:] == db[:, :-1])
    transposition[rows] = (count == 2) & swapped.any(axis=1)
    return transposition, substitution


def _id_levels(m12: np.ndarray, m9: np.ndarray, c12: np.ndarray, c9: np.ndarray) -> np.ndarray:
    level = np.full(len(m12), ID_MISSING, np.int8)
    has12 = (m12 >= 0) & (c12 >= 0)
    has9 = (m9 >= 0) & (c9 >= 0)
    level[has12 | has9] = ID_DIFFERENT
    t12, s12 = _edit_kind(np.where(has12, m12, 0), np.where(has12, c12, 0), 12)
    t9, s9 = _edit_kind(np.where(has9, m9, 0), np.where(has9, c9, 0), 9)
    level[(has12 & s12) | (has9 & s9)] = ID_ONE_DIGIT
    level[(has12 & t12) | (has9 & t9)] = ID_TRANSPOSED
    level[has9 & (m9 == c9)] = ID_CMND
    level[has12 & (m12 == c12)] = ID_EXACT
    return level


#: Jaro–Winkler similarity of two name parts (folded) from which they count as the same part misspelt.
PART_SIMILAR = 0.85


def _part_similarity(vocab: _Vocabulary, part: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jaro–Winkler similarity per pair of codes, computed once per distinct pair (rapidfuzz)."""
    sim = np.where(a == b, 1.0, 0.0)
    todo = (a != b) & (a >= 0) & (b >= 0)
    if todo.any():
        width = len(vocab.values[part]) + 1
        pair = a[todo] * width + b[todo]
        distinct, inverse = np.unique(pair, return_inverse=True)
        values = vocab.values[part]
        left = [values[int(v)] for v in distinct // width]
        right = [values[int(v)] for v in distinct % width]
        scores = process.cpdist(left, right, scorer=JaroWinkler.normalized_similarity, workers=-1)
        sim[todo] = np.asarray(scores, float)[inverse]
    return sim


def _name_levels(vocab: _Vocabulary, mi: np.ndarray, ci: np.ndarray) -> np.ndarray:
    full_m, full_c = vocab.m["full"][mi], vocab.c["full"][ci]
    level = np.full(len(mi), NAME_DIFFERENT, np.int8)
    sims = {}
    for part in ("family", "middle", "given"):
        a, b = vocab.m[part][mi], vocab.c[part][ci]
        s = _part_similarity(vocab, part, a, b)
        if part == "middle":  # a middle name left out on one side is not a disagreement
            empty = vocab.empty("middle")
            s = np.where((a == empty) | (b == empty), np.maximum(s, PART_SIMILAR), s)
        sims[part] = s
    ok = {part: sims[part] >= PART_SIMILAR for part in sims}
    level[ok["family"] & (ok["middle"] | ok["given"])] = NAME_PARTIAL
    level[ok["family"] & ok["middle"] & ok["given"]] = NAME_CLOSE
    level[vocab.m["key"][mi] == vocab.c["key"][ci]] = NAME_FOLDED
    level[full_m == full_c] = NAME_EXACT
    level[(full_m < 0) | (full_c < 0)] = NAME_MISSING
    return level


def _ymd(day: np.ndarray) -> np.ndarray:
    dates = np.where(day == NO_DAY, 0, day).astype("datetime64[D]")
    years = dates.astype("datetime64[Y]")
    months = dates.astype("datetime64[M]")
    y = years.astype(np.int64) + 1970
    mo = (months - years.astype("datetime64[M]")).astype(np.int64) + 1
    d = (dates - months.astype("datetime64[D]")).astype(np.int64) + 1
    return y * 10_000 + mo * 100 + d


def _date_levels(md: np.ndarray, my: np.ndarray, cd: np.ndarray, cy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    full = (md != NO_DAY) & (cd != NO_DAY)
    date_level = np.full(len(md), DOB_MISSING, np.int8)
    a, b = _ymd(md), _ymd(cd)
    transposed, substituted = _edit_kind(np.where(full, a, 0), np.where(full, b, 0), 8)
    day_month = (a // 10_000 == b // 10_000) & (a % 100 == (b // 100) % 100) & ((a // 100) % 100 == b % 100)
    date_level[full] = DOB_DIFFERENT
    date_level[full & (a // 10_000 == b // 10_000)] = DOB_SAME_YEAR
    date_level[full & (transposed | substituted | day_month)] = DOB_ONE_EDIT
    date_level[full & (md == cd)] = DOB_EXACT
    years = ~full & (my >= 0) & (cy >= 0)
    year_level = np.full(len(md), YEAR_MISSING, np.int8)
    year_level[years] = np.where(my[years] == cy[years], YEAR_EQUAL, YEAR_DIFFERENT)
    return date_level, year_level


def _consistent(levels: np.ndarray) -> np.ndarray:
    """Exact-number pairs that nothing contradicts: band ``exact`` without a search."""
    ident = levels[:, _CMP["id"]]
    name = levels[:, _CMP["name"]]
    dob = levels[:, _CMP["birth_date"]]
    year = levels[:, _CMP["birth_year"]]
    return (np.isin(ident, (ID_EXACT, ID_CMND)) & np.isin(name, (NAME_EXACT, NAME_FOLDED, NAME_CLOSE))
            & np.isin(dob, (DOB_EXACT, DOB_MISSING)) & (year != YEAR_DIFFERENT)
            & (levels[:, _CMP["gender"]] != DISAGREE))


# ---------------------------------------------------------------------------------------------
# Estimating u and m
# ---------------------------------------------------------------------------------------------

#: How many records' worth of citizens stand in for mentions when ``u`` is measured: with few mentions
#: (a small increment), pairs of a random *citizen* and a random citizen carry the estimate instead,
#: so that a handful of mentions cannot make a level look impossible (or certain).
U_STAND_INS = 1_000


def _estimate_u(m: _Mentions, c: _Citizens, vocab: _Vocabulary, rng: np.random.Generator, model: LinkModel,
                samples: int = 1_000_000, number_sample: int = 20_000) -> dict[str, np.ndarray]:
    """``u`` of every comparable level: P(level | a random mention and a random other citizen).

    Random pairs for the fuzzy levels; value frequencies for the equality levels of names, birth
    dates and years; for the ID levels, see :func:`_number_u`. The mention side of a pair is a random
    mention with probability ``p = mentions / (mentions + U_STAND_INS)``, else a random citizen (so
    ``p`` is about 1 for a real run and small for a handful of mentions); a citizen is never paired
    with itself.
    """
    share = m.n / (m.n + U_STAND_INS)
    k = int(min(samples, max(50_000, 20 * (m.n + c.n))))
    from_mentions = rng.random(k) < share
    left = np.where(from_mentions, rng.integers(0, m.n, k), m.n + rng.integers(0, c.n, k))
    ci = rng.integers(0, c.n, k)
    keep = left - m.n != ci
    left, ci = left[keep], ci[keep]
    both, both_vocab = _stand_in_frame(m, c, vocab)
    levels = _levels(both, c, both_vocab, left, ci, with_id=False)
    u: dict[str, np.ndarray] = {}
    for j, comparison in enumerate(COMPARISONS):
        comparable = len(comparison.levels) - 1
        counts = np.bincount(levels[:, j], minlength=len(comparison.levels))[:comparable].astype(float)
        total = counts.sum()
        u[comparison.name] = (counts + 0.5) / (total + 0.5 * comparable) if total else np.full(comparable, 1 / comparable)
    pooled = model.pooled_m.get("id", np.array(PRIOR_M["id"]))
    u["id"] = _number_u(m, c, rng, number_sample, typo_rate=float(pooled[ID_TRANSPOSED] + pooled[ID_ONE_DIGIT]))

    def equal(a_m: np.ndarray, a_c: np.ndarray) -> float:
        return share * _equal_share(a_m, a_c) + (1 - share) * _equal_share(a_c, a_c, same=True)

    day_m, day_c = np.where(m.day == NO_DAY, -1, m.day), np.where(c.day == NO_DAY, -1, c.day)
    _exact_u(u, "name", {NAME_EXACT: equal(vocab.m["full"], vocab.c["full"]),
                         NAME_FOLDED: equal(vocab.m["key"], vocab.c["key"]) - equal(vocab.m["full"], vocab.c["full"])})
    _exact_u(u, "birth_date", {DOB_EXACT: equal(day_m, day_c)})
    _exact_u(u, "birth_year", {YEAR_EQUAL: equal(m.year.astype(np.int64), c.year.astype(np.int64))})
    for name in u:
        u[name] = np.maximum(u[name], _U_FLOOR)
        u[name] = u[name] / u[name].sum()
    return u


def _stand_in_frame(m: _Mentions, c: _Citizens, vocab: _Vocabulary) -> tuple[_Side, _Vocabulary]:
    """Mentions followed by the citizens as if they were mentions (rows ``m.n …``), for sampling."""
    both = _Side(n=m.n + c.n, names=m.names, id12=np.concatenate([m.id12, c.id12]),
                 id9=np.concatenate([m.id9, c.id9]), day=np.concatenate([m.day, c.day]),
                 year=np.concatenate([m.year, c.year]), gender=np.concatenate([m.gender, c.gender]),
                 commune=m.commune)
    codes = object.__new__(_Vocabulary)
    codes.m = {name: np.concatenate([vocab.m[name], vocab.c[name]]) for name in vocab.m}
    codes.c, codes.values, codes._empty = vocab.c, vocab.values, vocab._empty
    return both, codes


def _equal_share(a: np.ndarray, b: np.ndarray, same: bool = False) -> float:
    """P(a random non-null ``a`` equals a random non-null ``b``), from value frequencies, as if ``b``
    held one more record with each value of ``a`` (so an unseen value is rare, never impossible).
    ``same``: ``a`` and ``b`` are the same records, and a record is not paired with itself."""
    a, b = a[a >= 0], b[b >= 0]
    if len(a) == 0:
        return 1.0 / (len(b) + 1)
    va, ca = np.unique(a, return_counts=True)
    vb, cb = np.unique(b, return_counts=True)
    common, ia, ib = np.intersect1d(va, vb, assume_unique=True, return_indices=True)
    agreeing = (ca[ia].astype(float) * cb[ib]).sum() - (len(a) if same else 0)
    return float((agreeing + len(a)) / (len(a) * float(len(b) + 1)))


def _exact_u(u: dict[str, np.ndarray], name: str, fixed: dict[int, float]) -> None:
    """Set ``u`` of equality levels to their shares from value frequencies, keeping the sampled
    proportions of the other levels; a share is never below the sampled estimate's smoothing."""
    values = u[name].copy()
    fixed = {level: max(share, _U_FLOOR) for level, share in fixed.items()}
    rest = [i for i in range(len(values)) if i not in fixed]
    remaining = max(1.0 - sum(fixed.values()), _U_FLOOR)
    values[rest] = values[rest] / values[rest].sum() * remaining
    for level, share in fixed.items():
        values[level] = share
    u[name] = values


#: Share of mentions taken to carry somebody else's valid number outright (a relative's ID copied into
#: the wrong field): the floor of ``u`` for an exact number, so that no number is absolute proof.
WRONG_PERSON_NUMBER = 1e-3


def _number_u(m: _Mentions, c: _Citizens, rng: np.random.Generator, sample: int, typo_rate: float) -> np.ndarray:
    """``u`` of the ID levels: P(level | the mention and a citizen who is *not* the person).

    Counted, not sampled: a random pair almost never shares a number, and when it does it is nearly
    always the true match, which ``u`` must leave out. So the neighbourhoods of the citizens' own
    numbers are counted (a sample of them): ``ν``, the mean number of *other* citizens one swap or one
    digit away from a citizen's number, gives ``u = ν / N`` for those levels; a mistyped number lands
    exactly on somebody else with probability ``typo_rate · ν / variants``, which gives ``u`` of the
    exact levels, with :data:`WRONG_PERSON_NUMBER` as floor. Personal IDs and CMNDs are counted apart
    and mixed in the proportion the mentions carry them.
    """
    n = float(c.n)
    floor = WRONG_PERSON_NUMBER / n
    with12 = float((m.id12 >= 0).sum())
    with9 = float(((m.id12 < 0) & (m.id9 >= 0)).sum())
    shares = (with12 / max(with12 + with9, 1.0), with9 / max(with12 + with9, 1.0)) if with12 + with9 else (1.0, 0.0)
    u = np.zeros(ID_MISSING)
    for share, numbers, ordered, width, exact_level in ((shares[0], c.id12, c.sorted12, 12, ID_EXACT),
                                                         (shares[1], c.id9, c.sorted9, 9, ID_CMND)):
        rows = np.flatnonzero(numbers >= 0)
        if len(rows) > sample:
            rows = rng.choice(rows, sample, replace=False)
        _, variant = _variants(numbers[rows], width)
        hit, _ = _lookup(ordered, np.arange(len(ordered)), variant)
        moves = 9 * width + width - 1
        # _variants lays out every row's substitutions first, then every row's swaps.
        kinds = np.where(hit < 9 * width * len(rows), ID_ONE_DIGIT, ID_TRANSPOSED)
        counts = np.bincount(kinds, minlength=ID_MISSING).astype(float)
        sampled = max(len(rows), 1)
        nu = (counts[ID_ONE_DIGIT] + counts[ID_TRANSPOSED]) / sampled
        u[exact_level] += share * max(typo_rate * nu / moves / n, floor)
        u[ID_TRANSPOSED] += share * (counts[ID_TRANSPOSED] + 0.5) / (sampled * n)
        u[ID_ONE_DIGIT] += share * (counts[ID_ONE_DIGIT] + 0.5) / (sampled * n)
    u[ID_EXACT] = max(u[ID_EXACT], floor)
    u[ID_CMND] = max(u[ID_CMND], floor)
    u[ID_DIFFERENT] = max(1.0 - u[:ID_DIFFERENT].sum(), 0.5)
    return u


def _exact_pairs_rows(m: _Mentions, c: _Citizens, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a_m, a_c = _lookup(c.sorted12, c.order12, m.id12[rows])
    b_m, b_c = _lookup(c.sorted9, c.order9, m.id9[rows])
    return rows[np.concatenate([a_m, b_m])], np.concatenate([a_c, b_c])


def _estimate_m(m: _Mentions, levels: np.ndarray, mi: np.ndarray, n_citizens: int,
                in_population: float) -> LinkModel:
    """``m`` per source group from anchor pairs (see the module docstring), shrunk to the pooled
    estimate and the prior."""
    group = m.group[mi]
    # Anchors for everything but the ID: pairs whose personal ID is exactly equal.
    id_anchor = levels[:, _CMP["id"]] == ID_EXACT
    # Anchors for the ID: the one candidate of a mention whose name and full birth date agree.
    agree = (np.isin(levels[:, _CMP["name"]], (NAME_EXACT, NAME_FOLDED)) & (levels[:, _CMP["birth_date"]] == DOB_EXACT)
             & (levels[:, _CMP["gender"]] != DISAGREE))
    per_mention = np.bincount(mi[agree], minlength=m.n)
    nd_anchor = agree & (per_mention[mi] == 1)
    estimates: dict[str, dict[str, np.ndarray]] = {}
    anchors: dict[str, dict[str, int]] = {}
    pooled: dict[str, np.ndarray] = {}
    pooled_n: dict[str, int] = {}
    for comparison in COMPARISONS:
        j = _CMP[comparison.name]
        chosen = nd_anchor if comparison.name == "id" else id_anchor
        prior = np.array(PRIOR_M[comparison.name])
        counts = _level_counts(levels[chosen, j], comparison)
        pooled[comparison.name] = (counts + PRIOR_STRENGTH * prior) / (counts.sum() + PRIOR_STRENGTH)
        pooled_n[comparison.name] = int(counts.sum())
    for g, name in enumerate(GROUPS):
        estimates[name], anchors[name] = {}, {}
        for comparison in COMPARISONS:
            j = _CMP[comparison.name]
            chosen = (nd_anchor if comparison.name == "id" else id_anchor) & (group == g)
            counts = _level_counts(levels[chosen, j], comparison)
            base = pooled[comparison.name]
            estimate = np.maximum((counts + PRIOR_STRENGTH * base) / (counts.sum() + PRIOR_STRENGTH), M_FLOOR)
            estimates[name][comparison.name] = estimate / estimate.sum()
            anchors[name][comparison.name] = int(counts.sum())
    return LinkModel(u={}, m=estimates, anchors=anchors, citizens=n_citizens, in_population=in_population,
                     pooled_m=pooled)


def _level_counts(values: np.ndarray, comparison: Comparison) -> np.ndarray:
    comparable = len(comparison.levels) - 1
    return np.bincount(values, minlength=len(comparison.levels))[:comparable].astype(float)


def _prior_model(n_citizens: int, in_population: float) -> LinkModel:
    u = {c.name: np.full(len(c.levels) - 1, 1.0 / (len(c.levels) - 1)) for c in COMPARISONS}
    u["id"] = np.array([WRONG_PERSON_NUMBER / n_citizens] * 2 + [10 / n_citizens, 100 / n_citizens, 1.0])
    m = {g: {c.name: np.array(PRIOR_M[c.name]) for c in COMPARISONS} for g in GROUPS}
    return LinkModel(u=u, m=m, anchors={g: {c.name: 0 for c in COMPARISONS} for g in GROUPS},
                     citizens=n_citizens, in_population=in_population)


# ---------------------------------------------------------------------------------------------
# Decision and explanation
# ---------------------------------------------------------------------------------------------

def _decide(m: _Mentions, c: _Citizens, vocab: _Vocabulary, model: LinkModel, thresholds: Thresholds,
            mi: np.ndarray, ci: np.ndarray, levels: np.ndarray) -> pa.Table:
    weight = np.zeros(len(mi))
    group = m.group[mi]
    for g, name in enumerate(GROUPS):
        rows = group == g
        if not rows.any():
            continue
        w = model.weights(name)
        for comparison in COMPARISONS:
            j = _CMP[comparison.name]
            weight[rows] += w[comparison.name][levels[rows, j]]
    weight += _frequency_adjustment(c, vocab, model, ci, levels)
    # Posterior over each mention's candidates, with "somebody else / nobody" as the alternative.
    log_k = np.log2(model.citizens * (1 - model.in_population) / model.in_population)
    order = np.lexsort((-weight, mi))
    mi, ci, weight, levels = mi[order], ci[order], weight[order], levels[order]
    starts = np.flatnonzero(np.r_[True, mi[1:] != mi[:-1]]) if len(mi) else np.empty(0, np.int64)
    counts = np.diff(np.r_[starts, len(mi)])
    top = weight[starts] if len(mi) else np.empty(0)
    shift = np.maximum(np.repeat(top, counts), log_k)
    mass = np.exp2(weight - shift)
    total = np.add.reduceat(mass, starts) if len(mi) else np.empty(0)
    total += np.exp2(log_k - np.maximum(top, log_k))
    posterior = mass / np.repeat(total, counts)

    best = np.full(m.n, -1, np.int64)
    best[mi[starts]] = starts
    second = np.full(m.n, -1, np.int64)
    has_two = counts > 1
    second[mi[starts[has_two]]] = starts[has_two] + 1
    found = best >= 0
    pick = np.where(found, best, 0)
    score = np.where(found, posterior[pick] if len(mi) else 0.0, 0.0)
    lv = levels[pick] if len(mi) else np.zeros((m.n, len(COMPARISONS)), np.int8)
    lv = np.where(found[:, None], lv, np.array([c_.missing for c_ in COMPARISONS], np.int8)[None, :])
    ident, name = lv[:, _CMP["id"]], lv[:, _CMP["name"]]
    exact_number = np.isin(ident, (ID_EXACT, ID_CMND))
    contradicted = found & exact_number & (name == NAME_DIFFERENT)
    consistent = found & _consistent(lv)

    band = np.full(m.n, 3, np.int8)  # index into BANDS
    band[found & (score >= thresholds.review)] = 2
    band[found & (score >= thresholds.match)] = 1
    band[consistent] = 0
    band[contradicted] = 2
    method = np.full(m.n, 4, np.int8)  # index into METHODS
    method[found] = 3
    method[found & (ident == ID_EXACT)] = 0
    method[found & (ident == ID_CMND)] = 1
    method[found & np.isin(ident, (ID_TRANSPOSED, ID_ONE_DIGIT))] = 2

    citizen = np.where(found, ci[pick] if len(mi) else 0, 0)
    runner = second >= 0
    runner_pick = np.where(runner, second, 0)
    pid = c.personal_id
    personal_id = pc.if_else(pa.array(found & (band != 3)), pid.take(pa.array(citizen)), pa.scalar(None, pa.string()))
    runner_id = pc.if_else(pa.array(runner), pid.take(pa.array(np.where(runner, ci[runner_pick], 0) if len(mi) else citizen)),
                           pa.scalar(None, pa.string()))
    runner_score = pa.array(np.where(runner, posterior[runner_pick] if len(mi) else 0.0, np.nan), mask=~runner)
    match_weight = pa.array(np.where(found, weight[pick] if len(mi) else 0.0, np.nan), mask=~found)
    n_candidates = np.zeros(m.n, np.int32)
    if len(mi):
        n_candidates[mi[starts]] = counts

    explanation = _explain(m, c, vocab, lv, found, citizen, score, np.where(found, weight[pick] if len(mi) else 0.0, 0.0),
                           n_candidates, contradicted, runner, runner_id, runner_score)
    t = m.table
    return pa.table({
        "dataset": t["dataset"], "record_key": t["record_key"], "role": t["role"], "position": t["position"],
        "mention_name": t["name"], "mention_id_number": t["id_number"], "mention_birth_date": t["birth_date"],
        "personal_id": personal_id, "score": pa.array(score, pa.float64()), "match_weight": match_weight,
        "band": pa.array(np.array(BANDS, object)[band], pa.string()),
        "method": pa.array(np.array(METHODS, object)[method], pa.string()),
        "candidates": pa.array(n_candidates), "runner_up_personal_id": runner_id, "runner_up_score": runner_score,
        "explanation": explanation,
    }, schema=LINK_SCHEMA)


#: Agreement levels whose ``u`` is taken for the value agreed on (term frequency), not on average:
#: two records that agree on "Nguyễn Văn Anh" prove less than two that agree on "Khúc Thị Uyên", and a
#: birth date many share (a default date, the oldest cohort) less than a rare one.
FREQUENCY_LEVELS = (("name", NAME_EXACT, "full"), ("name", NAME_FOLDED, "key"), ("birth_date", DOB_EXACT, "day"))


def _frequency_adjustment(c: _Citizens, vocab: _Vocabulary, model: LinkModel, ci: np.ndarray,
                          levels: np.ndarray) -> np.ndarray:
    """``log2(u_level / u_value)`` for pairs at a :data:`FREQUENCY_LEVELS` level (0 elsewhere), where
    ``u_value`` is the share of citizens with the agreed value (at least one citizen's worth). The
    adjusted weight never drops below the next level's."""
    out = np.zeros(len(ci))
    for comparison, level, column in FREQUENCY_LEVELS:
        rows = np.flatnonzero(levels[:, _CMP[comparison]] == level)
        if len(rows) == 0:
            continue
        if column == "day":
            values = np.where(c.day == NO_DAY, -1, c.day.astype(np.int64) - int(c.day[c.day != NO_DAY].min(initial=0)))
        else:
            values = vocab.c[column]
        known = values >= 0
        if not known.any():
            continue
        counts = np.bincount(values[known])
        share = np.maximum(counts[values[ci[rows]]] / known.sum(), 1.0 / known.sum())
        average = model.u[comparison][level]
        adjustment = np.log2(average / share)
        floor = min(float(np.min([model.weights(g)[comparison][level + 1] - model.weights(g)[comparison][level]
                                   for g in model.m])), 0.0)
        out[rows] = np.maximum(adjustment, floor)
    return out


def _number_text(numbers: np.ndarray, width: int) -> pa.Array:
    """Numbers as ``width``-digit text with their leading zeros; null for -1 (no number)."""
    return pc.utf8_lpad(pa.array(numbers, mask=numbers < 0).cast(pa.string()), width, "0")


def _text(value: Any, n: int) -> pa.Array:
    return pa.array([value] * n, pa.string()) if not isinstance(value, (pa.Array, pa.ChunkedArray)) else value


def _join(*parts: Any, n: int) -> pa.Array:
    """Element-wise concatenation of literals and string arrays (a null part makes the result null)."""
    return pc.binary_join_element_wise(*(_text(p, n).cast(pa.string()) for p in parts), "")


def _choose(level: np.ndarray, phrases: Sequence[pa.Array | None], n: int) -> pa.Array:
    """The phrase of each row's level (a ``None`` phrase leaves that level out: null)."""
    arrays = [p if p is not None else pa.nulls(n, pa.string()) for p in phrases]
    return pc.choose(pa.array(level.astype(np.int8)), *arrays)


def _explain(m: _Mentions, c: _Citizens, vocab: _Vocabulary, lv: np.ndarray, found: np.ndarray, citizen: np.ndarray,
             score: np.ndarray, weight: np.ndarray, n_candidates: np.ndarray, contradicted: np.ndarray,
             runner: np.ndarray, runner_id: pa.Array, runner_score: pa.Array) -> pa.Array:
    n = m.n
    take = pa.array(citizen)
    own12, own9 = _number_text(m.id12, 12), _number_text(m.id9, 9)
    their12, their9 = _number_text(c.id12[citizen], 12), _number_text(c.id9[citizen], 9)
    use9 = pa.array((m.id12 < 0) | (c.id12[citizen] < 0) | (lv[:, _CMP["id"]] == ID_CMND))
    mine = pc.if_else(use9, _join("CMND ", own9, n=n), _join("ID ", own12, n=n))
    theirs = pc.if_else(use9, their9, their12)
    raw = pc.fill_null(m.raw_number, "")
    id_phrase = _choose(lv[:, _CMP["id"]], [
        _join(mine, " = citizen's ID", n=n),
        _join(mine, " = citizen's old CMND", n=n),
        _join(mine, ": two adjacent digits swapped from citizen's ", theirs, n=n),
        _join(mine, ": one digit differs from citizen's ", theirs, n=n),
        _join(mine, " differs from citizen's ", theirs, n=n),
        pc.if_else(pc.equal(raw, ""), pa.scalar("no ID number"),
                   _join("ID number ", raw, " not comparable", n=n)),
    ], n)
    served = pc.fill_null(m.table["name"].combine_chunks(), "")
    theirs_name = c.names.full.take(take)
    name_phrase = _choose(lv[:, _CMP["name"]], [
        _join("name ", theirs_name, " equal", n=n),
        _join("name ", served, " = ", theirs_name, " (diacritics/case only)", n=n),
        _join("name ", served, " ≈ ", theirs_name, " (close spelling)", n=n),
        _join("name ", served, " vs ", theirs_name, ": one part differs", n=n),
        _join("name ", served, " ≠ ", theirs_name, n=n),
        pa.array(["no name to compare"] * n, pa.string()),
    ], n)
    mine_date = m.table["birth_date"].combine_chunks().cast(pa.string())
    their_date = pa.array(np.where(c.day[citizen] == NO_DAY, 0, c.day[citizen]).astype("datetime64[D]")).cast(pa.date32()).cast(pa.string())
    date_phrase = _choose(lv[:, _CMP["birth_date"]], [
        _join("birth date equal (", mine_date, ")", n=n),
        _join("birth date ", mine_date, " vs ", their_date, ": one digit or day/month off", n=n),
        _join("birth date ", mine_date, " vs ", their_date, ": same year only", n=n),
        _join("birth date ", mine_date, " ≠ ", their_date, n=n),
        None,
    ], n)
    year_phrase = _choose(lv[:, _CMP["birth_year"]], [
        pa.array(["birth year equal"] * n, pa.string()), pa.array(["birth year differs"] * n, pa.string()), None], n)
    no_date = pc.and_(pc.is_null(date_phrase), pc.is_null(year_phrase))
    date_phrase = pc.if_else(no_date, pa.scalar("no birth date to compare"), pc.coalesce(date_phrase, year_phrase))
    gender_phrase = _choose(lv[:, _CMP["gender"]], [
        pa.array(["gender agrees"] * n, pa.string()), pa.array(["gender differs"] * n, pa.string()), None], n)
    commune_phrase = _choose(lv[:, _CMP["commune"]], [
        pa.array(["same commune"] * n, pa.string()), pa.array(["different commune"] * n, pa.string()), None], n)
    tail = _join("P(match) ", pc.round(pa.array(score), 4).cast(pa.string()), ", ",
                 pc.round(pa.array(weight), 1).cast(pa.string()), " bits, ",
                 pa.array(n_candidates).cast(pa.string()), " candidate(s)", n=n)
    runner_text = _join("runner-up ", runner_id, " (P ", pc.round(runner_score, 4).cast(pa.string()), ")", n=n)
    body = pc.binary_join_element_wise(id_phrase, name_phrase, date_phrase, gender_phrase, commune_phrase, tail,
                                       runner_text, "; ", null_handling="skip")
    flagged = pc.binary_join_element_wise(
        pa.array(["ID found, but its citizen's name differs: held for review"] * n, pa.string()), body, "; ")
    body = pc.if_else(pa.array(contradicted), flagged, body)
    blocks = pc.if_else(pa.array((m.day == NO_DAY) & (m.year < 0)),
                        pa.scalar("no citizen shares the full name (or too many do to tell them apart)"),
                        pa.scalar("no citizen shares the given name + birth date, birth date + commune or full "
                                  "name + birth year"))
    numbered = pc.if_else(pc.equal(raw, ""), pa.scalar("no ID number; "),
                          _join("ID number ", raw, " is no citizen's ID or CMND, nor one digit from one; ", n=n))
    nothing = _join("no candidate: ", numbered, blocks, n=n)
    return pc.if_else(pa.array(found), body, nothing)
