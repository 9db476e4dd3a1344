"""The data folder layout: one place builds every path, and no header value can leave its root."""

from __future__ import annotations

from pathlib import Path

import pytest

from sciatic.config import Settings
from sciatic.errors import InputRefusedError, ReasonCode
from sciatic.layout import DataLayout


@pytest.fixture
def layout(tmp_path: Path) -> DataLayout:
    return DataLayout.of(Settings(data_dir=tmp_path / "data"))


def test_paths_follow_the_documented_scheme(layout: DataLayout) -> None:
    assert layout.volume("1.2.3", "1.2.3.4", 2) == layout.volumes / "1.2.3" / "1.2.3.4" / "v2.nii.gz"
    assert layout.archived_instance("1.2", "1.2.3", "1.2.3.9") == layout.archive / "1.2" / "1.2.3" / "1.2.3.9.dcm"
    assert (
        layout.mask("1.2.3", 1, "phantom-cascade")
        == layout.results / "1.2.3" / "v1" / "phantom-cascade" / "mask.nii.gz"
    )
    label = layout.label_mask("1.2.3", 1, "alice", "ab" * 32)
    assert label == layout.results / "labels" / "1.2.3" / "v1" / "alice-abababababab.nii.gz"
    assert layout.quarantined(ReasonCode.NOT_DICOM, 7, "x.txt") == layout.quarantine / "not_dicom" / "7_x.txt"
    assert layout.duplicate(3, "a.dcm") == layout.archive / "_duplicates" / "3_a.dcm"
    assert layout.training_run(12) == layout.models / "run-0012"
    for path in (layout.drop, layout.archive, layout.quarantine, layout.volumes, layout.results, layout.models):
        assert path.is_dir() and path.is_relative_to(layout.data)


@pytest.mark.parametrize("hostile", ["..", ".", "", "a/b", "../../etc", "x\x00y", "a\\b", "9" * 300])
def test_a_hostile_value_is_refused_before_any_path_is_used(layout: DataLayout, hostile: str) -> None:
    for build in (
        lambda: layout.volume(hostile, "1.2", 1),
        lambda: layout.volume("1.2", hostile, 1),
        lambda: layout.archived_instance("1.2", "1.2.3", hostile),
        lambda: layout.mask("1.2", 1, hostile),
        lambda: layout.label_mask("1.2", 1, hostile, "0" * 64),
        lambda: layout.installed_model(hostile),
    ):
        with pytest.raises(InputRefusedError) as refused:
            build()
        assert refused.value.reason is ReasonCode.UNSAFE_PATH


def test_a_symlinked_folder_cannot_lead_outside(layout: DataLayout, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (layout.volumes / "1.2").symlink_to(outside)
    with pytest.raises(InputRefusedError, match="would leave"):
        layout.volume("1.2", "1.2.3", 1)
