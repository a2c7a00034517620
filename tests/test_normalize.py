"""Normalisation for reconciliation: names, dates, ID numbers, enterprise codes and administrative units.

Concrete Vietnamese cases first, then properties (hypothesis, derandomised), then a synthetic
province: every representation variant the sandbox injects, as its ground truth records it, must
normalise to the truth, and what is a real difference (a mistyped digit, another name) must not.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from hub.admin_units import legacy_to_2025, legacy_units, units_2025
from hub.identity_match import fold_name
from hub.reconcile.normalize import (
    CMND, CODE_SET_2004, CODE_SET_2025, INVALID, MISSING, PERSONAL_ID, PartialDate, classify_id_column,
    classify_id_number, enterprise_head_office, id_consistent_column, id_consistent_with, name_key,
    name_key_column, name_parts, normalize_date, normalize_date_column, normalize_enterprise_code,
    normalize_name, normalize_name_column, normalize_partial_date, normalize_personal_id,
    parse_address_column, parse_address_units, personal_id_issue, province_key, split_name, unit_2025,
    unit_candidates, unit_key, unit_key_column)
from sandbox import names
from sandbox.app import Sandbox, SandboxConfig
from sandbox.business import detail_a, detail_b
from sandbox.civil_status import NO_DIACRITICS, PLACES, SLOTS
from sandbox.faults import FaultPlan
from sandbox.population import NS1

NFD = lambda text: unicodedata.normalize("NFD", text)  # noqa: E731

# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------

#: Each line: the canonical spelling, then spellings of the same name the systems send.
TONE_CLASSES = [
    ("Hòa", ["Hoà", "HOÀ", "hoà", "hòa", NFD("Hoà"), NFD("HÒA")]),
    ("Hóa", ["Hoá", "HOÁ"]),
    ("Hỏa", ["Hoả"]),
    ("Hòe", ["Hoè", "HOÈ"]),
    ("Khỏe", ["Khoẻ"]),
    ("Thúy", ["Thuý", "THUÝ", NFD("thuý")]),
    ("Thụy", ["Thuỵ", "THUỴ"]),
    ("Thủy", ["Thuỷ", "thuỷ"]),
    ("Lũy", ["Luỹ"]),
    ("Quý", ["Qúy", "QUÝ", NFD("Qúy")]),  # qu: the u is consonant, the tone goes on y
    ("Quỳnh", ["Qùynh", "QUỲNH"]),
    ("Quốc", ["QUỐC", NFD("quốc")]),
    ("Giáp", ["Gíap", "GIÁP"]),  # gi: the i is consonant
    ("Giữa", ["GIỮA", "Giưã"]),
    ("Gì", ["GÌ", "gì"]),  # ...unless it is the only vowel
    ("Hoàng", ["Hòang", "HOÀNG", NFD("Hòang")]),  # closed syllable: the second vowel in both conventions
    ("Toàn", ["Tòan"]),
    ("Huỳnh", ["Hùynh", "HUỲNH"]),
    ("Khuyến", ["KHUYẾN", NFD("khuyến")]),
    ("Nguyễn", ["NGUYỄN", NFD("Nguyễn"), "nguyễn"]),
    ("Người", ["NGƯỜI", "Ngừơi"]),  # ươ: the tone goes on ơ
    ("Ngoài", ["Ngòai", "NGOÀI"]),  # three vowels: the middle one
    ("Khuỷu", ["Khủyu"]),
    ("Tuấn", ["TUẤN", "Túân"]),
    ("Thoa", ["THOA"]),
]


@pytest.mark.parametrize("canonical, variants", TONE_CLASSES, ids=[c for c, _ in TONE_CLASSES])
def test_tone_placement_equivalence_classes(canonical: str, variants: list[str]) -> None:
    assert normalize_name(canonical) == canonical
    for variant in variants:
        assert normalize_name(variant) == canonical, variant


def test_the_traditional_convention_is_the_sandboxs_canonical_spelling() -> None:
    """The sandbox's true names are canonical already, and every garbling of them comes back."""
    for part in {*names.FAMILY, *names.MIDDLE[0], *names.MIDDLE[1], *names.GIVEN[0], *names.GIVEN[1]}:
        assert normalize_name(part) == part
        for variant in (names.old_tone_placement(part), names.to_nfd(part), part.upper(),
                        names.to_nfd(names.old_tone_placement(part).upper())):
            assert normalize_name(variant) == part


def test_decomposed_and_composed_input_agree() -> None:
    name = "Trần Thị Thùy Dương"
    decomposed = unicodedata.normalize("NFD", name)
    assert decomposed != name
    assert normalize_name(decomposed) == normalize_name(name) == name
    assert unicodedata.is_normalized("NFC", normalize_name(decomposed))


