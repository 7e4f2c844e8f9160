"""What kind of scan a file is (``video``, ``volume`` or ``image``: the manifest's ``modality`` values), found
from its name and, for DICOM, its header, without decoding the pixels.

An encoder records the kinds of scan it was trained on (:func:`kinds_of_records`, in its checkpoint's
``meta.json``), and a prediction says when a scan is of another kind (:func:`kind_mismatch`; embedding a
manifest: :func:`cohort_mismatch`): every file
the readers accept goes through the same preprocessing into clips, so an MRI volume given to an encoder
trained on lung-ultrasound clips gets a predicted score and a change like any clip, and nothing downstream
can tell (on the demo's LUS encoder neither the score, an S/F of 187 for a phantom brain volume, nor the
embedding's distance to the training scans stands out: docs/experiments.md, "A scan of another kind").

The kind of a file:

* ``.nii`` / ``.nii.gz``: ``volume``;
* a video suffix (``mp4 avi mov mpeg mpg gif``): ``video``;
* an image suffix (``png jpg jpeg bmp tif tiff``): ``image``, but a ``video`` for a TIFF of several pages
  (the reader makes each page a frame);
* DICOM (``.dcm`` or the ``DICM`` preamble): by its header's ``Modality`` and ``NumberOfFrames``: a
  tomographic modality (:data:`TOMOGRAPHIC`) is a ``volume``, other multi-frame files a ``video`` (an
  ultrasound cine), single frames an ``image``;
* a folder of frames: a ``volume`` when its first frame is a tomographic DICOM slice, else a ``video``.

None where a file tells nothing (an unreadable header, an unknown suffix: the reader's own error comes
later). A manifest's ``modality`` column, where it is filled in, is what a scan is.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from learner.data.manifest import ScanRecord
from learner.data.readers import READERS, frame_files, is_dicom, read_dicom, read_image, read_nifti, suffix_of

TOMOGRAPHIC: frozenset[str] = frozenset({"MR", "CT", "PT", "NM"})
"""DICOM ``Modality`` values whose frames are the slices of a volume (MRI, CT, PET, SPECT)."""


def kind_of_file(path: str | os.PathLike[str]) -> str | None:
    """``video``, ``volume`` or ``image`` for the scan at ``path`` (module docstring); None when unknown."""
    target = Path(path)
    if target.is_dir():
        try:
            members = frame_files(target)
        except OSError:
            return None
        first = members[0] if members else None
        slices = first is not None and suffix_of(first) == ".dcm" and _dicom_kind(first) == "volume"
        return "volume" if slices else "video"
    suffix = suffix_of(target)
    reader = READERS.get(suffix)
    if reader is read_dicom or (reader is None and target.is_file() and is_dicom(target)):
        return _dicom_kind(target)
    if reader is read_nifti:
        return "volume"
    if reader is read_image:
        return "video" if suffix in (".tif", ".tiff") and _tiff_pages(target) > 1 else "image"
    return None if reader is None else "video"


def _tiff_pages(path: Path) -> int:
    """The pages of a TIFF file (several: a clip, as the reader takes it), from its header; 1 when it
    does not open."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return int(getattr(image, "n_frames", 1))
    except (OSError, UnidentifiedImageError, ValueError):
        return 1


def _dicom_kind(path: Path) -> str | None:
    """A DICOM file's kind from its header alone (None when it does not read as a DICOM image)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if "Rows" not in header:  # forced reading takes any bytes: an image's header has its size
            return None
        modality = str(header.get("Modality", "")).strip().upper()
        frames = int(header.get("NumberOfFrames", 1) or 1)
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, EOFError):
        return None
    if modality in TOMOGRAPHIC:
        return "volume"
    return "video" if frames > 1 else "image"


def kind_of_record(record: ScanRecord) -> str | None:
    """A manifest row's kind: its ``modality`` when the manifest gives it, else the kind of its file."""
    return record.modality or kind_of_file(record.path)


def kinds_of_records(records: Iterable[ScanRecord]) -> tuple[str, ...]:
    """The sorted kinds among ``records`` (:func:`kind_of_record`); files of no known kind add nothing."""
    return tuple(sorted({kind for record in records if (kind := kind_of_record(record)) is not None}))


def cohort_mismatch(
    records: Iterable[ScanRecord], trained_on: tuple[str, ...], source: str | os.PathLike[str]
) -> str | None:
    """One line counting the scans of ``records`` (from ``source``, a manifest) of kinds the encoder was not
    trained on; None when there are none or the encoder recorded no kinds."""
    if not trained_on:
        return None
    kinds = (kind_of_record(record) for record in records)
    foreign = Counter(kind for kind in kinds if kind is not None and kind not in trained_on)
    if not foreign:
        return None
    counted = " and ".join(f"{count} {kind}" for kind, count in sorted(foreign.items()))
    return (
        f"{source}: {counted} scan(s), but this encoder was trained on {' and '.join(trained_on)} scans "
        "only: their embeddings and predicted scores have no meaning"
    )


def kind_mismatch(path: str | os.PathLike[str], trained_on: tuple[str, ...]) -> str | None:
    """One line saying that the scan at ``path`` is of a kind the encoder was not trained on; None when it
    is of such a kind, its kind is unknown, or the encoder recorded none (``trained_on`` empty: a
    checkpoint written before encoders recorded them)."""
    kind = kind_of_file(path)
    if not trained_on or kind is None or kind in trained_on:
        return None
    return (
        f"{path}: {'an' if kind == 'image' else 'a'} {kind}, but this encoder was trained on "
        f"{' and '.join(trained_on)} scans only: its predicted score and change for this scan have no meaning"
    )
