"""Vietnamese administrative units in both code sets, from the maintained `vietnamadminunits` data.

Two code sets are in use on the wire (``national-systems.md`` §1.4): Decision 124/2004 (province 2
digits, district 3, commune 5) and Decision 19/2025 (from 1 July 2025: 34 provinces, communes of 5
digits, no district level). Records from before and after the reform mix freely, so the hub needs
both tables and the mapping from an old commune to the new one. The mapping is the library's own
conversion (for a commune split in 2025, its default successor); nothing here is typed by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from vietnamadminunits import convert_address
from vietnamadminunits.database import query


@dataclass(frozen=True)
class Unit:
    """One commune-level unit with its parents, in one code set (district empty under 2025)."""

    province_code: str
    province: str
    district_code: str
    district: str
    ward_code: str
    ward: str

    @property
    def full_name(self) -> str:
        return ", ".join(p for p in (self.ward, self.district, self.province) if p)


@lru_cache(maxsize=None)
def legacy_units(province_code: str) -> tuple[Unit, ...]:
    """Communes of a province under Decision 124/2004, ordered by commune code."""
    _check_code(province_code)
    rows = query(
        "SELECT DISTINCT provinceCode, province, districtCode, district, wardCode, ward "
        f"FROM admin_units_legacy WHERE provinceCode = '{province_code}' AND wardCode IS NOT NULL "
        "ORDER BY wardCode"
    )
    return tuple(Unit(r["provinceCode"], r["province"], r["districtCode"], r["district"], r["wardCode"], r["ward"])
                 for r in rows)


@lru_cache(maxsize=None)
def units_2025(province_code: str) -> tuple[Unit, ...]:
    """Communes of a province under Decision 19/2025, ordered by commune code."""
    _check_code(province_code)
    rows = query(
        "SELECT DISTINCT provinceCode, province, wardCode, ward FROM admin_units "
        f"WHERE provinceCode = '{province_code}' ORDER BY wardCode"
    )
    return tuple(Unit(r["provinceCode"], r["province"], "", "", r["wardCode"], r["ward"]) for r in rows)


@lru_cache(maxsize=None)
def legacy_to_2025(province_code: str) -> dict[str, Unit]:
    """Map each 124/2004 commune code of a (pre-2025) province to its 2025 successor unit."""
    by_code = {}
    for unit in legacy_units(province_code):
        new = convert_address(unit.full_name)
        if new.ward_code and new.province_code:
            by_code[unit.ward_code] = Unit(new.province_code, new.province, "", "", new.ward_code, new.ward)
    return by_code


def _check_code(code: str) -> None:
    # The library's query takes SQL text: only ever pass it a validated 2-digit code.
    if not (len(code) == 2 and code.isdigit()):
        raise ValueError(f"province code must be 2 digits, got {code!r}")
