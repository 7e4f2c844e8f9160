"""One versioning scheme for every on-disk format learner writes: a table of kind → version.

Bump a kind's version when files written by the old code would be misread by the new code (or, for the
hashed kinds, when an unchanged input would now give a different output):

========================  =================================================================================
kind                      where the version lives
========================  =================================================================================
``checkpoint``            ``meta.json`` ``schema_version`` and the ``model.safetensors`` header; checked
                          by :func:`check` (:mod:`learner.training.checkpoint`)
``pair_classifier``       ``classifier.json`` ``format`` as the tag ``learner.pair_classifier/<v>``; checked
                          by :func:`check` (:mod:`learner.evaluation.pair_classifier`)
``model_folder``          ``config.json`` ``format`` of a model folder (``learner export --format folder``) as
                          the tag ``learner.model_folder/<v>``; checked by :func:`check`
                          (:mod:`learner.evaluation.model_folder`)
``embedding_cache``       hashed into the embedding cache's file name (:mod:`learner.evaluation.embed`)
``preprocess``            hashed into the scan cache's key (:mod:`learner.data.preprocess`)
``scan_cache``            the ``format`` of a scan cache entry's header; an entry of another version is
                          rebuilt, like a corrupt one (:mod:`learner.data.cache`)
========================  =================================================================================

A hashed kind is never checked: a new version changes the key, so old cache entries are simply not found.
"""

from __future__ import annotations

import os

from learner.errors import CheckpointError

FORMATS: dict[str, int] = {
    "checkpoint": 1,
    "pair_classifier": 1,
    "model_folder": 1,
    "embedding_cache": 1,
    "preprocess": 1,
    "scan_cache": 1,
}


def tag(kind: str) -> str:
    """The self-describing name of the current version of ``kind``: ``learner.<kind>/<version>``."""
    return f"learner.{kind}/{FORMATS[kind]}"


def check(kind: str, recorded: object, path: str | os.PathLike[str], *, field: str = "format") -> None:
    """Refuse a file whose recorded version of ``kind`` is not the current one.

    Args:
        kind: a key of :data:`FORMATS`.
        recorded: what the file records under ``field``: the version number or the :func:`tag`.
        path: the file, for the message.
        field: the file's key holding ``recorded``, for the message.

    Raises:
        CheckpointError: one line naming the file, what it records and what this learner reads.
    """
    current = (FORMATS[kind], tag(kind))
    if isinstance(recorded, bool) or recorded not in current:
        raise CheckpointError(
            f"{path}: {field} {recorded!r} is not supported; this learner reads {tag(kind)}"
        )
