"""A file's kind of scan (video, volume, image) from its name or DICOM header, and what a prediction says
about a scan of a kind its encoder never trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from learner.data.manifest import ScanRecord
from learner.data.readers import read_scan
from learner.data.scan_kinds import cohort_mismatch, kind_mismatch, kind_of_file, kinds_of_records


def _dicom(path: Path, modality: str, frames: int) -> Path:
    """An uncompressed DICOM file of ``frames`` 8×8 frames (NumberOfFrames only when more than one)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, generate_uid()
    ds.Modality = modality
    pixels = np.arange(frames * 64, dtype=np.uint8).reshape(frames, 8, 8)
    ds.set_pixel_data(pixels if frames > 1 else pixels[0], "MONOCHROME2", 8)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a.mp4", "video"), ("a.AVI", "video"), ("a.gif", "video"), ("a.nii", "volume"), ("a.NII.GZ", "volume"),
     ("a.png", "image"), ("a.jpeg", "image"), ("a.tiff", "image"), ("a.xyz", None), ("noext", None)],
)  # fmt: skip
def test_a_files_name_gives_its_kind(tmp_path: Path, name: str, kind: str | None) -> None:
    path = tmp_path / name
    path.write_bytes(b"\0" * 200)  # the name alone decides: nothing is decoded
    assert kind_of_file(path) == kind


@pytest.mark.parametrize(
    ("modality", "frames", "kind"),
    [("US", 4, "video"), ("US", 1, "image"), ("MR", 4, "volume"), ("CT", 3, "volume"), ("MR", 1, "volume"),
     ("CR", 1, "image"), ("XA", 5, "video")],
)  # fmt: skip
def test_a_dicom_files_header_gives_its_kind_whatever_its_name(
    tmp_path: Path, modality: str, frames: int, kind: str
) -> None:
    named = _dicom(tmp_path / "scan.dcm", modality, frames)
    assert read_scan(named).frames.shape[0] == frames  # a file the reader takes, as it is
    assert kind_of_file(named) == kind
    bare = _dicom(tmp_path / "IM0001", modality, frames)  # no suffix: the DICM preamble
    assert kind_of_file(bare) == kind


def test_a_tiff_of_several_pages_is_a_clip_as_the_reader_takes_it(tmp_path: Path) -> None:
    pages = [Image.fromarray(np.full((8, 8), level, np.uint8)) for level in (10, 90, 170)]
    pages[0].save(tmp_path / "clip.tif", save_all=True, append_images=pages[1:])
    pages[0].save(tmp_path / "still.tif")
    assert read_scan(tmp_path / "clip.tif").frames.shape[0] == 3
    assert (kind_of_file(tmp_path / "clip.tif"), kind_of_file(tmp_path / "still.tif")) == ("video", "image")


def test_a_file_that_does_not_read_as_dicom_has_no_kind(tmp_path: Path) -> None:
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\x01\x02")
    assert kind_of_file(broken) is None


def test_a_folder_of_frames_is_a_clip_unless_its_frames_are_tomographic_slices(tmp_path: Path) -> None:
    clip, slices, empty = tmp_path / "clip", tmp_path / "slices", tmp_path / "empty"
    for folder in (clip, slices, empty):
        folder.mkdir()
    for k in range(3):
        (clip / f"frame_{k}.png").write_bytes(b"")
        _dicom(slices / f"slice_{k}.dcm", "MR", 1)
    assert (kind_of_file(clip), kind_of_file(slices), kind_of_file(empty)) == ("video", "volume", "video")


def _record(path: Path, modality: str | None = None) -> ScanRecord:
    return ScanRecord("p", path.name, path, "1", 1.0, 1.0, modality=modality)


def test_the_kinds_of_a_cohort_take_the_manifests_modality_first(tmp_path: Path) -> None:
    records = [
        _record(tmp_path / "a.mp4"),
        _record(tmp_path / "b.png", modality="video"),  # declared: a still frame of a clip cohort
        _record(tmp_path / "c.nii.gz"),
        _record(tmp_path / "d.xyz"),  # of no known kind: adds nothing
    ]
    assert kinds_of_records(records) == ("video", "volume")
    assert kinds_of_records([]) == ()


def test_a_mismatch_is_one_line_naming_the_file_its_kind_and_what_the_encoder_saw(tmp_path: Path) -> None:
    volume = tmp_path / "brain.nii.gz"
    assert kind_mismatch(volume, ("image", "video")) == (
        f"{volume}: a volume, but this encoder was trained on image and video scans only: its predicted "
        "score and change for this scan have no meaning"
    )
    assert kind_mismatch(tmp_path / "x.png", ("video",)) == (
        f"{tmp_path / 'x.png'}: an image, but this encoder was trained on video scans only: its predicted "
        "score and change for this scan have no meaning"
    )
    assert kind_mismatch(volume, ("volume",)) is None
    assert kind_mismatch(volume, ()) is None  # a checkpoint that recorded no kinds: nothing to compare
    assert kind_mismatch(tmp_path / "a.xyz", ("video",)) is None  # no known kind: the reader will say


def test_a_cohort_mismatch_counts_the_scans_of_each_foreign_kind(tmp_path: Path) -> None:
    records = [_record(tmp_path / name) for name in ("a.mp4", "b.nii", "c.nii.gz", "d.png", "e.xyz")]
    assert cohort_mismatch(records, ("video",), "m.csv") == (
        "m.csv: 1 image and 2 volume scan(s), but this encoder was trained on video scans only: their "
        "embeddings and predicted scores have no meaning"
    )
    assert cohort_mismatch(records[:1], ("video",), "m.csv") is None
    assert cohort_mismatch(records, (), "m.csv") is None
