"""Latency and error series, drift baselines and reports, cost records, budgets, alerts, charts."""
