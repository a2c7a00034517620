"""The hub's Dagster code location: every asset, check, job, schedule, sensor and resource."""

from __future__ import annotations

import dagster as dg

from pipelines.automation import document_axis_inbox, hourly_sync, receive_documents, sync_all
from pipelines.canonical import canonical_assets
from pipelines.checks import asset_checks
from pipelines.lake import HubLake
from pipelines.publish import snapshot
from pipelines.sources import landing_assets

defs = dg.Definitions(
    assets=[*landing_assets, *canonical_assets, snapshot],
    asset_checks=asset_checks,
    jobs=[sync_all, receive_documents],
    schedules=[hourly_sync],
    sensors=[document_axis_inbox],
    resources={"lake": HubLake()},
)
