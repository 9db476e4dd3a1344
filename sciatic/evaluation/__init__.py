"""Nerve metrics, QC (overlap, distances, label-free flags), promotion statistics, pictures, reports: pure functions."""

__all__ = ["cases", "metrics", "overlay", "promotion", "qc", "report", "thresholds"]
