"""Cost: the bill (Cost Explorer) and estimates from measured usage, the finance dashboard, budgets, forecasts."""
