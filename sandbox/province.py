"""The synthetic province's residents: people, families, households, deaths, moves.

Deterministic from ``(seed, residents, as_of)``. Everything is drawn in vectorised numpy passes so a
million residents take seconds. The people are the *truth*; what each national system serves is
derived from them, with the data faults of ``national-systems.md`` §5 applied by the services'
generators and written to the ground truth (:mod:`sandbox.ground_truth`).

Time: every timestamp is seconds since the Unix epoch, interpreted in Asia/Ho_Chi_Minh (+07:00)
when rendered. ``as_of`` is the end of generated history; later changes happen live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa

from hub.admin_units import Unit, legacy_to_2025, legacy_units
from sandbox import names
from schemas.timefmt import VN_TZ
DEFAULT_AS_OF = datetime(2026, 11, 1, tzinfo=VN_TZ)
REFORM_2025 = datetime(2025, 7, 1, tzinfo=VN_TZ)
PROVINCE = "31"  # Hải Phòng: the sandbox's province (§7)
#: Provinces other people come from or move to (birth registration, hometown, destination).
OTHER_PROVINCES = ("01", "22", "30", "33", "34")
CIVIL_YEARS = 3  # the electronic civil-status registry holds the last three years

#: Default rates of the data faults (§5). A fault file's ``[data]`` table overrides them.
DEFAULT_DATA_FAULTS: dict[str, float] = {
    "name_all_in_ten": 0.03,  # population: the whole name in Ten, Ho and ChuDem empty
    "name_nfd": 0.03,  # any registry: names decomposed (NFD) instead of NFC
    "name_old_tone": 0.3,  # any registry: old tone placement where it differs (hoà, thuý)
    "name_upper": 0.3,  # any registry: names in upper case
    "name_no_diacritics": 0.03,  # civil and business registries: names without diacritics
    "address_2025_codes": 0.7,  # records changed after 1 July 2025 carry 19/2025 codes at this rate
    "id_typo": 0.02,  # civil/business: one digit of a related person's ID mistyped
    "id_swap": 0.02,  # civil/business: two adjacent digits of a related person's ID swapped
    "id_cmnd_instead": 0.05,  # civil/business: the old CMND given instead of the personal ID
    "death_not_in_population": 0.03,  # a registered death the population record does not show
    "marriage_not_in_population": 0.03,  # a registered marriage, population still says unmarried
    "rep_name_mismatch": 0.03,  # business: legal representative's name differs from population
    "document_revoked_after_delivery": 0.05,  # document axis: a revoke for a delivered document
    "moved_out": 0.005,  # residents who moved to another province (seen leaving)
}

# Share of each ethnic group (2-digit codes, 01 Kinh) and religion (00 none) in a northern coastal province.
ETHNIC = (("01", 0.985), ("04", 0.006), ("02", 0.004), ("03", 0.002), ("06", 0.001), ("05", 0.002))
RELIGION = (("00", 0.88), ("01", 0.07), ("02", 0.045), ("10", 0.005))
BLOOD = (("00", 0.35), ("01", 0.14), ("02", 0.18), ("03", 0.04), ("04", 0.29))


def ts(moment: datetime) -> int:
    return int(moment.timestamp())


@dataclass
class Residents:
    """Column store of the people of the province (index = true person id ``pid``)."""

    seed: int
    as_of: int  # epoch seconds
    units: tuple[Unit, ...]  # communes of the province (124/2004), residence index space
    other_units: tuple[Unit, ...]  # communes of other provinces, for birth places and moves
    gender: np.ndarray  # int8: 1 male, 2 female
    birth: np.ndarray  # int64 epoch seconds (midnight, +07:00)
    personal_id: np.ndarray  # int64, 12 digits
    cmnd: np.ndarray  # int64, -1 when the person never had a 9-digit card
    family: np.ndarray  # int16 index into names.FAMILY
    middle: np.ndarray  # int16 index into names.MIDDLE[gender-1]
    given: np.ndarray  # int16 index into names.GIVEN[gender-1]
    ethnic: np.ndarray  # int8 index into ETHNIC
    religion: np.ndarray  # int8 index into RELIGION
    blood: np.ndarray  # int8 index into BLOOD
    marital: np.ndarray  # int8: 1 single, 2 married, 3 divorced, 4 widowed (true state)
    father: np.ndarray  # int64 pid or -1
    mother: np.ndarray  # int64 pid or -1
    spouse: np.ndarray  # int64 pid or -1
    married_at: np.ndarray  # int64 epoch seconds of the marriage (couples), else -1
    household: np.ndarray  # int64 pid of the household head
    residence: np.ndarray  # int32 index into units (permanent residence before any move)
    house_number: np.ndarray  # int32, for the address detail line
    birth_place: np.ndarray  # int32: >= 0 index into units, < 0 -> index -(k+1) into other_units
    hometown: np.ndarray  # int32, same encoding as birth_place
    status: np.ndarray  # int8: 0 living, 1 dead, 2 missing (true state)
    died: np.ndarray  # int64 epoch seconds of death, or -1
    moved_to: np.ndarray  # int32 index into other_units or -1
    moved_at: np.ndarray  # int64 epoch seconds or -1
    updated: np.ndarray  # int64 epoch seconds: last change (NgayCapNhat)
    data_faults: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.gender)

    def name_parts(self, pid: int) -> tuple[str, str, str]:
        """True (canonical) family, middle and given names of ``pid``."""
        g = int(self.gender[pid]) - 1
        return names.FAMILY[self.family[pid]], names.MIDDLE[g][self.middle[pid]], names.GIVEN[g][self.given[pid]]

    def full_name(self, pid: int) -> str:
        return names.full_name(*self.name_parts(pid))

    def full_names(self, pids: np.ndarray) -> list[str]:
        """Canonical full names of many people at once (the hot path of rendering a page)."""
        family, middle, given = names.FAMILY, names.MIDDLE, names.GIVEN
        return [f"{family[f]} {middle[g][m]} {given[g][n]}" for f, m, n, g in zip(
            self.family[pids].tolist(), self.middle[pids].tolist(), self.given[pids].tolist(),
            (self.gender[pids] - 1).tolist())]

    def truth_table(self) -> pa.Table:
        """The people as they truly are, for the ground truth's ``persons`` table."""
        everyone = np.arange(self.n)
        family, middle, given = names.FAMILY, names.MIDDLE, names.GIVEN

        def keys(column: np.ndarray) -> pa.Array:
            return pa.array([f"P{p:07d}" if p >= 0 else None for p in column.tolist()], pa.string())

        def moments(column: np.ndarray, sentinel: bool = True) -> pa.Array:
            """Epoch seconds as timestamps; with ``sentinel``, -1 means "never" (null)."""
            missing = column == -1 if sentinel else None
            return pa.array(column.astype("datetime64[s]"), mask=missing).cast(
                pa.timestamp("s", tz="Asia/Ho_Chi_Minh"))

        home = np.where(self.moved_to >= 0, -1 - self.moved_to, self.residence)
        return pa.table({
            "person": keys(everyone),
            "personal_id": pa.array([f"{v:012d}" for v in self.personal_id.tolist()]),
            "cmnd": pa.array([f"{v:09d}" if v >= 0 else None for v in self.cmnd.tolist()], pa.string()),
            "family_name": pa.array([family[i] for i in self.family.tolist()]),
            "middle_name": pa.array([middle[g - 1][i] for g, i in zip(self.gender.tolist(), self.middle.tolist())]),
            "given_name": pa.array([given[g - 1][i] for g, i in zip(self.gender.tolist(), self.given.tolist())]),
            "gender": pa.array(self.gender),
            "birth": moments(self.birth, sentinel=False),
            "status": pa.array(self.status),
            "died": moments(self.died),
            "marital": pa.array(self.marital),
            "father": keys(self.father),
            "mother": keys(self.mother),
            "spouse": keys(self.spouse),
            "household_head": keys(self.household),
            "ward_code": pa.array([self.unit(int(u)).ward_code for u in home.tolist()]),
            "province_code": pa.array([self.unit(int(u)).province_code for u in home.tolist()]),
            "moved_at": moments(self.moved_at),
        })

    def id_text(self, pid: int) -> str:
        return f"{int(self.personal_id[pid]):012d}"

    def cmnd_text(self, pid: int) -> str:
        value = int(self.cmnd[pid])
        return f"{value:09d}" if value >= 0 else ""

    def unit(self, index: int) -> Unit:
        return self.units[index] if index >= 0 else self.other_units[-index - 1]

    def unit_2025(self, unit: Unit) -> Unit | None:
        return legacy_to_2025(unit.province_code).get(unit.ward_code)


