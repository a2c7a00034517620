"""The administrative procedures (thủ tục hành chính) the sandbox's one-stop-shop systems handle.

One catalogue serves both sides: the one-stop-shop databases (§6) draw their dossiers from it, and the
national portal (§5) answers ``LayDanhSachTTHC`` with it and refuses a dossier whose ``MaTTHC`` it does
not list. The codes have the national catalogue's shape (``1.00NNNN``) but are the sandbox's own.

``days`` is the legal time to resolve, in calendar days (the real rule counts working days; the sandbox
keeps it simple). ``applicant`` is the portal's ``LoaiDoiTuong``: 1 citizen, 2 enterprise. ``level``
says who handles it: ``district`` (every district's people's committee) or a department's index in
:data:`sandbox.agencies._DEPARTMENTS` order, 1-based.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Procedure:
    code: str  # MaTTHC
    name: str  # TenTTHC
    field_code: str  # MaLinhVuc
    field_name: str  # TenLinhVuc
    days: int
    applicant: int  # LoaiDoiTuong: 1 citizen, 2 enterprise
    level: str  # "district", or the handling department's 1-based index as a string
    weight: float  # relative frequency among the procedures of its level


_CATALOGUE = (
    # district level: civil status, certification, land, household business
    ("1.001193", "Đăng ký khai sinh", "HT", "Hộ tịch", 1, 1, "district", 9.0),
    ("1.000894", "Đăng ký kết hôn", "HT", "Hộ tịch", 3, 1, "district", 3.0),
    ("1.000656", "Đăng ký khai tử", "HT", "Hộ tịch", 1, 1, "district", 2.0),
    ("1.001022", "Cấp bản sao trích lục hộ tịch", "HT", "Hộ tịch", 1, 1, "district", 4.0),
    ("2.000908", "Chứng thực bản sao từ bản chính", "CT", "Chứng thực", 1, 1, "district", 10.0),
    ("2.000815", "Chứng thực chữ ký trong giấy tờ, văn bản", "CT", "Chứng thực", 1, 1, "district", 3.0),
    ("1.004227", "Đăng ký biến động quyền sử dụng đất", "DD", "Đất đai", 10, 1, "district", 3.0),
    ("1.001612", "Đăng ký thành lập hộ kinh doanh", "TLDN", "Thành lập và hoạt động của hộ kinh doanh", 3, 1,
     "district", 2.0),
    ("1.003193", "Cấp giấy phép xây dựng nhà ở riêng lẻ", "XD", "Xây dựng", 15, 1, "district", 1.5),
    # departments
    ("1.001009", "Cấp phiếu lý lịch tư pháp", "LLTP", "Lý lịch tư pháp", 10, 1, "2", 5.0),
    ("2.000488", "Cấp giấy phép lao động cho người nước ngoài", "VL", "Việc làm", 5, 2, "4", 1.0),
    ("1.009974", "Cấp giấy phép xây dựng công trình", "XD", "Xây dựng", 20, 2, "5", 1.0),
    ("1.002030", "Cấp giấy phép hoạt động khám bệnh, chữa bệnh", "KCB", "Khám bệnh, chữa bệnh", 30, 2, "6", 0.5),
    ("1.005074", "Cấp giấy chứng nhận đủ điều kiện an toàn thực phẩm", "ATTP", "An toàn thực phẩm", 20, 2, "9", 1.5),
    ("2.001283", "Cấp giấy phép kinh doanh bán lẻ rượu", "LT", "Lưu thông hàng hóa", 15, 2, "9", 1.0),
    ("1.000105", "Thẩm định thiết kế cơ sở", "XD", "Xây dựng", 25, 2, "5", 0.5),
)


@lru_cache(maxsize=1)
def procedures() -> tuple[Procedure, ...]:
    return tuple(Procedure(*row) for row in _CATALOGUE)


def by_code() -> dict[str, Procedure]:
    return {p.code: p for p in procedures()}


def for_level(level: str) -> tuple[Procedure, ...]:
    """The procedures one kind of system handles: ``district`` or a department's index."""
    return tuple(p for p in procedures() if p.level == level)
