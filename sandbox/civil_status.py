"""The civil-status registry (``national-systems.md`` §2) over REST/JSON: births, deaths, marriages.

:class:`CivilRegistry` is what the Ministry of Justice's electronic registry holds for the province:
a record for every birth (``KS``) and marriage (``KH``) of the last ``CIVIL_YEARS`` and every death
(``KT``) of the residents, derived deterministically from the residents and the seed. The registry's
data faults (names without diacritics, NFD or old tone placement, a related person's ID mistyped,
swapped or replaced by the old CMND, 19/2025 address codes) are drawn per record up front and written
to the ground truth, together with every person each record names, so a record served at any time
is exactly what the truth describes.

Lists (``dsHoSoDangKy``) are per day of ``ngayCapNhat``, ordered by (``ngayCapNhat``, ``id``) and paged
by number. A record updated while a client pages (``concurrent_update``) leaves its day, which shifts
the later entries of that day, and joins the end of today's list; the day's ``tongSo`` changes, so a
client that re-reads a day whose total moved, and reads up to today, loses nothing.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain
from typing import Any

import numpy as np
import orjson

from hub.admin_units import legacy_units, units_2025
from sandbox import names
from sandbox.agencies import PROVINCE, agencies
from sandbox.auth import TokenIssuer
from sandbox.faults import RECORD_FAULTS, RESPONSE_FAULTS
from sandbox.ground_truth import GroundTruth, person_key
from sandbox.province import CIVIL_YEARS, ETHNIC, REFORM_2025, Residents, ts
from sandbox.rest import RestCall, RestSystem
from sandbox.service import ServiceError, SystemRuntime
from schemas import timefmt
from schemas.contracts import json_validator

SYSTEM = "civil"
MODULES = ("KS", "KT", "KH")
API = "/apiHoTichTuPhap"
DAY = 86_400
YEAR = 365.25 * DAY
_TZ = 7 * 3600
OFFICE_HOURS = (7 * 3600 + 30 * 60, 17 * 3600)  # registrations happen while the office is open
REGISTRATION_DELAY_DAYS = {"KS": (1, 60), "KT": (1, 15), "KH": (0, 0)}  # a marriage is its registration
BOOK_PAGES = 200
SUPERSEDED_SHARE = 0.02  # trangThai 2: replaced by a corrected record with a new id
REVOKED_SHARE = 0.003  # trangThai 3
KS_FATHER_REQUESTS = 0.55  # share of births the father registers when both parents can

NO_DIACRITICS, NFD, OLD_TONE, UPPER = 1, 2, 4, 8
#: Name faults in draw order; upper case is drawn but not recorded (every consumer folds case).
NAME_FAULTS = ((NO_DIACRITICS, "name_no_diacritics"), (NFD, "name_nfd"), (OLD_TONE, "name_old_tone"),
               (UPPER, "name_upper"))
RECORDED_NAME_FAULTS = NAME_FAULTS[:3]
PERSONAL_ID, OLD_CMND = "1", "2"  # LoaiGiayToTuyThan (§2 conv.)
STAND_IN = "Người được ủy quyền"

#: Faults that make sense per operation: record faults only where a paged list is served.
LIST_FAULTS = frozenset(RESPONSE_FAULTS) | frozenset(RECORD_FAULTS)
LOOKUP_FAULTS = frozenset(RESPONSE_FAULTS)

HEADER = ("id", "module", "maDonVi", "ngayDangKy", "soDangKy", "quyenSo", "trangSo", "ngayCapNhat", "trangThai")
FIELDS: dict[str, tuple[str, ...]] = {
    "KS": HEADER + (
        "soDinhDanh", "nksHoTen", "nksGioiTinh", "nksNgaySinh", "nksNoiSinh", "nksQueQuan", "nksDanToc", "nksQuocTich",
        "meHoTen", "meNgaySinh", "meSoDDCN", "meDanToc", "meQuocTich", "meNoiCuTru",
        "chaHoTen", "chaNgaySinh", "chaSoDDCN", "chaDanToc", "chaQuocTich", "chaNoiCuTru",
        "nycHoTen", "nycQuanHe", "nycSoDDCN"),
    "KT": HEADER + (
        "nktHoTen", "nktGioiTinh", "nktNgaySinh", "nktLoaiGiayToTuyThan", "nktSoGiayToTuyThan", "nktNgayChet",
        "nktGioPhutChet", "nktNoiChet", "nktNguyenNhanChet", "gbtLoai", "gbtSo", "gbtNgay",
        "nycHoTen", "nycQuanHe", "nycSoDDCN"),
    "KH": HEADER + tuple(f"{side}{name}" for side in ("chong", "vo") for name in (
        "HoTen", "NgaySinh", "DanToc", "QuocTich", "NoiCuTru", "LoaiGiayToTuyThan", "SoGiayToTuyThan")),
}


@dataclass(frozen=True)
class Slot:
    """A person a record names and the fields that carry them (``None``: the module has no such field)."""

    role: str
    name: str
    birth: str | None = None
    gender: str | None = None
    ethnic: str | None = None
    nationality: str | None = None
    id_number: str | None = None
    id_kind: str | None = None


@dataclass(frozen=True)
class PlaceSlot:
    """A place field: whose place it is and which resident column holds it."""

    field: str
    role: str
    column: str  # "birth_place", "hometown" or "residence"
    house: bool  # the detail line starts with the house number


SLOTS: dict[str, tuple[Slot, ...]] = {
    "KS": (Slot("child", "nksHoTen", "nksNgaySinh", "nksGioiTinh", "nksDanToc", "nksQuocTich"),
           Slot("mother", "meHoTen", "meNgaySinh", None, "meDanToc", "meQuocTich", "meSoDDCN"),
           Slot("father", "chaHoTen", "chaNgaySinh", None, "chaDanToc", "chaQuocTich", "chaSoDDCN"),
           Slot("requester", "nycHoTen", id_number="nycSoDDCN")),
    "KT": (Slot("deceased", "nktHoTen", "nktNgaySinh", "nktGioiTinh", id_number="nktSoGiayToTuyThan",
                id_kind="nktLoaiGiayToTuyThan"),
           Slot("requester", "nycHoTen", id_number="nycSoDDCN")),
    "KH": tuple(Slot(role, f"{side}HoTen", f"{side}NgaySinh", None, f"{side}DanToc", f"{side}QuocTich",
                     f"{side}SoGiayToTuyThan", f"{side}LoaiGiayToTuyThan")
                for role, side in (("husband", "chong"), ("wife", "vo"))),
}
PLACES: dict[str, tuple[PlaceSlot, ...]] = {
    "KS": (PlaceSlot("nksNoiSinh", "child", "birth_place", False), PlaceSlot("nksQueQuan", "child", "hometown", False),
           PlaceSlot("meNoiCuTru", "mother", "residence", True), PlaceSlot("chaNoiCuTru", "father", "residence", True)),
    "KT": (PlaceSlot("nktNoiChet", "deceased", "residence", True),),
    "KH": (PlaceSlot("chongNoiCuTru", "husband", "residence", True),
           PlaceSlot("voNoiCuTru", "wife", "residence", True)),
}
SUBJECT = {"KS": "child", "KT": "deceased", "KH": "husband"}  # whose district registers the record

DEATH_CAUSES = (("Bệnh già", 0.3), ("Bệnh tim mạch", 0.2), ("Ung thư", 0.15), ("Đột quỵ", 0.12),
                ("Bệnh đường hô hấp", 0.08), ("Tai nạn giao thông", 0.05), ("Đuối nước", 0.02),
                ("Tai nạn lao động", 0.02), ("Bệnh khác", 0.06))
DIED_AT_HOME = 0.6
#: gbtLoai (*conv.*): who issued the death notice; a death at home is notified by the commune.
NOTICE_TYPES = (("1", "Giấy báo tử do cơ sở y tế cấp"), ("2", "Giấy báo tử do Ủy ban nhân dân cấp xã cấp"))

# Catalogues (danhMuc). No dependency of the project lists countries or ethnic groups, so these are
# short hand lists: ISO 3166 alpha-2 with Vietnamese names, and the statistics office's 54 groups.
COUNTRIES = (("VN", "Việt Nam"), ("CN", "Trung Quốc"), ("KR", "Hàn Quốc"), ("JP", "Nhật Bản"), ("TW", "Đài Loan"),
             ("LA", "Lào"), ("KH", "Campuchia"), ("TH", "Thái Lan"), ("SG", "Xinh-ga-po"), ("MY", "Ma-lai-xi-a"),
             ("PH", "Phi-líp-pin"), ("IN", "Ấn Độ"), ("US", "Hoa Kỳ"), ("CA", "Ca-na-đa"), ("AU", "Ô-xtrây-li-a"),
             ("GB", "Vương quốc Anh"), ("FR", "Pháp"), ("DE", "Đức"), ("RU", "Liên bang Nga"))
ETHNIC_GROUPS = tuple((f"{k:02d}", name) for k, name in enumerate((
    "Kinh", "Tày", "Thái", "Hoa", "Khơ-me", "Mường", "Nùng", "Mông", "Dao", "Gia-rai", "Ngái", "Ê-đê", "Ba-na",
    "Xơ-đăng", "Sán Chay", "Cơ-ho", "Chăm", "Sán Dìu", "Hrê", "Mnông", "Ra-glai", "Xtiêng", "Bru-Vân Kiều", "Thổ",
    "Giáy", "Cơ-tu", "Gié-Triêng", "Mạ", "Khơ-mú", "Co", "Tà-ôi", "Chơ-ro", "Kháng", "Xinh-mun", "Hà Nhì", "Chu-ru",
    "Lào", "La Chí", "La Ha", "Phù Lá", "La Hủ", "Lự", "Lô Lô", "Chứt", "Mảng", "Pà Thẻn", "Cơ Lao", "Cống",
    "Bố Y", "Si La", "Pu Péo", "Brâu", "Ơ-đu", "Rơ-măm"), start=1))
ID_DOCUMENTS = ((PERSONAL_ID, "Thẻ căn cước (số định danh cá nhân)"), (OLD_CMND, "Chứng minh nhân dân 9 số"),
                ("3", "Hộ chiếu"))


# -- small pure helpers ---------------------------------------------------------------------------

def day_start(epoch: np.ndarray | int) -> np.ndarray | int:
    """Midnight (+07:00) of the day holding ``epoch``: lists and registrations go by local days."""
    return (epoch + _TZ) // DAY * DAY - _TZ


@lru_cache(maxsize=65_536)
def garble(name: str, flags: int) -> str:
    """The name as a registry with these faults stores it (one function for serving and for truth)."""
    if flags & NO_DIACRITICS:
        name = names.strip_diacritics(name)
    if flags & OLD_TONE:
        name = names.old_tone_placement(name)
    if flags & UPPER:
        name = name.upper()
    if flags & NFD:
        name = names.to_nfd(name)
    return name


def mistype(digits: str, position: int, delta: int) -> str:
    """One digit replaced by another (``delta`` in 1..9 so it always changes)."""
    return digits[:position] + str((int(digits[position]) + delta) % 10) + digits[position + 1:]


def swap_adjacent(digits: str, position: int) -> str | None:
    """Two neighbouring different digits swapped, searching from ``position``; None if all are equal."""
    for k in range(len(digits) - 1):
        p = (position + k) % (len(digits) - 1)
        if digits[p] != digits[p + 1]:
            return digits[:p] + digits[p + 1] + digits[p] + digits[p + 2:]
    return None


def moment_column(epochs: np.ndarray) -> list[str]:
    """dd/MM/yyyy HH:mm:ss for a column of epoch seconds (a 1000-entry page without 1000 datetimes)."""
    iso = np.datetime_as_string((np.asarray(epochs, np.int64) + _TZ).astype("datetime64[s]"))
    return [f"{s[8:10]}/{s[5:7]}/{s[0:4]} {s[11:19]}" for s in iso.tolist()]


def vn_day(epoch: int) -> str:
    return timefmt.render(epoch, timefmt.VN_DAY)


def district_agencies() -> dict[str, str]:
    """District code → code of that district's People's Committee (who registers civil status)."""
    by_name = {a.name: a.code for a in agencies() if a.in_province}
    return {u.district_code: by_name[f"Ủy ban nhân dân {u.district}"] for u in legacy_units(PROVINCE)}


# -- the registry ---------------------------------------------------------------------------------

@dataclass
class Table:
    """One module's rows: one per registration plus a corrected row for each superseded one."""

    module: str
    event: np.ndarray  # row -> registration index (a corrected row shares its original's)
    people: dict[str, np.ndarray]  # role -> pid per row, -1 when the record names nobody
    relation: list[str]  # per registration: the requester's relation to the subject ('' if none)
    extra: dict[str, np.ndarray]  # module-specific per-registration draws
    reg: np.ndarray  # per registration: moment of registration
    book: list[tuple[str, str, str]]  # per registration: soDangKy, quyenSo, trangSo
    agency: list[str]  # per registration: maDonVi
    ids: np.ndarray
    written: np.ndarray  # row: when the row was written (registration or correction)
    upd: np.ndarray  # row: ngayCapNhat as generated
    state: np.ndarray  # row: trangThai
    flags: np.ndarray  # row: name-fault bits
    modern: np.ndarray  # row: places in 19/2025 codes
    id_faults: dict[str, dict[int, tuple[str, str]]] = field(default_factory=dict)  # field -> row -> (fault, served)


