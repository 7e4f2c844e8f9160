"""The training-curve figure of a pretraining run: loss and val MAE against the baseline, per epoch.

Written by :func:`learner.training.pretrain.pretrain` at the end of every run as
``RUN_DIR/training_curves.png`` (and ``.svg``; ``learner report RUN_DIR`` redraws it, also for an
interrupted run) from the run's history (the rows of ``metrics.csv``). Left panel: the train loss (and the
val loss of a self-supervised run); right panel: the val MAE next to the MAE of always predicting the
train mean (the baseline an encoder must beat), both in score units, or for a self-supervised run its
collapse diagnostics on the val views (effective rank and mean per-dimension std of the embeddings).

Example::

    plot_training_curves(pd.read_csv("runs/wcl/metrics.csv").to_dict("records"), "runs/wcl/curves.png")
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from learner.atomic import write_figure

CURVES_FILE = "training_curves.png"
CURVE_FORMATS: tuple[str, ...] = ("png", "svg")


def plot_training_curves(
    history: Sequence[Mapping[str, float]], out_png: str | os.PathLike[str], *, vector: bool = True
) -> Figure:
    """Plot ``history`` (one metrics row per epoch) into ``out_png`` and, with ``vector``
    (``runtime.vector_figures``), an SVG beside it.

    Raises:
        ValueError: an empty history.
    """
    if not history:
        raise ValueError("plot_training_curves needs at least one epoch")
    epochs = [row["epoch"] for row in history]
    regression = "val_mae" in history[0]
    diagnostics = "val_effective_rank" in history[0]
    figure = Figure(figsize=(9.0 if regression or diagnostics else 4.5, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2 if regression or diagnostics else 1, squeeze=False)[0]
    losses = axes[0]
    losses.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train loss")
    if "val_loss" in history[0]:
        losses.plot(epochs, [row["val_loss"] for row in history], marker="o", label="val loss")
    losses.set_title("objective")
    losses.set_ylabel("loss (the run's objective)")
    if diagnostics and not regression:
        rank = axes[1]
        rank.plot(epochs, [row["val_effective_rank"] for row in history], marker="o", label="effective rank")
        rank.set_ylabel("effective rank of the val embeddings")
        spread = rank.twinx()
        spread.plot(
            epochs, [row["val_embedding_std"] for row in history], marker="s", color="tab:orange", label="std"
        )
        spread.set_ylabel("mean per-dimension std", color="tab:orange")
        rank.set_title("collapse diagnostics (val views)")
    if regression:
        mae = axes[1]
        mae.plot(epochs, [row["val_mae"] for row in history], marker="o", label="val MAE")
        baseline = [row["baseline_mae"] for row in history]
        mae.plot(epochs, baseline, linestyle="--", color="grey", label="predict the train mean")
        mae.set_title("val MAE")
        mae.set_ylabel("MAE (score units)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    write_figure(figure, out_png, CURVE_FORMATS if vector else CURVE_FORMATS[:1], dpi=100)
    return figure
