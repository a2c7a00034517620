"""The dossiers of one one-stop-shop system (``national-systems.md`` §6), drawn deterministically.

:func:`generate` draws a system's history up to ``as_of``: who applied for which procedure, through
which channel, and every processing step the dossier went through. The lifecycle is the one a
one-stop-shop office follows::

    (online: MOI, MOI) → TIEP_NHAN → DANG_XU_LY → (BO_SUNG → DANG_XU_LY | NVTC → DANG_XU_LY)* → DA_XU_LY → DA_TRA

with some dossiers refused at reception (``TU_CHOI``, online only), withdrawn (``RUT``) or stopped
(``DUNG``), some resolved after ``ngay_hen_tra`` (receipt + the procedure's legal days) and some
stalled, still open past due at ``as_of``. Every dossier has 2 to 8 steps, in time order. An online
dossier's first two steps are the applicant's submission and the portal's acknowledgement, both ``MOI``.

Times are epoch seconds here; :mod:`sandbox.onestop` stores them as naive local (Asia/Ho_Chi_Minh) times.
The applicant faults (:data:`APPLICANT_FAULTS`) and malformed dossier codes are returned with the
dossiers so the caller can write them to the ground truth.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from sandbox import names
from sandbox.agencies import Agency
from sandbox.business import EnterpriseRegistry, adult_pool, _fold
from sandbox.ground_truth import enterprise_key, person_key
from sandbox.procedures import Procedure, for_level
from sandbox.province import Residents

DAY = 86_400
LOCAL = 7 * 3600  # Asia/Ho_Chi_Minh is UTC+07:00 all year
MAX_STEPS = 8
STREAM = 61  # this module's random stream, apart from the other generators'

TERMINAL = frozenset({"TU_CHOI", "RUT", "DUNG", "DA_TRA"})
STATUSES = ("MOI", "TIEP_NHAN", "TU_CHOI", "DANG_XU_LY", "BO_SUNG", "NVTC", "RUT", "DUNG", "DA_XU_LY", "DA_TRA")
CHANNELS = ("TRUC_TIEP", "TRUC_TUYEN", "BUU_CHINH")
#: Applicant faults written to the ground truth: an old CMND given for the personal ID (not an error,
#: but worth scoring), an ID (or enterprise code) nobody has, a real ID with another person's name.
APPLICANT_FAULTS = ("cmnd", "unknown_id", "name_mismatch")
#: Ways a dossier code is mistyped (Circular 01/2018 Art. 19 says ``{agency}-{YYMMDD}-{NNNN}``).
CODE_FAULTS = ("separator", "short_sequence", "long_date", "lower_case")

# Who works each step: the one-stop-shop counter, the specialist office for the field, the leader.
FIELD_OFFICES = {"HT": "Phòng Tư pháp", "CT": "Phòng Tư pháp", "DD": "Phòng Tài nguyên và Môi trường",
                 "TLDN": "Phòng Tài chính - Kế hoạch", "XD": "Phòng Quản lý đô thị", "LLTP": "Phòng Lý lịch tư pháp",
                 "VL": "Phòng Lao động - Việc làm", "KCB": "Phòng Nghiệp vụ Y", "ATTP": "Phòng Quản lý thương mại",
                 "LT": "Phòng Quản lý thương mại"}
COUNTER = "Bộ phận Một cửa"
PORTAL = "Cổng Dịch vụ công"
LEADERS = "Lãnh đạo"
REFUSED = "Từ chối tiếp nhận: hồ sơ không đủ thành phần"


@dataclass(frozen=True)
class Shares:
    """The mix of the generated dossiers; every share is of all dossiers unless it says otherwise."""

    online: float = 1 / 7  # kenh TRUC_TUYEN
    post: float = 0.03  # kenh BUU_CHINH
    refused: float = 0.15  # of online dossiers: TU_CHOI at reception
    withdrawn: float = 0.015  # RUT
    stopped: float = 0.005  # DUNG
    late: float = 0.08  # resolved after ngay_hen_tra
    stalled: float = 0.01  # never resolved: open past due once ngay_hen_tra has passed
    supplement: float = 0.18  # asked for more papers (BO_SUNG) at least once
    unknown_id: float = 0.01  # applicant's ID (or enterprise code) nobody has
    name_mismatch: float = 0.01  # a real ID with another person's (enterprise's) name
    cmnd: float = 0.05  # citizens who give their old 9-digit CMND (when they had one)
    malformed_code: float = 0.002  # ma_ho_so not in the Art. 19 form

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not 0 <= value <= 1:
                raise ValueError(f"one-stop-shop share {name} must be between 0 and 1, got {value}")
        if self.online + self.post > 1:
            raise ValueError("one-stop-shop shares online + post must not exceed 1")


@dataclass(frozen=True)
class Staff:
    counter: tuple[str, ...]
    specialists: tuple[str, ...]
    leader: str
    leader_title: str


@dataclass
class Applicant:
    name: str  # chu_ho_so as served
    kind: int  # loai_doi_tuong: 1 citizen, 2 enterprise
    document: str  # so_giay_to as served
    fault: str  # '' or one of APPLICANT_FAULTS
    entity: str  # the true person/enterprise key of the document, '' when nobody has it


@dataclass
class Dossiers:
    """One system's dossiers and steps as row tuples in :data:`HO_SO_COLUMNS` / :data:`STEP_COLUMNS`
    order (times in epoch seconds, -1 for none)."""

    ho_so: list[tuple] = field(default_factory=list)
    steps: list[tuple] = field(default_factory=list)
    applicants: list[Applicant] = field(default_factory=list)  # one per row of ho_so
    malformed: list[tuple[str, str, str]] = field(default_factory=list)  # (served code, true code, fault)
    last_seq: dict[int, int] = field(default_factory=dict)  # local day number -> last NNNN used

    def __len__(self) -> int:
        return len(self.ho_so)

    def column(self, name: str) -> list:
        """One column of ``ho_so``."""
        i = HO_SO_COLUMNS.index(name)
        return [row[i] for row in self.ho_so]

    def step_column(self, name: str) -> list:
        """One column of ``qua_trinh_xu_ly``."""
        i = STEP_COLUMNS.index(name)
        return [row[i] for row in self.steps]


HO_SO_COLUMNS = ("ma_ho_so", "ma_tthc", "ten_tthc", "ma_linh_vuc", "kenh", "chu_ho_so", "loai_doi_tuong",
                 "so_giay_to", "trich_yeu", "ngay_tiep_nhan", "ngay_hen_tra", "ngay_ket_thuc", "ngay_tra",
                 "trang_thai", "da_thanh_toan", "updated_at")
STEP_COLUMNS = ("id", "ma_ho_so", "nguoi_xu_ly", "chuc_danh", "phong_ban", "noi_dung", "trang_thai", "thoi_diem",
                "han_xu_ly", "updated_at")


def system_rng(seed: int, name: str, *more: int) -> np.random.Generator:
    """The random stream of system ``name``: the same whatever other systems are configured."""
    return np.random.default_rng([seed, STREAM, zlib.crc32(name.encode()), *more])


def local_day(epoch: int | np.ndarray):
    """Days since 1970-01-01 in local time (what ``YYMMDD`` of a dossier code counts)."""
    return (epoch + LOCAL) // DAY


def dossier_code(agency_code102: str, day: int, seq: int) -> str:
    """``{agency}-{YYMMDD}-{NNNN}`` (Circular 01/2018 Art. 19) for local day number ``day``."""
    if not 1 <= seq <= 9999:
        raise ValueError(f"{agency_code102}: dossier number {seq} of one day is outside 1..9999")
    return f"{agency_code102}-{_yymmdd(day)}-{seq:04d}"


def _yymmdd(day: int) -> str:
    return np.datetime64(int(day), "D").astype(object).strftime("%y%m%d")


def draw_staff(rng: np.random.Generator, residents: Residents, district: bool) -> Staff:
    pool = adult_pool(residents)
    people = residents.full_names(rng.choice(pool, 7))
    title = "Phó Chủ tịch Ủy ban nhân dân" if district else "Phó Giám đốc Sở"
    return Staff(tuple(people[:3]), tuple(people[3:6]), people[6], title)


class ApplicantDrawer:
    """Draws applicants of one system: the province's residents and enterprises, with faults."""

    def __init__(self, residents: Residents, enterprises: EnterpriseRegistry, shares: Shares) -> None:
        self.r, self.e, self.shares = residents, enterprises, shares
        self.people = adult_pool(residents)
        self.firms = enterprises.changeable()
        self.known_ids = set(residents.personal_id.tolist())
        self.known_codes = set(enterprises.codes)

    def draw(self, rng: np.random.Generator, kinds: np.ndarray) -> list[Applicant]:
        """One applicant per entry of ``kinds`` (``loai_doi_tuong``)."""
        n = len(kinds)
        u = rng.random(n)
        who = rng.integers(0, 1 << 62, n)
        other = rng.integers(0, 1 << 62, n)
        s = self.shares
        out = []
        for k, u_i, w, o in zip(kinds.tolist(), u.tolist(), who.tolist(), other.tolist()):
            if u_i < s.unknown_id:
                out.append(self._unknown(k, w, o))
            elif u_i < s.unknown_id + s.name_mismatch:
                out.append(self._mismatch(k, w, o))
            elif k == 1:
                pid = int(self.people[w % len(self.people)])
                cmnd = u_i < s.unknown_id + s.name_mismatch + s.cmnd and self.r.cmnd[pid] >= 0
                out.append(Applicant(self.r.full_name(pid), 1, self.r.cmnd_text(pid) if cmnd else self.r.id_text(pid),
                                     "cmnd" if cmnd else "", person_key(pid)))
            else:
                eid = int(self.firms[w % len(self.firms)])
                out.append(Applicant(self.e.name[eid], 2, self.e.codes[eid], "", enterprise_key(eid)))
        return out

    def _unknown(self, kind: int, w: int, o: int) -> Applicant:
        if kind == 2:
            code = f"02{w % 10**8:08d}"
            while code in self.known_codes:
                w += 7919
                code = f"02{w % 10**8:08d}"
            return Applicant(self.e.name[int(self.firms[o % len(self.firms)])] + " Mới", 2, code, "unknown_id", "")
        gender = 1 + o % 2
        number = 31_000_000_000 + (gender - 1 + 2) * 100_000_000 + w % 100_000_000  # 031, born in the 2000s
        while number in self.known_ids:
            number = 31_000_000_000 + (number + 7919) % 1_000_000_000
        middle, given = names.MIDDLE[gender - 1], names.GIVEN[gender - 1]
        name = names.full_name(names.FAMILY[o % len(names.FAMILY)], middle[(o >> 8) % len(middle)],
                               given[(o >> 16) % len(given)])
        return Applicant(name, 1, f"{number:012d}", "unknown_id", "")

    def _mismatch(self, kind: int, w: int, o: int) -> Applicant:
        if kind == 2:
            eid = int(self.firms[w % len(self.firms)])
            for step in range(len(self.firms)):
                other = int(self.firms[(o + step) % len(self.firms)])
                if _fold(self.e.name[other]) != _fold(self.e.name[eid]):
                    return Applicant(self.e.name[other], 2, self.e.codes[eid], "name_mismatch", enterprise_key(eid))
            return Applicant(self.e.name[eid], 2, self.e.codes[eid], "", enterprise_key(eid))
        pid = int(self.people[w % len(self.people)])
        true = _fold(self.r.full_name(pid))
        for step in range(len(self.people)):
            other = int(self.people[(o + step) % len(self.people)])
            if _fold(self.r.full_name(other)) != true:
                return Applicant(self.r.full_name(other), 1, self.r.id_text(pid), "name_mismatch", person_key(pid))
        return Applicant(self.r.full_name(pid), 1, self.r.id_text(pid), "", person_key(pid))


