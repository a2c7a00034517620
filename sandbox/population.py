"""The National Population Database (``national-systems.md`` §1) over SOAP: 037, 033, DongBoCongDan.

:class:`PopulationRegistry` is what the database holds: the province's residents as the registry
records them, with the population-side data faults applied (a whole name in ``Ten``, NFD text, old
tone placement, upper case, 2025 address codes, a death or a marriage not recorded) and written to
the ground truth. Records are rendered to XML on request from the columns, a page at a time.

Paging (§1.3): order is (``NgayCapNhat``, ``SoDinhDanh``); the cursor is the key of the last record
returned. A record changed while a client pages gets a new ``NgayCapNhat`` after every existing one,
so it moves to the end of the order and is served again on a later page (at-least-once).
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from bisect import bisect_right
from functools import lru_cache

import numpy as np

from sandbox import names
from sandbox.ground_truth import GroundTruth, person_key
from sandbox.province import ETHNIC, RELIGION, BLOOD, REFORM_2025, Residents, ts
from sandbox.service import ServiceError, SystemRuntime
from sandbox.soap import Call, SoapEndpoint
from schemas import timefmt

DAN_NS = "http://dancuquocgia.bca"
NS1 = "http://www.mic.gov.vn/dancu/1.0"
SYSTEM = "population"
DATASET = "citizen"

ALL_IN_TEN, NFD, OLD_TONE, UPPER = 1, 2, 4, 8


def fold_name(text: str) -> str:
    """§1.1 name comparison: upper case, no diacritics (Đ→D), no spaces."""
    return "".join(names.strip_diacritics(text).upper().split())


class PopulationRegistry:
    """The population database's view of the residents, with paging state and live changes."""

    def __init__(self, residents: Residents, truth: GroundTruth, seed: int = 0) -> None:
        self.r = r = residents
        rng = np.random.default_rng([seed, 1])
        rates = r.data_faults
        n = r.n
        self._lock = threading.Lock()

        flags = np.zeros(n, np.int8)
        for bit, fault in ((ALL_IN_TEN, "name_all_in_ten"), (NFD, "name_nfd"), (OLD_TONE, "name_old_tone"),
                           (UPPER, "name_upper")):
            flags[rng.random(n) < rates[fault]] |= bit
        self.name_flags = flags
        self.addr_2025 = (r.updated >= ts(REFORM_2025)) & (rng.random(n) < rates["address_2025_codes"])

        # A death or a marriage the population record does not show yet.
        self.status = r.status.copy()
        self.marital = r.marital.copy()
        stale_death = (r.status == 1) & (rng.random(n) < rates["death_not_in_population"])
        self.status[stale_death] = 0
        recent_marriage = (r.married_at >= r.as_of - 3 * 365 * 86_400) & (r.spouse >= 0)
        stale_marriage = recent_marriage & (rng.random(n) < rates["marriage_not_in_population"])
        self.marital[stale_marriage] = 1
        self.stale_death = stale_death

        self.order = np.lexsort((r.personal_id, r.updated))
        self.sorted_updated = r.updated[self.order]
        self.sorted_ids = r.personal_id[self.order]
        self.touched = np.zeros(n, bool)
        self.live_updated: dict[int, int] = {}
        self.live_keys: list[tuple[int, int]] = []  # (updated, personal_id) in order of change
        self.live_pids: list[int] = []
        id_order = np.argsort(r.personal_id)
        self._ids_sorted, self._ids_pid = r.personal_id[id_order], id_order
        has_card = np.flatnonzero(r.cmnd >= 0)
        cmnd_order = has_card[np.argsort(r.cmnd[has_card])]
        self._cmnd_sorted, self._cmnd_pid = r.cmnd[cmnd_order], cmnd_order
        self._addresses = {}
        self._record_truth(truth, stale_death, stale_marriage)

    # -- ground truth -------------------------------------------------------------------------
    def _record_truth(self, truth: GroundTruth, stale_death: np.ndarray, stale_marriage: np.ndarray) -> None:
        r = self.r
        keys = [f"{v:012d}" for v in r.personal_id.tolist()]
        truth.record_many(SYSTEM, DATASET, keys, "subject", "person", [person_key(p) for p in range(r.n)])
        for role, column in (("father", r.father), ("mother", r.mother), ("spouse", r.spouse)):
            idx = np.flatnonzero(column >= 0)
            truth.record_many(SYSTEM, DATASET, [keys[i] for i in idx], role, "person",
                              [person_key(int(p)) for p in column[idx]])
        for bit, anomaly in ((ALL_IN_TEN, "name_all_in_ten"), (NFD, "name_nfd"), (OLD_TONE, "name_old_tone")):
            idx = [int(i) for i in np.flatnonzero(self.name_flags & bit)]
            true = [r.full_name(i) for i in idx]
            served = [" ".join(p for p in self.served_name(i) if p) for i in idx]
            keep = [j for j, (a, b) in enumerate(zip(true, served)) if a != b]
            truth.anomaly_many(SYSTEM, DATASET, [keys[idx[j]] for j in keep], "HoVaTen", anomaly,
                               [true[j] for j in keep], [served[j] for j in keep])
        idx = np.flatnonzero(self.addr_2025)
        homes = [self.home(int(i)) for i in idx]
        truth.anomaly_many(SYSTEM, DATASET, [keys[i] for i in idx], "ThuongTru", "address_2025_codes",
                           [r.unit(h).ward_code for h in homes], [self._unit_2025_code(h) for h in homes])
        idx = np.flatnonzero(stale_death)
        truth.anomaly_many(SYSTEM, DATASET, [keys[i] for i in idx], "TrangThai", "death_not_in_population",
                           ["1"] * len(idx), ["0"] * len(idx))
        idx = np.flatnonzero(stale_marriage)
        truth.anomaly_many(SYSTEM, DATASET, [keys[i] for i in idx], "TinhTrangHonNhan",
                           "marriage_not_in_population", [str(int(r.marital[i])) for i in idx], ["1"] * len(idx))
        idx = np.flatnonzero(r.moved_to >= 0)
        truth.anomaly_many(SYSTEM, DATASET, [keys[i] for i in idx], "ThuongTru", "moved_out",
                           [r.unit(int(r.residence[i])).province_code for i in idx],
                           [r.other_units[int(r.moved_to[i])].province_code for i in idx])

    def home(self, pid: int) -> int:
        """Unit index of the permanent residence now (a mover's new one, in another province)."""
        moved_to = int(self.r.moved_to[pid])
        return -1 - moved_to if moved_to >= 0 else int(self.r.residence[pid])

    def _unit_2025_code(self, index: int) -> str:
        new = self.r.unit_2025(self.r.unit(index))
        return new.ward_code if new else ""

    # -- lookups ------------------------------------------------------------------------------
    def find(self, personal_id: str = "", cmnd: str = "") -> int | None:
        """The pid behind an ID number or an old card number, if the registry knows it."""
        for text, keys, pids in ((personal_id, self._ids_sorted, self._ids_pid),
                                 (cmnd, self._cmnd_sorted, self._cmnd_pid)):
            if text and text.isdigit():
                value = int(text)
                pos = int(np.searchsorted(keys, value))
                if pos < len(keys) and keys[pos] == value:
                    return int(pids[pos])
        return None

    def updated(self, pid: int) -> int:
        return self.live_updated.get(pid, int(self.r.updated[pid]))

    def touch(self, pid: int) -> None:
        """Record a change of ``pid`` now: it gets a fresh ``NgayCapNhat`` after every other one."""
        with self._lock:
            last = self.live_keys[-1][0] if self.live_keys else 0
            moment = max(int(time.time()), self.r.as_of, last + 1)
            self.touched[pid] = True
            self.live_updated[pid] = moment
            self.live_keys.append((moment, int(self.r.personal_id[pid])))
            self.live_pids.append(pid)

    # -- paging -------------------------------------------------------------------------------
    def in_scope(self, pids: np.ndarray, since: int) -> np.ndarray:
        """Resident now, or resident at ``since`` (a mover is seen leaving)."""
        r = self.r
        return (r.moved_to[pids] < 0) | (r.moved_at[pids] >= since)

    def page(self, since: int, after: tuple[int, int] | None, limit: int) -> tuple[list[int], tuple[int, int] | None]:
        """Up to ``limit`` pids after key ``after`` with NgayCapNhat ≥ ``since``, and the next cursor key."""
        want = limit + 1
        found: list[int] = []
        start = int(np.searchsorted(self.sorted_updated, since, "left"))
        if after is not None:
            lo = int(np.searchsorted(self.sorted_updated, after[0], "left"))
            hi = int(np.searchsorted(self.sorted_updated, after[0], "right"))
            start = max(start, lo + int(np.searchsorted(self.sorted_ids[lo:hi], after[1], "right")))
        total = len(self.order)
        while start < total and len(found) < want:
            chunk = self.order[start:start + 2 * want]
            keep = chunk[~self.touched[chunk] & self.in_scope(chunk, since)]
            found.extend(int(p) for p in keep[: want - len(found)])
            start += len(chunk)
        if len(found) < want:
            with self._lock:
                keys, pids = list(self.live_keys), list(self.live_pids)
            pos = bisect_right(keys, after) if after is not None else 0
            for key, pid in zip(keys[pos:], pids[pos:]):
                if len(found) >= want:
                    break
                if key[0] >= since and self.live_updated.get(pid) == key[0] and self.in_scope(np.array([pid]), since)[0]:
                    found.append(pid)
        if len(found) > limit:
            last = found[limit - 1]
            return found[:limit], (self.updated(last), int(self.r.personal_id[last]))
        return found, None

    def delivered_before(self, since: int, after: tuple[int, int], rng: np.random.Generator) -> int | None:
        """A random pid already served to a client paging from ``since`` up to key ``after``."""
        lo = int(np.searchsorted(self.sorted_updated, since, "left"))
        hi = int(np.searchsorted(self.sorted_updated, after[0], "left"))
        if hi <= lo:
            return None
        pid = int(self.order[int(rng.integers(lo, hi))])
        return None if self.touched[pid] else pid

    # -- rendering ----------------------------------------------------------------------------
    def served_name(self, pid: int, parts: tuple[str, str, str] | None = None) -> tuple[str, str, str]:
        """The name as this registry serves it (``parts``: the true parts, if already at hand)."""
        parts = parts or self.r.name_parts(pid)
        flags = int(self.name_flags[pid])
        if not flags:
            return parts
        shown = tuple(_variant(p, flags) for p in parts)
        if flags & ALL_IN_TEN:
            joined = " ".join(p for p in shown if p)
            return ("", "", names.to_nfd(joined) if flags & NFD else joined)
        return shown  # type: ignore[return-value]

    def _address(self, index: int, modern: bool, house: int | None) -> str:
        key = (index, modern)
        cached = self._addresses.get(key)
        if cached is None:
            unit = self.r.unit(index)
            if modern and (new := self.r.unit_2025(unit)) is not None:
                codes, place = (new.province_code, "", new.ward_code), new.full_name
            else:
                codes, place = (unit.province_code, unit.district_code, unit.ward_code), unit.full_name
            cached = (f"<ns1:MaTinhThanh>{codes[0]}</ns1:MaTinhThanh><ns1:MaQuanHuyen>{codes[1]}</ns1:MaQuanHuyen>"
                      f"<ns1:MaPhuongXa>{codes[2]}</ns1:MaPhuongXa><ns1:ChiTiet>", place,
                      "</ns1:ChiTiet><ns1:QuocGia>VN</ns1:QuocGia>")
            self._addresses[key] = cached
        head, place, tail = cached
        return f"{head}Số {house}, {place}{tail}" if house is not None else f"{head}{place}{tail}"

    def render(self, pids: list[int]) -> list[str]:
        """``ns1:CongDan`` elements for ``pids`` (the caller wraps them in a collection).

        Columns are gathered for the whole page first, so the per-record loop only formats strings.
        """
        if not pids:
            return []
        r = self.r
        idx = np.asarray(pids, np.int64)
        k = len(idx)
        father, mother, head = r.father[idx], r.mother[idx], r.household[idx]
        spouse = np.where(self.marital[idx] == 2, r.spouse[idx], -1)
        guardian = np.where(r.as_of - r.birth[idx] < 14 * 365 * 86_400, father, -1)
        people = np.concatenate([idx, father, mother, spouse, guardian, head])
        relatives, ids, cards = self._relatives(people)
        head_names = r.full_names(head)
        births = timefmt.day_column(r.birth[idx])
        updated = timefmt.compact_column(np.array([self.updated(p) for p in pids], np.int64))
        died = timefmt.day_column(np.maximum(r.died[idx], 0))
        homes = np.where(r.moved_to[idx] >= 0, -1 - r.moved_to[idx], r.residence[idx]).tolist()
        family, middle, given = names.FAMILY, names.MIDDLE, names.GIVEN
        true_parts = [(family[f], middle[g - 1][m], given[g - 1][n]) for f, m, n, g in zip(
            r.family[idx].tolist(), r.middle[idx].tolist(), r.given[idx].tolist(), r.gender[idx].tolist())]
        flags = self.name_flags[idx].tolist()
        columns = zip(range(k), pids, r.gender[idx].tolist(), r.ethnic[idx].tolist(), r.religion[idx].tolist(),
                      r.blood[idx].tolist(), self.marital[idx].tolist(), self.status[idx].tolist(),
                      self.addr_2025[idx].tolist(), homes, r.house_number[idx].tolist(),
                      r.birth_place[idx].tolist(), r.hometown[idx].tolist(), head.tolist(), r.spouse[idx].tolist())
        out = []
        for (j, pid, gender, ethnic, religion, blood, marital, status, modern, home, house, birth_place, hometown,
             head_pid, spouse_pid) in columns:
            ho, chu_dem, ten = self.served_name(pid, true_parts[j]) if flags[j] else true_parts[j]
            residence = self._address(home, modern, house)
            relation = "CH01" if head_pid == pid else ("CH02" if spouse_pid == head_pid else "CH03")
            out.append(
                f"<ns1:CongDan><ns1:SoDinhDanh>{ids[j]}</ns1:SoDinhDanh>"
                f"<ns1:SoCMND>{cards[j]}</ns1:SoCMND>"
                f"<ns1:HoVaTen><ns1:Ho>{ho}</ns1:Ho><ns1:ChuDem>{chu_dem}</ns1:ChuDem><ns1:Ten>{ten}</ns1:Ten></ns1:HoVaTen>"
                f"<ns1:GioiTinh>{gender}</ns1:GioiTinh>"
                f"<ns1:DanToc>{ETHNIC[ethnic][0]}</ns1:DanToc><ns1:TonGiao>{RELIGION[religion][0]}</ns1:TonGiao>"
                f"<ns1:TinhTrangHonNhan>{marital}</ns1:TinhTrangHonNhan><ns1:NhomMau>{BLOOD[blood][0]}</ns1:NhomMau>"
                f"<ns1:NgayThangNamSinh><ns1:Nam>{births[j][:4]}</ns1:Nam><ns1:NgayThangNam>{births[j]}</ns1:NgayThangNam></ns1:NgayThangNamSinh>"
                f"<ns1:NoiDangKyKhaiSinh>{self._address(birth_place, modern, None)}</ns1:NoiDangKyKhaiSinh>"
                f"<ns1:QuocTich>VN</ns1:QuocTich>"
                f"<ns1:QueQuan>{self._address(hometown, modern, None)}</ns1:QueQuan>"
                f"<ns1:ThuongTru>{residence}</ns1:ThuongTru><ns1:NoiOHienTai>{residence}</ns1:NoiOHienTai>"
                f"<ns1:Cha>{relatives[k + j]}</ns1:Cha><ns1:Me>{relatives[2 * k + j]}</ns1:Me>"
                f"<ns1:VoChong>{relatives[3 * k + j]}</ns1:VoChong>"
                f"<ns1:NguoiDaiDien>{relatives[4 * k + j]}</ns1:NguoiDaiDien>"
                f"<ns1:ChuHo><ns1:QuanHe>{relation}</ns1:QuanHe><ns1:SoDinhDanh>{ids[5 * k + j]}</ns1:SoDinhDanh>"
                f"<ns1:SoCMND>{cards[5 * k + j]}</ns1:SoCMND><ns1:HoVaTen>{head_names[j]}</ns1:HoVaTen></ns1:ChuHo>"
                f"<ns1:SoSoHoKhau>HP{head_pid:09d}</ns1:SoSoHoKhau><ns1:NgayCapNhat>{updated[j]}</ns1:NgayCapNhat>"
                f"<ns1:TrangThai>{status}</ns1:TrangThai>"
                f"<ns1:NgayChet>{died[j] if status == 1 else ''}</ns1:NgayChet></ns1:CongDan>"
            )
        return out

    def _relatives(self, people: np.ndarray) -> tuple[list[str], list[str], list[str]]:
        """Relative element contents, ID texts and CMND texts for each pid of ``people`` (-1: nobody)."""
        r = self.r
        safe = np.maximum(people, 0)
        present = (people >= 0).tolist()
        full = r.full_names(safe)
        ids = [f"{x:012d}" if p else "" for x, p in zip(r.personal_id[safe].tolist(), present)]
        cards = [f"{x:09d}" if x >= 0 and p else "" for x, p in zip(r.cmnd[safe].tolist(), present)]
        empty = "<ns1:HoVaTen/><ns1:QuocTich/><ns1:SoDinhDanh/><ns1:SoCMND/>"
        contents = [
            f"<ns1:HoVaTen>{n}</ns1:HoVaTen><ns1:QuocTich>VN</ns1:QuocTich><ns1:SoDinhDanh>{i}</ns1:SoDinhDanh>"
            f"<ns1:SoCMND>{c}</ns1:SoCMND>" if p else empty
            for n, i, c, p in zip(full, ids, cards, present)
        ]
        return contents, ids, cards

    def collection(self, pids: list[int]) -> list[str]:
        """The pieces of an ``ns1:CongdanCollection`` (joined once, by the SOAP layer)."""
        return [f'<ns1:CongdanCollection xmlns:ns1="{NS1}">', *self.render(pids), "</ns1:CongdanCollection>"]


