"""DICOM in and out: safe header reads, series planning, conversion, the receiver, SEG, SR, SC, sending to PACS."""

__all__ = ["convert", "receiver", "sc", "scan", "scan_fast", "scu", "seg", "series", "sr"]
