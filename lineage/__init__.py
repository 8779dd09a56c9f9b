"""Datasets and their versions, runs, model versions, the lineage graph, OpenLineage export."""
