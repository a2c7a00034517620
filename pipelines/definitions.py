"""The hub's Dagster code location: every asset, check, job, schedule, sensor and resource."""

from __future__ import annotations

import dagster as dg

from pipelines.automation import hourly_days, hourly_sync, land_days, sync_all, sync_population
from pipelines.canonical import canonical_assets
from pipelines.checks import asset_checks
from pipelines.documents import docaxis_assets, docaxis_checks, docaxis_jobs, docaxis_sensors
from pipelines.dossiers import dossier_assets, dossier_checks, dossiers_job, hourly_dossiers
from pipelines.lake import HubLake
from pipelines.publish import snapshot
from pipelines.reconcile import hourly_reconcile, reconcile_assets, reconcile_checks, reconcile_job
from pipelines.scale_out import executor_from_env
from pipelines.sources import landing_assets

defs = dg.Definitions(
    assets=[*landing_assets, *canonical_assets, snapshot, *docaxis_assets, *reconcile_assets, *dossier_assets],
    asset_checks=[*asset_checks, *docaxis_checks, *reconcile_checks, *dossier_checks],
    jobs=[land_days, sync_all, sync_population, *docaxis_jobs, reconcile_job, dossiers_job],
    schedules=[hourly_days, hourly_sync, hourly_reconcile, hourly_dossiers],
    sensors=[*docaxis_sensors],
    resources={"lake": HubLake()},
    executor=executor_from_env(),
)
