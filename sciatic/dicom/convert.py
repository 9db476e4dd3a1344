"""Build a series' volume from its DICOM files, and convert a whole directory.

``load_volume`` decodes each file once, places its frames in the order of the
plan, applies RescaleSlope/RescaleIntercept (per slice) and keeps an integer
dtype when that is lossless. ``convert_directory`` is the batch entry point:
it writes one ``<SeriesInstanceUID>.nii.gz`` per 3D series and a
``series.json`` report, refusing bad files and series with a reason.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
from numpy.typing import NDArray

from sciatic.dicom.scan import DicomHeader, read_header
from sciatic.dicom.series import (
    CompletenessState,
    SeriesPlan,
    check_completeness,
    group_by_series,
    plan_series,
)
from sciatic.errors import FileRefusedError, InputRefusedError, ReasonCode
from sciatic.imaging.volume import NIFTI_SUFFIX, Volume, write_volume
from sciatic.storage import atomic_write, sha256_file

REPORT_NAME = "series.json"
REPORT_FORMAT_VERSION = 1
_INTEGER_DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32)


class ConversionStatus(StrEnum):
    CONVERTED = "converted"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class FileRefusal:
    """A file that is not a usable DICOM image, and why."""

    path: Path
    reason: ReasonCode
    detail: str


@dataclass(frozen=True, slots=True)
class SeriesOutcome:
    """What happened to one series: converted to ``output``, or refused for ``reason``."""

    series_instance_uid: str
    study_instance_uid: str
    series_number: int | None
    series_description: str
    files: tuple[Path, ...]
    status: ConversionStatus
    output: Path | None = None
    sha256: str | None = None
    shape: tuple[int, int, int] | None = None
    dtype: str | None = None
    voxel_size: tuple[float, float, float] | None = None
    affine: tuple[tuple[float, ...], ...] | None = None
    reason: ReasonCode | None = None
    detail: str | None = None
    duplicates: tuple[Path, ...] = ()  # byte-identical copies of an instance, not used


@dataclass(frozen=True, slots=True)
class ConversionReport:
    """The result of ``convert_directory``; ``report_path`` is its ``series.json``."""

    source: Path
    output_dir: Path
    report_path: Path
    series: tuple[SeriesOutcome, ...]
    refused_files: tuple[FileRefusal, ...]


def convert_series(headers: Sequence[DicomHeader]) -> Volume:
    """Plan and load one series; raise ``InputRefusedError`` if it is not one 3D volume."""
    return load_volume(plan_series(headers))


def load_volume(plan: SeriesPlan) -> Volume:
    """Decode the plan's files (each once) into a ``(columns, rows, slices)`` volume with its affine.

    Raises ``FileRefusedError`` (UNREADABLE_PIXELS / UNREADABLE_FILE) naming the
    file whose pixels cannot be decoded.
    """
    stored = _decode_slices(plan)
    slopes = np.array([s.rescale_slope for s in plan.slices], dtype=np.float64)
    intercepts = np.array([s.rescale_intercept for s in plan.slices], dtype=np.float64)
    values = _rescale(stored, slopes, intercepts)
    # (slices, rows, columns) in C order is (columns, rows, slices) in Fortran order: no copy
    return Volume(values.transpose(2, 1, 0), plan.affine.copy())


def _decode_slices(plan: SeriesPlan) -> NDArray[Any]:
    wanted: defaultdict[Path, list[tuple[int, int]]] = defaultdict(list)  # path -> (slice index, frame)
    for index, source in enumerate(plan.slices):
        wanted[source.path].append((index, source.frame))
    stack: NDArray[Any] | None = None
    for path, targets in wanted.items():
        frames = _decode_file(path, plan.rows, plan.columns)
        if stack is None:
            stack = np.empty((len(plan.slices), plan.rows, plan.columns), dtype=frames.dtype)
        elif not np.can_cast(frames.dtype, stack.dtype, "safe"):
            stack = stack.astype(np.result_type(stack.dtype, frames.dtype))
        for index, frame in targets:
            if frame >= len(frames):
                raise FileRefusedError(
                    path,
                    ReasonCode.UNREADABLE_PIXELS,
                    f"{path} decodes to {len(frames)} frames, frame {frame} is missing",
                )
            stack[index] = frames[frame]
    assert stack is not None
    return stack


def _decode_file(path: Path, rows: int, columns: int) -> NDArray[Any]:
    """All frames of one file as ``(frames, rows, columns)`` in native byte order."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = np.asarray(pydicom.dcmread(path).pixel_array)
    except OSError as exc:
        if exc.errno is not None:
            raise FileRefusedError(path, ReasonCode.UNREADABLE_FILE, f"cannot read {path}: {exc.strerror}") from exc
        raise FileRefusedError(
            path, ReasonCode.UNREADABLE_PIXELS, f"{path}: pixel data cannot be decoded ({exc})"
        ) from exc
    except Exception as exc:  # decoders raise many types
        raise FileRefusedError(
            path, ReasonCode.UNREADABLE_PIXELS, f"{path}: pixel data cannot be decoded ({exc})"
        ) from exc
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    if pixels.ndim != 3 or pixels.shape[1:] != (rows, columns):
        raise FileRefusedError(
            path, ReasonCode.UNREADABLE_PIXELS, f"{path} decodes to shape {pixels.shape}, expected {rows}x{columns}"
        )
    return pixels.astype(pixels.dtype.newbyteorder("="), copy=False)


