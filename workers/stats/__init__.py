"""One statistics core for dataset profiles and drift: columnar, vectorized, in record batches.

- `columns`: readers that turn CSV, JSON Lines and Parquet files into typed columnar batches (pyarrow), never all
  rows at once, and the rules for what text spells (numbers, whole numbers, booleans, datetimes).
- `accumulators`: per-column counts, moments, exact distinct values, fixed-edge histograms, categorical value
  counts and quantiles, each filled batch by batch.
- `profile`: the two-pass dataset profile built from those (workers.datasets.profile_files is its front door).
"""
