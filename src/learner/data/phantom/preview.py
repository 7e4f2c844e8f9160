"""A picture of both phantoms: LUS frames across severity and patients, MRI slices across atrophy.

The LUS panel's rows go from healthy to white lung and its columns are different patients, so the eye
can compare the severity effect (down a column) with the patient nuisance (along a row) — the contrast
the paper's premise rests on. The MRI panel shows an axial and a coronal slice of two patients at four
atrophy levels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from learner.atomic import write_figure
from learner.data.phantom.lus import draw_patient_nuisance, jitter_clip_nuisance, render_lus_clip
from learner.data.phantom.mri import draw_subject, render_mri_volume

LUS_SEVERITIES: tuple[float, ...] = (0.05, 0.3, 0.55, 0.8, 0.95)
LUS_PATIENTS = 4
MRI_ATROPHY: tuple[float, ...] = (0.0, 0.33, 0.67, 1.0)
MRI_PATIENTS = 2


def render_preview(
    out_png: str | os.PathLike[str], seed: int = 0, *, lus_size: int = 96, mri_size: int = 64
) -> Path:
    """Draw the preview figure and write it atomically as a PNG; returns ``out_png``.

    Args:
        out_png: where the PNG goes.
        seed: picks the patients and the random parts of every frame.
        lus_size: LUS frame size in pixels (first frame of each clip).
        mri_size: MRI grid size in voxels; slices go through the grid centre (axial a little above it).
    """
    from matplotlib.figure import Figure  # the object API: no pyplot state, Agg canvas

    rng = np.random.default_rng(seed)
    patients = [draw_patient_nuisance(rng) for _ in range(LUS_PATIENTS)]
    subjects = [draw_subject(rng) for _ in range(MRI_PATIENTS)]

    figure = Figure(figsize=(13, 7), layout="constrained")
    # squeeze=False: always a (1, 2) array (the squeezed return is typed ndarray | SubFigure)
    lus_panel, mri_panel = figure.subfigures(
        1, 2, squeeze=False, width_ratios=[LUS_PATIENTS, 2 * MRI_PATIENTS]
    )[0]
    lus_panel.suptitle("LUS phantom: severity (rows) vs patient nuisance (columns)")
    axes = lus_panel.subplots(len(LUS_SEVERITIES), LUS_PATIENTS)
    for row, severity in enumerate(LUS_SEVERITIES):
        for column, patient in enumerate(patients):
            nuisance = jitter_clip_nuisance(patient, rng)
            frame = render_lus_clip(severity, nuisance, frames=1, size=lus_size, rng=rng)[0]
            axes[row, column].imshow(frame, cmap="gray", vmin=0, vmax=255)
            axes[row, column].set_title(f"patient {column + 1}, s = {severity:.2f}", fontsize=7)

    mri_panel.suptitle("MRI phantom: atrophy (rows); axial and coronal slices of 2 patients")
    axes_mri = mri_panel.subplots(len(MRI_ATROPHY), 2 * MRI_PATIENTS)
    centre = mri_size // 2
    for row, atrophy in enumerate(MRI_ATROPHY):
        for number, subject in enumerate(subjects):
            volume = render_mri_volume(atrophy, subject, size=mri_size, rng=rng)  # (R, A, S)
            views = (("axial", volume[:, :, centre + mri_size // 12]), ("coronal", volume[:, centre, :]))
            for offset, (view, plane) in enumerate(views):
                ax = axes_mri[row, 2 * number + offset]
                ax.imshow(plane.T, cmap="gray", origin="lower")  # transpose: anterior/superior up
                ax.set_title(f"patient {number + 1} {view}, a = {atrophy:.2f}", fontsize=7)
    for ax in [*axes.flat, *axes_mri.flat]:
        ax.set_axis_off()

    return write_figure(figure, out_png, ["png"], dpi=90)
