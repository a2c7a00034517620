"""The daily partitions of the day-shaped sources (civil-status changes, business-registry dossiers).

Both sources answer "what changed on day D", so the lake keeps one partition per day of the
province's calendar (Asia/Ho_Chi_Minh), today included (it fills up through the day). The first
partition is the earlier of ``HUB_CIVIL_SINCE`` and ``HUB_BUSINESS_SINCE``; when they are not set, the
first of January three years back, so that the set of partitions does not move day by day (a
partition that disappeared from the set would vanish from the UI's history). Days before a system's
own history start land empty.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date, datetime

import dagster as dg

from connectors import business, civil_status
from schemas.timefmt import VN_TZ

TIMEZONE = "Asia/Ho_Chi_Minh"
DEFAULT_YEARS = 3


def first_day(environ: Mapping[str, str] = os.environ) -> date:
    """Where the day partitions start (module docstring)."""
    starts = []
    if environ.get("HUB_CIVIL_SINCE", "").strip():
        starts.append(civil_status.parse_since(environ["HUB_CIVIL_SINCE"].strip()))
    if environ.get("HUB_BUSINESS_SINCE", "").strip():
        starts.append(business.parse_since(environ["HUB_BUSINESS_SINCE"]))
    if not starts:
        return date(datetime.now(VN_TZ).year - DEFAULT_YEARS, 1, 1)
    return min(starts)


days = dg.DailyPartitionsDefinition(start_date=first_day().isoformat(), timezone=TIMEZONE, end_offset=1)


def day_of(partition_key: str) -> date:
    return date.fromisoformat(partition_key)
