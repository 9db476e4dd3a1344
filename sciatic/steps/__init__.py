"""The pipeline's steps: one module per step, in flow order. Each touches the database and the data folder.

==========  =====================================================================
ingest      drop folder -> indexed instances -> quarantine / duplicates -> NIfTI volumes
segment     a series volume + the production model -> a nerve mask and a segmentation row
measure     a mask -> slice and nerve metric rows (CSA, volume, signal)
qc          metric rows (+ manual labels) -> QC flags, Dice; inter-rater agreement
labels      the labels folder -> checked manual labels on their series' grid
retrain     labelled series -> frozen split -> challenger (fine-tuned) -> promote or keep
models      a checkpoint file <-> the model registry (add, export) with its model card
export      a segmentation -> DICOM SEG, SR (measurement report), SC (overlay) -> the PACS outbox
outbox      queued DICOM objects -> the PACS, retried with back-off, never twice
report      stored segmentations -> overlay pictures and the HTML report
==========  =====================================================================

Rules: a step module never imports another step module; what two steps share
lives below them (``sciatic.db.queries`` for reads, ``sciatic.layout`` for
paths, ``sciatic.imaging.volume`` for volumes and masks, the pure libraries
``dicom``, ``imaging``, ``model`` and ``evaluation`` for the work itself).
``sciatic.pipeline`` is how Airflow and ``sciatic run`` call them.
"""

__all__ = ["export", "ingest", "labels", "measure", "models", "outbox", "qc", "report", "retrain", "segment"]