class DayIndex:
    """Rows ordered by (ngayCapNhat, id), with the rows updated live kept apart at the end.

    A row updated live gets a moment after every other one, so it joins the end of today's list
    and never shifts a list a client has already paged past.
    """

    def __init__(self, upd: np.ndarray, ids: np.ndarray, upd_text: list[str]) -> None:
        self.order = np.lexsort((ids, upd))
        self.sorted_upd = upd[self.order]
        self.moved = np.zeros(len(upd), bool)  # by position in ``order``
        self.position = np.empty(len(upd), np.int64)
        self.position[self.order] = np.arange(len(upd))
        self.upd_text = upd_text
        self.live_moments: list[int] = []
        self.live_rows: list[int] = []
        self.live: dict[int, tuple[int, str]] = {}  # row -> (moment, text)

    def bounds(self, start: int) -> tuple[int, int]:
        lo = int(np.searchsorted(self.sorted_upd, start, "left"))
        return lo, int(np.searchsorted(self.sorted_upd, start + DAY, "left"))

    def day(self, start: int) -> list[int]:
        """Rows whose current ngayCapNhat falls on the day starting at ``start``, in list order."""
        lo, hi = self.bounds(start)
        rows = self.order[lo:hi][~self.moved[lo:hi]].tolist()
        a, b = bisect_left(self.live_moments, start), bisect_left(self.live_moments, start + DAY)
        return rows + self.live_rows[a:b]

    def moment(self, row: int) -> str:
        live = self.live.get(row)
        return live[1] if live else self.upd_text[row]

    def move(self, row: int, moment: int) -> None:
        self.moved[self.position[row]] = True
        self.live[row] = (moment, moment_column(np.array([moment]))[0])
        self.live_moments.append(moment)
        self.live_rows.append(row)


