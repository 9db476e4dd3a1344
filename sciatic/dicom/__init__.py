"""DICOM in and out: safe header reads, series planning, conversion, the receiver, SEG, and sending to PACS."""

__all__ = ["convert", "receiver", "scan", "scan_fast", "scu", "seg", "series"]
