"""The identity proof of service 037 (``national-systems.md`` §1.1), applied by the hub's own lookups.

A personal ID alone is not enough to read a person's record: the caller must also know the name and
the date of birth. Names are compared the way the national system compares them: upper case, no
diacritics (``Đ`` → ``D``), no spaces. So ``Nguyễn Văn Đức`` in NFC, the same name in NFD, with the
old tone placement (``hoà``/``hòa``), in capitals, or all of it in the given name, are one name.

Dates of birth follow ``NgayThangNamSinh``: a full date (``yyyyMMdd``, or ``yyyy-MM-dd``) must equal
the record's date; a bare year (``yyyy``) matches the record's year of birth.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any, Iterable

#: Letters that Unicode does not decompose into a base letter plus a mark, spelled out by hand. The
#: Icelandic eth (Ð/ð) is what many keyboards and OCR produce for the Vietnamese Đ/đ.
_UNDECOMPOSABLE = str.maketrans({"Đ": "D", "đ": "d", "Ð": "D", "ð": "d"})
_BIRTH = re.compile(r"^([0-9]{4})(?:-?([0-9]{2})-?([0-9]{2}))?\Z")
#: The marks Vietnamese uses once decomposed (U+0300-U+036F), and whitespace: the fast path.
_LATIN_MARKS_AND_SPACE = re.compile(r"[\u0300-\u036f\s]+")


@lru_cache(maxsize=1 << 15)
def fold_name(text: str) -> str:
    """The comparison form of a name: upper case, without diacritics and without any whitespace.

    A Vietnamese name is ASCII once its Latin marks are gone, which a regex does in C; any other
    text takes the exact path through every character's combining class. Names repeat a great deal
    (a few family names, a few hundred given names), and every lookup folds two of them, so the most
    recent 32,768 foldings are remembered (a pure function of the text)."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_UNDECOMPOSABLE))
    quick = _LATIN_MARKS_AND_SPACE.sub("", decomposed)
    if quick.isascii():
        return quick.upper()
    kept = (ch for ch in decomposed if not unicodedata.combining(ch) and not ch.isspace())
    return "".join(kept).upper()


def full_name(parts: Iterable[str | None]) -> str:
    """Family, middle and given name joined in order; empty parts (all in ``Ten``) drop out."""
    return " ".join([part for part in parts if part])


@dataclass(frozen=True)
class BirthQuery:
    """What the caller claims about a date of birth: always a year, sometimes the full date."""

    year: int
    day: date | None

    def matches(self, record_date: Any, record_year: Any) -> bool:
        """Whether the record's ``birth_date`` (ISO text or date) and ``birth_year`` agree with the claim."""
        known = _as_date(record_date)
        if self.day is not None:
            return known == self.day
        year = known.year if known is not None else record_year
        return year == self.year


@lru_cache(maxsize=1 << 14)
def parse_birth(text: str) -> BirthQuery:
    """Read ``yyyy``, ``yyyyMMdd`` or ``yyyy-MM-dd``; raise ``ValueError`` with a reason otherwise.
    Answers are immutable and a pure function of the text, so recent ones are remembered (a refusal,
    being an exception, is not)."""
    match = _BIRTH.match(text)
    if not match:
        raise ValueError("birth_date must be yyyy, yyyyMMdd or yyyy-MM-dd")
    year = int(match.group(1))
    if match.group(2) is None:
        return BirthQuery(year, None)
    try:
        return BirthQuery(year, date(year, int(match.group(2)), int(match.group(3))))
    except ValueError:
        raise ValueError(f"birth_date {text!r} is not a calendar date") from None


def identity_matches(record_names: Iterable[str | None], record_date: Any, record_year: Any,
                     name: str, birth: BirthQuery | None) -> bool:
    """The 037 rule: the folded names are equal and, when a birth date is claimed, it agrees."""
    claimed = fold_name(name)
    if not claimed or fold_name(full_name(record_names)) != claimed:
        return False
    return birth is None or birth.matches(record_date, record_year)


def _as_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        return None
