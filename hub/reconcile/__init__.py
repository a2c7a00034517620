"""Reconciliation: normalising what the national systems say, then linking it into one record per entity."""