def generate_residents(n: int, seed: int = 0, as_of: datetime = DEFAULT_AS_OF,
                       data_faults: dict[str, float] | None = None) -> Residents:
    """Generate ``n`` residents deterministically (same arguments, same people)."""
    if not 1 <= n <= 10_000_000:
        raise ValueError("residents must be between 1 and 10,000,000")
    rates = {**DEFAULT_DATA_FAULTS, **(data_faults or {})}
    rng = np.random.default_rng([seed, 31])
    now = ts(as_of)
    day = 86_400
    year = 365.25 * day
    units = legacy_units(PROVINCE)
    other_units = tuple(u for code in OTHER_PROVINCES for u in legacy_units(code))

    gender = np.where(rng.random(n) < 0.512, 1, 2).astype(np.int8)
    # Age pyramid: roughly flat to 40, then thinning; nobody older than 100.
    age_years = np.minimum(rng.gamma(shape=2.2, scale=17.0, size=n), 99.9)
    birth = ((now - age_years * year) // day * day - 7 * 3600).astype(np.int64)
    birth_year = _years(birth)

    # Couples: the i-th eligible man (by age) marries the i-th eligible woman, so ages match.
    age = (now - birth) / year
    p_married = np.clip((age - 20) / 12, 0, 0.88)
    wants = rng.random(n) < p_married
    men = np.flatnonzero(wants & (gender == 1) & (age >= 22))
    women = np.flatnonzero(wants & (gender == 2) & (age >= 20))
    k = min(len(men), len(women))
    men, women = men[np.argsort(birth[men], kind="stable")][:k], women[np.argsort(birth[women], kind="stable")][:k]
    spouse = np.full(n, -1, np.int64)
    spouse[men], spouse[women] = women, men
    younger_birth = np.maximum(birth[men], birth[women])
    marry_age = 20 + rng.gamma(2.0, 2.5, size=k)
    married_at_c = younger_birth + marry_age * year
    # Couples younger than the drawn age married at some point between 20 and today, not all yesterday.
    late = married_at_c >= now - day
    earliest = younger_birth[late] + 20 * year
    married_at_c[late] = earliest + rng.random(int(late.sum())) * np.maximum(now - day - earliest, 0)
    married_at_c = married_at_c.astype(np.int64)
    married_at = np.full(n, -1, np.int64)
    married_at[men] = married_at[women] = married_at_c

    # Children: each person is given a couple whose wife was 19-40 at the birth, if one exists.
    father = np.full(n, -1, np.int64)
    mother = np.full(n, -1, np.int64)
    order = np.argsort(birth[women], kind="stable")
    wives_sorted, wife_birth = women[order], birth[women][order]
    lo = np.searchsorted(wife_birth, birth - 40 * year)
    hi = np.searchsorted(wife_birth, birth - 19 * year)
    has = hi > lo
    pick = lo[has] + (rng.random(int(has.sum())) * (hi[has] - lo[has])).astype(np.int64)
    children = np.flatnonzero(has)
    mother[children] = wives_sorted[pick]
    father[children] = spouse[mother[children]]

    # Names: family names pass from father to child, oldest generation first.
    family = rng.choice(len(names.FAMILY), size=n, p=names.FAMILY_P).astype(np.int16)
    for threshold in np.sort(np.unique(birth_year // 10)):
        batch = children[birth_year[children] // 10 == threshold]
        family[batch] = family[father[batch]]
    middle = np.empty(n, np.int16)
    given = np.empty(n, np.int16)
    for g in (1, 2):
        idx = np.flatnonzero(gender == g)
        middle[idx] = rng.choice(len(names.MIDDLE[g - 1]), size=len(idx), p=names.MIDDLE_P[g - 1])
        given[idx] = rng.choice(len(names.GIVEN[g - 1]), size=len(idx), p=names.GIVEN_P[g - 1])

    # A few couples divorced: no spouse any more, each heads a household (children stay with the father).
    divorced_men = men[(rng.random(k) < 0.02)]
    divorced_women = spouse[divorced_men]
    spouse[divorced_men] = spouse[divorced_women] = -1
    married_at[divorced_men] = married_at[divorced_women] = -1

    # Households: a couple with their unmarried children under 25; everyone else heads their own.
    household = np.arange(n, dtype=np.int64)
    household[women] = np.where(spouse[women] >= 0, spouse[women], women)
    live_with_parents = (father >= 0) & (spouse < 0) & (age < 25)
    household[live_with_parents] = household[father[live_with_parents]]
    residence = rng.integers(0, len(units), size=n).astype(np.int32)
    residence = residence[household]
    house_number = rng.integers(1, 400, size=n).astype(np.int32)[household]

    # Birth places: mostly in the province; some born elsewhere (ID prefix follows the birth place).
    born_elsewhere = rng.random(n) < 0.12
    birth_place = residence.copy()
    birth_place[born_elsewhere] = -1 - rng.integers(0, len(other_units), size=int(born_elsewhere.sum()))
    hometown = np.where(rng.random(n) < 0.8, birth_place, residence).astype(np.int32)

    # Deaths in the civil registry's window, more likely with age.
    window_start = now - CIVIL_YEARS * year
    p_death = np.clip(0.0004 * np.exp(age / 11.0), 0, 0.6) * CIVIL_YEARS / 10
    dead = (rng.random(n) < p_death) & (age > 1)
    died = np.full(n, -1, np.int64)
    died[dead] = rng.integers(int(window_start), now - day, size=int(dead.sum()))
    died[dead] = np.maximum(died[dead], birth[dead] + day)
    status = np.where(dead, 1, 0).astype(np.int8)
    missing = (~dead) & (rng.random(n) < 0.0002)
    status[missing] = 2

    marital = np.where(spouse >= 0, 2, 1).astype(np.int8)
    marital[divorced_men] = marital[divorced_women] = 3
    widowed = (spouse >= 0) & (status[np.maximum(spouse, 0)] == 1) & ~dead
    marital[widowed] = 4

    # Moves out of the province, recent.
    moved = (rng.random(n) < rates["moved_out"]) & ~dead & (age >= 18)
    moved_to = np.full(n, -1, np.int32)
    moved_to[moved] = rng.integers(0, len(other_units), size=int(moved.sum()))
    moved_at = np.full(n, -1, np.int64)
    moved_at[moved] = rng.integers(int(window_start), now - day, size=int(moved.sum()))

    # Identity numbers: prefix from birth place, gender, century and year; unique serials.
    other_prov = np.array([int(u.province_code) for u in other_units], np.int64)
    bp_prov = np.where(birth_place >= 0, int(PROVINCE), other_prov[np.where(birth_place < 0, -birth_place - 1, 0)])
    century_digit = 2 * ((birth_year - 1900) // 100) + (gender - 1)
    prefix = bp_prov * 1_000 + century_digit * 100 + birth_year % 100
    serial = _unique_serials(rng, prefix)
    personal_id = prefix * 1_000_000 + serial
    cmnd = np.full(n, -1, np.int64)
    had_card = (birth_year < 2000) & (rng.random(n) < 0.75)
    cmnd[had_card] = 30_000_000 + rng.choice(70_000_000 - 1, size=int(had_card.sum()), replace=False)

    # Last change: some time in the last six years, or the latest event that touched the record.
    updated = rng.integers(now - int(6 * year), now - day, size=n).astype(np.int64)
    updated = np.maximum(updated, birth + 3 * day)
    updated = np.maximum(updated, np.where(dead, died + rng.integers(1, 15 * day, size=n), -1))
    updated = np.maximum(updated, np.where(moved, moved_at, -1))
    updated = np.maximum(updated, np.where(married_at >= window_start, married_at + 7 * day, -1))
    updated = np.minimum(updated, now - 1)

    return Residents(
        seed=seed, as_of=now, units=units, other_units=other_units, gender=gender, birth=birth,
        personal_id=personal_id, cmnd=cmnd, family=family, middle=middle, given=given,
        ethnic=_pick(rng, ETHNIC, n), religion=_pick(rng, RELIGION, n), blood=_pick(rng, BLOOD, n),
        marital=marital, father=father, mother=mother, spouse=spouse, married_at=married_at,
        household=household, residence=residence, house_number=house_number, birth_place=birth_place,
        hometown=hometown, status=status, died=died, moved_to=moved_to, moved_at=moved_at, updated=updated,
        data_faults=rates,
    )


def _years(epoch_seconds: np.ndarray) -> np.ndarray:
    shifted = (epoch_seconds + 7 * 3600).astype("datetime64[s]")
    return shifted.astype("datetime64[Y]").astype(np.int64) + 1970


def _pick(rng: np.random.Generator, table: tuple[tuple[str, float], ...], n: int) -> np.ndarray:
    p = np.array([w for _, w in table])
    return rng.choice(len(table), size=n, p=p / p.sum()).astype(np.int8)


def _unique_serials(rng: np.random.Generator, prefix: np.ndarray) -> np.ndarray:
    """Six-digit serials, unique within each ID prefix (so every personal ID is unique)."""
    n = len(prefix)
    serial = rng.integers(0, 1_000_000, size=n)
    for _ in range(50):
        key = prefix * 1_000_000 + serial
        _, first = np.unique(key, return_index=True)
        clash = np.ones(n, bool)
        clash[first] = False
        if not clash.any():
            return serial
        serial[clash] = rng.integers(0, 1_000_000, size=int(clash.sum()))
    raise RuntimeError("could not draw unique ID serials")
