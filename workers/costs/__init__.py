"""Where cost figures come from: Cost Explorer (the bill) on aws; on every backend, estimates from measured usage
and the price table (monitoring.costs.services makes those from runs and serving processes)."""