@lru_cache(maxsize=4096)
def _variant(part: str, flags: int) -> str:
    """One name part as garbled by ``flags`` (names come from small tables, so this caches well)."""
    if flags & OLD_TONE:
        part = names.old_tone_placement(part)
    if flags & UPPER:
        part = part.upper()
    if flags & NFD and not flags & ALL_IN_TEN:
        part = names.to_nfd(part)
    return part


# -- the SOAP operations ------------------------------------------------------------------------

def encode_cursor(since: int, key: tuple[int, int]) -> str:
    return base64.urlsafe_b64encode(f"{since}:{key[0]}:{key[1]}".encode()).decode().rstrip("=")


def decode_cursor(token: str, since: int) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        cursor_since, updated, personal_id = (int(part) for part in raw.split(":"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ServiceError(302, f"ConTro {token[:40]!r} is not a cursor issued by this server") from None
    if cursor_since != since:
        raise ServiceError(500, "ConTro belongs to a different TuThoiDiem; restart paging without ConTro")
    return updated, personal_id


class PopulationService:
    """The three operations of §1 bound to a registry."""

    def __init__(self, registry: PopulationRegistry, runtime: SystemRuntime, seed: int = 0) -> None:
        self.registry = registry
        self.runtime = runtime
        self._rng = np.random.default_rng([seed, 2])
        self.endpoint = SoapEndpoint(runtime, namespace=DAN_NS, wsdl="dancu", operations={
            "TraCuuThongTinCongDan": self.lookup,
            "XacThucThongTinCongDan": self.verify,
            "DongBoCongDan": self.sync,
        })

    def _context(self, call: Call) -> str:
        agency, officer = call.text("MaDVC"), call.text("MaCanBo")
        if agency not in call.client.agencies:
            raise ServiceError(106, f"MaDVC {agency!r} is not an agency this account may act for")
        if not (len(officer) == 12 and officer.isdigit()):
            raise ServiceError(302, f"MaCanBo must be a 12-digit personal ID, got {officer!r}")
        return call.text("MaYeuCau")

    def _person(self, call: Call) -> int | None:
        personal_id, cmnd = call.text("SoDinhDanh"), call.text("SoCMND")
        if not personal_id and not cmnd:
            raise ServiceError(200, "one of SoDinhDanh or SoCMND is required")
        if personal_id and not (len(personal_id) == 12 and personal_id.isdigit()):
            raise ServiceError(302, f"SoDinhDanh must be 12 digits, got {personal_id!r}")
        if cmnd and not (len(cmnd) in (9, 12) and cmnd.isdigit()):
            raise ServiceError(302, f"SoCMND must be 9 or 12 digits, got {cmnd!r}")
        return self.registry.find(personal_id, cmnd)

    def _matches(self, pid: int, full_name: str, birth: str) -> bool:
        r = self.registry.r
        if fold_name(full_name) != fold_name(r.full_name(pid)):
            return False
        if birth:
            day = timefmt.day_column(r.birth[[pid]])[0]
            return day[: len(birth)] == birth if len(birth) == 4 else day == birth
        return True

    def lookup(self, call: Call) -> list[str]:
        request_id = self._context(call)
        if call.text("MaTichHop") != "037":
            raise ServiceError(500, f"MaTichHop must be 037 for TraCuuThongTinCongDan, got {call.text('MaTichHop')!r}")
        pid = self._person(call)
        found = [pid] if pid is not None and self._matches(pid, call.text("HoVaTen"), call.text("NgayThangNamSinh")) else []
        return [f'<dan:TraCuuThongTinCongDanResponse xmlns:dan="{DAN_NS}"><dan:MaYeuCau>{_esc(request_id)}</dan:MaYeuCau>',
                *self.registry.collection(found), "</dan:TraCuuThongTinCongDanResponse>"]

    def verify(self, call: Call) -> str:
        request_id = self._context(call)
        if call.text("MaDichVu") != "033":
            raise ServiceError(500, f"MaDichVu must be 033 for XacThucThongTinCongDan, got {call.text('MaDichVu')!r}")
        pid = self._person(call)
        exists = pid is not None and self._matches(pid, call.text("HoVaTen"), call.text("NgayThangNamSinh"))
        if exists and call.text("SoCMND") and call.text("SoDinhDanh"):
            exists = self.registry.r.cmnd_text(pid) == call.text("SoCMND")
        return (f'<dan:XacThucThongTinCongDanResponse xmlns:dan="{DAN_NS}"><dan:MaYeuCau>{_esc(request_id)}</dan:MaYeuCau>'
                f"<dan:TonTai>{'true' if exists else 'false'}</dan:TonTai></dan:XacThucThongTinCongDanResponse>")

    def sync(self, call: Call) -> list[str]:
        request_id = self._context(call)
        province = call.text("MaTinh")
        if province not in call.client.provinces:
            raise ServiceError(108, f"MaTinh {province!r} is not a province this account may synchronise")
        since = timefmt.parse(call.text("TuThoiDiem"), timefmt.COMPACT)
        limit = int(call.text("SoLuong") or 500)
        token = call.text("ConTro")
        after = decode_cursor(token, since) if token else None
        registry = self.registry
        if after is not None and call.decision.has("concurrent_update"):
            victim = registry.delivered_before(since, after, self._rng)
            if victim is not None:
                registry.touch(victim)
        moment = timefmt.render(time.time(), timefmt.COMPACT)
        pids, next_key = registry.page(since, after, limit)
        if after is not None and call.decision.has("duplicate_record"):
            previous = registry.find(f"{after[1]:012d}")
            if previous is not None:
                pids = [previous, *pids]
        cursor = f"<dan:ConTro>{encode_cursor(since, next_key)}</dan:ConTro>" if next_key else ""
        return [f'<dan:DongBoCongDanResponse xmlns:dan="{DAN_NS}"><dan:MaYeuCau>{_esc(request_id)}</dan:MaYeuCau>'
                f"<dan:ThoiDiemDuLieu>{moment}</dan:ThoiDiemDuLieu>{cursor}", *registry.collection(pids),
                "</dan:DongBoCongDanResponse>"]


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
