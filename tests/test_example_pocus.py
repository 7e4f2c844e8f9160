"""examples/pocus/run.py, manifest part, on the real POCUS metadata (../shared/data/pocus, see its NOTICE.md):
every row kept or skipped with a reason, the counts, same-patient test pairs, and no clip copied.

Skipped when the folder is absent; ``LEARNER_POCUS_DIR`` points elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from learner.data.manifest import load_manifest
from learner.data.pairs import intra_patient_pairs
from learner.data.readers import READERS, suffix_of

REPO = Path(__file__).resolve().parents[1]
POCUS = Path(os.environ.get("LEARNER_POCUS_DIR", REPO / ".." / "shared" / "data" / "pocus"))
METADATA = POCUS / "dataset_metadata.csv"

pytestmark = [
    pytest.mark.pocus,
    pytest.mark.skipif(not METADATA.is_file(), reason=f"no POCUS metadata at {METADATA}"),
]


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pocus_example", REPO / "examples" / "pocus" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_row_is_kept_or_skipped_with_a_reason(example: ModuleType) -> None:
    built = example.build_manifest(METADATA)
    assert built.n_rows == 374
    assert len(built.frame) + len(built.skipped) == built.n_rows
    reasons = pd.Series([s.reason.split(":")[0] for s in built.skipped]).value_counts().to_dict()
    assert reasons == {
        "no Lung Severity Score": 238,
        "no clip of that name in pocus_videos/": 53,
        "no Patient ID / Name": 1,
    }
    frame = built.frame
    assert len(frame) == 82
    assert frame["scan_id"].is_unique
    assert frame["patient_id"].nunique() == 36
    clips = frame.groupby("patient_id").size()
    assert int((clips >= 2).sum()) == 12
    assert frame["score"].value_counts().to_dict() == {0: 48, 1: 16, 2: 12, 3: 6}
    day = frame[frame["scan_id"].str.startswith("Cov-Atlas-Day+")]  # the one four-day series
    assert day["visit"].tolist() == [1, 2, 3, 4]
    assert day["score"].tolist() == [0, 1, 1, 3]


def test_the_manifest_reads_the_clips_in_place(example: ModuleType, tmp_path: Path) -> None:
    videos = POCUS / "pocus_videos"
    before = sorted(p.relative_to(videos) for p in videos.rglob("*"))
    built = example.build_manifest(METADATA)
    manifest = load_manifest(example.write_split_manifest(built, tmp_path), example.SCALE)
    assert sorted(p.relative_to(videos) for p in videos.rglob("*")) == before
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.name for p in written] == ["manifest.csv"]
    assert not [p for p in written if suffix_of(p) in READERS]
    for record in manifest.records:
        assert record.path.is_relative_to(videos.resolve())
        assert record.path.is_file()

    splits = {r.patient_id: r.split for r in manifest.records}
    assert pd.Series(splits).value_counts().to_dict() == {"train": 22, "val": 7, "test": 7}
    test = [r for r in manifest.records if r.split == "test"]
    pairs, no_pair = intra_patient_pairs(test, example.SCALE, "all", match_site=False)
    assert not no_pair  # every test patient has ≥ 2 clips, so same-patient pairs
    assert (pairs["first_patient_id"] == pairs["second_patient_id"]).all()
    clips = pd.Series([r.patient_id for r in test]).value_counts()
    assert len(pairs) == int((clips * (clips - 1) // 2).sum())
    assert example.PAIR_OVERRIDES == ["data.pairs.intra=all", "data.pairs.match_site=false"]


@pytest.mark.parametrize("videos", ["absent", "empty"])
def test_metadata_without_its_clips_is_one_line_and_writes_nothing(
    example: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str], videos: str
) -> None:
    metadata = tmp_path / "dataset_metadata.csv"
    metadata.write_bytes(METADATA.read_bytes())
    if videos == "empty":
        (tmp_path / "pocus_videos").mkdir()
    with pytest.raises(SystemExit) as stopped:
        example.main(["--metadata", str(metadata), "--manifest-only", "--out", str(tmp_path / "out")])
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    rows = len(pd.read_csv(METADATA))
    expected = {
        "absent": f"error: {tmp_path / 'pocus_videos'}: no such folder (the clips, pocus_videos/ beside ",
        "empty": f"error: {metadata}: none of its {rows} rows has a clip to keep (row 1: ",
    }
    assert line.startswith(expected[videos]), line
    assert not (tmp_path / "out").exists()
