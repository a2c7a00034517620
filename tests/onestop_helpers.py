"""One-stop-shop databases (``national-systems.md`` §6) for the tests: throwaway SQLite, PostgreSQL and
MariaDB databases holding ``ho_so`` and ``qua_trinh_xu_ly``, and rows made to order."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
MARIADB_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/"
BACKENDS = ("sqlite", "postgresql", "mariadb")

#: A moment in the systems' local time (naive, as the tables hold it).
T0 = datetime(2026, 3, 2, 9, 0, 0)
_MOMENT = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

METADATA = sa.MetaData()
HO_SO = sa.Table(
    "ho_so", METADATA,
    sa.Column("ma_ho_so", sa.String(64), primary_key=True),
    sa.Column("ma_tthc", sa.String(32)), sa.Column("ten_tthc", sa.String(255)), sa.Column("ma_linh_vuc", sa.String(32)),
    sa.Column("kenh", sa.String(16)), sa.Column("chu_ho_so", sa.String(255)), sa.Column("loai_doi_tuong", sa.Integer),
    sa.Column("so_giay_to", sa.String(32)), sa.Column("trich_yeu", sa.Text),
    sa.Column("ngay_tiep_nhan", _MOMENT), sa.Column("ngay_hen_tra", _MOMENT), sa.Column("ngay_ket_thuc", _MOMENT),
    sa.Column("ngay_tra", _MOMENT), sa.Column("trang_thai", sa.String(16)), sa.Column("da_thanh_toan", sa.Boolean),
    sa.Column("updated_at", _MOMENT, nullable=False, index=True),
)
STEPS = sa.Table(
    "qua_trinh_xu_ly", METADATA,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("ma_ho_so", sa.String(64), nullable=False, index=True),
    sa.Column("nguoi_xu_ly", sa.String(255)), sa.Column("chuc_danh", sa.String(255)), sa.Column("phong_ban", sa.String(255)),
    sa.Column("noi_dung", sa.Text), sa.Column("trang_thai", sa.String(16)),
    sa.Column("thoi_diem", _MOMENT), sa.Column("han_xu_ly", _MOMENT),
    sa.Column("updated_at", _MOMENT, nullable=False, index=True),
)


@dataclass
class OnestopDatabase:
    kind: str
    url: str  # what HUB_ONESTOP_URLS would name
    engine: sa.Engine

    def add(self, *dossiers: dict[str, Any], steps: list[dict[str, Any]] = ()) -> None:
        with self.engine.begin() as conn:
            if dossiers:
                conn.execute(HO_SO.insert(), list(dossiers))
            if steps:
                conn.execute(STEPS.insert(), list(steps))

    def update(self, code: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(HO_SO.update().where(HO_SO.c.ma_ho_so == code).values(**values))

    def delete(self, *codes: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(STEPS.delete().where(STEPS.c.ma_ho_so.in_(codes)))
            conn.execute(HO_SO.delete().where(HO_SO.c.ma_ho_so.in_(codes)))


@contextmanager
def onestop_database(kind: str, tmp_path: Path) -> Iterator[OnestopDatabase]:
    """A fresh database of ``kind`` with the §6 tables, dropped afterwards."""
    name = f"hub_onestop_{uuid.uuid4().hex[:12]}"
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / (name + '.db')}"
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        METADATA.create_all(engine)
        try:
            yield OnestopDatabase(kind, url, engine)
        finally:
            engine.dispose()
        return
    admin_url, quote = (PG_ADMIN, '"') if kind == "postgresql" else (MARIADB_ADMIN, "`")
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {quote}{name}{quote}")
    url = (f"postgresql://postgres@127.0.0.1:5432/{name}" if kind == "postgresql"
           else f"mariadb://root@127.0.0.1:3306/{name}")
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://")
                              .replace("mariadb://", "mariadb+pymysql://") + ("?charset=utf8mb4" if kind == "mariadb" else ""),
                              poolclass=sa.pool.NullPool)
    try:
        METADATA.create_all(engine)
        yield OnestopDatabase(kind, url, engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            force = " WITH (FORCE)" if kind == "postgresql" else ""
            conn.exec_driver_sql(f"DROP DATABASE {quote}{name}{quote}{force}")
        admin.dispose()


def code(n: int, day: str = "260302", agency: str = "000.00.13.H31") -> str:
    """A valid dossier code (Circular 01/2018 Art. 19) with serial ``n``."""
    return f"{agency}-{day}-{n:04d}"


def dossier(n: int, updated_at: datetime, **values: Any) -> dict[str, Any]:
    """A valid ``ho_so`` row: serial ``n``, changed at ``updated_at``; ``values`` override columns."""
    received = updated_at - timedelta(days=1)
    row = {
        "ma_ho_so": code(n), "ma_tthc": "1.001193", "ten_tthc": "Đăng ký khai sinh", "ma_linh_vuc": "HT",
        "kenh": "TRUC_TIEP", "chu_ho_so": "Nguyễn Văn An", "loai_doi_tuong": 1, "so_giay_to": "031090001234",
        "trich_yeu": f"Hồ sơ {n}", "ngay_tiep_nhan": received, "ngay_hen_tra": received + timedelta(days=3),
        "ngay_ket_thuc": None, "ngay_tra": None, "trang_thai": "DANG_XU_LY", "da_thanh_toan": False,
        "updated_at": updated_at,
    }
    row.update(values)
    return row


def step(dossier_code: str, updated_at: datetime, **values: Any) -> dict[str, Any]:
    """A valid ``qua_trinh_xu_ly`` row of ``dossier_code``, changed at ``updated_at``."""
    row = {"ma_ho_so": dossier_code, "nguoi_xu_ly": "Trần Thị Bình", "chuc_danh": "Chuyên viên",
           "phong_ban": "Bộ phận một cửa", "noi_dung": "Tiếp nhận hồ sơ", "trang_thai": "TIEP_NHAN",
           "thoi_diem": updated_at, "han_xu_ly": updated_at + timedelta(days=1), "updated_at": updated_at}
    row.update(values)
    return row