def malform(code: str, draw: int) -> tuple[str, str]:
    """``code`` mistyped one of the :data:`CODE_FAULTS` ways (never into another valid code)."""
    agency, day, seq = code.split("-")
    fault = CODE_FAULTS[draw % len(CODE_FAULTS)]
    if fault == "short_sequence" and int(seq) >= 1000:
        fault = "separator"
    if fault == "separator":
        return f"{agency}/{day}/{seq}", fault
    if fault == "short_sequence":
        return f"{agency}-{day}-{int(seq)}", fault
    if fault == "long_date":
        return f"{agency}-20{day}-{seq}", fault
    return f"{agency.lower()}-{day}-{seq}", fault


def generate(name: str, agency: Agency, level: str, count: int, start: int, as_of: int, seed: int,
             drawer: ApplicantDrawer, residents: Residents, shares: Shares) -> tuple[Dossiers, Staff]:
    """``count`` dossiers received in ``[start, as_of)`` by system ``name`` of ``agency``."""
    rng = system_rng(seed, name)
    procs = for_level(level)
    if not procs:
        raise ValueError(f"one-stop-shop system {name!r}: no procedure of the catalogue is handled at level {level!r}")
    staff = draw_staff(rng, residents, level == "district")
    weights = np.array([p.weight for p in procs])
    proc = rng.choice(len(procs), count, p=weights / weights.sum())
    u = rng.random(count)
    channel = np.where(u < shares.online, 1, np.where(u < shares.online + shares.post, 2, 0))
    first_day = local_day(start)
    days = rng.integers(first_day, local_day(as_of - 1) + 1, count)
    counter_hour = 7.5 * 3600 + rng.random(count) * 9.5 * 3600
    any_hour = rng.random(count) * DAY
    received = days * DAY - LOCAL + np.where(channel == 1, any_hour, counter_hour).astype(np.int64)
    received = np.clip(received, start, as_of - 60)
    order = np.argsort(received, kind="stable")
    proc, channel, received = proc[order], channel[order], received[order]
    kinds = np.array([procs[i].applicant for i in proc.tolist()], np.int8)
    applicants = drawer.draw(rng, kinds)

    out = Dossiers()
    fates = rng.random((count, 8))
    delays = rng.random((count, 8))
    day_of = local_day(received)
    seq = np.ones(count, np.int64)
    for i in range(1, count):
        if day_of[i] == day_of[i - 1]:
            seq[i] = seq[i - 1] + 1
    for d, s in zip(day_of.tolist(), seq.tolist()):
        out.last_seq[d] = s
    step_id = 0
    for i in range(count):
        p = procs[int(proc[i])]
        code = dossier_code(agency.code102, int(day_of[i]), int(seq[i]))
        if fates[i, 7] < shares.malformed_code:
            served, fault = malform(code, int(delays[i, 7] * 1e6))
            out.malformed.append((served, code, fault))
            code = served
        steps = lifecycle(p, int(channel[i]), int(received[i]), fates[i], delays[i], shares, staff, applicants[i].name)
        step_id = add_dossier(out, code, p, int(channel[i]), applicants[i], int(received[i]), steps, as_of, step_id,
                              bool(delays[i, 6] < 0.6), int(delays[i, 5] * 120))
        out.applicants.append(applicants[i])
    return out, staff


