"""The Dagster code location of the hub (``workspace.yaml`` loads ``pipelines.definitions``)."""
