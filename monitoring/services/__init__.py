"""Writes for monitoring: the serving runtime's ingest token (`ingest`), metric points (`metrics`), their roll-up
and retention (`metrics`). Other parts of the monitoring issue add their own modules here (drift, alerts)."""
