"""Secondary Capture of the nerve outline picture: a new series of the source study, dciodvfy-clean, pixels intact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from scipy import ndimage

from sciatic.dicom.convert import convert_directory
from sciatic.dicom.sc import SECONDARY_CAPTURE_STORAGE, export_sc, patient_orientation
from sciatic.imaging.montage import MontageLayout, montage
from sciatic.imaging.picture import OUTLINE_COLOUR, montage_picture, outline_picture
from sciatic.imaging.volume import read_volume
from sciatic.phantom.generate import PhantomOptions, generate
from tests.test_seg import _dciodvfy

PATIENT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge")
STUDY_KEYWORDS = ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "StudyDescription")


def _bytes(rgb: NDArray[np.float32]) -> NDArray[np.uint8]:
    return np.rint(rgb * 255).astype(np.uint8)


def _is_outline(rgb: NDArray[np.float32]) -> NDArray[np.bool_]:
    return np.all(np.isclose(rgb, OUTLINE_COLOUR), axis=-1)


def test_overlay_series_in_the_source_study(tmp_path: Path) -> None:
    manifest = generate(tmp_path / "dicom", 1, 4, labels_dir=tmp_path / "labels", options=PhantomOptions((96, 96), 7))
    (subject,) = manifest.subjects
    sources = sorted((tmp_path / "dicom" / subject.dicom_dir).glob("*.dcm"))
    (converted,) = convert_directory(tmp_path / "dicom", tmp_path / "volumes").series
    assert converted.output is not None
    volume, mask = read_volume(converted.output), read_volume(tmp_path / "labels" / subject.label_file)
    picture = _bytes(outline_picture(volume.data, mask.data))
    orientation = patient_orientation(volume.affine)
    out = export_sc(picture, sources, tmp_path / "sc.dcm", orientation=orientation, model_name="m", model_version="1")

    errors, _ = _dciodvfy(out.path)
    assert errors == []
    sc, source = pydicom.dcmread(out.path), pydicom.dcmread(sources[0])
    assert sc.SOPClassUID == SECONDARY_CAPTURE_STORAGE and sc.SOPInstanceUID == out.sop_instance_uid
    for keyword in (*PATIENT_KEYWORDS, *STUDY_KEYWORDS):
        assert sc[keyword].value == source[keyword].value, keyword
    assert sc.SeriesInstanceUID == out.series_instance_uid != source.SeriesInstanceUID
    assert sc.SeriesDescription == "sciatic nerve overlay (research, not for diagnosis)"
    assert (sc.Modality, sc.PhotometricInterpretation, sc.SamplesPerPixel) == ("OT", "RGB", 3)
    assert sc.Laterality == source.Laterality and list(sc.PatientOrientation) == list(orientation)
    assert {r.ReferencedSOPInstanceUID for r in sc.SourceImageSequence} == {
        pydicom.dcmread(p).SOPInstanceUID for p in sources
    }
    np.testing.assert_array_equal(sc.pixel_array, picture)
    assert np.all(picture == _bytes(np.array(OUTLINE_COLOUR, np.float32)), axis=-1).any()


def test_outline_is_closed_one_pixel_thick_and_inside_each_tile() -> None:
    volume = np.random.default_rng(0).random((512, 400, 6)).astype(np.float32)  # scaled down to the tile
    i, j = np.mgrid[0:512, 0:400]
    disc = ((i - 250) ** 2 + (j - 200) ** 2 <= 60**2).astype(np.uint8)
    mask = np.repeat(disc[:, :, None], 6, axis=2)
    mask[:, :, 5] = 0
    rgb = outline_picture(volume, mask)
    plain = montage_picture(volume)
    ring = _is_outline(rgb)
    np.testing.assert_array_equal(rgb[~ring], plain[~ring])  # only the outline is drawn
    layout = MontageLayout.for_shape(volume.shape)
    inside = montage(mask != 0, layout).reshape(ring.shape)
    assert not (ring & ~inside).any()  # the outline lies on the nerve's own border pixels
    tiles = ring.reshape(layout.montages, layout.tile, layout.slices_per_montage, layout.tile)
    for k in range(6):
        tile = tiles[k // 5, :, k % 5, :]
        if k == 5:
            assert not tile.any()
            continue
        filled = ndimage.binary_fill_holes(tile)
        assert filled.sum() > 5 * tile.sum()  # a closed ring encloses the nerve
        assert ndimage.label(tile, structure=np.ones((3, 3)))[1] == 1


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        ((1.0, 0.0, 0.0, 0.0, 1.0, 0.0), ("L", "P")),  # axial, head first supine
        ((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0), ("R", "A")),  # axial, prone
        ((0.0, 1.0, 0.0, 0.0, 0.0, -1.0), ("P", "F")),  # sagittal
        ((0.8, 0.6, 0.0, 0.0, 0.0, -1.0), ("LP", "F")),  # oblique: largest component first
    ],
)
def test_patient_orientation_of_a_montage(orientation: tuple[float, ...], expected: tuple[str, str]) -> None:
    r, c = np.array(orientation[:3]), np.array(orientation[3:])
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = 0.7 * r, 0.7 * c, 3.0 * np.cross(r, c)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # docs/conventions.md
    assert patient_orientation(affine) == expected


def test_a_picture_that_is_not_rgb_bytes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        export_sc(
            np.zeros((4, 4), np.uint8),
            [],
            tmp_path / "sc.dcm",
            orientation=("L", "P"),
            model_name="m",
            model_version="1",
        )
