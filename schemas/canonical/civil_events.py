"""The canonical ``civil_events`` table: one row per (module, record id, version) of the civil-status registry.

Births (``KS``), deaths (``KT``) and marriages (``KH``) share one table so that a person's events can be
read together; each module fills its own columns and leaves the others null. Names, free-text addresses
and ID numbers are kept exactly as served (NFC or NFD, case, tone placement, a mistyped or old CMND
number): spotting and resolving those is reconciliation's job, and it needs the raw form to explain
itself. Codes stay strings so leading zeros survive; dates become ``date32`` and what cannot be read as
one is null here and described in ``issues``.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.canonical import with_provenance

DATASET = "civil_events"
KEY = ("module", "record_id")
VERSION_COLUMN = "updated_at"
VN_TIMESTAMP = pa.timestamp("ms", tz="Asia/Ho_Chi_Minh")  # Parquet has no seconds unit
TIME_OF_DAY = pa.time32("ms")  # likewise: Parquet's TIME32 is milliseconds

MODULES = ("KS", "KT", "KH")

#: The parts of a place object ``{maTinh, maHuyen, maXa, dcChiTiet}`` and the column suffix of each.
PLACE_PARTS: dict[str, str] = {"maTinh": "province_code", "maHuyen": "district_code", "maXa": "ward_code",
                               "dcChiTiet": "address_detail"}

#: Wire field → column. For place fields (see :data:`PLACE_FIELDS`) the column is a prefix that
#: :data:`PLACE_PARTS` completes, e.g. ``nksNoiSinh.maXa`` → ``child_birth_place_ward_code``.
WIRE_TO_COLUMN: dict[str, str] = {
    # every module
    "module": "module", "id": "record_id", "ngayCapNhat": "updated_at", "maDonVi": "agency_code",
    "ngayDangKy": "registered_on", "soDangKy": "registration_number", "quyenSo": "book_number",
    "trangSo": "page_number", "trangThai": "status",
    # KS: the child, the mother, the father
    "soDinhDanh": "child_personal_id", "nksHoTen": "child_name", "nksGioiTinh": "child_gender",
    "nksNgaySinh": "child_birth_date", "nksNoiSinh": "child_birth_place", "nksQueQuan": "child_hometown",
    "nksDanToc": "child_ethnicity", "nksQuocTich": "child_nationality",
    "meHoTen": "mother_name", "meNgaySinh": "mother_birth_date", "meSoDDCN": "mother_id_number",
    "meDanToc": "mother_ethnicity", "meQuocTich": "mother_nationality", "meNoiCuTru": "mother_residence",
    "chaHoTen": "father_name", "chaNgaySinh": "father_birth_date", "chaSoDDCN": "father_id_number",
    "chaDanToc": "father_ethnicity", "chaQuocTich": "father_nationality", "chaNoiCuTru": "father_residence",
    # KS and KT: who asked for the registration
    "nycHoTen": "requester_name", "nycQuanHe": "requester_relation", "nycSoDDCN": "requester_id_number",
    # KT: the deceased, the death, the death notice
    "nktHoTen": "deceased_name", "nktGioiTinh": "deceased_gender", "nktNgaySinh": "deceased_birth_date",
    "nktLoaiGiayToTuyThan": "deceased_id_type", "nktSoGiayToTuyThan": "deceased_id_number",
    "nktNgayChet": "death_date", "nktGioPhutChet": "death_time", "nktNoiChet": "death_place",
    "nktNguyenNhanChet": "death_cause", "gbtLoai": "death_notice_type", "gbtSo": "death_notice_number",
    "gbtNgay": "death_notice_date",
}
for _side, _role in (("chong", "husband"), ("vo", "wife")):  # KH: both spouses carry the same fields
    for _suffix, _column in (("HoTen", "name"), ("NgaySinh", "birth_date"), ("DanToc", "ethnicity"),
                             ("QuocTich", "nationality"), ("NoiCuTru", "residence"),
                             ("LoaiGiayToTuyThan", "id_type"), ("SoGiayToTuyThan", "id_number")):
        WIRE_TO_COLUMN[f"{_side}{_suffix}"] = f"{_role}_{_column}"

PLACE_FIELDS = frozenset({"nksNoiSinh", "nksQueQuan", "meNoiCuTru", "chaNoiCuTru", "nktNoiChet",
                          "chongNoiCuTru", "voNoiCuTru"})

_HEADER = ("id", "module", "maDonVi", "ngayDangKy", "soDangKy", "quyenSo", "trangSo", "ngayCapNhat", "trangThai")
#: The wire fields of each module (national-systems.md §2), in wire order.
MODULE_FIELDS: dict[str, tuple[str, ...]] = {
    "KS": _HEADER + ("soDinhDanh", "nksHoTen", "nksGioiTinh", "nksNgaySinh", "nksNoiSinh", "nksQueQuan", "nksDanToc",
                     "nksQuocTich", "meHoTen", "meNgaySinh", "meSoDDCN", "meDanToc", "meQuocTich", "meNoiCuTru",
                     "chaHoTen", "chaNgaySinh", "chaSoDDCN", "chaDanToc", "chaQuocTich", "chaNoiCuTru",
                     "nycHoTen", "nycQuanHe", "nycSoDDCN"),
    "KT": _HEADER + ("nktHoTen", "nktGioiTinh", "nktNgaySinh", "nktLoaiGiayToTuyThan", "nktSoGiayToTuyThan",
                     "nktNgayChet", "nktGioPhutChet", "nktNoiChet", "nktNguyenNhanChet", "gbtLoai", "gbtSo", "gbtNgay",
                     "nycHoTen", "nycQuanHe", "nycSoDDCN"),
    "KH": _HEADER + tuple(f"{side}{suffix}" for side in ("chong", "vo") for suffix in (
        "HoTen", "NgaySinh", "DanToc", "QuocTich", "NoiCuTru", "LoaiGiayToTuyThan", "SoGiayToTuyThan")),
}

#: Columns that are not plain strings. Genders use the population database's codes (1 male, 2 female);
#: ID types are LoaiGiayToTuyThan (1 personal ID, 2 CMND, 3 passport); status is trangThai
#: (1 valid, 2 superseded by a correction, 3 revoked).
TYPED: dict[str, pa.DataType] = {
    "record_id": pa.int64(), "updated_at": VN_TIMESTAMP, "registered_on": pa.date32(), "status": pa.int8(),
    "child_gender": pa.int8(), "child_birth_date": pa.date32(), "mother_birth_date": pa.date32(),
    "father_birth_date": pa.date32(), "deceased_gender": pa.int8(), "deceased_birth_date": pa.date32(),
    "deceased_id_type": pa.int8(), "death_date": pa.date32(), "death_time": TIME_OF_DAY,
    "death_notice_date": pa.date32(), "husband_birth_date": pa.date32(), "husband_id_type": pa.int8(),
    "wife_birth_date": pa.date32(), "wife_id_type": pa.int8(),
}


def place_columns(prefix: str) -> list[str]:
    """The four flattened columns of a place field's column prefix."""
    return [f"{prefix}_{suffix}" for suffix in PLACE_PARTS.values()]


def _columns() -> list[str]:
    out: list[str] = []
    for wire, column in WIRE_TO_COLUMN.items():
        for name in (place_columns(column) if wire in PLACE_FIELDS else [column]):
            if name not in out:  # the requester's columns serve KS and KT
                out.append(name)
    return out


#: Per row, what the connector could not type or found implausible in a field it kept (a date that is
#: not a date, an ID that fails the structure rules): "field: why; field: why". Null when all is well.
ISSUES_COLUMN = "issues"

COLUMNS: tuple[str, ...] = (*_columns(), ISSUES_COLUMN)

SCHEMA = with_provenance(
    [pa.field(name, TYPED.get(name, pa.string()), nullable=name not in KEY + (VERSION_COLUMN,))
     for name in COLUMNS],
    DATASET, version=1,
)
