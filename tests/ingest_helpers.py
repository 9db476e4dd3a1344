"""A mixed drop folder and the 'nothing is lost' invariant, shared by the ingest tests."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from sciatic.db.enums import InstanceState
from sciatic.db.models import DicomInstance, DuplicateFile, Quarantine
from sciatic.storage import sha256_file
from tests._dicom_synthetic import write_stack


@dataclass(frozen=True)
class DropContents:
    files: dict[str, str | None]  # name relative to the drop folder -> sha256 (None for a symlink)
    good_series: int
    expected_quarantine: Counter[str]
    duplicates: int


def fill_drop_folder(drop: Path, work: Path) -> DropContents:
    """Two good series, a refused one, junk, a truncated file, a duplicate, a conflict, a symlink, odd names."""
    drop.mkdir(parents=True, exist_ok=True)
    a = write_stack(work / "a", count=6, rows=8, columns=6)
    b = write_stack(work / "b", count=5, rows=6, columns=6, slice_spacing=4.0)
    refused = write_stack(work / "c", count=1, rows=6, columns=6)  # a single slice is not a volume
    (drop / "study a").mkdir()
    for path in a:
        shutil.copy(path, drop / "study a" / path.name)
    for i, path in enumerate(b):
        shutil.copy(path, drop / (f"-- odd ü name {i}.dcm" if i == 0 else path.name))
    shutil.copy(refused[0], drop / "single.dcm")
    shutil.copy(a[0], drop / "copy of first.dcm")  # exact duplicate
    conflict = bytearray(a[1].read_bytes())
    conflict[-1] ^= 0xFF  # same SOP UID, other pixel bytes
    (drop / "zz later").mkdir()
    (drop / "zz later" / "conflict.dcm").write_bytes(bytes(conflict))
    (drop / "notes.txt").write_text("not an image")
    (drop / "truncated.dcm").write_bytes(a[2].read_bytes()[:400])
    (drop / "escape").symlink_to("/etc/hostname")
    files = {
        str(p.relative_to(drop)): (None if p.is_symlink() else sha256_file(p))
        for p in sorted(drop.rglob("*"))
        if p.is_file() or p.is_symlink()
    }
    return DropContents(
        files=files,
        good_series=2,
        expected_quarantine=Counter({"sop_conflict": 1, "not_dicom": 1, "truncated": 1, "unsafe_path": 1}),
        duplicates=1,
    )


def assert_nothing_lost(engine: sa.Engine, drop: Path, contents: DropContents) -> None:
    """Every file that entered the drop folder is archived, a recorded duplicate, or quarantined; once each."""
    leftover = [p for p in drop.rglob("*") if p.is_file() or p.is_symlink()]
    assert leftover == [], f"files left in the drop folder: {leftover}"
    found: list[str | None] = []
    with engine.connect() as connection:
        for row in connection.execute(sa.select(DicomInstance)).mappings():
            assert row["state"] == InstanceState.ARCHIVED, row
            assert row["archive_path"] and sha256_file(row["archive_path"]) == row["sha256"]
            found.append(row["sha256"])
        for row in connection.execute(sa.select(DuplicateFile)).mappings():
            assert row["moved_at"] is not None and sha256_file(row["stored_path"]) == row["sha256"]
            found.append(row["sha256"])
        for row in connection.execute(sa.select(Quarantine)).mappings():
            assert row["moved_at"] is not None and row["detail"], row
            stored = Path(row["quarantine_path"])
            if row["sha256"] is None:
                assert stored.is_symlink()
            else:
                assert sha256_file(stored) == row["sha256"]
            found.append(row["sha256"])
    assert Counter(found) == Counter(contents.files.values()), "some file is missing or recorded twice"
