"""Scan readers on files written by the tests: videos, images, frame folders, DICOM, NIfTI, bad files."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import av
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from learner.data import readers
from learner.data.readers import read_scan
from learner.errors import ScanReadError

LEVELS = (40, 80, 120, 160, 200, 240)  # one flat grey level per frame: which frame is which stays visible
PATIENT = {"PatientName": "Doe^Jane", "PatientID": "SECRET-4711", "PatientBirthDate": "19700101"}


def write_video(
    path: Path, codec: str, pix_fmt: str, levels: tuple[int, ...] = LEVELS, size: int = 32
) -> Path:
    """Flat frames at ``levels`` with a red square in the corner, 10 fps."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = pix_fmt
        for level in levels:
            rgb = np.full((size, size, 3), level, np.uint8)
            rgb[:8, :8] = (255, 0, 0)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_gif(path: Path, levels: tuple[int, ...] = LEVELS, size: int = 32) -> Path:
    images = [Image.fromarray(np.full((size, size), level, np.uint8)) for level in levels]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    return path


def write_dicom(path: Path, pixels: np.ndarray, photometric: str, bits: int = 8, **elements: object) -> Path:
    """An uncompressed DICOM file (preamble + file meta) with patient fields set."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # US multi-frame image storage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    for keyword, value in {**PATIENT, **elements}.items():
        setattr(ds, keyword, value)
    ds.set_pixel_data(pixels, photometric, bits)
    ds.save_as(path, enforce_file_format=True)
    return path


def frame_levels(frames: np.ndarray) -> np.ndarray:
    """Median grey level of each frame's lower-right quarter (away from the red square)."""
    grey = frames.mean(axis=-1) if frames.ndim == 4 else frames
    h, w = grey.shape[1:3]
    return np.median(grey[:, h // 2 :, w // 2 :].reshape(len(grey), -1), axis=1)


# --------------------------------------------------------------------------------------------- video
@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt"),
    [("clip.mp4", "libx264", "yuv420p"), ("clip.avi", "mpeg4", "yuv420p"), ("clip.mov", "libx264", "yuv420p"),
     ("clip.mpeg", "mpeg2video", "yuv420p"), ("CLIP.MP4", "libx264", "yuv420p")],
)  # fmt: skip
def test_lossy_video_decodes_every_frame_in_order(
    tmp_path: Path, name: str, codec: str, pix_fmt: str
) -> None:
    scan = read_scan(write_video(tmp_path / name, codec, pix_fmt))
    assert scan.frames.shape == (len(LEVELS), 32, 32, 3)
    assert scan.frames.dtype == np.uint8
    np.testing.assert_allclose(frame_levels(scan.frames), LEVELS, atol=4)  # lossy codecs
    red = scan.frames[:, 2:6, 2:6].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(red, (255, 0, 0), atol=60)  # colour survives as RGB (not BGR)
    assert scan.meta["fps"] == pytest.approx(10.0)
    assert scan.meta["n_frames"] == len(LEVELS)


def test_lossless_grey_video_stays_grey_and_exact(tmp_path: Path) -> None:
    path = tmp_path / "grey.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 24, 16, "gray"
        for level in LEVELS:
            frame = av.VideoFrame.from_ndarray(np.full((16, 24), level, np.uint8), format="gray")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    scan = read_scan(path)
    assert scan.frames.shape == (len(LEVELS), 16, 24)
    np.testing.assert_array_equal(scan.frames[:, 0, 0], LEVELS)


def test_grey_decoding_is_the_luma_of_the_colour_decoding(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", "libx264", "yuv420p")
    colour, grey = read_scan(path).frames.astype(np.float64), read_scan(path, grey=True).frames
    assert grey.shape == colour.shape[:3]
    luma = colour @ [0.299, 0.587, 0.114]  # ITU-R BT.601
    assert np.abs(grey - luma).mean() < 1.5  # the decoder's own luma vs luma of its RGB: rounding only
    rgb = np.random.default_rng(4).integers(0, 256, (2, 6, 8, 3), dtype=np.uint8)
    dicom = read_scan(write_dicom(tmp_path / "rgb.dcm", rgb, "RGB"), grey=True).frames
    np.testing.assert_array_equal(dicom, np.rint(rgb.astype(np.float64) @ [0.299, 0.587, 0.114]))


def _per_frame_reference(path: Path, pix_fmt: str) -> list[np.ndarray]:
    """Every frame through PyAV's own ``frame.to_ndarray(format=...)`` (a fresh swscale context per frame)."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format=pix_fmt) for frame in container.decode(container.streams.video[0])]


@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt"),
    [("noise.mp4", "libx264", "yuv420p"), ("noise444.mp4", "libx264", "yuv444p"),
     ("noise.avi", "mpeg4", "yuv420p"), ("grey.avi", "ffv1", "gray")],
)  # fmt: skip
def test_one_reformatter_per_clip_is_bit_identical_to_per_frame_to_ndarray(
    tmp_path: Path, name: str, codec: str, pix_fmt: str
) -> None:
    """The decoder's one swscale context per clip gives, frame by frame, exactly the arrays of
    ``to_ndarray(format=...)``, in colour and in grey (a grey source: PyAV's no-op path)."""
    rng = np.random.default_rng(7)
    path = tmp_path / name
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 40, 24, pix_fmt
        for _ in range(7):  # noise, so chroma upsampling and rounding are exercised, and every frame differs
            rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            container.mux(stream.encode(frame.reformat(format="gray") if pix_fmt == "gray" else frame))
        container.mux(stream.encode())
    for grey, fmt in ((False, "gray" if pix_fmt == "gray" else "rgb24"), (True, "gray")):  # grey source: grey
        expected = _per_frame_reference(path, fmt)
        decoded, _ = readers._decode_pyav(path, readers.ReadOptions(grey=grey))
        assert len(decoded) == len(expected) == 7
        assert [a.dtype for a in decoded] == [b.dtype for b in expected]
        assert all(np.array_equal(a, b) for a, b in zip(decoded, expected, strict=True))
        assert any(not np.array_equal(expected[0], e) for e in expected[1:])
        np.testing.assert_array_equal(read_scan(path, grey=grey).frames, np.stack(expected))


def test_gif_is_exact_and_max_frames_keeps_the_first(tmp_path: Path) -> None:
    path = write_gif(tmp_path / "clip.gif")
    np.testing.assert_array_equal(read_scan(path).frames[:, 5, 5], np.repeat(LEVELS, 1)[:, None].repeat(3, 1))
    first = read_scan(path, max_frames=2)
    assert first.frames.shape[0] == 2
    np.testing.assert_array_equal(first.frames[:, 5, 5, 0], LEVELS[:2])


def test_imageio_takes_over_when_pyav_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_gif(tmp_path / "clip.gif")
    expected = read_scan(path).frames

    def broken(path: Path, options: readers.ReadOptions) -> None:
        raise av.error.InvalidDataError(1094995529, "simulated PyAV failure")

    monkeypatch.setattr(readers, "_decode_pyav", broken)
    scan = read_scan(path)
    assert scan.meta["decoder"] == "imageio"
    np.testing.assert_array_equal(scan.frames, expected)


# --------------------------------------------------------------------------------------------- images
def test_images_keep_grey_colour_and_depth(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (12, 20), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_scan(tmp_path / "grey.png").frames, grey[None])

    rgb = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.bmp")
    np.testing.assert_array_equal(read_scan(tmp_path / "rgb.bmp").frames, rgb[None])

    deep = rng.integers(0, 65536, (12, 20), dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    scan = read_scan(tmp_path / "deep.png")
    assert scan.frames.dtype == np.float32
    np.testing.assert_array_equal(scan.frames[0], deep.astype(np.float32))

    yy, xx = np.mgrid[0:12, 0:20]
    smooth = np.stack([xx * 12, yy * 20, 255 - xx * 12], -1).astype(np.uint8)  # JPEG keeps smooth colour
    Image.fromarray(smooth).save(tmp_path / "photo.jpg", quality=95)
    assert np.abs(read_scan(tmp_path / "photo.jpg").frames[0].astype(int) - smooth).mean() < 4


def test_multipage_tiff_and_exif_orientation(tmp_path: Path) -> None:
    pages = [Image.fromarray(np.full((6, 9), level, np.uint8)) for level in LEVELS[:3]]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    np.testing.assert_array_equal(read_scan(tmp_path / "stack.tif").frames[:, 0, 0], LEVELS[:3])

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(np.arange(162, dtype=np.uint8).reshape(6, 9, 3)).save(tmp_path / "rotated.jpg", exif=exif)
    assert read_scan(tmp_path / "rotated.jpg").frames.shape == (1, 9, 6, 3)


def test_folder_of_frames_sorts_numerically_and_counts_strays(tmp_path: Path) -> None:
    folder = tmp_path / "clip"
    folder.mkdir()
    for number, level in zip((10, 2, 1), (30, 20, 10), strict=True):
        Image.fromarray(np.full((8, 8), level, np.uint8)).save(folder / f"frame_{number}.png")
    (folder / "notes.txt").write_text("acquired on a Tuesday")
    (folder / ".DS_Store").write_bytes(b"\0")
    scan = read_scan(folder)
    np.testing.assert_array_equal(scan.frames[:, 0, 0], [10, 20, 30])  # 1, 2, 10 — not 1, 10, 2
    assert scan.meta["ignored_files"] == 1
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(folder / "frame_11.png")
    with pytest.raises(ScanReadError, match=r"frame_11\.png"):
        read_scan(folder)


def test_one_listing_of_frame_files_for_check_and_read(tmp_path: Path) -> None:
    """A frame folder's frames are listed by one function, so ``data check`` (which opens them) and ``data
    cache`` (which decodes them) agree: hidden files such as macOS's ``._frame1.png`` are no frames to
    either, and a folder holding only those has none."""
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "._frame_1.png").write_bytes(b"\0\5\26\7 Mac OS X")  # AppleDouble: not a PNG
    (folder / "frame_10.png").mkdir()  # a folder with a frame's name is no frame either
    assert readers.frame_files(folder) == []
    with pytest.raises(ScanReadError, match="contains zero frames"):
        read_scan(folder)
    assert readers.scan_file_problem(folder) is None  # nothing to open: the manifest check says "no frames"

    for number, level in ((2, 20), (1, 10)):
        Image.fromarray(np.full((8, 8), level, np.uint8)).save(folder / f"frame_{number}.png")
    assert [p.name for p in readers.frame_files(folder)] == ["frame_1.png", "frame_2.png"]
    scan = read_scan(folder)
    np.testing.assert_array_equal(scan.frames[:, 0, 0], [10, 20])
    assert scan.meta["n_files"] == 2
    assert readers.scan_file_problem(folder) is None  # the hidden file, not a PNG, is not opened as one

    os.mkfifo(folder / "frame_3.png")  # a frame that cannot be read: named by check, refused by read
    assert [p.name for p in readers.frame_files(folder)][-1] == "frame_3.png"
    assert "frame_3.png: is a named pipe (FIFO)" in str(readers.scan_file_problem(folder))
    with pytest.raises(ScanReadError, match=r"frame_3\.png: is a named pipe"):
        read_scan(folder)  # refused before it is opened: opening a FIFO would wait forever


# --------------------------------------------------------------------------------------------- DICOM
def test_dicom_multiframe_monochrome2_with_timing_and_spacing(tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (4, 10, 12), dtype=np.uint8)
    path = write_dicom(tmp_path / "cine.dcm", pixels, "MONOCHROME2", FrameTime=40.0, PixelSpacing=[0.2, 0.3])
    scan = read_scan(path)
    np.testing.assert_array_equal(scan.frames, pixels)
    assert scan.meta["fps"] == pytest.approx(25.0)
    assert scan.meta["pixel_spacing"] == pytest.approx((0.2, 0.3))
    assert scan.meta["source_format"] == "dicom"


def test_dicom_monochrome1_is_inverted_and_extensionless_file_is_detected(tmp_path: Path) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (10, 12), dtype=np.uint8)
    path = write_dicom(tmp_path / "IM0001", pixels, "MONOCHROME1")
    scan = read_scan(path)
    np.testing.assert_array_equal(scan.frames, 255 - pixels[None])


def test_dicom_ybr_full_becomes_rgb(tmp_path: Path) -> None:
    ybr = np.random.default_rng(3).integers(16, 240, (2, 6, 8, 3), dtype=np.uint8)
    scan = read_scan(write_dicom(tmp_path / "colour.dcm", ybr, "YBR_FULL"))
    y, cb, cr = (ybr[..., i].astype(np.float64) for i in range(3))
    # ITU-R BT.601 full-range YCbCr → RGB, the definition of YBR_FULL (DICOM PS3.3 C.7.6.3.1.2)
    rgb = np.stack(
        [y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)],
        -1,
    )
    np.testing.assert_allclose(scan.frames, np.clip(rgb, 0, 255), atol=1.0)


def test_dicom_rescale_gives_float_and_ultrasound_region_spacing(tmp_path: Path) -> None:
    pixels = np.arange(120, dtype=np.uint16).reshape(10, 12) * 300
    region = Dataset()
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.01, 0.02
    path = write_dicom(
        tmp_path / "deep.dcm", pixels, "MONOCHROME2", bits=16, RescaleSlope=2.0, RescaleIntercept=-5.0,
        SequenceOfUltrasoundRegions=pydicom.Sequence([region]),
    )  # fmt: skip
    scan = read_scan(path)
    assert scan.frames.dtype == np.float32
    np.testing.assert_allclose(scan.frames[0], pixels * 2.0 - 5.0)
    assert scan.meta["pixel_spacing"] == pytest.approx((0.2, 0.1))  # mm


def test_dicom_patient_fields_never_leave_the_reader(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pixels = np.arange(128, dtype=np.uint8).reshape(2, 8, 8)  # not blank (a blank scan is refused)
    scan = read_scan(write_dicom(tmp_path / "a.dcm", pixels, "MONOCHROME2"))
    broken = write_dicom(tmp_path / "b.dcm", pixels, "MONOCHROME2")
    ds = pydicom.dcmread(broken)
    del ds.PixelData
    ds.save_as(broken)
    with pytest.raises(ScanReadError) as error:
        read_scan(broken)
    texts = [repr(scan.meta), str(error.value), caplog.text]
    needles = [*PATIENT.values(), PATIENT["PatientName"].split("^")[0]]
    for needle in needles:
        for text in texts:
            assert needle not in text


# --------------------------------------------------------------------------------------------- NIfTI
RAS_SHAPE = (4, 5, 6)  # x: left→right, y: posterior→anterior, z: inferior→superior
ZOOMS = (1.0, 2.0, 3.0)


def ras_volume() -> np.ndarray:
    return np.arange(np.prod(RAS_SHAPE), dtype=np.float32).reshape(RAS_SHAPE) + 1


def expected_frames(ras: np.ndarray, axis: str) -> np.ndarray:
    """Slow reference: frame, row, col → voxel, with anterior/superior at the top of each frame."""
    nx, ny, nz = ras.shape
    if axis == "axial":  # frames inferior→superior, rows anterior→posterior, cols left→right
        return np.array([[[ras[c, ny - 1 - r, k] for c in range(nx)] for r in range(ny)] for k in range(nz)])
    if axis == "coronal":  # frames posterior→anterior, rows superior→inferior, cols left→right
        return np.array([[[ras[c, j, nz - 1 - r] for c in range(nx)] for r in range(nz)] for j in range(ny)])
    return np.array([[[ras[i, c, nz - 1 - r] for c in range(ny)] for r in range(nz)] for i in range(nx)])


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("storage", ["ras", "las_permuted"])
def test_nifti_is_reoriented_to_ras_and_sliced_along_the_axis(
    tmp_path: Path, axis: str, storage: str
) -> None:
    ras = ras_volume()
    if storage == "ras":
        data, affine = ras, np.diag([*ZOOMS, 1.0])
    else:  # stored as (y, x, z) with x running right→left: voxel (j, i, k) holds RAS x = nx-1-i
        data = np.ascontiguousarray(ras[::-1].transpose(1, 0, 2))
        affine = np.array(
            [[0, -ZOOMS[0], 0, 0], [ZOOMS[1], 0, 0, 0], [0, 0, ZOOMS[2], 0], [0, 0, 0, 1]], float
        )
    path = tmp_path / "head.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    scan = read_scan(path, nifti_axis=axis)  # type: ignore[arg-type]
    np.testing.assert_array_equal(scan.frames, expected_frames(ras, axis))
    assert scan.frames.dtype == np.float32
    frame_axis, row_axis, col_axis = {"axial": (2, 1, 0), "coronal": (1, 2, 0), "sagittal": (0, 2, 1)}[axis]
    assert scan.meta["pixel_spacing"] == pytest.approx((ZOOMS[row_axis], ZOOMS[col_axis]))
    assert scan.meta["slice_spacing"] == pytest.approx(ZOOMS[frame_axis])


# --------------------------------------------------------------------------------------------- bad files
def _truncated(source: Path, target: Path, fraction: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def _zero_frame_video(path: Path) -> Path:
    """A valid container header with a video stream but no frames."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        container.start_encoding()
    return path


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name → (file, part of the expected message)."""
    good_mp4 = write_video(tmp / "good.mp4", "libx264", "yuv420p")
    good_avi = write_video(tmp / "good.avi", "mpeg4", "yuv420p")
    good_gif = write_gif(tmp / "good.gif")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp / "good.png")
    nan = np.ones((4, 4, 4), np.float32)
    nan[1, 2, 3] = np.nan
    (tmp / "empty_folder").mkdir()
    (tmp / "random.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp / "empty.avi").write_bytes(b"")
    (tmp / "scan.xyz").write_bytes(b"not a scan")
    return {
        "missing": (tmp / "absent.mp4", "not found"),
        "unsupported": (tmp / "scan.xyz", "unsupported file type"),
        "empty file": (tmp / "empty.avi", "empty"),
        "random bytes": (tmp / "random.mp4", "cannot decode video"),
        "truncated mp4 (moov lost)": (_truncated(good_mp4, tmp / "t1.mp4", 0.9), "truncated"),
        "truncated mp4 (mdat cut)": (_truncated(good_mp4, tmp / "t2.mp4", 0.3), "truncated"),
        "truncated avi": (_truncated(good_avi, tmp / "t.avi", 0.9), "truncated"),
        "truncated gif": (_truncated(good_gif, tmp / "t.gif", 0.7), "truncated"),
        "truncated png": (_truncated(tmp / "good.png", tmp / "t.png", 0.5), "cannot decode image"),
        "zero-frame video": (_zero_frame_video(tmp / "zero.avi"), "zero frames"),
        "empty frame folder": (tmp / "empty_folder", "zero frames"),
        "2-D NIfTI": (_nifti(tmp / "flat.nii", np.ones((8, 8), np.float32)), "2-D"),
        "single-slice NIfTI": (_nifti(tmp / "slice.nii.gz", np.ones((8, 8, 1), np.float32)), "2-D"),
        "4-D NIfTI": (_nifti(tmp / "series.nii", np.ones((4, 4, 4, 3), np.float32)), "4-D"),
        "NaN NIfTI": (_nifti(tmp / "nan.nii", nan), "1 NaN/inf"),
    }


def test_every_bad_file_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    for name, (path, expected) in _bad_files(tmp_path).items():
        with pytest.raises(ScanReadError) as error:
            read_scan(path)
        message = str(error.value)
        assert path.name in message, name
        assert expected in message, f"{name}: {message}"
        assert "\n" not in message, name


def test_nan_in_a_float_image_is_an_error_not_black_pixels(tmp_path: Path) -> None:
    pixels = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    pixels[2, 3] = np.nan
    target = tmp_path / "float.tif"
    Image.fromarray(pixels, mode="F").save(target)
    with pytest.raises(ScanReadError, match=r"float\.tif: 1 NaN/inf"):
        read_scan(target)


@pytest.mark.parametrize(
    ("shape", "value", "message"),
    [
        ((16, 16), 0, "every pixel or voxel is 0; a blank scan"),  # an all-black image
        ((1, 1), 200, "every pixel or voxel is 200"),  # a 1 × 1 icon is blank too
        ((1, 50), None, "frames of 1 × 50 pixels; a scan needs ≥ 4 a side"),  # a strip
    ],
)
def test_blank_or_degenerate_images_are_refused(
    tmp_path: Path, shape: tuple[int, int], value: int | None, message: str
) -> None:
    from PIL import Image

    pixels = np.full(shape, value, np.uint8) if value is not None else np.arange(50, dtype=np.uint8)[None]
    path = tmp_path / "x.png"
    Image.fromarray(pixels).save(path)
    with pytest.raises(ScanReadError, match=re.escape(f"{path}: {message}")):
        read_scan(path)


# --------------------------------------------------------------------------------------------- size guard
def _size_guard_cases(tmp: Path) -> dict[str, Path]:
    """One small file per reader (and a folder of frames), each read whole under a limit of its own size."""
    folder = tmp / "frames"
    folder.mkdir()
    for number in range(3):
        Image.fromarray(np.full((8, 8), 10 * number + 5, np.uint8)).save(folder / f"f{number}.png")
    pages = [Image.fromarray(np.full((8, 8), level, np.uint8)) for level in (10, 90)]
    pages[0].save(tmp / "pages.tif", save_all=True, append_images=pages[1:])
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(tmp / "still.png")
    cine = np.random.default_rng(1).integers(0, 256, (4, 10, 12), dtype=np.uint8)
    volume = np.random.default_rng(2).random((6, 7, 8)).astype(np.float32)
    return {
        "mp4 (PyAV)": write_video(tmp / "clip.mp4", "libx264", "yuv420p"),
        "gif": write_gif(tmp / "clip.gif"),
        "png": tmp / "still.png",
        "multi-page tiff": tmp / "pages.tif",
        "DICOM": write_dicom(tmp / "cine.dcm", cine, "MONOCHROME2"),
        "NIfTI": _nifti(tmp / "volume.nii.gz", volume),
        "frame folder": folder,
    }


@pytest.mark.parametrize(
    "kind", ["mp4 (PyAV)", "gif", "png", "multi-page tiff", "DICOM", "NIfTI", "frame folder"]
)
def test_every_reader_refuses_frames_over_the_limit_in_one_line(tmp_path: Path, kind: str) -> None:
    path = _size_guard_cases(tmp_path)[kind]
    size = read_scan(path).frames.nbytes
    assert read_scan(path, max_bytes=size).frames.nbytes == size  # the limit is exact: at it, read
    with pytest.raises(ScanReadError) as error:
        read_scan(path, max_bytes=size - 1)
    message = str(error.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message, message
    assert f"over the {(size - 1) / 1e9:.3g} GB limit for one scan" in message, message


def test_the_limit_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from learner.errors import ConfigError

    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(tmp_path / "still.png")
    monkeypatch.setenv(readers.MAX_SCAN_GB_VARIABLE, "1e-7")  # 100 bytes: under the still's 256
    with pytest.raises(ScanReadError, match=r"still\.png: the image declares 1 × 16 × 16 samples"):
        read_scan(tmp_path / "still.png")
    monkeypatch.setenv(readers.MAX_SCAN_GB_VARIABLE, "lots")
    with pytest.raises(ConfigError, match="LEARNER_MAX_SCAN_GB='lots': should be a positive number"):
        read_scan(tmp_path / "still.png")


def test_a_dicom_decoder_error_is_one_complete_line(tmp_path: Path) -> None:
    """pydicom's message is several lines: "... by all available plugins:" and then each plugin's reason;
    the error line once ended at the colon."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    pixels = np.zeros((16, 16), np.uint8)
    path = write_dicom(tmp_path / "j2k.dcm", pixels, "MONOCHROME2")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([bytes(100)])  # not a JPEG 2000 code stream
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ScanReadError) as error:
        read_scan(path)
    message = str(error.value)
    assert message.startswith(f"{path}: cannot decode DICOM ("), message
    assert "\n" not in message, message
    assert not message.endswith(":)"), message
    assert re.search(r"plugins: \w+: ", message), message  # the plugin's own reason follows the colon


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_an_image_over_pillows_bomb_warning_limit_is_refused(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by ``--fuzz-long``: a fuzzed 16 × 16 GIF declared 91 MP, just over Pillow's warning limit and
    under its error limit, and took seconds and gigabytes to decode; the warning now refuses it."""
    from PIL import Image

    path = tmp_path / f"big{suffix}"
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # 256 pixels: over 200, under 2 × 200
    if suffix == ".gif":  # FFmpeg reads a sound GIF; the fuzzed one went to the Pillow fallback
        from learner.data import readers

        def no_pyav(path: Path, options: object) -> None:
            raise ValueError("PyAV decoded nothing")

        monkeypatch.setattr(readers, "_decode_pyav", no_pyav)
    reason = "decompression bomb" if suffix == ".png" else "PyAV decoded nothing"  # imageio rewraps it
    with pytest.raises(ScanReadError, match=re.escape(str(path)) + f": cannot decode .*{reason}"):
        read_scan(path)