def test_case_spacing_and_punctuation() -> None:
    assert normalize_name("  NGUYỄN\tvăn\u00a0\u00a0ĐỨC  ") == "Nguyễn Văn Đức"
    assert normalize_name("Nguyễn,Văn. An;") == "Nguyễn Văn An"
    assert normalize_name("Lê-Thị (Hồng)") == "Lê Thị Hồng"
    assert normalize_name("Phạm\u200bVăn Nam") == "Phạm Văn Nam"  # a zero-width space separates words
    assert normalize_name("H\u2019hen NIÊ") == "H'Hen Niê"  # a word-internal apostrophe stays
    assert normalize_name("'Lan'") == "Lan"
    assert normalize_name("KIM MIN JUN") == "Kim Min Jun"  # foreign names: case only
    assert normalize_name("José") == "José"  # not a Vietnamese syllable: the mark stays where it was
    assert normalize_name(None) == normalize_name("") == normalize_name(" \t ") == ""


def test_d_with_stroke() -> None:
    assert normalize_name("ÐẶNG ðức") == "Đặng Đức"  # the Icelandic eth some keyboards type for Đ
    assert name_key("Đặng Đức") == name_key("Dang Duc") == name_key("ĐẶNG ĐỨC") == "DANG DUC"
    assert normalize_name("Dang Duc") == "Dang Duc"  # missing diacritics are not guessed


def test_name_key_folds_for_blocking() -> None:
    assert name_key("Nguyễn Thị Hòa") == name_key("NGUYEN THI HOA") == "NGUYEN THI HOA"
    assert name_key(NFD("nguyễn thị hoà")) == "NGUYEN THI HOA"
    assert name_key("H'Hen Niê") == "HHEN NIE"
    assert name_key("Trương Vĩnh Ký").replace(" ", "") == fold_name("Trương Vĩnh Ký")


@pytest.mark.parametrize("text, parts", [
    ("Nguyễn Văn An", ("Nguyễn", "Văn", "An")),
    ("Nguyễn Thị Minh Khai", ("Nguyễn", "Thị Minh", "Khai")),
    ("Lê Na", ("Lê", "", "Na")),
    ("Hùng", ("", "", "Hùng")),
    ("  ", ("", "", "")),
    ("TÔN THẤT THUYẾT", ("Tôn Thất", "", "Thuyết")),
    ("ton that thuyet", ("Ton That", "", "Thuyet")),
    ("Tôn Nữ Thị Ninh", ("Tôn Nữ", "Thị", "Ninh")),
    ("Công Tằng Tôn Nữ Thị Hà", ("Công Tằng Tôn Nữ", "Thị", "Hà")),
    ("Âu Dương Phong", ("Âu Dương", "", "Phong")),
    ("Tôn Nữ", ("Tôn", "", "Nữ")),  # nothing would be left for the given name
    ("Nguyễn Phúc Hậu", ("Nguyễn", "Phúc", "Hậu")),  # Phúc is a middle name here
    ("Đặng Trần Thị Ngọc Bảo Anh", ("Đặng", "Trần Thị Ngọc Bảo", "Anh")),
])
def test_split_name(text: str, parts: tuple[str, str, str]) -> None:
    assert split_name(text) == parts


def test_name_parts_when_the_whole_name_is_in_ten() -> None:
    assert name_parts("", "", "NGUYỄN VĂN ĐỨC") == ("Nguyễn", "Văn", "Đức")
    assert name_parts(None, None, NFD("Trần Thị Thuý")) == ("Trần", "Thị", "Thúy")
    assert name_parts("nguyễn", "thị minh", "khai") == ("Nguyễn", "Thị Minh", "Khai")  # the record's own split


def test_name_columns_list_and_arrow() -> None:
    values = ["NGUYỄN THỊ HOÀ", None, "Nguyễn Thị Hòa", NFD("nguyễn thị hoà"), ""]
    expected = ["Nguyễn Thị Hòa", None, "Nguyễn Thị Hòa", "Nguyễn Thị Hòa", ""]
    assert normalize_name_column(values) == expected
    arrow = normalize_name_column(pa.array(values))
    assert arrow.type == pa.string() and arrow.to_pylist() == expected
    chunked = normalize_name_column(pa.chunked_array([values[:2], values[2:]]))
    assert chunked.to_pylist() == expected
    assert name_key_column(pa.array(values)).to_pylist() == ["NGUYEN THI HOA", None, "NGUYEN THI HOA",
                                                            "NGUYEN THI HOA", ""]


# -- properties ---------------------------------------------------------------------------------

SYLLABLES = sorted({*names.FAMILY, *names.MIDDLE[0], *names.MIDDLE[1], *names.GIVEN[0], *names.GIVEN[1],
                    *(canonical for canonical, _ in TONE_CLASSES)})


