"""The names in a config that an open registry defines, checked against the registry before any work.

Encoders (:data:`learner.models.registry.ENCODERS`), loss terms (:data:`learner.losses.registry.LOSSES`)
and score scales (:mod:`learner.data.scales`) grow by registering a name, so the config holds them as plain
strings and the registry is their only list. Closed sets (``optim.optimizer``, ``classifier.head``, …) are
``Literal`` aliases in :mod:`learner.config`, rejected already when the config is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence

from learner.config import Config
from learner.data.scales import available_scales
from learner.errors import ConfigError
from learner.losses.registry import build_view_objective, parse_loss_name
from learner.models.registry import available_encoders, check_norm


def check_names(config: Config) -> None:
    """Raise a one-line :class:`ConfigError` naming the key and the allowed names for the first name in
    ``config`` (``data.scale``, ``model.backbone``, ``loss.name``) that its registry does not hold, or for
    a ``model.norm`` the backbone does not take."""
    _check("data.scale", config.data.scale, [*available_scales(), "custom"])
    _check("model.backbone", config.model.backbone, available_encoders())
    check_norm(config.model)  # model.norm only where the backbone has a choice of normalisation
    if build_view_objective(config.loss) is None:  # a self-supervised name (vicreg) stands alone
        parse_loss_name(config.loss.name)  # its errors name the key and list the terms


def _check(key: str, name: str, allowed: Sequence[str]) -> None:
    if name not in allowed:
        raise ConfigError(f"unknown {key} {name!r}; available: {', '.join(allowed)}")
