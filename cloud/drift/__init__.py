"""Drift: merged sketches scored against the bundle's baseline profile and the previous window."""