def _new_convention(text: str) -> str:
    """The other tone rule, applied independently of the sandbox's own function."""
    out = []
    for word in text.split(" "):
        d = NFD(word)
        for glide in ("oa", "oe", "uy", "OA", "OE", "UY", "Oa", "Oe", "Uy"):
            for tone in "\u0300\u0301\u0303\u0309\u0323":
                before = glide[0] + tone + glide[1]
                if d.endswith(before) and not d.lower().startswith("qu"):
                    d = d[: -len(before)] + glide + tone
        out.append(unicodedata.normalize("NFC", d))
    return " ".join(out)


VARIANTS = st.sampled_from([
    lambda s: s, str.upper, str.lower, NFD, names.old_tone_placement, _new_convention,
    lambda s: NFD(_new_convention(s).upper()), lambda s: "  " + s.replace(" ", " \t\u00a0") + " ",
    lambda s: s.replace(" ", ", ") + ".",
])
VIETNAMESE_TEXT = st.text(alphabet=st.sampled_from(
    sorted(set("".join(SYLLABLES) + "".join(SYLLABLES).upper() + "abcdefghijklmnopqrstuvwxyz ,.-'\t\u00a0"
               + "\u0300\u0301\u0303\u0309\u0323\u0302\u0306\u031b"))), max_size=40)


@settings(derandomize=True, deadline=None, max_examples=400)
@given(st.lists(st.sampled_from(SYLLABLES), min_size=1, max_size=5), VARIANTS, VARIANTS)
def test_variants_of_one_name_normalise_alike(words: list[str], first, second) -> None:
    name = " ".join(words)
    assert normalize_name(first(name)) == normalize_name(second(name)) == name


@settings(derandomize=True, deadline=None, max_examples=400)
@given(st.text(max_size=30))
def test_normalize_name_is_idempotent_and_blind_to_normal_forms(text: str) -> None:
    once = normalize_name(text)
    assert normalize_name(once) == once
    assert normalize_name(unicodedata.normalize("NFD", text)) == once
    assert normalize_name(unicodedata.normalize("NFC", text)) == once


@settings(derandomize=True, deadline=None, max_examples=400)
@given(VIETNAMESE_TEXT)
def test_name_key_ignores_case_and_normal_form(text: str) -> None:
    key = name_key(text)
    assert name_key(text.upper()) == name_key(text.lower()) == name_key(NFD(text)) == key
    assert key.isascii() and key == key.upper()
    assert split_name(text) == split_name(NFD(text.upper()))


# ---------------------------------------------------------------------------------------------
# Dates
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "05/03/1990", "5/3/1990", "05-03-1990", "05.03.1990", "1990-03-05", "1990/03/05", "19900305",
    "05/03/1990 14:20:00", "19900305142000", "1990-03-05T23:59:59", " 05/03/1990 ",
    date(1990, 3, 5), datetime(1990, 3, 5, 23, 0),
])
def test_each_wire_format_gives_the_date(value) -> None:
    assert normalize_date(value) == date(1990, 3, 5)


def test_an_instant_with_an_offset_is_dated_in_viet_nam() -> None:
    assert normalize_date("2025-06-30T20:00:00Z") == date(2025, 7, 1)
    assert normalize_date("2025-07-01T06:59:00+07:00") == date(2025, 7, 1)
    assert normalize_date(datetime(2025, 6, 30, 18, 0, tzinfo=timezone.utc)) == date(2025, 7, 1)
    assert normalize_date(datetime(2025, 7, 1, 1, 0, tzinfo=timezone(timedelta(hours=7)))) == date(2025, 7, 1)


def test_partial_dates() -> None:
    assert normalize_partial_date("1950") == PartialDate(1950)
    assert normalize_partial_date("00/00/1950") == PartialDate(1950)
    assert normalize_partial_date("00/05/1950") == PartialDate(1950, 5)
    assert normalize_partial_date("05/1950") == PartialDate(1950, 5)
    assert normalize_partial_date("19500500") == PartialDate(1950, 5)
    assert normalize_partial_date("1950-05") == PartialDate(1950, 5)
    assert normalize_partial_date("12/05/1950") == PartialDate(1950, 5, 12)
    assert PartialDate(1950).agrees_with(date(1950, 8, 1))
    assert PartialDate(1950, 5).agrees_with(PartialDate(1950, 5, 12))
    assert not PartialDate(1950, 5).agrees_with(date(1950, 6, 1))
    assert PartialDate(1950, 5, 12).as_date() == date(1950, 5, 12) and PartialDate(1950).as_date() is None


