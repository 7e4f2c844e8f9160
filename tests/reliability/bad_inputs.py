"""The catalogue of bad inputs: each entry writes one bad input into a folder and returns the ``learner``
command that must refuse it with one ``error:`` line naming ``culprit`` (exit 2, no traceback, nothing
left behind). Add an entry for every new way a user's input can be wrong.

The command runs in that folder (so ``.`` names it), under the entry's ``during`` conditions where it has
some (a full disk, a user without root's file-permission override: :func:`permissions.as_a_user`); an
entry may also require text on stdout (``shown``: a listed problem) and forbid text in the error line
(``absent``: advice of an option the command does not have).

Writers of small valid inputs (:func:`still`, :func:`write_manifest`, :func:`good_rows`) are shared with
the fuzz tests.
"""

from __future__ import annotations

import errno
import io
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
from PIL import Image

HEADER = ("patient_id", "scan_id", "path", "visit", "score")


Conditions = Callable[[Path], AbstractContextManager[object]]


@dataclass(frozen=True)
class BadInput:
    """One catalogue entry: ``build(folder) -> argv``; the error line must contain ``culprit``."""

    name: str
    culprit: str
    build: Callable[[Path], list[str]]
    during: Conditions | None = None
    """``during(folder)``: the conditions the command runs under (entered after ``build``)."""
    shown: str = ""
    """Text that stdout must hold too (a problem the command lists above its error line)."""
    absent: str = ""
    """Text that the error line must not hold."""


CATALOGUE: list[BadInput] = []


Builder = Callable[[Path], list[str]]


def bad_input(
    name: str, culprit: str, *, during: Conditions | None = None, shown: str = "", absent: str = ""
) -> Callable[[Builder], Builder]:
    """Register the decorated builder in :data:`CATALOGUE`."""

    def register(build: Builder) -> Builder:
        CATALOGUE.append(BadInput(name, culprit, build, during, shown, absent))
        return build

    return register


