"""Nerve metrics, QC (overlap, distances, label-free flags) and the pictures and report of cases: pure functions."""

__all__ = ["cases", "metrics", "overlay", "qc", "report", "thresholds"]