@pytest.mark.parametrize("value, reason", [
    ("31/02/2020", "not a calendar day"),
    ("2020-13-01", "month 13"),
    ("13/13/2020", "month 13"),
    ("1950", "only partly known"),
    ("00/00/1950", "only partly known"),
    ("05/1950", "only partly known"),
    ("01/01/1700", "year 1700"),
    ("05/03/90", "not in a known format"),
    ("ngày 5 tháng 3", "not in a known format"),
    ("", "not in a known format"),
    ("00/05/00/1950", "not in a known format"),
    (19900305, "of type int"),
    (None, "of type NoneType"),
])
def test_bad_dates_raise_naming_the_value(value, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        normalize_date(value)
    assert repr(value) in str(caught.value) and reason in str(caught.value)


def test_date_columns() -> None:
    values = ["05/03/1990", None, "19900305", "1990-03-05", "05/03/1990"]
    out = normalize_date_column(pa.array(values))
    assert out.type == pa.date32()
    assert out.to_pylist() == [date(1990, 3, 5), None, date(1990, 3, 5), date(1990, 3, 5), date(1990, 3, 5)]
    assert normalize_date_column(values[:3]) == [date(1990, 3, 5), None, date(1990, 3, 5)]
    with pytest.raises(ValueError, match="31/02/2020"):
        normalize_date_column(["05/03/1990", "31/02/2020"])
    assert normalize_date_column(pa.array(["31/02/2020", "1950", "05/03/1990"]), errors="null").to_pylist() == [
        None, None, date(1990, 3, 5)]


# ---------------------------------------------------------------------------------------------
# Personal IDs
# ---------------------------------------------------------------------------------------------

def test_valid_personal_ids_and_their_spellings() -> None:
    for spelling in ("031190799344", " 031 190 799 344 ", "031-190-799-344", "031.190.799.344",
                     "０３１１９０７９９３４４"):
        assert normalize_personal_id(spelling) == ("031190799344", None)
    found = classify_id_number("31190799344")  # stored as an integer: the leading zero came off
    assert found == classify_id_number(31190799344)
    assert found.kind == PERSONAL_ID and found.value == "031190799344" and "leading zero" in found.note
    assert normalize_personal_id("") == normalize_personal_id(None) == (None, None)
    assert classify_id_number("  ").kind == MISSING


@pytest.mark.parametrize("number, reason", [
    ("013190799344", "province part 013"),  # no province 13 in either code set
    ("099190799344", "province part 099"),
    ("301026724796", "province part 301"),  # the sandbox's swap of 031026724796
    ("031990799344", "gender/century digit 9"),  # the sandbox's typo of 031190799344
    ("031690799344", "gender/century digit 6"),
    ("031299000001", "in the future"),  # 2099
    ("03119079934", "11 digits"),  # a digit lost in the middle, not a lost leading zero
    ("0311907993445", "13 digits"),
    ("03119O799344", "other than digits"),
])
def test_implausible_personal_ids(number: str, reason: str) -> None:
    canonical, problem = normalize_personal_id(number)
    assert canonical is None and reason in problem
    assert classify_id_number(number).kind == INVALID


def test_an_old_cmnd_is_old_not_invalid() -> None:
    found = classify_id_number("068 348 735")
    assert found.kind == CMND and found.value == "068348735" and found.problem is None
    canonical, problem = normalize_personal_id("068348735")
    assert canonical is None and "old 9-digit CMND" in problem
    assert classify_id_number("68348735").value == "068348735"


def test_id_consistent_with_birth_and_sex() -> None:
    # 031 1 90 799344: registered in Hải Phòng, 1 = female born in the 1900s, 90 = 1990.
    assert id_consistent_with("031190799344", date(1990, 5, 1), 2)
    assert id_consistent_with("031190799344", "01/05/1990", "2")
    assert id_consistent_with("031190799344", "1990")  # a year is enough
    assert id_consistent_with("031190799344")  # nothing to compare with: structure only
    assert id_consistent_with("001305000123", date(2005, 1, 1), 2)  # 3: female, 2000s
    assert id_consistent_with("031200123456", date(2000, 1, 1), 1)  # 2: male, 2000s
    assert not id_consistent_with("031200123456", date(1900, 1, 1), 1)  # ... not the 1900s
    assert not id_consistent_with("031190799344", date(1991, 5, 1), 2)
    assert "birth year 1990" in personal_id_issue("031190799344", date(1991, 5, 1), 2)
    assert not id_consistent_with("031190799344", date(1990, 5, 1), 1)
    assert "gender" in personal_id_issue("031190799344", 1990, 1)
    assert not id_consistent_with("068348735", date(1990, 5, 1), 1)  # a CMND encodes nothing
    assert "cmnd" in personal_id_issue("068348735")


def test_id_columns_agree_with_the_scalar_functions() -> None:
    values = ["031190799344", None, "068348735", "31190799344", "301026724796", "031 190 799 344", "x",
              "001305000123", "031990799344"]
    table = classify_id_column(pa.array(values))
    for row, value in zip(table.to_pylist(), values):
        found = classify_id_number(value)
        assert row == {"kind": found.kind, "value": found.value, "problem": found.problem, "note": found.note}
    births = pa.array([date(1990, 5, 1), date(1990, 5, 1), None, date(1990, 1, 1), None, date(1991, 1, 1),
                       None, date(2005, 3, 3), date(1990, 1, 1)], pa.date32())
    sexes = pa.array([2, 1, 1, 2, None, 2, None, 2, 2], pa.int8())
    expected = [id_consistent_with(v, b, s) for v, b, s in zip(values, births.to_pylist(), sexes.to_pylist())]
    assert id_consistent_column(pa.array(values), births, sexes).to_pylist() == expected
    assert expected == [True, False, False, True, False, False, False, True, False]
    years = pa.array([1990, None, None, 1990, None, 1990, None, 2005, 1990], pa.int16())
    assert id_consistent_column(values, years).to_pylist() == [True, False, False, True, False, True, False,
                                                             True, False]


# ---------------------------------------------------------------------------------------------
# Enterprise codes
# ---------------------------------------------------------------------------------------------

def test_enterprise_codes() -> None:
    for spelling in ("0100109106", " 0100 109 106 ", "0100.109.106", "0100-109-106"):
        assert normalize_enterprise_code(spelling) == ("0100109106", None)
    assert normalize_enterprise_code("0315065353") == ("0315065353", None)
    for spelling in ("0100109106-001", "0100109106 001", "0100109106001", "0100109106–001"):
        assert normalize_enterprise_code(spelling) == ("0100109106-001", None)
    assert enterprise_head_office("0100109106-001") == "0100109106"
    assert normalize_enterprise_code(None) == normalize_enterprise_code(" ") == (None, None)


@pytest.mark.parametrize("code, reason", [
    ("0100109107", "check digit is 7, expected 6"),
    ("0100109107-001", "check digit is 7, expected 6"),
    ("0100000050", "no check digit exists"),  # Σ Nᵢ·Wᵢ = 1·29 + 5·3 = 44 ≡ 0 (mod 11): N10 would be 10
    ("010010910", "not 10 digits"),
    ("0100109106-01", "not 10 digits"),
    ("MST0100109106", "not 10 digits"),
])
def test_bad_enterprise_codes(code: str, reason: str) -> None:
    canonical, problem = normalize_enterprise_code(code)
    assert canonical is None and reason in problem


# ---------------------------------------------------------------------------------------------
# Administrative units
# ---------------------------------------------------------------------------------------------

def test_old_and_new_codes_of_one_commune_share_a_key() -> None:
    # Hải Phòng: Phường Hoàng Văn Thụ (Quận Hồng Bàng, 124/2004) lies in Phường Hồng Bàng since 2025.
    assert unit_key("11320", "303", "31") == unit_key("11311", "", "31") == "11311"
    assert unit_key("11320", code_set=CODE_SET_2004) == "11311"
    assert unit_2025("11311").ward == "Phường Hồng Bàng"
    # Hải Dương's Xã Lê Ninh (Thị xã Kinh Môn) became part of Hải Phòng's Phường Bắc An Phụ.
    key = unit_key("10684", "292", "30")
    assert unit_2025(key).ward == "Phường Bắc An Phụ" and unit_2025(key).province_code == "31"
    assert unit_key("Xã Lê Ninh", "Thị xã Kinh Môn", "Tỉnh Hải Dương") == key
    assert unit_key("xa le ninh", "tx kinh mon", "hai duong") == key
    # TP Hồ Chí Minh: Phường Bến Nghé (Quận 1) is in Phường Sài Gòn, which kept its code.
    assert unit_key("26740", "760", "79") == unit_key("Phường Sài Gòn", None, "Hồ Chí Minh") == "26740"


def test_codes_and_names_agree_with_the_hubs_conversion_for_every_commune() -> None:
    for province in ("31", "30"):
        for unit in legacy_units(province):
            expected = legacy_to_2025(province)[unit.ward_code].ward_code
            assert unit_key(unit.ward_code, unit.district_code, unit.province_code) == expected
            assert unit_key(unit.ward, unit.district, unit.province) == expected
    for unit in units_2025("31"):
        assert unit_key(unit.ward_code, "", "31") == unit_key(unit.ward, "", unit.province) == unit.ward_code


def test_a_bare_code_is_read_by_the_district() -> None:
    # 00103 is Phường Xuân La (Quận Tây Hồ) under 124/2004 and Phường Tây Hồ under 19/2025.
    assert unit_key("00103", "003", "01") == "00611" == unit_key("00103", code_set=CODE_SET_2004)
    assert unit_key("00103", "", "01") == "00103" == unit_key("00103") == unit_key("00103", code_set=CODE_SET_2025)
    assert unit_key("103", "3", "1") == "00611"  # codes that lost their leading zeros


def test_a_split_commune_has_several_candidates() -> None:
    # Phường Lạch Tray (Quận Ngô Quyền) was divided between Phường Gia Viên (its default) and another.
    candidates = unit_candidates("11365", "304", "31")
    assert len(candidates) >= 2 and candidates[0] == unit_key("11365", "304", "31") == "11359"
    assert unit_2025(candidates[0]).ward == "Phường Gia Viên"
    assert unit_candidates("Phường Lạch Tray", "Quận Ngô Quyền", "Hải Phòng") == candidates
    assert unit_candidates(candidates[1], "", "31") == (candidates[1],)
    assert unit_candidates("99999") == ()


def test_contradictions_and_unknowns_are_not_guessed() -> None:
    assert unit_key("11320", "303", "01") is None  # a Hải Phòng commune said to be in Hà Nội
    assert unit_key("11320", "304", "31") is None  # ... in the wrong district
    assert unit_key("11311", "", "01") is None
    assert unit_key("99999", "", "31") is None
    assert unit_key(None) is None and unit_key("") is None
    assert unit_key("Phường Không Có Thật", None, "Hải Phòng") is None
    with pytest.raises(ValueError, match="code_set"):
        unit_key("11320", code_set="2004")


def test_codes_mixed_with_names() -> None:
    assert unit_key("Phường Gia Viên", "", "31") == "11359"  # a 2025 commune by name, its province by code
    assert unit_key("Phường Lạch Tray", "304", "31") == "11359"  # a 124/2004 commune by name, district by code
    assert unit_key("Phường Lạch Tray", "999", "31") is None  # a district code that names nothing
    assert unit_key("11365", "Quận Ngô Quyền", None) is None  # a commune code among names is not guessed


def test_a_124_2004_text_is_not_reread_under_2025() -> None:
    """Many 2025 communes carry the name of an old district; a text that names a quận/huyện is old."""
    new = parse_address_units("Số 1, Phường Ngô Quyền, Thành phố Hải Phòng")
    assert new.code_set == CODE_SET_2025 and unit_2025(new.key).ward == "Phường Ngô Quyền"
    old = parse_address_units("Số 1, Phường Không Có, Quận Ngô Quyền, Hải Phòng")
    assert (old.code_set, old.district_code, old.ward_code, old.key) == (CODE_SET_2004, "304", None, None)


def test_island_district_without_communes() -> None:
    assert unit_2025(unit_key("", "318", "31")).ward == "Đặc khu Bạch Long Vĩ"
    assert parse_address_units("Huyện Bạch Long Vĩ, Thành phố Hải Phòng").key == unit_key("", "318", "31")


def test_province_keys() -> None:
    assert province_key("30") == "31" and province_key("31") == "31"  # Hải Dương merged into Hải Phòng
    assert province_key("45") == "44" and province_key("44") == "44"  # Quảng Trị took Quảng Bình's code
    assert province_key("Tỉnh Hải Dương") == "31" and province_key("Hà Nội") == "01"
    assert province_key("Tỉnh Quảng Bình") == "44" and province_key("Thừa Thiên Huế") == "46"
    assert province_key("Atlantis") is None
    assert province_key("1") == "01" and province_key("") is None and province_key("99") is None


def test_free_text_addresses(monkeypatch) -> None:
    import vietnamadminunits.converter.converter_2025 as converter
    import vietnamadminunits.parser.utils as utils

    def no_network(*_args, **_kwargs):
        raise AssertionError("geocoding must never be called")

    monkeypatch.setattr(utils, "get_geo_location", no_network)
    monkeypatch.setattr(converter, "get_geo_location", no_network)
    old = parse_address_units("Số 12, Phường Lạch Tray, Quận Ngô Quyền, Thành phố Hải Phòng")
    assert (old.street, old.code_set, old.province_code, old.district_code, old.ward_code, old.key,
            old.province_key) == ("Số 12", CODE_SET_2004, "31", "304", "11365", "11359", "31")
    new = parse_address_units("Số 12, Phường Gia Viên, Thành phố Hải Phòng")
    assert (new.street, new.code_set, new.district_code, new.ward_code, new.key) == (
        "Số 12", CODE_SET_2025, "", "11359", "11359")
    hamlet = parse_address_units("Thôn 3, Xã Lê Ninh, Thị xã Kinh Môn, Tỉnh Hải Dương")
    assert hamlet.street == "Thôn 3" and hamlet.key == unit_key("10684", "292", "30")
    bare = parse_address_units("lạch tray, ngô quyền, hải phòng")
    assert bare.street is None and bare.key == "11359"
    assert parse_address_units("Cơ sở y tế, Phường Hồng Bàng, Thành phố Hải Phòng").street == "Cơ sở y tế"
    nowhere = parse_address_units("Số 5, đường không tên")
    assert nowhere.key is None and nowhere.code_set is None
    assert parse_address_units("").key is None


def test_unit_columns() -> None:
    wards, districts, provinces = ["11320", "11311", None, "11365", "11320"], ["303", "", None, "304", "303"], \
        ["31", "31", None, "31", "31"]
    expected = ["11311", "11311", None, "11359", "11311"]
    assert unit_key_column(wards, districts, provinces) == expected
    assert unit_key_column(pa.array(wards), pa.array(districts), pa.array(provinces)).to_pylist() == expected
    assert unit_key_column(pa.array(["11320", "11311"])).to_pylist() == ["11311", "11311"]
    table = parse_address_column(pa.array(["Số 1, Phường Gia Viên, Thành phố Hải Phòng", None,
                                           "Số 2, Phường Lạch Tray, Quận Ngô Quyền, Hải Phòng"]))
    assert table.column("key").to_pylist() == ["11359", None, "11359"]
    assert table.column("street").to_pylist() == ["Số 1", None, "Số 2"]


# ---------------------------------------------------------------------------------------------
# The synthetic province: every injected representation variant normalises to the truth
# ---------------------------------------------------------------------------------------------

#: Data faults raised so that a small province shows each kind many times.
FAULTS = {"name_nfd": 0.2, "name_no_diacritics": 0.15, "name_all_in_ten": 0.15, "name_old_tone": 0.5,
          "name_upper": 0.4, "id_typo": 0.08, "id_swap": 0.08, "id_cmnd_instead": 0.1, "rep_name_mismatch": 0.1}
REPRESENTATION = {"name_nfd", "name_old_tone", "name_all_in_ten", "name_no_diacritics", "address_2025_codes",
                  "id_cmnd_instead"}
REAL_DIFFERENCES = {"id_typo", "id_swap", "rep_name_mismatch"}


@pytest.fixture(scope="module")
def province():
    sandbox = Sandbox(SandboxConfig(residents=3_000, seed=11, faults=FaultPlan(data=FAULTS)))
    persons = sandbox.truth.tables["persons"].to_pylist()
    by_key = {p["person"]: p for p in persons}
    by_id = {p["personal_id"]: p for p in persons}
    records = defaultdict(dict)
    for row in sandbox.truth.record_table().to_pylist():
        records[(row["system"], row["dataset"], row["record_key"])][row["role"]] = row["entity_id"]
    return sandbox, by_key, by_id, records, sandbox.truth.anomaly_table().to_pylist()


def true_name(person: dict) -> str:
    return " ".join(p for p in (person["family_name"], person["middle_name"], person["given_name"]) if p)


def test_every_recorded_representation_variant_normalises_to_the_truth(province) -> None:
    sandbox, by_key, by_id, records, anomalies = province
    kinds = {a["anomaly"] for a in anomalies}
    assert REPRESENTATION | REAL_DIFFERENCES <= kinds
    def served_with(kind: str) -> set[tuple[str, str, str]]:
        return {(a["system"], a["record_key"], a["served_value"]) for a in anomalies if a["anomaly"] == kind}

    mismatched, stripped = served_with("rep_name_mismatch"), served_with("name_no_diacritics")
    checked = defaultdict(int)
    for a in anomalies:
        kind, true, served = a["anomaly"], a["true_value"], a["served_value"]
        where = (a["system"], a["record_key"], served)
        if kind not in REPRESENTATION or where in mismatched:
            continue
        if where in stripped:  # not restorable (whatever else was done to it), but the key agrees
            assert name_key(served) == name_key(true) and normalize_name(served) != true
        elif kind.startswith("name_"):
            assert normalize_name(served) == true, a
            if kind == "name_all_in_ten":
                person = by_key[records[("population", "citizen", a["record_key"])]["subject"]]
                assert split_name(served) == (person["family_name"], person["middle_name"], person["given_name"])
        elif kind == "address_2025_codes":
            assert unit_key(true, code_set=CODE_SET_2004) == unit_key(served, code_set=CODE_SET_2025) is not None
            assert unit_key(served, code_set=CODE_SET_2025) in unit_candidates(true, code_set=CODE_SET_2004)
        elif kind == "id_cmnd_instead":
            found = classify_id_number(served)
            assert found.kind == CMND and found.value == by_id[true]["cmnd"]
        checked[kind] += 1
    assert set(checked) == REPRESENTATION and min(checked.values()) >= 5


def test_real_differences_are_left_for_linking(province) -> None:
    """A mistyped or swapped ID is never turned into the true one; when the change hits the
    century/sex or year digits, the person's birth date and sex expose it."""
    _, _, by_id, _, anomalies = province
    exposed = 0
    for a in anomalies:
        kind, true, served = a["anomaly"], a["true_value"], a["served_value"]
        if kind in ("id_typo", "id_swap"):
            assert normalize_personal_id(served)[0] != true
            person = by_id[true]
            changed = {i for i, (x, y) in enumerate(zip(true, served)) if x != y}
            if changed & {3, 4, 5}:
                assert not id_consistent_with(served, person["birth"], person["gender"])
                exposed += 1
        elif kind == "rep_name_mismatch":
            assert name_key(served) != name_key(true)
    assert exposed >= 5


def test_population_records_as_served(province) -> None:
    sandbox, by_key, _, records, _ = province
    registry = sandbox.population.registry
    root = etree.fromstring("".join(registry.collection(list(range(registry.r.n)))).encode())
    text = lambda el, path: el.findtext("/".join(f"{{{NS1}}}{p}" for p in path.split("/"))) or ""  # noqa: E731
    for record in root.iter(f"{{{NS1}}}CongDan"):
        key = text(record, "SoDinhDanh")
        person = by_key[records[("population", "citizen", key)]["subject"]]
        assert normalize_personal_id(key) == (person["personal_id"], None)
        if person["cmnd"]:
            assert classify_id_number(text(record, "SoCMND")) == classify_id_number(person["cmnd"])
        parts = name_parts(text(record, "HoVaTen/Ho"), text(record, "HoVaTen/ChuDem"), text(record, "HoVaTen/Ten"))
        assert parts == (person["family_name"], person["middle_name"], person["given_name"])
        assert normalize_date(text(record, "NgayThangNamSinh/NgayThangNam")) == normalize_date(person["birth"])
        assert normalize_partial_date(text(record, "NgayThangNamSinh/Nam")).agrees_with(normalize_date(person["birth"]))
        served = unit_key(text(record, "ThuongTru/MaPhuongXa"), text(record, "ThuongTru/MaQuanHuyen"),
                          text(record, "ThuongTru/MaTinhThanh"))
        assert served == unit_key(person["ward_code"], code_set=CODE_SET_2004) is not None
        assert parse_address_units(text(record, "ThuongTru/ChiTiet")).key == served


def test_civil_records_as_served(province) -> None:
    sandbox, by_key, _, records, anomalies = province
    registry = sandbox.civil.registry
    id_faults = {(a["dataset"], a["record_key"], a["field"]): a for a in anomalies if a["system"] == "civil"}
    seen = defaultdict(int)
    for module, table in registry.tables.items():
        for row in range(len(table.ids)):
            record = registry.render(module, row)
            people = records[("civil", module, str(record["id"]))]
            for slot in SLOTS[module]:
                if slot.role not in people:
                    continue
                person = by_key[people[slot.role]]
                if int(table.flags[row]) & NO_DIACRITICS:
                    assert name_key(record[slot.name]) == name_key(true_name(person))
                else:
                    assert normalize_name(record[slot.name]) == true_name(person), record[slot.name]
                if slot.birth:
                    assert normalize_date(record[slot.birth]) == normalize_date(person["birth"])
                if slot.id_number:
                    fault = id_faults.get((module, str(record["id"]), slot.id_number))
                    if fault is None:
                        assert normalize_personal_id(record[slot.id_number]) == (person["personal_id"], None)
                        seen["id"] += 1
            for place in PLACES[module]:
                served = record[place.field]
                if not served["maXa"]:
                    continue
                key = unit_key(served["maXa"], served["maHuyen"], served["maTinh"])
                assert key is not None and parse_address_units(served["dcChiTiet"]).key == key
                seen[CODE_SET_2025 if not served["maHuyen"] else CODE_SET_2004] += 1
    assert seen["id"] and seen[CODE_SET_2004] and seen[CODE_SET_2025]


def test_business_records_as_served(province) -> None:
    sandbox, by_key, _, _, anomalies = province
    registry = sandbox.business.registry
    truth = {e["enterprise_code"]: e for e in sandbox.truth.tables["enterprises"].to_pylist()}
    faults = defaultdict(set)
    for a in anomalies:
        if a["system"] == "business":
            faults[(a["record_key"], a["field"], a["true_value"])].add(a["anomaly"])
    for eid, code in enumerate(registry.codes):
        expected = truth[code]
        a, b = detail_a(registry, eid), detail_b(registry, eid)
        assert normalize_enterprise_code(b["MaSoDoanhNghiep"]) == (code, None)
        assert normalize_date(a["MainInformation"]["FOUNDING_DATE"]) == expected["founding_date"]
        true_key = unit_key(expected["ward_code"], code_set=CODE_SET_2004)
        office = b["DiaChiTruSo"][0]["DiaChi"][0]
        assert unit_key(office["MaPhuongXa"], office["MaQuanHuyen"], office["MaTinhThanh"]) == true_key
        assert parse_address_units(a["HOAdress"]["AddressFullText"]).key == true_key
        for person_key, rep in zip(expected["representatives"], b["DaiDienPhapLuat"]):
            person, served = by_key[person_key], rep["ThongTinCaNhan"][0]
            name_faults = faults[(code, "LEGAL_NAMES", true_name(person))]
            if "rep_name_mismatch" not in name_faults:
                if "name_no_diacritics" in name_faults:
                    assert name_key(served["HoVaTen"]) == name_key(true_name(person))
                else:
                    assert normalize_name(served["HoVaTen"]) == true_name(person)
            id_faults = faults[(code, "SoGiayChungThuc", person["personal_id"])]
            found = classify_id_number(served["SoGiayChungThuc"])
            if "id_cmnd_instead" in id_faults:
                assert found.kind == CMND and found.value == person["cmnd"]
            elif not id_faults:
                assert found.kind == PERSONAL_ID and found.value == person["personal_id"]
