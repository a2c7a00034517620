"""Date and time formats on the wire (``national-systems.md`` §0: always Asia/Ho_Chi_Minh, +07:00).

Values are carried as epoch seconds inside the hub; these helpers render and parse the formats each
system uses, one value at a time or a whole numpy column at once (pages of a thousand records).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

VN_TZ = timezone(timedelta(hours=7))
_OFFSET = 7 * 3600

COMPACT = "%Y%m%d%H%M%S"  # yyyyMMddHHmmss: population, portal
DAY = "%Y%m%d"  # yyyyMMdd
VN_DAY = "%d/%m/%Y"  # dd/MM/yyyy: civil status, business registry
VN_MOMENT = "%d/%m/%Y %H:%M:%S"  # dd/MM/yyyy HH:mm:ss
EDXML_DAY = "%Y/%m/%d"  # yyyy/MM/dd: edXML
EDXML_MOMENT = "%Y/%m/%d %H:%M:%S"


def render(epoch: int | float, fmt: str) -> str:
    return datetime.fromtimestamp(int(epoch), VN_TZ).strftime(fmt)


def parse(text: str, fmt: str) -> int:
    """Epoch seconds of a wire value in +07:00; ``ValueError`` names the expected format."""
    try:
        return int(datetime.strptime(text.strip(), fmt).replace(tzinfo=VN_TZ).timestamp())
    except ValueError:
        raise ValueError(f"{text!r} does not match {fmt}") from None


def now_vn() -> datetime:
    return datetime.now(VN_TZ)


def compact_column(epochs: np.ndarray) -> list[str]:
    """yyyyMMddHHmmss for a column of epoch seconds."""
    iso = np.datetime_as_string((np.asarray(epochs, np.int64) + _OFFSET).astype("datetime64[s]"))
    return [s[0:4] + s[5:7] + s[8:10] + s[11:13] + s[14:16] + s[17:19] for s in iso.tolist()]


def day_column(epochs: np.ndarray) -> list[str]:
    """yyyyMMdd for a column of epoch seconds."""
    iso = np.datetime_as_string((np.asarray(epochs, np.int64) + _OFFSET).astype("datetime64[s]").astype("datetime64[D]"))
    return [s[0:4] + s[5:7] + s[8:10] for s in iso.tolist()]


def vn_day_column(epochs: np.ndarray) -> list[str]:
    """dd/MM/yyyy for a column of epoch seconds."""
    iso = np.datetime_as_string((np.asarray(epochs, np.int64) + _OFFSET).astype("datetime64[s]").astype("datetime64[D]"))
    return [f"{s[8:10]}/{s[5:7]}/{s[0:4]}" for s in iso.tolist()]
