"""Fuzzing (hypothesis): random corruptions of manifest text, of scan files (MP4, GIF, PNG) and of scan cache
entries give a clean error or a correct result, never a crash or a hang.

* a corrupted manifest: ``learner data check`` exits 0 with exactly the scans :func:`load_manifest` reads,
  or 2 with one ``error:`` line and no traceback;
* a corrupted config file (YAML, with ``base:`` and an ``experiment:`` grid): ``learner config show`` exits 0
  with the config :func:`load_experiment` reads, or 2 with one ``error:`` line and no traceback;
* a corrupted scan: :meth:`ScanCache.get` returns a ``(T, S, S)`` uint8 array or raises ``ScanReadError``;
* a corrupted cache entry: :meth:`ScanCache.get` returns exactly the scan's preprocessing (a damaged entry
  is rebuilt, never used).

Every case runs under a deadline (SIGALRM), so a hang fails. CI runs a few hundred cases in all;
``pytest --fuzz-long tests/reliability/test_fuzz.py`` runs 22 times as many (over 10,000).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from bad_inputs import assert_refused, good_rows, still, write_manifest
from deadlines import deadline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from learner.config import load_experiment
from learner.config_reference import commented_yaml
from learner.data.cache import ScanCache
from learner.data.manifest import load_manifest
from learner.data.preprocess import Preprocessor
from learner.data.readers import read_scan
from learner.data.scales import get_scale
from learner.errors import LearnerError, ScanReadError

CASE_DEADLINE_S = 10
PREP = Preprocessor(size=16, crop="fan", max_cached_frames=8)
EXAMPLES = {"manifest": 150, "config": 80, "scan": 120, "cache": 120}  # CI: 470 cases, ~30 s on one core
LONG = 22  # --fuzz-long: 10,340 cases

Cli = Callable[[list[str]], tuple[int, str, str]]


@pytest.fixture
def examples(request: pytest.FixtureRequest) -> Callable[[str], int]:
    long = bool(request.config.getoption("--fuzz-long"))
    return lambda kind: EXAMPLES[kind] * (LONG if long else 1)


@st.composite
def corrupted(draw: st.DrawFn, data: bytes, alphabet: bytes = b"") -> bytes:
    """``data`` after 1-4 random edits: flip a byte, delete, insert or duplicate a span, truncate."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        span = draw(st.integers(1, 64))
        if kind == "flip" and out:
            out[at] ^= draw(st.integers(1, 255))
        elif kind == "delete":
            del out[at : at + span]
        elif kind == "insert":
            pool = st.sampled_from(list(alphabet)) if alphabet else st.integers(0, 255)
            out[at:at] = bytes(draw(st.lists(pool, min_size=1, max_size=8)))
        elif kind == "truncate":
            del out[at:]
        elif kind == "duplicate":
            out[at:at] = out[at : at + span]
    return bytes(out)


MANIFEST_ALPHABET = b',;\t"\n\r \x00\xff-.0123456789abcdefgpsv_/e+N'


@pytest.mark.slow  # the full suite (CI) runs it; the fast lane keeps the scan and cache fuzzing
def test_fuzzed_manifests_give_a_clean_error_or_the_right_scans(
    tmp_path: Path, cli: Cli, examples: Callable[[str], int]
) -> None:
    clean = write_manifest(tmp_path / "clean.csv", good_rows(tmp_path)).read_bytes()
    target = tmp_path / "fuzzed.csv"
    outcomes = {0: 0, 2: 0}

    @settings(max_examples=examples("manifest"), deadline=None, database=None)
    @given(text=corrupted(clean, MANIFEST_ALPHABET))
    def case(text: bytes) -> None:
        target.write_bytes(text)
        with deadline(CASE_DEADLINE_S):
            code, out, err = cli(["data", "check", str(target), "--set", "data.split.test_min_visits=1"])
        if code == 0:
            scans = len(load_manifest(target, get_scale("sf")).records)
            assert f"no problems found ({scans} scans, scale sf)" in out
        else:
            assert_refused(code, out, err, "")
        outcomes[code] += 1

    case()
    assert outcomes[2] > 0  # the corruptions do reach the checks


CONFIG_TEXT = b"""base: demo
seed: 3
data:
  size: 48
  pairs: {per_scan: 2.0, class_mix: [0.1, 0.8, 0.1]}
optim: {lr: 3.0e-4, epochs: 2}
loss: {name: mse+wcl, lam: 0.5}
experiment:
  losses: [mse, mse+cl]
  seeds: [0, 1]
  settings: {small: {data.size: 32}}
  init: vicreg
"""
CONFIG_ALPHABET = b"{}[]:,&*!|>-?#%@'\"\n\t 0123456789.eE+_abcdelmnoprstyz~"


