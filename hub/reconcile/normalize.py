"""Normal forms of what the national systems say about people, enterprises and places.

Record linkage compares values that the systems *spell* differently although they *mean* the same:
a name in NFD, in capitals, with the tone mark on another vowel or without diacritics; a date as
``dd/MM/yyyy`` or ``yyyyMMdd``; an ID with spaces; a commune under its Decision 124/2004 code or
its Decision 19/2025 one (``national-systems.md`` §0, §1.4, §7). This module undoes those
*representation* differences and nothing else: a mistyped digit, another given name or a stale
death stays a difference, for linking to weigh.

Conventions (each function repeats the one it applies):

- **Names** are NFC, one space between words, no punctuation but a word-internal apostrophe
  (``H'Hen``), each word capitalised (``Nguyễn Văn Đức``), and the tone mark on the vowel the
  *traditional* rule picks: in an open syllable ending in ``oa``, ``oe`` or ``uy`` the tone sits on
  the first vowel (``Hòa``, ``Hòe``, ``Thúy``, ``Thụy``), as in the official names of Khánh Hòa or
  Thanh Hóa and in the sandbox's true names; the other rule (``Hoà``, ``Thuý``) and any other
  misplaced tone (``Hòang``, ``Qúy``) are moved there. In ``qu`` and ``gi`` the ``u``/``i``
  belongs to the consonant (``Quý``, ``Quỳnh``, ``Giáp``), but ``gì``/``gìn`` keep it as the vowel.
  A syllable this module cannot read as Vietnamese (a foreign name) keeps its marks where they were.
- **Name keys** (``name_key``) fold further for blocking and fuzzy comparison: no diacritics,
  ``Đ``→``D``, upper case, no apostrophes, words still separated by one space. Removing the spaces
  as well gives service 037's comparison form (``hub.identity_match.fold_name``).
- **Name parts** follow Vietnamese order: family first, given name last, everything between is the
  middle name; a single word is a given name. A few multi-word family names that cannot be middle
  names (``Tôn Thất``, ``Tôn Nữ``, ``Công Tằng Tôn Nữ``, ``Âu Dương`` …) are kept together;
  ``Nguyễn Phúc``/``Nguyễn Phước`` is not, because ``Phúc`` is also a common middle name.
- **Dates** are ``datetime.date``. Text is read day first (``dd/MM/yyyy``, the Vietnamese order),
  or year first when it starts with four digits (``yyyy-MM-dd``, ``yyyy/MM/dd``, ``yyyyMMdd``);
  a time after the date is ignored, an explicit UTC offset is honoured (the date is the one in
  Asia/Ho_Chi_Minh). ``yyyy`` alone and ``00`` for an unknown day or month (``00/00/1950``) are
  *partial* dates: :func:`normalize_partial_date` reads them, :func:`normalize_date` refuses them.
- **Personal IDs** are 12 ASCII digits that pass the structure rules of §1.4 (a known province
  code, a gender/century digit, no birth year in the future); the old 9-digit CMND is recognised
  as such, not as an invalid ID. A number that lost its leading zero (stored as an integer) gets it
  back when the result is well-formed, and says so.
- **Enterprise codes** are ``NNNNNNNNNN`` or ``NNNNNNNNNN-NNN`` (a branch) with a valid check digit
  (``schemas.identifiers``).
- **Administrative units** are keyed by the 2025 commune: :func:`unit_key` maps a commune given by
  its 124/2004 codes or its 19/2025 codes, or by its names, to the 5-digit code of the 2025
  commune it lies in (for a commune split in 2025, the successor the maintained
  ``vietnamadminunits`` data names as default; :func:`unit_candidates` lists them all). A record's
  code set is read from its district: 2025 codes have none (§1.4).

Every per-value function caches what it has seen, and the ``*_column`` helpers work on lists or
Arrow arrays a distinct value at a time, because reconciliation runs over millions of rows whose
names, dates and places repeat.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from itertools import chain
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hub.admin_units import Unit
from schemas.identifiers import enterprise_code_problem, personal_id_problem
from schemas.timefmt import VN_TZ

# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------

#: The five tone marks once decomposed: huyền, sắc, ngã, hỏi, nặng.
_TONES = frozenset("\u0300\u0301\u0303\u0309\u0323")
_VOWELS = frozenset("aăâeêioôơuưy")
_QUALITY_VOWELS = frozenset("ăâêôơư")  # vowels whose own mark attracts the tone
_OPEN_GLIDES = frozenset({"oa", "oe", "uy"})  # where the two conventions differ (open syllables only)
#: Which vowel of an open oa/oe/uy takes the tone: 0, the traditional hòa/thúy; 1 would be hoà/thuý.
_GLIDE_TONE_VOWEL = 0
#: Characters that stand for others: the Icelandic eth that some keyboards and OCR give for Đ/đ
#: (Unicode does not decompose either), and apostrophe look-alikes.
_LOOKALIKES = str.maketrans({"Ð": "Đ", "ð": "đ", "\u2019": "'", "\u2018": "'", "\u02bc": "'", "\uff07": "'"})

#: Family names of more than one word that a linker must not split (kept short on purpose).
COMPOUND_FAMILY_NAMES: tuple[str, ...] = (
    "Công Tằng Tôn Nữ", "Công Huyền Tôn Nữ", "Công Tôn Nữ", "Tôn Thất", "Tôn Nữ", "Âu Dương", "Tư Mã",
    "Gia Cát", "Thượng Quan",
)

_CACHE_LIMIT = 1 << 18  # entries per cache; a cache that fills is emptied and refills with what is hot
_token_cache: dict[str, str] = {}
_name_cache: dict[str, str] = {}
_key_cache: dict[str, str] = {}
_split_cache: dict[str, tuple[str, str, str]] = {}


def normalize_name(text: str | None) -> str:
    """The canonical spelling of a person's name (conventions in the module docstring).

    ``"  NGUYỄN   thị hoà "`` (or the same in NFD) → ``"Nguyễn Thị Hòa"``. ``None`` gives ``""``.
    Idempotent, and the same for every tone placement, case, Unicode normal form and spacing of
    one name. Diacritics that are missing are not guessed: use :func:`name_key` to compare those.
    """
    if not text:
        return ""
    hit = _name_cache.get(text)
    if hit is not None:
        return hit
    parts = []
    for raw in text.split():
        token = _token_cache.get(raw)
        if token is None:
            token = _remember(_token_cache, raw, _canonical_token(raw))
        if token:
            parts.append(token)
    return _remember(_name_cache, text, " ".join(parts))


def name_key(text: str | None) -> str:
    """The blocking/fuzzy form of a name: :func:`normalize_name`, then upper case without diacritics.

    ``"Nguyễn Văn Đức"``, ``"NGUYEN VAN DUC"`` and ``"nguyễn văn đức"`` all give ``"NGUYEN VAN DUC"``.
    Words stay separated by one space; apostrophes go (``H'Hen`` → ``HHEN``).
    """
    if not text:
        return ""
    hit = _key_cache.get(text)
    if hit is not None:
        return hit
    return _remember(_key_cache, text, normalize_name(text).translate(_FOLD).upper())


def split_name(text: str | None) -> tuple[str, str, str]:
    """``(family, middle, given)`` of a full name, each normalised; missing parts are ``""``.

    Vietnamese order: ``"Nguyễn Thị Minh Khai"`` → ``("Nguyễn", "Thị Minh", "Khai")``; two words are
    family and given (``"Lê Na"``); one word is a given name only (``("", "", "Hùng")``). A known
    compound family name stays whole when a given name is left after it:
    ``"Tôn Thất Thuyết"`` → ``("Tôn Thất", "", "Thuyết")``.
    """
    if not text:
        return "", "", ""
    hit = _split_cache.get(text)
    if hit is not None:
        return hit
    words = normalize_name(text).split()
    if len(words) <= 1:
        parts = ("", "", words[0] if words else "")
    else:
        family = 1
        if len(words) > 2 and name_key(words[0]) in _COMPOUND_STARTS:
            keys = name_key(" ".join(words[:4])).split()
            family = next((size for size, compound in _COMPOUND_KEYS
                           if size < len(words) and tuple(keys[:size]) == compound), 1)
        parts = (" ".join(words[:family]), " ".join(words[family:-1]), words[-1])
    if len(_split_cache) >= _CACHE_LIMIT:
        _split_cache.clear()
    _split_cache[text] = parts
    return parts


def name_parts(family: str | None, middle: str | None, given: str | None) -> tuple[str, str, str]:
    """Normalised ``(family, middle, given)`` of a record that carries the parts separately.

    When family and middle are both empty the whole name may sit in the given name (the population
    database does this, §1.4), so it is split by :func:`split_name`; otherwise the record's own split
    is kept, each part normalised.
    """
    if not (family or "").strip() and not (middle or "").strip():
        return split_name(given)
    return normalize_name(family), normalize_name(middle), normalize_name(given)


def normalize_name_column(values: Any) -> Any:
    """:func:`normalize_name` over a list or an Arrow string array, once per distinct value (nulls stay null)."""
    return _map_column(values, normalize_name, pa.string())


def name_key_column(values: Any) -> Any:
    """:func:`name_key` over a list or an Arrow string array, once per distinct value (nulls stay null)."""
    return _map_column(values, name_key, pa.string())


def _remember(cache: dict[str, str], key: str, value: str) -> str:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def _canonical_token(raw: str) -> str:
    """One whitespace-free run of the input, canonical; punctuation inside it separates words."""
    decomposed = unicodedata.normalize("NFD", raw.translate(_LOOKALIKES)).lower()
    words, current = [], []
    for i, ch in enumerate(decomposed):
        if ch.isalnum() or unicodedata.category(ch)[0] == "M":
            current.append(ch)
        elif ch == "'" and current and i + 1 < len(decomposed) and decomposed[i + 1].isalpha():
            current.append(ch)
        elif current:
            words.append("".join(current))
            current = []
    if current:
        words.append("".join(current))
    return " ".join(_capitalise(_syllable(w)) for w in words)


def _capitalise(word: str) -> str:
    """Upper-case the first letter (and the one after an apostrophe); one whose capital is two
    letters (``ß``) stays as it is, so that normalising twice changes nothing."""
    return "'".join(_capital(part[:1]) + part[1:] for part in word.split("'"))


def _capital(letter: str) -> str:
    upper = letter.upper()
    return upper if len(upper) == 1 else letter


def _syllable(word: str) -> str:
    """A lower-case NFD word with its tone mark moved to the vowel the convention picks, in NFC."""
    tones = [ch for ch in word if ch in _TONES]
    if len(tones) != 1:  # no tone, or several (not one syllable): nothing to place
        return unicodedata.normalize("NFC", word)
    base = unicodedata.normalize("NFC", word.replace(tones[0], ""))
    slot = _tone_slot(base)
    if slot is None:
        return unicodedata.normalize("NFC", word)
    return unicodedata.normalize("NFC", base[: slot + 1] + tones[0] + base[slot + 1:])


def _tone_slot(base: str) -> int | None:
    """Index of the vowel of ``base`` (lower case, NFC, no tone) that carries the tone, or ``None``.

    One vowel group between an initial and a final consonant cluster, else it is not a syllable.
    """
    n = len(base)
    start = 0
    while start < n and base[start] not in _VOWELS:
        start += 1
    end = start
    while end < n and base[end] in _VOWELS:
        end += 1
    if start == n or not all(ch.isalpha() for ch in base) or any(ch in _VOWELS for ch in base[end:]):
        return None
    if end - start > 1 and start > 0 and base[start - 1:start + 1] in ("qu", "gi"):
        start += 1  # the u of qu and the i of gi belong to the consonant: quý, giá, giữa
    marked = [i for i in range(start, end) if base[i] in _QUALITY_VOWELS]
    if marked:
        return marked[-1]  # thuế, người, khuyến: the vowel with its own mark (the last of ươ)
    size = end - start
    if size == 1:
        return start
    if size == 3:
        return start + 2 if end < n else start + 1  # ngoài, khuỷu, ngoẹo; closed: the last vowel
    if size == 2:
        if end < n:
            return start + 1  # closed syllable: hoàng, toán, huỳnh
        if base[start:end] in _OPEN_GLIDES:
            return start + _GLIDE_TONE_VOWEL  # hòa, hòe, thúy
        return start  # mái, kéo, núi, kìa, mùa
    return None


def _fold_table() -> dict[int, str | None]:
    """Every precomposed Latin letter to its base letter; combining marks and apostrophes removed."""
    table: dict[int, str | None] = {ord("đ"): "d", ord("Đ"): "D", ord("ð"): "d", ord("Ð"): "D", ord("'"): None}
    for code in chain(range(0xC0, 0x250), range(0x1E00, 0x1F00)):
        parts = unicodedata.normalize("NFD", chr(code))
        if len(parts) > 1 and all(unicodedata.combining(c) for c in parts[1:]):
            table[code] = parts[0]
    for code in range(0x300, 0x370):
        table[code] = None
    return table


_FOLD = _fold_table()
_COMPOUND_STARTS = frozenset(name.split()[0].translate(_FOLD).upper() for name in COMPOUND_FAMILY_NAMES)
_COMPOUND_KEYS = sorted(((len(k.split()), tuple(k.translate(_FOLD).upper().split())) for k in COMPOUND_FAMILY_NAMES),
                        reverse=True)

# ---------------------------------------------------------------------------------------------
# Dates
# ---------------------------------------------------------------------------------------------

_YEARS = range(1800, 2200)  # outside this, a date in these registries is a typing error
_TIME = (r"(?:[ T](?P<hh>\d{1,2}):(?P<mi>\d{2})(?::(?P<ss>\d{2})(?:\.\d+)?)?"
         r"(?P<tz>Z|[+-]\d{2}:?\d{2})?)?")
_DAY_FIRST = re.compile(rf"(?P<d>\d{{1,2}})[/.-](?P<m>\d{{1,2}})[/.-](?P<y>\d{{4}}){_TIME}")
_YEAR_FIRST = re.compile(rf"(?P<y>\d{{4}})[/.-](?P<m>\d{{1,2}})[/.-](?P<d>\d{{1,2}}){_TIME}")
_COMPACT = re.compile(r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})(?:\d{4}(?:\d{2})?)?")  # yyyyMMdd[HHmm[ss]]
_MONTH_YEAR = re.compile(r"(?P<m>\d{1,2})[/.-](?P<y>\d{4})")
_YEAR_MONTH = re.compile(r"(?P<y>\d{4})[/.-](?P<m>\d{1,2})")
_YEAR_ONLY = re.compile(r"(?P<y>\d{4})")
_DATE_FORMS = (_DAY_FIRST, _YEAR_FIRST, _COMPACT, _MONTH_YEAR, _YEAR_MONTH, _YEAR_ONLY)


@dataclass(frozen=True)
class PartialDate:
    """A date of which only the year, or the year and month, may be known (``NgayThangNamSinh``)."""

    year: int
    month: int | None = None
    day: int | None = None

    @property
    def complete(self) -> bool:
        return self.month is not None and self.day is not None

    def as_date(self) -> date | None:
        return date(self.year, self.month, self.day) if self.complete else None  # type: ignore[arg-type]

    def agrees_with(self, other: "PartialDate | date") -> bool:
        """Whether both can be the same day: equal wherever both are known."""
        if isinstance(other, date):
            other = PartialDate(other.year, other.month, other.day)
        return all(a is None or b is None or a == b for a, b in
                   ((self.year, other.year), (self.month, other.month), (self.day, other.day)))


def normalize_date(value: Any) -> date:
    """A full calendar date from a ``date``/``datetime`` or from any wire format of the systems.

    Accepted text: ``dd/MM/yyyy`` (also ``-`` or ``.``, one-digit day or month), ``yyyy-MM-dd``,
    ``yyyy/MM/dd``, ``yyyyMMdd``, each optionally followed by a time (``dd/MM/yyyy HH:mm:ss``,
    ``yyyyMMddHHmmss``, ISO 8601 with an offset, converted to Asia/Ho_Chi_Minh first).
    ``ValueError`` names the value and says why: not a date, not a calendar day, or only partly
    known (``1950``, ``00/00/1950``: read those with :func:`normalize_partial_date`).
    """
    if isinstance(value, datetime):
        return value.astimezone(VN_TZ).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    partial = normalize_partial_date(value)
    if not partial.complete:
        known = f"year {partial.year}" + (f", month {partial.month}" if partial.month else "")
        raise ValueError(f"date {value!r} is only partly known ({known}); expected a full date")
    return partial.as_date()  # type: ignore[return-value]


def normalize_partial_date(value: Any) -> PartialDate:
    """A date that may lack its day or month: everything :func:`normalize_date` reads, plus
    ``yyyy``, ``MM/yyyy``, ``yyyy-MM`` and ``00`` for an unknown day or month (``00/05/1950``,
    ``19500000``). ``ValueError`` names the value when it is none of these."""
    if isinstance(value, (date, datetime)):
        day = normalize_date(value)
        return PartialDate(day.year, day.month, day.day)
    if not isinstance(value, str):
        raise ValueError(f"date {value!r} is of type {type(value).__name__}, not a date or text")
    text = value.strip()
    for form in _DATE_FORMS:
        match = form.fullmatch(text)
        if match:
            return _partial(value, match)
    raise ValueError(f"date {value!r} is not in a known format (dd/MM/yyyy, yyyy-MM-dd, yyyyMMdd, yyyy)")


def normalize_date_column(values: Any, *, errors: str = "raise") -> Any:
    """:func:`normalize_date` over a list or an Arrow array (``date32`` out), once per distinct value.

    ``errors="null"`` turns a value that is not a full date into a null instead of raising.
    """
    if errors not in ("raise", "null"):
        raise ValueError("errors must be 'raise' or 'null'")
    convert = normalize_date if errors == "raise" else _date_or_none
    return _map_column(values, convert, pa.date32())


def _date_or_none(value: Any) -> date | None:
    try:
        return normalize_date(value)
    except ValueError:
        return None


def _partial(value: str, match: re.Match) -> PartialDate:
    parts = match.groupdict()
    year = int(parts["y"])
    month = int(parts["m"]) if parts.get("m") else None
    day = int(parts["d"]) if parts.get("d") else None
    if year not in _YEARS:
        raise ValueError(f"date {value!r}: year {year} is outside {_YEARS.start}-{_YEARS.stop - 1}")
    if month == 0:
        if day:
            raise ValueError(f"date {value!r} has a day but no month")
        return PartialDate(year)
    if day == 0:
        day = None
    if month is not None and not 1 <= month <= 12:
        raise ValueError(f"date {value!r}: month {month} does not exist")
    if day is None:
        return PartialDate(year, month)
    try:
        exact = date(year, month, day)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"date {value!r} is not a calendar day") from None
    if parts.get("tz"):  # an instant with an offset: the day it was in Viet Nam
        exact = _instant_day(value, exact, parts)
    return PartialDate(exact.year, exact.month, exact.day)


def _instant_day(value: str, day: date, parts: dict[str, str | None]) -> date:
    zone = parts["tz"] or "Z"
    offset = 0 if zone == "Z" else (1 if zone[0] == "+" else -1) * (int(zone[1:3]) * 60 + int(zone[-2:]))
    try:
        moment = datetime(day.year, day.month, day.day, int(parts["hh"] or 0), int(parts["mi"] or 0),
                          int(parts["ss"] or 0), tzinfo=timezone(timedelta(minutes=offset)))
    except ValueError:
        raise ValueError(f"date {value!r} has a time that does not exist") from None
    return moment.astimezone(VN_TZ).date()


# ---------------------------------------------------------------------------------------------
# Personal ID numbers (national-systems.md §1.4)
# ---------------------------------------------------------------------------------------------

PERSONAL_ID, CMND, INVALID, MISSING = "personal_id", "cmnd", "invalid", "missing"
_SEPARATORS = re.compile(r"[\s.\-_/]+")


@dataclass(frozen=True)
class IdNumber:
    """What an ID field holds: ``kind`` is ``personal_id``, ``cmnd`` (the old 9-digit card),
    ``invalid`` or ``missing``; ``value`` the canonical digits (``None`` when invalid or missing);
    ``problem`` why it is invalid; ``note`` what was repaired (a restored leading zero)."""

    kind: str
    value: str | None
    problem: str | None = None
    note: str | None = None


def classify_id_number(text: Any) -> IdNumber:
    """Read an ID field as a personal ID, an old CMND, or neither, and say which.

    Spaces, dots, hyphens and full-width digits are representation and go. Twelve digits must pass
    the structure rules (province code, gender/century digit, a birth year not in the future); nine
    digits are a CMND (no structure to check). Eleven or eight digits not starting with ``0`` are
    taken as a number stored as an integer that lost its leading zero, when the zero makes a
    well-formed ID again (``note`` says so).
    """
    if text is None:
        return IdNumber(MISSING, None)
    raw = str(text)
    digits = _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw))
    if not digits:
        return IdNumber(MISSING, None)
    if not (digits.isascii() and digits.isdigit()):
        return IdNumber(INVALID, None, f"ID number {raw!r} contains characters other than digits")
    note = None
    if len(digits) in (8, 11) and digits[0] != "0":
        repaired = "0" + digits
        if len(repaired) == 9 or _personal_id_structure(repaired) is None:
            digits, note = repaired, f"leading zero restored from {raw!r}"
    if len(digits) == 12:
        problem = _personal_id_structure(digits)
        return IdNumber(INVALID, None, problem) if problem else IdNumber(PERSONAL_ID, digits, None, note)
    if len(digits) == 9:
        return IdNumber(CMND, digits, None, note)
    return IdNumber(INVALID, None, f"ID number {raw!r} has {len(digits)} digits; a personal ID has 12, a CMND 9")


def normalize_personal_id(text: Any) -> tuple[str | None, str | None]:
    """``(canonical 12-digit ID or None, problem or None)`` of an ID field.

    An old 9-digit CMND is not an error in the data, but it is not a personal ID either: the result
    is ``(None, "… is an old 9-digit CMND …")`` — use :func:`classify_id_number` to get the CMND and
    look it up. An empty field gives ``(None, None)``.
    """
    found = classify_id_number(text)
    if found.kind == PERSONAL_ID:
        return found.value, None
    if found.kind == CMND:
        return None, f"ID number {text!r} is an old 9-digit CMND ({found.value}), not a personal ID"
    return None, found.problem


def personal_id_issue(number: str, birth_date: Any = None, sex: Any = None) -> str | None:
    """Why ``number`` cannot be the personal ID of someone born ``birth_date`` of ``sex``, or ``None``.

    ``birth_date`` may be a date, any text :func:`normalize_partial_date` reads, a year (int) or
    ``None``; ``sex`` uses the population codes (1 male, 2 female; 0/``None`` unknown, not checked).
    A number that is not a well-formed personal ID (a CMND included) is never consistent.
    """
    found = classify_id_number(number)
    if found.kind != PERSONAL_ID:
        return found.problem or f"ID number {number!r} is not a personal ID ({found.kind})"
    year = _birth_year(birth_date)
    gender = int(sex) if sex not in (None, "") else None
    return personal_id_problem(found.value, birth_year=year, gender=gender)  # type: ignore[arg-type]


def id_consistent_with(number: str, birth_date: Any = None, sex: Any = None) -> bool:
    """Whether ``number`` is a well-formed personal ID whose century, year and gender digits agree
    with ``birth_date`` and ``sex`` (see :func:`personal_id_issue` for the reason when not)."""
    return personal_id_issue(number, birth_date, sex) is None


def classify_id_column(values: Any) -> pa.Table:
    """:func:`classify_id_number` over a list or an Arrow array: a table of ``kind, value, problem, note``.

    IDs hardly repeat, so this is vectorised instead of cached: well-formed 12-digit IDs are checked
    with Arrow and numpy, and only the rest (a few percent) take the per-value path. Integer input
    is read as its decimal digits.
    """
    array = _as_array(values, None)
    if not pa.types.is_string(array.type):  # IDs kept as integers lost their leading zero: see above
        array = array.cast(pa.string())
    cleaned = pc.replace_substring_regex(pc.utf8_normalize(array, "NFKC"), r"[\s.\-_/]+", "")
    well_formed = pc.fill_null(pc.match_substring_regex(cleaned, r"^[0-9]{12}$"), False)
    numbers = pc.if_else(well_formed, cleaned, "0").cast(pa.int64()).to_numpy(zero_copy_only=False)
    ok = well_formed.to_numpy(zero_copy_only=False) & _structure_ok(numbers)
    good = pa.array(ok)
    kind = pc.if_else(good, pa.scalar(PERSONAL_ID), pa.scalar(None, pa.string()))
    value = pc.if_else(good, cleaned, pa.scalar(None, pa.string()))
    problem = note = pa.nulls(len(array), pa.string())
    rest = np.flatnonzero(~ok)
    if len(rest):  # the few that are not plainly well-formed: the per-value path, then put back in place
        found = [classify_id_number(v) for v in array.take(pa.array(rest)).to_pylist()]
        mask = pc.invert(good)
        kind, value, problem, note = (
            pc.replace_with_mask(column, mask, pa.array([getattr(f, name) for f in found], pa.string()))
            for column, name in ((kind, "kind"), (value, "value"), (problem, "problem"), (note, "note")))
    return pa.table({"kind": kind, "value": value, "problem": problem, "note": note})


def id_consistent_column(numbers: Any, birth_dates: Any, sexes: Any = None) -> pa.Array:
    """:func:`id_consistent_with` row by row over columns (``birth_dates``: ``date32`` or years), vectorised.

    Null birth dates or sexes are not checked; an ID that is not a well-formed personal ID is false.
    """
    ids = classify_id_column(numbers)
    digits = pc.fill_null(ids["value"], "000000000000").cast(pa.int64()).to_numpy(zero_copy_only=False)
    is_id = pc.equal(ids["kind"], PERSONAL_ID).to_numpy(zero_copy_only=False)
    g, yy = (digits // 100_000_000) % 10, (digits // 1_000_000) % 100
    born = _as_array(birth_dates, None)
    years = born if pa.types.is_integer(born.type) else pc.year(born)
    years = pc.fill_null(years.cast(pa.int64()), -1).to_numpy(zero_copy_only=False)
    year_ok = (years < 0) | (1900 + 100 * (g // 2) + yy == years)
    sex_ok = np.ones(len(digits), bool)
    if sexes is not None:
        sex = pc.fill_null(_as_array(sexes, None).cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        sex_ok = ~np.isin(sex, (1, 2)) | (g % 2 == sex - 1)
    return pa.array(is_id & year_ok & sex_ok)


def _personal_id_structure(digits: str) -> str | None:
    problem = personal_id_problem(digits)
    if problem:
        return problem
    if digits[1:3] not in _tables().id_provinces or digits[0] != "0":
        return f"personal ID {digits}: province part {digits[:3]} is not a province code"
    year = 1900 + 100 * (int(digits[3]) // 2) + int(digits[4:6])
    if year > date.today().year:
        return f"personal ID {digits}: encodes birth year {year}, which is in the future"
    return None


def _structure_ok(numbers: np.ndarray) -> np.ndarray:
    province = numbers // 1_000_000_000
    g, yy = (numbers // 100_000_000) % 10, (numbers // 1_000_000) % 100
    known = np.zeros(1000, bool)
    known[[int(p) for p in _tables().id_provinces]] = True
    return known[np.clip(province, 0, 999)] & (g <= 5) & (1900 + 100 * (g // 2) + yy <= date.today().year)


def _birth_year(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, PartialDate):
        return value.year
    return normalize_partial_date(value).year


# ---------------------------------------------------------------------------------------------
# Enterprise codes (national-systems.md §3)
# ---------------------------------------------------------------------------------------------

_ENTERPRISE_SEPARATORS = re.compile(r"[\s.\-\u2010-\u2015\u2212\uff0d]+")


def normalize_enterprise_code(text: Any) -> tuple[str | None, str | None]:
    """``(canonical code or None, problem or None)`` of an enterprise code (mã số doanh nghiệp).

    Spaces, dots and dashes of any kind are representation: what is left must be 10 digits (a head
    office) or 13 (a branch, written canonically ``NNNNNNNNNN-NNN``). The check digit is verified by
    ``schemas.identifiers`` (the branch part has none). An empty field gives ``(None, None)``.
    """
    if text is None or not str(text).strip():
        return None, None
    raw = str(text)
    digits = _ENTERPRISE_SEPARATORS.sub("", unicodedata.normalize("NFKC", raw))
    if not (digits.isascii() and digits.isdigit() and len(digits) in (10, 13)):
        return None, f"enterprise code {raw!r} is not 10 digits (optionally followed by -NNN)"
    code = digits if len(digits) == 10 else f"{digits[:10]}-{digits[10:]}"
    problem = enterprise_code_problem(code)
    return (None, problem) if problem else (code, None)


def enterprise_head_office(code: str) -> str:
    """The head office's code of a canonical enterprise or branch code (``0100109106-001`` → ``0100109106``)."""
    return code.split("-", 1)[0]


# ---------------------------------------------------------------------------------------------
# Administrative units: Decision 124/2004 and Decision 19/2025
# ---------------------------------------------------------------------------------------------

CODE_SET_2004, CODE_SET_2025 = "124/2004", "19/2025"


@dataclass(frozen=True)
class _UnitTables:
    """Both code sets and the mapping between them, built once from the library's own data."""

    legacy_ward: dict[str, tuple[str, str]]  # 124/2004 commune → (province, district)
    successors: dict[str, tuple[str, ...]]  # 124/2004 commune → 2025 communes, the default first
    island_districts: dict[str, str]  # 124/2004 district without communes → its 2025 special zone
    wards_2025: dict[str, Unit]  # 2025 commune → the unit
    provinces_2025: dict[str, str]  # province code of either set → 2025 province code
    province_codes_2025: frozenset[str]  # the 34 provinces of 19/2025
    legacy_names: dict[str, str]  # 124/2004 province and district codes → names
    names_2025: dict[str, str]  # 19/2025 province codes → names
    id_provinces: frozenset[str]  # 2-digit province codes a personal ID may start with (0PP)


@lru_cache(maxsize=1)
def _tables() -> _UnitTables:
    """Read the 63- and 34-province tables and the 2025 conversion dictionaries (about 50 ms).

    The library's ``convert_address`` does the same lookup from parsed names, one address at a time
    (about 0.3 ms each); reading its dictionaries directly gives the same default successor for
    every 124/2004 commune, for the whole country at once.
    """
    from vietnamadminunits.converter.converter_2025 import (
        DICT_PROVINCE, DICT_PROVINCE_WARD_DIVIDED, DICT_PROVINCE_WARD_NO_DIVIDED)
    from vietnamadminunits.database import query

    legacy = query("SELECT DISTINCT provinceKey, provinceCode, province, districtKey, districtCode, district, "
                   "wardKey, wardCode FROM admin_units_legacy")
    modern = query("SELECT DISTINCT provinceKey, provinceCode, province, wardKey, wardCode, ward FROM admin_units")
    by_old_key = {f"{r['provinceKey']}_{r['districtKey']}_{r['wardKey'] or ''}": r for r in legacy}
    new_code = {(r["provinceKey"], r["wardKey"]): r["wardCode"] for r in modern}
    successors: dict[str, list[str]] = {}
    islands: dict[str, str] = {}
    for province, wards in DICT_PROVINCE_WARD_NO_DIVIDED.items():
        for ward, olds in wards.items():
            for old in olds:
                row = by_old_key.get(old)
                if row is None:
                    continue
                if row["wardCode"]:
                    successors.setdefault(row["wardCode"], []).append(new_code[(province, ward)])
                else:
                    islands[row["districtCode"]] = new_code[(province, ward)]
    for province, olds in DICT_PROVINCE_WARD_DIVIDED.items():
        for old, parts in olds.items():
            row = by_old_key.get(old)
            if row is not None and row["wardCode"]:
                ordered = sorted(parts, key=lambda part: not part["isDefaultNewWard"])
                codes = (new_code[(province, part["newWardKey"])] for part in ordered)
                successors.setdefault(row["wardCode"], []).extend(codes)
    legacy_province = {r["provinceKey"]: r["provinceCode"] for r in legacy}
    new_province = {r["provinceKey"]: r["provinceCode"] for r in modern}
    provinces = {legacy_province[old]: new_province[new] for new, olds in DICT_PROVINCE.items() for old in olds}
    provinces.update({code: code for code in new_province.values()})
    return _UnitTables(
        legacy_ward={r["wardCode"]: (r["provinceCode"], r["districtCode"]) for r in legacy if r["wardCode"]},
        successors={code: tuple(dict.fromkeys(codes)) for code, codes in successors.items()},
        island_districts=islands,
        wards_2025={r["wardCode"]: Unit(r["provinceCode"], r["province"], "", "", r["wardCode"], r["ward"])
                    for r in modern},
        provinces_2025=provinces,
        province_codes_2025=frozenset(new_province.values()),
        legacy_names={**{r["provinceCode"]: r["province"] for r in legacy},
                      **{r["districtCode"]: r["district"] for r in legacy}},
        names_2025={r["provinceCode"]: r["province"] for r in modern},
        id_provinces=frozenset(provinces),
    )


@dataclass(frozen=True)
class AddressUnits:
    """A free-text address read into units: the lead (house, street, hamlet) and the commune found.

    ``code_set`` says which set the text named the units in; ``province_code``, ``district_code``
    and ``ward_code`` are in that set (district empty under 19/2025); ``key`` is the 2025 commune
    (:func:`unit_key`) and ``province_key`` the 2025 province, each ``None`` when not found.
    """

    street: str | None
    code_set: str | None
    province_code: str | None
    district_code: str | None
    ward_code: str | None
    key: str | None
    province_key: str | None


def unit_key(ward: str | None, district: str | None = None, province: str | None = None, *,
             code_set: str | None = None) -> str | None:
    """The 2025 commune code of a commune given in either code set, by codes or by names.

    Codes: ``unit_key("11320", "303", "31")`` (Phường Hoàng Văn Thụ, Quận Hồng Bàng under 124/2004)
    and ``unit_key("11311", "", "31")`` (Phường Hồng Bàng under 19/2025) are both ``"11311"``. Names:
    ``unit_key("Phường Hoàng Văn Thụ", "Quận Hồng Bàng", "Hải Phòng")`` likewise. The code set comes
    from ``code_set`` if given, else from the district (present only under 124/2004), else from
    whichever set knows the commune code (19/2025 when both do). A 124/2004 island district without
    communes (``district`` only) gives its 2025 special zone. Codes that contradict each other (a
    commune outside the given province or district) and unknown units give ``None``: not guessed.
    Codes lose no meaning to a lost leading zero (``"97"`` is commune ``00097``).
    """
    found = _locate(ward, district, province, code_set)
    return found[2] if found else None


def unit_candidates(ward: str | None, district: str | None = None, province: str | None = None, *,
                    code_set: str | None = None) -> tuple[str, ...]:
    """Every 2025 commune the given commune may now be in: one, or several for a 124/2004 commune
    split in 2025 (the default successor, which :func:`unit_key` returns, first). Two records of
    one place in different code sets agree when their candidates intersect. Empty when unknown."""
    found = _locate(ward, district, province, code_set)
    if found is None:
        return ()
    found_set, code, key = found
    return _tables().successors[code] if found_set == CODE_SET_2004 and code else (key,)


def unit_2025(key: str | None) -> Unit | None:
    """The 2025 commune (with its names) of a key from :func:`unit_key`."""
    return _tables().wards_2025.get(key) if key else None


def province_key(province: str | None) -> str | None:
    """The 2025 province of a province code of either set (``"30"`` Hải Dương → ``"31"`` Hải Phòng)
    or of a province name; ``None`` when unknown."""
    text = _clean(province)
    if not text:
        return None
    if text.isdigit():
        return _tables().provinces_2025.get(text.zfill(2))
    return _tables().provinces_2025.get(_parse_province(text) or "")


def parse_address_units(text: str | None, *, code_set: str | None = None) -> AddressUnits:
    """Read a free-text address (``"Số 12, Phường Lạch Tray, Quận Ngô Quyền, Thành phố Hải Phòng"``).

    The lead components before the first one named with a unit type (phường, xã, thị trấn, đặc khu,
    quận, huyện, thị xã, thành phố, tỉnh) are the street; the rest is parsed by the maintained
    library, once per distinct text. Without ``code_set``, a text that names a district and a
    commune within it is read under 124/2004, otherwise under 19/2025. No network is ever used
    (the library would geocode a street to place an address in a split commune; this never hands
    it one, and takes the default successor instead).
    """
    street, admin = _split_street(text or "")
    if not admin:
        return AddressUnits(street, None, None, None, None, None, None)
    found_set, province, district, ward = _parse_admin(admin, code_set)
    located = _locate_codes(ward or "", district or "", province or "", found_set) if found_set else None
    key = located[2] if located else None
    return AddressUnits(street, found_set, province, district, ward, key,
                        _tables().provinces_2025.get(province) if province else None)


def unit_key_column(wards: Any, districts: Any = None, provinces: Any = None, *,
                    code_set: str | None = None) -> Any:
    """:func:`unit_key` row by row over lists or Arrow arrays, once per distinct (ward, district, province)."""
    if isinstance(wards, (pa.Array, pa.ChunkedArray)):
        n = len(wards)
        columns = [_as_array(c, pa.string()) if c is not None else pa.nulls(n, pa.string())
                   for c in (wards, districts, provinces)]
        joined = pc.binary_join_element_wise(*columns, "|", null_handling="replace", null_replacement="")
        return _map_column(joined, lambda t: unit_key(*t.split("|"), code_set=code_set), pa.string())
    rows = zip(wards, districts if districts is not None else [None] * len(wards),
               provinces if provinces is not None else [None] * len(wards))
    seen: dict[tuple, str | None] = {}
    out = []
    for row in rows:
        if row not in seen:
            seen[row] = unit_key(*row, code_set=code_set)
        out.append(seen[row])
    return out


def parse_address_column(values: Any, *, code_set: str | None = None) -> pa.Table:
    """:func:`parse_address_units` over a list or an Arrow string array, as a table of its fields."""
    texts = _as_array(values, pa.string()).to_pylist()
    seen: dict[str, AddressUnits] = {}
    rows = []
    for text in texts:
        if text is None:
            rows.append(None)
            continue
        found = seen.get(text)
        if found is None:
            found = seen[text] = parse_address_units(text, code_set=code_set)
        rows.append(found)
    names = AddressUnits.__dataclass_fields__
    return pa.table({name: pa.array([getattr(r, name) if r else None for r in rows], pa.string()) for name in names})


def _clean(value: Any) -> str:
    return "" if value is None else unicodedata.normalize("NFC", str(value)).strip()


def _locate(ward: Any, district: Any, province: Any, code_set: str | None) -> tuple[str, str, str] | None:
    """(code set, commune code in that set, 2025 key) of a commune given by codes or names."""
    if code_set not in (None, CODE_SET_2004, CODE_SET_2025):
        raise ValueError(f"code_set must be {CODE_SET_2004!r} or {CODE_SET_2025!r}, got {code_set!r}")
    ward, district, province = _clean(ward), _clean(district), _clean(province)
    if all(v.isdigit() or not v for v in (ward, district, province)):
        return _locate_codes(ward, district, province, code_set)
    mode = code_set or (CODE_SET_2004 if district else CODE_SET_2025)
    tables = _tables()
    named = {"district": tables.legacy_names.get(district.zfill(3), "") if district.isdigit() else district,
             "province": (tables.legacy_names if mode == CODE_SET_2004 else tables.names_2025).get(
                 province.zfill(2), "") if province.isdigit() else province}
    if ward.isdigit() or (province and not named["province"]) or (district and not named["district"]):
        return None  # a commune code among names, or a code that names nothing
    found_set, p, d, w = _parse_admin(", ".join(v for v in (ward, named["district"], named["province"]) if v), mode)
    if found_set is None or not (w or d):
        return None
    return _locate_codes(w or "", d or "", p or "", found_set)


def _locate_codes(ward: str, district: str, province: str, code_set: str | None) -> tuple[str, str, str] | None:
    tables = _tables()
    ward = ward.zfill(5) if ward else ""
    district = district.zfill(3) if district else ""
    province = province.zfill(2) if province else ""
    if code_set is None:
        if district or (province and province not in tables.province_codes_2025):
            code_set = CODE_SET_2004
        elif ward in tables.wards_2025:
            code_set = CODE_SET_2025
        elif ward in tables.legacy_ward:
            code_set = CODE_SET_2004
        else:
            return None
    if code_set == CODE_SET_2025:
        unit = tables.wards_2025.get(ward)
        return (code_set, ward, ward) if unit and (not province or unit.province_code == province) else None
    if not ward:
        zone = tables.island_districts.get(district)
        return (code_set, "", zone) if zone else None
    where = tables.legacy_ward.get(ward)
    if where is None or (province and where[0] != province) or (district and where[1] != district):
        return None
    return code_set, ward, tables.successors[ward][0]


_UNIT_TYPES = re.compile(r"^(?:phuong|xa|thi tran|dac khu|quan|huyen|thi xa|thanh pho|tinh|tp|p|q|h|tt|tx)\b")


def _split_street(text: str) -> tuple[str | None, str]:
    """(lead, administrative part) of an address: the lead ends where a unit type first appears."""
    parts = [p.strip() for p in unicodedata.normalize("NFC", text).split(",") if p.strip()]
    for i, part in enumerate(parts):
        if _UNIT_TYPES.match(part.translate(_FOLD).lower().replace(".", " ").strip()):
            return (", ".join(parts[:i]) or None), ", ".join(parts[i:])
    return None, ", ".join(parts)


_DISTRICT_TYPES = re.compile(r"^(?:quan|huyen|thi xa|q|h|tx)\b")


@lru_cache(maxsize=1 << 16)
def _parse_admin(admin: str, code_set: str | None) -> tuple[str | None, str | None, str | None, str | None]:
    """(code set, province, district, ward) the library finds in the administrative part of an address.

    Without ``code_set``: a text with a district-type component (quận, huyện, thị xã), or one in
    which the 124/2004 reading finds a commune inside a district, is a 124/2004 address; any other
    is read under 19/2025 (whose communes are often named after old districts: Phường Ngô Quyền).
    Cached per distinct text: the library costs 0.1-0.4 ms a call (it rebuilds its keyword patterns every time).
    """
    from vietnamadminunits import parse_address

    if code_set is None:
        folded = (part.translate(_FOLD).lower().replace(".", " ").strip() for part in admin.split(","))
        if any(_DISTRICT_TYPES.match(part) for part in folded):
            code_set = CODE_SET_2004
    if code_set in (None, CODE_SET_2004):
        old = parse_address(admin, mode="LEGACY", keep_street=False, level=3)
        if old.ward_code and old.district_code:
            return CODE_SET_2004, old.province_code, old.district_code, old.ward_code
        if code_set == CODE_SET_2004:  # a district without its commune: only an island district has a key
            return (CODE_SET_2004 if old.province_code else None), old.province_code, old.district_code, None
    new = parse_address(admin, mode="FROM_2025", keep_street=False, level=2)
    if new.ward_code or new.province_code:
        return CODE_SET_2025, new.province_code, "", new.ward_code
    return None, None, None, None


@lru_cache(maxsize=1 << 10)
def _parse_province(text: str) -> str | None:
    """The province code (either set) the library reads in a province name."""
    from vietnamadminunits import parse_address

    for mode in ("LEGACY", "FROM_2025"):
        code = parse_address(text, mode=mode, keep_street=False, level=1).province_code
        if code:
            return code
    return None


# ---------------------------------------------------------------------------------------------
# Columns
# ---------------------------------------------------------------------------------------------

def _as_array(values: Any, type_: pa.DataType | None) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if isinstance(values, pa.Array):
        return values
    return pa.array(list(values), type_)


def _map_column(values: Any, convert: Callable[[Any], Any], type_: pa.DataType) -> Any:
    """``convert`` applied once per distinct non-null value; Arrow in, Arrow out; a list in, a list out."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        array = _as_array(values, None)
        encoded = array.dictionary_encode()
        mapped = pa.array([convert(v) for v in encoded.dictionary.to_pylist()], type_)
        return mapped.take(encoded.indices)
    seen: dict[Any, Any] = {}
    out = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        if value not in seen:
            seen[value] = convert(value)
        out.append(seen[value])
    return out
