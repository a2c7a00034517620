"""Shapes of the hub: canonical table schemas and the wire contracts of the national systems."""