class CivilRegistry:
    """The registry's records for the province, their truth, and the per-day change lists."""

    def __init__(self, residents: Residents, truth: GroundTruth, seed: int = 0) -> None:
        self.r = residents
        self.window_start = int(residents.as_of - CIVIL_YEARS * YEAR)
        self._agency = district_agencies()
        self._lock = threading.Lock()
        self._last_moment = 0
        self._cache: dict[tuple[str, int], orjson.Fragment] = {}
        rng = np.random.default_rng([seed, 20])
        self.tables = {module: self._build(module, rng) for module in MODULES}
        self.by_id = {m: dict(zip(t.ids.tolist(), range(len(t.ids)))) for m, t in self.tables.items()}
        self.index = {m: DayIndex(t.upd, t.ids, moment_column(t.upd)) for m, t in self.tables.items()}
        for table in self.tables.values():
            self._record_truth(table, truth)

    # -- generation: registrations ---------------------------------------------------------------
    def _build(self, module: str, rng: np.random.Generator) -> Table:
        people, moment = self._events(module)
        reg = self._registration(module, moment, rng)
        relation, extra = self._details(module, people, reg, rng)
        return self._rows(module, people, reg, relation, extra, rng)

    def _events(self, module: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Who each registration is about, and when the event happened."""
        r = self.r
        if module == "KS":
            child = np.flatnonzero(r.birth >= self.window_start)
            return {"child": child, "mother": r.mother[child], "father": r.father[child]}, r.birth[child]
        if module == "KT":
            dead = np.flatnonzero(r.died >= 0)
            return {"deceased": dead}, r.died[dead]
        husband = np.flatnonzero((r.gender == 1) & (r.spouse >= 0) & (r.married_at >= self.window_start))
        return {"husband": husband, "wife": r.spouse[husband]}, r.married_at[husband]

    def _registration(self, module: str, moment: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A few days after the event, in office hours, never after the end of generated history."""
        low, high = REGISTRATION_DELAY_DAYS[module]
        delay = rng.integers(low, high + 1, size=len(moment)) * DAY
        last_day = day_start(self.r.as_of - 1)
        reg_day = np.minimum(day_start(moment) + delay, last_day)
        return reg_day + rng.integers(*OFFICE_HOURS, size=len(moment))

    def _details(self, module: str, people: dict[str, np.ndarray], reg: np.ndarray,
                 rng: np.random.Generator) -> tuple[list[str], dict[str, np.ndarray]]:
        """The requester and the module's own facts (cause and place of death, notice)."""
        if module == "KS":
            requester, relation = self._birth_requesters(people, reg, rng.random(len(reg)))
            people["requester"] = requester
            return relation, {}
        if module == "KT":
            requester, relation = self._death_requesters(people["deceased"], reg)
            people["requester"] = requester
            return relation, self._death_facts(people["deceased"], reg, rng)
        return [""] * len(reg), {}

    def _death_facts(self, dead: np.ndarray, reg: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        n = len(dead)
        died = self.r.died[dead]
        weights = np.array([w for _, w in DEATH_CAUSES])
        span_days = (day_start(reg) - day_start(died)) // DAY + 1
        notice_day = day_start(died) + (rng.random(n) * span_days).astype(np.int64) * DAY
        return {"died": died, "at_home": rng.random(n) < DIED_AT_HOME,
                "cause": rng.choice(len(DEATH_CAUSES), size=n, p=weights / weights.sum()),
                "notice_no": rng.integers(1, 2_000, size=n), "notice_day": np.minimum(notice_day, day_start(reg))}

    # -- generation: requesters ------------------------------------------------------------------
    def _can_request(self, pid: int, at: int) -> bool:
        """Alive and adult at ``at``: who may file a registration."""
        r = self.r
        return pid >= 0 and (r.died[pid] < 0 or r.died[pid] > at) and r.birth[pid] <= at - 18 * YEAR

    def _birth_requesters(self, people: dict[str, np.ndarray], reg: np.ndarray,
                          u: np.ndarray) -> tuple[np.ndarray, list[str]]:
        out, relation = np.full(len(reg), -1, np.int64), []
        for j, (child, mother, father) in enumerate(zip(*(people[k].tolist() for k in ("child", "mother", "father")))):
            options = [(father, "Cha"), (mother, "Mẹ")]
            if u[j] >= KS_FATHER_REQUESTS:
                options.reverse()
            out[j], rel = self._first_able(options, child, int(reg[j]))
            relation.append(rel)
        return out, relation

    def _death_requesters(self, dead: np.ndarray, reg: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Spouse, else a grown child, else a parent, else someone the family authorised."""
        r = self.r
        parents = np.concatenate([r.father, r.mother])
        by_parent = np.argsort(parents, kind="stable")
        sorted_parents = parents[by_parent]
        out, relation = np.full(len(dead), -1, np.int64), []
        for j, pid in enumerate(dead.tolist()):
            at = int(reg[j])
            lo, hi = np.searchsorted(sorted_parents, [pid, pid + 1])
            children = [int(k) % r.n for k in by_parent[lo:hi]]
            spouse = int(r.spouse[pid])
            options = [(spouse, "Vợ" if spouse >= 0 and r.gender[spouse] == 2 else "Chồng")]
            options += [(c, "Con") for c in children]
            options += [(int(r.father[pid]), "Cha"), (int(r.mother[pid]), "Mẹ")]
            out[j], rel = self._first_able(options, pid, at)
            relation.append(rel)
        return out, relation

    def _first_able(self, options: list[tuple[int, str]], subject: int, at: int) -> tuple[int, str]:
        """The first relative who can file, else a stand-in the family authorised."""
        found = next(((p, rel) for p, rel in options if self._can_request(p, at)), None)
        return found if found is not None else (self._stand_in(subject, at), STAND_IN)

    def _stand_in(self, pid: int, at: int) -> int:
        """An adult of the same commune, a different one for each subject (no relative can file)."""
        r = self.r
        same = np.flatnonzero(r.residence == r.residence[pid]).tolist()
        start = pid % len(same)
        for candidate in chain(same[start:], same[:start], range(r.n)):
            if candidate != pid and self._can_request(candidate, at):
                return candidate
        return -1

    # -- generation: rows, ids, books --------------------------------------------------------------
    def _rows(self, module: str, people: dict[str, np.ndarray], reg: np.ndarray, relation: list[str],
              extra: dict[str, np.ndarray], rng: np.random.Generator) -> Table:
        """Registrations become rows; a superseded one gets a corrected twin written later."""
        n, as_of = len(reg), self.r.as_of
        entered = np.minimum(reg + rng.integers(300, 8 * 3600, size=n), as_of - 1)
        u = rng.random(n)
        state = np.where(u < SUPERSEDED_SHARE, 2, np.where(u < SUPERSEDED_SHARE + REVOKED_SHARE, 3, 1))
        later = entered + (rng.random(n) * (as_of - 1 - entered)).astype(np.int64)
        corrected = np.flatnonzero(state == 2)
        event = np.concatenate([np.arange(n), corrected])
        written = np.concatenate([reg, later[corrected]])
        upd = np.concatenate([np.where(state == 1, entered, later), later[corrected]])
        rows = len(event)
        order = np.lexsort((np.arange(rows), written))
        ids = np.empty(rows, np.int64)
        ids[order] = int(rng.integers(10_000_000, 90_000_000)) + np.cumsum(rng.integers(1, 4, size=rows))
        agency = [self._agency[self.r.unit(int(p)).district_code] for p in self.r.residence[people[SUBJECT[module]]]]
        table = Table(
            module=module, event=event, people={role: pids[event] for role, pids in people.items()},
            relation=relation, extra=extra, reg=reg, book=self._books(agency, reg), agency=agency, ids=ids,
            written=written, upd=upd, state=np.concatenate([state, np.ones(len(corrected), np.int64)]),
            flags=self._name_flags(rows, rng),
            modern=(written >= ts(REFORM_2025)) & (rng.random(rows) < self.r.data_faults["address_2025_codes"]))
        for slot in SLOTS[module]:
            if slot.id_number:
                table.id_faults[slot.id_number] = self._id_faults(table.people[slot.role], rng)
        return table

    def _books(self, agency: list[str], reg: np.ndarray) -> list[tuple[str, str, str]]:
        """soDangKy, quyenSo, trangSo: numbered per agency and year in order of registration."""
        years = [int(day[:4]) for day in timefmt.day_column(reg)]
        counters: dict[tuple[str, int], int] = {}
        out: list[tuple[str, str, str]] = [("", "", "")] * len(reg)
        for j in np.lexsort((np.arange(len(reg)), reg)).tolist():
            key = (agency[j], years[j])
            rank = counters.get(key, 0)
            counters[key] = rank + 1
            out[j] = (str(rank + 1), f"{rank // BOOK_PAGES + 1:02d}/{years[j]}", str(rank % BOOK_PAGES + 1))
        return out

    def _name_flags(self, rows: int, rng: np.random.Generator) -> np.ndarray:
        flags = np.zeros(rows, np.int8)
        for bit, fault in NAME_FAULTS:
            flags[rng.random(rows) < self.r.data_faults[fault]] |= bit
        return flags

    def _id_faults(self, pids: np.ndarray, rng: np.random.Generator) -> dict[int, tuple[str, str]]:
        """Per row, the ID-number fault drawn for one field, and the number then served."""
        r, rates = self.r, self.r.data_faults
        u, position, delta = rng.random(len(pids)), rng.integers(0, 12, len(pids)), rng.integers(1, 10, len(pids))
        edges = np.cumsum([rates["id_cmnd_instead"], rates["id_typo"], rates["id_swap"]])
        out: dict[int, tuple[str, str]] = {}
        for row in np.flatnonzero((pids >= 0) & (u < edges[-1])).tolist():
            pid, true = int(pids[row]), r.id_text(int(pids[row]))
            if u[row] < edges[0]:
                served, fault = (r.cmnd_text(pid) or None), "id_cmnd_instead"
            elif u[row] < edges[1]:
                served, fault = mistype(true, int(position[row]), int(delta[row])), "id_typo"
            else:
                served, fault = swap_adjacent(true, int(position[row]) % 11), "id_swap"
            if served is not None:
                out[row] = (fault, served)
        return out

    # -- ground truth ----------------------------------------------------------------------------
    def _record_truth(self, t: Table, truth: GroundTruth) -> None:
        keys = [str(i) for i in t.ids.tolist()]
        for slot in SLOTS[t.module]:
            pids = t.people[slot.role]
            rows = np.flatnonzero(pids >= 0).tolist()
            truth.record_many(SYSTEM, t.module, [keys[i] for i in rows], slot.role, "person",
                              [person_key(int(pids[i])) for i in rows])
            self._name_truth(t, slot, rows, keys, truth)
            if slot.id_number:
                for row, (fault, served) in t.id_faults[slot.id_number].items():
                    truth.anomaly(SYSTEM, t.module, keys[row], slot.id_number, fault,
                                  self.r.id_text(int(pids[row])), served)
        for place in PLACES[t.module]:
            self._place_truth(t, place, keys, truth)

    def _name_truth(self, t: Table, slot: Slot, rows: list[int], keys: list[str], truth: GroundTruth) -> None:
        """An anomaly for each name fault that shows in the served text (no NFD of a stripped name)."""
        pids = t.people[slot.role]
        for row in rows:
            flags = int(t.flags[row])
            if not flags & (NO_DIACRITICS | NFD | OLD_TONE):
                continue
            true = self.r.full_name(int(pids[row]))
            served = garble(true, flags)
            for bit, fault in RECORDED_NAME_FAULTS:
                if flags & bit and garble(true, flags & ~bit) != served:
                    truth.anomaly(SYSTEM, t.module, keys[row], slot.name, fault, true, served)

    def _place_truth(self, t: Table, place: PlaceSlot, keys: list[str], truth: GroundTruth) -> None:
        pids = t.people[place.role]
        for row in np.flatnonzero(t.modern & (pids >= 0)).tolist():
            unit = self.r.unit(int(getattr(self.r, place.column)[pids[row]]))
            new = self.r.unit_2025(unit)
            if new is not None:
                truth.anomaly(SYSTEM, t.module, keys[row], place.field, "address_2025_codes", unit.ward_code,
                              new.ward_code)

    # -- serving ---------------------------------------------------------------------------------
    def row(self, module: str, record_id: int) -> int | None:
        return self.by_id[module].get(record_id)

    def ids(self, module: str) -> set[int]:
        return set(self.by_id[module])

    def fragment(self, module: str, row: int) -> orjson.Fragment:
        """The record as JSON bytes, rendered once (a 100-record batch costs a dictionary lookup each)."""
        key = (module, row)
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= 200_000:
                self._cache.clear()  # bounded: a full sync of a big province reads each record once
            cached = self._cache[key] = orjson.Fragment(orjson.dumps(self.render(module, row)))
        return cached

    def render(self, module: str, row: int) -> dict[str, Any]:
        """The record as served now: the fields of §2 in their order, every fault as drawn."""
        t = self.tables[module]
        event = int(t.event[row])
        so, quyen, trang = t.book[event]
        values: dict[str, Any] = {
            "id": int(t.ids[row]), "module": module, "maDonVi": t.agency[event],
            "ngayDangKy": vn_day(int(t.reg[event])), "soDangKy": so, "quyenSo": quyen, "trangSo": trang, "ngayCapNhat": self.index[module].moment(row),
            "trangThai": int(t.state[row])}
        for slot in SLOTS[module]:
            values.update(self._person(t, slot, row))
        for place in PLACES[module]:
            values[place.field] = self._place(t, place, row)
        values.update(self._module_fields(t, row, event))
        return {name: values[name] for name in FIELDS[module]}

    def _person(self, t: Table, slot: Slot, row: int) -> dict[str, str]:
        """The slot's fields as served; all empty when the record names nobody there (unknown father)."""
        pid = int(t.people[slot.role][row])
        values = self._person_values(t, slot, row, pid) if pid >= 0 else ("",) * 7
        names_ = (slot.name, slot.birth, slot.gender, slot.ethnic, slot.nationality, slot.id_number, slot.id_kind)
        return {name: value for name, value in zip(names_, values) if name is not None}

    def _person_values(self, t: Table, slot: Slot, row: int, pid: int) -> tuple[str, ...]:
        r = self.r
        fault = t.id_faults[slot.id_number].get(row) if slot.id_number else None
        return (garble(r.full_name(pid), int(t.flags[row])), vn_day(int(r.birth[pid])), str(int(r.gender[pid])),
                ETHNIC[r.ethnic[pid]][0], "VN", fault[1] if fault else r.id_text(pid),
                OLD_CMND if fault and fault[0] == "id_cmnd_instead" else PERSONAL_ID)

    def _place(self, t: Table, place: PlaceSlot, row: int) -> dict[str, str]:
        pid = int(t.people[place.role][row])
        if pid < 0:
            return {"maTinh": "", "maHuyen": "", "maXa": "", "dcChiTiet": ""}
        r = self.r
        unit = r.unit(int(getattr(r, place.column)[pid]))
        new = r.unit_2025(unit) if t.modern[row] else None
        if new is not None:  # 19/2025 codes: no district level
            codes, where = (new.province_code, "", new.ward_code), new.full_name
        else:
            codes, where = (unit.province_code, unit.district_code, unit.ward_code), unit.full_name
        lead = f"Số {int(r.house_number[pid])}" if place.house else ""
        if place.field == "nktNoiChet" and not t.extra["at_home"][int(t.event[row])]:
            lead = "Cơ sở y tế"
        return {"maTinh": codes[0], "maHuyen": codes[1], "maXa": codes[2],
                "dcChiTiet": f"{lead}, {where}" if lead else where}

    def _module_fields(self, t: Table, row: int, event: int) -> dict[str, str]:
        if t.module == "KS":
            return {"soDinhDanh": self.r.id_text(int(t.people["child"][row])), "nycQuanHe": t.relation[event]}
        if t.module == "KT":
            x = t.extra
            died = int(x["died"][event])
            return {"nktNgayChet": vn_day(died), "nktGioPhutChet": timefmt.render(died, "%H:%M"),
                    "nktNguyenNhanChet": DEATH_CAUSES[int(x["cause"][event])][0],
                    "gbtLoai": NOTICE_TYPES[0 if not x["at_home"][event] else 1][0],
                    "gbtSo": f"{int(x['notice_no'][event])}/GBT", "gbtNgay": vn_day(int(x["notice_day"][event])),
                    "nycQuanHe": t.relation[event]}
        return {}

    # -- change lists ----------------------------------------------------------------------------
    def entries(self, module: str, rows: list[int]) -> list[dict[str, Any]]:
        t, index = self.tables[module], self.index[module]
        return [{"id": int(t.ids[row]), "maDonVi": t.agency[int(t.event[row])], "ngayCapNhat": index.moment(row)}
                for row in rows]

    def day(self, module: str, start: int) -> list[int]:
        with self._lock:
            return self.index[module].day(start)

    def update_now(self, module: str, row: int) -> None:
        """Record a correction of ``row`` now: it leaves its day's list and joins the end of today's."""
        with self._lock:
            if row in self.index[module].live:
                return
            self._last_moment = max(int(time.time()), self.r.as_of, self._last_moment + 1)
            self.index[module].move(row, self._last_moment)
            self._cache.pop((module, row), None)

    def touch_listed(self, module: str, start: int, offset: int, rng: np.random.Generator) -> int | None:
        """Update now one record a client paging ``start``'s list from ``offset`` has already been given.

        Those are the records of earlier days and the first ``offset`` of this day; a record already
        updated live is left alone (moving it again would shift today's list under a client).
        """
        index = self.index[module]
        with self._lock:
            lo, _ = index.bounds(start)
            listed_today = index.day(start)[:offset]
            pool = lo + len(listed_today)
            if pool == 0:
                return None
            k = int(rng.integers(0, pool))
            row = int(index.order[k]) if k < lo else listed_today[k - lo]
            if row in index.live:
                return None
            self._last_moment = max(int(time.time()), self.r.as_of, self._last_moment + 1)
            index.move(row, self._last_moment)
            self._cache.pop((module, row), None)
        return row


# -- the REST operations --------------------------------------------------------------------------

def error_body(error: ServiceError) -> dict[str, Any]:
    return {"status": 0, "errorCode": str(error.code), "errorDesc": error.name, "errorMessage": error.message}


def ok(data: Any) -> dict[str, Any]:
    return {"status": 1, "data": data}


class CivilStatusService:
    """The four operations of §2 bound to a registry, behind the shared REST shell."""

    def __init__(self, residents: Residents, runtime: SystemRuntime, truth: GroundTruth, seed: int,
                 issuer: TokenIssuer) -> None:
        self.registry = CivilRegistry(residents, truth, seed)
        self.rest = RestSystem(runtime, issuer, error_body)
        self._rng = np.random.default_rng([seed, 21])
        self._catalogues: dict[int, list[dict[str, str]]] = {}

    def routes(self) -> list:
        def op(name: str, handler, applicable: frozenset[str] = LOOKUP_FAULTS):
            return self.rest.route(f"{API}/{name}", handler, schema=json_validator("civil_status", name),
                                   applicable=applicable)

        return [self.rest.token_route(), op("dsHoSoDangKy", self.changed, LIST_FAULTS),
                op("traDanhSachHoSo", self.records), op("traHoSo", self.record), op("danhMuc", self.catalogue)]

    @staticmethod
    def _province(call: RestCall) -> None:
        province = call.body["maTinh"]
        if province != PROVINCE or province not in call.client.provinces:
            raise ServiceError(108, f"maTinh {province!r} is not a province this account may read")

    def changed(self, call: RestCall) -> dict[str, Any]:
        """dsHoSoDangKy: one page of the records of a module changed on a day."""
        self._province(call)
        body, registry = call.body, self.registry
        try:
            start = timefmt.parse(body["ngayCapNhat"], timefmt.VN_DAY)
        except ValueError:
            raise ServiceError(302, f"ngayCapNhat {body['ngayCapNhat']!r} is not a date dd/MM/yyyy") from None
        module, size = body["module"], body["soLuong"]
        offset = (body["trang"] - 1) * size
        if call.decision.has("concurrent_update"):
            registry.touch_listed(module, start, offset, self._rng)
        rows = registry.day(module, start)
        page = rows[offset:offset + size]
        if offset and call.decision.has("duplicate_record") and offset - 1 < len(rows):
            page = [rows[offset - 1], *page]
        return ok({"tongSo": len(rows), "ds": registry.entries(module, page)})

    def records(self, call: RestCall) -> dict[str, Any]:
        """traDanhSachHoSo: the records of up to 100 ids, unknown ids left out."""
        self._province(call)
        module, registry = call.body["module"], self.registry
        rows = (registry.row(module, i) for i in dict.fromkeys(call.body["dsMaHoSo"]))
        return ok([registry.fragment(module, row) for row in rows if row is not None])

    def record(self, call: RestCall) -> dict[str, Any]:
        """traHoSo: one record, or 201 RECORD_NOT_FOUND."""
        module, record_id = call.body["module"], call.body["maHoSo"]
        row = self.registry.row(module, record_id)
        if row is None:
            raise ServiceError(201, f"no {module} record with id {record_id}", http_status=404)
        return ok(self.registry.fragment(module, row))

    def catalogue(self, call: RestCall) -> dict[str, Any]:
        kind = call.body["loaiDanhMuc"]
        if kind not in self._catalogues:
            self._catalogues[kind] = catalogue(kind)
        return ok(self._catalogues[kind])


def catalogue(kind: int) -> list[dict[str, str]]:
    """danhMuc: 1 quốc tịch, 2 quốc gia, 3 dân tộc, 4 địa danh hành chính, 5 giấy tờ tùy thân."""
    if kind == 4:
        return admin_places()
    pairs = {1: COUNTRIES, 2: COUNTRIES, 3: ETHNIC_GROUPS, 5: ID_DOCUMENTS}[kind]
    return [{"ma": code, "ten": name} for code, name in pairs]


def admin_places() -> list[dict[str, str]]:
    """The province, its districts and communes (124/2004), then its communes under 19/2025.

    Both code sets are on the wire, and a 2025 commune code may equal an older commune's code, so
    communes are named in full (``Phường X, Quận Y, …``): the name tells the code set apart.
    """
    old, new = legacy_units(PROVINCE), units_2025(PROVINCE)
    out = [{"ma": PROVINCE, "ten": old[0].province}]
    out += [{"ma": code, "ten": name} for code, name in sorted({(u.district_code, u.district) for u in old})]
    return out + [{"ma": u.ward_code, "ten": u.full_name} for u in (*old, *new)]
