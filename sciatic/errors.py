"""Domain exceptions and reason codes.

Every exception says, in its docstring, what the operator can do about it.
Reason codes are stored in the database (``quarantine.reason``,
``series.refusal_reason``) so that they can be counted with SQL.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path


class ReasonCode(StrEnum):
    """Why a file was quarantined or a series was refused."""

    # file level
    NOT_DICOM = "not_dicom"
    UNREADABLE_FILE = "unreadable_file"
    TRUNCATED = "truncated"
    UNREADABLE_PIXELS = "unreadable_pixels"
    UNSUPPORTED_PIXELS = "unsupported_pixels"
    NOT_MR = "not_mr"
    NOT_IMAGE = "not_image"
    MISSING_UID = "missing_uid"
    SOP_CONFLICT = "sop_conflict"
    TOO_LARGE = "too_large"
    UNSAFE_PATH = "unsafe_path"
    NOT_A_FILE = "not_a_file"  # a FIFO, socket or device node: never opened
    ABANDONED_TEMPORARY = "abandoned_temporary"
    # series level
    MISSING_GEOMETRY = "missing_geometry"
    SINGLE_SLICE = "single_slice"
    DUPLICATE_POSITIONS = "duplicate_positions"
    MULTI_VOLUME = "multi_volume"
    MIXED_ORIENTATION = "mixed_orientation"
    MIXED_MATRIX = "mixed_matrix"
    NONUNIFORM_SPACING = "nonuniform_spacing"
    SHEARED_SLICES = "sheared_slices"
    INCOMPLETE = "incomplete"
    CONVERSION_FAILED = "conversion_failed"  # an unexpected error (or out of memory) while converting
    # labels
    GEOMETRY_MISMATCH = "geometry_mismatch"
    UNMATCHED_LABEL = "unmatched_label"
    UNUSABLE_SEG = "unusable_seg"  # not a DICOM SEG, or no single segment that is the nerve


class SciaticError(Exception):
    """Base class of every error the service raises on purpose."""


class ConfigurationError(SciaticError):
    """A setting is missing or invalid.

    Recovery: fix the named ``SCIATIC_*`` variable or config-file entry;
    ``sciatic config`` prints the effective values.
    """


class DatabaseNotReadyError(SciaticError):
    """The database schema is missing or behind the code.

    Recovery: run ``sciatic db upgrade``; ``sciatic db status`` shows where it is.
    """


class DatabaseUnreachableError(SciaticError):
    """The database named by ``SCIATIC_DATABASE_URL`` cannot be reached.

    Recovery: check that the server runs and that the URL's host, port, user,
    password and database name are right (``sciatic config`` shows the URL with
    the password masked).
    """


class InputRefusedError(SciaticError):
    """An input (file, series, label) cannot be used, for a recorded reason.

    Recovery: none needed for the batch, which goes on; the item is
    quarantined or refused with ``reason`` and ``detail`` so that a person can
    fix it at the source (re-send from PACS, re-export the label) and drop it
    in again.
    """

    def __init__(self, reason: ReasonCode, detail: str) -> None:
        detail = printable(detail)  # details are stored and logged: they may quote hostile values
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def printable(text: str, limit: int = 2000) -> str:
    """``text`` safe to store and log: control characters (NUL too) and lone surrogates escaped, length capped."""
    cleaned = "".join(c if c.isprintable() or c in "\t\n" else repr(c)[1:-1] for c in text)
    cleaned = cleaned.encode("utf-8", "backslashreplace").decode("utf-8")
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


class FileRefusedError(InputRefusedError):
    """One file cannot be used; ``path`` names it.

    Recovery: quarantine ``path`` with ``reason``; re-send the instance from
    the scanner or PACS if it should have been usable.
    """

    def __init__(self, path: Path, reason: ReasonCode, detail: str) -> None:
        super().__init__(reason, detail)
        self.path = path


class ModelIntegrityError(SciaticError):
    """A checkpoint's bytes do not match the sha256 in the model registry.

    Recovery: restore the checkpoint file from backup, or retire the model
    version (``sciatic models retire ID``) and promote another.
    """


class NoProductionModelError(SciaticError):
    """Segmentation was asked for but no model is in production.

    Recovery: install one (``sciatic models add CHECKPOINT --promote``; ``sciatic
    run`` prints the command for the shipped phantom model), promote a
    registered one (``sciatic models promote ID``), or pass ``--model ID``.
    """
