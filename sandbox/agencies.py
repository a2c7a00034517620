"""The agencies the sandbox knows: the province's own (``H31…``) and a few national and peer ones.

Each agency has both code forms (§4): the Decision 20/2020 code (``H31.02``) and the legacy QCVN 102
code (``000.00.02.H31``); neither is derived from the other on the wire, so both are stored. The
province's district-level agencies take their names from the administrative-unit library.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from hub.admin_units import legacy_units

PROVINCE = "31"
PROVINCE_CODE = "H31"
PROVINCE_CODE_102 = "000.00.00.H31"

_DEPARTMENTS = (
    "Văn phòng Ủy ban nhân dân thành phố", "Sở Tư pháp", "Sở Tài chính", "Sở Nội vụ", "Sở Xây dựng",
    "Sở Y tế", "Sở Giáo dục và Đào tạo", "Sở Nông nghiệp và Môi trường", "Sở Công Thương",
    "Sở Khoa học và Công nghệ", "Sở Văn hóa, Thể thao và Du lịch", "Công an thành phố",
)
_NATIONAL = (
    ("G22", "000.00.00.G22", "Văn phòng Chính phủ"),
    ("G12", "000.00.00.G12", "Bộ Tư pháp"),
    ("G06", "000.00.00.G06", "Bộ Công an"),
    ("G01", "000.00.00.G01", "Bộ Tài chính"),
    ("H01", "000.00.00.H01", "Ủy ban nhân dân thành phố Hà Nội"),
    ("H22", "000.00.00.H22", "Ủy ban nhân dân tỉnh Quảng Ninh"),
)


@dataclass(frozen=True)
class Agency:
    id: int
    code: str  # Decision 20/2020 form
    code102: str  # QCVN 102 legacy form
    name: str
    parent_code: str  # Decision 20/2020 code of the parent, '' for top level

    @property
    def in_province(self) -> bool:
        return self.code.startswith(PROVINCE_CODE)


@lru_cache(maxsize=1)
def agencies() -> tuple[Agency, ...]:
    """Every agency of the sandbox, the province's first."""
    out = [Agency(1, PROVINCE_CODE, PROVINCE_CODE_102, "Ủy ban nhân dân thành phố Hải Phòng", "")]
    for k, name in enumerate(_DEPARTMENTS, start=1):
        out.append(Agency(len(out) + 1, f"{PROVINCE_CODE}.{k:02d}", f"000.00.{k:02d}.{PROVINCE_CODE}", name, PROVINCE_CODE))
    districts = sorted({(u.district_code, u.district) for u in legacy_units(PROVINCE)})
    for k, (_, district) in enumerate(districts, start=1):
        out.append(Agency(len(out) + 1, f"{PROVINCE_CODE}.{30 + k:02d}", f"000.{k:02d}.30.{PROVINCE_CODE}",
                          f"Ủy ban nhân dân {district}", PROVINCE_CODE))
    for code, code102, name in _NATIONAL:
        out.append(Agency(len(out) + 1, code, code102, name, ""))
    return tuple(out)


def province_agency_codes() -> frozenset[str]:
    """Both code forms of every agency of the province (what the hub may act for)."""
    return frozenset(c for a in agencies() if a.in_province for c in (a.code, a.code102))
