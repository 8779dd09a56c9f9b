"""Metrics sources: where the per-minute series of a service's revisions come from on each backend (no Django)."""