def _rescale(stored: NDArray[Any], slopes: NDArray[np.float64], intercepts: NDArray[np.float64]) -> NDArray[Any]:
    """Apply per-slice rescale; integers stay integers (smallest fitting dtype) when exact, else float32."""
    integral = (
        np.issubdtype(stored.dtype, np.integer)
        and bool(np.all(slopes == 1.0))
        and bool(np.all(np.isfinite(intercepts)))
        and bool(np.all(intercepts == np.round(intercepts)))
    )
    if integral:
        flat = stored.reshape(len(stored), -1)
        low = int((flat.min(axis=1).astype(np.float64) + intercepts).min())
        high = int((flat.max(axis=1).astype(np.float64) + intercepts).max())
        dtype = _fitting_integer_dtype(stored.dtype, low, high)
        if dtype is not None:
            values = stored.astype(dtype, copy=False)
            if intercepts.any():
                values += intercepts.astype(dtype)[:, np.newaxis, np.newaxis]
            return values
    values32 = np.empty(stored.shape, dtype=np.float32)
    for k in range(len(stored)):
        values32[k] = stored[k] * slopes[k] + intercepts[k]
    return values32


def _fitting_integer_dtype(stored: np.dtype[Any], low: int, high: int) -> np.dtype[Any] | None:
    for candidate in (stored, *map(np.dtype, _INTEGER_DTYPES)):
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            return np.dtype(candidate)
    return None


