"""The decode-once cache: hits, invalidation, concurrent writers, the batch builder, and the full check
(header + CRC-32) once per process, trusted by forked and spawned loader workers."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from learner.config import DataConfig
from learner.data import cache_entry
from learner.data.cache import ScanCache, build_cache, default_cache_root
from learner.data.manifest import ScanRecord, manifest_from_frame
from learner.data.preprocess import Preprocessor
from learner.data.scales import get_scale
from learner.errors import ScanReadError

PREP = Preprocessor(size=16, crop="fan", max_cached_frames=8)


def write_clip(path: Path, seed: int, frames: int = 6, size: int = 32) -> Path:
    """An animated GIF of random grey frames (PyAV reads it through the video reader)."""
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(20, 255, (size, size), dtype=np.uint8)) for _ in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    return path


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.suffix == ".tmp"]


def test_first_get_decodes_then_every_get_hits(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "a.gif", seed=0)
    cache = ScanCache(tmp_path / "cache", PREP)
    first = cache.get(clip)
    assert isinstance(first, np.memmap)
    np.testing.assert_array_equal(first, PREP.load(clip))  # the cache stores exactly the preprocessing
    record = ScanRecord("p1", "s1", clip, "1", 1.0, 300.0)
    np.testing.assert_array_equal(cache.get(record), first)  # a record is the same entry as its path
    assert cache.decode_count == 1
    again = ScanCache(tmp_path / "cache", PREP)  # a new process / instance reuses the files
    again.get(clip)
    assert again.decode_count == 0


def test_touching_or_rewriting_the_file_rebuilds_and_drops_the_stale_entry(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "a.gif", seed=0)
    cache = ScanCache(tmp_path / "cache", PREP)
    old = np.array(cache.get(clip))
    stat = clip.stat()
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    np.testing.assert_array_equal(cache.get(clip), old)  # same content, rebuilt
    assert cache.decode_count == 2
    write_clip(clip, seed=1)
    new = cache.get(clip)
    assert cache.decode_count == 3
    assert not np.array_equal(new, old)
    np.testing.assert_array_equal(new, PREP.load(clip))
    assert len(list((tmp_path / "cache").glob("*.lcache"))) == 1  # stale entries removed


def test_changing_a_preprocessing_parameter_rebuilds(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "a.gif", seed=0)
    small = ScanCache(tmp_path / "cache", PREP)
    large = ScanCache(tmp_path / "cache", Preprocessor(size=24, crop="fan", max_cached_frames=8))
    assert small.get(clip).shape == (6, 16, 16)
    assert large.get(clip).shape == (6, 24, 24)
    assert (small.decode_count, large.decode_count) == (1, 1)
    small.get(clip)
    assert small.decode_count == 1  # both parameter sets stay cached side by side


def test_an_unreadable_scan_raises_and_leaves_nothing_behind(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    cache = ScanCache(tmp_path / "cache", PREP)
    with pytest.raises(ScanReadError, match=r"bad\.mp4"):
        cache.get(bad)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def _build_entry(root: Path, clip: Path, barrier: Any, results: Any) -> None:
    cache = ScanCache(root, PREP)
    barrier.wait()  # both processes miss the entry and write it at the same time
    cache.get(clip)
    results.put(cache.decode_count)


@pytest.mark.slow  # two spawned processes, each importing torch and the toolkit (~5 s)
def test_concurrent_writers_of_one_entry_leave_one_valid_file(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "a.gif", seed=0, frames=16, size=96)
    root = tmp_path / "cache"
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_build_entry, args=(root, clip, barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    decoded = [results.get(timeout=5) for _ in workers]
    assert 1 <= sum(decoded) <= 2
    files = list(root.glob("*.lcache"))
    assert len(files) == 1
    assert leftovers(root) == []
    reader = ScanCache(root, PREP)
    np.testing.assert_array_equal(reader.get(clip), PREP.load(clip))
    assert (reader.decode_count, reader.rebuilt_count) == (0, 0)  # the surviving entry passes its check


def _manifest(tmp_path: Path, bad: bool) -> Any:
    paths = [write_clip(tmp_path / f"clip{i}.gif", seed=i) for i in range(3)]
    if bad:
        paths.append(tmp_path / "broken.mp4")
        paths[-1].write_bytes(np.random.default_rng(0).bytes(2048))
    frame = pd.DataFrame(
        {
            "patient_id": [f"p{i}" for i in range(len(paths))],
            "scan_id": [f"s{i}" for i in range(len(paths))],
            "path": [p.name for p in paths],
            "visit": [1] * len(paths),
            "score": [300.0] * len(paths),
        }
    )
    return manifest_from_frame(frame, get_scale("sf"), root=tmp_path)


@pytest.mark.slow  # a pool of two spawned decoding processes (~4 s)
def test_build_cache_in_a_process_pool_skips_and_reports_bad_scans(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, bad=True)
    cfg = DataConfig(size=16, max_cached_frames=4)
    report = build_cache(manifest, cfg, workers=2, skip_bad=True)
    assert (report.built, report.reused) == (3, 0)
    assert len(report.skipped) == 1
    scan_id, reason = report.skipped[0]
    assert scan_id == "s3"
    assert "broken.mp4" in reason
    root = default_cache_root(manifest, None)
    assert root == tmp_path / ".learner-cache"
    assert len(list(root.glob("*.lcache"))) == 3
    assert sorted(cache_entry.verified_under(root)) == sorted(root.glob("*.lcache"))  # read back here
    assert leftovers(root) == []


def test_build_cache_reuses_and_stops_on_a_bad_scan_without_skip(tmp_path: Path) -> None:
    cfg, elsewhere = DataConfig(size=16, max_cached_frames=4), tmp_path / "elsewhere"
    good = _manifest(tmp_path, bad=False)
    assert build_cache(good, cfg, workers=1, cache_dir=elsewhere).built == 3
    again = build_cache(good, cfg, workers=0, cache_dir=elsewhere)
    assert (again.built, again.reused, again.skipped) == (0, 3, [])
    cache = ScanCache(tmp_path / "elsewhere", Preprocessor.from_config(cfg))
    for record in good.records:
        np.testing.assert_array_equal(cache.get(record), Preprocessor.from_config(cfg).load(record.path))
    assert cache.decode_count == 0  # built ahead, so training decodes nothing
    hint = "; fix or drop that manifest row, or skip bad scans with --set data.skip_bad_scans=true"
    with pytest.raises(ScanReadError, match=r"broken\.mp4: .*" + re.escape(hint) + "$"):
        build_cache(_manifest(tmp_path, bad=True), cfg, workers=1, cache_dir=elsewhere)


def test_a_warm_cache_starts_no_worker_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from learner.data import cache as cache_module

    cfg = DataConfig(size=16, max_cached_frames=4)
    manifest = _manifest(tmp_path, bad=False)
    assert build_cache(manifest, cfg, workers=1).built == 3

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("a worker pool was started for a warm cache")

    monkeypatch.setattr(cache_module, "ProcessPoolExecutor", no_pool)
    report = build_cache(manifest, cfg, workers=2)
    assert (report.built, report.reused, report.skipped) == (0, 3, [])


def _corruptions() -> dict[str, Any]:
    """Ways an entry file goes bad: each takes the entry's path and damages it in place."""

    def truncate(path: Path) -> None:
        path.write_bytes(path.read_bytes()[:-7])

    def zero(path: Path) -> None:
        path.write_bytes(bytes(path.stat().st_size))

    def flip(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[-5] ^= 0x40  # one pixel bit: header and size stay right, only the checksum can tell
        path.write_bytes(bytes(data))

    def float_npy(path: Path) -> None:
        with path.open("wb") as handle:
            np.save(handle, np.ones((6, 16, 16), np.float32))

    def object_npy(path: Path) -> None:
        with path.open("wb") as handle:
            np.save(handle, np.array([{"a": 1}], dtype=object), allow_pickle=True)

    def empty(path: Path) -> None:
        path.write_bytes(b"")

    return {
        "truncated": truncate,
        "zeroed": zero,
        "byte-flipped": flip,
        "float array": float_npy,
        "object array": object_npy,
        "zero bytes": empty,
    }


@pytest.mark.parametrize("damage", list(_corruptions()))
def test_a_corrupt_entry_is_rebuilt_from_its_source_never_used(tmp_path: Path, damage: str) -> None:
    clip = write_clip(tmp_path / "a.gif", seed=0)
    expected = PREP.load(clip)
    entry = ScanCache(tmp_path / "cache", PREP).ensure(clip)[0]
    _corruptions()[damage](entry)
    cache = ScanCache(tmp_path / "cache", PREP)
    assert cache.ensure(clip) == (entry, "rebuilt")
    assert (cache.decode_count, cache.rebuilt_count) == (1, 1)
    np.testing.assert_array_equal(cache.get(clip), expected)
    assert ScanCache(tmp_path / "cache", PREP).ensure(clip)[1] == "reused"  # the rebuilt entry is sound


def test_an_entry_copied_from_another_scan_is_rebuilt(tmp_path: Path) -> None:
    first, second = write_clip(tmp_path / "a.gif", seed=0), write_clip(tmp_path / "b.gif", seed=1)
    cache = ScanCache(tmp_path / "cache", PREP)
    entry_a, entry_b = cache.ensure(first)[0], cache.ensure(second)[0]
    entry_a.write_bytes(entry_b.read_bytes())  # a sound entry, but of the other scan
    fresh = ScanCache(tmp_path / "cache", PREP)
    np.testing.assert_array_equal(fresh.get(first), PREP.load(first))
    assert fresh.rebuilt_count == 1


def test_an_instance_checks_an_entry_again_once_the_file_changes(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "a.gif", seed=0)
    cache = ScanCache(tmp_path / "cache", PREP)
    entry = cache.ensure(clip)[0]
    cache.get(clip)  # checked once: later reads of the same file only stat it
    _corruptions()["byte-flipped"](entry)
    np.testing.assert_array_equal(cache.get(clip), PREP.load(clip))
    assert cache.rebuilt_count == 1


def test_build_cache_counts_corrupt_entries_as_rebuilt(tmp_path: Path) -> None:
    cfg = DataConfig(size=16, max_cached_frames=4)
    manifest = _manifest(tmp_path, bad=False)
    assert build_cache(manifest, cfg, workers=0).built == 3
    entries = sorted(default_cache_root(manifest, None).glob("*.lcache"))
    _corruptions()["zeroed"](entries[0])
    _corruptions()["truncated"](entries[1])
    report = build_cache(manifest, cfg, workers=0)
    assert (report.built, report.reused, report.rebuilt, report.skipped) == (0, 1, 2, [])
    assert build_cache(manifest, cfg, workers=0).reused == 3


def test_a_corrupt_entry_of_a_vanished_source_is_skipped_with_skip_bad(tmp_path: Path) -> None:
    cfg = DataConfig(size=16, max_cached_frames=4)
    manifest = _manifest(tmp_path, bad=False)
    build_cache(manifest, cfg, workers=0)
    source = manifest.records[0].path
    entry = ScanCache(default_cache_root(manifest, None), Preprocessor.from_config(cfg)).path_for(source)
    stat = source.stat()
    source.write_bytes(b"GIF89a broken")  # the source now fails to decode, with its old size and mtime
    os.truncate(source, stat.st_size)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # its ctime moved, so it no longer passes for the file the entry was built from (issue 21)
    assert ScanCache(entry.parent, Preprocessor.from_config(cfg)).path_for(source) != entry
    _corruptions()["zeroed"](entry)
    report = build_cache(manifest, cfg, workers=0, skip_bad=True)
    assert [scan_id for scan_id, _ in report.skipped] == ["s0"]
    assert (report.reused, report.rebuilt) == (2, 0)
    with pytest.raises(ScanReadError, match=r"clip0\.gif"):
        build_cache(manifest, cfg, workers=0)


def test_a_cache_dir_that_is_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    from learner.errors import OutputError

    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    manifest = _manifest(tmp_path, bad=False)
    with pytest.raises(OutputError, match=r"runtime\.cache_dir: .*cache is a file"):
        build_cache(manifest, DataConfig(size=16), workers=0, cache_dir=blocker)
    with pytest.raises(OutputError, match=r"/dev/null \(in /dev/null/cache\) is a file"):
        build_cache(manifest, DataConfig(size=16), workers=0, cache_dir=Path("/dev/null/cache"))


def test_two_same_size_files_swapped_with_their_mtimes_are_never_served_stale(tmp_path: Path) -> None:
    """As after extracting an archive over a folder: sizes and mtimes all as before, contents swapped."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    first, second = tmp_path / "a.nii", tmp_path / "b.nii"  # uncompressed: equal shapes, equal sizes
    for path in (first, second):
        nib.save(nib.Nifti1Image(rng.integers(0, 255, (12, 12, 6)).astype(np.uint8), np.eye(4)), path)
    assert first.stat().st_size == second.stat().st_size
    cache = ScanCache(tmp_path / "cache", PREP)
    old_first = np.array(cache.get(first))
    times = {p: (p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (first, second)}
    swap = tmp_path / "swap.nii"
    first.rename(swap)
    second.rename(first)
    swap.rename(second)
    for path, ns in times.items():
        os.utime(path, ns=ns)
    now_first = cache.get(first)
    assert not np.array_equal(now_first, old_first)
    np.testing.assert_array_equal(now_first, PREP.load(first))


def _freeze_stat(monkeypatch: pytest.MonkeyPatch, paths: list[Path]) -> None:
    """Make ``paths`` report the ``stat`` they have now, whatever is written to them later: a file system
    whose ctime is coarse (one kernel tick) or absent, where a same-size rewrite with its mtime restored
    leaves every field as it was."""
    frozen = {path: path.stat() for path in paths}
    real = Path.stat

    def stat(self: Path, *, follow_symlinks: bool = True) -> os.stat_result:
        return frozen.get(self) or real(self, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(Path, "stat", stat)


def test_a_rewrite_that_leaves_every_stat_field_as_it_was_is_never_served_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nibabel as nib

    rng = np.random.default_rng(0)
    scan, other = tmp_path / "a.nii", tmp_path / "b.nii"  # uncompressed: equal shapes, equal sizes
    for path in (scan, other):
        nib.save(nib.Nifti1Image(rng.integers(0, 255, (12, 12, 6)).astype(np.uint8), np.eye(4)), path)
    old = np.array(ScanCache(tmp_path / "cache", PREP).get(scan))
    _freeze_stat(monkeypatch, [scan])
    scan.write_bytes(other.read_bytes())  # in place: same inode, same size
    now = ScanCache(tmp_path / "cache", PREP).get(scan)  # a new process: no memory of the old content
    assert not np.array_equal(now, old)
    np.testing.assert_array_equal(now, PREP.load(other))


def test_two_frames_of_a_folder_swapped_under_frozen_stat_fields_are_never_served_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "clip"
    folder.mkdir()
    rng = np.random.default_rng(0)
    frames = [folder / f"frame_{n}.png" for n in (1, 2, 3)]
    for path in frames:  # random pixels of equal size: raw PNGs of equal length
        Image.fromarray(rng.integers(20, 235, (24, 24), dtype=np.uint8)).save(path, compress_level=0)
    assert len({path.stat().st_size for path in frames}) == 1
    old = np.array(ScanCache(tmp_path / "cache", PREP).get(folder))
    _freeze_stat(monkeypatch, frames)
    first, second = frames[0].read_bytes(), frames[1].read_bytes()
    frames[0].write_bytes(second)
    frames[1].write_bytes(first)
    now = ScanCache(tmp_path / "cache", PREP).get(folder)
    assert not np.array_equal(now, old)
    np.testing.assert_array_equal(now, PREP.load(folder))


def test_an_instance_hashes_a_source_once_while_its_stat_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from learner.data import cache as cache_module

    clip = write_clip(tmp_path / "a.gif", seed=0)
    hashed: list[Path] = []
    real = cache_module.content_digest
    monkeypatch.setattr(cache_module, "content_digest", lambda path: hashed.append(path) or real(path))
    cache = ScanCache(tmp_path / "cache", PREP)
    for _ in range(3):  # an epoch costs a stat per item, not a read of the source
        cache.get(clip)
    assert hashed == [clip]
    stat = clip.stat()
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    cache.get(clip)
    assert hashed == [clip, clip]


@pytest.fixture
def crc_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The byte count of every zlib.crc32 call from here on, in a process that has checked no entry yet."""
    monkeypatch.setattr(cache_entry, "_VERIFIED", {})
    calls: list[int] = []
    real = zlib.crc32

    def crc32(data: bytes | memoryview, value: int = 0) -> int:
        calls.append(memoryview(data).nbytes)
        return real(data, value)

    monkeypatch.setattr(zlib, "crc32", crc32)
    return calls


def _replace(path: Path, data: bytes) -> None:
    """``data`` written to a new file renamed over ``path`` (a new inode), as the cache's own writes are."""
    tmp = path.with_suffix(".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _flipped(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[-5] ^= 0x40  # one pixel bit: header and size stay right, only the checksum can tell
    return bytes(damaged)


def test_a_second_read_of_an_unchanged_entry_computes_no_checksum(
    tmp_path: Path, crc_calls: list[int]
) -> None:
    clip = write_clip(tmp_path / "a.gif", seed=0)
    ScanCache(tmp_path / "cache", PREP).ensure(clip)
    assert len(crc_calls) == 2  # written, then read back and checked once
    crc_calls.clear()
    for cache in (ScanCache(tmp_path / "cache", PREP), ScanCache(tmp_path / "cache", PREP)):
        for _ in range(3):  # any instance of the process: the check is the process's
            np.testing.assert_array_equal(cache.get(clip), PREP.load(clip))
    assert crc_calls == []


def test_a_rewritten_entry_is_checked_again_and_a_corrupt_one_still_fails(
    tmp_path: Path, crc_calls: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    clip = write_clip(tmp_path / "a.gif", seed=0)
    cache = ScanCache(tmp_path / "cache", PREP)
    entry = cache.ensure(clip)[0]
    sound = entry.read_bytes()
    crc_calls.clear()
    _replace(entry, sound)  # the same bytes in another file: another identity
    np.testing.assert_array_equal(cache.get(clip), PREP.load(clip))
    cache.get(clip)
    assert len(crc_calls) == 1  # checked again, once
    corrupt = "checksum mismatch: the pixels changed after writing"
    _replace(entry, _flipped(sound))  # a checked entry replaced by a corrupt one
    with caplog.at_level(logging.WARNING, logger="learner.data.cache"):
        assert cache.ensure(clip) == (entry, "rebuilt")
    assert corrupt in caplog.text
    caplog.clear()
    entry.write_bytes(_flipped(entry.read_bytes()))  # in place, then read by a process that never checked it
    cache_entry._VERIFIED.clear()
    with caplog.at_level(logging.WARNING, logger="learner.data.cache"):
        assert ScanCache(tmp_path / "cache", PREP).ensure(clip) == (entry, "rebuilt")
    assert corrupt in caplog.text
    np.testing.assert_array_equal(cache.get(clip), PREP.load(clip))


class _CheckedReads(Dataset[tuple[int, int]]):
    """Item i: scan i read through a new ScanCache at ``root`` (the record is the process's, not an
    instance's), then (i, the zlib.crc32 calls of this process so far)."""

    def __init__(self, root: Path, clips: list[Path], calls: list[int]) -> None:
        self.root, self.clips, self.calls = root, clips, calls

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[int, int]:
        ScanCache(self.root, PREP).get(self.clips[index])
        return index, len(self.calls)


def test_a_forked_loader_worker_does_not_check_what_its_parent_checked(
    tmp_path: Path, crc_calls: list[int]
) -> None:
    clips = [write_clip(tmp_path / f"{i}.gif", seed=i) for i in range(3)]
    cache = ScanCache(tmp_path / "cache", PREP)
    entries = [cache.ensure(clip)[0] for clip in clips]  # the parent checks every entry it builds
    del cache_entry._VERIFIED[entries[2]]  # but this one: the worker must check it itself
    crc_calls.clear()
    reads = _CheckedReads(cache.root, clips, crc_calls)
    loader = DataLoader(reads, batch_size=None, num_workers=1, multiprocessing_context="fork")
    seen = [(int(index), int(calls)) for index, calls in loader]
    assert seen == [(0, 0), (1, 0), (2, 1)]  # the worker's one check: the entry its parent never checked
    assert crc_calls == []  # and none in the parent


def test_a_spawned_worker_is_handed_the_entries_its_parent_checked(
    tmp_path: Path, crc_calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = write_clip(tmp_path / "a.gif", seed=0)
    cache = ScanCache(tmp_path / "cache", PREP)
    cache.ensure(clip)
    shipped = pickle.dumps(cache)  # what a spawned DataLoader worker receives with its dataset
    monkeypatch.setattr(cache_entry, "_VERIFIED", {})  # the spawned process: nothing checked yet
    crc_calls.clear()
    np.testing.assert_array_equal(pickle.loads(shipped).get(clip), PREP.load(clip))
    assert crc_calls == []