@pytest.mark.slow
def test_fuzzed_config_files_give_a_clean_error_or_the_config(
    tmp_path: Path, cli: Cli, examples: Callable[[str], int]
) -> None:
    target = tmp_path / "fuzzed.yaml"
    outcomes = {0: 0, 2: 0}

    @settings(max_examples=examples("config"), deadline=None, database=None)
    @given(text=corrupted(CONFIG_TEXT, CONFIG_ALPHABET))
    def case(text: bytes) -> None:
        target.write_bytes(text)
        with deadline(CASE_DEADLINE_S):
            code, out, err = cli(["config", "show", "--config", str(target)])
        if code == 0:  # the config as read, with its grid when the file has one
            shown, experiment = yaml.safe_load(out), load_experiment(target)
            expected = commented_yaml(experiment if "experiment" in shown else experiment.config)
            assert shown == yaml.safe_load(expected)
        else:
            assert_refused(code, out, err, "")
        outcomes[code] += 1

    case()
    assert outcomes[2] > 0  # the corruptions do reach the checks


def test_a_video_stream_without_a_decoder_is_a_clean_error() -> None:
    """Found by ``--fuzz-long``: an MP4 whose stream header FFmpeg cannot open a decoder for (the file is that
    case, kept as found) raised AttributeError instead of ScanReadError."""
    with pytest.raises(ScanReadError, match="no decoder"):
        read_scan(Path(__file__).with_name("no_decoder.mp4"))


def _mp4(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for level in (40, 120, 200, 90):
            frame = np.full((32, 32, 3), level, np.uint8)
            frame[4:12, 4:12] = 255 - level
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _gif(path: Path) -> Path:
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(20, 235, (24, 24), dtype=np.uint8)) for _ in range(4)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


SOURCES: dict[str, Callable[[Path], Path]] = {".mp4": _mp4, ".gif": _gif, ".png": still}


@pytest.mark.parametrize("suffix", list(SOURCES))
def test_fuzzed_scans_give_a_clean_error_or_frames(
    tmp_path: Path, suffix: str, examples: Callable[[str], int]
) -> None:
    clean = SOURCES[suffix](tmp_path / f"clean{suffix}").read_bytes()
    counter = iter(range(10**9))

    @settings(
        max_examples=examples("scan") // len(SOURCES),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(data=corrupted(clean))
    def case(data: bytes) -> None:
        scan = tmp_path / f"scan{next(counter)}{suffix}"  # a new name: a new cache entry each time
        scan.write_bytes(data)
        cache = ScanCache(tmp_path / "cache", PREP)
        with deadline(CASE_DEADLINE_S):
            try:
                frames = cache.get(scan)
            except ScanReadError as exc:
                errors.append(str(exc))
                return
        assert frames.dtype == np.uint8
        assert frames.shape[1:] == (16, 16)
        assert 1 <= len(frames) <= PREP.max_cached_frames

    errors: list[str] = []

    case()
    assert all("scan" in error and "\n" not in error for error in errors)  # each names its file


def test_fuzzed_cache_entries_are_rebuilt_never_used(tmp_path: Path, examples: Callable[[str], int]) -> None:
    clip = _gif(tmp_path / "clip.gif")
    expected = PREP.load(clip)
    entry = ScanCache(tmp_path / "cache", PREP).ensure(clip)[0]
    clean = entry.read_bytes()

    @settings(max_examples=examples("cache"), deadline=None, database=None)
    @given(data=corrupted(clean))
    def case(data: bytes) -> None:
        entry.write_bytes(data)
        cache = ScanCache(tmp_path / "cache", PREP)
        with deadline(CASE_DEADLINE_S):
            got = cache.get(clip)
        np.testing.assert_array_equal(got, expected)  # rebuilt, or the change was harmless (header spacing)
        rebuilt.append(cache.rebuilt_count)

    rebuilt: list[int] = []
    case()
    assert set(rebuilt) <= {0, 1}
    assert sum(rebuilt) > 0.9 * len(rebuilt)


def test_the_cli_never_crashes_on_a_fuzzed_cache(tmp_path: Path, cli: Cli) -> None:
    """One pass through ``learner data cache`` with every entry damaged a different way."""
    manifest = write_manifest(tmp_path / "m.csv", good_rows(tmp_path))
    argv = ["data", "cache", str(manifest), "--workers", "0"]
    assert cli(argv)[0] == 0
    rng = np.random.default_rng(0)
    for entry in sorted((tmp_path / ".learner-cache").iterdir()):
        data = bytearray(entry.read_bytes())
        data[int(rng.integers(len(data)))] ^= 0xFF
        entry.write_bytes(bytes(data))
    code, out, err = cli(argv)
    assert (code, "Traceback" in err) == (0, False)
    assert "0 built, 0 reused, 0 skipped, 8 rebuilt (corrupt)" in out
    (tmp_path / "p0_v1.png").unlink()
    with pytest.raises(LearnerError, match=r"p0_v1\.png"):  # a vanished source is an error, not an entry
        ScanCache(tmp_path / ".learner-cache", PREP).get(tmp_path / "p0_v1.png")
