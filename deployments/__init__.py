"""Environments, services, approval requests and decisions, deployments and rollbacks, objectives."""
