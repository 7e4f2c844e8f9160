"""`learner data check / split / adni` end to end through the console-script entry point."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from learner.data.manifest import load_manifest, validate_manifest
from learner.data.scales import get_scale

SF = get_scale("sf")


# Test patients' scores per visit (both sites alike): p6 rises a bin then falls one, p7 holds then falls.
TEST_SCORES = {"p6": (200.0, 300.0, 250.0), "p7": (450.0, 440.0, 100.0)}


def _cohort(tmp_path: Path, split: bool = True) -> Path:
    """p0–p3 train, p4–p5 val (one scan each, S/F 120 + 40·p); p6–p7 test (3 visits × 2 sites)."""
    rows = []
    splits = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    for p in range(8):
        scores = TEST_SCORES.get(f"p{p}", (120.0 + 40.0 * p,))
        for v, score in enumerate(scores):
            for site in ("L1", "R1") if len(scores) > 1 else ("L1",):
                scan = f"p{p}_v{v}_{site}"
                (tmp_path / f"{scan}.mp4").write_bytes(b"not decoded")  # data check opens, never decodes
                rows.append(
                    {
                        "patient_id": f"p{p}",
                        "scan_id": scan,
                        "path": f"{scan}.mp4",
                        "visit": str(v + 1),
                        "score": str(score),
                        "site": site,
                        "split": splits[p],
                    }
                )
    frame = pd.DataFrame(rows)
    if not split:
        frame = frame.drop(columns=["split"])
    path = tmp_path / "manifest.csv"
    frame.to_csv(path, index=False)
    return path


def _row(text: str, *cells: object) -> bool:
    """Whether a table row holds ``cells`` in order (box-drawing characters and spaces between them)."""
    pattern = r"[\s│┃|]+".join(re.escape(str(c)) for c in cells)
    return re.search(rf"(?<![^\s│┃|]){pattern}(?![^\s│┃|])", text) is not None


def test_check_clean_manifest(tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    code, out, _ = cli(["data", "check", str(_cohort(tmp_path))])
    assert code == 0
    assert "no problems found (18 scans, scale sf)" in out
    assert "No complete split column" not in out
    # split, patients, scans, visits
    assert _row(out, "train", 4, 4, 4)
    assert _row(out, "val", 2, 2, 2)
    assert _row(out, "test", 2, 12, 6)
    # split, pairs, kind, deteriorated, stable, improved. Train: 3 per scan = 12 = all ordered pairs of
    # 4 one-scan patients in bins (0, 0, 1, 1): 4 of each class. Val: 6 asked, only 2 exist (both stable).
    # Test: consecutive same-site pairs, 2 per site: p6 improved + deteriorated, p7 stable + deteriorated.
    assert _row(out, "train", 12, "inter, seed 0", 4, 4, 4)
    assert _row(out, "val", 2, "inter, seed 1", 0, 2, 0)
    assert _row(out, "test", 8, "intra, consecutive", 4, 2, 2)
    assert "warning" not in out


def test_check_warns_when_the_scores_do_not_fill_the_scale(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    """A 0–3 severity score checked without --scale (the sf default) is valid S/F, but every pair would be
    'stable': the check says so in one line per sign, and names the registered scales that fit better."""
    path = _cohort(tmp_path)
    frame = pd.read_csv(path, dtype=str)
    frame["score"] = [str(i % 4) for i in range(len(frame))]
    frame.to_csv(path, index=False)
    code, out, _ = cli(["data", "check", str(path)])
    assert code == 0
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    hint = "; is the scale right? (check --scale or data.scale, or use a custom scale)"
    assert warnings == [
        "warning: the scores (0–3) span 1% of the sf range [0, 500]: most pairs will look stable" + hint,
        "warning: every score sits in the lowest tenth of the sf range" + hint,
    ]
    frame["score"] = [str(20 + i % 11) for i in range(len(frame))]  # MMSE-like, read as S/F
    frame.to_csv(path, index=False)
    _, out, _ = cli(["data", "check", str(path)])
    assert "the scores fit mmse, mmse_binned better" in out
    _, out, _ = cli(["data", "check", str(path), "--scale", "mmse"])
    assert "warning: the scores" not in out


def test_check_without_split_column_shows_the_split_it_would_make(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    argv = ["data", "check", str(_cohort(tmp_path, split=False)), "--set", "data.split.stratify=false"]
    code, out, _ = cli(argv)
    assert code == 0
    assert "No complete split column" in out
    assert _row(out, "train", 4)  # 2:1:1 of 8 patients
    assert _row(out, "val", 2)
    assert _row(out, "test", 2)


def test_check_broken_manifest_lists_every_problem(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    path = _cohort(tmp_path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[0, "score"] = "700"
    frame.loc[1, "visit"] = "soon"
    frame.loc[2, "scan_id"] = frame.loc[3, "scan_id"]
    frame.loc[5, "path"] = "missing.mp4"
    frame.loc[8, "split"] = "train"  # p6 is test on its other rows
    frame.to_csv(path, index=False)
    expected = [str(p) for p in validate_manifest(frame, SF, tmp_path)]
    code, out, err = cli(["data", "check", str(path)])
    assert code == 2
    assert f"{len(expected)} problem(s)" in out
    for problem in expected:
        assert problem in out
    for row, column in [(1, "score"), (2, "visit"), (4, "scan_id"), (6, "path"), (9, "split")]:
        assert f"row {row}, column '{column}'" in out
    assert "1 of 18 files missing" in out
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1


def test_check_missing_manifest_is_one_line_error(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    code, _, err = cli(["data", "check", str(tmp_path / "nope.csv")])
    assert code == 2
    assert err.strip() == f"error: manifest not found: {tmp_path / 'nope.csv'}"


def test_split_writes_a_reusable_split(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    source = _cohort(tmp_path, split=False)
    out = tmp_path / "split" / "manifest.split.csv"
    argv = ["data", "split", str(source), "--out", str(out), "--counts", "5,1,2", "--seed", "4"]
    code, printed, _ = cli(argv)
    assert code == 0
    assert f"wrote {out}" in printed
    manifest = load_manifest(out, SF)
    mapping = {r.patient_id: r.split for r in manifest.records}
    assert sorted(mapping.values()) == ["test", "test", "train", "train", "train", "train", "train", "val"]
    assert {p for p, s in mapping.items() if s == "test"} == {"p6", "p7"}  # the only patients with 2+ visits
    first = out.read_text()
    assert cli(argv)[0] == 0
    assert out.read_text() == first  # deterministic
    code, printed, _ = cli(["data", "check", str(out)])
    assert code == 0
    assert "No complete split column" not in printed


def test_split_rejects_ratios_with_counts(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    argv = ["data", "split", str(_cohort(tmp_path)), "--out", str(tmp_path / "o.csv")]
    code, _, err = cli([*argv, "--ratios", "2,1,1", "--counts", "4,2,2"])
    assert code == 2
    assert "not both" in err
    code, _, err = cli([*argv, "--ratios", "2,1"])
    assert code == 2
    assert "--ratios takes three" in err
    assert not (tmp_path / "o.csv").exists()


def test_adni_command_prints_the_report(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    pd.DataFrame(
        {
            "RID": ["1", "1", "2"],
            "PTID": ["011_S_0001", "011_S_0001", "011_S_0002"],
            "VISCODE": ["bl", "m06", "bl"],
            "EXAMDATE": ["2006-01-01", "2006-07-01", "2006-02-01"],
            "MMSE": ["29", "28", ""],
            "DX": ["CN", "CN", "AD"],
            "IMAGEUID": ["101", "102", "103"],
        }
    ).to_csv(tmp_path / "ADNIMERGE.csv", index=False)
    images = tmp_path / "images"
    images.mkdir()
    for uid in ("101", "102", "103"):
        (images / f"ADNI_011_S_000x_MR_phantom_I{uid}.nii.gz").touch()
    out = tmp_path / "adni.csv"
    argv = [
        "data",
        "adni",
        "--adnimerge",
        str(tmp_path / "ADNIMERGE.csv"),
        "--images",
        str(images),
        "--out",
        str(out),
    ]
    code, printed, _ = cli(argv)
    assert code == 0
    assert _row(printed, "scans written", 2)
    assert _row(printed, "dropped: no MMSE", 1)
    assert len(load_manifest(out, get_scale("mmse")).records) == 2


DATES = {"bl": "2006-01-02", "m06": "2006-07-03", "m12": "2007-01-08", "m18": "2007-07-02"}


def _adni_cohort(tmp_path: Path) -> list[str]:
    """A 1-visit, a 2-visit and a 4-visit patient; the `data adni` arguments that convert them."""
    visits = {"011_S_0001": ["bl"], "011_S_0002": ["bl", "m06"], "011_S_0004": ["bl", "m06", "m12", "m18"]}
    rows = [(ptid, code, f"{ptid[-1]}{k}") for ptid, codes in visits.items() for k, code in enumerate(codes)]
    images = tmp_path / "images"
    images.mkdir()
    for _, _, uid in rows:
        (images / f"ADNI_x_MR_phantom_I{uid}.nii.gz").touch()
    pd.DataFrame(
        {
            "RID": [ptid[-1] for ptid, _, _ in rows],
            "PTID": [ptid for ptid, _, _ in rows],
            "VISCODE": [code for _, code, _ in rows],
            "EXAMDATE": [DATES[code] for _, code, _ in rows],
            "MMSE": ["27"] * len(rows),
            "DX": ["MCI"] * len(rows),
            "IMAGEUID": [uid for _, _, uid in rows],
        }
    ).to_csv(tmp_path / "ADNIMERGE.csv", index=False)
    table, out = str(tmp_path / "ADNIMERGE.csv"), str(tmp_path / "adni.csv")
    return ["data", "adni", "--adnimerge", table, "--images", str(images), "-o", out]


def test_adni_command_selects_the_papers_cohort_and_says_what_it_dropped(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    argv = _adni_cohort(tmp_path)
    code, printed, _ = cli([*argv, "--min-visits", "2", "--max-visits", "3"])
    assert code == 0, printed
    assert _row(printed, "scans written", 5)
    assert _row(printed, "patients", 2)
    assert _row(printed, "dropped: fewer than 2 visits", 1)
    assert _row(printed, "patients dropped: fewer than 2 visits", 1)
    assert _row(printed, "dropped: after the first 3 visits", 1)
    records = load_manifest(tmp_path / "adni.csv", get_scale("mmse")).records
    assert [r.scan_id for r in records] == [
        "011_S_0002_bl", "011_S_0002_m06", "011_S_0004_bl", "011_S_0004_m06", "011_S_0004_m12",
    ]  # fmt: skip
    code, printed, _ = cli(argv)  # the default keeps every patient and visit
    assert code == 0
    assert _row(printed, "scans written", 7)
    assert "fewer than" not in printed


def test_adni_command_refuses_bad_visit_limits_in_one_line(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    argv = _adni_cohort(tmp_path)
    for extra, message in [
        (["--min-visits", "0"], "--min-visits must be at least 1, got 0"),
        (["--min-visits", "-2"], "--min-visits must be at least 1, got -2"),
        (["--max-visits", "0"], "--max-visits must be at least 1, got 0"),
        (["--min-visits", "3", "--max-visits", "2"], "--min-visits (3) must not exceed --max-visits (2)"),
    ]:
        code, _, err = cli([*argv, *extra])
        assert code == 2, extra
        assert err.strip() == f"error: {message}", err
    assert not (tmp_path / "adni.csv").exists()


def test_check_help_reads_well(cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    code, out, _ = cli(["data", "check", "--help"])
    assert code == 0
    for option in ("--scale", "--config", "--set", "MANIFEST"):
        assert option in out.replace("{manifest}", "MANIFEST")
    assert "Exit code 0 when the manifest is clean, 2 when it is not." in " ".join(out.split())


def test_check_of_a_clean_manifest_that_the_default_split_cannot_fit_exits_0(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    frame = pd.read_csv(_cohort(tmp_path, split=False))
    single_visit = frame[frame["visit"] == 1]  # nobody has the two visits a test patient needs
    path = tmp_path / "single.csv"
    single_visit.to_csv(path, index=False)
    code, out, _ = cli(["data", "check", str(path)])
    assert code == 0
    assert "warning: no split shown" in out
    assert "no problems found" in out
    assert re.search(rf"all\s+│\s+8\s+│\s+{len(single_visit)}\s", out)


def test_check_warns_on_the_terminal_about_test_patients_without_pairs(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    frame = pd.read_csv(_cohort(tmp_path))
    lonely = frame[~((frame["patient_id"] == "p7") & (frame["visit"] > 1))]  # p7 keeps one visit
    path = tmp_path / "lonely.csv"
    lonely.to_csv(path, index=False)
    code, _, err = cli(["data", "check", str(path), "--set", "data.split.test_min_visits=1"])
    assert code == 0
    assert "warning: 1 test patient(s) yield no intra-patient pair: p7" in err


def test_cache_builds_then_reuses_and_reports_every_bad_scan(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    from learner.data.phantom.lus import generate_lus_cohort

    manifest = generate_lus_cohort(tmp_path / "lus", patients=(2, 1, 1), frames=4, size=32, workers=1)
    scans = len(pd.read_csv(manifest))
    argv = ["data", "cache", str(manifest), "--workers", "1"]
    code, out, _ = cli(argv)
    assert code == 0
    assert f"cache: {scans} built, 0 reused, 0 skipped" in out
    code, out, _ = cli(argv)
    assert f"cache: 0 built, {scans} reused, 0 skipped" in out

    frame = pd.read_csv(manifest)
    broken = frame.iloc[0]
    (manifest.parent / broken["path"]).write_bytes(b"not a video")
    code, _, err = cli(argv)
    assert code == 2
    assert err.startswith("error: ")
    assert broken["path"] in err
    code, out, _ = cli([*argv, "--skip-bad"])
    assert code == 0
    assert f"cache: 0 built, {scans - 1} reused, 1 skipped" in out
    assert f"skipped {broken['scan_id']}: " in out


def test_split_ratios_over_a_config_with_counts_replace_them(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    """The lus preset sizes its split by counts (160, 44, 17): ratios given over it were dropped without a
    word (``--set data.split.ratios``) or refused ("set 'ratios' or 'counts'", ``api.split_manifest``);
    the one given last wins, in the command and in the API alike."""
    from learner import api

    source = _cohort(tmp_path, split=False)
    split = api.split_manifest(source, tmp_path / "api.csv", config="lus", ratios=[4, 2, 2])
    assert [len({r.patient_id for r in split.by_split(name)}) for name in ("train", "val", "test")] == [
        4,
        2,
        2,
    ]
    argv = ["data", "split", str(source), "--out", str(tmp_path / "cli.csv"), "--config", "lus"]
    code, _, err = cli([*argv, "--set", "data.split.ratios=[4,2,2]"])
    assert code == 0, err
    assert (tmp_path / "cli.csv").read_text() == (tmp_path / "api.csv").read_text()


def test_a_custom_scale_beside_another_scale_is_refused(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    """data.custom_scale is read only with data.scale: custom; beside sf it was ignored without a word.
    ``--scale custom``, applied after the file and --set, still uses it."""
    source = str(_cohort(tmp_path))
    scale = ["--set", "data.custom_scale={low: 0, high: 500, threshold: 50, higher_is_better: true}"]
    for command in (["check", source], ["split", source, "--out", str(tmp_path / "o.csv")]):
        code, _, err = cli(["data", *command, *scale])
        assert code == 2
        assert err == (
            "error: data.custom_scale is set but data.scale is 'sf', which ignores it; set data.scale=custom "
            "to use it, or drop data.custom_scale\n"
        )
    assert not (tmp_path / "o.csv").exists()
    code, out, err = cli(["data", "check", source, "--scale", "custom", *scale])
    assert code == 0, err
    assert "no problems found (18 scans, scale custom)" in out
