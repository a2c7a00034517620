"""The National Business Registration Database (``national-systems.md`` §3) over REST: variants A and B.

:class:`EnterpriseRegistry` is what the database holds about the enterprises whose head office is in
the province: drawn deterministically from the residents (legal representatives and members are
adult living residents) and a seed, with the registry-side data faults of §7 applied to what it
serves (a representative's name that differs from the population record, names without diacritics,
in NFD or with old tone placement, a mistyped/swapped ID or an old CMND in variant B, 19/2025 address
codes) and written to the ground truth. :class:`BusinessService` serves it under ``{base}``.

Conventions fixed here where the spec is silent (*conv.*):

- the registry's history is the two years before ``as_of``; it holds the enterprises with at least
  one dossier processed in that window (their founding ``DKM``, or a ``DKTD`` change);
- ``ENTERPRISE_TYPE_ID`` ``01`` TNHH một thành viên, ``02`` TNHH hai thành viên trở lên, ``03`` cổ phần,
  ``04`` doanh nghiệp tư nhân, ``05`` hợp danh;
- status changes: ``TN`` → ``02``; ``HDTL`` → ``01``; ``GT`` → ``03`` (dissolution notified) or ``04``
  (dissolved); ``05``/``06`` are the registry's own decisions and have no dossier;
- ``PROCESS_STATUS`` ``1`` approved, ``2`` refused (a refused ``DKTD`` changes nothing);
  ``IN_JOURNAL_NO`` ``yyyy-NNNNNN`` numbered by receipt within the receipt year; ``SITE_ID`` ``31``;
  ``ENTERPRISE_CODE`` = ``ENTERPRISE_GDT_CODE``; ``PLAN_DATE`` = receipt + 3 days;
- ``LAST_AMEND_DATE``/``NUMBER_CHANGES`` count approved ``DKTD`` only (empty date when none);
- variant B: ``MaLoaiGiayToChungThuc`` ``1`` personal ID, ``2`` CMND (as §2); ``LaNganhChinh`` boolean;
- ground-truth field names: ``LEGAL_NAMES`` (variant B: ``HoVaTen``), ``HOAdress`` (B: ``DiaChiTruSo``,
  true and served commune codes), ``SoGiayChungThuc`` (B only); one row per fault, not per variant.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Callable

import numpy as np
import pyarrow as pa
from starlette.routing import Route

from hub.admin_units import Unit
from sandbox import names
from sandbox.auth import TokenIssuer
from sandbox.faults import RECORD_FAULTS, RESPONSE_FAULTS
from sandbox.ground_truth import GroundTruth, enterprise_key, person_key
from sandbox.province import PROVINCE, REFORM_2025, Residents, ts
from sandbox.rest import RestCall, RestSystem
from sandbox.service import ServiceError, SystemRuntime
from schemas import timefmt
from schemas.identifiers import enterprise_check_digit, enterprise_code_problem

SYSTEM = "business"
DATASET = "enterprise"
STREAM = 30  # this system's numpy streams: rng([seed, STREAM]) builds the registry, STREAM + 1 drives live changes
TAX_OFFICE_PREFIX = "02"  # Hải Phòng's tax office: the first two digits of its enterprise codes
RESIDENTS_PER_ENTERPRISE = 60
MIN_ENTERPRISES = 20
HISTORY_YEARS = 2
MAX_WINDOW_DAYS = 5
MAX_LIMIT = 500
SITE_ID = PROVINCE
APPROVED, REFUSED = "1", "2"
DAY_S = 86_400
YEAR_D = 365.25

TYPES = (  # (ENTERPRISE_TYPE_ID, ENTERPRISE_TYPE_NAME, share, name prefix, English suffix, short suffix)
    ("01", "Công ty TNHH một thành viên", 0.42, "CÔNG TY TNHH", "COMPANY LIMITED", "CO., LTD"),
    ("02", "Công ty TNHH hai thành viên trở lên", 0.26, "CÔNG TY TNHH", "COMPANY LIMITED", "CO., LTD"),
    ("03", "Công ty cổ phần", 0.23, "CÔNG TY CỔ PHẦN", "JOINT STOCK COMPANY", "JSC"),
    ("04", "Doanh nghiệp tư nhân", 0.085, "DOANH NGHIỆP TƯ NHÂN", "", ""),
    ("05", "Công ty hợp danh", 0.005, "CÔNG TY HỢP DANH", "PARTNERSHIP", "PARTNERSHIP"),
)
ONE_MEMBER, MANY_MEMBERS, JOINT_STOCK, PRIVATE, PARTNERSHIP = range(5)
MEMBER_COUNTS = {ONE_MEMBER: (1, 1), MANY_MEMBERS: (2, 4), JOINT_STOCK: (3, 5), PRIVATE: (1, 1), PARTNERSHIP: (2, 3)}
CAPITAL_MEDIAN = (1.5e9, 3e9, 8e9, 1e9, 2e9)  # VND, per type

STATUSES = (  # (code, name, share among enterprises active in the history window)
    ("01", "Đang hoạt động", 0.78),
    ("02", "Tạm ngừng kinh doanh", 0.08),
    ("03", "Đang làm thủ tục giải thể", 0.03),
    ("04", "Đã giải thể", 0.06),
    ("05", "Bị thu hồi giấy chứng nhận", 0.02),
    ("06", "Không hoạt động tại địa chỉ đăng ký", 0.03),
)
DOCUMENT_TYPES = ("DKM", "DKTD", "TN", "GT", "HDTL")
DKM, DKTD, TN, GT, HDTL = range(5)
SUSPENSION_REASONS = ("Khó khăn về tài chính", "Tái cơ cấu hoạt động kinh doanh", "Không có đơn hàng",
                      "Sửa chữa, nâng cấp cơ sở sản xuất")

VSIC = {  # a hand list of real VSIC 2018 level-4 codes
    "0321": "Nuôi trồng thủy sản biển",
    "1079": "Sản xuất thực phẩm khác chưa được phân vào đâu",
    "1410": "May trang phục (trừ trang phục từ da lông thú)",
    "2511": "Sản xuất các cấu kiện kim loại",
    "3011": "Đóng tàu và cấu kiện nổi",
    "4101": "Xây dựng nhà để ở",
    "4102": "Xây dựng nhà không để ở",
    "4290": "Xây dựng công trình kỹ thuật dân dụng khác",
    "4321": "Lắp đặt hệ thống điện",
    "4330": "Hoàn thiện công trình xây dựng",
    "4511": "Bán buôn ô tô và xe có động cơ khác",
    "4520": "Bảo dưỡng, sửa chữa ô tô và xe có động cơ khác",
    "4530": "Bán phụ tùng và các bộ phận phụ trợ của ô tô và xe có động cơ khác",
    "4610": "Đại lý, môi giới, đấu giá hàng hóa",
    "4620": "Bán buôn nông, lâm sản nguyên liệu (trừ gỗ, tre, nứa) và động vật sống",
    "4632": "Bán buôn thực phẩm",
    "4641": "Bán buôn vải, hàng may mặc, giày dép",
    "4659": "Bán buôn máy móc, thiết bị và phụ tùng máy khác",
    "4663": "Bán buôn vật liệu, thiết bị lắp đặt khác trong xây dựng",
    "4669": "Bán buôn chuyên doanh khác chưa được phân vào đâu",
    "4711": "Bán lẻ lương thực, thực phẩm, đồ uống, thuốc lá, thuốc lào chiếm tỷ trọng lớn trong các cửa hàng "
            "kinh doanh tổng hợp",
    "4933": "Vận tải hàng hóa bằng đường bộ",
    "5012": "Vận tải hàng hóa ven biển và viễn dương",
    "5210": "Kho bãi và lưu giữ hàng hóa",
    "5224": "Bốc xếp hàng hóa",
    "5229": "Hoạt động dịch vụ hỗ trợ khác liên quan đến vận tải",
    "5510": "Dịch vụ lưu trú ngắn ngày",
    "5610": "Nhà hàng và các dịch vụ ăn uống phục vụ lưu động",
    "6201": "Lập trình máy vi tính",
    "6810": "Kinh doanh bất động sản, quyền sử dụng đất thuộc chủ sở hữu, chủ sử dụng hoặc đi thuê",
    "7020": "Hoạt động tư vấn quản lý",
    "7110": "Hoạt động kiến trúc và tư vấn kỹ thuật có liên quan",
    "7912": "Điều hành tua du lịch",
    "8299": "Hoạt động dịch vụ hỗ trợ kinh doanh khác còn lại chưa được phân vào đâu",
    "8559": "Giáo dục khác chưa được phân vào đâu",
}
SECTORS = (  # (words in the Vietnamese name, in the English name, VSIC codes with the main activity first)
    ("THƯƠNG MẠI VÀ DỊCH VỤ", "TRADING AND SERVICES", ("4669", "4610", "4659", "4663", "4632")),
    ("XÂY DỰNG", "CONSTRUCTION", ("4102", "4101", "4290", "4321", "4330", "7110")),
    ("VẬN TẢI BIỂN", "SHIPPING", ("5012", "5229", "5224", "5210")),
    ("LOGISTICS", "LOGISTICS", ("5229", "5210", "5224", "4933", "5012")),
    ("VẬN TẢI", "TRANSPORT", ("4933", "5229", "5210", "4520")),
    ("ĐẦU TƯ VÀ PHÁT TRIỂN", "INVESTMENT AND DEVELOPMENT", ("6810", "4101", "7020", "4290")),
    ("CÔNG NGHỆ", "TECHNOLOGY", ("6201", "7020", "4659")),
    ("THỰC PHẨM", "FOOD", ("1079", "4632", "4711", "5610")),
    ("MAY MẶC", "GARMENT", ("1410", "4641")),
    ("CƠ KHÍ", "MECHANICAL ENGINEERING", ("2511", "4659", "4321", "3011")),
    ("ĐÓNG TÀU", "SHIPBUILDING", ("3011", "2511", "5229")),
    ("THỦY SẢN", "SEAFOOD", ("0321", "4620", "1079", "4632")),
    ("DU LỊCH", "TOURISM", ("7912", "5510", "5610", "4933")),
    ("GIÁO DỤC", "EDUCATION", ("8559", "7020")),
    ("Ô TÔ", "AUTOMOBILE", ("4511", "4520", "4530", "4933")),
)
GENERAL_ACTIVITIES = ("4669", "8299", "7020", "4610")
DISTINCTIVE = ("HẢI ĐĂNG", "MINH PHÁT", "THÀNH CÔNG", "HOÀNG LONG", "AN PHÚ", "PHÚ THÀNH", "ĐẠI DƯƠNG", "BẢO AN",
               "TÂN CẢNG", "BẠCH ĐẰNG", "ĐỒ SƠN", "CÁT BÀ", "HỒNG PHÚC", "VIỆT HẢI", "NAM TRIỆU", "KIẾN AN",
               "THUẬN PHÁT", "TRƯỜNG THỊNH", "QUANG MINH", "SAO MAI", "ÁNH DƯƠNG", "THIÊN PHÚ", "HƯNG THỊNH",
               "PHƯƠNG ĐÔNG", "GIA BẢO", "KHÁNH LINH", "ĐÔNG Á", "VẠN XUÂN", "HOÀNG GIA", "NHẬT MINH", "PHÚC LỘC",
               "TÂM ĐỨC", "THỊNH VƯỢNG", "HẢI AN", "LẠCH TRAY", "BÌNH MINH", "KIM NGÂN", "HOA SEN", "TRUNG KIÊN",
               "ĐỨC THỊNH", "LONG HẢI", "MẠNH HÙNG", "THÁI BÌNH DƯƠNG", "HẢI HÀ", "TIẾN ĐẠT", "VIỆT NHẬT")
STREETS = ("Lạch Tray", "Trần Phú", "Điện Biên Phủ", "Lê Thánh Tông", "Văn Cao", "Nguyễn Văn Linh", "Tô Hiệu",
           "Hoàng Văn Thụ", "Lê Lợi", "Đà Nẵng", "Cầu Đất", "Lê Hồng Phong", "Trần Nguyên Hãn", "Hùng Vương",
           "Nguyễn Đức Cảnh", "Phạm Văn Đồng", "Ngô Quyền", "Trần Hưng Đạo")
FOREIGN_MEMBERS = (("KIM MIN JUN", "Hàn Quốc"), ("PARK JI HOON", "Hàn Quốc"), ("TANAKA HIROSHI", "Nhật Bản"),
                   ("SATO KENJI", "Nhật Bản"), ("CHEN WEI", "Trung Quốc"), ("TAN WEI MING", "Singapore"))
ID_KINDS = {"1": "Căn cước công dân", "2": "Chứng minh nhân dân"}
ID_ISSUERS = {"1": "Cục Cảnh sát quản lý hành chính về trật tự xã hội", "2": "Công an thành phố Hải Phòng"}

NAME_FAULTS = ("rep_name_mismatch", "name_old_tone", "name_upper", "name_no_diacritics", "name_nfd")
LIST_FAULTS = frozenset(RESPONSE_FAULTS) | frozenset(RECORD_FAULTS)
DETAIL_FAULTS = frozenset(RESPONSE_FAULTS)
_DAY_TEXT = re.compile(r"\d{2}/\d{2}/\d{4}")


# -- days -------------------------------------------------------------------------------------------

def day_of(epoch: int) -> int:
    """The +07:00 calendar day (days since 1970-01-01) of an epoch second: dossiers carry days only."""
    return (int(epoch) + 7 * 3600) // DAY_S


def day_of_date(value: date) -> int:
    return value.toordinal() - date(1970, 1, 1).toordinal()


def day_texts(days: np.ndarray) -> list[str]:
    """dd/MM/yyyy of a column of day numbers (the registry's wire format for dates)."""
    return timefmt.vn_day_column(np.asarray(days, np.int64) * DAY_S - 7 * 3600)


def day_text(day: int) -> str:
    return day_texts(np.array([day]))[0] if day >= 0 else ""


def history_window(as_of: int) -> tuple[int, int]:
    """First and last day of the dossier history: the ``HISTORY_YEARS`` years before ``as_of``."""
    last = day_of(as_of - 1)
    start = date.fromordinal(date(1970, 1, 1).toordinal() + last + 1)
    try:
        start = start.replace(year=start.year - HISTORY_YEARS)
    except ValueError:  # 29 February
        start = start.replace(year=start.year - HISTORY_YEARS, day=28)
    return day_of_date(start), last


def parse_day(text: str) -> int:
    """A dd/MM/yyyy query value as a day number; ``ValueError`` says what is wrong."""
    try:
        if not _DAY_TEXT.fullmatch(text or ""):
            raise ValueError
        return day_of_date(datetime.strptime(text, timefmt.VN_DAY).date())
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not a date in dd/MM/yyyy") from None


# -- enterprise codes -------------------------------------------------------------------------------

def enterprise_codes(rng: np.random.Generator, count: int, prefix: str = TAX_OFFICE_PREFIX) -> list[str]:
    """``count`` distinct valid codes: ``prefix``, random serial, check digit.

    Serials whose nine leading digits have no check digit (the formula gives 10) are skipped, never
    patched, because no real code starts with them.
    """
    free = 9 - len(prefix)
    space = 10 ** free
    if count > space // 2:
        raise ValueError(f"cannot draw {count} codes under prefix {prefix!r}")
    codes: list[str] = []
    for serial in rng.choice(space, size=min(space, count * 5 // 4 + 32), replace=False).tolist():
        head = f"{prefix}{serial:0{free}d}"
        digit = enterprise_check_digit(head)
        if digit is not None:
            codes.append(f"{head}{digit}")
            if len(codes) == count:
                return codes
    raise RuntimeError("too few serials with a check digit; draw more")


# -- history ----------------------------------------------------------------------------------------

@dataclass
class History:
    """Each enterprise's life (founding, final status) and the dossiers processed in the window."""

    founded: np.ndarray  # day
    status: np.ndarray  # int8 1..6
    status_day: np.ndarray  # day of the last status change, -1 for 01
    changes: np.ndarray  # approved DKTD ever (before and in the window)
    last_amend: np.ndarray  # day of the last approved DKTD, -1 if none
    last_change: np.ndarray  # day of the last change of any kind (for the 2025 address codes)
    d_eid: np.ndarray  # dossiers, in (PROCESSED_DATE, IN_JOURNAL_NO) order
    d_kind: np.ndarray
    d_processed: np.ndarray
    d_receipt: np.ndarray
    d_approved: np.ndarray
    d_year: np.ndarray  # receipt year and number within it: IN_JOURNAL_NO
    d_seq: np.ndarray


def draw_history(rng: np.random.Generator, n: int, first: int, last: int) -> History:
    """Founding days, final statuses and the dossiers that explain them, vectorised."""
    founded = _founding_days(rng, n, last)
    lo = np.maximum(founded + 1, first)  # first day a later dossier can fall in the window
    status, status_day = _statuses(rng, lo, last)
    paused, resumed = _pauses(rng, status, lo, last)
    pause = paused >= 0
    parts = [_changes_in_window(rng, founded, status, status_day, lo, first, last)]
    new = np.flatnonzero(founded >= first)
    parts.append((new, founded[new], DKM, np.ones(len(new), bool)))
    for kind, mask, days in ((TN, status == 2, status_day), (TN, pause, paused), (HDTL, pause, resumed),
                             (GT, (status == 3) | (status == 4), status_day)):
        idx = np.flatnonzero(mask)
        parts.append((idx, days[idx], kind, np.ones(len(idx), bool)))
    eid = np.concatenate([p[0] for p in parts])
    processed = np.concatenate([p[1] for p in parts])
    kind = np.concatenate([np.full(len(p[0]), p[2], np.int8) for p in parts])
    approved = np.concatenate([p[3] for p in parts])
    return _assemble(rng, n, founded, status, status_day, first, eid, kind, processed, approved)


def _founding_days(rng: np.random.Generator, n: int, last: int) -> np.ndarray:
    """Ages exponential (mean 7 years), truncated at 30 (the 1990s enterprise laws); sorted, so eid follows age."""
    mean, oldest = 7 * YEAR_D, 30 * YEAR_D
    age = (-mean * np.log1p(-rng.random(n) * -np.expm1(-oldest / mean))).astype(np.int64)
    return np.sort(last - age)


def _statuses(rng: np.random.Generator, lo: np.ndarray, last: int) -> tuple[np.ndarray, np.ndarray]:
    """Final status and the day it was reached (-1 for 01), at least 20 days after ``lo``.

    A suspension (02) started within the last 330 days, so the year it runs has not ended by ``as_of``.
    """
    status = (rng.choice(len(STATUSES), size=len(lo), p=_shares(STATUSES)) + 1).astype(np.int8)
    earliest = np.where(status == 2, np.maximum(lo + 20, last - 330), lo + 20)
    status[earliest > last] = 1
    return status, np.where(status == 1, -1, earliest + _below(rng, last - earliest + 1))


def _pauses(rng: np.random.Generator, status: np.ndarray, lo: np.ndarray, last: int) -> tuple[np.ndarray, np.ndarray]:
    """Days of a suspension and of the resumption that ended it (-1 where none), for some operating enterprises."""
    pause = (status == 1) & (rng.random(len(lo)) < 0.06) & (last - lo - 40 > 0)
    paused = lo + 10 + _below(rng, last - lo - 40)
    resumed = paused + 30 + _below(rng, np.minimum(last - paused - 30, 335))
    return np.where(pause, paused, -1), np.where(pause, resumed, -1)


def _changes_in_window(rng: np.random.Generator, founded: np.ndarray, status: np.ndarray, status_day: np.ndarray,
                       lo: np.ndarray, first: int, last: int) -> tuple:
    """``DKTD`` dossiers while the enterprise operates; at least one for every enterprise older than the window."""
    end = np.where(status == 1, last + 1, status_day)
    room = np.maximum(end - lo, 0)
    count = rng.poisson(0.45 * room / YEAR_D)
    count = np.where(founded < first, np.maximum(count, 1), count)
    count = np.where(room > 0, count, 0)
    eid = np.repeat(np.arange(len(founded)), count)
    days = lo[eid] + _below(rng, room[eid])
    rank = np.arange(len(eid)) - np.repeat(np.cumsum(count) - count, count)
    approved = ~((rank > 0) & (rng.random(len(eid)) < 0.04))  # the first change of each is never refused
    return eid, days, DKTD, approved


def _assemble(rng: np.random.Generator, n: int, founded: np.ndarray, status: np.ndarray, status_day: np.ndarray,
              first: int, eid: np.ndarray, kind: np.ndarray, processed: np.ndarray, approved: np.ndarray) -> History:
    delay = rng.integers(0, 4, len(eid)) + np.where(rng.random(len(eid)) < 0.05, rng.integers(1, 8, len(eid)), 0)
    receipt = processed - delay
    by_receipt = np.lexsort((kind, eid, receipt))
    year = np.empty(len(eid), np.int64)
    year[by_receipt] = _years(receipt[by_receipt])
    seq = np.empty(len(eid), np.int64)
    sorted_years = year[by_receipt]
    seq[by_receipt] = np.arange(len(eid)) - np.searchsorted(sorted_years, sorted_years, "left") + 1
    order = np.lexsort((seq, year, processed))
    eid, kind, processed, receipt, approved, year, seq = (a[order] for a in (eid, kind, processed, receipt, approved,
                                                                             year, seq))
    changes, last_amend = _amendments(rng, n, founded, first, eid[approved & (kind == DKTD)],
                                      processed[approved & (kind == DKTD)])
    last_change = np.maximum(np.maximum(founded, last_amend), status_day)
    np.maximum.at(last_change, eid[approved], processed[approved])
    return History(founded, status, status_day, changes, last_amend, last_change, eid, kind, processed, receipt,
                   approved, year, seq)


def _amendments(rng: np.random.Generator, n: int, founded: np.ndarray, first: int, eid: np.ndarray,
                days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number and last day of approved changes: those before the window are drawn, those in it counted."""
    room = np.maximum(first - founded - 1, 0)
    before = rng.poisson(0.3 * room / YEAR_D)
    latest = rng.random(n) ** (1 / np.maximum(before, 1))  # the largest of `before` uniform draws
    last_amend = np.where(before > 0, founded + 1 + (latest * room).astype(np.int64), -1)
    np.maximum.at(last_amend, eid, days)
    return before + np.bincount(eid, minlength=n), last_amend


def _below(rng: np.random.Generator, bound: np.ndarray) -> np.ndarray:
    """A uniform integer in [0, bound) per element (0 where bound ≤ 1)."""
    bound = np.maximum(np.asarray(bound, np.int64), 1)
    return (rng.random(len(bound)) * bound).astype(np.int64)


def _shares(table: tuple) -> np.ndarray:
    p = np.array([row[2] for row in table])
    return p / p.sum()


def _years(days: np.ndarray) -> np.ndarray:
    return np.asarray(days, np.int64).astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970


# -- people -----------------------------------------------------------------------------------------

def _fold(text: str) -> str:
    """§1.1 comparison form: what must differ for a name to be a real mismatch, not a spelling."""
    return "".join(names.strip_diacritics(text).upper().split())


def adult_pool(r: Residents) -> np.ndarray:
    """Living residents aged 20 or more: who may represent or own an enterprise."""
    age = (r.as_of - r.birth) / (YEAR_D * DAY_S)
    pool = np.flatnonzero((r.status == 0) & (age >= 20))
    return pool if len(pool) else np.arange(r.n)


def mismatched_name(r: Residents, pid: int, draw: int) -> str:
    """A name the registry may hold instead of the true one: another given name, or a typo in it."""
    family, middle, given = r.name_parts(pid)
    if draw % 2 == 0:
        pool = names.GIVEN[int(r.gender[pid]) - 1]
        for step in range(len(pool)):
            other = pool[(draw // 2 + step) % len(pool)]
            if _fold(other) != _fold(given):
                return names.full_name(family, middle, other)
    return names.full_name(family, middle, typo(given, draw // 2))


def typo(word: str, draw: int) -> str:
    """``word`` with a letter after the first dropped, doubled or swapped back, visibly (after folding)."""
    i = 1 + draw % (len(word) - 1)
    options = (word[:i] + word[i + 1:], word[:i] + word[i] + word[i:],
               word[:i - 1] + word[i] + word[i - 1] + word[i + 1:] if i >= 2 else word)
    for k in range(3):
        candidate = options[(draw // 7 + k) % 3]
        if len(candidate) >= 2 and _fold(candidate) != _fold(word):
            return candidate
    return word + word[-1]


def served_name(r: Residents, pid: int, flags: dict[str, bool], draw: int) -> tuple[str, list[str]]:
    """The representative's name as the registry serves it, and the faults that changed it."""
    text = r.full_name(pid)
    applied = []
    steps: tuple[tuple[str, Callable[[str], str]], ...] = (
        ("rep_name_mismatch", lambda _: mismatched_name(r, pid, draw)),
        ("name_old_tone", names.old_tone_placement),
        ("name_upper", str.upper),
        ("name_no_diacritics", names.strip_diacritics),
        ("name_nfd", names.to_nfd),
    )
    for fault, change in steps:
        if flags[fault]:
            changed = change(text)
            if changed != text:
                applied.append(fault)
                text = changed
    return text, applied


def served_id(r: Residents, pid: int, u: float, draw: int) -> tuple[str, str, str | None]:
    """(number, MaLoaiGiayToChungThuc, fault) of a representative's ID as variant B serves it."""
    rates = r.data_faults
    true = r.id_text(pid)
    edge = rates.get("id_cmnd_instead", 0)
    if u < edge:
        return (r.cmnd_text(pid), "2", "id_cmnd_instead") if r.cmnd[pid] >= 0 else (true, "1", None)
    if u < (edge := edge + rates.get("id_typo", 0)):
        pos = draw % len(true)
        digit = (int(true[pos]) + 1 + (draw // len(true)) % 9) % 10
        return true[:pos] + str(digit) + true[pos + 1:], "1", "id_typo"
    if u < edge + rates.get("id_swap", 0):
        spots = [i for i in range(len(true) - 1) if true[i] != true[i + 1]]
        if spots:
            i = spots[draw % len(spots)]
            return true[:i] + true[i + 1] + true[i] + true[i + 2:], "1", "id_swap"
    return true, "1", None


# -- the registry -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Representative:
    pid: int
    name: str  # as served
    id_number: str  # as served (variant B)
    id_kind: str  # MaLoaiGiayToChungThuc
    issued: int  # day


@dataclass(frozen=True)
class Member:
    name: str
    amount: int
    ratio: float
    country: str
    pid: int  # -1 for a foreign investor (not a resident)


class EnterpriseRegistry:
    """The business registry's enterprises and dossiers, with live changes made while clients page."""

    def __init__(self, residents: Residents, truth: GroundTruth, seed: int = 0) -> None:
        self.r = r = residents
        rng = np.random.default_rng([seed, STREAM])
        self.n = n = max(MIN_ENTERPRISES, round(r.n / RESIDENTS_PER_ENTERPRISE))
        self.first_day, self.last_day = history_window(r.as_of)
        self.h = draw_history(rng, n, self.first_day, self.last_day)
        self.codes = enterprise_codes(rng, n)
        self.eid_of = {code: eid for eid, code in enumerate(self.codes)}
        self.internal_id = 1_000_000 + np.arange(n)
        self.type = rng.choice(len(TYPES), size=n, p=_shares(TYPES)).astype(np.int8)
        self.sector = rng.integers(0, len(SECTORS), n)
        self.capital = self._capital(rng)
        self._draw_names(rng)
        self._draw_address(rng)
        self.activities = self._activities(rng)
        self.reps = self._representatives(rng, truth)
        self.members = self._members(rng)
        self.suspension_reason = rng.integers(0, len(SUSPENSION_REASONS), n)
        self.journal = [f"{y}-{s:06d}" for y, s in zip(self.h.d_year.tolist(), self.h.d_seq.tolist())]
        self._lock = threading.Lock()
        self.live: list[tuple[int, str, int, int]] = []  # (processed day, journal, eid, receipt day)
        self.live_changes: dict[int, tuple[int, int]] = {}  # eid -> (extra changes, last amend day)
        self._next_seq = {int(y): int(self.h.d_seq[self.h.d_year == y].max()) + 1 for y in np.unique(self.h.d_year)}
        self._record_truth(truth)

    # -- drawing ----------------------------------------------------------------------------------
    def _capital(self, rng: np.random.Generator) -> np.ndarray:
        median = np.array(CAPITAL_MEDIAN)[self.type]
        raw = median * rng.lognormal(0.0, 1.1, self.n)
        return np.maximum(np.round(raw / 1e7) * 1e7, 1e8).astype(np.int64)

    def _draw_names(self, rng: np.random.Generator) -> None:
        distinctive = rng.integers(0, len(DISTINCTIVE), self.n)
        foreign = rng.random(self.n) < 0.7
        short = rng.random(self.n) < 0.6
        self.name, self.name_f, self.short_name, self.old_code = [], [], [], []
        taken: dict[str, int] = {}
        serial = rng.integers(1, 10**6, self.n)
        for eid in range(self.n):
            kind = TYPES[self.type[eid]]
            sector_vn, sector_en, _ = SECTORS[self.sector[eid]]
            mark = DISTINCTIVE[distinctive[eid]]
            base = f"{kind[3]} {sector_vn} {mark}"
            count = taken[base] = taken.get(base, 0) + 1
            suffix = f" {count}" if count > 1 else ""
            self.name.append(base + suffix)
            ascii_mark = names.strip_diacritics(mark) + suffix
            has_f = bool(foreign[eid] and kind[4])
            self.name_f.append(f"{ascii_mark} {sector_en} {kind[4]}" if has_f else "")
            self.short_name.append(f"{ascii_mark} {kind[5]}" if has_f and short[eid] else "")
            before_2010 = self.h.founded[eid] < day_of_date(date(2010, 7, 1))
            self.old_code.append(f"{TAX_OFFICE_PREFIX}0{kind[0][1]}{serial[eid]:06d}" if before_2010 else "")

    def _draw_address(self, rng: np.random.Generator) -> None:
        r = self.r
        self.unit_index = rng.integers(0, len(r.units), self.n)
        house = rng.integers(1, 400, self.n)
        street = rng.integers(0, len(STREETS), self.n)
        self.street = [f"Thôn {h % 12 + 1}" if r.units[u].ward.startswith("Xã") else f"Số {h} đường {STREETS[s]}"
                       for u, h, s in zip(self.unit_index.tolist(), house.tolist(), street.tolist())]
        changed = self.h.last_change >= day_of(ts(REFORM_2025))
        has_new = np.array([r.unit_2025(unit) is not None for unit in r.units], bool)[self.unit_index]
        self.addr_2025 = changed & has_new & (rng.random(self.n) < r.data_faults.get("address_2025_codes", 0))

    def _activities(self, rng: np.random.Generator) -> list[tuple[str, ...]]:
        extra = rng.integers(0, 6, self.n)
        keys = rng.random((self.n, len(VSIC)))
        out = []
        for eid in range(self.n):
            codes = SECTORS[self.sector[eid]][2]
            pool = sorted(set(codes[1:] + GENERAL_ACTIVITIES) - {codes[0]})
            picked = [pool[i] for i in np.argsort(keys[eid, :len(pool)])[: extra[eid]]]
            out.append((codes[0], *picked))
        return out

    def _representatives(self, rng: np.random.Generator, truth: GroundTruth) -> list[tuple[Representative, ...]]:
        r, pool = self.r, adult_pool(self.r)
        pids = pool[rng.integers(0, len(pool), (self.n, 2))]
        two = np.isin(self.type, (MANY_MEMBERS, JOINT_STOCK)) & (rng.random(self.n) < 0.12) & (pids[:, 0] != pids[:, 1])
        flags = {f: rng.random((self.n, 2)) < r.data_faults.get(f, 0) for f in NAME_FAULTS}
        draws = rng.integers(0, 1 << 30, (self.n, 2))
        id_u = rng.random((self.n, 2))
        issue_u = rng.random((self.n, 2))
        out = []
        for eid in range(self.n):
            slots = (0, 1) if two[eid] else (0,)
            out.append(tuple(
                self._representative(eid, int(pids[eid, j]), {f: bool(flags[f][eid, j]) for f in flags},
                                     int(draws[eid, j]), float(id_u[eid, j]), float(issue_u[eid, j]), truth)
                for j in slots))
        return out

    def _representative(self, eid: int, pid: int, flags: dict[str, bool], draw: int, id_u: float, issue_u: float,
                        truth: GroundTruth) -> Representative:
        """One representative as served, its faults written to the ground truth."""
        r = self.r
        name, faults = served_name(r, pid, flags, draw)
        key, true_name = self.codes[eid], r.full_name(pid)
        for fault in faults:
            if fault != "name_upper":  # case is not a fault (§0: consumers normalise it)
                truth.anomaly(SYSTEM, DATASET, key, "LEGAL_NAMES", fault, true_name, name)
        number, kind, id_fault = served_id(r, pid, id_u, draw >> 3)
        if id_fault:
            truth.anomaly(SYSTEM, DATASET, key, "SoGiayChungThuc", id_fault, r.id_text(pid), number)
        return Representative(pid, name, number, kind, self._issue_day(pid, kind, issue_u))

    def _issue_day(self, pid: int, kind: str, u: float) -> int:
        """When the served ID card was issued: a CMND before 2016, a personal-ID card since."""
        adult = day_of(int(self.r.birth[pid])) + int(14 * YEAR_D)
        cutoff = day_of_date(date(2016, 1, 1))
        lo, hi = (adult, max(cutoff, adult + 1)) if kind == "2" else (max(adult, cutoff), self.last_day - 30)
        return lo + int(u * max(hi - lo, 1))

    def _members(self, rng: np.random.Generator) -> list[tuple[Member, ...]]:
        pool = adult_pool(self.r)
        others = pool[rng.integers(0, len(pool), (self.n, 5))]
        counts = rng.integers(0, 3, self.n)
        weights = rng.gamma(2.0, size=(self.n, 5))
        foreign = rng.random(self.n) < 0.05
        foreign_pick = rng.integers(0, len(FOREIGN_MEMBERS), self.n)
        out = []
        for eid in range(self.n):
            lo, hi = MEMBER_COUNTS[int(self.type[eid])]
            want = min(lo + int(counts[eid]), hi)
            people = self._member_people(eid, others[eid], want)
            if foreign[eid] and len(people) > len(self.reps[eid]) and self.type[eid] in (MANY_MEMBERS, JOINT_STOCK):
                people[-1] = (-1, *FOREIGN_MEMBERS[foreign_pick[eid]])
            out.append(self._shares_of(eid, people, weights[eid, :len(people)]))
        return out

    def _member_people(self, eid: int, candidates: np.ndarray, want: int) -> list[tuple[int, str, str]]:
        """(pid, name as served, country): the representatives first (owners usually direct), then others."""
        people = [(rep.pid, rep.name, "Việt Nam") for rep in self.reps[eid]][:want]
        for pid in candidates.tolist():
            if len(people) >= want:
                break
            if all(pid != p for p, _, _ in people):
                people.append((pid, self.r.full_name(pid), "Việt Nam"))
        return people

    def _shares_of(self, eid: int, people: list[tuple[int, str, str]], weights: np.ndarray) -> tuple[Member, ...]:
        capital, shares = int(self.capital[eid]), (weights + 0.5).tolist()  # nobody holds (almost) nothing
        total = sum(shares)
        amounts = [int(capital * w / total // 1e6) * 1_000_000 for w in shares[:-1]]  # floor: the last keeps > 0
        amounts.append(capital - sum(amounts))
        return tuple(Member(name, amount, round(100 * amount / capital, 2), country, pid)
                     for (pid, name, country), amount in zip(people, amounts))

    # -- ground truth -----------------------------------------------------------------------------
    def _record_truth(self, truth: GroundTruth) -> None:
        keys = self.codes
        truth.record_many(SYSTEM, DATASET, keys, "enterprise", "enterprise", [enterprise_key(e) for e in range(self.n)])
        for role, people in (("legal_rep", [(rep.pid for rep in reps) for reps in self.reps]),
                             ("member", [(m.pid for m in ms if m.pid >= 0) for ms in self.members])):
            pairs = [(keys[eid], person_key(pid)) for eid, pids in enumerate(people) for pid in pids]
            truth.record_many(SYSTEM, DATASET, [k for k, _ in pairs], role, "person", [p for _, p in pairs])
        idx = np.flatnonzero(self.addr_2025).tolist()
        truth.anomaly_many(SYSTEM, DATASET, [keys[e] for e in idx], "HOAdress", "address_2025_codes",
                           [self.unit(e, False).ward_code for e in idx], [self.unit(e, True).ward_code for e in idx])
        truth.add_table("enterprises", self.true_table())

    def true_table(self) -> pa.Table:
        """The enterprises' true attributes, to score links and golden records against."""
        h = self.h
        return pa.table({
            "enterprise_key": [enterprise_key(e) for e in range(self.n)],
            "enterprise_code": self.codes,
            "name": self.name,
            "type_id": [TYPES[t][0] for t in self.type],
            "status": [STATUSES[s - 1][0] for s in h.status],
            "founding_date": pa.array(h.founded.astype("datetime64[D]")),
            "capital": self.capital,
            "ward_code": [self.unit(e, False).ward_code for e in range(self.n)],
            "representatives": pa.array([[person_key(rep.pid) for rep in reps] for reps in self.reps],
                                        pa.list_(pa.string())),
        })

    # -- reading ----------------------------------------------------------------------------------
    def unit(self, eid: int, served: bool = True) -> Unit:
        """The head office's commune: in 19/2025 codes when the registry serves those for ``eid``."""
        old = self.r.units[int(self.unit_index[eid])]
        return (self.r.unit_2025(old) or old) if served and self.addr_2025[eid] else old

    def amendments(self, eid: int) -> tuple[int, int]:
        """(NUMBER_CHANGES, LAST_AMEND_DATE day or -1), including live changes."""
        extra, last = self.live_changes.get(eid, (0, -1))
        return int(self.h.changes[eid]) + extra, max(int(self.h.last_amend[eid]), last)

    def window(self, first: int, last: int) -> tuple[int, int, list[tuple[int, str, int, int]]]:
        """Dossiers processed in [first, last]: a slice of the history, then the live ones."""
        days = self.h.d_processed
        lo, hi = int(np.searchsorted(days, first, "left")), int(np.searchsorted(days, last, "right"))
        with self._lock:
            live = [row for row in self.live if first <= row[0] <= last]
        return lo, hi, live

    def dossier_rows(self, lo: int, hi: int) -> list[dict[str, Any]]:
        """``danhSachHoSo`` rows of history dossiers ``lo:hi``."""
        h = self.h
        receipt = h.d_receipt[lo:hi]
        dates = zip(day_texts(receipt), day_texts(receipt + 3), day_texts(h.d_processed[lo:hi]))
        return [self._row(self.journal[i], int(h.d_kind[i]), int(h.d_eid[i]), bool(h.d_approved[i]), *texts)
                for i, texts in zip(range(lo, hi), dates)]

    def live_row(self, row: tuple[int, str, int, int]) -> dict[str, Any]:
        processed, journal, eid, receipt = row
        return self._row(journal, DKTD, eid, True, day_text(receipt), day_text(receipt + 3), day_text(processed))

    def _row(self, journal: str, kind: int, eid: int, approved: bool, receipt: str, plan: str,
             processed: str) -> dict[str, Any]:
        code = self.codes[eid]
        return {"IN_JOURNAL_NO": journal, "DOCUMENT_TYPE": DOCUMENT_TYPES[kind], "ENTERPRISE_GDT_CODE": code,
                "ENTERPRISE_CODE": code, "NAME": self.name[eid], "SITE_ID": SITE_ID,
                "PROCESS_STATUS": APPROVED if approved else REFUSED, "RECEIPT_DATE": receipt, "PLAN_DATE": plan,
                "PROCESSED_DATE": processed}

    # -- live changes -----------------------------------------------------------------------------
    def amend_now(self, eid: int, now: float) -> tuple[int, str, int, int]:
        """Register a change of ``eid`` processed today (server clock, never before ``as_of``)."""
        today = max(day_of(int(now)), day_of(self.r.as_of))
        with self._lock:
            year = int(_years(np.array([today]))[0])
            seq = self._next_seq.get(year, 1)
            self._next_seq[year] = seq + 1
            row = (today, f"{year}-{seq:06d}", eid, today)
            self.live.append(row)
            extra, _ = self.live_changes.get(eid, (0, -1))
            self.live_changes[eid] = (extra + 1, today)
        return row

    def changeable(self) -> np.ndarray:
        """Enterprises that may still register a change (operating or suspended)."""
        return np.flatnonzero(self.h.status <= 2)


# -- rendering ----------------------------------------------------------------------------------------

def detail_a(reg: EnterpriseRegistry, eid: int) -> dict[str, Any]:
    """Variant A's ``Data`` for one enterprise."""
    h, kind = reg.h, TYPES[reg.type[eid]]
    changes, amended = reg.amendments(eid)
    unit = reg.unit(eid)
    main = {
        "ENTERPRISE_ID": int(reg.internal_id[eid]), "ENTERPRISE_GDT_CODE": reg.codes[eid],
        "IMP_BUSINESS_CODE": reg.old_code[eid], "ENTERPRISE_TYPE_ID": kind[0], "ENTERPRISE_TYPE_NAME": kind[1],
        "NAME": reg.name[eid], "SHORT_NAME": reg.short_name[eid], "NAME_F": reg.name_f[eid],
        "FOUNDING_DATE": day_text(int(h.founded[eid])), "LAST_AMEND_DATE": day_text(amended),
        "NUMBER_CHANGES": changes, "ENTERPRISE_STATUS": STATUSES[h.status[eid] - 1][0],
        "LEGAL_NAMES": ";".join(rep.name for rep in reg.reps[eid]), "CAPITAL_AMOUNT": int(reg.capital[eid]),
    }
    address = {
        "CityID": unit.province_code, "CityName": unit.province, "DistrictID": unit.district_code,
        "DistrictName": unit.district, "WardID": unit.ward_code, "WardName": unit.ward,
        "StreetNumber": reg.street[eid], "AddressFullText": full_address(reg.street[eid], unit),
    }
    activities = [{"CODE": code, "NAME": VSIC[code], "IS_MAIN": "Y" if i == 0 else "N"}
                  for i, code in enumerate(reg.activities[eid])]
    members = [{"MEMBER_NAME": m.name, "AMOUNT": m.amount, "RATIO_PERCENT": m.ratio, "COUNTRY": m.country}
               for m in reg.members[eid]]
    return {"MainInformation": main, "HOAdress": address, "BusinessActivity": activities, "Member": members}


def detail_b(reg: EnterpriseRegistry, eid: int) -> dict[str, Any]:
    """Variant B's ``GetEntCert`` item for one enterprise."""
    h, kind = reg.h, TYPES[reg.type[eid]]
    changes, amended = reg.amendments(eid)
    unit = reg.unit(eid)
    return {
        "MaNoiBo": int(reg.internal_id[eid]), "MaSoDoanhNghiep": reg.codes[eid],
        "SoGCNDKKD": reg.old_code[eid] or reg.codes[eid], "MaLoaiHinhDN": kind[0], "LoaiHinhDN": kind[1],
        "TenTiengViet": reg.name[eid], "TenNuocNgoai": reg.name_f[eid], "TenVietTat": reg.short_name[eid],
        "NgayDangKyLanDau": day_text(int(h.founded[eid])), "NgayDangKyThayDoi": day_text(amended),
        "SoLanDangKyThayDoi": changes, "TinhTrangPhapLy": [legal_status(reg, eid)],
        "DaiDienPhapLuat": [{"ThongTinCaNhan": [person_b(rep)]} for rep in reg.reps[eid]],
        "DiaChiTruSo": [{"DiaChi": [{
            "QuocGia": "Việt Nam", "MaQuocGia": "VN", "TenTinhThanh": unit.province, "MaTinhThanh": unit.province_code,
            "TenQuanHuyen": unit.district, "MaQuanHuyen": unit.district_code, "TenPhuongXa": unit.ward,
            "MaPhuongXa": unit.ward_code, "DiaChi": full_address(reg.street[eid], unit), "SoNha": reg.street[eid]}]}],
        "NganhNgheKinhDoanh": [{"MaNganh": code, "TenNganh": VSIC[code], "LaNganhChinh": i == 0}
                               for i, code in enumerate(reg.activities[eid])],
    }


def legal_status(reg: EnterpriseRegistry, eid: int) -> dict[str, str]:
    status = int(reg.h.status[eid])
    code, name, _ = STATUSES[status - 1]
    start = int(reg.h.status_day[eid]) if status == 2 else -1
    return {"TinhTrangPhapLy": name, "MaTinhTrangPhapLy": code, "NgayBatDauTamNgung": day_text(start),
            "NgayKetThucTamNgung": day_text(start + 364) if start >= 0 else "",
            "LyDoTamNgung": SUSPENSION_REASONS[reg.suspension_reason[eid]] if start >= 0 else ""}


def person_b(rep: Representative) -> dict[str, str]:
    return {"HoVaTen": rep.name, "LoaiGiayToChungThuc": ID_KINDS[rep.id_kind], "MaLoaiGiayToChungThuc": rep.id_kind,
            "SoGiayChungThuc": rep.id_number, "NgayCap": day_text(rep.issued), "NoiCap": ID_ISSUERS[rep.id_kind],
            "QuocTich": "Việt Nam", "MaQuocTich": "VN"}


def full_address(street: str, unit: Unit) -> str:
    return ", ".join(p for p in (street, unit.ward, unit.district, unit.province, "Việt Nam") if p)


# -- the service --------------------------------------------------------------------------------------

class EnvelopeError(ServiceError):
    """An error answered in the operation's own envelope (not the gateway's), with its own HTTP status."""

    def __init__(self, code: int, message: str, http_status: int, shape: Callable[[str], dict[str, Any]]) -> None:
        super().__init__(code, message, http_status=http_status)
        self.payload = shape(f"{self.code} {self.name}: {message}")


def error_body(error: ServiceError) -> dict[str, Any]:
    """The gateway's envelope for auth, rate and injected faults (operations may bring their own)."""
    payload = getattr(error, "payload", None)
    if payload is not None:
        return payload
    return {"Status": 0, "Message": f"{error.code} {error.name}: {error.message}", "ErrorCode": str(error.code),
            "DataCount": 0, "Data": None}


def refused_a(code: int, message: str, data: Any) -> EnvelopeError:
    """Variant A answers a request it cannot serve with HTTP 200 and ``Status: 0``."""
    return EnvelopeError(code, message, 200, lambda text: {"Status": 0, "Message": text, "DataCount": 0, "Data": data})


def refused_b(code: int, message: str, http_status: int) -> EnvelopeError:
    """Variant B's gateway answers with an HTTP error status and an empty ``GetEntCert``."""
    return EnvelopeError(code, message, http_status, lambda text: {"GetEntCert": [], "Message": text})


def query_int(params: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    """A bounded non-negative integer parameter; digits only, so ``1e3`` or ``-1`` is refused, not guessed."""
    text = params.get(name, "")
    if text == "":
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or not lo <= int(text) <= hi:
        raise refused_a(302, f"{name} must be an integer from {lo} to {hi}, got {text[:40]!r}", [])
    return int(text)


def query_window(params: dict[str, str]) -> tuple[int, int]:
    """The requested [from_date, to_date] days: both present, well-formed, in order, at most 5 days."""
    days = []
    for name in ("from_date", "to_date"):
        if not params.get(name):
            raise refused_a(200, f"{name} is required (dd/MM/yyyy)", [])
        try:
            days.append(parse_day(params[name]))
        except ValueError as exc:
            raise refused_a(302, f"{name}: {exc}", []) from None
    first, last = days
    if last < first:
        raise refused_a(500, "to_date is before from_date", [])
    if last - first + 1 > MAX_WINDOW_DAYS:
        raise refused_a(500, f"the window is {last - first + 1} days; at most {MAX_WINDOW_DAYS} are allowed", [])
    return first, last


def msdn_problem(msdn: str) -> str | None:
    """Why ``msdn`` is not a well-formed enterprise code (without echoing megabytes back)."""
    if len(msdn) > 14:
        return f"msdn must be 10 digits optionally followed by -NNN; got {len(msdn)} characters"
    return enterprise_code_problem(msdn)


class BusinessService:
    """§3 over REST: the token endpoint, variant A's list and detail, variant B's detail."""

    def __init__(self, residents: Residents, runtime: SystemRuntime, truth: GroundTruth, seed: int,
                 issuer: TokenIssuer) -> None:
        self.registry = EnterpriseRegistry(residents, truth, seed)
        self.rest = RestSystem(runtime, issuer, error_body)
        self._rng = np.random.default_rng([seed, STREAM + 1])
        self.clock: Callable[[], float] = time.time

    def routes(self) -> list[Route]:
        rest = self.rest
        return [
            rest.token_route(),
            rest.route("/apiCSDLDKDN/danhSachHoSo", self.list_dossiers, method="GET", applicable=LIST_FAULTS),
            rest.route("/apiCSDLDKDN/chiTietDoanhNghiep", self.detail_a, method="GET", applicable=DETAIL_FAULTS),
            rest.route("/apiDKKD/DoanhNghiep/chiTietDoanhNghiep", self.detail_b, method="GET",
                       applicable=DETAIL_FAULTS),
        ]

    def list_dossiers(self, call: RestCall) -> dict[str, Any]:
        params = call.body
        first, last = query_window(params)
        offset = query_int(params, "offset", 0, 0, 10**9)
        limit = query_int(params, "limit", MAX_LIMIT, 1, MAX_LIMIT)
        reg = self.registry
        if call.decision.has("concurrent_update"):
            self._concurrent_update(first, last)
        lo, hi, live = reg.window(first, last)
        total = hi - lo + len(live)
        start = offset - 1 if offset > 0 and call.decision.has("duplicate_record") else offset
        rows = self._rows(lo, hi, live, start, min(offset + limit, total))
        return {"Status": 1, "Message": "", "DataCount": total, "Data": rows}

    def _rows(self, lo: int, hi: int, live: list, start: int, stop: int) -> list[dict[str, Any]]:
        """Rows ``start:stop`` of the window: history dossiers first, then live ones (they are later)."""
        static = hi - lo
        rows = self.registry.dossier_rows(lo + min(start, static), lo + min(stop, static)) if start < static else []
        return rows + [self.registry.live_row(row) for row in live[max(start - static, 0):max(stop - static, 0)]]

    def _concurrent_update(self, first: int, last: int) -> None:
        """An enterprise of this window (else any that can change) registers a change right now."""
        reg = self.registry
        lo, hi, _ = reg.window(first, last)
        candidates = np.intersect1d(reg.h.d_eid[lo:hi], reg.changeable())
        if not len(candidates):
            candidates = reg.changeable()
        if len(candidates):
            reg.amend_now(int(candidates[int(self._rng.integers(len(candidates)))]), self.clock())

    def _enterprise(self, params: dict[str, str], refuse: Callable[[int, str], EnvelopeError]) -> int:
        msdn = params.get("msdn", "")
        if not msdn:
            raise refuse(200, "msdn is required")
        problem = msdn_problem(msdn)
        if problem:
            raise refuse(302, problem)
        eid = self.registry.eid_of.get(msdn)
        if eid is None:
            raise refuse(201, f"no enterprise with code {msdn} is registered in this province")
        return eid

    def detail_a(self, call: RestCall) -> dict[str, Any]:
        eid = self._enterprise(call.body, lambda code, text: refused_a(code, text, None))
        return {"Status": 1, "Message": "", "DataCount": 1, "Data": detail_a(self.registry, eid)}

    def detail_b(self, call: RestCall) -> dict[str, Any]:
        eid = self._enterprise(call.body, lambda code, text: refused_b(code, text, 404 if code == 201 else 400))
        return {"GetEntCert": [detail_b(self.registry, eid)]}
