"""LEARNER: contrastive pretraining for fine-grained patient progression from coarse inter-patient labels.

Importing ``learner`` is cheap and has no side effects; heavy modules (torch, MONAI, PyAV) load lazily
from the sub-packages that need them. The pipeline reads left to right:

    data → models → losses → training → evaluation → experiments → cli
"""

__version__ = "0.1.0"
