"""Real lung-ultrasound files (../shared/data/pocus, see its NOTICE.md): every clip and still decodes.

Skipped when the folder is absent; ``LEARNER_POCUS_DIR`` points elsewhere. Only the first 8 frames of each
video are decoded to keep the test short.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from learner.data.preprocess import Preprocessor
from learner.data.readers import READERS, Scan, read_scan, suffix_of

POCUS = Path(
    os.environ.get(
        "LEARNER_POCUS_DIR", Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "pocus"
    )
)
MEDIA = (
    sorted(p for p in POCUS.rglob("*") if p.is_file() and suffix_of(p) in READERS) if POCUS.is_dir() else []
)

pytestmark = [
    pytest.mark.pocus,
    pytest.mark.skipif(not MEDIA, reason=f"no POCUS clips at {POCUS}"),
]


@pytest.mark.slow  # decodes every real clip (12 s): the full suite runs it
def test_every_pocus_clip_and_image_decodes_and_preprocesses() -> None:
    preprocess = Preprocessor(size=64, crop="fan")
    suffixes: set[str] = set()
    for path in MEDIA:
        scan = read_scan(path, max_frames=8)
        frames = scan.frames
        assert frames.dtype == np.uint8, path.name
        assert 1 <= len(frames) <= 8, path.name
        assert frames.ndim == 3 or frames.shape[-1] == 3, path.name
        assert min(frames.shape[1:3]) >= 64, path.name  # real clips, not a decoder stub
        assert frames.std() > 1, path.name  # not a blank decode
        out = preprocess(Scan(frames[:4], scan.meta))  # 4 frames: enough motion for the fan crop
        assert out.shape == (min(len(frames), 4), 64, 64), path.name
        assert out.max() > 0, path.name
        suffixes.add(suffix_of(path))
    assert {".mp4", ".avi", ".mov", ".mpeg", ".gif", ".jpg", ".png"} <= suffixes  # the formats the folder has