def lifecycle(p: Procedure, channel: int, received: int, fate: np.ndarray, delay: np.ndarray, shares: Shares,
              staff: Staff, applicant: str) -> list[tuple[int, str, str, str, str, str]]:
    """The dossier's whole intended life: (time, status, person, title, office, content) per step."""
    legal = p.days * DAY
    office = FIELD_OFFICES.get(p.field_code, "Phòng chuyên môn")
    clerk = staff.counter[int(delay[0] * len(staff.counter))]
    specialist = staff.specialists[int(delay[1] * len(staff.specialists))]
    steps: list[tuple[int, str, str, str, str, str]] = []
    t = received
    if channel == 1:
        steps.append((t, "MOI", applicant, "Người nộp hồ sơ", PORTAL, "Nộp hồ sơ trực tuyến"))
        steps.append((t + 1 + int(delay[2] * 30), "MOI", "Hệ thống một cửa điện tử", "", PORTAL,
                      "Thông báo đã nhận hồ sơ trực tuyến, chờ kiểm tra"))
        t += 600 + int(delay[3] * 8 * 3600)
        if fate[0] < shares.refused:
            steps.append((t, "TU_CHOI", clerk, "Cán bộ tiếp nhận", COUNTER, REFUSED))
            return steps
        steps.append((t, "TIEP_NHAN", clerk, "Cán bộ tiếp nhận", COUNTER, "Tiếp nhận hồ sơ trực tuyến"))
    else:
        how = "qua dịch vụ bưu chính" if channel == 2 else "tại Bộ phận Một cửa"
        steps.append((t, "TIEP_NHAN", clerk, "Cán bộ tiếp nhận", COUNTER, f"Tiếp nhận hồ sơ {how}"))
    transfer = t + 300 + int(delay[4] * 3300)
    steps.append((transfer, "DANG_XU_LY", clerk, "Cán bộ tiếp nhận", COUNTER, f"Chuyển hồ sơ đến {office}"))
    room = MAX_STEPS - len(steps) - 2  # DA_XU_LY and DA_TRA still to come
    middle: list[tuple[str, str, str, str, str]] = []
    if fate[1] < shares.supplement and room >= 2:
        middle.append(("BO_SUNG", specialist, "Chuyên viên", office, "Yêu cầu bổ sung, hoàn thiện hồ sơ"))
        middle.append(("DANG_XU_LY", clerk, "Cán bộ tiếp nhận", COUNTER, "Tiếp nhận hồ sơ bổ sung"))
        room -= 2
    if (p.field_code == "DD" and fate[2] < 0.6 or fate[2] < 0.03) and room >= 2:
        middle.append(("NVTC", specialist, "Chuyên viên", office, "Thông báo nghĩa vụ tài chính"))
        middle.append(("DANG_XU_LY", clerk, "Cán bộ tiếp nhận", COUNTER, "Đã hoàn thành nghĩa vụ tài chính"))
        room -= 2
    if fate[1] < shares.supplement * 0.2 and room >= 2:
        middle.append(("BO_SUNG", specialist, "Chuyên viên", office, "Yêu cầu bổ sung lần hai"))
        middle.append(("DANG_XU_LY", clerk, "Cán bộ tiếp nhận", COUNTER, "Tiếp nhận hồ sơ bổ sung lần hai"))
    ending = fate[3]
    stalled = fate[4] < shares.stalled
    if ending < shares.withdrawn + shares.stopped:
        stop = transfer + 600 + int(delay[5] * max(legal, DAY))
        middle = middle[: 2 * int(len(middle) * delay[6] / 2)]
        if ending < shares.withdrawn:
            final = ("RUT", clerk, "Cán bộ tiếp nhận", COUNTER, "Công dân rút hồ sơ theo đề nghị")
        else:
            final = ("DUNG", staff.leader, staff.leader_title, LEADERS, "Dừng xử lý hồ sơ")
        return steps + _spread(transfer, stop, middle, delay) + [(stop, *final)]
    if stalled:  # the work stops somewhere and nobody finishes it
        return steps + _spread(transfer, transfer + legal + DAY, middle, delay)
    late = fate[5] < shares.late
    span = legal + 3600 + int(-np.log(1 - delay[7]) * max(DAY, 0.3 * legal)) if late else \
        int(legal * (0.1 + 0.85 * fate[6]))
    done = max(received + span, transfer + 600 * (len(middle) + 1))
    back = done + 600 + int(fate[7] * 2 * DAY)
    return steps + _spread(transfer, done, middle, delay) + [
        (done, "DA_XU_LY", staff.leader, staff.leader_title, LEADERS, "Phê duyệt kết quả giải quyết"),
        (back, "DA_TRA", clerk, "Cán bộ tiếp nhận", COUNTER, "Trả kết quả cho người nộp hồ sơ")]


