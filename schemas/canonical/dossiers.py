"""The canonical ``dossiers`` table: one row per (one-stop-shop system, dossier code) and version.

Read from the province's one-stop-shop databases (``national-systems.md`` §6), one row per dossier of
``ho_so`` with its processing steps of ``qua_trinh_xu_ly`` nested in ``steps``. The codes the national
portal expects (§5) are mapped from each system's own: ``channel`` is ``KenhThucHien``, ``status``
``TrangThaiHoSo``, ``applicant_type`` ``LoaiDoiTuong``, ``applicant_id_kind`` ``LoaiDinhDanh``; the
system's own status code is kept next to the mapped one.

Times are the systems' naive local times read as Asia/Ho_Chi_Minh. ``updated_at`` is the dossier row's
own; ``version`` is the greatest ``updated_at`` of the row and its steps (a changed step is a new
version of its dossier). A dossier that disappeared from its system is landed as a *tombstone*:
``deleted`` true, every data column null, ``version`` just after anything seen from that system.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.canonical import with_provenance
from schemas.canonical.citizens import VN_TIMESTAMP

DATASET = "dossiers"
KEY = ("system", "dossier_code")
VERSION_COLUMN = "version"

#: One processing step (``qua_trinh_xu_ly``), in the order of its ``id``.
STEP = pa.struct([
    pa.field("step_id", pa.int64(), nullable=False),  # id
    pa.field("handler", pa.string()),  # nguoi_xu_ly (NguoiXuLy)
    pa.field("handler_title", pa.string()),  # chuc_danh (ChucDanh)
    pa.field("department", pa.string()),  # phong_ban (PhongBanXuLy)
    pa.field("content", pa.string()),  # noi_dung (NoiDungXuLy)
    pa.field("status", pa.int8()),  # trang_thai mapped to TrangThaiHoSo 1-10 (TrangThai)
    pa.field("source_status", pa.string()),  # trang_thai as the system wrote it
    pa.field("processed_at", VN_TIMESTAMP),  # thoi_diem (ThoiDiemXuLy)
    pa.field("due_at", VN_TIMESTAMP),  # han_xu_ly (NgayKetThucTheoQuyDinh)
    pa.field("updated_at", VN_TIMESTAMP),  # updated_at
])

SCHEMA = with_provenance([
    pa.field("system", pa.string(), nullable=False),  # the system's name in HUB_ONESTOP_URLS
    pa.field("dossier_code", pa.string(), nullable=False),  # ma_ho_so (MaHoSo)
    pa.field("procedure_code", pa.string()),  # ma_tthc (MaTTHC)
    pa.field("procedure_name", pa.string()),  # ten_tthc (TenTTHC)
    pa.field("field_code", pa.string()),  # ma_linh_vuc (MaLinhVuc)
    pa.field("channel", pa.int8()),  # kenh → KenhThucHien: 1 at the counter, 2 online, 3 by post
    pa.field("applicant_name", pa.string()),  # chu_ho_so (ChuHoSo)
    pa.field("applicant_type", pa.int8()),  # loai_doi_tuong (LoaiDoiTuong 1-4)
    pa.field("applicant_id", pa.string()),  # so_giay_to (DinhDanhCHS.SoDinhDanh)
    pa.field("applicant_id_kind", pa.int8()),  # LoaiDinhDanh: 1 personal ID, 2 CMND, 3 enterprise code, else null
    pa.field("summary", pa.string()),  # trich_yeu (TrichYeuHoSo)
    pa.field("received_at", VN_TIMESTAMP),  # ngay_tiep_nhan (NgayTiepNhan)
    pa.field("due_at", VN_TIMESTAMP),  # ngay_hen_tra (NgayHenTra)
    pa.field("finished_at", VN_TIMESTAMP),  # ngay_ket_thuc (NgayKetThucXuLy)
    pa.field("returned_at", VN_TIMESTAMP),  # ngay_tra (NgayTra)
    pa.field("status", pa.int8()),  # trang_thai → TrangThaiHoSo 1-10
    pa.field("source_status", pa.string()),  # trang_thai as the system wrote it
    pa.field("paid_online", pa.bool_()),  # da_thanh_toan (DuocThanhToanTrucTuyen)
    pa.field("steps", pa.list_(pa.field("step", STEP, nullable=False))),
    pa.field("updated_at", VN_TIMESTAMP),  # the ho_so row's updated_at (null in a tombstone)
    pa.field("deleted", pa.bool_(), nullable=False),
    pa.field("version", VN_TIMESTAMP, nullable=False),
], DATASET, version=1)
