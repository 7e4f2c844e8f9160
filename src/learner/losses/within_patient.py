"""A within-patient term for pretraining (beyond the paper): the regression head's predictions of one
patient's scans, at one site, taken on different visits, should change as the scores changed.

The paper's objective (Eqs. 1–3) sees every scan on its own or against scans of other patients. A patient's
own visits differ by far less than patients do, and what differs between patients (anatomy, probe, gain)
cancels inside a patient, so a term on within-patient *differences* trains exactly the change the downstream
task reads. It needs batches holding several visits of one patient
(:class:`learner.data.patient_batches.PatientBatchSampler`) and a cohort whose train patients were scanned
on 2+ visits.

Pairs: every (i, j), i < j, of the batch with ``groups[i] == groups[j]`` (one patient, one site) and
``visits[i] != visits[j]``. Two forms (``loss.within_patient_term``):

* ``difference``: mean over pairs of ((ŷ_j − ŷ_i) − (y_j − y_i))², the MSE of Eq. 1 on differences;
* ``rank``: RankNet (Burges et al., ICML 2005), mean over pairs with y_i ≠ y_j of
  log(1 + exp(−sign(y_j − y_i)·(ŷ_j − ŷ_i))): the order of the two visits, not the size of the change.

Predictions and scores are standardised (the train split's mean and std). A batch without a pair gives 0
with a gradient path, so the step is unchanged.

Example::

    term = WithinPatientLoss("difference")
    value = term(pred_std, target_std, groups, visits)  # (B,), (B,), (B,) int, (B,) int → scalar
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from learner.config import WithinPatientTerm


def within_patient_pairs(groups: Tensor, visits: Tensor) -> tuple[Tensor, Tensor]:
    """Indices (i, j), i < j, of the batch members of one group (patient and site) from different visits.

    Args:
        groups: (B,) integer group code of each member.
        visits: (B,) integer visit code of each member.

    Returns:
        Two (P,) long tensors, the first and second member of each pair.
    """
    same = (groups[:, None] == groups[None, :]) & (visits[:, None] != visits[None, :])
    first, second = torch.triu(same, diagonal=1).nonzero(as_tuple=True)
    return first, second


class WithinPatientLoss:
    """The within-patient term on one (global) batch: (B,) predictions and targets, standardised, and the
    members' (B,) group and visit codes → scalar (see the module docstring for both forms)."""

    def __init__(self, term: WithinPatientTerm = "difference") -> None:
        self.term = term

    def __call__(self, pred_std: Tensor, target_std: Tensor, groups: Tensor, visits: Tensor) -> Tensor:
        first, second = within_patient_pairs(groups, visits)
        predicted = pred_std[second] - pred_std[first]  # (P,)
        observed = target_std[second] - target_std[first]  # (P,)
        if self.term == "rank":
            ordered = observed != 0
            predicted, observed = predicted[ordered], observed[ordered]
        if predicted.numel() == 0:
            return pred_std.sum() * 0.0  # no pair in this batch: zero, with a gradient path
        if self.term == "rank":
            return F.softplus(-torch.sign(observed) * predicted).mean()
        return (predicted - observed).pow(2).mean()

    def __repr__(self) -> str:
        return f"within_patient_{self.term}"