def convert_directory(src: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> ConversionReport:
    """Convert every series under ``src`` to ``out_dir/<SeriesInstanceUID>.nii.gz`` and write ``series.json``.

    Bad files and series are refused with a reason in the report, never raised;
    an exception means the run itself failed (``src`` missing, ``out_dir``
    not writable).
    """
    source, output_dir = Path(src).resolve(), Path(out_dir).resolve()
    if not source.is_dir():
        raise NotADirectoryError(f"{source} is not a directory")
    output_dir.mkdir(parents=True, exist_ok=True)
    headers: list[DicomHeader] = []
    refused: list[FileRefusal] = []
    for path in _files_under(source, exclude=output_dir):
        try:
            headers.append(read_header(path))
        except FileRefusedError as exc:
            refused.append(FileRefusal(path, exc.reason, exc.detail))
    outcomes = [_convert_group(group, output_dir) for group in group_by_series(headers).values()]
    report = ConversionReport(
        source=source,
        output_dir=output_dir,
        report_path=output_dir / REPORT_NAME,
        series=tuple(outcomes),
        refused_files=tuple(refused),
    )
    write_conversion_report(report)
    return report


def _files_under(root: Path, exclude: Path) -> list[Path]:
    found: list[Path] = []
    for directory, subdirs, names in os.walk(root):
        here = Path(directory)
        subdirs[:] = sorted(d for d in subdirs if here / d != exclude)
        found.extend(here / name for name in sorted(names))
    return found


def _convert_group(headers: Sequence[DicomHeader], output_dir: Path) -> SeriesOutcome:
    headers, duplicates = _drop_identical_copies(headers)
    first = headers[0]

    def outcome(status: ConversionStatus, **result: Any) -> SeriesOutcome:
        return SeriesOutcome(
            series_instance_uid=first.series_instance_uid,
            study_instance_uid=first.study_instance_uid,
            series_number=first.series_number,
            series_description=first.series_description,
            files=tuple(h.path for h in headers),
            duplicates=duplicates,
            status=status,
            **result,
        )

    try:
        completeness = check_completeness(headers)
        if completeness.state is CompletenessState.INCOMPLETE:
            raise InputRefusedError(ReasonCode.INCOMPLETE, completeness.detail)
        volume = convert_series(headers)
        output = output_dir / output_name(first.series_instance_uid)
        digest = write_volume(volume, output)
    except InputRefusedError as exc:
        return outcome(ConversionStatus.REFUSED, reason=exc.reason, detail=exc.detail)
    return outcome(
        ConversionStatus.CONVERTED,
        output=output,
        sha256=digest,
        shape=volume.shape,
        dtype=str(volume.data.dtype),
        voxel_size=volume.voxel_size,
        affine=tuple(tuple(float(v) for v in row) for row in volume.affine),
    )


def _drop_identical_copies(headers: Sequence[DicomHeader]) -> tuple[tuple[DicomHeader, ...], tuple[Path, ...]]:
    """Keep one file per SOPInstanceUID when the copies are byte-identical (a differing copy stays, and conflicts)."""
    by_uid: defaultdict[str, list[DicomHeader]] = defaultdict(list)
    for header in headers:
        by_uid[header.sop_instance_uid].append(header)
    kept: list[DicomHeader] = []
    dropped: list[Path] = []
    for copies in by_uid.values():
        kept.append(copies[0])
        if len(copies) > 1:
            reference = sha256_file(copies[0].path)
            for copy in copies[1:]:
                if sha256_file(copy.path) == reference:
                    dropped.append(copy.path)
                else:
                    kept.append(copy)
    return tuple(kept), tuple(dropped)


def output_name(series_instance_uid: str) -> str:
    """File name of a series' volume: ``<SeriesInstanceUID>.nii.gz``."""
    if not series_instance_uid or series_instance_uid.strip(".") == "" or "/" in series_instance_uid:
        raise InputRefusedError(ReasonCode.UNSAFE_PATH, f"{series_instance_uid!r} cannot name a file")
    return series_instance_uid + NIFTI_SUFFIX


def report_to_json(report: ConversionReport) -> dict[str, Any]:
    """The ``series.json`` document (paths relative to the source and output directories)."""

    def rel(path: Path, base: Path) -> str:
        return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)

    series = []
    for s in report.series:
        series.append(
            {
                "series_instance_uid": s.series_instance_uid,
                "study_instance_uid": s.study_instance_uid,
                "series_number": s.series_number,
                "series_description": s.series_description,
                "status": s.status.value,
                "files": [rel(p, report.source) for p in s.files],
                "duplicate_files": [rel(p, report.source) for p in s.duplicates],
                "output": rel(s.output, report.output_dir) if s.output else None,
                "sha256": s.sha256,
                "shape": list(s.shape) if s.shape else None,
                "dtype": s.dtype,
                "voxel_size": list(s.voxel_size) if s.voxel_size else None,
                "affine": [list(row) for row in s.affine] if s.affine else None,
                "reason": s.reason.value if s.reason else None,
                "detail": s.detail,
            }
        )
    return {
        "format_version": REPORT_FORMAT_VERSION,
        "source": str(report.source),
        "series": series,
        "refused_files": [
            {"path": rel(f.path, report.source), "reason": f.reason.value, "detail": f.detail}
            for f in report.refused_files
        ],
    }


def write_conversion_report(report: ConversionReport) -> str:
    """Write ``series.json`` atomically; return its sha256."""
    data = (json.dumps(report_to_json(report), indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    def write(fp: BinaryIO) -> None:
        fp.write(data)

    return atomic_write(report.report_path, write)
