"""The canonical ``citizens`` table: one row per (personal ID, version) from the population database.

Names and addresses are kept as the source served them (NFC/NFD, case, tone placement, 124/2004 or
19/2025 codes): normalising them is reconciliation's job, and it needs the raw form to explain itself.
Codes stay strings so leading zeros survive.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.canonical import with_provenance

DATASET = "citizens"
KEY = ("personal_id",)
VERSION_COLUMN = "updated_at"
VN_TIMESTAMP = pa.timestamp("ms", tz="Asia/Ho_Chi_Minh")  # Parquet has no seconds unit

#: Where each text column comes from inside ``ns1:CongDan`` (a child, or a child of a child).
WIRE_TEXT: dict[str, str] = {
    "personal_id": "SoDinhDanh",
    "cmnd": "SoCMND",
    "family_name": "HoVaTen/Ho",
    "middle_name": "HoVaTen/ChuDem",
    "given_name": "HoVaTen/Ten",
    "gender": "GioiTinh",
    "ethnicity_code": "DanToc",
    "religion_code": "TonGiao",
    "marital_status": "TinhTrangHonNhan",
    "blood_group": "NhomMau",
    "birth_year": "NgayThangNamSinh/Nam",
    "birth_date": "NgayThangNamSinh/NgayThangNam",
    "nationality": "QuocTich",
    "household_relation": "ChuHo/QuanHe",
    "household_head_id": "ChuHo/SoDinhDanh",
    "household_head_cmnd": "ChuHo/SoCMND",
    "household_head_name": "ChuHo/HoVaTen",
    "household_book": "SoSoHoKhau",
    "updated_at": "NgayCapNhat",
    "status": "TrangThai",
    "death_date": "NgayChet",
}
for _prefix, _element in (("birth_registration", "NoiDangKyKhaiSinh"), ("hometown", "QueQuan"),
                          ("permanent", "ThuongTru"), ("current", "NoiOHienTai")):
    for _suffix, _leaf in (("province_code", "MaTinhThanh"), ("district_code", "MaQuanHuyen"),
                           ("ward_code", "MaPhuongXa"), ("address", "ChiTiet"), ("country", "QuocGia")):
        WIRE_TEXT[f"{_prefix}_{_suffix}"] = f"{_element}/{_leaf}"
for _prefix, _element in (("father", "Cha"), ("mother", "Me"), ("spouse", "VoChong"),
                          ("representative", "NguoiDaiDien")):
    for _suffix, _leaf in (("name", "HoVaTen"), ("nationality", "QuocTich"), ("personal_id", "SoDinhDanh"),
                           ("cmnd", "SoCMND")):
        WIRE_TEXT[f"{_prefix}_{_suffix}"] = f"{_element}/{_leaf}"

#: Columns that are not plain strings, and their types.
TYPED: dict[str, pa.DataType] = {
    "gender": pa.int8(),
    "marital_status": pa.int8(),
    "birth_year": pa.int16(),
    "birth_date": pa.date32(),
    "updated_at": VN_TIMESTAMP,
    "status": pa.int8(),
    "death_date": pa.date32(),
}

SCHEMA = with_provenance(
    [pa.field(name, TYPED.get(name, pa.string()), nullable=name not in ("personal_id", "updated_at"))
     for name in WIRE_TEXT],
    DATASET, version=1,
)
