"""Structure rules of Vietnamese identifiers (``national-systems.md`` §1.4, §3).

Personal ID (số định danh cá nhân): 12 digits ``PPP G YY NNNNNN`` — birth-registration province
(3 digits), gender+century digit (even male, odd female; 0/1 → 1900s, 2/3 → 2000s, 4/5 → 2100s),
two-digit year of birth, serial. There is no check digit, so a mistyped ID can only be caught by
its structure or by comparing it with the person's other attributes.

Enterprise code (mã số doanh nghiệp): 10 digits whose last is a check digit
N10 = 10 − (Σ Nᵢ·Wᵢ mod 11) with W = 31, 29, 23, 19, 17, 13, 7, 5, 3; a result of 10 is
impossible, so codes whose first nine digits give it are never issued. A branch adds ``-NNN``.

One-stop dossier code (mã số hồ sơ, Circular 01/2018/TT-VPCP Art. 19): ``{agency}-{YYMMDD}-{NNNN}`` —
the receiving agency's code in the QCVN 102 form ``V1V2V3.Z1Z2.Y1Y2.MX1X2`` (3 digits . 2 digits .
2 digits . a letter and 2 digits, e.g. ``000.00.13.H31``), the reception date and a 4-digit daily
sequence.
"""

from __future__ import annotations

import re
from datetime import date

_ENTERPRISE_WEIGHTS = (31, 29, 23, 19, 17, 13, 7, 5, 3)
_ENTERPRISE = re.compile(r"^(\d{10})(?:-(\d{3}))?$")
_PERSONAL_ID = re.compile(r"^\d{12}$")
_CMND = re.compile(r"^\d{9}$")
_DOSSIER_CODE = re.compile(r"^(\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2})-(\d{2})(\d{2})(\d{2})-(\d{4})$")


def enterprise_check_digit(first_nine: str) -> int | None:
    """The check digit for nine leading digits, or ``None`` when no valid code starts with them."""
    if len(first_nine) != 9 or not first_nine.isdigit():
        raise ValueError(f"expected 9 digits, got {first_nine!r}")
    digit = 10 - sum(int(d) * w for d, w in zip(first_nine, _ENTERPRISE_WEIGHTS)) % 11
    return None if digit == 10 else digit


def enterprise_code_problem(code: str) -> str | None:
    """Why ``code`` is not a valid enterprise code, or ``None`` if it is."""
    match = _ENTERPRISE.match(code or "")
    if not match:
        return f"enterprise code {code!r} is not 10 digits (optionally followed by -NNN)"
    main = match.group(1)
    expected = enterprise_check_digit(main[:9])
    if expected is None:
        return f"enterprise code {code!r}: no check digit exists for {main[:9]}"
    if int(main[9]) != expected:
        return f"enterprise code {code!r}: check digit is {main[9]}, expected {expected}"
    return None


def personal_id_problem(number: str, *, birth_year: int | None = None, gender: int | None = None) -> str | None:
    """Why ``number`` is not a plausible personal ID (given what else is known), or ``None``.

    ``gender`` uses the population database's codes: 1 male, 2 female (0: unknown, not checked).
    """
    if not _PERSONAL_ID.match(number or ""):
        return f"personal ID {number!r} is not 12 digits"
    province, g, yy = int(number[:3]), int(number[3]), int(number[4:6])
    if province == 0 or province > 99:
        return f"personal ID {number}: province part {number[:3]} is not a province code"
    if g > 5:
        return f"personal ID {number}: gender/century digit {g} is not 0-5"
    if birth_year is not None:
        century = 1900 + 100 * (g // 2)
        if century + yy != birth_year:
            return f"personal ID {number}: encodes birth year {century + yy}, record says {birth_year}"
    if gender in (1, 2) and (g % 2) != (gender - 1):
        return f"personal ID {number}: gender digit {g} does not match gender {gender}"
    return None


def personal_id_prefix(province_code: str, gender: int, birth_year: int) -> str:
    """The first six digits of a personal ID (gender 1 male / 2 female)."""
    century_digit = 2 * ((birth_year - 1900) // 100) + (gender - 1)
    return f"{int(province_code):03d}{century_digit}{birth_year % 100:02d}"


def is_cmnd(number: str) -> bool:
    """An old 9-digit identity card number."""
    return bool(_CMND.match(number or ""))


def dossier_code_problem(code: str) -> str | None:
    """Why ``code`` is not a dossier code of Circular 01/2018 Art. 19, or ``None`` if it is one."""
    match = _DOSSIER_CODE.match(code or "")
    if not match:
        return (f"dossier code {code!r} is not {{QCVN 102 agency code}}-{{YYMMDD}}-{{NNNN}} "
                f"(e.g. 000.00.13.H31-250814-0001)")
    yy, mm, dd = (int(part) for part in match.group(2, 3, 4))
    try:
        date(2000 + yy, mm, dd)
    except ValueError:
        return f"dossier code {code!r}: {match.group(2)}{match.group(3)}{match.group(4)} is not a calendar date YYMMDD"
    return None
