"""What the best possible reader of a phantom scan could answer to "improved / stable / deteriorated".

Fig. 1's ρ says whether embeddings follow the latent change; this study asks how far *labels* can follow it.
A phantom pair's label comes from the S/F bins of the two visits, and S/F is a noisy line of the visit's
severity (``learner.data.phantom.lus.sf_from_severity``), so even a reader who sees every clip's rendered
severity exactly cannot always say whether a bin edge was crossed. The study draws a large test-only
cohort from the phantom's own generator (latents and scores only, no pixels), forms the consecutive
same-site pairs the test split uses, and gives a reader each clip's latent severity plus a per-patient bias
``b ~ N(0, bias)`` and a per-clip error ``e ~ N(0, sigma)``. For each (bias, sigma) it learns the Bayes
decision from the two readings on half the patients (a gradient-boosted classifier), chooses class offsets
on a quarter, and reports on the last quarter:

* the Bayes rule's accuracy and macro-F1 (the most accurate answer this reader allows);
* that rule with the class offsets of the largest macro-F1 whose accuracy, on the offsets' quarter, stays
  within 5 points of always answering the majority class (the bar of issue 20);
* always-majority's accuracy and macro-F1.

With ``--encoder RUN_DIR`` (one or more pretraining runs on a phantom manifest with a ``latent`` column) it
also prints each encoder's reading error in the same units: its predicted scores mapped to latent units by a
least-squares line over the test clips, the error's standard deviation per clip, and that of the change
between the two scans of each test pair divided by √2 (the per-clip ``sigma`` of a reader with that change
error; the per-patient part cancels in a change)::

    python examples/studies/label_ceiling.py --patients 8000
    python examples/studies/label_ceiling.py --patients 8000 --encoder runs/demo/table3/LUS/mse/seed-0/encoder

``--cohort mri`` asks the same of the MRI phantom (``learner.data.phantom.mri``): its latent is the visit's
atrophy, which the images render, and a pair's label is the MMSE rule (a change of 2+ points) on integer
MMSE scores that carry test-retest noise (sd 1.3 points per visit) and a per-patient cognitive reserve the
images do not show (it cancels in a change)::

    python examples/studies/label_ceiling.py --cohort mri --patients 8000 --bias 0 --sigma 0 0.02
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, f1_score

from learner.data.phantom.lus import draw_lus_latents
from learner.data.phantom.mri import draw_mri_latents
from learner.data.scales import ChangeLabel, mmse, sf_ratio

STABLE = int(ChangeLabel.STABLE)


def test_pairs(table: pd.DataFrame) -> pd.DataFrame:
    """Consecutive visits of one patient at one site (the test split's rule), earlier first."""
    rows = []
    for _, track in table.sort_values("visit").groupby(["patient_id", "site"], sort=False):
        scans = list(track.itertuples())
        rows += [(a.patient_id, a.scan_id, b.scan_id, a.latent, b.latent, a.score, b.score)
                 for a, b in itertools.pairwise(scans)]  # fmt: skip
    columns = ["patient", "first", "second", "latent1", "latent2", "score1", "score2"]
    pairs = pd.DataFrame(rows, columns=columns)
    pairs["label"] = sf_ratio().change_labels(pairs["score1"], pairs["score2"])
    return pairs


MRI_PATIENTS_PER_DRAW = 1400
"""The MRI generator draws patient IDs from 1,498 RIDs, so a large cohort is several draws, seeds apart."""


def mri_test_pairs(patients: int, seed: int) -> pd.DataFrame:
    """Consecutive visits of each MRI phantom patient that have an MMSE, earlier first; latent = atrophy."""
    draws = -(-patients // MRI_PATIENTS_PER_DRAW)
    rows = []
    for k in range(draws):
        count = min(MRI_PATIENTS_PER_DRAW, patients - k * MRI_PATIENTS_PER_DRAW)
        table = draw_mri_latents((0, 0, count), seed=seed + k)
        table = table[table["MMSE"].notna()].sort_values(["RID", "EXAMDATE"])
        for rid, track in table.groupby("RID", sort=False):
            visits = list(track.itertuples())
            rows += [((k, rid), a.atrophy, b.atrophy, float(a.MMSE), float(b.MMSE))
                     for a, b in itertools.pairwise(visits)]  # fmt: skip
    pairs = pd.DataFrame(rows, columns=["patient", "latent1", "latent2", "score1", "score2"])
    pairs["label"] = mmse().change_labels(pairs["score1"], pairs["score2"])
    return pairs


def ceiling(pairs: pd.DataFrame, bias: float, sigma: float, seed: int) -> dict[str, float]:
    """The Bayes rule and the best macro-F1 within 5 accuracy points of always-majority, for one reader."""
    rng = np.random.default_rng(seed)
    patient = pd.factorize(pairs["patient"])[0]
    offset = rng.normal(0.0, bias, patient.max() + 1)[patient]
    read1 = pairs["latent1"].to_numpy() + offset + rng.normal(0.0, sigma, len(pairs))
    read2 = pairs["latent2"].to_numpy() + offset + rng.normal(0.0, sigma, len(pairs))
    features, labels = np.c_[read1, read2, read2 - read1], pairs["label"].to_numpy()
    part = rng.permutation(patient.max() + 1)[patient] % 4  # by patient: 0, 1 fit; 2 offsets; 3 report
    fit, tune, held_out = part < 2, part == 2, part == 3
    model = HistGradientBoostingClassifier(random_state=seed).fit(features[fit], labels[fit])
    log_p = np.log(model.predict_proba(features) + 1e-12)
    floor = np.mean(labels[tune] == STABLE) - 0.05
    best, best_f1 = np.zeros(3), -1.0
    for shift in itertools.product(np.linspace(0, 4, 41), repeat=2):  # deteriorated, improved offsets
        offsets = np.array([shift[0], 0.0, shift[1]])
        answer = (log_p[tune] + offsets).argmax(1)
        macro = f1_score(labels[tune], answer, average="macro")
        if accuracy_score(labels[tune], answer) >= floor and macro > best_f1:
            best, best_f1 = offsets, macro
    held = labels[held_out]
    bayes, shifted = log_p[held_out].argmax(1), (log_p[held_out] + best).argmax(1)
    majority = np.full_like(held, STABLE)
    return {
        "bayes_acc": accuracy_score(held, bayes), "bayes_f1": f1_score(held, bayes, average="macro"),
        "bar_acc": accuracy_score(held, shifted), "bar_f1": f1_score(held, shifted, average="macro"),
        "majority_acc": accuracy_score(held, majority),
        "majority_f1": f1_score(held, majority, average="macro"),
    }  # fmt: skip


def encoder_error(run: Path) -> tuple[float, float, float]:
    """A pretraining run's reading error in latent units: (per clip, per clip in a change, shared share)."""
    from learner.api import embed
    from learner.data.manifest import load_manifest
    from learner.data.scales import scale_from_config
    from learner.runs import load_run_config

    config = load_run_config(run)  # the run's paths, resolved
    manifest = load_manifest(config.data.manifest, scale_from_config(config.data))
    table = embed(run, manifest)
    predicted = pd.Series(table.scores, index=table.scan_ids)
    clips = pd.DataFrame(
        [(r.scan_id, r.patient_id, r.site, r.visit, r.latent, r.score) for r in manifest.by_split("test")],
        columns=["scan_id", "patient_id", "site", "visit", "latent", "score"],
    )
    slope, intercept = np.polyfit(predicted[clips["scan_id"]], clips["latent"], 1)
    read = slope * predicted + intercept
    error = read[clips["scan_id"]].to_numpy() - clips["latent"].to_numpy()
    pairs = test_pairs(clips)
    change_error = (read[pairs["second"]].to_numpy() - read[pairs["first"]].to_numpy()) - (
        pairs["latent2"] - pairs["latent1"]
    ).to_numpy()
    per_clip = float(np.std(change_error) / np.sqrt(2))
    return float(np.std(error)), per_clip, float(np.sqrt(max(np.var(error) - per_clip**2, 0.0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", choices=["lus", "mri"], default="lus", help="which phantom (default lus)")
    parser.add_argument("--patients", type=int, default=8000, help="test patients drawn (default 8000)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--bias", type=float, nargs="+", default=[0.0, 0.1], help="per-patient bias sd")
    parser.add_argument("--sigma", type=float, nargs="+", default=[0.0, 0.02, 0.04, 0.055, 0.08])
    parser.add_argument("--encoder", type=Path, nargs="*", default=[], help="LUS pretraining runs to measure")
    args = parser.parse_args()
    if args.cohort == "mri":
        if args.encoder:
            parser.error("--encoder reads a LUS phantom manifest's latent column; use it with --cohort lus")
        pairs = mri_test_pairs(args.patients, args.seed)
    else:
        table = draw_lus_latents((1, 1, args.patients), seed=args.seed)
        pairs = test_pairs(table[table["split"] == "test"])
    stable = np.mean(pairs["label"] == STABLE)
    print(f"{len(pairs)} test pairs of {args.patients} patients, {stable:.1%} stable")
    print("| bias | sigma | Bayes acc | Bayes F1 | bar acc | bar F1 | majority acc | majority F1 |")
    print("|---|---|---|---|---|---|---|---|")
    for bias, sigma in itertools.product(args.bias, args.sigma):
        r = ceiling(pairs, bias, sigma, args.seed)
        print(f"| {bias:g} | {sigma:g} | {100 * r['bayes_acc']:.1f} | {100 * r['bayes_f1']:.1f} | "
              f"{100 * r['bar_acc']:.1f} | {100 * r['bar_f1']:.1f} | {100 * r['majority_acc']:.1f} | "
              f"{100 * r['majority_f1']:.1f} |")  # fmt: skip
    for run in args.encoder:
        per_clip, in_change, shared = encoder_error(run)
        print(f"{run}: error per clip {per_clip:.3f}, in a change {in_change:.3f}, shared {shared:.3f}")


if __name__ == "__main__":
    main()
