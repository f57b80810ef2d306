"""backfill: guarded reruns and backfills for Azure Data Factory pipelines."""

__version__ = "0.1.0"