# ------------------------------------------------------------------------------------------ writers
def still(path: Path, seed: int = 0, size: int = 24) -> Path:
    """A random grey PNG still (one frame) of ``size`` × ``size``."""
    pixels = np.random.default_rng(seed).integers(20, 235, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def good_rows(folder: Path, patients: int = 4) -> list[list[str]]:
    """``patients`` patients × 2 visits of PNG stills written into ``folder`` (S/F scores in range)."""
    rows = []
    for p in range(patients):
        for visit in (1, 2):
            name = f"p{p}_v{visit}.png"
            still(folder / name, seed=10 * p + visit)
            rows.append([f"p{p}", f"p{p}_v{visit}", name, str(visit), str(150 + (37 * p) % 300 + 5 * visit)])
    return rows


def write_manifest(
    path: Path, rows: list[list[str]], header: tuple[str, ...] = HEADER, sep: str = ","
) -> Path:
    path.write_text("\n".join(sep.join(cells) for cells in [list(header), *rows]) + "\n", encoding="utf-8")
    return path


def manifest_of(folder: Path, scan: str, name: str = "manifest.csv") -> Path:
    """A one-row manifest whose scan is ``scan`` (relative to ``folder``)."""
    return write_manifest(folder / name, [["p0", "s0", scan, "1", "300"]])


def png_with_rows(path: Path, rows_written: int, height: int = 32, width: int = 32) -> Path:
    """A grey PNG whose IHDR says ``height`` rows and whose (complete) zlib stream holds ``rows_written``."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    pixels = np.random.default_rng(0).integers(1, 255, (height, width), dtype=np.uint8)
    raw = b"".join(b"\x00" + pixels[r].tobytes() for r in range(rows_written))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def nifti(path: Path, volume: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    return path


def check(manifest: Path, *extra: str) -> list[str]:
    return ["data", "check", str(manifest), *extra]


def cache(manifest: Path, *extra: str) -> list[str]:
    return ["data", "cache", str(manifest), "--workers", "0", *extra]


def rows_with(folder: Path, column: str, value: str, row: int = 0) -> Path:
    """The good manifest with one cell replaced."""
    rows = good_rows(folder)
    rows[row][HEADER.index(column)] = value
    return write_manifest(folder / "manifest.csv", rows)


# ------------------------------------------------------------------------------------------ manifests
@bad_input("manifest missing", "nothere.csv")
def _(folder: Path) -> list[str]:
    return check(folder / "nothere.csv")


@bad_input("manifest of an unsupported type", "scans.txt")
def _(folder: Path) -> list[str]:
    (folder / "scans.txt").write_text("a,b\n")
    return check(folder / "scans.txt")


@bad_input("manifest saved from Excel as .xlsx", "CSV UTF-8")
def _(folder: Path) -> list[str]:
    (folder / "scans.xlsx").write_bytes(b"PK\x03\x04")
    return check(folder / "scans.xlsx")


@bad_input("Excel workbook renamed .csv", "Excel")
def _(folder: Path) -> list[str]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as workbook:
        workbook.writestr("xl/workbook.xml", "<workbook/>")
    (folder / "scans.csv").write_bytes(buffer.getvalue())
    return check(folder / "scans.csv")


@bad_input("semicolon-separated manifest", "semicolon-separated")
def _(folder: Path) -> list[str]:
    return check(write_manifest(folder / "m.csv", good_rows(folder), sep=";"))


@bad_input("tab-separated manifest", "tab-separated")
def _(folder: Path) -> list[str]:
    return check(write_manifest(folder / "m.csv", good_rows(folder), sep="\t"))


@bad_input("header-only manifest", "no scans")
def _(folder: Path) -> list[str]:
    return check(write_manifest(folder / "m.csv", []))


@bad_input("zero-byte manifest", "m.csv")
def _(folder: Path) -> list[str]:
    (folder / "m.csv").write_bytes(b"")
    return check(folder / "m.csv")


def _manifest_text(folder: Path) -> str:
    return "\n".join(",".join(cells) for cells in [list(HEADER), *good_rows(folder)]) + "\n"


@bad_input("manifest saved as UTF-16 (Excel's 'Unicode Text')", "m.csv: the file is UTF-16 text")
def _(folder: Path) -> list[str]:
    (folder / "m.csv").write_text(_manifest_text(folder), encoding="utf-16")
    return check(folder / "m.csv")


@bad_input("manifest in UTF-16 without a byte-order mark", "m.csv: the file holds NUL bytes: UTF-16")
def _(folder: Path) -> list[str]:
    (folder / "m.csv").write_text(_manifest_text(folder), encoding="utf-16-le")
    return check(folder / "m.csv")


@bad_input("manifest in Latin-1", "not UTF-8 text")
def _(folder: Path) -> list[str]:
    (folder / "m.csv").write_text(_manifest_text(folder).replace("p0", "pé"), encoding="latin-1")
    return check(folder / "m.csv")


@bad_input("manifest that is a folder", "not a regular file")
def _(folder: Path) -> list[str]:
    (folder / "m.csv").mkdir()
    return check(folder / "m.csv")


@bad_input("manifest that is a FIFO", "not a regular file")
def _(folder: Path) -> list[str]:
    os.mkfifo(folder / "m.csv")
    return check(folder / "m.csv")


@bad_input("corrupt Parquet manifest", "m.parquet")
def _(folder: Path) -> list[str]:
    (folder / "m.parquet").write_bytes(b"PAR1 not really")
    return check(folder / "m.parquet")


@bad_input("manifest without a required column", "problem")
def _(folder: Path) -> list[str]:
    return check(write_manifest(folder / "m.csv", [r[:4] for r in good_rows(folder)], HEADER[:4]))


@bad_input("empty required value", "problem")
def _(folder: Path) -> list[str]:
    return check(rows_with(folder, "patient_id", ""))


@bad_input("duplicate scan_id", "problem")
def _(folder: Path) -> list[str]:
    return check(rows_with(folder, "scan_id", "p0_v2"))


for _text in ("abc", "nan", "inf", "-5", "9999"):

    @bad_input(f"score {_text}", "problem")
    def _(folder: Path, text: str = _text) -> list[str]:
        return check(rows_with(folder, "score", text))


@bad_input("MMSE score not whole", "problem")
def _(folder: Path) -> list[str]:
    rows = [[*r[:4], "25"] for r in good_rows(folder)]
    rows[0][4] = "25.5"
    return check(write_manifest(folder / "m.csv", rows), "--scale", "mmse")


@bad_input("visit neither a date nor an integer", "problem")
def _(folder: Path) -> list[str]:
    return check(rows_with(folder, "visit", "yesterday"))


@bad_input("patient mixing integer and date visits", "problem")
def _(folder: Path) -> list[str]:
    return check(rows_with(folder, "visit", "2021-03-04"))


def _with_split(folder: Path, splits: list[str]) -> Path:
    rows = [[*row, split] for row, split in zip(good_rows(folder), splits, strict=True)]
    return write_manifest(folder / "m.csv", rows, (*HEADER, "split"))


@bad_input("patient in two splits", "problem")
def _(folder: Path) -> list[str]:
    return check(_with_split(folder, ["train", "val", "train", "train", "val", "val", "test", "test"]))


@bad_input("unknown split", "problem")
def _(folder: Path) -> list[str]:
    return check(_with_split(folder, ["train", "train", "dev", "dev", "val", "val", "test", "test"]))


@bad_input("split on some rows only", "problem")
def _(folder: Path) -> list[str]:
    return check(_with_split(folder, ["train", "train", "", "", "val", "val", "test", "test"]))


@bad_input("unknown modality", "problem")
def _(folder: Path) -> list[str]:
    rows = [[*row, "video"] for row in good_rows(folder)]
    rows[0][-1] = "hologram"
    return check(write_manifest(folder / "m.csv", rows, (*HEADER, "modality")))


@bad_input("scan file missing", "problem")
def _(folder: Path) -> list[str]:
    return check(rows_with(folder, "path", "gone.png"))


@bad_input("path naming an empty folder", "problem")
def _(folder: Path) -> list[str]:
    (folder / "frames").mkdir()
    return check(rows_with(folder, "path", "frames"))


@bad_input("path outside --data-root", "problem")
def _(folder: Path) -> list[str]:
    (folder / "data").mkdir()
    manifest = write_manifest(folder / "data" / "m.csv", good_rows(folder / "data"))
    rows = good_rows(folder / "data")
    rows[0][2] = "../outside.png"
    still(folder / "outside.png")
    write_manifest(manifest, rows)
    return check(manifest, "--data-root", str(folder / "data"))


# ------------------------------------------------------------------------------------------ scan files
@bad_input("zero-byte scan", "empty.mp4")
def _(folder: Path) -> list[str]:
    (folder / "empty.mp4").write_bytes(b"")
    return cache(manifest_of(folder, "empty.mp4"))


@bad_input("scan of an unsupported type", "notes.txt")
def _(folder: Path) -> list[str]:
    (folder / "notes.txt").write_text("hello")
    return cache(manifest_of(folder, "notes.txt"))


@bad_input("random bytes named .mp4", "noise.mp4")
def _(folder: Path) -> list[str]:
    (folder / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    return cache(manifest_of(folder, "noise.mp4"))


@bad_input("FIFO named .mp4", "named pipe")
def _(folder: Path) -> list[str]:
    os.mkfifo(folder / "pipe.mp4")
    return cache(manifest_of(folder, "pipe.mp4"))


@bad_input("20000 x 20000 PNG (decompression bomb)", "bomb.png")
def _(folder: Path) -> list[str]:
    Image.new("1", (20000, 20000)).save(folder / "bomb.png")
    return cache(manifest_of(folder, "bomb.png"))


@bad_input("PNG whose pixel stream ends early", "truncated")
def _(folder: Path) -> list[str]:
    png_with_rows(folder / "short.png", rows_written=16)
    return cache(manifest_of(folder, "short.png"))


@bad_input("PNG cut off mid-file", "cut.png")
def _(folder: Path) -> list[str]:
    data = still(folder / "cut.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    return cache(manifest_of(folder, "cut.png"))


@bad_input("all-zero volume", "blank scan")
def _(folder: Path) -> list[str]:
    nifti(folder / "zero.nii.gz", np.zeros((8, 8, 8), np.float32))
    return cache(manifest_of(folder, "zero.nii.gz"))


@bad_input("volume with NaN voxels", "NaN")
def _(folder: Path) -> list[str]:
    volume = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    volume[1, 2, 3] = np.nan
    nifti(folder / "nan.nii.gz", volume)
    return cache(manifest_of(folder, "nan.nii.gz"))


@bad_input("2-D NIfTI", "2-D")
def _(folder: Path) -> list[str]:
    nifti(folder / "flat.nii.gz", np.random.default_rng(0).random((8, 8)).astype(np.float32))
    return cache(manifest_of(folder, "flat.nii.gz"))


@bad_input("4-D NIfTI series", "4-D")
def _(folder: Path) -> list[str]:
    nifti(folder / "series.nii.gz", np.random.default_rng(0).random((8, 8, 8, 2)).astype(np.float32))
    return cache(manifest_of(folder, "series.nii.gz"))


@bad_input("frame size changing within a folder", "f2.png")
def _(folder: Path) -> list[str]:
    (folder / "clip").mkdir()
    still(folder / "clip" / "f1.png", size=24)
    still(folder / "clip" / "f2.png", size=32)
    return cache(manifest_of(folder, "clip"))


def dicom(path: Path, syntax: str = "1.2.840.10008.1.2.1", **elements: object) -> Path:
    """An ultrasound DICOM file of ``syntax`` (default: explicit VR little endian) with ``elements`` set."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, UltrasoundImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "US"
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


_GREY_8_BIT = {
    "SamplesPerPixel": 1,
    "PhotometricInterpretation": "MONOCHROME2",
    "BitsAllocated": 8,
    "BitsStored": 8,
    "HighBit": 7,
    "PixelRepresentation": 0,
}


@bad_input("DICOM without pixel data", "no pixel data")
def _(folder: Path) -> list[str]:
    return cache(manifest_of(folder, dicom(folder / "empty.dcm").name))


@bad_input("DICOM whose header declares 300 frames of 4096 x 4096", "big.dcm: the DICOM header declares")
def _(folder: Path) -> list[str]:
    elements = {**_GREY_8_BIT, "Rows": 4096, "Columns": 4096, "NumberOfFrames": 300, "PixelData": bytes(64)}
    return cache(manifest_of(folder, dicom(folder / "big.dcm", **elements).name))


@bad_input("DICOM of a compression no installed plugin decodes", "j2k.dcm: cannot decode DICOM")
def _(folder: Path) -> list[str]:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    frames = encapsulate([bytes(100)])  # not a JPEG 2000 code stream
    dicom(folder / "j2k.dcm", JPEG2000Lossless, **_GREY_8_BIT, Rows=16, Columns=16, PixelData=frames)
    return cache(manifest_of(folder, "j2k.dcm"))


@bad_input("1 KB .nii.gz whose header declares 1400³ voxels", "huge.nii.gz: the NIfTI header declares 1400")
def _(folder: Path) -> list[str]:
    import gzip

    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape((1400, 1400, 1400))  # 2.7 GB on disk, 11 GB as float32: refused before reading
    with gzip.open(folder / "huge.nii.gz", "wb") as handle:
        handle.write(header.binaryblock + bytes(4) + bytes(1000))
    return cache(manifest_of(folder, "huge.nii.gz"))


# ------------------------------------------------------------------------------------------ config, flags
def _good(folder: Path) -> Path:
    return write_manifest(folder / "m.csv", good_rows(folder))


@bad_input("negative seed", "seed")
def _(folder: Path) -> list[str]:
    return check(_good(folder), "--set", "seed=-1")


@bad_input("seed of 2**32", "seed")
def _(folder: Path) -> list[str]:
    return check(_good(folder), "--set", f"seed={2**32}")


@bad_input("negative --seed of data split", "seed")
def _(folder: Path) -> list[str]:
    return ["data", "split", str(_good(folder)), "--out", str(folder / "out.csv"), "--seed", "-7"]


@bad_input("negative --seed of a phantom", "--seed")
def _(folder: Path) -> list[str]:
    return ["phantom", "lus", str(folder / "cohort"), "--seed", "-1"]


@bad_input("experiment seed of 2**32", "seeds")
def _(folder: Path) -> list[str]:
    (folder / "grid.yaml").write_text(f"experiment:\n  seeds: [0, {2**32}]\n")
    return ["experiment", "table3", "--config", str(folder / "grid.yaml"), "--out", str(folder / "out")]


@bad_input("unknown option (a usage error, not a box)", "No such option: --bogus")
def _(folder: Path) -> list[str]:
    return check(_good(folder), "--bogus")


@bad_input("missing argument", "Missing argument 'manifest'; see 'learner data check --help'")
def _(folder: Path) -> list[str]:
    return ["data", "check"]


@bad_input("option value of the wrong type", "Invalid value for '--seed'")
def _(folder: Path) -> list[str]:
    return ["phantom", "lus", str(folder / "cohort"), "--seed", "abc"]


@bad_input("unknown command", "No such command 'chek'")
def _(folder: Path) -> list[str]:
    return ["data", "chek", str(_good(folder))]


@bad_input("unknown config key", "data.sise")
def _(folder: Path) -> list[str]:
    return check(_good(folder), "--set", "data.sise=32")


@bad_input("config key of a pre-0.1 layout data.cache_dir", "unknown config key 'data.cache_dir'")
def _(folder: Path) -> list[str]:
    return check(_good(folder), "--set", "data.cache_dir=somewhere")


@bad_input("config value of the wrong type", "data.size")
def _(folder: Path) -> list[str]:
    return check(_good(folder), "--set", "data.size=large")


@bad_input("a boolean where a number belongs (optim.epochs=true, once read as 1)", "optim.epochs")
def _(folder: Path) -> list[str]:
    return check(_good(folder), "--set", "optim.epochs=true")


@bad_input("a config key given twice in one section (YAML keeps the last without a word)", "appears twice")
def _(folder: Path) -> list[str]:
    (folder / "c.yaml").write_text("optim:\n  lr: 0.1\n  lr: 0.2\n", encoding="utf-8")
    return check(_good(folder), "--config", str(folder / "c.yaml"))


@bad_input("a manifest naming the score column twice", "'score' twice")
def _(folder: Path) -> list[str]:
    rows = [[*row, row[HEADER.index("score")]] for row in good_rows(folder)]
    return check(write_manifest(folder / "manifest.csv", rows, header=(*HEADER, "score")))


@bad_input("a score written with underscores (1_5_5, once read as 155)", "problem")
def _(folder: Path) -> list[str]:
    return check(rows_with(folder, "score", "1_5_5"))


@bad_input("a visit of 420 digits (once an OverflowError)", "problem")
def _(folder: Path) -> list[str]:
    return check(rows_with(folder, "visit", "9" * 420))


@bad_input("config file missing", "nothere.yaml")
def _(folder: Path) -> list[str]:
    return check(_good(folder), "--config", str(folder / "nothere.yaml"))


@bad_input("config file not YAML", "not valid YAML")
def _(folder: Path) -> list[str]:
    (folder / "c.yaml").write_text("data: [unclosed\n")
    return check(_good(folder), "--config", str(folder / "c.yaml"))


@bad_input("config file of binary bytes", "not a text file")
def _(folder: Path) -> list[str]:
    (folder / "c.yaml").write_bytes(b"\xff\xfe\x00binary")
    return check(_good(folder), "--config", str(folder / "c.yaml"))


@bad_input("config file whose top level is a list", "mapping")
def _(folder: Path) -> list[str]:
    (folder / "c.yaml").write_text("- a\n- b\n")
    return check(_good(folder), "--config", str(folder / "c.yaml"))


@bad_input("runtime.cache_dir naming a file", "runtime.cache_dir")
def _(folder: Path) -> list[str]:
    (folder / "cachefile").write_text("x")
    return cache(_good(folder), "--set", f"runtime.cache_dir={folder / 'cachefile'}")


@bad_input("runtime.cache_dir under /dev/null", "/dev/null")
def _(folder: Path) -> list[str]:
    return cache(_good(folder), "--set", "runtime.cache_dir=/dev/null/cache")


@bad_input("--ratios that are not three numbers", "--ratios")
def _(folder: Path) -> list[str]:
    return ["data", "split", str(_good(folder)), "--out", str(folder / "o.csv"), "--ratios", "2,1"]


@bad_input("data split --out under /dev/null", "/dev/null")
def _(folder: Path) -> list[str]:
    return ["data", "split", str(_good(folder)), "--out", "/dev/null/split.csv"]


@bad_input("pretrain --out naming a file", "out.txt")
def _(folder: Path) -> list[str]:
    (folder / "out.txt").write_text("x")
    return ["pretrain", "--out", str(folder / "out.txt"), "--manifest", str(_good(folder))]


@bad_input("pretrain --out under /dev/null", "/dev/null")
def _(folder: Path) -> list[str]:
    return ["pretrain", "--out", "/dev/null/run", "--manifest", str(_good(folder))]


@bad_input("phantom folder under /dev/null", "/dev/null")
def _(folder: Path) -> list[str]:
    return ["phantom", "lus", "/dev/null/cohort", "--patients", "2,1,1"]


# ------------------------------------------------------------------------------------------ run folders
@bad_input("embed of a folder that is no run", "no config.yaml")
def _(folder: Path) -> list[str]:
    (folder / "run").mkdir()
    return ["embed", str(folder / "run"), "--manifest", str(_good(folder))]


@bad_input("report of a folder that is no run", "run")
def _(folder: Path) -> list[str]:
    (folder / "run").mkdir()
    return ["report", str(folder / "run")]


def _old_run(folder: Path, kind: str | None = None) -> Path:
    """A previous run's folder (what --force may wipe and --resume continue), with its ``run.json`` kind."""
    run = folder / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\n", encoding="utf-8")
    (run / "run.json").write_text("{}" if kind is None else f'{{"kind": "{kind}"}}', encoding="utf-8")
    return run


@bad_input("pretrain --force over a run folder holding its own manifest and scans", "m.csv")
def _(folder: Path) -> list[str]:
    run = _old_run(folder)  # the user keeps the cohort inside the run folder: --force must not delete it
    return ["pretrain", "--out", str(run), "--force", "--manifest", str(_good(run))]


@bad_input("classify --force over a folder holding the encoder run", "enc")
def _(folder: Path) -> list[str]:
    run = _old_run(folder)
    encoder = _old_run(run, "pretraining").rename(run / "enc")
    return [
        "classify",
        str(encoder),
        "--manifest",
        str(_good(folder)),
        "--out",
        str(run),
        "--force",
    ]


@bad_input("pretrain --resume of a classification run", "holds a classification run")
def _(folder: Path) -> list[str]:
    return ["pretrain", "--resume", str(_old_run(folder, "classification"))]


def assert_refused(code: int, out: str, err: str, culprit: str) -> str:
    """Exit code 2, no traceback, and exactly one ``error:`` line on stderr (other stderr lines may only be
    warnings) that names ``culprit``; returns that line."""
    assert "Traceback" not in out + err, err
    assert code == 2, (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert all(line.startswith(("error: ", "warning: ")) for line in lines), err
    assert culprit in errors[0], errors[0]
    return errors[0]


@bad_input("an --out path whose name is too long for the file system", "File name too long")
def _(folder: Path) -> list[str]:
    return ["pretrain", "--manifest", str(_good(folder)), "--out", str(folder / ("x" * 300))]


# ------------------------------------------------------------------------------------------ issue 21, round 3
# data check opens every scan file: one that cannot be read is listed by name and the check fails
def _as_a_user(folder: Path) -> AbstractContextManager[object]:
    from permissions import as_a_user

    return as_a_user()


def _no_access(path: Path) -> Path:
    path.chmod(0)
    return path


def _rows_with_scan(folder: Path, name: str) -> Path:
    rows = good_rows(folder)
    rows[0][HEADER.index("path")] = name
    return write_manifest(folder / "manifest.csv", rows)


@bad_input("data check: a .txt file as a scan", "problem", shown="notes.txt: unsupported file type '.txt'")
def _(folder: Path) -> list[str]:
    (folder / "notes.txt").write_text("hello")
    return check(_rows_with_scan(folder, "notes.txt"))


@bad_input(
    "data check: a scan no one may read (chmod 000)",
    "problem",
    during=_as_a_user,
    shown="p0_v1.png: cannot read it: Permission denied",
)
def _(folder: Path) -> list[str]:
    manifest = _good(folder)
    _no_access(folder / "p0_v1.png")
    return check(manifest)


@bad_input(
    "data check: a frame folder no one may list (chmod 000)",
    "problem",
    during=_as_a_user,
    shown="clip: cannot read the folder: Permission denied",
)
def _(folder: Path) -> list[str]:
    (folder / "clip").mkdir()
    still(folder / "clip" / "f1.png")
    manifest = _rows_with_scan(folder, "clip")
    _no_access(folder / "clip")
    return check(manifest)


@bad_input(
    "data check: a frame no one may read in a frame folder",
    "problem",
    during=_as_a_user,
    shown="f2.png: cannot read it: Permission denied",
)
def _(folder: Path) -> list[str]:
    (folder / "clip").mkdir()
    still(folder / "clip" / "f1.png")
    _no_access(still(folder / "clip" / "f2.png", seed=1))
    return check(_rows_with_scan(folder, "clip"))


@bad_input("data check: a named pipe as a scan", "problem", shown="pipe.mp4: is a named pipe (FIFO)")
def _(folder: Path) -> list[str]:
    os.mkfifo(folder / "pipe.mp4")
    return check(_rows_with_scan(folder, "pipe.mp4"))


@bad_input("data check: a zero-byte scan", "problem", shown="empty.mp4: empty file (0 bytes)")
def _(folder: Path) -> list[str]:
    (folder / "empty.mp4").write_bytes(b"")
    return check(_rows_with_scan(folder, "empty.mp4"))


@bad_input(
    "data check: a scan that is a symbolic link to itself",
    "problem",
    shown="loop.png: cannot read it: Too many levels of symbolic links",
)
def _(folder: Path) -> list[str]:
    (folder / "loop.png").symlink_to("loop.png")
    return check(_rows_with_scan(folder, "loop.png"))


# OS errors: one line naming the path, before any work where the place can be checked first
@bad_input("phantom lus . (the current folder: EBUSY once the cohort was built)", "is the current folder")
def _(folder: Path) -> list[str]:
    return ["phantom", "lus", ".", "--patients", "2,1,1", "--frames", "2", "--size", "32"]


@bad_input("data split --out . (a folder)", ".: unsupported manifest type")
def _(folder: Path) -> list[str]:
    return ["data", "split", str(_good(folder)), "--out", "."]


LONG_NAME = "x" * 300
"""A file name longer than any common file system allows (255 bytes): ENAMETOOLONG."""


@bad_input("data split --out with a 300-character name", "File name too long")
def _(folder: Path) -> list[str]:
    return ["data", "split", str(_good(folder)), "--out", f"{LONG_NAME}.csv"]


@bad_input("phantom lus into a folder of a 300-character name", "File name too long")
def _(folder: Path) -> list[str]:
    return ["phantom", "lus", LONG_NAME, "--patients", "2,1,1", "--frames", "2", "--size", "32"]


@bad_input("pretrain --out a folder no one may enter (chmod 000)", "locked", during=_as_a_user)
def _(folder: Path) -> list[str]:
    manifest = _good(folder)
    (folder / "locked").mkdir()
    _no_access(folder / "locked")
    return ["pretrain", "--manifest", str(manifest), "--out", "locked"]


@bad_input("pretrain --out inside a folder no one may enter (chmod 000)", "locked", during=_as_a_user)
def _(folder: Path) -> list[str]:
    manifest = _good(folder)
    (folder / "locked").mkdir()
    _no_access(folder / "locked")
    return ["pretrain", "--manifest", str(manifest), "--out", "locked/run"]


@bad_input("data split --out inside a folder no one may enter (chmod 000)", "locked", during=_as_a_user)
def _(folder: Path) -> list[str]:
    manifest = _good(folder)
    (folder / "locked").mkdir()
    _no_access(folder / "locked")
    return ["data", "split", str(manifest), "--out", "locked/split.csv"]


@bad_input("phantom lus inside a folder no one may enter (chmod 000)", "locked", during=_as_a_user)
def _(folder: Path) -> list[str]:
    (folder / "locked").mkdir()
    _no_access(folder / "locked")
    return ["phantom", "lus", "locked/cohort", "--patients", "2,1,1", "--frames", "2", "--size", "32"]


@bad_input("data cache of a frame folder no one may list (chmod 000)", "clip", during=_as_a_user)
def _(folder: Path) -> list[str]:
    (folder / "clip").mkdir()
    still(folder / "clip" / "f1.png")
    manifest = manifest_of(folder, "clip")
    _no_access(folder / "clip")
    return cache(manifest)


@bad_input("data cache with runtime.cache_dir a symbolic link to itself", "loop")
def _(folder: Path) -> list[str]:
    (folder / "loop").symlink_to("loop")
    return cache(_good(folder), "--set", "runtime.cache_dir=loop")


SMALL_RUN = ["optim.batch_size=2", "data.size=16", "data.frames=1", "model.size=tiny", "runtime.workers=0"]
"""Settings with which a pretraining on :func:`good_rows` passes every check before its run folder opens."""


def _small_run(*sets: str) -> list[str]:
    return [item for key in [*SMALL_RUN, *sets] for item in ("--set", key)]


@bad_input("pretrain --out a symbolic link to itself (once a traceback)", "loop")
def _(folder: Path) -> list[str]:
    (folder / "loop").symlink_to("loop")
    return ["pretrain", "--manifest", str(_good(folder)), "--out", "loop", *_small_run()]


@bad_input("pretrain with runtime.cache_dir a symbolic link to itself (once a traceback)", "loop")
def _(folder: Path) -> list[str]:
    (folder / "loop").symlink_to("loop")
    sets = _small_run("runtime.cache_dir=loop")
    return ["pretrain", "--manifest", str(_good(folder)), "--out", "run", *sets]


def _full_disk(folder: Path) -> AbstractContextManager[object]:
    """Every CSV write fails as it does on a full disk (ENOSPC)."""
    from unittest import mock

    import pandas as pd

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return mock.patch.object(pd.DataFrame, "to_csv", side_effect=full)


@bad_input("data split --out on a full disk (ENOSPC)", "split.csv: cannot write: No space", during=_full_disk)
def _(folder: Path) -> list[str]:
    return ["data", "split", str(_good(folder)), "--out", "split.csv"]


# advice names only options the command has
@bad_input("classify --out a folder holding files (classify has no --resume)", "--force", absent="--resume")
def _(folder: Path) -> list[str]:
    encoder = _old_run(folder, "pretraining").rename(folder / "enc")
    (folder / "out").mkdir()
    (folder / "out" / "notes.txt").write_text("mine")
    return ["classify", str(encoder), "--manifest", str(_good(folder)), "--out", str(folder / "out")]


# a config section that is not a mapping is refused, not replaced by a --set into it
@bad_input("an optim: list in the config with --set optim.epochs (once dropped)", "optim is a list")
def _(folder: Path) -> list[str]:
    (folder / "c.yaml").write_text("optim:\n  - lr: 0.5\n", encoding="utf-8")
    return check(_good(folder), "--config", str(folder / "c.yaml"), "--set", "optim.epochs=1")


@bad_input("an optim: number in the config with --set optim.lr (once dropped)", "optim is the value '3'")
def _(folder: Path) -> list[str]:
    (folder / "c.yaml").write_text("optim: 3\n", encoding="utf-8")
    return check(_good(folder), "--config", str(folder / "c.yaml"), "--set", "optim.lr=0.1")


# ------------------------------------------------------------------------------------------ issue 21, audit
# (tests/reliability/COVERAGE.md maps every defect of issue 21 to its entry or test)
def _comma_rows(folder: Path, end: bool = False) -> Path:
    """The good manifest written by hand with each score's decimal point a comma, unquoted (``155,5``), or
    (``end``) with a comma closing each row."""
    lines = [",".join(HEADER)]
    for row in good_rows(folder):
        lines.append(",".join(row) + "," if end else ",".join([*row[:4], f"{row[4]},5"]))
    (folder / "m.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "m.csv"


@bad_input("an unquoted decimal comma in every row (once 'file not found: .../1')", "unquoted decimal comma")
def _(folder: Path) -> list[str]:
    return check(_comma_rows(folder))


@bad_input("a comma at the end of every row (the same shift of every cell)", "a comma at the end of the row")
def _(folder: Path) -> list[str]:
    return check(_comma_rows(folder, end=True))


def _black_video(path: Path, level: int = 0) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for _ in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), level, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@bad_input("an all-black MP4 (once cached as zeros)", "black.mp4: every pixel or voxel is 0")
def _(folder: Path) -> list[str]:
    return cache(manifest_of(folder, _black_video(folder / "black.mp4").name))


@bad_input("an all-black PNG (once cached as zeros)", "black.png: every pixel or voxel is 0")
def _(folder: Path) -> list[str]:
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "black.png")
    return cache(manifest_of(folder, "black.png"))


@bad_input("a 1 x 1 PNG", "icon.png: every pixel or voxel is 200")
def _(folder: Path) -> list[str]:
    Image.fromarray(np.full((1, 1), 200, np.uint8)).save(folder / "icon.png")
    return cache(manifest_of(folder, "icon.png"))


@bad_input("a 1 x 5000 PNG (once cached as zeros)", "strip.png: frames of 1 × 5000 pixels")
def _(folder: Path) -> list[str]:
    Image.fromarray((np.arange(5000) % 251).astype(np.uint8)[None]).save(folder / "strip.png")
    return cache(manifest_of(folder, "strip.png"))


@bad_input("pretrain on a manifest whose scores are all equal (once trained: MAE 0)", "nothing to regress")
def _(folder: Path) -> list[str]:
    manifest = write_manifest(folder / "m.csv", [[*row[:4], "200"] for row in good_rows(folder)])
    return ["pretrain", "--manifest", str(manifest), "--out", "run", *_small_run()]


@bad_input("pretrain --force whose decode fails: the previous run is kept (once deleted first)", "cut.png")
def _(folder: Path) -> list[str]:
    run = _old_run(folder)
    rows = good_rows(folder)
    data = still(folder / "cut.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    rows[0][HEADER.index("path")] = "cut.png"
    manifest = write_manifest(folder / "m.csv", rows)
    return ["pretrain", "--manifest", str(manifest), "--out", str(run), "--force", *_small_run()]


@bad_input("a cache entry that is a symbolic link to itself (ELOOP)", "Too many levels of symbolic links")
def _(folder: Path) -> list[str]:
    from learner import api

    manifest = manifest_of(folder, still(folder / "a.png").name)
    api.build_cache(manifest, workers=0)
    (entry,) = (folder / ".learner-cache").iterdir()
    entry.unlink()
    entry.symlink_to(entry.name)
    return cache(manifest)


@bad_input("one scan file for a patient in train and one in test (leakage)", "problem", shown="one file, two")
def _(folder: Path) -> list[str]:
    rows = [[*row, "train" if row[0] in ("p0", "p1") else "val" if row[0] == "p2" else "test"]
            for row in good_rows(folder)]  # fmt: skip
    rows[-1][HEADER.index("path")] = rows[0][HEADER.index("path")]  # p3's last visit is p0's first file
    return check(write_manifest(folder / "m.csv", rows, (*HEADER, "split")))


def _laughs(levels: int) -> str:
    """A YAML "billion laughs": 9 strings, then each level 5 aliases of the one before (9 · 5^(levels-1))."""
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    names = "abcdefghij"[:levels]
    for previous, name in pairwise(names):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 5)}]")
    return "{" + ", ".join(lines) + "}"


@bad_input("a YAML billion laughs as --set optim.lr (140,625 values; once a repr of them all)", "expands")
def _(folder: Path) -> list[str]:
    return check(_good(folder), "--set", f"optim.lr={_laughs(7)}")