def _spread(after: int, before: int, middle: list[tuple[str, str, str, str, str]], delay: np.ndarray
            ) -> list[tuple[int, str, str, str, str, str]]:
    """Place the middle steps in time order strictly between ``after`` and ``before``."""
    if not middle:
        return []
    gap = max(before - after, len(middle) + 1)
    fractions = np.sort(np.mod(delay[: len(middle)] * 7.31 + np.arange(len(middle)) * 0.173, 1.0))
    times = after + 1 + (fractions * (gap - len(middle) - 1)).astype(np.int64) + np.arange(len(middle))
    return [(int(t), *step) for t, step in zip(times.tolist(), middle)]


def add_dossier(out: Dossiers, code: str, p: Procedure, channel: int, applicant: Applicant, received: int,
                steps: list[tuple[int, str, str, str, str, str]], as_of: int, step_id: int, paid: bool,
                lag: int) -> int:
    """Append one dossier and its steps up to ``as_of`` to ``out``; returns the next step id."""
    kept = [s for s in steps if s[0] <= as_of]
    if len(kept) < 2:  # received just before as_of: the second step happened by then
        kept = [steps[0], (min(steps[1][0], as_of), *steps[1][1:])]
    steps = kept
    due = received + p.days * DAY
    status = steps[-1][1]
    ended = next((s[0] for s in steps if s[1] in ("DA_XU_LY", "TU_CHOI", "RUT", "DUNG")), -1)
    returned = next((s[0] for s in steps if s[1] == "DA_TRA"), -1)
    updated = min(steps[-1][0] + lag, max(as_of, steps[-1][0]))
    out.ho_so.append((code, p.code, p.name, p.field_code, CHANNELS[channel], applicant.name, applicant.kind,
                      applicant.document, f"{p.name}: {applicant.name}", received, due, ended, returned, status,
                      paid and channel == 1, updated))
    rows = out.steps
    for t, state, person, title, office, content in steps:
        step_id += 1
        rows.append((step_id, code, person, title, office, content, state, t, -1 if state in TERMINAL else due,
                     min(t + lag // 2, updated)))
    return step_id
